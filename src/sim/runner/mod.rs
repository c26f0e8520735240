//! The in-process driver: runs a scenario against the hub core and scripted agents with the
//! reference runner's semantics and scheduling, and records what the trace needs.
//!
//! Scheduling model (measured on ag2 1.2.1 by counting asyncio loop iterations): each agent has
//! its own connection and receive loop; a dispatched notify wakes an idle agent one iteration
//! later; a handler runs synchronously up to the model call and then for `TurnOutcome::iterations`
//! iterations; after posting, the agent takes its next queued envelope in the same iteration.
//! Wakes within one iteration run in the order they were scheduled. Steps run only when nothing
//! is left to do ("settle"). The hub clock is the scenario's mock clock; the monotonic clock moves
//! only while a blocking step waits for a timer, as real time does in the reference runner.

use super::log::{Event as LogEvent, EventLog};
use super::scenario::{Action, Scenario, Step};
use crate::client::handler::{finish_turn, react, Reaction};
use crate::client::host::HostEvent;
use crate::client::{ScriptedAgent, TurnOutcome};
use crate::hub::{CreateChannel, Created, Hub, Output, Passport, Resume};
use crate::ids::{AgentId, ChannelId, EndpointId};
use crate::proto::{Envelope, HubError};
use crate::time::{Instant, Now, Timestamp, MICROS_PER_SECOND};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub(crate) mod ops;

/// Hard cap on scheduler events in one run, so a runaway script cannot wedge the driver.
pub const EVENTS_MAX: u64 = 10_000_000;

/// An agent as the driver runs it.
#[derive(Clone, Debug)]
pub struct AgentRuntime {
    /// The script and its position.
    pub model: ScriptedAgent,
    /// The registered id.
    pub id: AgentId,
    /// Its connection.
    pub endpoint: EndpointId,
    /// Set once the agent unregistered through its client.
    pub disconnected: bool,
    /// Envelopes whose handler finished while the agent was connected.
    pub handled: usize,
    inbox: VecDeque<Arc<Envelope>>,
    status: Status,
}

#[derive(Clone, Debug)]
enum Status {
    Idle,
    Scheduled,
    Busy {
        trigger: Arc<Envelope>,
        outcome: Box<TurnOutcome>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Wake(usize),
    TurnDone(usize),
}

/// A background (`wait: false`) open.
#[derive(Clone, Debug)]
struct Background {
    step: usize,
    channel: Option<ChannelId>,
    outcome: Option<Result<(), HubError>>,
}

pub use crate::sim::record::{Run, RunAgent};

/// Runs a scenario to the end.
pub fn run(scenario: &Scenario) -> Run {
    run_logged(scenario, EventLog::off()).0
}

/// [`run`], keeping `log`: steps, deliveries to each agent's inbox, model turns, at the
/// monotonic clock (which moves only while a blocking open waits for a timer).
pub fn run_logged(scenario: &Scenario, log: EventLog) -> (Run, EventLog) {
    let mut driver = Driver::new(scenario);
    driver.log = log;
    driver.register_agents(scenario);
    for (idx, step) in scenario.steps.iter().enumerate() {
        if driver.aborted {
            driver.mismatches.push(format!(
                "hubsim: the run exceeded {EVENTS_MAX} scheduler events before step {idx}; steps from here on were skipped"
            ));
            break;
        }
        driver.run_step(idx, step);
    }
    let log = std::mem::take(&mut driver.log);
    (driver.finish(scenario), log)
}

struct Driver {
    hub: Hub,
    wall: Timestamp,
    mono: Instant,
    step_timeout_seconds: f64,
    agents: Vec<AgentRuntime>,
    by_name: BTreeMap<String, usize>,
    by_id: BTreeMap<AgentId, usize>,
    iteration: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    events_run: u64,
    /// Set when the event budget ran out; the remaining steps are skipped.
    aborted: bool,
    opens: BTreeMap<ChannelId, Result<(), HubError>>,
    background: Vec<Background>,
    labels: BTreeMap<ChannelId, String>,
    steps: Vec<crate::sim::record::StepRecord>,
    mismatches: Vec<String>,
    log: EventLog,
}

impl Driver {
    fn new(scenario: &Scenario) -> Driver {
        let config = scenario.hub_config(Default::default(), false);
        Driver {
            hub: Hub::new(config, Instant::default()),
            wall: scenario.hub.epoch,
            mono: Instant::default(),
            step_timeout_seconds: scenario.hub.step_timeout_seconds,
            agents: Vec::new(),
            by_name: BTreeMap::new(),
            by_id: BTreeMap::new(),
            iteration: 0,
            sequence: 0,
            events: BTreeMap::new(),
            events_run: 0,
            aborted: false,
            opens: BTreeMap::new(),
            background: Vec::new(),
            labels: BTreeMap::new(),
            steps: Vec::new(),
            mismatches: Vec::new(),
            log: EventLog::off(),
        }
    }

    fn now(&self) -> Now {
        Now {
            wall: self.wall,
            mono: self.mono,
        }
    }

    fn register_agents(&mut self, scenario: &Scenario) {
        for spec in &scenario.agents {
            let endpoint = self.hub.mint_endpoint();
            let id = self
                .hub
                .register(
                    self.now(),
                    Passport::named(&spec.name),
                    Resume::default(),
                    spec.rule.clone(),
                )
                .expect("scenario agent names are unique and not id-shaped (checked at load)");
            self.hub
                .bind_endpoint(endpoint, id)
                .expect("a fresh endpoint and agent bind");
            self.by_name.insert(spec.name.clone(), self.agents.len());
            self.by_id.insert(id, self.agents.len());
            self.agents.push(AgentRuntime {
                model: spec.scripted(),
                id,
                endpoint,
                disconnected: false,
                handled: 0,
                inbox: VecDeque::new(),
                status: Status::Idle,
            });
        }
        self.settle();
    }

    /// Routes everything the hub produced.
    fn pump(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Notify {
                    recipient,
                    envelope,
                    ..
                } => self.deliver(recipient, envelope),
                Output::OpenResolved { channel, result } => {
                    self.opens.insert(channel, result);
                }
                Output::InboxPressure { .. } | Output::Frame { .. } | Output::Refused(_) => {}
            }
        }
    }

    fn deliver(&mut self, recipient: AgentId, envelope: Arc<Envelope>) {
        let Some(&idx) = self.by_id.get(&recipient) else {
            return;
        };
        if self.log.enabled() {
            let event = HostEvent::Received {
                connection: 1,
                envelope: envelope.clone(),
            };
            self.log
                .push(self.mono.0, LogEvent::Host { agent: idx, event });
        }
        let agent = &mut self.agents[idx];
        agent.inbox.push_back(envelope);
        if matches!(agent.status, Status::Idle) {
            agent.status = Status::Scheduled;
            self.schedule(1, Event::Wake(idx));
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.sequence += 1;
        self.events
            .insert((self.iteration + delay, self.sequence), event);
    }

    /// Runs scheduled work until none is left.
    fn settle(&mut self) {
        while let Some(((iteration, _), event)) = self.events.pop_first() {
            self.events_run += 1;
            if self.events_run > EVENTS_MAX {
                // A runaway script: stop scheduling and report it instead of running forever.
                self.events.clear();
                self.aborted = true;
                return;
            }
            self.iteration = iteration;
            match event {
                Event::Wake(idx) => self.run_inbox(idx),
                Event::TurnDone(idx) => {
                    let status = std::mem::replace(&mut self.agents[idx].status, Status::Idle);
                    let Status::Busy { trigger, outcome } = status else {
                        unreachable!("a finishing turn belongs to a busy agent")
                    };
                    if let (true, Some(id)) = (self.log.enabled(), trigger.envelope_id) {
                        let event = HostEvent::TurnEnded(id);
                        self.log
                            .push(self.mono.0, LogEvent::Host { agent: idx, event });
                    }
                    let (now, agent, disconnected) = (
                        self.now(),
                        self.agents[idx].id,
                        self.agents[idx].disconnected,
                    );
                    if disconnected && outcome.reply.is_ok() {
                        let failure = HubError::runtime("AgentClient is disconnected");
                        self.hub.report_turn_failure(
                            now,
                            trigger.channel_id,
                            agent,
                            &trigger.id_text(),
                            &failure,
                        );
                    } else {
                        finish_turn(&mut self.hub, now, agent, &trigger, *outcome);
                    }
                    if !disconnected {
                        self.agents[idx].handled += 1;
                    }
                    self.pump();
                    self.run_inbox(idx);
                }
            }
        }
    }

    /// The agent's receive loop: handle queued envelopes until one starts a model turn.
    fn run_inbox(&mut self, idx: usize) {
        while let Some(envelope) = self.agents[idx].inbox.pop_front() {
            let agent = &self.agents[idx];
            match react(&self.hub, agent.id, agent.model.handler, &envelope) {
                Reaction::Ignore => {
                    if !agent.disconnected {
                        self.agents[idx].handled += 1;
                    }
                }
                Reaction::Ack(ack) => {
                    if !agent.disconnected {
                        let _ = self.hub.post_envelope(self.now(), *ack);
                        self.pump();
                        self.agents[idx].handled += 1;
                    }
                }
                Reaction::Turn => {
                    if let (true, Some(id)) = (self.log.enabled(), envelope.envelope_id) {
                        let event = HostEvent::TurnStarted(id);
                        self.log
                            .push(self.mono.0, LogEvent::Host { agent: idx, event });
                    }
                    let outcome = self.agents[idx].model.ask();
                    let delay = outcome.iterations.max(1);
                    self.agents[idx].status = Status::Busy {
                        trigger: envelope,
                        outcome: Box::new(outcome),
                    };
                    self.schedule(delay, Event::TurnDone(idx));
                    return;
                }
            }
        }
        self.agents[idx].status = Status::Idle;
    }

    fn finish(mut self, scenario: &Scenario) -> Run {
        for open in &mut self.background {
            if let Some(channel) = open.channel {
                if open.outcome.is_none() && !self.opens.contains_key(&channel) {
                    self.hub.cancel_open(channel);
                    self.steps[open.step].pending_at_end();
                }
            }
            let step = &scenario.steps[open.step];
            if let Some(message) = self.steps[open.step].background_mismatch(step) {
                self.mismatches.push(message);
            }
        }
        let mut auto = 0;
        for channel in self.hub.channel_ids().collect::<Vec<_>>() {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.labels.entry(channel) {
                auto += 1;
                slot.insert(format!("auto{auto}"));
            }
        }
        Run {
            hub: self.hub,
            agents: self
                .agents
                .into_iter()
                .map(|agent| RunAgent {
                    id: agent.id,
                    model: agent.model,
                    handled: agent.handled,
                })
                .collect(),
            labels: self.labels,
            steps: self.steps,
            mismatches: self.mismatches,
            epoch: scenario.hub.epoch,
        }
    }
}
