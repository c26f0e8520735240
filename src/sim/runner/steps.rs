//! Running one step: the op itself, its record, background opens, and the real-time wait of a
//! blocking open.

use super::*;

impl Driver {
    pub(super) fn run_step(&mut self, idx: usize, step: &Step) {
        let mut record = new_record(idx, step);
        let result = self.perform(idx, step, &mut record);
        self.pump();
        self.settle();
        if let Some(message) = close_record(idx, step, &mut record, result) {
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
            complete_background(&mut self.steps[open.step], idx, outcome);
        }
    }

    fn perform(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut Map<String, Value>,
    ) -> Result<(), HubError> {
        let now = self.now();
        match &step.action {
            Action::Open { .. } => self.open(idx, step, record),
            Action::Send {
                channel,
                unknown_channel,
                by,
                text,
                audience,
                event_type,
                event_data,
                depth,
                via_hub,
            } => {
                let agent = &self.agents[self.by_name[by]];
                let channel = self.channel_of(idx, channel, *unknown_channel)?;
                let audience = audience.as_ref().map(|names| {
                    names
                        .iter()
                        .map(|n| self.agents[self.by_name[n]].id)
                        .collect()
                });
                let data = match event_data {
                    Some(data) => match self.resolve_refs(data) {
                        Value::Object(map) => map,
                        _ => unreachable!("event_data is a mapping (checked at load)"),
                    },
                    None => crate::proto::envelope::map_of([("text", Value::from(text.as_str()))]),
                };
                let mut envelope = Envelope::new(channel, agent.id, audience, event_type, data);
                envelope.depth = depth.unwrap_or(0);
                if !via_hub {
                    self.hub.get_channel(channel)?;
                    if agent.disconnected {
                        return Err(HubError::runtime("AgentClient is disconnected"));
                    }
                }
                let id = self.hub.post_envelope(now, envelope)?;
                record.insert("result".into(), Value::String(id.to_string()));
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
                record.insert("now".into(), Value::String(self.wall.to_string()));
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
                record.insert("result".into(), state.unwrap_or(Value::Null));
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

    fn open(
        &mut self,
        idx: usize,
        step: &Step,
        record: &mut Map<String, Value>,
    ) -> Result<(), HubError> {
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
        let label = label
            .clone()
            .unwrap_or_else(|| format!("ch{}", self.labels.len() + 1));
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
            record.insert("result".into(), Value::from(label));
            record.insert("background".into(), Value::Bool(true));
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
        record.insert("result".into(), Value::from(label));
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

/// A step's channel label to its channel: the first channel opened under it, or, with
/// `unknown_channel`, an id the hub never minted; otherwise the reference runner's `KeyError`.
pub(crate) fn channel_of(
    labels: &BTreeMap<ChannelId, String>,
    idx: usize,
    label: &str,
    unknown_channel: bool,
) -> Result<ChannelId, HubError> {
    if let Some((channel, _)) = labels.iter().find(|(_, l)| l.as_str() == label) {
        return Ok(*channel);
    }
    if unknown_channel {
        return Ok(UNKNOWN_CHANNEL);
    }
    Err(HubError::key(&format!(
        "step {idx}: unknown channel label {}",
        crate::json::py_str_repr(label)
    )))
}

/// `{$id: name}` becomes that agent's id (or `null` for an unknown name), anywhere in `data`.
pub(crate) fn resolve_refs(data: &Value, id_of: &dyn Fn(&str) -> Option<AgentId>) -> Value {
    match data {
        Value::Object(map) if map.len() == 1 && map.contains_key("$id") => {
            let name = map["$id"].as_str().unwrap_or_default();
            id_of(name).map_or(Value::Null, |id| Value::String(id.to_string()))
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve_refs(v, id_of)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve_refs(v, id_of)).collect()),
        other => other.clone(),
    }
}

/// Records a background open that finished after step `after` (once).
pub(crate) fn complete_background(
    record: &mut Map<String, Value>,
    after: usize,
    outcome: &Result<(), HubError>,
) {
    if !record.contains_key("completed_after_step") {
        record.insert("completed_after_step".into(), Value::from(after));
        record.insert(
            "error".into(),
            outcome.as_ref().err().map_or(Value::Null, error_record),
        );
    }
}

/// Records a background open still pending when the run ends (the reference cancels it).
pub(crate) fn pending_at_end(record: &mut Map<String, Value>) {
    if !record.contains_key("completed_after_step") {
        record.insert("still_pending_at_end".into(), Value::Bool(true));
        record.insert("error".into(), Value::Null);
    }
}

/// A background open's outcome, as recorded, against its step's `expect_error`.
pub(crate) fn background_mismatch(
    idx: usize,
    step: &Step,
    record: &Map<String, Value>,
) -> Option<String> {
    let error = record
        .get("error")
        .filter(|e| !e.is_null())
        .map(|e| HubError {
            kind: crate::proto::ErrorKind::Other,
            type_name: e["type"].as_str().unwrap_or_default().to_string(),
            message: e["message"].as_str().unwrap_or_default().to_string(),
        });
    if matches_expectation(step.expect_error.as_ref(), error.as_ref()) {
        return None;
    }
    Some(mismatch(idx, step, error.as_ref()).replacen(
        &format!("step {idx} ({})", step.op),
        &format!("step {idx} (background open)"),
        1,
    ))
}

/// A step's record before it runs: its index, op and the keys the trace echoes.
pub(crate) fn new_record(idx: usize, step: &Step) -> Map<String, Value> {
    let mut record = Map::new();
    record.insert("i".into(), Value::from(idx));
    record.insert("op".into(), Value::from(step.op.as_str()));
    for (key, value) in &step.echo {
        record.insert(key.clone(), value.clone());
    }
    record
}

/// Completes a step's record with its error; returns the expectation mismatch, if any (a
/// background open is checked when it finishes).
pub(crate) fn close_record(
    idx: usize,
    step: &Step,
    record: &mut Map<String, Value>,
    result: Result<(), HubError>,
) -> Option<String> {
    let error = result.err();
    record.insert(
        "error".into(),
        error.as_ref().map_or(Value::Null, error_record),
    );
    let background = matches!(step.action, Action::Open { wait: false, .. }) && error.is_none();
    (!background && !matches_expectation(step.expect_error.as_ref(), error.as_ref()))
        .then(|| mismatch(idx, step, error.as_ref()))
}

/// The seconds an `advance` step moves the mock clock by.
pub(crate) fn advance_seconds(by: &AdvanceBy) -> Result<f64, HubError> {
    Ok(match by {
        AdvanceBy::Seconds(seconds) => *seconds as f64,
        AdvanceBy::Float(seconds) => *seconds,
        AdvanceBy::Text(text) => parse_duration(&DurationSpec::Text(text.clone()))? as f64,
    })
}

/// The envelope a `send` step posts (the one `Channel.send` builds), for `channel`; agent
/// names resolve through `id_of`.
pub(crate) fn send_envelope(
    action: &Action,
    channel: ChannelId,
    id_of: &dyn Fn(&str) -> Option<AgentId>,
) -> Option<Envelope> {
    let Action::Send {
        by,
        text,
        audience,
        event_type,
        event_data,
        depth,
        ..
    } = action
    else {
        return None;
    };
    let id = |name: &str| id_of(name).unwrap_or(AgentId(0));
    let audience = audience
        .as_ref()
        .map(|names| names.iter().map(|n| id(n)).collect());
    let data = match event_data.as_ref().map(|d| resolve_refs(d, id_of)) {
        Some(Value::Object(map)) => map,
        _ => crate::proto::envelope::map_of([("text", Value::from(text.as_str()))]),
    };
    let mut envelope = Envelope::new(channel, id(by), audience, event_type, data);
    envelope.depth = depth.unwrap_or(0);
    Some(envelope)
}

/// What a remote client's `open` is called with for an `open` step.
pub(crate) fn open_request(
    action: &Action,
    id_of: &dyn Fn(&str) -> Option<AgentId>,
) -> Option<crate::client::host::OpenRequest> {
    let Action::Open {
        manifest_type,
        targets,
        ttl,
        knobs,
        intent,
        labels,
        ..
    } = action
    else {
        return None;
    };
    let ttl = match ttl {
        None => Value::Null,
        Some(DurationSpec::Seconds(seconds)) => Value::from(*seconds),
        Some(DurationSpec::Float(seconds)) => Value::from(*seconds),
        Some(DurationSpec::Text(text)) => Value::from(text.as_str()),
    };
    let data = |value: &Option<Value>| {
        value
            .as_ref()
            .map_or(Value::Null, |data| resolve_refs(data, id_of))
    };
    Some(crate::client::host::OpenRequest {
        targets: targets.clone(),
        manifest_type: manifest_type.clone(),
        ttl,
        knobs: data(knobs),
        intent: intent.clone().map_or(Value::Null, Value::String),
        labels: data(labels),
    })
}

/// `clock + timedelta(seconds=...)` with CPython's three overflow errors.
pub(crate) fn advanced(wall: Timestamp, seconds: f64) -> Result<Timestamp, HubError> {
    let overflow = |message: String| {
        HubError::new(crate::proto::ErrorKind::Other, message).renamed("OverflowError")
    };
    let days = (seconds / 86_400.0).floor();
    if days.abs() > f64::from(i32::MAX) {
        return Err(overflow(
            "Python int too large to convert to C int".to_string(),
        ));
    }
    if days.abs() > 999_999_999.0 {
        return Err(overflow(format!(
            "days={days}; must have magnitude <= 999999999"
        )));
    }
    let moved = wall.plus_micros(seconds_to_micros(seconds));
    if !moved.in_python_range() {
        return Err(overflow("date value out of range".to_string()));
    }
    Ok(moved)
}

/// The reference runner's error for a step that outlived `step_timeout`.
pub(crate) fn step_timeout(seconds: f64) -> HubError {
    let message = format!("step did not finish in {}s", py_float_repr(seconds));
    HubError::new(crate::proto::ErrorKind::Other, message).renamed("StepTimeout")
}

pub(crate) fn error_record(error: &HubError) -> Value {
    let mut map = Map::new();
    map.insert("type".into(), Value::from(error.type_name.as_str()));
    map.insert("message".into(), Value::from(error.message.as_str()));
    Value::Object(map)
}

/// A step with no expectation must succeed; one with an expectation must fail as expected.
pub(crate) fn matches_expectation(
    expected: Option<&ExpectError>,
    error: Option<&HubError>,
) -> bool {
    match (expected, error) {
        (None, error) => error.is_none(),
        (Some(_), None) => false,
        (Some(expected), Some(error)) => expected.matches(&error.type_name, &error.message),
    }
}

pub(crate) fn mismatch(idx: usize, step: &Step, error: Option<&HubError>) -> String {
    let expected = match &step.expect_error {
        None => "success".to_string(),
        Some(e) => {
            let type_name = e
                .type_name
                .as_deref()
                .filter(|t| !t.is_empty())
                .unwrap_or("an error");
            match &e.pattern {
                Some(pattern) => format!("{type_name} matching /{}/", pattern.as_str()),
                None => type_name.to_string(),
            }
        }
    };
    let got = error.map_or("success".to_string(), |e| {
        format!("{}: {}", e.type_name, e.message)
    });
    format!("step {idx} ({}): expected {expected}, got {got}", step.op)
}
