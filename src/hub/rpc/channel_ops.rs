//! Channel and envelope ops: `create_channel` (which may stay pending until every invitee
//! acks), `get_channel`, `list_channels`, `close_channel`, `post_envelope`, `read_wal`,
//! `find_envelope_by_causation`, `can_send`, `pending_turns_for`, `report_turn_failure`.

use super::params::{key_text, slice_index, Params};
use super::Reply;
use crate::hub::rule::DurationSpec;
use crate::hub::wire::{self, hashable, py_dict, py_iter, wrong_type};
use crate::hub::{python_slice, CreateChannel, Created, Hub};
use crate::ids::{AgentId, ChannelId, EndpointId, UNKNOWN_CHANNEL};
use crate::json::{py_eq, py_repr, py_str, py_truthy, py_type_name};
use crate::proto::{Envelope, ErrorKind, HubError};
use crate::time::Now;
use serde_json::{Map, Value};

type OpResult = Result<Reply, HubError>;

fn done(value: Value) -> OpResult {
    Ok(Reply::Done(value))
}

impl Hub {
    /// `create_channel`: ag2's checks on the raw params (participants, adapter) run here so that
    /// ids that are not 32-hex fail as unknown ids do; the typed `create_channel` does the rest.
    /// Conversions ag2 makes later (`dict(knobs)`, `dict(labels)`, a `ttl` that is a list or a
    /// dict) fail here, before the access checks and without consuming an id.
    pub(super) fn op_create_channel(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let creator = self.require_bound(endpoint, p.req("creator_id")?)?;
        let manifest_type = p.req("manifest_type")?;
        let one = Value::from(1);
        let version = p.get_or("manifest_version", &one);
        let participants = p.req("participants")?;
        if !py_truthy(participants) {
            return Err(HubError::protocol(
                "channel requires at least one participant",
            ));
        }
        let participants = self.wire_participants(creator, participants)?;
        let manifest_type = adapter_key(manifest_type, version)?;
        let request = CreateChannel {
            creator,
            manifest_type,
            manifest_version: 1,
            participants,
            required_acks: wire_required_acks(p.get("required_acks"))?,
            ttl: p.get("ttl").map(wire_ttl).transpose()?,
            knobs: truthy_dict(p.get("knobs"))?,
            // ag2 files a truthy intent under `labels["intent"]` as it is, whatever its type.
            intent: None,
            labels: wire_labels(p.get("labels"), p.get("intent"))?,
        };
        match self.create_channel(now, request)? {
            Created::Active(channel) => done(wire::channel_json(self.get_channel(channel)?)),
            Created::Pending(channel) => Ok(Reply::Pending(channel)),
        }
    }

    /// ag2's participant loop: duplicates, then registration, item by item.
    fn wire_participants(
        &self,
        creator: AgentId,
        participants: &Value,
    ) -> Result<Vec<AgentId>, HubError> {
        let items = py_iter(participants)?;
        let mut ids = Vec::with_capacity(items.len());
        for (idx, item) in items.iter().enumerate() {
            hashable(item)?;
            if items[..idx].iter().any(|seen| py_eq(seen, item)) {
                return Err(HubError::protocol(format!(
                    "participant listed twice: {}",
                    py_repr(item)
                )));
            }
            let id = item.as_str().and_then(AgentId::parse);
            match id {
                Some(id) if id == creator || self.is_registered(id) => ids.push(id),
                _ => {
                    return Err(HubError::not_found(format!(
                        "participant not registered: {}",
                        py_str(item)
                    )))
                }
            }
        }
        Ok(ids)
    }

    pub(super) fn op_get_channel(&self, endpoint: EndpointId, p: Params<'_>) -> OpResult {
        let channel = self.require_participant(endpoint, p.req("channel_id")?)?;
        done(wire::channel_json(self.get_channel(channel)?))
    }

    /// `list_channels`: an agent's channels, or those of every agent bound here; `[:limit]`.
    pub(super) fn op_list_channels(&self, endpoint: EndpointId, p: Params<'_>) -> OpResult {
        let fifty = Value::from(50);
        let limit = slice_index(p.get_or("limit", &fifty))?;
        let channels = match p.get("agent_id") {
            Some(agent) => self.list_channels(Some(self.require_bound(endpoint, agent)?)),
            None => {
                let bound = self.bound_to(endpoint);
                self.list_channels(None)
                    .into_iter()
                    .filter(|channel| {
                        let metadata = &self.channels[channel].metadata;
                        bound.iter().any(|agent| metadata.has_participant(*agent))
                    })
                    .collect()
            }
        };
        let range = python_slice(channels.len(), None, limit);
        let listed = channels[range]
            .iter()
            .map(|channel| wire::channel_json(&self.channels[channel].metadata));
        done(Value::Array(listed.collect()))
    }

    pub(super) fn op_close_channel(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let channel = self.require_participant(endpoint, p.req("channel_id")?)?;
        let reason = match p.get("reason") {
            Some(Value::String(reason)) => reason.clone(),
            Some(other) if py_truthy(other) => return Err(wrong_type("reason", "a str", other)),
            _ => String::new(),
        };
        self.close_channel(now, channel, &reason)?;
        done(wire::channel_json(self.get_channel(channel)?))
    }

    /// `post_envelope`: `Envelope.from_dict`, then the hub's post. A channel id that names no
    /// channel is posted as one the hub never mints, so every check ag2 runs before its channel
    /// lookup still runs; the lookup's message then names the id as sent.
    pub(super) fn op_post_envelope(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let Value::Object(data) = p.req("envelope")? else {
            // The authorisation step has already subscripted it as a dict.
            return Err(HubError::type_error("hubsim: envelope must be an object"));
        };
        wire::check_envelope_keys(data)?;
        let sent_channel = &data["channel_id"];
        let channel = self.known_channel(sent_channel)?;
        let envelope = self.wire_envelope(endpoint, data, channel)?;
        match self.post_envelope(now, envelope) {
            Ok(id) => done(Value::String(id.to_string())),
            Err(error) if channel.is_none() && error.kind == ErrorKind::NotFound => {
                let unknown = format!("channel not found: {UNKNOWN_CHANNEL}");
                if error.message == unknown {
                    return Err(HubError::not_found(format!(
                        "channel not found: {}",
                        py_str(sent_channel)
                    )));
                }
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// The typed envelope for a wire one whose keys are already checked.
    fn wire_envelope(
        &self,
        endpoint: EndpointId,
        data: &Map<String, Value>,
        channel: Option<ChannelId>,
    ) -> Result<Envelope, HubError> {
        let sender = self.require_bound(endpoint, &data["sender_id"])?;
        let audience = wire_audience(&data["audience"], channel.is_some())?;
        let event_type = data["event_type"]
            .as_str()
            .ok_or_else(|| wrong_type("event_type", "a str", &data["event_type"]))?;
        let Value::Object(event_data) = &data["event_data"] else {
            return Err(wrong_type("event_data", "an object", &data["event_data"]));
        };
        let channel_id = channel.unwrap_or(UNKNOWN_CHANNEL);
        let mut envelope =
            Envelope::new(channel_id, sender, audience, event_type, event_data.clone());
        let text = |key: &str| match data.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(wrong_type(key, "a str", other)),
        };
        envelope.task_id = text("task_id")?;
        envelope.causation_id = text("causation_id")?;
        envelope.trace_id = text("trace_id")?;
        envelope.idempotency_key = text("idempotency_key")?;
        if let Some(priority) = text("priority")? {
            envelope.priority = priority;
        }
        envelope.depth = wire_depth(data.get("depth"))?;
        envelope.ttl_seconds = match data.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                value
                    .as_i64()
                    .ok_or_else(|| wrong_type("ttl_seconds", "an int", value))?,
            ),
        };
        Ok(envelope)
    }

    /// `read_wal`: `wal[since:until]`; an empty WAL reads as `[]` before the bounds are used.
    pub(super) fn op_read_wal(&self, endpoint: EndpointId, p: Params<'_>) -> OpResult {
        let channel = self.require_participant(endpoint, p.req("channel_id")?)?;
        if self.read_wal(channel).is_empty() {
            return done(Value::Array(Vec::new()));
        }
        let zero = Value::from(0);
        let since = slice_index(p.get_or("since", &zero))?;
        let until = slice_index(p.0.get("until").unwrap_or(&Value::Null))?;
        let Some(entry) = self.channels.get(&channel) else {
            return done(Value::Array(Vec::new()));
        };
        let mut cache = entry.wire.borrow_mut();
        let range = crate::hub::python_slice(entry.wal.len(), since, until);
        if range == (0..entry.wal.len()) {
            // The whole WAL, as the default handler reads it: one shared record per length.
            if cache
                .whole
                .as_ref()
                .is_none_or(|(len, _)| *len != entry.wal.len())
            {
                cache.fill(&entry.wal);
                let records = Value::Array(cache.records.clone());
                cache.whole = Some((entry.wal.len(), std::sync::Arc::new(records)));
            }
            let whole = cache.whole.as_ref().map(|(_, records)| records.clone());
            return Ok(super::Reply::Shared(whole.unwrap_or_default()));
        }
        cache.fill(&entry.wal);
        done(Value::Array(cache.records[range].to_vec()))
    }

    pub(super) fn op_find_envelope_by_causation(
        &self,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let channel = self.require_participant(endpoint, p.req("channel_id")?)?;
        let sender = key_text(p.req("sender_id")?)?.and_then(AgentId::parse);
        let causation = key_text(p.req("causation_id")?)?;
        let found = sender.zip(causation).and_then(|(sender, causation)| {
            self.find_envelope_by_causation(channel, sender, causation)
        });
        done(found.map_or(Value::Null, |envelope| wire::stored_envelope_json(envelope)))
    }

    /// `can_send`: false for an unknown channel, and for an event type that is not a string
    /// (ag2's adapters fail on it and `can_send` swallows the failure).
    pub(super) fn op_can_send(&self, endpoint: EndpointId, p: Params<'_>) -> OpResult {
        let sender = self.require_bound(endpoint, p.req("sender_id")?)?;
        let channel = self.known_channel(p.req("channel_id")?)?;
        let allowed = match (channel, p.get("event_type")) {
            (None, _) => false,
            (Some(channel), Some(Value::String(event_type))) if !event_type.is_empty() => {
                self.can_send(channel, sender, Some(event_type))
            }
            (Some(_), Some(other)) if py_truthy(other) => false,
            (Some(channel), _) => self.can_send(channel, sender, None),
        };
        done(Value::Bool(allowed))
    }

    pub(super) fn op_pending_turns_for(
        &self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let agent = self.require_bound(endpoint, p.req("agent_id")?)?;
        let turns = self.pending_turns_for(agent, now.wall);
        done(Value::Array(
            turns.iter().map(wire::pending_turn_json).collect(),
        ))
    }

    /// `report_turn_failure`: audits `turn_failed` with `RuntimeError(error)`.
    pub(super) fn op_report_turn_failure(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let channel = self.known_channel(p.req("channel_id")?)?;
        let agent = self.require_bound(endpoint, p.req("agent_id")?)?;
        let envelope_id = p.req("envelope_id")?;
        let Some(envelope_id) = envelope_id.as_str() else {
            return Err(wrong_type("envelope_id", "a str", envelope_id));
        };
        let empty = Value::from("");
        let failure = HubError::runtime(py_str(p.get_or("error", &empty)));
        // The authorisation step has checked the channel exists and has this participant.
        if let Some(channel) = channel {
            self.report_turn_failure(now, channel, agent, envelope_id, &failure);
        }
        done(Value::Null)
    }
}

/// `_adapter_for(manifest_type, manifest_version)` on raw params: the registered type name,
/// for a version equal to 1 (`True` and `1.0` are, in Python).
fn adapter_key(manifest_type: &Value, version: &Value) -> Result<String, HubError> {
    hashable(manifest_type)?;
    hashable(version)?;
    let known = manifest_type
        .as_str()
        .filter(|kind| crate::hub::adapter::AdapterKind::lookup(kind, 1).is_some());
    match known {
        Some(kind) if py_eq(version, &Value::from(1)) => Ok(kind.to_string()),
        _ => Err(HubError::not_found(format!(
            "no adapter registered for {}@v{}",
            py_repr(manifest_type),
            py_str(version)
        ))),
    }
}

fn wire_required_acks(value: Option<&Value>) -> Result<Option<i64>, HubError> {
    value
        .map(|value| {
            value
                .as_i64()
                .ok_or_else(|| wrong_type("required_acks", "an int", value))
        })
        .transpose()
}

/// A `ttl` as ag2's `parse_duration` sees it. Empty containers are falsy (0 seconds); a
/// non-empty list or dict fails the way `s[-1]` and `int()` fail on it.
fn wire_ttl(value: &Value) -> Result<DurationSpec, HubError> {
    match value {
        Value::Bool(flag) => Ok(DurationSpec::Seconds(i64::from(*flag))),
        Value::Array(items) if items.is_empty() => Ok(DurationSpec::Seconds(0)),
        Value::Object(map) if map.is_empty() => Ok(DurationSpec::Seconds(0)),
        Value::Array(items) => {
            hashable(items.last().unwrap_or(&Value::Null))?;
            Err(HubError::type_error(
                "int() argument must be a string, a bytes-like object or a real number, not 'list'",
            ))
        }
        Value::Object(_) => Err(HubError::new(ErrorKind::Key, "-1")),
        other => wire::duration_field("ttl", other),
    }
}

/// `dict(value) if value else {}`.
fn truthy_dict(value: Option<&Value>) -> Result<Map<String, Value>, HubError> {
    match value {
        Some(value) if py_truthy(value) => py_dict(value),
        _ => Ok(Map::new()),
    }
}

fn wire_labels(
    labels: Option<&Value>,
    intent: Option<&Value>,
) -> Result<Map<String, Value>, HubError> {
    let mut labels = truthy_dict(labels)?;
    if let Some(intent) = intent.filter(|intent| py_truthy(intent)) {
        labels.insert("intent".to_string(), intent.clone());
    }
    Ok(labels)
}

/// The audience of a wire envelope. For a known channel the authorisation step has checked it
/// lists participants. For an unknown one ag2 only walks it looking for registered recipients
/// before failing the channel lookup, so anything that is not an agent id is dropped.
fn wire_audience(value: &Value, known_channel: bool) -> Result<Option<Vec<AgentId>>, HubError> {
    if value.is_null() {
        return Ok(None);
    }
    if known_channel && !value.is_array() {
        return Err(wrong_type("audience", "a list", value));
    }
    let mut audience = Vec::new();
    for member in py_iter(value)? {
        if let Some(agent) = hashable(&member)?.as_str().and_then(AgentId::parse) {
            audience.push(agent);
        }
    }
    Ok(Some(audience))
}

/// `depth`: an int (a bool counts). Anything else fails ag2's `depth > delegation_depth`.
fn wire_depth(value: Option<&Value>) -> Result<i64, HubError> {
    match value {
        None => Ok(0),
        Some(Value::Bool(flag)) => Ok(i64::from(*flag)),
        Some(value @ Value::Number(number)) => number
            .as_i64()
            .filter(|_| !number.is_f64())
            .ok_or_else(|| wrong_type("depth", "an int", value)),
        Some(other) => Err(HubError::type_error(format!(
            "'>' not supported between instances of '{}' and 'int'",
            py_type_name(other)
        ))),
    }
}
