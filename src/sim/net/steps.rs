//! Scenario steps on the network: registration, each op through the agent's client (or the hub
//! directly where the reference runner calls it), step records, background opens.

use super::*;
use crate::client::host::Command;
use crate::hub::wire;
use crate::ids::AgentId;
use crate::proto::envelope::map_of;
use crate::sim::runner::steps::{
    advance_seconds, advanced, background_mismatch, channel_of, close_record, complete_background,
    new_record, open_request, pending_at_end, send_envelope, step_timeout,
};
use crate::sim::scenario::{Action, Step};

/// A background (`wait: false`) open.
#[derive(Clone, Debug)]
pub(super) struct Background {
    step: usize,
    host: usize,
    command: CommandId,
    outcome: Option<Result<(), HubError>>,
}

/// A `next_envelope` step's record: the envelope's id (normalised in the trace) and type.
pub(crate) fn record_pulled(record: &mut Map<String, Value>, raw: &Value) {
    let field = |key: &str| raw.get(key).cloned().unwrap_or(Value::Null);
    record.insert("result".into(), field("envelope_id"));
    record.insert("event_type".into(), field("event_type"));
}

fn hub_down() -> HubError {
    HubError::runtime("hubsim: the hub is down")
}

impl World {
    /// Registers every agent over its own connection, one after the other (as the reference
    /// runner does), then makes the registry durable.
    pub(super) fn register_agents(&mut self, scenario: &Scenario) {
        for (host, spec) in scenario.agents.iter().enumerate() {
            self.connect(host);
            let rule = wire::rule_json(&spec.rule.clone().unwrap_or_default());
            let result = self.command(host, Command::Register { rule });
            if let Err(error) = result {
                self.notes.push(format!(
                    "registering {}: {}: {}",
                    spec.name, error.type_name, error.message
                ));
            }
        }
        self.settle();
        self.sync();
    }

    /// Gives `host` a command and waits for its result (at most the step timeout).
    fn command(&mut self, host: usize, command: Command) -> Result<Value, HubError> {
        let id = self.hosts[host].command(Instant(self.now), command, &mut self.thinks[host]);
        self.drain_host(host);
        let deadline = self.now.saturating_add(self.step_timeout);
        let key = (host, id);
        if self.run_until(deadline, &|world| world.results.contains_key(&key)) {
            self.results.remove(&key).unwrap_or(Ok(Value::Null))
        } else {
            Err(step_timeout(self.step_timeout as f64 / 1e6))
        }
    }

    /// A registered agent's id by name.
    fn id_of(&self, name: &str) -> Option<AgentId> {
        self.host_named(name).and_then(|h| self.hosts[h].id)
    }

    fn agent_id(&self, name: &str) -> AgentId {
        self.host_named(name)
            .and_then(|h| self.hosts[h].id)
            .unwrap_or(AgentId(0))
    }

    pub(super) fn run_step(&mut self, idx: usize, step: &Step) {
        let mut record = new_record(idx, step);
        let result = self.perform(idx, step, &mut record);
        self.settle();
        self.check(Some(idx));
        if let Some(message) = close_record(idx, step, &mut record, result) {
            self.mismatches.push(message);
        }
        self.steps.push(record);
        self.collect_background(idx);
    }

    fn collect_background(&mut self, after: usize) {
        for open in &mut self.background {
            if open.outcome.is_none() {
                open.outcome = self
                    .results
                    .remove(&(open.host, open.command))
                    .map(|result| result.map(|_| ()));
            }
            let Some(outcome) = &open.outcome else {
                continue;
            };
            complete_background(&mut self.steps[open.step], after, outcome);
        }
    }

    /// The reference's end of run for background opens: one still pending is cancelled.
    pub(super) fn finish_background(&mut self, scenario: &Scenario) {
        for open in &self.background {
            if open.outcome.is_none() && !self.results.contains_key(&(open.host, open.command)) {
                pending_at_end(&mut self.steps[open.step]);
            }
            let step = &scenario.steps[open.step];
            if let Some(message) = background_mismatch(open.step, step, &self.steps[open.step]) {
                self.mismatches.push(message);
            }
        }
    }

    fn perform(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut Map<String, Value>,
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
                let host = self.host_named(by).unwrap_or(0);
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                let envelope =
                    send_envelope(&step.action, channel, &|name| Some(self.agent_id(name)))
                        .expect("a send step");
                let id = if *via_hub {
                    let now = self.hub_now();
                    let server = self.server.as_mut().ok_or_else(hub_down)?;
                    let before = server.hub().trace_counters();
                    let posted = server.hub_mut().post_envelope(now, envelope);
                    let after = server.hub().trace_counters();
                    server.flush(now);
                    self.dirty = true;
                    self.check_refusal(posted.is_err(), before, after);
                    self.drain_hub();
                    Value::String(posted?.to_string())
                } else {
                    self.lookup(channel)?;
                    self.command(host, Command::Post(Box::new(envelope)))?
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
                    let now = self.hub_now();
                    let server = self.server.as_mut().ok_or_else(hub_down)?;
                    let closed = server.hub_mut().close_channel(now, channel, reason);
                    server.flush(now);
                    self.dirty = true;
                    self.drain_hub();
                    closed
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
                self.mock = advanced(self.mock, seconds)?;
                self.clock_floor = self.now;
                record.insert("now".into(), Value::String(self.hub_now().wall.to_string()));
                Ok(())
            }
            Action::TtlTick | Action::ExpectationTick => {
                let now = self.hub_now();
                let server = self.server.as_mut().ok_or_else(hub_down)?;
                if matches!(step.action, Action::TtlTick) {
                    server.hub_mut().expire_due(now);
                } else {
                    server.hub_mut().expectation_tick(now);
                }
                server.flush(now);
                self.dirty = true;
                self.drain_hub();
                Ok(())
            }
            Action::SetRule { agent, rule } => {
                let host = self.host_named(agent).unwrap_or(0);
                let rule = wire::rule_json(rule);
                self.command(host, Command::SetRule { rule }).map(|_| ())
            }
            Action::Unregister { agent } => {
                let host = self.host_named(agent).unwrap_or(0);
                self.command(host, Command::Unregister).map(|_| ())
            }
            Action::Checkpoint { agent, task, state } => {
                let host = self.host_named(agent).unwrap_or(0);
                let params = map_of([
                    ("task_id", Value::from(task.as_str())),
                    ("state", state.clone()),
                ]);
                let op = "checkpoint_task".to_string();
                self.command(host, Command::Call { op, params }).map(|_| ())
            }
            Action::ReadCheckpoint { agent, task } => {
                let host = self.host_named(agent).unwrap_or(0);
                let params = map_of([("task_id", Value::from(task.as_str()))]);
                let op = "read_task_checkpoint".to_string();
                let state = self.command(host, Command::Call { op, params })?;
                record.insert("result".into(), state);
                Ok(())
            }
            Action::NextEnvelope { agent } => {
                let host = self.host_named(agent).unwrap_or(0);
                let deadline = self.now.saturating_add(self.step_timeout);
                if !self.run_until(deadline, &|world| world.hosts[host].pulled_len() > 0) {
                    return Err(step_timeout(self.step_timeout as f64 / 1e6));
                }
                let raw = self.hosts[host].pop_pulled().unwrap_or_default();
                record_pulled(record, &raw);
                Ok(())
            }
            Action::Settle => Ok(()),
            Action::Wait(micros) => {
                let until = self.now.saturating_add(*micros);
                self.run_until(until, &|_| false);
                Ok(())
            }
            Action::Fault(fault) => {
                self.apply(fault);
                Ok(())
            }
        }
    }

    /// A refused direct post must leave the hub's WAL and audit log as they were.
    fn check_refusal(&mut self, refused: bool, before: (u64, usize), after: (u64, usize)) {
        if self
            .checker
            .selection()
            .has(crate::sim::check::Invariant::Inbox)
        {
            let mut checker = std::mem::take(&mut self.checker);
            checker.check_refusal(&self.view(None), refused, before, after);
            self.checker = checker;
        }
    }

    /// The reference runner's own `hub.get_channel` before a client send or close.
    fn lookup(&self, channel: ChannelId) -> Result<(), HubError> {
        let server = self.server.as_ref().ok_or_else(hub_down)?;
        server.hub().get_channel(channel).map(|_| ())
    }

    fn open(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut Map<String, Value>,
    ) -> Result<(), HubError> {
        let Action::Open {
            label, by, wait, ..
        } = &step.action
        else {
            unreachable!("open() runs open steps")
        };
        let label = label
            .clone()
            .unwrap_or_else(|| format!("ch{}", self.labels.len() + 1));
        let host = self.host_named(by).unwrap_or(0);
        let request = open_request(&step.action, &|name| self.id_of(name)).expect("an open step");
        let before = self
            .server
            .as_ref()
            .and_then(|server| server.hub().channel_ids().last());
        let command = Command::Open(Box::new(request));
        if !wait {
            let id = self.hosts[host].command(Instant(self.now), command, &mut self.thinks[host]);
            self.drain_host(host);
            self.settle();
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
        let result = self.command(host, command);
        self.label_new(before, &label);
        result?;
        record.insert("result".into(), Value::from(label));
        Ok(())
    }

    fn label_new(&mut self, before: Option<ChannelId>, label: &str) {
        let Some(server) = &self.server else {
            return;
        };
        for channel in server.hub().channel_ids().filter(|c| Some(*c) > before) {
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
