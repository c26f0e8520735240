//! The harness of a turmoil run: registration, each step through the agent's client (or the hub
//! directly where the reference runner calls it), settling, step records, background opens. It
//! follows the event driver's harness (`sim::net`) step for step; its waits poll once per tick.

use super::{apply_fault, sim_now, Shared};
use crate::client::host::{Command, CommandId};
use crate::hub::wire;
use crate::ids::{AgentId, ChannelId};
use crate::proto::envelope::map_of;
use crate::proto::HubError;
use crate::sim::runner::steps::{
    advance_seconds, advanced, background_mismatch, channel_of, close_record, complete_background,
    new_record, open_request, pending_at_end, send_envelope, step_timeout,
};
use crate::sim::scenario::{Action, Fault, Scenario, Step};
use crate::time::{Instant, MICROS_PER_SECOND};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// What the harness leaves for the trace.
#[derive(Debug)]
pub(super) struct Output {
    pub(super) labels: BTreeMap<ChannelId, String>,
    pub(super) steps: Vec<Map<String, Value>>,
    pub(super) mismatches: Vec<String>,
    pub(super) notes: Vec<String>,
}

/// A background (`wait: false`) open.
#[derive(Clone, Debug)]
struct Background {
    step: usize,
    host: usize,
    command: CommandId,
    outcome: Option<Result<(), HubError>>,
}

/// The turmoil client that runs the steps.
pub(super) struct Harness {
    shared: Rc<Shared>,
    step_timeout: u64,
    labels: BTreeMap<ChannelId, String>,
    steps: Vec<Map<String, Value>>,
    mismatches: Vec<String>,
    background: Vec<Background>,
    notes: Vec<String>,
}

impl Harness {
    pub(super) fn new(shared: Rc<Shared>, scenario: &Scenario) -> Harness {
        Harness {
            shared,
            step_timeout: (scenario.hub.step_timeout_seconds * MICROS_PER_SECOND as f64) as u64,
            labels: BTreeMap::new(),
            steps: Vec::new(),
            mismatches: Vec::new(),
            background: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Registers the agents, runs every step, heals the network and lets the run quiesce.
    pub(super) async fn run(mut self, scenario: &Scenario) {
        self.register_agents(scenario).await;
        for (idx, step) in scenario.steps.iter().enumerate() {
            self.run_step(idx, step).await;
        }
        for agent in scenario.agents.iter() {
            apply_fault(&self.shared, &Fault::Repair(agent.name.clone()), None);
            apply_fault(&self.shared, &Fault::Release(agent.name.clone()), None);
        }
        let quiesce = self.shared.options.quiesce;
        self.settle_for(quiesce).await;
        self.finish_background(scenario);
        *self.shared.output.borrow_mut() = Some(Output {
            labels: self.labels,
            steps: self.steps,
            mismatches: self.mismatches,
            notes: self.notes,
        });
    }

    /// Sleeps one tick, or less to stop at `deadline`.
    async fn tick(&self, deadline: u64) {
        let left = Duration::from_micros(deadline.saturating_sub(sim_now()));
        tokio::time::sleep(left.min(self.shared.tick)).await;
    }

    /// Waits until `done` holds or simulated time reaches `deadline`; returns whether it held.
    async fn wait_until(
        &mut self,
        deadline: u64,
        mut done: impl FnMut(&mut Harness) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if sim_now() >= deadline {
                return false;
            }
            self.tick(deadline).await;
        }
    }

    /// Runs until no message is in flight and every host is idle, for at most `budget` µs. A
    /// message lost with a dropped connection never arrives: then the network counts as quiet
    /// once nothing moved for longer than the slowest link takes.
    async fn settle_for(&mut self, budget: u64) {
        let deadline = sim_now().saturating_add(budget);
        let tick = u64::try_from(self.shared.tick.as_micros()).unwrap_or(u64::MAX);
        let latency = self.shared.options.latency.max.div_ceil(1000) * 1000;
        let window = latency.saturating_add(tick.saturating_mul(3));
        let mut last = (self.shared.activity(), sim_now());
        self.wait_until(deadline, |harness| {
            let shared = &harness.shared;
            let activity = shared.activity();
            if activity != last.0 {
                last = (activity, sim_now());
            }
            let quiet = shared.balanced() || sim_now().saturating_sub(last.1) >= window;
            shared.hosts_idle() && quiet
        })
        .await;
    }

    async fn settle(&mut self) {
        self.settle_for(self.step_timeout).await;
    }

    /// Registers every agent over its own connection, one after the other (as the reference
    /// runner does).
    async fn register_agents(&mut self, scenario: &Scenario) {
        for (host, spec) in scenario.agents.iter().enumerate() {
            let agent = &self.shared.agents[host];
            agent.state.borrow_mut().want_connect = true;
            agent.wake.notify_one();
            let deadline = sim_now().saturating_add(self.step_timeout);
            let connected = self
                .wait_until(deadline, |harness| {
                    harness.shared.agents[host].state.borrow().connected
                })
                .await;
            if !connected {
                self.notes
                    .push(format!("{}: no connection to the hub", spec.name));
                continue;
            }
            let rule = wire::rule_json(&spec.rule.clone().unwrap_or_default());
            if let Err(error) = self.command(host, Command::Register { rule }).await {
                self.notes.push(format!(
                    "registering {}: {}: {}",
                    spec.name, error.type_name, error.message
                ));
            }
        }
        self.settle().await;
    }

    /// Gives `host` a command; its result comes later.
    fn start(&self, host: usize, command: Command) -> CommandId {
        let agent = &self.shared.agents[host];
        let mut state = agent.state.borrow_mut();
        let state = &mut *state;
        let id = state
            .host
            .command(Instant(sim_now()), command, &mut state.think);
        state.unsent = true;
        state.drain_results();
        agent.wake.notify_one();
        id
    }

    fn take_result(&self, host: usize, id: CommandId) -> Option<Result<Value, HubError>> {
        let mut state = self.shared.agents[host].state.borrow_mut();
        state.drain_results();
        state.results.remove(&id)
    }

    /// Gives `host` a command and waits for its result (at most the step timeout).
    async fn command(&mut self, host: usize, command: Command) -> Result<Value, HubError> {
        let id = self.start(host, command);
        let deadline = sim_now().saturating_add(self.step_timeout);
        let mut result = None;
        self.wait_until(deadline, |harness| {
            result = harness.take_result(host, id);
            result.is_some()
        })
        .await;
        result.unwrap_or_else(|| Err(step_timeout(self.step_timeout as f64 / 1e6)))
    }

    fn host_named(&self, name: &str) -> Option<usize> {
        self.shared.agent_named(name)
    }

    fn agent_id_of(&self, host: usize) -> Option<AgentId> {
        self.shared.agents[host].state.borrow().host.id
    }

    /// A registered agent's id by name.
    fn id_of(&self, name: &str) -> Option<AgentId> {
        self.host_named(name).and_then(|h| self.agent_id_of(h))
    }

    fn agent_id(&self, name: &str) -> AgentId {
        self.host_named(name)
            .and_then(|h| self.agent_id_of(h))
            .unwrap_or(AgentId(0))
    }

    async fn run_step(&mut self, idx: usize, step: &Step) {
        let mut record = new_record(idx, step);
        let result = self.perform(idx, step, &mut record).await;
        self.settle().await;
        if let Some(message) = close_record(idx, step, &mut record, result) {
            self.mismatches.push(message);
        }
        self.steps.push(record);
        self.collect_background(idx);
    }

    fn collect_background(&mut self, after: usize) {
        for idx in 0..self.background.len() {
            let open = &self.background[idx];
            if open.outcome.is_none() {
                let outcome = self
                    .take_result(open.host, open.command)
                    .map(|result| result.map(|_| ()));
                self.background[idx].outcome = outcome;
            }
            let open = &self.background[idx];
            let Some(outcome) = &open.outcome else {
                continue;
            };
            complete_background(&mut self.steps[open.step], after, outcome);
        }
    }

    /// The reference's end of run for background opens: one still pending is cancelled.
    fn finish_background(&mut self, scenario: &Scenario) {
        for idx in 0..self.background.len() {
            let open = self.background[idx].clone();
            let finished = open.outcome.is_some()
                || self.shared.agents[open.host]
                    .state
                    .borrow()
                    .results
                    .contains_key(&open.command);
            if !finished {
                pending_at_end(&mut self.steps[open.step]);
            }
            let step = &scenario.steps[open.step];
            if let Some(message) = background_mismatch(open.step, step, &self.steps[open.step]) {
                self.mismatches.push(message);
            }
        }
    }

    async fn perform(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut Map<String, Value>,
    ) -> Result<(), HubError> {
        match &step.action {
            Action::Open { .. } => self.open(idx, step, record).await,
            Action::Send {
                channel,
                unknown_channel,
                by,
                via_hub,
                ..
            } => {
                let host = self.host_named(by).unwrap_or(0);
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                let envelope =
                    send_envelope(&step.action, channel, &|name| Some(self.agent_id(name)))
                        .expect("a send step");
                let id = if *via_hub {
                    let posted = self.shared.hub.with(|server, now| {
                        let posted = server.hub_mut().post_envelope(now, envelope);
                        server.flush(now);
                        posted
                    });
                    Value::String(posted?.to_string())
                } else {
                    self.lookup(channel)?;
                    self.command(host, Command::Post(Box::new(envelope)))
                        .await?
                };
                record.insert("result".into(), id);
                Ok(())
            }
            Action::Close {
                channel,
                unknown_channel,
                by,
                reason,
                via_hub,
            } => {
                let host = self.host_named(by).unwrap_or(0);
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                if *via_hub {
                    self.shared.hub.with(|server, now| {
                        let closed = server.hub_mut().close_channel(now, channel, reason);
                        server.flush(now);
                        closed
                    })
                } else {
                    self.lookup(channel)?;
                    let command = Command::Close {
                        channel,
                        reason: reason.clone(),
                    };
                    self.command(host, command).await.map(|_| ())
                }
            }
            Action::Advance(by) => {
                let seconds = advance_seconds(by)?;
                self.shared
                    .mock
                    .set(advanced(self.shared.mock.get(), seconds)?);
                let wall = self.shared.hub.now().wall;
                record.insert("now".into(), Value::String(wall.to_string()));
                Ok(())
            }
            Action::TtlTick | Action::ExpectationTick => {
                let ttl = matches!(step.action, Action::TtlTick);
                self.shared.hub.with(|server, now| {
                    if ttl {
                        server.hub_mut().expire_due(now);
                    } else {
                        server.hub_mut().expectation_tick(now);
                    }
                    server.flush(now);
                });
                Ok(())
            }
            Action::SetRule { agent, rule } => {
                let host = self.host_named(agent).unwrap_or(0);
                let rule = wire::rule_json(rule);
                self.command(host, Command::SetRule { rule })
                    .await
                    .map(|_| ())
            }
            Action::Unregister { agent } => {
                let host = self.host_named(agent).unwrap_or(0);
                self.command(host, Command::Unregister).await.map(|_| ())
            }
            Action::Checkpoint { agent, task, state } => {
                let host = self.host_named(agent).unwrap_or(0);
                let params = map_of([
                    ("task_id", Value::from(task.as_str())),
                    ("state", state.clone()),
                ]);
                let op = "checkpoint_task".to_string();
                self.command(host, Command::Call { op, params })
                    .await
                    .map(|_| ())
            }
            Action::ReadCheckpoint { agent, task } => {
                let host = self.host_named(agent).unwrap_or(0);
                let params = map_of([("task_id", Value::from(task.as_str()))]);
                let op = "read_task_checkpoint".to_string();
                let state = self.command(host, Command::Call { op, params }).await?;
                record.insert("result".into(), state);
                Ok(())
            }
            Action::Settle => Ok(()),
            Action::NextEnvelope { agent } => {
                let host = self.host_named(agent).unwrap_or(0);
                let deadline = sim_now().saturating_add(self.step_timeout);
                let mut raw = None;
                self.wait_until(deadline, |harness| {
                    raw = harness.shared.agents[host]
                        .state
                        .borrow_mut()
                        .host
                        .pop_pulled();
                    raw.is_some()
                })
                .await;
                let raw = raw.ok_or_else(|| step_timeout(self.step_timeout as f64 / 1e6))?;
                crate::sim::net::record_pulled(record, &raw);
                Ok(())
            }
            Action::Wait(micros) => {
                let until = sim_now().saturating_add(*micros);
                self.wait_until(until, |_| false).await;
                Ok(())
            }
            Action::Fault(fault) => {
                apply_fault(&self.shared, fault, None);
                Ok(())
            }
        }
    }

    /// The reference runner's own `hub.get_channel` before a client send or close.
    fn lookup(&self, channel: ChannelId) -> Result<(), HubError> {
        self.shared
            .hub
            .read(|server| server.hub().get_channel(channel).map(|_| ()))
    }

    fn last_channel(&self) -> Option<ChannelId> {
        self.shared
            .hub
            .read(|server| server.hub().channel_ids().last())
    }

    async fn open(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut Map<String, Value>,
    ) -> Result<(), HubError> {
        let Action::Open {
            label, by, wait, ..
        } = &step.action
        else {
            return Ok(());
        };
        let label = label
            .clone()
            .unwrap_or_else(|| format!("ch{}", self.labels.len() + 1));
        let host = self.host_named(by).unwrap_or(0);
        let request = open_request(&step.action, &|name| self.id_of(name)).expect("an open step");
        let before = self.last_channel();
        let command = Command::Open(Box::new(request));
        if !wait {
            let id = self.start(host, command);
            self.settle().await;
            self.label_new(before, &label);
            record.insert("result".into(), Value::from(label));
            record.insert("background".into(), Value::Bool(true));
            self.background.push(Background {
                step: idx,
                host,
                command: id,
                outcome: None,
            });
            return Ok(());
        }
        let result = self.command(host, command).await;
        self.label_new(before, &label);
        result?;
        record.insert("result".into(), Value::from(label));
        Ok(())
    }

    fn label_new(&mut self, before: Option<ChannelId>, label: &str) {
        let created: Vec<ChannelId> = self.shared.hub.read(|server| {
            server
                .hub()
                .channel_ids()
                .filter(|c| Some(*c) > before)
                .collect()
        });
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
}
