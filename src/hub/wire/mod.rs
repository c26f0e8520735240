//! Hub records as JSON, exactly as ag2's `to_dict()` builds them, and the parsers the wire
//! control plane feeds params through (`Passport.from_dict`, `Resume.from_dict`,
//! `Rule.from_dict`, `Envelope.from_dict`, `TaskMetadata.from_dict`).
//!
//! Key order is dataclass field order: ag2 sends frames with `json.dumps` and no `sort_keys`, so
//! the order is part of the bytes. Parsing follows Python's `cls(**data)`: an unknown key or a
//! missing required one is a `TypeError` with CPython's message, checked block by block in ag2's
//! order. ag2 never checks field *types*. hubsim keeps the fields the hub never reads as raw
//! JSON, so they echo back unchanged, and refuses a wrong type in a field it does read with a
//! `TypeError` (or `ValueError`) whose message starts with `hubsim:`, where ag2 would store the
//! value as it is.

use super::channel::{ChannelMetadata, Manifest};
use super::registry::{ObservedStat, Passport, Resume};
use super::rule::{DurationSpec, Rule};
use super::tasks::TaskMetadata;
use super::PendingTurn;
use crate::json::{
    py_repr, py_str, py_str_repr, py_type_name, write_compact_python_unsorted, write_py_json_string,
};
use crate::proto::envelope::Envelope;
use crate::proto::frame::DeferredResult;
use crate::proto::HubError;
use crate::time::Timestamp;
use serde_json::{Map, Value};

/// A JSON object from `(key, value)` pairs, in order.
fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect(),
    )
}

fn strings<S: ToString>(items: &[S]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|item| Value::String(item.to_string()))
            .collect(),
    )
}

fn opt_time(at: Option<Timestamp>) -> Value {
    at.map_or(Value::Null, |at| Value::String(at.to_string()))
}

/// A stamp ag2 keeps as a string that is `""` until set.
fn time_or_empty(at: Option<Timestamp>) -> Value {
    Value::String(at.map(|at| at.to_string()).unwrap_or_default())
}

// ── Records to JSON ─────────────────────────────────────────────────────────────────────────

/// ag2's `_public_passport`: `asdict(passport)` with `auth.claim` always `{}`.
pub fn passport_json(passport: &Passport) -> Value {
    let details = &passport.details;
    let auth = object([
        ("scheme", Value::from(passport.auth_scheme.as_str())),
        ("issuer", details.issuer.clone()),
        ("audience", details.audience.clone()),
        ("key_fingerprint", details.key_fingerprint.clone()),
        ("claim", Value::Object(Map::new())),
    ]);
    object([
        ("name", Value::from(passport.name.as_str())),
        ("owner", details.owner.clone()),
        ("provider", details.provider.clone()),
        ("model", details.model.clone()),
        ("cost", details.cost.clone()),
        ("region", details.region.clone()),
        ("auth", auth),
        (
            "kind",
            passport.kind.as_deref().map_or(Value::Null, Value::from),
        ),
        ("hub_id", details.hub_id.clone()),
        ("version", details.version.clone()),
        (
            "agent_id",
            passport
                .agent_id
                .map_or(Value::Null, |id| Value::String(id.to_string())),
        ),
        ("created_at", time_or_empty(passport.created_at)),
    ])
}

/// Passports answered as a list (`list_agents`), written out only when the response is
/// encoded: the same text as `passport_json` of each, in a JSON array.
#[derive(Debug)]
pub struct Passports(pub Vec<std::sync::Arc<Passport>>);

impl DeferredResult for Passports {
    fn value(&self) -> Value {
        Value::Array(self.0.iter().map(|p| passport_json(p)).collect())
    }

    fn write(&self, out: &mut String) {
        out.push('[');
        for (idx, passport) in self.0.iter().enumerate() {
            if idx > 0 {
                out.push_str(", ");
            }
            write_passport(out, passport);
        }
        out.push(']');
    }

    fn size_hint(&self) -> usize {
        // A plain passport prints in about 340 bytes.
        self.0.len() * 360
    }
}

/// Appends `json.dumps(passport_json(passport))` without building the value.
fn write_passport(out: &mut String, passport: &Passport) {
    let details = &passport.details;
    let value = |out: &mut String, key: &str, value: &Value| {
        out.push_str(key);
        write_compact_python_unsorted(out, value);
    };
    out.push_str("{\"name\": ");
    write_py_json_string(out, &passport.name);
    value(out, ", \"owner\": ", &details.owner);
    value(out, ", \"provider\": ", &details.provider);
    value(out, ", \"model\": ", &details.model);
    value(out, ", \"cost\": ", &details.cost);
    value(out, ", \"region\": ", &details.region);
    out.push_str(", \"auth\": {\"scheme\": ");
    write_py_json_string(out, &passport.auth_scheme);
    value(out, ", \"issuer\": ", &details.issuer);
    value(out, ", \"audience\": ", &details.audience);
    value(out, ", \"key_fingerprint\": ", &details.key_fingerprint);
    out.push_str(", \"claim\": {}}, \"kind\": ");
    match &passport.kind {
        Some(kind) => write_py_json_string(out, kind),
        None => out.push_str("null"),
    }
    value(out, ", \"hub_id\": ", &details.hub_id);
    value(out, ", \"version\": ", &details.version);
    out.push_str(", \"agent_id\": ");
    match passport.agent_id {
        Some(id) => {
            // 32 hex digits: nothing to escape.
            out.push('"');
            let _ = std::fmt::Write::write_fmt(out, format_args!("{id}"));
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(", \"created_at\": ");
    match passport.created_at {
        Some(at) => write_py_json_string(out, &at.to_string()),
        None => out.push_str("\"\""),
    }
    out.push('}');
}

fn observed_json(stat: &ObservedStat) -> Value {
    object([
        ("n", Value::from(stat.n)),
        ("completed", Value::from(stat.completed)),
        ("failed", Value::from(stat.failed)),
        ("expired", Value::from(stat.expired)),
        (
            "p50_latency_ms",
            stat.p50_latency_ms.map_or(Value::Null, Value::from),
        ),
    ])
}

/// `Resume.to_dict()`.
pub fn resume_json(resume: &Resume) -> Value {
    let observed = resume
        .observed
        .iter()
        .map(|(capability, stat)| (capability.clone(), observed_json(stat)))
        .collect();
    object([
        (
            "claimed_capabilities",
            strings(&resume.claimed_capabilities),
        ),
        ("domains", resume.domains.clone()),
        ("summary", Value::from(resume.summary.as_str())),
        ("examples", Value::Array(resume.examples.clone())),
        ("observed", Value::Object(observed)),
        ("version", Value::from(resume.version)),
        ("last_updated", time_or_empty(resume.last_updated)),
    ])
}

fn duration_json(spec: &DurationSpec) -> Value {
    match spec {
        DurationSpec::Seconds(seconds) => Value::from(*seconds),
        DurationSpec::Text(text) => Value::from(text.as_str()),
        DurationSpec::Float(value) => Value::from(*value),
    }
}

/// `Rule.to_dict()`.
pub fn rule_json(rule: &Rule) -> Value {
    let access = &rule.access;
    let limits = &rule.limits;
    let access_json = object([
        ("inbound_from", strings(&access.inbound_from)),
        ("outbound_to", strings(&access.outbound_to)),
        (
            "channel_types",
            object([
                ("initiate", strings(&access.initiate)),
                ("accept", strings(&access.accept)),
            ]),
        ),
    ]);
    let inbox = object([
        ("max_pending", Value::from(limits.inbox.max_pending)),
        ("overflow", Value::from(limits.inbox.overflow.as_str())),
        (
            "high_water",
            limits.inbox.high_water.map_or(Value::Null, Value::from),
        ),
    ]);
    let limits_json = object([
        (
            "max_concurrent_channels",
            Value::from(limits.max_concurrent_channels),
        ),
        (
            "max_concurrent_tasks",
            Value::from(limits.max_concurrent_tasks),
        ),
        (
            "channel_ttl_default",
            duration_json(&limits.channel_ttl_default),
        ),
        ("task_ttl_default", duration_json(&limits.task_ttl_default)),
        (
            "rate",
            object([
                ("per_minute", Value::from(limits.rate_per_minute)),
                ("burst", Value::from(limits.rate_burst)),
            ]),
        ),
        ("delegation_depth", Value::from(limits.delegation_depth)),
        ("inbox", inbox),
    ]);
    object([
        ("version", Value::from(rule.version)),
        ("access", access_json),
        ("limits", limits_json),
    ])
}

/// `ChannelManifest.to_dict()`.
pub fn manifest_json(manifest: &Manifest) -> Value {
    let knobs_schema = manifest
        .knobs_schema
        .iter()
        .map(|(name, hint)| (name.to_string(), Value::from(*hint)))
        .collect();
    object([
        ("type", Value::from(manifest.manifest_type)),
        ("version", Value::from(manifest.version)),
        (
            "participants",
            object([
                ("min", Value::from(manifest.participants_min)),
                (
                    "max",
                    manifest.participants_max.map_or(Value::Null, Value::from),
                ),
                ("roles", strings(manifest.roles)),
            ]),
        ),
        ("knobs_schema", Value::Object(knobs_schema)),
        (
            "default_view_policy",
            Value::from(manifest.default_view_policy),
        ),
        (
            "expectations",
            Value::Array(manifest.expectations.iter().map(|e| e.to_json()).collect()),
        ),
    ])
}

/// `ChannelMetadata.to_dict()`.
pub fn channel_json(metadata: &ChannelMetadata) -> Value {
    let participants = metadata
        .participants
        .iter()
        .map(|participant| {
            object([
                ("agent_id", Value::String(participant.agent_id.to_string())),
                ("role", Value::from(participant.role.as_str())),
                ("order", Value::from(participant.order)),
                (
                    "joined_at",
                    Value::String(participant.joined_at.to_string()),
                ),
            ])
        })
        .collect();
    object([
        ("channel_id", Value::String(metadata.channel_id.to_string())),
        ("manifest", manifest_json(metadata.manifest)),
        ("creator_id", Value::String(metadata.creator_id.to_string())),
        ("participants", Value::Array(participants)),
        ("state", Value::from(metadata.state.as_str())),
        ("created_at", Value::String(metadata.created_at.to_string())),
        ("expires_at", opt_time(metadata.expires_at)),
        ("closed_at", opt_time(metadata.closed_at)),
        ("close_reason", Value::from(metadata.close_reason.as_str())),
        ("parent_channel_id", Value::Null),
        ("knobs", Value::Object(metadata.knobs.clone())),
        ("labels", Value::Object(metadata.labels.clone())),
        (
            "required_acks",
            metadata.required_acks.map_or(Value::Null, Value::from),
        ),
        ("pending_acks", strings(&metadata.pending_acks)),
        ("rejected_by", strings(&metadata.rejected_by)),
    ])
}

/// `TaskMetadata.to_dict()`.
pub fn task_json(task: &TaskMetadata) -> Value {
    let spec = object([
        ("title", Value::from(task.spec.title.as_str())),
        ("description", Value::from(task.spec.description.as_str())),
        ("payload", Value::Object(task.spec.payload.clone())),
        (
            "capability",
            task.capability.as_deref().map_or(Value::Null, Value::from),
        ),
    ]);
    object([
        ("task_id", Value::from(task.task_id.as_str())),
        ("owner_id", Value::String(task.owner_id.to_string())),
        ("spec", spec),
        ("state", Value::from(task.state.as_str())),
        ("created_at", Value::from(task.created_at.as_str())),
        ("started_at", opt_time(task.started_at)),
        ("completed_at", opt_time(task.completed_at)),
        ("expires_at", opt_time(task.expires_at)),
        ("last_progress_at", opt_time(task.last_progress_at)),
        ("progress", Value::Object(task.progress.clone())),
        ("result", task.result.clone().unwrap_or(Value::Null)),
        ("error", Value::from(task.error.as_str())),
        (
            "channel_id",
            task.channel_id
                .map_or(Value::Null, |id| Value::String(id.to_string())),
        ),
    ])
}

/// `dataclasses.asdict(PendingTurn)`.
pub fn pending_turn_json(turn: &PendingTurn) -> Value {
    object([
        ("channel_id", Value::String(turn.channel.to_string())),
        (
            "triggering_envelope_id",
            turn.trigger
                .map_or(Value::Null, |id| Value::String(id.to_string())),
        ),
        ("expected_at", Value::String(turn.expected_at.to_string())),
    ])
}

/// An envelope as ag2's `read_wal` returns it: re-read from a WAL line written with
/// `sort_keys=True`, so every object inside `event_data` comes back with sorted keys while the
/// envelope's own keys keep dataclass order.
pub fn stored_envelope_json(envelope: &Envelope) -> Value {
    let mut json = envelope.to_json();
    if let Some(data) = json.get_mut("event_data") {
        *data = sorted_keys(data);
    }
    json
}

fn sorted_keys(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Python sorts `str` keys by code point, which is Rust's byte order for UTF-8.
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, item)| (key.clone(), sorted_keys(item)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

// ── Python's view of JSON values ────────────────────────────────────────────────────────────

/// `cls(**data)`'s argument binding: the first unknown key, then every missing required one
/// (the first `required` of `fields`).
///
/// # Errors
/// `TypeError` with CPython's message.
pub(crate) fn check_kwargs(
    class: &str,
    data: &Map<String, Value>,
    fields: &[&str],
    required: usize,
) -> Result<(), HubError> {
    if let Some(extra) = data.keys().find(|key| !fields.contains(&key.as_str())) {
        return Err(HubError::type_error(format!(
            "{class}.__init__() got an unexpected keyword argument {}",
            py_str_repr(extra)
        )));
    }
    let missing: Vec<&str> = fields[..required]
        .iter()
        .copied()
        .filter(|name| !data.contains_key(*name))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(HubError::type_error(crate::json::py_missing_args(
            &format!("{class}.__init__()"),
            &missing,
        )))
    }
}

/// Python's `iter(value)` for a JSON-built object: list items, string characters, dict keys.
///
/// # Errors
/// `TypeError("'int' object is not iterable")` and the like.
pub(crate) fn py_iter(value: &Value) -> Result<Vec<Value>, HubError> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        Value::String(text) => Ok(text
            .chars()
            .map(|ch| Value::String(ch.to_string()))
            .collect()),
        Value::Object(map) => Ok(map.keys().map(|key| Value::String(key.clone())).collect()),
        other => Err(HubError::type_error(format!(
            "'{}' object is not iterable",
            py_type_name(other)
        ))),
    }
}

/// Refuses what Python cannot hash (a set member or a dict key): lists and dicts.
///
/// # Errors
/// `TypeError("unhashable type: 'list'")`.
pub(crate) fn hashable(value: &Value) -> Result<&Value, HubError> {
    match value {
        Value::Array(_) | Value::Object(_) => Err(HubError::type_error(format!(
            "unhashable type: '{}'",
            py_type_name(value)
        ))),
        other => Ok(other),
    }
}

/// Python's `dict(value)`: a dict is copied; otherwise an iterable of two-item sequences.
///
/// # Errors
/// CPython's `TypeError`/`ValueError` for what `dict()` refuses.
pub(crate) fn py_dict(value: &Value) -> Result<Map<String, Value>, HubError> {
    if let Value::Object(map) = value {
        return Ok(map.clone());
    }
    let mut map = Map::new();
    for (idx, item) in py_iter(value)?.iter().enumerate() {
        let pair = match item {
            Value::Array(_) | Value::String(_) | Value::Object(_) => py_iter(item)?,
            _ => {
                return Err(HubError::type_error(format!(
                    "cannot convert dictionary update sequence element #{idx} to a sequence"
                )))
            }
        };
        let [key, value] = <[Value; 2]>::try_from(pair).map_err(|pair| {
            HubError::value_error(format!(
                "dictionary update sequence element #{idx} has length {}; 2 is required",
                pair.len()
            ))
        })?;
        // A key that is not a string cannot name a keyword argument nor a JSON key; keep its
        // `str()` (hubsim's choice; ag2 would keep the object).
        map.insert(py_str(hashable(&key)?), value);
    }
    Ok(map)
}

/// A refusal of a value whose type ag2 would have stored without looking.
pub(crate) fn wrong_type(field: &str, expected: &str, value: &Value) -> HubError {
    HubError::type_error(format!(
        "hubsim: {field} must be {expected}, got {}",
        py_repr(value)
    ))
}

fn int_field(field: &str, value: &Value) -> Result<i64, HubError> {
    match value {
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
    .ok_or_else(|| wrong_type(field, "an int", value))
}

fn count_field(field: &str, value: &Value) -> Result<u64, HubError> {
    value
        .as_u64()
        .filter(|_| !value.is_f64())
        .ok_or_else(|| wrong_type(field, "a non-negative int", value))
}

fn text_field(field: &str, value: &Value) -> Result<String, HubError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| wrong_type(field, "a str", value))
}

fn text_list(field: &str, value: &Value) -> Result<Vec<String>, HubError> {
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type(field, "a list of str", value))?;
    items.iter().map(|item| text_field(field, item)).collect()
}

/// A timestamp field: `null` (or `""`, ag2's unset stamp) is `None`; text must be ISO 8601.
fn time_field(field: &str, value: Option<&Value>) -> Result<Option<Timestamp>, HubError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Timestamp::parse_iso(text).map(Some).ok_or_else(|| {
            HubError::value_error(format!(
                "hubsim: {field} must be an ISO 8601 timestamp, got {}",
                py_str_repr(text)
            ))
        }),
        Some(other) => Err(wrong_type(field, "a timestamp string", other)),
    }
}

mod parse;

pub(crate) use parse::duration_field;
pub use parse::{
    check_envelope_keys, passport_from_dict, resume_from_dict, rule_from_dict, task_from_dict,
    task_state, WirePassport,
};

#[cfg(test)]
mod tests;
