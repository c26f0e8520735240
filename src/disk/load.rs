//! Reading a store directory back into a [`Store`], as ag2's `hydrate()` walks it: every
//! `agents/*/` with a `passport.json`, every `channels/*/` with a `metadata.json` and its WAL,
//! every `tasks/*/`, the audit log, and hubsim's `hubsim.json`. Anything that does not read is a
//! [`StoreError::Corrupt`] naming the file (and the line of a `.jsonl`); nothing is skipped
//! silently but what ag2 skips too (a directory without its main file).

use super::layout::{self, AGENTS, CHANNELS, TASKS};
use super::StoreError;
use crate::hub::adapter::AdapterKind;
use crate::hub::audit::AuditLog;
use crate::hub::channel::{ChannelMetadata, ChannelState, Participant, ParticipantRole};
use crate::hub::store::{Store, StoredChannel};
use crate::hub::wire::{self as parse, manifest_json};
use crate::hub::{AgentEntry, Resume, TaskMetadata};
use crate::ids::{AgentId, ChannelId};
use crate::proto::Envelope;
use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An append-only file as read: its valid length in bytes and lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Whole lines (each ends with `\n`).
    pub(crate) lines: usize,
    /// Their bytes; a torn last line (no `\n`, a write cut short by a crash) is not counted and
    /// is cut off at the next append.
    pub(crate) bytes: u64,
}

/// A store directory read back.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) store: Store,
    /// The highest id a hub on this store may have handed out (from `hubsim.json`; 0 without).
    pub(crate) ids_reserved: u128,
    /// Each WAL's valid length.
    pub(crate) wals: BTreeMap<ChannelId, Appended>,
    /// The audit log's valid length.
    pub(crate) audit: Appended,
    /// `.jsonl` files whose last line was torn (cut off, not read).
    pub(crate) torn: Vec<PathBuf>,
}

fn corrupt(path: &Path, line: Option<usize>, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file's text, `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|error| corrupt(path, None, format!("not UTF-8: {error}"))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path, error)),
    }
}

/// A JSON file, `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>, StoreError> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| corrupt(path, None, format!("not JSON: {error}")))
}

/// The names of the directories in `dir`, sorted (ag2's `list()` order); none if it is missing.
fn subdirs(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(dir, error)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| io_error(dir, error))?;
        let kind = entry.file_type().map_err(|error| io_error(dir, error))?;
        if kind.is_dir() {
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                corrupt(&entry.path(), None, "a directory name that is not UTF-8")
            })?;
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The lines of a `.jsonl` file, each parsed; a missing file has none.
fn read_jsonl(path: &Path, torn: &mut Vec<PathBuf>) -> Result<(Vec<Value>, Appended), StoreError> {
    let Some(text) = read_text(path)? else {
        return Ok((Vec::new(), Appended::default()));
    };
    let whole = text.rfind('\n').map_or(0, |at| at + 1);
    if whole < text.len() {
        torn.push(path.to_path_buf());
    }
    let mut values = Vec::new();
    for (idx, line) in text[..whole].lines().enumerate() {
        let value = serde_json::from_str(line)
            .map_err(|error| corrupt(path, Some(idx + 1), format!("not JSON: {error}")))?;
        values.push(value);
    }
    let appended = Appended {
        lines: values.len(),
        bytes: whole as u64,
    };
    Ok((values, appended))
}

fn object<'a>(
    path: &Path,
    value: &'a Value,
    line: Option<usize>,
) -> Result<&'a Map<String, Value>, StoreError> {
    value
        .as_object()
        .ok_or_else(|| corrupt(path, line, "expected a JSON object"))
}

/// Reads the store in `root`.
///
/// # Errors
/// A file that cannot be read ([`StoreError::Io`]) or does not hold what ag2 writes there
/// ([`StoreError::Corrupt`], with the file and line).
pub(crate) fn load(root: &Path) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded {
        store: Store::default(),
        ids_reserved: 0,
        wals: BTreeMap::new(),
        audit: Appended::default(),
        torn: Vec::new(),
    };
    let mut max_id = 0u128;
    for name in subdirs(&root.join(AGENTS))? {
        let dir = root.join(AGENTS).join(&name);
        let Some((agent, entry, cursors)) = load_agent(&dir, &name)? else {
            continue;
        };
        max_id = max_id.max(agent.0);
        loaded.store.agents.insert(agent, entry);
        if !cursors.is_empty() {
            loaded.store.cursors.insert(agent, cursors);
        }
    }
    for name in subdirs(&root.join(CHANNELS))? {
        let dir = root.join(CHANNELS).join(&name);
        let Some((channel, stored, appended)) = load_channel(&dir, &name, &mut loaded.torn)? else {
            continue;
        };
        max_id = max_id.max(channel.0);
        for envelope in &stored.wal {
            max_id = max_id.max(envelope.envelope_id.map_or(0, |id| id.0));
        }
        loaded.store.channels.insert(channel, stored);
        loaded.wals.insert(channel, appended);
    }
    for name in subdirs(&root.join(TASKS))? {
        load_task(&root.join(TASKS).join(&name), &name, &mut loaded.store)?;
    }
    // ag2's `hydrate()` fills its task dict in listing order, which `list_tasks` then follows.
    loaded.store.task_order = loaded.store.tasks.keys().cloned().collect();
    let audit_path = root.join(layout::AUDIT[0]).join(layout::AUDIT[1]);
    let (records, appended) = read_jsonl(&audit_path, &mut loaded.torn)?;
    for (idx, record) in records.iter().enumerate() {
        object(&audit_path, record, Some(idx + 1))?;
    }
    loaded.store.audit = AuditLog::from_records(records);
    loaded.audit = appended;
    loaded.ids_reserved = read_hubsim(&root.join(layout::HUBSIM_FILE))?;
    loaded.store.last_id = max_id;
    Ok(loaded)
}

/// `hubsim.json`'s reserved id ceiling (0 when the file is missing: a store ag2 wrote).
fn read_hubsim(path: &Path) -> Result<u128, StoreError> {
    let Some(value) = read_json(path)? else {
        return Ok(0);
    };
    let map = object(path, &value, None)?;
    if map.get("format").and_then(Value::as_i64) != Some(layout::HUBSIM_FORMAT) {
        return Err(corrupt(
            path,
            None,
            format!("expected \"format\": {}", layout::HUBSIM_FORMAT),
        ));
    }
    map.get("ids_reserved_through")
        .and_then(Value::as_str)
        .and_then(|text| AgentId::parse(text).map(|id| id.0))
        .ok_or_else(|| {
            corrupt(
                path,
                None,
                "expected \"ids_reserved_through\": 32 hex digits",
            )
        })
}

type AgentFiles = (AgentId, AgentEntry, BTreeMap<String, String>);

/// One `agents/{id}/` (ag2's `_load_agent`): skipped without a passport; a missing resume or
/// rule is the default one.
fn load_agent(dir: &Path, name: &str) -> Result<Option<AgentFiles>, StoreError> {
    let path = dir.join(layout::PASSPORT);
    let Some(data) = read_json(&path)? else {
        return Ok(None);
    };
    let agent = AgentId::parse(name)
        .ok_or_else(|| corrupt(dir, None, "an agent directory not named by an agent id"))?;
    let passport = load_passport(&path, &data, agent)?;
    let path = dir.join(layout::RESUME);
    let resume = match read_json(&path)? {
        Some(data) => {
            parse::resume_from_dict(&data).map_err(|e| corrupt(&path, None, e.to_string()))?
        }
        None => Resume::default(),
    };
    let path = dir.join(layout::RULE);
    let rule = match read_json(&path)? {
        Some(data) => {
            parse::rule_from_dict(&data).map_err(|e| corrupt(&path, None, e.to_string()))?
        }
        None => crate::hub::rule::Rule::default(),
    };
    let skill = read_text(&dir.join(layout::SKILL))?;
    let path = dir.join(layout::CURSORS);
    let mut cursors = BTreeMap::new();
    if let Some(data) = read_json(&path)? {
        for (channel, envelope) in object(&path, &data, None)? {
            let envelope = envelope.as_str().ok_or_else(|| {
                corrupt(
                    &path,
                    None,
                    format!("the cursor of {channel} is not a string"),
                )
            })?;
            if !channel.is_empty() && !envelope.is_empty() {
                cursors.insert(channel.clone(), envelope.to_string());
            }
        }
    }
    let entry = AgentEntry {
        passport: std::sync::Arc::new(passport),
        resume,
        rule,
        skill,
    };
    Ok(Some((agent, entry, cursors)))
}

fn load_passport(
    path: &Path,
    data: &Value,
    agent: AgentId,
) -> Result<crate::hub::Passport, StoreError> {
    let bad = |message: String| corrupt(path, None, message);
    let parsed = parse::passport_from_dict(data).map_err(|e| bad(e.to_string()))?;
    let name = parsed
        .name
        .as_str()
        .ok_or_else(|| bad("\"name\" is not a string".into()))?
        .to_string();
    let scheme = parsed
        .scheme_and_claim()
        .map_err(|e| bad(e.to_string()))?
        .0
        .as_str()
        .ok_or_else(|| bad("\"auth.scheme\" is not a string".into()))?
        .to_string();
    let map = object(path, data, None)?;
    let stored_id = map.get("agent_id").and_then(Value::as_str);
    if stored_id != Some(agent.to_string().as_str()) {
        return Err(bad(format!("\"agent_id\" is not {agent}, its directory")));
    }
    let created_at = match map.get("created_at").and_then(Value::as_str) {
        None | Some("") => None,
        Some(text) => Some(timestamp(path, text, "created_at")?),
    };
    let mut passport = parsed.into_passport(name, scheme);
    passport.agent_id = Some(agent);
    passport.created_at = created_at;
    Ok(passport)
}

fn timestamp(path: &Path, text: &str, field: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse_iso(text).ok_or_else(|| {
        corrupt(
            path,
            None,
            format!("\"{field}\" is not an ISO timestamp: {text:?}"),
        )
    })
}

/// One `channels/{id}/` (ag2's `_load_channel`): skipped without `metadata.json`.
fn load_channel(
    dir: &Path,
    name: &str,
    torn: &mut Vec<PathBuf>,
) -> Result<Option<(ChannelId, StoredChannel, Appended)>, StoreError> {
    let path = dir.join(layout::METADATA);
    let Some(data) = read_json(&path)? else {
        return Ok(None);
    };
    let channel = ChannelId::parse(name)
        .ok_or_else(|| corrupt(dir, None, "a channel directory not named by a channel id"))?;
    let metadata = channel_from_dict(&path, &data)?;
    if metadata.channel_id != channel {
        return Err(corrupt(
            &path,
            None,
            format!("\"channel_id\" is not {channel}, its directory"),
        ));
    }
    let path = dir.join(layout::WAL);
    let (lines, appended) = read_jsonl(&path, torn)?;
    let mut wal = Vec::with_capacity(lines.len());
    for (idx, line) in lines.iter().enumerate() {
        let envelope = Envelope::from_json(line)
            .ok_or_else(|| corrupt(&path, Some(idx + 1), "not an envelope as ag2 writes one"))?;
        if envelope.channel_id != channel {
            return Err(corrupt(
                &path,
                Some(idx + 1),
                "an envelope of another channel",
            ));
        }
        wal.push(Arc::new(envelope));
    }
    Ok(Some((channel, StoredChannel { metadata, wal }, appended)))
}

/// `ChannelMetadata.from_dict`, for the built-in manifests (hubsim has no other adapter).
fn channel_from_dict(path: &Path, data: &Value) -> Result<ChannelMetadata, StoreError> {
    let bad = |message: &str| corrupt(path, None, message.to_string());
    let map = object(path, data, None)?;
    let field = |key: &str| map.get(key).ok_or_else(|| bad(&format!("no \"{key}\"")));
    let text = |key: &str| -> Result<&str, StoreError> {
        field(key)?
            .as_str()
            .ok_or_else(|| bad(&format!("\"{key}\" is not a string")))
    };
    let time = |key: &str| -> Result<Option<Timestamp>, StoreError> {
        match field(key)? {
            Value::Null => Ok(None),
            Value::String(at) => timestamp(path, at, key).map(Some),
            _ => Err(bad(&format!("\"{key}\" is not a timestamp or null"))),
        }
    };
    let agent = |value: &Value, what: &str| -> Result<AgentId, StoreError> {
        value
            .as_str()
            .and_then(AgentId::parse)
            .ok_or_else(|| bad(&format!("{what} is not an agent id")))
    };
    let agents = |key: &str| -> Result<Vec<AgentId>, StoreError> {
        let items = field(key)?
            .as_array()
            .ok_or_else(|| bad(&format!("\"{key}\" is not a list")))?;
        items.iter().map(|item| agent(item, key)).collect()
    };
    let manifest = object(path, field("manifest")?, None)?;
    let kind = manifest
        .get("type")
        .and_then(Value::as_str)
        .zip(manifest.get("version").and_then(Value::as_i64))
        .and_then(|(kind, version)| AdapterKind::lookup(kind, version))
        .ok_or_else(|| bad("a manifest hubsim has no adapter for"))?;
    if manifest_json(kind.manifest()) != *field("manifest")? {
        return Err(bad(
            "a manifest that differs from the built-in one of its type",
        ));
    }
    let mut participants = Vec::new();
    for item in field("participants")?
        .as_array()
        .ok_or_else(|| bad("\"participants\" is not a list"))?
    {
        participants.push(participant(path, item)?);
    }
    let state = match text("state")? {
        "pending" => ChannelState::Pending,
        "active" => ChannelState::Active,
        "closed" => ChannelState::Closed,
        "expired" => ChannelState::Expired,
        other => return Err(bad(&format!("an unknown channel state {other:?}"))),
    };
    let dict = |key: &str| -> Result<Map<String, Value>, StoreError> {
        field(key)?
            .as_object()
            .cloned()
            .ok_or_else(|| bad(&format!("\"{key}\" is not an object")))
    };
    let required_acks = match field("required_acks")? {
        Value::Null => None,
        value => Some(
            value
                .as_i64()
                .ok_or_else(|| bad("\"required_acks\" is not an integer"))?,
        ),
    };
    Ok(ChannelMetadata {
        channel_id: ChannelId::parse(text("channel_id")?)
            .ok_or_else(|| bad("\"channel_id\" is not a channel id"))?,
        manifest: kind.manifest(),
        creator_id: agent(field("creator_id")?, "\"creator_id\"")?,
        participants,
        state,
        created_at: timestamp(path, text("created_at")?, "created_at")?,
        expires_at: time("expires_at")?,
        closed_at: time("closed_at")?,
        close_reason: text("close_reason")?.to_string(),
        knobs: dict("knobs")?,
        labels: dict("labels")?,
        required_acks,
        pending_acks: agents("pending_acks")?,
        rejected_by: agents("rejected_by")?,
    })
}

fn participant(path: &Path, value: &Value) -> Result<Participant, StoreError> {
    let bad = || {
        corrupt(
            path,
            None,
            format!("a participant that does not read: {value}"),
        )
    };
    let map = value.as_object().ok_or_else(bad)?;
    let role = match map.get("role").and_then(Value::as_str) {
        Some("initiator") => ParticipantRole::Initiator,
        Some("respondent") => ParticipantRole::Respondent,
        Some("participant") => ParticipantRole::Participant,
        _ => return Err(bad()),
    };
    Ok(Participant {
        agent_id: map
            .get("agent_id")
            .and_then(Value::as_str)
            .and_then(AgentId::parse)
            .ok_or_else(bad)?,
        role,
        order: map
            .get("order")
            .and_then(Value::as_u64)
            .and_then(|order| usize::try_from(order).ok())
            .ok_or_else(bad)?,
        joined_at: map
            .get("joined_at")
            .and_then(Value::as_str)
            .and_then(Timestamp::parse_iso)
            .ok_or_else(bad)?,
    })
}

/// One `tasks/{id}/`: its metadata (ag2's `_load_task`), its checkpoint and its checkpoint
/// writers (which ag2 reads when asked for them).
fn load_task(dir: &Path, name: &str, store: &mut Store) -> Result<(), StoreError> {
    let path = dir.join(layout::METADATA);
    if let Some(data) = read_json(&path)? {
        let map = object(&path, &data, None)?;
        let task: TaskMetadata =
            parse::task_from_dict(map).map_err(|e| corrupt(&path, None, e.to_string()))?;
        if task.task_id != name {
            return Err(corrupt(
                &path,
                None,
                format!("\"task_id\" is not {name:?}, its directory"),
            ));
        }
        store.tasks.insert(name.to_string(), task);
    }
    if let Some(state) = read_json(&dir.join(layout::CHECKPOINT))? {
        store.checkpoints.insert(name.to_string(), state);
    }
    let path = dir.join(layout::CHECKPOINT_WRITERS);
    if let Some(data) = read_json(&path)? {
        let writers = data
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().and_then(AgentId::parse))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| corrupt(&path, None, "expected a list of agent ids"))?;
        store.checkpoint_writers.insert(name.to_string(), writers);
    }
    Ok(())
}
