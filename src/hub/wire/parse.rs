//! The reverse direction: `from_dict` parsers for RPC params (passport, resume, rule, envelope
//! keys, task metadata), with CPython's errors.

use super::{
    check_kwargs, count_field, int_field, py_dict, py_iter, text_field, text_list, time_field,
    wrong_type,
};
use crate::hub::registry::{ObservedStat, Passport, PassportDetails, Resume};
use crate::hub::rule::{DurationSpec, Rule};
use crate::hub::tasks::{TaskMetadata, TaskSpec, TaskState};
use crate::ids::{AgentId, ChannelId};
use crate::json::{py_repr, py_str, py_truthy, py_type_name};
use crate::proto::frame::{ENVELOPE_FIELDS, ENVELOPE_REQUIRED};
use crate::proto::{ErrorKind, HubError};
use serde_json::{Map, Value};

// ── Passport ────────────────────────────────────────────────────────────────────────────────

const PASSPORT_FIELDS: &[&str] = &[
    "name",
    "owner",
    "provider",
    "model",
    "cost",
    "region",
    "auth",
    "kind",
    "hub_id",
    "version",
    "agent_id",
    "created_at",
];
const AUTH_FIELDS: &[&str] = &["scheme", "issuer", "audience", "key_fingerprint", "claim"];
const COST_FIELDS: &[&str] = &["input_per_mtok", "output_per_mtok", "latency_tier"];
const PASSPORT_KINDS: &[&str] = &["agent", "human", "remote_agent"];
const NULL: Value = Value::Null;

/// A passport as `Passport.from_dict` builds it, before registration looks at it. `name` and
/// `auth` stay raw: registration checks them later, in ag2's order.
#[derive(Clone, Debug, PartialEq)]
pub struct WirePassport {
    /// `name` as sent.
    pub name: Value,
    /// `kind`, already validated.
    pub kind: Option<String>,
    /// `auth`: a full `AuthBlock` object, or whatever non-object was sent.
    pub auth: Value,
    /// The fields the hub never reads.
    pub details: PassportDetails,
}

/// A dataclass block with defaults for every field: the object sent, completed in field order.
fn complete(
    class: &str,
    data: &Map<String, Value>,
    fields: &[&str],
    defaults: &[Value],
) -> Result<Value, HubError> {
    check_kwargs(class, data, fields, 0)?;
    Ok(Value::Object(
        fields
            .iter()
            .zip(defaults)
            .map(|(name, default)| {
                let value = data.get(*name).cloned().unwrap_or_else(|| default.clone());
                (name.to_string(), value)
            })
            .collect(),
    ))
}

/// `Passport.from_dict`.
///
/// # Errors
/// `TypeError` for unknown or missing keys (passport, `auth`, `cost`), `ValueError` for a bad
/// `kind`, and what `dict(data)` raises.
pub fn passport_from_dict(data: &Value) -> Result<WirePassport, HubError> {
    let payload = py_dict(data)?;
    let auth_defaults = [
        Value::from("none"),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Object(Map::new()),
    ];
    let auth = match payload.get("auth") {
        None => complete("AuthBlock", &Map::new(), AUTH_FIELDS, &auth_defaults)?,
        Some(Value::Object(auth)) => complete("AuthBlock", auth, AUTH_FIELDS, &auth_defaults)?,
        Some(other) => other.clone(),
    };
    let cost = match payload.get("cost") {
        Some(Value::Object(cost)) => {
            complete("CostProfile", cost, COST_FIELDS, &[NULL, NULL, NULL])?
        }
        other => other.cloned().unwrap_or(Value::Null),
    };
    check_kwargs("Passport", &payload, PASSPORT_FIELDS, 1)?;
    let kind = match payload.get("kind") {
        None | Some(Value::Null) => None,
        Some(Value::String(kind)) if PASSPORT_KINDS.contains(&kind.as_str()) => Some(kind.clone()),
        Some(other) => {
            return Err(HubError::value_error(format!(
                "Passport.kind must be one of ('agent', 'human', 'remote_agent') or None; got {}",
                py_repr(other)
            )))
        }
    };
    let raw = |key: &str, default: Value| payload.get(key).cloned().unwrap_or(default);
    let auth_part = |key: &str| auth.get(key).cloned().unwrap_or(Value::Null);
    let details = PassportDetails {
        owner: raw("owner", Value::from("")),
        provider: raw("provider", Value::Null),
        model: raw("model", Value::Null),
        cost,
        region: raw("region", Value::Null),
        issuer: auth_part("issuer"),
        audience: auth_part("audience"),
        key_fingerprint: auth_part("key_fingerprint"),
        hub_id: raw("hub_id", Value::Null),
        version: raw("version", Value::from(1)),
    };
    Ok(WirePassport {
        name: raw("name", Value::Null),
        kind,
        auth,
        details,
    })
}

impl WirePassport {
    /// `passport.auth.scheme` and `passport.auth.claim`.
    ///
    /// # Errors
    /// `AttributeError` when `auth` was sent as something other than an object.
    pub fn scheme_and_claim(&self) -> Result<(&Value, &Value), HubError> {
        match &self.auth {
            Value::Object(auth) => Ok((&auth["scheme"], &auth["claim"])),
            other => Err(HubError::new(
                ErrorKind::Attribute,
                format!("'{}' object has no attribute 'scheme'", py_type_name(other)),
            )),
        }
    }

    /// The passport to register under `name` with `scheme` (both checked by the caller).
    pub fn into_passport(self, name: String, scheme: String) -> Passport {
        Passport {
            name,
            kind: self.kind,
            auth_scheme: scheme,
            agent_id: None,
            created_at: None,
            details: self.details,
        }
    }
}

// ── Resume ──────────────────────────────────────────────────────────────────────────────────

const RESUME_FIELDS: &[&str] = &[
    "claimed_capabilities",
    "domains",
    "summary",
    "examples",
    "observed",
    "version",
    "last_updated",
];
const EXAMPLE_FIELDS: &[&str] = &["title", "outcome", "task_id", "channel_id", "when", "note"];
const OBSERVED_FIELDS: &[&str] = &["n", "completed", "failed", "expired", "p50_latency_ms"];

/// `Resume.from_dict`.
///
/// # Errors
/// `TypeError` for unknown or missing keys (resume, examples, observed stats), what `dict()`
/// and iteration raise, and `hubsim:` refusals of wrongly typed fields the hub reads.
pub fn resume_from_dict(data: &Value) -> Result<Resume, HubError> {
    let payload = py_dict(data)?;
    let examples = match payload.get("examples") {
        None => Vec::new(),
        Some(examples) => py_iter(examples)?
            .into_iter()
            .map(|example| match example {
                Value::Object(example) => example_json(&example),
                other => Ok(other),
            })
            .collect::<Result<_, _>>()?,
    };
    let observed = match payload.get("observed") {
        None => Vec::new(),
        Some(Value::Object(observed)) => observed
            .iter()
            .map(|(capability, stat)| {
                if let Value::Object(stat) = stat {
                    check_kwargs("ObservedStat", stat, OBSERVED_FIELDS, 0)?;
                }
                Ok((capability.clone(), stat.clone()))
            })
            .collect::<Result<_, HubError>>()?,
        Some(other) => {
            return Err(HubError::new(
                ErrorKind::Attribute,
                format!("'{}' object has no attribute 'items'", py_type_name(other)),
            ))
        }
    };
    check_kwargs("Resume", &payload, RESUME_FIELDS, 0)?;
    let mut resume = Resume {
        examples,
        ..Resume::default()
    };
    if let Some(value) = payload.get("claimed_capabilities") {
        resume.claimed_capabilities = text_list("Resume.claimed_capabilities", value)?;
    }
    if let Some(value) = payload.get("domains") {
        resume.domains = value.clone();
    }
    if let Some(value) = payload.get("summary") {
        resume.summary = text_field("Resume.summary", value)?;
    }
    for (capability, stat) in observed {
        resume.observed.insert(capability, observed_stat(&stat)?);
    }
    if let Some(value) = payload.get("version") {
        resume.version = int_field("Resume.version", value)?;
    }
    resume.last_updated = time_field("Resume.last_updated", payload.get("last_updated"))?;
    Ok(resume)
}

fn example_json(example: &Map<String, Value>) -> Result<Value, HubError> {
    check_kwargs("ResumeExample", example, EXAMPLE_FIELDS, 1)?;
    let defaults = [
        Value::Null,
        Value::from(""),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::from(""),
    ];
    complete("ResumeExample", example, EXAMPLE_FIELDS, &defaults)
}

fn observed_stat(stat: &Value) -> Result<ObservedStat, HubError> {
    let Value::Object(stat) = stat else {
        return Err(wrong_type("Resume.observed values", "objects", stat));
    };
    let count = |key: &str| {
        stat.get(key).map_or(Ok(0), |value| {
            count_field(&format!("ObservedStat.{key}"), value)
        })
    };
    let latency = match stat.get("p50_latency_ms") {
        None | Some(Value::Null) => None,
        Some(value) => Some(count_field("ObservedStat.p50_latency_ms", value)?),
    };
    Ok(ObservedStat {
        n: count("n")?,
        completed: count("completed")?,
        failed: count("failed")?,
        expired: count("expired")?,
        p50_latency_ms: latency,
    })
}

// ── Rule ────────────────────────────────────────────────────────────────────────────────────

const RULE_FIELDS: &[&str] = &["version", "access", "limits"];
const ACCESS_FIELDS: &[&str] = &["inbound_from", "outbound_to", "channel_types"];
const CHANNEL_TYPE_FIELDS: &[&str] = &["initiate", "accept"];
const LIMITS_FIELDS: &[&str] = &[
    "max_concurrent_channels",
    "max_concurrent_tasks",
    "channel_ttl_default",
    "task_ttl_default",
    "rate",
    "delegation_depth",
    "inbox",
];
const RATE_FIELDS: &[&str] = &["per_minute", "burst"];
const INBOX_FIELDS: &[&str] = &["max_pending", "overflow", "high_water"];

/// The object at `key` of `block`, if it is one (ag2 converts only dict sub-blocks).
fn sub_block<'a>(block: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    block.get(key).and_then(Value::as_object)
}

/// `Rule.from_dict`.
///
/// # Errors
/// `TypeError` for unknown keys at any level (checked in ag2's order), what `dict(data)`
/// raises, and `hubsim:` refusals of wrongly typed fields.
pub fn rule_from_dict(data: &Value) -> Result<Rule, HubError> {
    let payload = py_dict(data)?;
    if let Some(access) = sub_block(&payload, "access") {
        if let Some(types) = sub_block(access, "channel_types") {
            check_kwargs("ChannelTypeAccess", types, CHANNEL_TYPE_FIELDS, 0)?;
        }
        check_kwargs("AccessBlock", access, ACCESS_FIELDS, 0)?;
    }
    if let Some(limits) = sub_block(&payload, "limits") {
        if let Some(rate) = sub_block(limits, "rate") {
            check_kwargs("RateBlock", rate, RATE_FIELDS, 0)?;
        }
        if let Some(inbox) = sub_block(limits, "inbox") {
            check_kwargs("InboxBlock", inbox, INBOX_FIELDS, 0)?;
        }
        check_kwargs("LimitsBlock", limits, LIMITS_FIELDS, 0)?;
    }
    check_kwargs("Rule", &payload, RULE_FIELDS, 0)?;
    let mut rule = Rule::default();
    if let Some(version) = payload.get("version") {
        rule.version = int_field("Rule.version", version)?;
    }
    if let Some(access) = payload.get("access") {
        fill_access(&mut rule, block("Rule.access", access)?)?;
    }
    if let Some(limits) = payload.get("limits") {
        fill_limits(&mut rule, block("Rule.limits", limits)?)?;
    }
    Ok(rule)
}

fn block<'a>(field: &str, value: &'a Value) -> Result<&'a Map<String, Value>, HubError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(field, "an object", value))
}

fn fill_access(rule: &mut Rule, access: &Map<String, Value>) -> Result<(), HubError> {
    let target = &mut rule.access;
    if let Some(value) = access.get("inbound_from") {
        target.inbound_from = text_list("AccessBlock.inbound_from", value)?;
    }
    if let Some(value) = access.get("outbound_to") {
        target.outbound_to = text_list("AccessBlock.outbound_to", value)?;
    }
    if let Some(types) = access.get("channel_types") {
        let types = block("AccessBlock.channel_types", types)?;
        if let Some(value) = types.get("initiate") {
            target.initiate = text_list("ChannelTypeAccess.initiate", value)?;
        }
        if let Some(value) = types.get("accept") {
            target.accept = text_list("ChannelTypeAccess.accept", value)?;
        }
    }
    Ok(())
}

fn fill_limits(rule: &mut Rule, limits: &Map<String, Value>) -> Result<(), HubError> {
    let target = &mut rule.limits;
    let int = |key: &str, slot: &mut i64| -> Result<(), HubError> {
        if let Some(value) = limits.get(key) {
            *slot = int_field(&format!("LimitsBlock.{key}"), value)?;
        }
        Ok(())
    };
    int(
        "max_concurrent_channels",
        &mut target.max_concurrent_channels,
    )?;
    int("max_concurrent_tasks", &mut target.max_concurrent_tasks)?;
    if let Some(value) = limits.get("channel_ttl_default") {
        target.channel_ttl_default = duration_field("LimitsBlock.channel_ttl_default", value)?;
    }
    if let Some(value) = limits.get("task_ttl_default") {
        target.task_ttl_default = duration_field("LimitsBlock.task_ttl_default", value)?;
    }
    if let Some(rate) = limits.get("rate") {
        let rate = block("LimitsBlock.rate", rate)?;
        if let Some(value) = rate.get("per_minute") {
            target.rate_per_minute = int_field("RateBlock.per_minute", value)?;
        }
        if let Some(value) = rate.get("burst") {
            target.rate_burst = int_field("RateBlock.burst", value)?;
        }
    }
    int("delegation_depth", &mut target.delegation_depth)?;
    if let Some(inbox) = limits.get("inbox") {
        fill_inbox(rule, block("LimitsBlock.inbox", inbox)?)?;
    }
    Ok(())
}

fn fill_inbox(rule: &mut Rule, inbox: &Map<String, Value>) -> Result<(), HubError> {
    let target = &mut rule.limits.inbox;
    if let Some(value) = inbox.get("max_pending") {
        target.max_pending = int_field("InboxBlock.max_pending", value)?;
    }
    if let Some(value) = inbox.get("overflow") {
        target.overflow = text_field("InboxBlock.overflow", value)?;
    }
    match inbox.get("high_water") {
        None => {}
        Some(Value::Null) => target.high_water = None,
        Some(value) => target.high_water = Some(int_field("InboxBlock.high_water", value)?),
    }
    Ok(())
}

/// A TTL as ag2's `parse_duration` receives it: an int, a string, or a float (which it refuses
/// when used, unless it is zero).
///
/// # Errors
/// A `hubsim:` refusal for anything else.
pub(crate) fn duration_field(field: &str, value: &Value) -> Result<DurationSpec, HubError> {
    match value {
        Value::Number(number) if number.is_f64() => {
            Ok(DurationSpec::Float(number.as_f64().unwrap_or_default()))
        }
        Value::Number(_) => int_field(field, value).map(DurationSpec::Seconds),
        Value::String(text) => Ok(DurationSpec::Text(text.clone())),
        other => Err(wrong_type(field, "an int or a str", other)),
    }
}

// ── Envelope ────────────────────────────────────────────────────────────────────────────────

/// `Envelope.from_dict`'s key check: exactly the envelope's keys, the first five required.
///
/// # Errors
/// `TypeError` with CPython's message.
pub fn check_envelope_keys(data: &Map<String, Value>) -> Result<(), HubError> {
    check_kwargs("Envelope", data, ENVELOPE_FIELDS, ENVELOPE_REQUIRED)
}

// ── Task ────────────────────────────────────────────────────────────────────────────────────

/// `TaskMetadata.from_dict`, which ignores unknown keys and stringifies several fields. The
/// owner and channel must already be checked (the wire authorisation does).
///
/// # Errors
/// `ValueError` for an unknown state string, what `dict()` raises for `spec.payload` and
/// `progress`, and `hubsim:` refusals of wrongly typed fields the hub reads.
pub fn task_from_dict(data: &Map<String, Value>) -> Result<TaskMetadata, HubError> {
    let (spec, capability) = match data.get("spec") {
        Some(Value::Object(spec)) => task_spec(spec)?,
        _ => (TaskSpec::default(), None),
    };
    let state = task_state_field(data.get("state"))?;
    let text = |key: &str| data.get(key).map(py_str).unwrap_or_default();
    let owner = data.get("owner_id").unwrap_or(&Value::Null);
    let owner_id = owner
        .as_str()
        .and_then(AgentId::parse)
        .ok_or_else(|| wrong_type("TaskMetadata.owner_id", "an agent id", owner))?;
    let progress = match data.get("progress") {
        Some(value) if py_truthy(value) => py_dict(value)?,
        _ => Map::new(),
    };
    Ok(TaskMetadata {
        task_id: text("task_id"),
        owner_id,
        spec,
        capability,
        state,
        channel_id: task_channel(data.get("channel_id"))?,
        created_at: text("created_at"),
        started_at: time_field("TaskMetadata.started_at", data.get("started_at"))?,
        completed_at: time_field("TaskMetadata.completed_at", data.get("completed_at"))?,
        expires_at: time_field("TaskMetadata.expires_at", data.get("expires_at"))?,
        last_progress_at: time_field(
            "TaskMetadata.last_progress_at",
            data.get("last_progress_at"),
        )?,
        progress,
        result: data.get("result").filter(|value| !value.is_null()).cloned(),
        error: text("error"),
    })
}

fn task_spec(spec: &Map<String, Value>) -> Result<(TaskSpec, Option<String>), HubError> {
    let text = |key: &str| spec.get(key).map(py_str).unwrap_or_default();
    let payload = match spec.get("payload") {
        Some(value) if py_truthy(value) => py_dict(value)?,
        _ => Map::new(),
    };
    let capability = spec
        .get("capability")
        .and_then(Value::as_str)
        .map(str::to_string);
    let spec = TaskSpec {
        title: text("title"),
        description: text("description"),
        payload,
    };
    Ok((spec, capability))
}

/// `TaskState(value)`, for a value read from the wire.
///
/// # Errors
/// `ValueError("'x' is not a valid TaskState")`.
pub fn task_state(value: &Value) -> Result<TaskState, HubError> {
    value.as_str().and_then(TaskState::parse).ok_or_else(|| {
        HubError::value_error(format!("{} is not a valid TaskState", py_repr(value)))
    })
}

fn task_state_field(value: Option<&Value>) -> Result<TaskState, HubError> {
    match value {
        None => Ok(TaskState::Created),
        Some(value @ Value::String(_)) => task_state(value),
        // ag2 stores a non-string state as it is and fails when it next persists the task.
        Some(other) => Err(HubError::new(
            ErrorKind::Attribute,
            format!("'{}' object has no attribute 'value'", py_type_name(other)),
        )),
    }
}

fn task_channel(value: Option<&Value>) -> Result<Option<ChannelId>, HubError> {
    match value {
        Some(value) if py_truthy(value) => value
            .as_str()
            .and_then(ChannelId::parse)
            .map(Some)
            .ok_or_else(|| wrong_type("TaskMetadata.channel_id", "a channel id", value)),
        _ => Ok(None),
    }
}
