//! What a step asks of the hub or a client, shared by every driver: channel labels, `$id`
//! references, the envelope a `send` posts, the request an `open` makes, the mock clock's
//! `advance`, the reference runner's step timeout.

use super::scenario::{Action, AdvanceBy};
use crate::hub::rule::{parse_duration, DurationSpec};
use crate::ids::{AgentId, ChannelId, UNKNOWN_CHANNEL};
use crate::json::py_float_repr;
use crate::proto::{Envelope, HubError};
use crate::time::{seconds_to_micros, Timestamp};
use serde_json::Value;
use std::collections::BTreeMap;

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

/// An `open` step's label: its `as:`, or `chN` for the Nth label.
pub(crate) fn open_label(label: Option<&String>, labels: &BTreeMap<ChannelId, String>) -> String {
    label
        .cloned()
        .unwrap_or_else(|| format!("ch{}", labels.len() + 1))
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
