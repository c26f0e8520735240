//! Running one step in process: the op itself, its record, background opens, and the
//! real-time wait of a blocking open.

use super::*;
use crate::sim::record::StepRecord;
use crate::sim::requests::{
    advance_seconds, advanced, channel_of, open_label, resolve_refs, send_envelope, step_timeout,
};

impl Driver {
    pub(super) fn run_step(&mut self, idx: usize, step: &Step) {
        if self.log.enabled() {
            let op = step.op.clone();
            self.log
                .push(self.mono.0, LogEvent::StepStarted { step: idx, op });
        }
        let mut record = StepRecord::new(idx, step);
        let result = self.perform(idx, step, &mut record);
        self.pump();
        self.settle();
        if self.log.enabled() {
            let error = result.as_ref().err().cloned();
            self.log
                .push(self.mono.0, LogEvent::StepEnded { step: idx, error });
        }
        if let Some(message) = record.close(step, result) {
            self.mismatches.push(message);
        }
        self.steps.push(record);
        for open in &mut self.background {
            if open.outcome.is_none() {
                open.outcome = open.channel.and_then(|c| self.opens.get(&c)).cloned();
            }
            let Some(outcome) = &open.outcome else {
                continue;
            };
            self.steps[open.step].complete(idx, outcome);
        }
    }

    fn perform(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut StepRecord,
    ) -> Result<(), HubError> {
        let now = self.now();
        match &step.action {
            Action::Open { .. } => self.open(idx, step, record),
            Action::Send {
                channel,
                unknown_channel,
                by,
                via_hub,
                ..
            } => {
                let agent = &self.agents[self.by_name[by]];
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                let id_of = |name: &str| self.by_name.get(name).map(|idx| self.agents[*idx].id);
                let envelope = send_envelope(&step.action, channel, &id_of).expect("a send step");
                if !via_hub {
                    self.hub.get_channel(channel)?;
                    if agent.disconnected {
                        return Err(HubError::runtime("AgentClient is disconnected"));
                    }
                }
                let id = self.hub.post_envelope(now, envelope)?;
                record.result = Some(Value::String(id.to_string()));
                Ok(())
            }
            Action::Close {
                channel,
                unknown_channel,
                reason,
                via_hub,
                ..
            } => {
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                if !via_hub {
                    self.hub.get_channel(channel)?;
                }
                self.hub.close_channel(now, channel, reason)
            }
            Action::Advance(by) => {
                let seconds = advance_seconds(by)?;
                self.wall = advanced(self.wall, seconds)?;
                record.now = Some(self.wall);
                Ok(())
            }
            Action::TtlTick => {
                self.hub.expire_due(now);
                Ok(())
            }
            Action::ExpectationTick => {
                self.hub.expectation_tick(now);
                Ok(())
            }
            Action::SetRule { agent, rule } => {
                let id = self.agents[self.by_name[agent]].id;
                self.hub.set_rule(now, id, rule.clone())
            }
            Action::Unregister { agent } => {
                let idx = self.by_name[agent];
                if !self.agents[idx].disconnected {
                    self.hub.unregister(now, self.agents[idx].id)?;
                    self.agents[idx].disconnected = true;
                }
                Ok(())
            }
            Action::Checkpoint { task, state, .. } => {
                self.hub.checkpoint_task(task, state.clone());
                Ok(())
            }
            Action::ReadCheckpoint { task, .. } => {
                let state = self.hub.read_task_checkpoint(task).cloned();
                record.result = Some(state.unwrap_or(Value::Null));
                Ok(())
            }
            Action::Settle | Action::Wait(_) => Ok(()),
            Action::Fault(_) | Action::NextEnvelope { .. } => Err(HubError::new(
                crate::proto::ErrorKind::Other,
                format!(
                    "hubsim: `{}` needs the network driver (hubsim run)",
                    step.op
                ),
            )
            .renamed("UnsupportedStep")),
        }
    }

    fn open(&mut self, idx: usize, step: &Step, record: &mut StepRecord) -> Result<(), HubError> {
        let Action::Open {
            label,
            by,
            manifest_type,
            targets,
            ttl,
            knobs,
            intent,
            labels,
            wait,
        } = &step.action
        else {
            unreachable!("open() runs open steps")
        };
        let label = open_label(label.as_ref(), &self.labels);
        let background = !wait;
        let creator = &self.agents[self.by_name[by]];
        let attempt = (|| {
            if creator.disconnected {
                return Err(HubError::runtime("AgentClient is disconnected"));
            }
            let participants = targets
                .iter()
                .map(|t| self.hub.get_agent(t).map(|(id, _)| id))
                .collect::<Result<Vec<_>, _>>()?;
            let as_map = |data: &Option<Value>| match data.as_ref().map(|d| self.resolve_refs(d)) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            Ok(CreateChannel {
                creator: creator.id,
                manifest_type: manifest_type.clone(),
                manifest_version: 1,
                participants,
                required_acks: None,
                ttl: ttl.clone(),
                knobs: as_map(knobs),
                intent: intent.clone(),
                labels: as_map(labels),
            })
        })();
        let before = self.hub.channel_ids().last();
        let created = attempt.and_then(|request| self.hub.create_channel(self.now(), request));
        self.pump();
        let new: Vec<ChannelId> = self
            .hub
            .channel_ids()
            .filter(|c| Some(*c) > before)
            .collect();
        for channel in &new {
            self.labels.entry(*channel).or_insert_with(|| label.clone());
        }
        if background {
            record.result = Some(Value::from(label));
            record.background = true;
            let (channel, outcome) = match created {
                Ok(Created::Pending(channel)) => (Some(channel), None),
                Ok(Created::Active(channel)) => (Some(channel), Some(Ok(()))),
                Err(error) => (new.first().copied(), Some(Err(error))),
            };
            self.background.push(Background {
                step: idx,
                channel,
                outcome,
            });
            return Ok(());
        }
        match created? {
            Created::Active(_) => {}
            Created::Pending(channel) => self.wait_for_open(channel)?,
        }
        record.result = Some(Value::from(label));
        Ok(())
    }

    /// Blocks like `await client.open(...)`: work runs; when nothing is left, monotonic time jumps
    /// to the hub's next deadline, unless the step's own timeout comes first.
    fn wait_for_open(&mut self, channel: ChannelId) -> Result<(), HubError> {
        let deadline = self
            .mono
            .plus_micros((self.step_timeout_seconds * MICROS_PER_SECOND as f64) as u64);
        loop {
            self.settle();
            if let Some(result) = self.opens.get(&channel) {
                return result.clone();
            }
            match self.hub.poll_timeout() {
                Some(at) if at <= deadline => {
                    self.mono = self.mono.max(at);
                    self.hub.handle_timeout(self.now());
                    self.pump();
                }
                _ => {
                    self.mono = deadline;
                    self.hub.cancel_open(channel);
                    return Err(step_timeout(self.step_timeout_seconds));
                }
            }
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

    fn resolve_refs(&self, data: &Value) -> Value {
        resolve_refs(data, &|name| {
            self.by_name.get(name).map(|idx| self.agents[*idx].id)
        })
    }
}
