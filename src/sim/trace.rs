//! The normalised trace, in the oracle's exact shape: the only module that knows it.
//!
//! Agent ids become names (in sender, audience, participants, pending acks, rejects) or
//! `<agent:NAME>` (anywhere else), channel ids `<channel:LABEL>`, envelope ids
//! `<env:LABEL#SEQ>`, other 32-hex ids `<id:unknown>`, and ISO timestamps `<T+Ns>` relative to
//! the scenario epoch. Printed as `json.dumps(indent=2, sort_keys=True, ensure_ascii=False)`.

use super::runner::Run;
use crate::hub::channel::ChannelMetadata;
use crate::ids::{is_hex32, AgentId};
use crate::json::to_pretty_python;
use crate::proto::Envelope;
use crate::time::{Timestamp, MICROS_PER_SECOND};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Maps raw ids and timestamps to their placeholders.
pub struct Normaliser {
    epoch: Timestamp,
    names: BTreeMap<String, String>,
    placeholders: BTreeMap<String, String>,
}

impl Normaliser {
    /// Builds the maps of a finished run.
    pub fn new(run: &Run) -> Normaliser {
        let mut names = BTreeMap::new();
        let mut placeholders = BTreeMap::new();
        for agent in &run.agents {
            names.insert(agent.id.to_string(), agent.model.name.clone());
            placeholders.insert(
                agent.id.to_string(),
                format!("<agent:{}>", agent.model.name),
            );
        }
        for (channel, label) in &run.labels {
            placeholders
                .entry(channel.to_string())
                .or_insert_with(|| format!("<channel:{label}>"));
            for (seq, envelope) in run.hub.read_wal(*channel).iter().enumerate() {
                placeholders
                    .entry(envelope.id_text())
                    .or_insert_with(|| format!("<env:{label}#{seq}>"));
            }
        }
        Normaliser {
            epoch: run.epoch,
            names,
            placeholders,
        }
    }

    fn id(&self, raw: &str) -> String {
        self.placeholders
            .get(raw)
            .cloned()
            .unwrap_or_else(|| "<id:unknown>".to_string())
    }

    fn name(&self, agent: AgentId) -> Value {
        let raw = agent.to_string();
        Value::String(
            self.names
                .get(&raw)
                .cloned()
                .unwrap_or_else(|| self.id(&raw)),
        )
    }

    fn time(&self, stamp: Timestamp) -> String {
        let delta = stamp.micros - self.epoch.micros;
        let sign = if delta < 0 { "-" } else { "" };
        let (whole, fraction) = (
            delta.unsigned_abs() / MICROS_PER_SECOND as u64,
            delta.unsigned_abs() % MICROS_PER_SECOND as u64,
        );
        if fraction == 0 {
            format!("<T+{sign}{whole}s>")
        } else {
            let digits = format!("{fraction:06}");
            format!("<T+{sign}{whole}.{}s>", digits.trim_end_matches('0'))
        }
    }

    /// The oracle's `value()`: normalises every string (and dict key) inside `value`.
    pub fn value(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(text)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.value(item)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn text(&self, text: &str) -> String {
        if is_hex32(text) {
            return self.id(text);
        }
        if let Some(stamp) = iso_at(text, 0)
            .filter(|(_, end)| *end == text.len())
            .and_then(|(s, _)| parse(s))
        {
            return self.time(stamp);
        }
        let replaced = replace_hex_words(text, |hex| self.id(hex));
        replace_timestamps(&replaced, |stamp| self.time(stamp))
    }
}

fn parse(text: &str) -> Option<Timestamp> {
    Timestamp::parse_iso(text)
}

fn is_word(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Replaces every word (`\b...\b`) that is exactly 32 lowercase hex digits.
fn replace_hex_words(text: &str, mut replace: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start: Option<usize> = None;
    let flush = |out: &mut String, word: &str, replace: &mut dyn FnMut(&str) -> String| {
        if is_hex32(word) {
            out.push_str(&replace(word));
        } else {
            out.push_str(word);
        }
    };
    for (idx, ch) in text.char_indices() {
        if is_word(ch) {
            word_start.get_or_insert(idx);
        } else {
            if let Some(start) = word_start.take() {
                flush(&mut out, &text[start..idx], &mut replace);
            }
            out.push(ch);
        }
    }
    if let Some(start) = word_start {
        flush(&mut out, &text[start..], &mut replace);
    }
    out
}

/// The oracle's timestamp pattern at byte `start`: returns the match and where it ends.
/// `\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})`
fn iso_at(text: &str, start: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if bytes.len() < start + shape.len() {
        return None;
    }
    for (offset, expected) in shape.iter().enumerate() {
        let byte = bytes[start + offset];
        let ok = if *expected == b'd' {
            byte.is_ascii_digit()
        } else {
            byte == *expected
        };
        if !ok {
            return None;
        }
    }
    let mut end = start + shape.len();
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 1;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    match bytes.get(end) {
        Some(b'Z') => end += 1,
        Some(b'+' | b'-') => {
            let offset = bytes.get(end + 1..end + 6)?;
            let ok = offset[0].is_ascii_digit()
                && offset[1].is_ascii_digit()
                && offset[2] == b':'
                && offset[3].is_ascii_digit()
                && offset[4].is_ascii_digit();
            if !ok {
                return None;
            }
            end += 6;
        }
        _ => return None,
    }
    Some((&text[start..end], end))
}

fn replace_timestamps(text: &str, mut replace: impl FnMut(Timestamp) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut idx = 0;
    let mut copied = 0;
    while idx < text.len() {
        if text.as_bytes()[idx].is_ascii_digit() {
            if let Some((matched, end)) = iso_at(text, idx) {
                if let Some(stamp) = parse(matched) {
                    out.push_str(&text[copied..idx]);
                    out.push_str(&replace(stamp));
                    idx = end;
                    copied = end;
                    continue;
                }
            }
        }
        idx += text[idx..].chars().next().map_or(1, char::len_utf8);
    }
    out.push_str(&text[copied..]);
    out
}

/// The normalised trace of a run, as a JSON value.
pub fn trace(scenario_name: &str, run: &Run) -> Value {
    let n = Normaliser::new(run);
    let mut agents = Map::new();
    for agent in &run.agents {
        let mut counts = Map::new();
        counts.insert("model_turns".into(), Value::from(agent.model.used));
        counts.insert(
            "scripted_turns".into(),
            Value::from(agent.model.turns.len()),
        );
        agents.insert(agent.model.name.clone(), Value::Object(counts));
    }
    let mut pending = Map::new();
    for (agent, count) in run.hub.inbox_pending() {
        if let Value::String(name) = n.name(*agent) {
            pending.insert(name, Value::from(*count));
        }
    }
    let mut channels = Map::new();
    for channel in run.hub.channel_ids() {
        let metadata = run.hub.get_channel(channel).expect("listed channels exist");
        channels.insert(
            run.labels[&channel].clone(),
            channel_json(&n, metadata, run.hub.read_wal(channel)),
        );
    }
    let audit: Vec<Value> = run
        .hub
        .audit()
        .records()
        .iter()
        .map(|record| n.value(record))
        .collect();
    let kinds: Vec<Value> = audit
        .iter()
        .map(|record| record.get("kind").cloned().unwrap_or(Value::Null))
        .collect();
    let steps: Vec<Value> = run
        .steps
        .iter()
        .map(|record| n.value(&Value::Object(record.clone())))
        .collect();
    let mut root = Map::new();
    root.insert("scenario".into(), Value::from(scenario_name));
    root.insert("agents".into(), Value::Object(agents));
    root.insert("inbox_pending".into(), Value::Object(pending));
    root.insert("steps".into(), Value::Array(steps));
    root.insert("channels".into(), Value::Object(channels));
    root.insert("audit_kinds".into(), Value::Array(kinds));
    root.insert("audit".into(), Value::Array(audit));
    Value::Object(root)
}

/// The trace printed exactly as the oracle prints it.
pub fn render(scenario_name: &str, run: &Run) -> String {
    to_pretty_python(&trace(scenario_name, run))
}

fn channel_json(n: &Normaliser, metadata: &ChannelMetadata, wal: &[Arc<Envelope>]) -> Value {
    let stamp = |at: Option<Timestamp>| at.map_or(Value::Null, |at| Value::String(n.time(at)));
    let names = |ids: &[AgentId]| Value::Array(ids.iter().map(|id| n.name(*id)).collect());
    let participants = metadata
        .participants
        .iter()
        .map(|p| {
            let mut map = Map::new();
            map.insert("name".into(), n.name(p.agent_id));
            map.insert("role".into(), Value::from(p.role.as_str()));
            map.insert("order".into(), Value::from(p.order));
            map.insert("joined_at".into(), stamp(Some(p.joined_at)));
            Value::Object(map)
        })
        .collect();
    let mut map = Map::new();
    map.insert("type".into(), Value::from(metadata.manifest.manifest_type));
    map.insert(
        "manifest_version".into(),
        Value::from(metadata.manifest.version),
    );
    map.insert(
        "expectations".into(),
        Value::Array(
            metadata
                .manifest
                .expectations
                .iter()
                .map(|e| e.to_json())
                .collect(),
        ),
    );
    map.insert("creator".into(), n.name(metadata.creator_id));
    map.insert("participants".into(), Value::Array(participants));
    map.insert("state".into(), Value::from(metadata.state.as_str()));
    map.insert(
        "close_reason".into(),
        Value::from(metadata.close_reason.as_str()),
    );
    map.insert("created_at".into(), stamp(Some(metadata.created_at)));
    map.insert("expires_at".into(), stamp(metadata.expires_at));
    map.insert("closed_at".into(), stamp(metadata.closed_at));
    map.insert(
        "knobs".into(),
        n.value(&Value::Object(metadata.knobs.clone())),
    );
    map.insert(
        "labels".into(),
        n.value(&Value::Object(metadata.labels.clone())),
    );
    map.insert(
        "required_acks".into(),
        metadata.required_acks.map_or(Value::Null, Value::from),
    );
    map.insert("pending_acks".into(), names(&metadata.pending_acks));
    map.insert("rejected_by".into(), names(&metadata.rejected_by));
    map.insert(
        "wal".into(),
        Value::Array(
            wal.iter()
                .enumerate()
                .map(|(seq, e)| envelope_json(n, seq, e))
                .collect(),
        ),
    );
    Value::Object(map)
}

fn envelope_json(n: &Normaliser, seq: usize, envelope: &Envelope) -> Value {
    let text = |value: &Option<String>| {
        value
            .as_ref()
            .map_or(Value::Null, |t| Value::String(t.clone()))
    };
    let mut map = Map::new();
    map.insert("seq".into(), Value::from(seq));
    map.insert(
        "event_type".into(),
        Value::from(envelope.event_type.as_str()),
    );
    map.insert("sender".into(), n.name(envelope.sender_id));
    map.insert(
        "audience".into(),
        envelope.audience.as_ref().map_or(Value::Null, |a| {
            Value::Array(a.iter().map(|id| n.name(*id)).collect())
        }),
    );
    map.insert(
        "event_data".into(),
        n.value(&Value::Object(envelope.event_data.clone())),
    );
    map.insert(
        "causation_id".into(),
        n.value(&text(&envelope.causation_id)),
    );
    map.insert(
        "created_at".into(),
        envelope
            .created_at
            .map_or(Value::String(String::new()), |at| Value::String(n.time(at))),
    );
    map.insert("task_id".into(), text(&envelope.task_id));
    map.insert("trace_id".into(), text(&envelope.trace_id));
    map.insert("priority".into(), Value::from(envelope.priority.as_str()));
    map.insert("depth".into(), Value::from(envelope.depth));
    map.insert("idempotency_key".into(), text(&envelope.idempotency_key));
    map.insert(
        "ttl_seconds".into(),
        envelope.ttl_seconds.map_or(Value::Null, Value::from),
    );
    Value::Object(map)
}
