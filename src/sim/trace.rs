//! The normalised trace, in the oracle's exact shape: the only module that knows it.
//!
//! Agent ids become names (in sender, audience, participants, pending acks, rejects) or
//! `<agent:NAME>` (anywhere else), channel ids `<channel:LABEL>`, envelope ids
//! `<env:LABEL#SEQ>`, other 32-hex ids `<id:unknown>`, and ISO timestamps `<T+Ns>` relative to
//! the scenario epoch. The output is `json.dumps(indent=2, sort_keys=True, ensure_ascii=False)`.
//!
//! The trace is written straight to text: fixed objects emit their keys in sorted order (each
//! call site lists them alphabetically; a debug assertion checks it), and payloads are normalised
//! while they are written. Building a value tree first was most of a run's cost.

use super::record::Run;
use super::record::{Completion, StepRecord};
use crate::hub::channel::ChannelMetadata;
use crate::ids::{is_hex32, AgentId, EnvelopeId, UNKNOWN_CHANNEL};
use crate::json::{py_float_repr, write_json_string};
use crate::proto::Envelope;
use crate::time::{Timestamp, MICROS_PER_SECOND};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Maps raw ids and timestamps to their placeholders.
pub struct Normaliser {
    epoch: Timestamp,
    names: BTreeMap<AgentId, String>,
    /// Every minted id of the run (agents, channels, envelopes share one counter).
    placeholders: BTreeMap<u128, String>,
    /// Names for messages of ids the trace cannot name ([`Normaliser::for_messages`]).
    unnamed: BTreeMap<u128, String>,
}

impl Normaliser {
    /// Builds the maps of a finished run.
    pub fn new(run: &Run) -> Normaliser {
        let mut names = BTreeMap::new();
        let mut placeholders = BTreeMap::new();
        for agent in &run.agents {
            names.insert(agent.id, agent.model.name.clone());
            placeholders.insert(agent.id.0, format!("<agent:{}>", agent.model.name));
        }
        for (channel, label) in &run.labels {
            placeholders
                .entry(channel.0)
                .or_insert_with(|| format!("<channel:{label}>"));
            for (seq, envelope) in run.hub.read_wal(*channel).iter().enumerate() {
                if let Some(id) = envelope.envelope_id {
                    placeholders
                        .entry(id.0)
                        .or_insert_with(|| format!("<env:{label}#{seq}>"));
                }
            }
        }
        Normaliser {
            epoch: run.epoch,
            names,
            placeholders,
            unnamed: BTreeMap::new(),
        }
    }

    /// The maps of a finished run for messages (violations, expectation mismatches, notes),
    /// which [`Normaliser::message`] rewrites. Besides the trace's names, an envelope the trace
    /// cannot name (not in its channel's final WAL: lost in a hub crash, say) but that `seen`
    /// holds (what the clients received) or a `send` step returned is named
    /// `<env:LABEL#?K>`: the K-th such envelope of channels labelled LABEL, in id order
    /// (`<env:?K>` when its channel has no label). A channel only such an envelope names is
    /// `<channel:?K>`.
    pub fn for_messages<'e>(run: &Run, seen: impl IntoIterator<Item = &'e Envelope>) -> Normaliser {
        let mut names = Normaliser::new(run);
        // Unnamed envelope ids with their channel's label, if it has one.
        let mut lost: BTreeMap<u128, Option<String>> = BTreeMap::new();
        let mut channels = BTreeSet::new();
        for envelope in seen {
            let Some(id) = envelope.envelope_id else {
                continue;
            };
            if names.placeholders.contains_key(&id.0) {
                continue;
            }
            let label = run.labels.get(&envelope.channel_id).cloned();
            if label.is_none() && !names.placeholders.contains_key(&envelope.channel_id.0) {
                channels.insert(envelope.channel_id.0);
            }
            lost.entry(id.0).or_insert(label);
        }
        let labels: BTreeSet<&str> = run.labels.values().map(String::as_str).collect();
        for record in run.steps.iter().filter(|record| record.op == "send") {
            let Some(id) = record
                .result
                .as_ref()
                .and_then(Value::as_str)
                .and_then(EnvelopeId::parse)
            else {
                continue;
            };
            if names.placeholders.contains_key(&id.0) {
                continue;
            }
            let label = record
                .echo
                .get("channel")
                .and_then(Value::as_str)
                .filter(|label| labels.contains(label))
                .map(str::to_string);
            lost.entry(id.0).or_insert(label);
        }
        let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for (id, label) in lost {
            let count = counts.entry(label.clone()).or_insert(0);
            *count += 1;
            let name = match label {
                Some(label) => format!("<env:{label}#?{count}>"),
                None => format!("<env:?{count}>"),
            };
            names.unnamed.insert(id, name);
        }
        for (idx, channel) in channels.into_iter().enumerate() {
            names
                .unnamed
                .entry(channel)
                .or_insert_with(|| format!("<channel:?{}>", idx + 1));
        }
        names
    }

    fn id(&self, raw: &str) -> String {
        u128::from_str_radix(raw, 16)
            .ok()
            .and_then(|id| self.placeholders.get(&id).cloned())
            .unwrap_or_else(|| "<id:unknown>".to_string())
    }

    /// A message's name for a raw id: the trace's, one [`Normaliser::for_messages`] gave it,
    /// `<channel:unknown_channel>` for the id no hub mints, else `<id:?N>`, N its place in
    /// mint order (every id comes from one counter), so two ids the run cannot name still read
    /// apart.
    fn message_id(&self, raw: &str) -> String {
        let Ok(id) = u128::from_str_radix(raw, 16) else {
            return "<id:unknown>".to_string();
        };
        if let Some(name) = self.placeholders.get(&id).or_else(|| self.unnamed.get(&id)) {
            return name.clone();
        }
        if id == UNKNOWN_CHANNEL.0 {
            return "<channel:unknown_channel>".to_string();
        }
        format!("<id:?{id}>")
    }

    fn name(&self, agent: AgentId) -> String {
        self.names
            .get(&agent)
            .cloned()
            .unwrap_or_else(|| self.id(&agent.to_string()))
    }

    fn time(&self, stamp: Timestamp) -> String {
        let delta = stamp.micros - self.epoch.micros;
        let sign = if delta < 0 { "-" } else { "" };
        let magnitude = delta.unsigned_abs();
        let (whole, fraction) = (
            magnitude / MICROS_PER_SECOND as u64,
            magnitude % MICROS_PER_SECOND as u64,
        );
        if fraction == 0 {
            format!("<T+{sign}{whole}s>")
        } else {
            let digits = format!("{fraction:06}");
            format!("<T+{sign}{whole}.{}s>", digits.trim_end_matches('0'))
        }
    }

    /// The oracle's normalisation of one string. Text shorter than a timestamp holds neither an
    /// id nor a timestamp and is returned as is.
    pub fn text<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if text.len() < 20 {
            return text.into();
        }
        if is_hex32(text) {
            return self.id(text).into();
        }
        if let Some(stamp) = iso_at(text, 0)
            .filter(|(_, end)| *end == text.len())
            .and_then(|(s, _)| parse(s))
        {
            return self.time(stamp).into();
        }
        let replaced = replace_hex_words(text, |hex| self.id(hex));
        replace_timestamps(&replaced, |stamp| self.time(stamp)).into()
    }

    /// A message as people read it: every 32-hex word named as the trace names it (or, for an
    /// id the trace cannot name, as [`Normaliser::for_messages`] and `Normaliser::message_id`
    /// say) and every ISO timestamp as `<T+Ns>`. The trace's own text goes through
    /// [`Normaliser::text`], which this leaves alone.
    pub fn message(&self, text: &str) -> String {
        let replaced = replace_hex_words(text, |hex| self.message_id(hex));
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
    let mut flush = |out: &mut String, word: &str| {
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
                flush(&mut out, &text[start..idx]);
            }
            out.push(ch);
        }
    }
    if let Some(start) = word_start {
        flush(&mut out, &text[start..]);
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

/// A streaming writer of Python's `json.dumps(indent=2)` layout.
struct Writer<'n> {
    out: String,
    normaliser: &'n Normaliser,
    /// Per open container: whether it has an element yet, and (debug) the last key written.
    stack: Vec<(bool, String)>,
}

impl Writer<'_> {
    fn indent(&mut self) {
        self.out.push('\n');
        for _ in 0..self.stack.len() * 2 {
            self.out.push(' ');
        }
    }

    /// Separator and indentation before the next element of the open container.
    fn element(&mut self) {
        let top = self.stack.last_mut().expect("inside a container");
        if top.0 {
            self.out.push(',');
        }
        top.0 = true;
        self.indent();
    }

    fn open(&mut self, bracket: char) {
        self.out.push(bracket);
        self.stack.push((false, String::new()));
    }

    fn close(&mut self, bracket: char) {
        let (had_elements, _) = self.stack.pop().expect("closing an open container");
        if had_elements {
            self.indent();
        }
        self.out.push(bracket);
    }

    /// Writes `"key": `; keys of one object must come in sorted order.
    fn key(&mut self, key: &str) {
        self.element();
        let top = self.stack.last_mut().expect("inside an object");
        debug_assert!(
            top.1.is_empty() || top.1.as_str() < key,
            "trace keys out of order: {} then {key}",
            top.1
        );
        if cfg!(debug_assertions) {
            top.1 = key.to_string();
        }
        write_json_string(&mut self.out, key);
        self.out.push_str(": ");
    }

    fn item(&mut self) {
        self.element();
    }

    fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    fn string(&mut self, text: &str) {
        write_json_string(&mut self.out, text);
    }

    fn normalised(&mut self, text: &str) {
        let text = self.normaliser.text(text);
        write_json_string(&mut self.out, &text);
    }

    fn int(&mut self, value: impl std::fmt::Display) {
        let _ = write!(self.out, "{value}");
    }

    fn null_or(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.string(text),
            None => self.raw("null"),
        }
    }

    /// A payload value, normalised as the oracle's `value()` does (dict keys included), with keys
    /// sorted after normalisation.
    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.raw("null"),
            Value::Bool(flag) => self.raw(if *flag { "true" } else { "false" }),
            Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
                (Some(int), _, _) => self.int(int),
                (_, Some(int), _) => self.int(int),
                (_, _, Some(float)) => self.raw(&py_float_repr(float)),
                _ => self.raw("null"),
            },
            Value::String(text) => self.normalised(text),
            Value::Array(items) => self.values(items),
            Value::Object(map) => self.map(map),
        }
    }

    /// A JSON list, `[]` when empty, one element written by `each`.
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        if items.is_empty() {
            return self.raw("[]");
        }
        self.open('[');
        for item in items {
            self.item();
            each(self, item);
        }
        self.close(']');
    }

    /// A list of payload values.
    fn values(&mut self, items: &[Value]) {
        self.list(items, |w, item| w.value(item));
    }

    /// A payload dict.
    fn map(&mut self, map: &serde_json::Map<String, Value>) {
        if map.is_empty() {
            return self.raw("{}");
        }
        {
            {
                let normaliser = self.normaliser;
                let mut entries: Vec<(std::borrow::Cow<'_, str>, &Value)> = map
                    .iter()
                    .map(|(key, value)| (normaliser.text(key), value))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                self.open('{');
                for (key, value) in entries {
                    self.element();
                    write_json_string(&mut self.out, &key);
                    self.out.push_str(": ");
                    self.value(value);
                }
                self.close('}');
            }
        }
    }

    /// A step's record as the oracle prints it: a dict of its keys, sorted.
    fn step(&mut self, record: &StepRecord) {
        enum Field<'a> {
            Value(&'a Value),
            Text(&'a str),
            Int(usize),
            True,
            Now(Timestamp),
            Error(Option<&'a crate::proto::HubError>),
        }
        let normaliser = self.normaliser;
        let mut fields: Vec<(std::borrow::Cow<'_, str>, Field<'_>)> = Vec::with_capacity(12);
        fields.push(("i".into(), Field::Int(record.idx)));
        fields.push(("op".into(), Field::Text(&record.op)));
        for (key, value) in &record.echo {
            fields.push((normaliser.text(key), Field::Value(value)));
        }
        if let Some(result) = &record.result {
            fields.push(("result".into(), Field::Value(result)));
        }
        if let Some(event_type) = &record.event_type {
            fields.push(("event_type".into(), Field::Value(event_type)));
        }
        if let Some(now) = record.now {
            fields.push(("now".into(), Field::Now(now)));
        }
        if record.background {
            fields.push(("background".into(), Field::True));
        }
        fields.push(("error".into(), Field::Error(record.error.as_ref())));
        match record.completion {
            Some(Completion::AfterStep(step)) => {
                fields.push(("completed_after_step".into(), Field::Int(step)));
            }
            Some(Completion::PendingAtEnd) => {
                fields.push(("still_pending_at_end".into(), Field::True));
            }
            None => {}
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        self.open('{');
        for (key, field) in fields {
            self.element();
            write_json_string(&mut self.out, &key);
            self.out.push_str(": ");
            match field {
                Field::Value(value) => self.value(value),
                Field::Text(text) => self.normalised(text),
                Field::Int(int) => self.int(int),
                Field::True => self.raw("true"),
                Field::Now(now) => self.normalised(&now.to_string()),
                Field::Error(None) => self.raw("null"),
                Field::Error(Some(error)) => {
                    self.open('{');
                    self.key("message");
                    self.normalised(&error.message);
                    self.key("type");
                    self.normalised(&error.type_name);
                    self.close('}');
                }
            }
        }
        self.close('}');
    }

    fn time(&mut self, stamp: Option<Timestamp>) {
        match stamp {
            Some(stamp) => {
                let text = self.normaliser.time(stamp);
                self.string(&text);
            }
            None => self.raw("null"),
        }
    }

    fn names(&mut self, agents: &[AgentId]) {
        let normaliser = self.normaliser;
        self.list(agents, |w, agent| w.string(&normaliser.name(*agent)));
    }
}

/// The trace of a run, printed exactly as the oracle prints it.
pub fn render(scenario_name: &str, run: &Run) -> String {
    let normaliser = Normaliser::new(run);
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
        normaliser: &normaliser,
        stack: Vec::new(),
    };
    w.open('{');
    w.key("agents");
    let agents: BTreeMap<&str, &super::record::RunAgent> = run
        .agents
        .iter()
        .map(|agent| (agent.model.name.as_str(), agent))
        .collect();
    w.open('{');
    for (name, agent) in &agents {
        w.key(name);
        w.open('{');
        w.key("model_turns");
        w.int(agent.model.used);
        w.key("scripted_turns");
        w.int(agent.model.turns.len());
        w.close('}');
    }
    w.close('}');
    let audit = run.hub.audit().records();
    w.key("audit");
    w.values(audit);
    w.key("audit_kinds");
    let kinds: Vec<Value> = audit
        .iter()
        .map(|record| record.get("kind").cloned().unwrap_or(Value::Null))
        .collect();
    w.value(&Value::Array(kinds));
    w.key("channels");
    // The oracle keys channels by label with a dict comprehension: when two channels share a
    // label (`as:` reused), the later one wins.
    let by_label: BTreeMap<&str, crate::ids::ChannelId> = run
        .hub
        .channel_ids()
        .map(|channel| (run.labels[&channel].as_str(), channel))
        .collect();
    let channels: Vec<(&str, crate::ids::ChannelId)> = by_label.into_iter().collect();
    if channels.is_empty() {
        w.raw("{}");
    } else {
        w.open('{');
        for (label, channel) in channels {
            w.key(label);
            let metadata = run.hub.get_channel(channel).expect("listed channels exist");
            write_channel(&mut w, metadata, run.hub.read_wal(channel));
        }
        w.close('}');
    }
    w.key("inbox_pending");
    let pending: BTreeMap<String, u64> = run
        .hub
        .inbox_pending()
        .iter()
        .map(|(agent, count)| (normaliser.name(*agent), *count))
        .collect();
    if pending.is_empty() {
        w.raw("{}");
    } else {
        w.open('{');
        for (name, count) in &pending {
            w.key(name);
            w.int(count);
        }
        w.close('}');
    }
    w.key("scenario");
    w.string(scenario_name);
    w.key("steps");
    w.list(&run.steps, |w, record| w.step(record));
    w.close('}');
    w.out.push('\n');
    w.out
}

fn write_channel(w: &mut Writer<'_>, metadata: &ChannelMetadata, wal: &[std::sync::Arc<Envelope>]) {
    w.open('{');
    w.key("close_reason");
    w.string(&metadata.close_reason);
    w.key("closed_at");
    w.time(metadata.closed_at);
    w.key("created_at");
    w.time(Some(metadata.created_at));
    w.key("creator");
    w.string(&w.normaliser.name(metadata.creator_id));
    w.key("expectations");
    let expectations: Vec<Value> = metadata
        .manifest
        .expectations
        .iter()
        .map(|e| e.to_json())
        .collect();
    w.value(&Value::Array(expectations));
    w.key("expires_at");
    w.time(metadata.expires_at);
    w.key("knobs");
    w.map(&metadata.knobs);
    w.key("labels");
    w.map(&metadata.labels);
    w.key("manifest_version");
    w.int(metadata.manifest.version);
    w.key("participants");
    w.list(&metadata.participants, |w, participant| {
        w.open('{');
        w.key("joined_at");
        w.time(Some(participant.joined_at));
        w.key("name");
        w.string(&w.normaliser.name(participant.agent_id));
        w.key("order");
        w.int(participant.order);
        w.key("role");
        w.string(participant.role.as_str());
        w.close('}');
    });
    w.key("pending_acks");
    w.names(&metadata.pending_acks);
    w.key("rejected_by");
    w.names(&metadata.rejected_by);
    w.key("required_acks");
    match metadata.required_acks {
        Some(count) => w.int(count),
        None => w.raw("null"),
    }
    w.key("state");
    w.string(metadata.state.as_str());
    w.key("type");
    w.string(metadata.manifest.manifest_type);
    w.key("wal");
    let mut seq = 0;
    w.list(wal, |w, envelope| {
        write_envelope(w, seq, envelope);
        seq += 1;
    });
    w.close('}');
}

fn write_envelope(w: &mut Writer<'_>, seq: usize, envelope: &Envelope) {
    w.open('{');
    w.key("audience");
    match &envelope.audience {
        Some(audience) => w.names(audience),
        None => w.raw("null"),
    }
    w.key("causation_id");
    match &envelope.causation_id {
        Some(causation) => w.normalised(causation),
        None => w.raw("null"),
    }
    w.key("created_at");
    w.time(envelope.created_at);
    w.key("depth");
    w.int(envelope.depth);
    w.key("event_data");
    w.map(&envelope.event_data);
    w.key("event_type");
    w.string(&envelope.event_type);
    w.key("idempotency_key");
    w.null_or(envelope.idempotency_key.as_deref());
    w.key("priority");
    w.string(&envelope.priority);
    w.key("sender");
    w.string(&w.normaliser.name(envelope.sender_id));
    w.key("seq");
    w.int(seq);
    w.key("task_id");
    w.null_or(envelope.task_id.as_deref());
    w.key("trace_id");
    w.null_or(envelope.trace_id.as_deref());
    w.key("ttl_seconds");
    match envelope.ttl_seconds {
        Some(ttl) => w.int(ttl),
        None => w.raw("null"),
    }
    w.close('}');
}
