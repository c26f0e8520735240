//! Invariant checkers: properties every run must keep, checked after every step, after every
//! hub timer and at the end of a network run.
//!
//! A checker reads a [`View`] of the run (the hub, every agent's client log, the clocks) and
//! records [`Violation`]s, each reported once per subject. Where ag2 1.2.1 itself breaks an
//! invariant (ag2's delivery holes), the violation's kind names the
//! hole ([`Violation::hole`]); a scenario lists the holes it shows as `known_violations`.
//!
//! Submodules: `delivery` (at-least-once, audience, order, one turn per trigger), `channels`
//! (TTL, auto-close, WAL fold), `inbox` (caps, refused sends). `determinism` is checked by
//! running twice ([`first_divergence`], [`first_divergent_event`], [`Divergence`]).
//!
//! Violation messages hold raw ids; what reports them names them with the run's
//! [`Normaliser`](crate::sim::trace::Normaliser) ([`Violation::named`]).

mod channels;
mod delivery;
mod inbox;

use crate::client::host::HostEvent;
use crate::hub::Hub;
use crate::ids::{AgentId, ChannelId, EnvelopeId};
use crate::proto::Envelope;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An invariant, selectable by name in a scenario's `invariants:` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// Every envelope visible to a bound agent is delivered (handled and acked) at least once;
    /// nothing reaches an agent outside the envelope's audience; per recipient and connection,
    /// order follows WAL order; one model turn per trigger.
    Delivery,
    /// No channel expires before its `expires_at`; one past it expires within one sweep
    /// interval; nothing is accepted on an expired channel.
    Ttl,
    /// Consulting closes exactly on the respondent's reply; a workflow closes at `max_turns` or
    /// on its finish or terminate decision; nothing is accepted after a close.
    AutoClose,
    /// Pending never exceeds `max_pending`; a refused send leaves no WAL or audit trace.
    Inbox,
    /// Folding a channel's WAL from scratch gives the live adapter state.
    Wal,
    /// The run repeated gives byte-identical traces.
    Determinism,
    /// After the last step, with every fault healed, the run settles within `network.quiesce`.
    Settle,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 7] = [
        Invariant::Delivery,
        Invariant::Ttl,
        Invariant::AutoClose,
        Invariant::Inbox,
        Invariant::Wal,
        Invariant::Determinism,
        Invariant::Settle,
    ];

    /// The name scenarios and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::Delivery => "delivery",
            Invariant::Ttl => "ttl",
            Invariant::AutoClose => "auto_close",
            Invariant::Inbox => "inbox",
            Invariant::Wal => "wal",
            Invariant::Determinism => "determinism",
            Invariant::Settle => "settle",
        }
    }

    /// The invariant named `name`.
    pub fn parse(name: &str) -> Option<Invariant> {
        Invariant::ALL.into_iter().find(|inv| inv.name() == name)
    }
}

/// A set of invariants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection(u8);

impl Selection {
    /// Every invariant.
    pub const ALL: Selection = Selection(0x7f);
    /// None.
    pub const NONE: Selection = Selection(0);

    /// Whether `invariant` is selected.
    pub fn has(self, invariant: Invariant) -> bool {
        self.0 & (1 << invariant as u8) != 0
    }

    /// This selection with `invariant` added.
    pub fn with(self, invariant: Invariant) -> Selection {
        Selection(self.0 | (1 << invariant as u8))
    }

    /// The selected invariants, in report order.
    pub fn iter(self) -> impl Iterator<Item = Invariant> {
        Invariant::ALL.into_iter().filter(move |inv| self.has(*inv))
    }
}

impl Default for Selection {
    fn default() -> Selection {
        Selection::ALL
    }
}

/// A delivery hole of ag2 1.2.1 that a checker can attribute a violation
/// to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hole {
    /// The violation kind it explains.
    pub kind: &'static str,
    /// Its name, as findings print it.
    pub section: &'static str,
    /// What happens.
    pub explanation: &'static str,
}

/// The holes hubsim reproduces and attributes.
pub const HOLES: [Hole; 3] = [
    Hole {
        kind: "delivery/cursor_skipped",
        section: "delivery hole: acks in completion order",
        explanation: "remote-mode handlers run concurrently and ack in completion order; an ack \
                      for a later envelope moves the cursor past one still being handled, whose \
                      handler then dies with the connection, and the replay starts past it",
    },
    Hole {
        kind: "delivery/closed_channel_not_replayed",
        section: "delivery hole: closed channels not replayed",
        explanation:
            "replay after a hello covers PENDING and ACTIVE channels only: what a \
                      disconnected agent missed in a channel that closed meanwhile never reaches it",
    },
    Hole {
        kind: "delivery/duplicate_turn",
        section: "delivery hole: check-then-act turn guard",
        explanation: "the default handler's idempotence guard is check-then-act: a replay and a \
                      live delivery of one envelope both pass it and both run the model",
    },
];

/// Where ag2's hub itself breaks an invariant on its own terms: a post whose fold fails after
/// the append (ag2 appends a post before its adapter folds it), and a store its hub cannot reopen.
pub const SURPRISES: [Hole; 3] = [
    Hole {
        kind: "delivery/fold_failed_not_dispatched",
        section: "hub surprise: the fold runs after the append",
        explanation: "ag2 appends a post to the WAL before the adapter's fold; a malformed \
                      workflow payload makes the fold raise after the append and before dispatch, \
                      so the envelope stays in the WAL and reaches nobody until a replay",
    },
    Hole {
        kind: "inbox/fold_failed_after_append",
        section: "hub surprise: the fold runs after the append",
        explanation: "the sender of a malformed workflow payload gets the fold's error for a post \
                      whose envelope stays in the WAL",
    },
    Hole {
        kind: "settle/hub_not_restarted",
        section: "hub surprise: hydrate re-folds every WAL",
        explanation: "hydrate re-folds every stored WAL and raises on what its adapter cannot \
                      fold (a malformed workflow payload kept after its fold raised, a ghost \
                      channel's state), so the hub cannot reopen its own store",
    },
];

/// The ag2 behaviour a violation kind is, if it is one: a delivery hole or a hub surprise.
pub fn ag2_behaviour(kind: &str) -> Option<&'static Hole> {
    HOLES
        .iter()
        .chain(SURPRISES.iter())
        .find(|hole| hole.kind == kind)
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: Invariant,
    /// What went wrong, stable across runs: `delivery/missing`, `ttl/late`, ...
    pub kind: &'static str,
    /// Simulated time it was seen (µs from the start of the run).
    pub at: u64,
    /// The step after which it was seen (`None`: during a step's events or at the end).
    pub step: Option<usize>,
    /// The adapter of the channel it concerns, if one (`consulting`, ...).
    pub adapter: Option<&'static str>,
    /// What, where, and the values involved.
    pub message: String,
}

impl Violation {
    /// The ag2 behaviour this violation shows, if it is one ([`ag2_behaviour`]).
    pub fn hole(&self) -> Option<&'static Hole> {
        ag2_behaviour(self.kind)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}s", self.kind, self.at as f64 / 1e6)?;
        if let Some(step) = self.step {
            write!(f, " (after step {step})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One notify as a client received it.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The connection it came on (1 for the first, counting re-attaches).
    pub connection: u32,
    /// The envelope as received.
    pub envelope: Arc<Envelope>,
}

/// The model turns one trigger caused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnLog {
    /// Turns started.
    pub started: u32,
    /// Turns running now.
    pub running: u32,
    /// Turns started while another for the same trigger was running.
    pub concurrent: u32,
}

/// What the checkers know of one agent's client: the [`HostEvent`]s it reported, folded. The
/// client keeps none of this; the checkers observe it from outside.
#[derive(Clone, Debug, Default)]
pub struct AgentLog {
    /// The agent's name.
    pub name: String,
    /// The registered id, once `register` answered.
    pub id: Option<AgentId>,
    /// `unregister` succeeded.
    pub disconnected: bool,
    /// Connections made so far (re-attaches included).
    pub connections: u32,
    /// Every notify with a receipt, in arrival order (replays included).
    pub received: Vec<Delivery>,
    /// Envelopes whose handler finished on a live connection.
    pub handled: BTreeSet<EnvelopeId>,
    /// Model turns, by triggering envelope.
    pub turns: BTreeMap<EnvelopeId, TurnLog>,
}

impl AgentLog {
    /// The log of the agent `name`, before anything happened.
    pub fn new(name: &str) -> AgentLog {
        AgentLog {
            name: name.to_string(),
            ..AgentLog::default()
        }
    }

    /// Folds one event its client reported.
    pub fn observe(&mut self, event: &HostEvent) {
        match event {
            HostEvent::Connected(connection) => self.connections = *connection,
            HostEvent::Registered(id) => self.id = Some(*id),
            HostEvent::Unregistered => self.disconnected = true,
            HostEvent::Received {
                connection,
                envelope,
            } => self.received.push(Delivery {
                connection: *connection,
                envelope: envelope.clone(),
            }),
            HostEvent::TurnStarted(trigger) => {
                let turns = self.turns.entry(*trigger).or_default();
                turns.started += 1;
                turns.concurrent += u32::from(turns.running > 0);
                turns.running += 1;
            }
            HostEvent::TurnEnded(trigger) => {
                if let Some(turns) = self.turns.get_mut(trigger) {
                    turns.running = turns.running.saturating_sub(1);
                }
            }
            HostEvent::Handled(envelope) => {
                self.handled.insert(*envelope);
            }
        }
    }
}

/// What the checkers read: the live hub (if up), what every agent's client reported, the
/// clocks.
pub struct View<'a> {
    /// The hub, if it is up.
    pub hub: Option<&'a Hub>,
    /// What every agent's client reported, in scenario order.
    pub agents: &'a [AgentLog],
    /// Simulated time (µs from the start of the run).
    pub now: u64,
    /// The step just run, if this is an after-step check.
    pub step: Option<usize>,
    /// The hub's wall clock is the scenario's mock clock alone (`network.clock: frozen`).
    pub frozen_clock: bool,
    /// The mock clock (the wall clock at simulated time 0 when not frozen).
    pub mock: Timestamp,
    /// Simulated time of the last jump of the wall clock (`advance`) or hub (re)start: no
    /// sweep can be expected to have seen a deadline before it.
    pub clock_floor: u64,
    /// The TTL sweep interval (µs, 0: off).
    pub ttl_sweep: u64,
}

impl View<'_> {
    /// The simulated time at which the hub's wall clock reached `at` (not before the clock
    /// floor).
    fn reached(&self, at: Timestamp) -> u64 {
        if self.frozen_clock {
            return self.clock_floor;
        }
        let since = at.micros.saturating_sub(self.mock.micros).max(0) as u64;
        since.max(self.clock_floor)
    }
}

/// The checkers of one run and what they found.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    selection: Selection,
    violations: Vec<Violation>,
    /// (kind, subject) pairs already reported.
    reported: BTreeSet<(&'static str, String)>,
    /// WAL length of each channel when last checked.
    checked_len: BTreeMap<ChannelId, usize>,
    /// WAL length of each channel when it was first seen terminal.
    terminal_len: BTreeMap<ChannelId, usize>,
    /// Each agent's pending count when last checked.
    pending: BTreeMap<AgentId, u64>,
    /// Per host, how many of its deliveries were checked.
    received_checked: Vec<usize>,
    /// Every `inbound_from` each agent had at a check (rules change only by `set_rule` steps,
    /// and every step is followed by a check).
    inbound_seen: BTreeMap<AgentId, Vec<Vec<String>>>,
    /// The last envelope each host received, per (host, connection, channel).
    last_received: BTreeMap<(usize, u32, ChannelId), Option<crate::ids::EnvelopeId>>,
}

impl Checker {
    /// Checkers for `selection`.
    pub fn new(selection: Selection) -> Checker {
        Checker {
            selection,
            ..Checker::default()
        }
    }

    /// The selected invariants.
    pub fn selection(&self) -> Selection {
        self.selection
    }

    /// What was found, in the order it was found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Takes what was found.
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }

    /// Records a violation of `kind` about `subject`, once.
    fn report(&mut self, view: &View<'_>, kind: &'static str, subject: String, message: String) {
        self.report_in(view, None, kind, subject, message);
    }

    /// [`Checker::report`] for a violation in a channel of adapter `adapter`.
    fn report_in(
        &mut self,
        view: &View<'_>,
        adapter: Option<&'static str>,
        kind: &'static str,
        subject: String,
        message: String,
    ) {
        let invariant = match kind.split('/').next() {
            Some("delivery") => Invariant::Delivery,
            Some("ttl") => Invariant::Ttl,
            Some("auto_close") => Invariant::AutoClose,
            Some("inbox") => Invariant::Inbox,
            Some("wal") => Invariant::Wal,
            Some("settle") => Invariant::Settle,
            _ => Invariant::Determinism,
        };
        if !self.selection.has(invariant) || !self.reported.insert((kind, subject)) {
            return;
        }
        self.violations.push(Violation {
            invariant,
            kind,
            at: view.now,
            step: view.step,
            adapter,
            message,
        });
    }

    /// Records a violation found outside the checkers (a run that did not settle).
    pub fn record(&mut self, view: &View<'_>, kind: &'static str, message: String) {
        self.report(view, kind, String::new(), message);
    }

    /// The hub restarted from its store, which may be older than what the checkers saw (a crash
    /// loses the writes since the last sync): a channel seen terminal may be open again, its
    /// WAL shorter. What was learnt about channels is dropped.
    pub fn hub_restarted(&mut self) {
        self.terminal_len.clear();
        self.checked_len.clear();
    }

    /// The checks that hold at any moment: after a step, after a hub timer.
    pub fn check(&mut self, view: &View<'_>) {
        let Some(hub) = view.hub else { return };
        if self.selection.has(Invariant::Ttl) {
            self.check_ttl(view, hub);
        }
        if self.selection.has(Invariant::Inbox) {
            self.check_pending(view, hub);
        }
        if self.selection.has(Invariant::Delivery) {
            for (agent, entry) in &hub.agents {
                let seen = self.inbound_seen.entry(*agent).or_default();
                if !seen.contains(&entry.rule.access.inbound_from) {
                    seen.push(entry.rule.access.inbound_from.clone());
                }
            }
            self.check_deliveries(view);
        }
        let grown: Vec<ChannelId> = hub
            .channels
            .iter()
            .filter(|(id, entry)| self.checked_len.get(id) != Some(&entry.wal.len()))
            .map(|(id, _)| *id)
            .collect();
        for channel in grown {
            let entry = &hub.channels[&channel];
            self.check_terminal(view, channel, entry);
            if self.selection.has(Invariant::AutoClose) {
                self.check_auto_close(view, channel, entry);
            }
            if self.selection.has(Invariant::Wal) {
                self.check_fold(view, channel, entry);
            }
            self.checked_len.insert(channel, entry.wal.len());
        }
        // A channel that became terminal without its WAL growing (cannot happen in ag2: the
        // transition appends) is still frozen from here on.
        for (channel, entry) in &hub.channels {
            if entry.metadata.is_terminal() {
                self.terminal_len.entry(*channel).or_insert(entry.wal.len());
            }
        }
    }

    /// A hub input that posted (or tried to): `refused` tells whether the hub refused it,
    /// `before` and `after` are its (WAL appends, audit records) around the input.
    pub fn check_refusal(
        &mut self,
        view: &View<'_>,
        refused: bool,
        before: (u64, usize),
        after: (u64, usize),
    ) {
        if refused && before != after {
            // ag2's own case: the newest envelope is one whose fold fails.
            let fold_failed = view.hub.is_some_and(|hub| {
                hub.channels
                    .values()
                    .filter_map(|entry| entry.wal.last().map(|last| (last.envelope_id, entry)))
                    .max_by_key(|(id, _)| *id)
                    .is_some_and(|(_, entry)| channels::fold_fails(entry, entry.wal.len() - 1))
            });
            let kind = if fold_failed {
                "inbox/fold_failed_after_append"
            } else {
                "inbox/refused_send_left_trace"
            };
            self.report(
                view,
                kind,
                format!("{before:?}"),
                format!(
                    "a refused post changed the hub: WAL appends {} -> {}, audit records {} -> {}",
                    before.0, after.0, before.1, after.1
                ),
            );
        }
    }

    /// The end of the run, once it settled: everything above, then what must hold by now.
    pub fn finish(&mut self, view: &View<'_>, settled: bool) {
        self.check(view);
        if self.selection.has(Invariant::Delivery) {
            self.check_delivery(view, settled);
        }
    }
}

/// The first line where two traces differ (1-based) and both lines, or `None` if equal.
pub fn first_divergence(a: &str, b: &str) -> Option<(usize, String, String)> {
    first_divergent_line(a, b, "<end of trace>")
}

/// The first line where two runs' event logs (rendered with the trace's names) differ
/// (1-based) and both lines, or `None` if equal.
pub fn first_divergent_event(a: &str, b: &str) -> Option<(usize, String, String)> {
    first_divergent_line(a, b, "<end of log>")
}

fn first_divergent_line(a: &str, b: &str, end: &str) -> Option<(usize, String, String)> {
    if a == b {
        return None;
    }
    let (mut left, mut right) = (a.lines(), b.lines());
    let mut line = 0;
    loop {
        line += 1;
        match (left.next(), right.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                let show = |s: Option<&str>| s.map_or(end.to_string(), str::to_string);
                return Some((line, show(x), show(y)));
            }
        }
    }
}

/// Where two runs of one seed part (the `determinism` invariant): the first divergent line of
/// their traces, and of their event logs when those were compared and differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The first divergent trace line (1-based), as the first run and the second printed it.
    pub trace: (usize, String, String),
    /// The first divergent line of the two runs' event logs, likewise (`None`: not compared,
    /// or the logs agree).
    pub event: Option<(usize, String, String)>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (line, first, second) = &self.trace;
        write!(
            f,
            "two runs diverge at trace line {line}: `{first}` vs `{second}`"
        )?;
        if let Some((line, first, second)) = &self.event {
            write!(
                f,
                "; their first divergent event is line {line} of the event logs: `{}` vs `{}`",
                first.trim_start(),
                second.trim_start()
            )?;
        }
        Ok(())
    }
}

impl Violation {
    /// The violation as reports show it: its message with the run's names
    /// ([`Normaliser::message`](crate::sim::trace::Normaliser::message)) instead of raw ids
    /// and timestamps.
    pub fn named(mut self, names: &crate::sim::trace::Normaliser) -> Violation {
        self.message = names.message(&self.message);
        self
    }
}

#[cfg(test)]
mod tests;
