//! The observer of a network run, shared by every backend: it keeps the [`EventLog`], folds
//! what each agent's client reports into the checkers' [`AgentLog`]s, and runs the invariant
//! [`Checker`] when a backend asks (after a step, after hub timers, at the end). Like
//! TigerBeetle's checkers watching a replica, it reads the hub's state from outside, takes the
//! requests the hub refused from its outputs ([`Refused`], passed on by the server), and takes
//! the clients' side from their events; nothing in the hub or the clients is kept for it.

use super::check::{AgentLog, Checker, Invariant, Selection, View, Violation};
use super::harness::seconds;
use super::log::{Event, EventLog};
use crate::client::host::HostEvent;
use crate::hub::{Hub, Refused};
use crate::proto::HubError;
use crate::time::Timestamp;

/// The clocks a check reads (see [`View`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clocks {
    /// Simulated time (µs from the start of the run).
    pub(crate) now: u64,
    /// The hub's wall clock is the mock clock alone.
    pub(crate) frozen_clock: bool,
    /// The scenario's mock clock.
    pub(crate) mock: Timestamp,
    /// Simulated time of the last wall-clock jump or hub (re)start.
    pub(crate) clock_floor: u64,
    /// The TTL sweep interval (µs, 0: off).
    pub(crate) ttl_sweep: u64,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Monitor {
    checker: Checker,
    agents: Vec<AgentLog>,
    log: EventLog,
    /// Violations already written to the log.
    logged: usize,
}

impl Monitor {
    /// A monitor checking `selection` for the agents `names` (scenario order), keeping `log`.
    pub(crate) fn new<'a>(
        selection: Selection,
        names: impl IntoIterator<Item = &'a str>,
        log: EventLog,
    ) -> Monitor {
        Monitor {
            checker: Checker::new(selection),
            agents: names.into_iter().map(AgentLog::new).collect(),
            log,
            logged: 0,
        }
    }

    /// Adds an agent (a recorded serve meets its agents as they connect); its index.
    pub(crate) fn add_agent(&mut self, name: &str) -> usize {
        self.agents.push(AgentLog::new(name));
        self.agents.len() - 1
    }

    /// Whether any invariant is checked.
    pub(crate) fn checking(&self) -> bool {
        self.checker.selection() != Selection::NONE
    }

    /// Whether `invariant` is checked.
    pub(crate) fn has(&self, invariant: Invariant) -> bool {
        self.checker.selection().has(invariant)
    }

    /// Whether frames are logged (so a backend summarises them).
    pub(crate) fn frames(&self) -> bool {
        self.log.frames()
    }

    /// Records `event` at `at`.
    pub(crate) fn record(&mut self, at: u64, event: Event) {
        self.log.push(at, event);
    }

    /// Takes what agent `agent`'s client reported.
    pub(crate) fn host_events(
        &mut self,
        at: u64,
        agent: usize,
        events: impl Iterator<Item = HostEvent>,
    ) {
        for event in events {
            self.agents[agent].observe(&event);
            self.log.push(at, Event::Host { agent, event });
        }
    }

    /// The checks that hold at any moment, on the hub as it is now.
    pub(crate) fn check(&mut self, hub: Option<&Hub>, clocks: Clocks, step: Option<usize>) {
        if !self.checking() {
            return;
        }
        let view = view(hub, &self.agents, clocks, step);
        self.checker.check(&view);
        self.log_violations(clocks.now);
    }

    /// Requests the hub refused, in the order it refused them (what its server handed out for
    /// one message, or since the last check): the last refused post among them that changed the
    /// hub's WAL or audit log is checked ([`Monitor::check_refusal`]).
    pub(crate) fn refused(&mut self, hub: Option<&Hub>, clocks: Clocks, refused: &[Refused]) {
        if let Some(last) = refused.iter().rev().find(|r| r.post_left_trace()) {
            self.check_refusal(hub, clocks, last.before, last.after);
        }
    }

    /// A refused post: `before` and `after` are the hub's (WAL appends, audit records) around it.
    pub(crate) fn check_refusal(
        &mut self,
        hub: Option<&Hub>,
        clocks: Clocks,
        before: (u64, usize),
        after: (u64, usize),
    ) {
        if !self.has(Invariant::Inbox) {
            return;
        }
        let view = view(hub, &self.agents, clocks, None);
        self.checker.check_refusal(&view, true, before, after);
        self.log_violations(clocks.now);
    }

    /// Records a violation found outside the checkers (a run that did not settle).
    pub(crate) fn violation(
        &mut self,
        hub: Option<&Hub>,
        clocks: Clocks,
        kind: &'static str,
        message: String,
    ) {
        let view = view(hub, &self.agents, clocks, None);
        self.checker.record(&view, kind, message);
        self.log_violations(clocks.now);
    }

    /// The hub could not restart from its store (ag2 raises in `hydrate`): a `settle`
    /// violation if that is checked, else a note for the run's report (returned).
    pub(crate) fn hub_not_restarted(&mut self, clocks: Clocks, error: &HubError) -> Option<String> {
        let message = format!(
            "the hub did not restart from its store: {}: {}",
            error.type_name, error.message
        );
        self.record(
            clocks.now,
            Event::HubNotRestarted {
                message: message.clone(),
            },
        );
        if self.has(Invariant::Settle) {
            self.violation(None, clocks, "settle/hub_not_restarted", message);
            None
        } else {
            Some(format!("at {}: {message}", seconds(clocks.now)))
        }
    }

    /// The hub restarted from a store that may be older than what the checkers saw.
    pub(crate) fn hub_restarted(&mut self) {
        self.checker.hub_restarted();
    }

    /// The end of the run: every check, then what must hold once the run settled.
    pub(crate) fn finish(&mut self, hub: Option<&Hub>, clocks: Clocks, settled: bool) {
        if !self.checking() {
            return;
        }
        let view = view(hub, &self.agents, clocks, None);
        self.checker.finish(&view, settled);
        self.log_violations(clocks.now);
    }

    /// The violations, the clients' logs and the event log.
    pub(crate) fn into_parts(self) -> (Vec<Violation>, Vec<AgentLog>, EventLog) {
        (self.checker.into_violations(), self.agents, self.log)
    }

    fn log_violations(&mut self, at: u64) {
        let found = self.checker.violations();
        for violation in &found[self.logged..] {
            self.log.push(
                at,
                Event::Violation {
                    kind: violation.kind,
                    message: violation.message.clone(),
                },
            );
        }
        self.logged = found.len();
    }
}

fn view<'a>(
    hub: Option<&'a Hub>,
    agents: &'a [AgentLog],
    clocks: Clocks,
    step: Option<usize>,
) -> View<'a> {
    View {
        hub,
        agents,
        now: clocks.now,
        step,
        frozen_clock: clocks.frozen_clock,
        mock: clocks.mock,
        clock_floor: clocks.clock_floor,
        ttl_sweep: clocks.ttl_sweep,
    }
}
