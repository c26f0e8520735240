//! The one harness that runs a scenario's steps on a simulated network, whatever carries the
//! frames: the event-driven backend ([`super::events`]) and turmoil ([`super::turmoil`]) both
//! implement `Network`, and everything a step means is written here once: registration,
//! labels, `$id` references, background opens, waits, `expect_error`, the admin ops the
//! reference runner calls on the hub directly (`advance`, the ticks, `via: hub`, its channel
//! lookups), faults as steps, the chaos phase, the quiesce phase and the final checks.
//!
//! A backend owns the hub host, the agents' clients, the links and the run's
//! `Monitor` (checkers and event log); the harness owns the step
//! records, labels and background opens.

use super::chaos;
use super::log::Event;
use super::monitor::{Clocks, Monitor};
use super::record::StepRecord;
use super::record::{Run, RunAgent};
use super::requests::{
    advance_seconds, advanced, channel_of, open_label, open_request, send_envelope, step_timeout,
};
use super::scenario::{Action, Fault, Scenario, Step};
use crate::client::host::{Command, CommandId};
use crate::hub::{wire, Hub};
use crate::ids::{AgentId, ChannelId};
use crate::proto::envelope::map_of;
use crate::proto::HubError;
use crate::time::{Now, Timestamp, MICROS_PER_SECOND};
use serde_json::Value;
use std::collections::BTreeMap;

/// What a backend waits for in [`Network::run_until`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Until {
    /// Nothing under way: no message in flight, every handler idle, no re-attach that can
    /// succeed. A command still waiting for its answer (a background open) is not work.
    Idle,
    /// Agent `host` has a connection.
    Connected(usize),
    /// Agent `host`'s command finished.
    Result(usize, CommandId),
    /// Agent `host` pulled an envelope (a human's queue).
    Pulled(usize),
    /// Never: time runs to the deadline.
    Never,
}

/// A simulated network with the hub and one client per agent on it: what the harness needs
/// of a backend.
pub(crate) trait Network {
    /// Simulated time (µs from the start of the run).
    fn now(&self) -> u64;
    /// The hub's clock.
    fn hub_now(&self) -> Now;
    /// The scenario's mock clock.
    fn mock(&self) -> Timestamp;
    /// Moves the mock clock (an `advance` step); no sweep can have seen a deadline before now.
    fn set_mock(&mut self, mock: Timestamp);
    /// Starts agent `host`'s first connection.
    fn connect(&mut self, host: usize);
    /// Hands `command` to agent `host`'s client; its result comes later.
    fn start(&mut self, host: usize, command: Command) -> CommandId;
    /// Takes agent `host`'s result of `command`, if it finished.
    fn take_result(&mut self, host: usize, command: CommandId) -> Option<Result<Value, HubError>>;
    /// Whether agent `host`'s `command` finished.
    fn has_result(&self, host: usize, command: CommandId) -> bool;
    /// Takes the next envelope agent `host` pulled.
    fn pop_pulled(&mut self, host: usize) -> Option<Value>;
    /// Runs until `until` holds or time would pass `deadline` (then the clock stops at the
    /// deadline, or the first moment past it the backend can stop at). Returns whether it held.
    fn run_until(&mut self, deadline: u64, until: Until) -> bool;
    /// Calls the hub directly, as the reference runner does, and sends what the call produced;
    /// `None` while the hub is down.
    fn admin<R>(&mut self, call: impl FnOnce(&mut Hub, Now) -> R) -> Option<R>;
    /// Reads the hub; `None` while it is down.
    fn read_hub<R>(&self, read: impl FnOnce(&Hub) -> R) -> Option<R>;
    /// Agent `host`'s registered id.
    fn agent_id(&self, host: usize) -> Option<AgentId>;
    /// Applies a fault now (`chaos`: drawn by the chaos profile).
    fn apply_fault(&mut self, fault: &Fault, chaos: bool);
    /// Schedules a fault at an (absolute) time; `chaos`: drawn by the chaos profile.
    fn schedule_fault(&mut self, at: u64, fault: Fault, chaos: bool);
    /// Drops the chaos faults not yet applied.
    fn drop_chaos(&mut self);
    /// Makes the hub's state durable now.
    fn sync(&mut self);
    /// Heals every fault: links repaired and released at their base latency, the hub
    /// restarted.
    fn heal(&mut self);
    /// Whether the run was stopped for firing more than `network.events_max` events.
    fn aborted(&self) -> bool;
    /// Runs `observe` on the run's monitor with the hub as it is now and the clocks.
    fn observe<R>(&mut self, observe: impl FnOnce(&mut Monitor, Option<&Hub>, Clocks) -> R) -> R;
    /// Ends the run.
    fn finish(self) -> Ending;
}

/// What a backend leaves when the run ends.
pub(crate) struct Ending {
    /// The hub at the end (the last one before a crash it never came back from).
    pub(crate) hub: Hub,
    /// Every agent, in scenario order.
    pub(crate) agents: Vec<RunAgent>,
    /// `post_envelope` requests that hub refused for a full inbox since it started.
    pub(crate) refused_inbox_full: u64,
    /// Counters.
    pub(crate) stats: super::NetStats,
    /// Things the backend could not do.
    pub(crate) notes: Vec<String>,
    /// The checkers and the event log.
    pub(crate) monitor: Monitor,
}

/// What a finished network run leaves: the trace's material, counters, violations.
#[derive(Clone, Debug)]
pub struct NetRun {
    /// What the trace is rendered from.
    pub run: Run,
    /// `post_envelope` requests the hub at the end refused for a full inbox since it started.
    pub refused_inbox_full: u64,
    /// Counters.
    pub stats: super::NetStats,
    /// Things the harness could not do (a restart whose store does not hydrate, ...).
    pub notes: Vec<String>,
    /// Broken invariants (of those the scenario selects), in the order they were seen.
    pub violations: Vec<super::check::Violation>,
    /// What each agent's client reported, in scenario order.
    pub logs: Vec<super::check::AgentLog>,
    /// When the chaos phase's clock started (µs), for a scenario with `chaos`.
    pub chaos_start: Option<u64>,
    /// The run's event log.
    pub events: super::log::EventLog,
}

/// A background (`wait: false`) open.
#[derive(Clone, Debug)]
struct Background {
    step: usize,
    host: usize,
    command: CommandId,
    outcome: Option<Result<(), HubError>>,
}

/// Runs `scenario` with `seed` on `network`: registration, the chaos phase, every step, the
/// quiesce phase and the final checks.
pub(crate) fn run<N: Network>(network: N, scenario: &Scenario, seed: u64) -> NetRun {
    let mut harness = Harness {
        network,
        scenario,
        step_timeout: (scenario.hub.step_timeout_seconds * MICROS_PER_SECOND as f64) as u64,
        labels: BTreeMap::new(),
        steps: Vec::new(),
        mismatches: Vec::new(),
        background: Vec::new(),
        notes: Vec::new(),
        chaos_start: None,
    };
    harness.register_agents();
    harness.check(None);
    let chaos_until = scenario.sweep.chaos.as_ref().map(|chaos| {
        let start = harness.network.now();
        harness.chaos_start = Some(start);
        let names: Vec<String> = scenario.agents.iter().map(|a| a.name.clone()).collect();
        for (at, fault) in chaos::schedule(chaos, seed, &names, scenario.network.latency) {
            harness
                .network
                .schedule_fault(start.saturating_add(at), fault, true);
        }
        start.saturating_add(chaos.until)
    });
    for (idx, step) in scenario.steps.iter().enumerate() {
        if harness.network.aborted() {
            break;
        }
        harness.run_step(idx, step);
    }
    if let Some(until) = chaos_until {
        // The chaos phase runs on to its end if the steps ended sooner; its faults not yet
        // fired are dropped (the quiesce phase heals everything).
        if harness.network.now() < until {
            harness.network.run_until(until, Until::Never);
        }
        harness.network.drop_chaos();
    }
    harness.finish()
}

struct Harness<'s, N> {
    network: N,
    scenario: &'s Scenario,
    step_timeout: u64,
    labels: BTreeMap<ChannelId, String>,
    steps: Vec<StepRecord>,
    mismatches: Vec<String>,
    background: Vec<Background>,
    notes: Vec<String>,
    chaos_start: Option<u64>,
}

fn hub_down() -> HubError {
    HubError::runtime("hubsim: the hub is down")
}

impl<N: Network> Harness<'_, N> {
    fn check(&mut self, step: Option<usize>) {
        self.network
            .observe(|monitor, hub, clocks| monitor.check(hub, clocks, step));
    }

    /// Runs until nothing is under way, for at most the step timeout.
    fn settle(&mut self) {
        let deadline = self.network.now().saturating_add(self.step_timeout);
        self.network.run_until(deadline, Until::Idle);
    }

    /// Registers every agent over its own connection, one after the other (as the reference
    /// runner does), then makes the registry durable.
    fn register_agents(&mut self) {
        for (host, spec) in self.scenario.agents.iter().enumerate() {
            self.network.connect(host);
            let deadline = self.network.now().saturating_add(self.step_timeout);
            if !self.network.run_until(deadline, Until::Connected(host)) {
                self.notes
                    .push(format!("{}: no connection to the hub", spec.name));
                continue;
            }
            let rule = wire::rule_json(&spec.rule.clone().unwrap_or_default());
            if let Err(error) = self.command(host, Command::Register { rule }) {
                self.notes.push(format!(
                    "registering {}: {}: {}",
                    spec.name, error.type_name, error.message
                ));
            }
        }
        self.settle();
        self.network.sync();
    }

    /// Gives `host` a command and waits for its result (at most the step timeout).
    fn command(&mut self, host: usize, command: Command) -> Result<Value, HubError> {
        let id = self.network.start(host, command);
        let deadline = self.network.now().saturating_add(self.step_timeout);
        if self.network.run_until(deadline, Until::Result(host, id)) {
            self.network
                .take_result(host, id)
                .unwrap_or(Ok(Value::Null))
        } else {
            Err(step_timeout(self.step_timeout as f64 / 1e6))
        }
    }

    fn host_named(&self, name: &str) -> usize {
        self.scenario
            .agents
            .iter()
            .position(|agent| agent.name == name)
            .unwrap_or(0)
    }

    /// A registered agent's id by name.
    fn id_of(&self, name: &str) -> Option<AgentId> {
        self.scenario
            .agents
            .iter()
            .position(|agent| agent.name == name)
            .and_then(|host| self.network.agent_id(host))
    }

    fn run_step(&mut self, idx: usize, step: &Step) {
        let at = self.network.now();
        self.network.observe(|monitor, _, _| {
            monitor.record(
                at,
                Event::StepStarted {
                    step: idx,
                    op: step.op.clone(),
                },
            );
        });
        let mut record = StepRecord::new(idx, step);
        let result = self.perform(idx, step, &mut record);
        self.settle();
        self.check(Some(idx));
        let at = self.network.now();
        let error = result.as_ref().err().cloned();
        self.network.observe(|monitor, _, _| {
            monitor.record(at, Event::StepEnded { step: idx, error });
        });
        if let Some(message) = record.close(step, result) {
            self.mismatches.push(message);
        }
        self.steps.push(record);
        self.collect_background(idx);
    }

    fn collect_background(&mut self, after: usize) {
        for open in &mut self.background {
            if open.outcome.is_none() {
                open.outcome = self
                    .network
                    .take_result(open.host, open.command)
                    .map(|result| result.map(|_| ()));
            }
            if let Some(outcome) = &open.outcome {
                self.steps[open.step].complete(after, outcome);
            }
        }
    }

    fn perform(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut StepRecord,
    ) -> Result<(), HubError> {
        match &step.action {
            Action::Open { .. } => self.open(idx, step, record),
            Action::Send {
                channel,
                unknown_channel,
                by,
                via_hub,
                ..
            } => {
                let host = self.host_named(by);
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                let id_of = |name: &str| Some(self.id_of(name).unwrap_or(AgentId(0)));
                let envelope = send_envelope(&step.action, channel, &id_of).expect("a send step");
                let id = if *via_hub {
                    Value::String(self.post_via_hub(envelope)?.to_string())
                } else {
                    self.lookup(channel)?;
                    self.command(host, Command::Post(Box::new(envelope)))?
                };
                record.result = Some(id);
                Ok(())
            }
            Action::Close {
                channel,
                unknown_channel,
                by,
                reason,
                via_hub,
            } => {
                let host = self.host_named(by);
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                if *via_hub {
                    self.network
                        .admin(|hub, now| hub.close_channel(now, channel, reason))
                        .ok_or_else(hub_down)?
                } else {
                    self.lookup(channel)?;
                    let command = Command::Close {
                        channel,
                        reason: reason.clone(),
                    };
                    self.command(host, command).map(|_| ())
                }
            }
            Action::Advance(by) => {
                let seconds = advance_seconds(by)?;
                let mock = advanced(self.network.mock(), seconds)?;
                self.network.set_mock(mock);
                record.now = Some(self.network.hub_now().wall);
                Ok(())
            }
            Action::TtlTick => self
                .network
                .admin(|hub, now| hub.expire_due(now))
                .ok_or_else(hub_down),
            Action::ExpectationTick => self
                .network
                .admin(|hub, now| hub.expectation_tick(now))
                .ok_or_else(hub_down),
            Action::SetRule { agent, rule } => {
                let rule = wire::rule_json(rule);
                self.command(self.host_named(agent), Command::SetRule { rule })
                    .map(|_| ())
            }
            Action::Unregister { agent } => self
                .command(self.host_named(agent), Command::Unregister)
                .map(|_| ()),
            Action::Checkpoint { agent, task, state } => {
                let params = map_of([
                    ("task_id", Value::from(task.as_str())),
                    ("state", state.clone()),
                ]);
                let op = "checkpoint_task".to_string();
                self.command(self.host_named(agent), Command::Call { op, params })
                    .map(|_| ())
            }
            Action::ReadCheckpoint { agent, task } => {
                let params = map_of([("task_id", Value::from(task.as_str()))]);
                let op = "read_task_checkpoint".to_string();
                let state = self.command(self.host_named(agent), Command::Call { op, params })?;
                record.result = Some(state);
                Ok(())
            }
            Action::NextEnvelope { agent } => {
                let host = self.host_named(agent);
                let deadline = self.network.now().saturating_add(self.step_timeout);
                if !self.network.run_until(deadline, Until::Pulled(host)) {
                    return Err(step_timeout(self.step_timeout as f64 / 1e6));
                }
                let raw = self.network.pop_pulled(host).unwrap_or_default();
                let field = |key: &str| raw.get(key).cloned().unwrap_or(Value::Null);
                record.result = Some(field("envelope_id"));
                record.event_type = Some(field("event_type"));
                Ok(())
            }
            Action::Settle => Ok(()),
            Action::Wait(micros) => {
                let until = self.network.now().saturating_add(*micros);
                self.network.run_until(until, Until::Never);
                Ok(())
            }
            Action::Fault(fault) => {
                self.network.apply_fault(fault, false);
                Ok(())
            }
        }
    }

    /// A `send` with `via: hub`: posted on the hub directly. A refused post must leave the
    /// hub's WAL and audit log as they were.
    fn post_via_hub(
        &mut self,
        envelope: crate::proto::Envelope,
    ) -> Result<crate::ids::EnvelopeId, HubError> {
        let (posted, before, after) = self
            .network
            .admin(|hub, now| {
                let before = hub.trace_counters();
                let posted = hub.post_envelope(now, envelope);
                (posted, before, hub.trace_counters())
            })
            .ok_or_else(hub_down)?;
        if posted.is_err() && before != after {
            self.network.observe(|monitor, hub, clocks| {
                monitor.check_refusal(hub, clocks, before, after);
            });
        }
        posted
    }

    /// The reference runner's own `hub.get_channel` before a client send or close.
    fn lookup(&self, channel: ChannelId) -> Result<(), HubError> {
        self.network
            .read_hub(|hub| hub.get_channel(channel).map(|_| ()))
            .ok_or_else(hub_down)?
    }

    fn open(&mut self, idx: usize, step: &Step, record: &mut StepRecord) -> Result<(), HubError> {
        let Action::Open {
            label, by, wait, ..
        } = &step.action
        else {
            unreachable!("open() runs open steps")
        };
        let label = open_label(label.as_ref(), &self.labels);
        let host = self.host_named(by);
        let request = open_request(&step.action, &|name| self.id_of(name)).expect("an open step");
        let before = self
            .network
            .read_hub(|hub| hub.channel_ids().last())
            .flatten();
        let command = Command::Open(Box::new(request));
        if !wait {
            let id = self.network.start(host, command);
            self.settle();
            self.label_new(before, &label);
            record.result = Some(Value::from(label));
            record.background = true;
            self.background.push(Background {
                step: idx,
                host,
                command: id,
                outcome: None,
            });
            return Ok(());
        }
        let result = self.command(host, command);
        self.label_new(before, &label);
        result?;
        record.result = Some(Value::from(label));
        Ok(())
    }

    fn label_new(&mut self, before: Option<ChannelId>, label: &str) {
        let created: Vec<ChannelId> = self
            .network
            .read_hub(|hub| hub.channel_ids().filter(|c| Some(*c) > before).collect())
            .unwrap_or_default();
        for channel in created {
            self.labels
                .entry(channel)
                .or_insert_with(|| label.to_string());
        }
    }

    fn channel_of(
        &self,
        idx: usize,
        label: &str,
        unknown_channel: bool,
    ) -> Result<ChannelId, HubError> {
        channel_of(&self.labels, idx, label, unknown_channel)
    }

    /// The quiesce phase (heal, then settle within `network.quiesce`), the final checks, the
    /// reference's end of run for background opens, and what the trace is rendered from.
    fn finish(mut self) -> NetRun {
        let options = &self.scenario.network;
        self.network.heal();
        let at = self.network.now();
        self.network
            .observe(|monitor, _, _| monitor.record(at, Event::Healed));
        let deadline = self.network.now().saturating_add(options.quiesce);
        let settled = self.network.run_until(deadline, Until::Idle);
        let aborted = self.network.aborted();
        let hub_up = self.network.read_hub(|_| ()).is_some();
        let (events_max, quiesce) = (options.events_max, options.quiesce);
        self.network.observe(|monitor, hub, clocks| {
            if !monitor.checking() {
                return;
            }
            if aborted {
                let message = format!(
                    "the run fired more than {events_max} events by {} and was stopped",
                    seconds(clocks.now)
                );
                monitor.violation(hub, clocks, "settle/runaway", message);
            } else if !settled {
                let message = format!(
                    "work was still under way {} after the last step with every fault healed",
                    seconds(quiesce)
                );
                monitor.violation(hub, clocks, "settle/not_settled", message);
            }
            monitor.finish(hub, clocks, settled && hub_up);
        });
        for open in &self.background {
            if open.outcome.is_none() && !self.network.has_result(open.host, open.command) {
                self.steps[open.step].pending_at_end();
            }
            let step = &self.scenario.steps[open.step];
            if let Some(message) = self.steps[open.step].background_mismatch(step) {
                self.mismatches.push(message);
            }
        }
        let ending = self.network.finish();
        let mut labels = self.labels;
        let mut auto = 0;
        for channel in ending.hub.channel_ids() {
            if let std::collections::btree_map::Entry::Vacant(slot) = labels.entry(channel) {
                auto += 1;
                slot.insert(format!("auto{auto}"));
            }
        }
        let mut notes = self.notes;
        notes.extend(ending.notes);
        let (violations, logs, events) = ending.monitor.into_parts();
        let mut agents = ending.agents;
        for (agent, log) in agents.iter_mut().zip(&logs) {
            agent.handled = log.handled.len();
        }
        NetRun {
            run: Run {
                hub: ending.hub,
                agents,
                labels,
                steps: self.steps,
                mismatches: self.mismatches,
                epoch: self.scenario.hub.epoch,
            },
            refused_inbox_full: ending.refused_inbox_full,
            stats: ending.stats,
            notes,
            violations,
            logs,
            chaos_start: self.chaos_start,
            events,
        }
    }
}

/// Microseconds as seconds for messages (`1.5s`).
pub(crate) fn seconds(micros: u64) -> String {
    format!("{}s", micros as f64 / MICROS_PER_SECOND as f64)
}
