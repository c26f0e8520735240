//! ag2 1.2.1's store layout (`hub/layout.py`): where each file lives under the store's root, and
//! each file's text as ag2 writes it.
//!
//! JSON files are `json.dumps(record.to_dict())` (dataclass key order, `", "` and `": "`
//! separators, ASCII escapes); the cursor map and the capability index add `sort_keys=True`; WAL
//! lines and audit records are `json.dumps(..., sort_keys=True)`, one per line. `SKILL.md` is the
//! skill's text as it is. hubsim's own `hubsim.json` holds what ag2 does not store.

use crate::hub::channel::ChannelMetadata;
use crate::hub::rule::Rule;
use crate::hub::wire;
use crate::hub::{Passport, Resume, TaskMetadata};
use crate::ids::{AgentId, ChannelId};
use crate::json::{to_compact_python, to_compact_python_unsorted};
use crate::proto::Envelope;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// hubsim's own file at the root (ag2 lists only directories there, so it ignores it): the
/// highest id a hub on this store may have handed out.
pub(crate) const HUBSIM_FILE: &str = "hubsim.json";

/// The lock file at the root, held (`flock`) by the `hubsim serve` using the store.
pub(crate) const LOCK_FILE: &str = "hubsim.lock";

/// The `format` hubsim writes in [`HUBSIM_FILE`].
pub(crate) const HUBSIM_FORMAT: i64 = 1;

/// `/agents`.
pub(crate) const AGENTS: &str = "agents";
/// `/channels`.
pub(crate) const CHANNELS: &str = "channels";
/// `/tasks`.
pub(crate) const TASKS: &str = "tasks";
/// `/audit/audit.jsonl`.
pub(crate) const AUDIT: [&str; 2] = ["audit", "audit.jsonl"];
/// `/registry/by_capability.json`.
pub(crate) const BY_CAPABILITY: [&str; 2] = ["registry", "by_capability.json"];

/// An agent's files.
pub(crate) const PASSPORT: &str = "passport.json";
pub(crate) const RESUME: &str = "resume.json";
pub(crate) const RULE: &str = "rule.json";
pub(crate) const SKILL: &str = "SKILL.md";
pub(crate) const CURSORS: &str = "inbox.cursors.json";
/// A channel's files.
pub(crate) const METADATA: &str = "metadata.json";
pub(crate) const WAL: &str = "wal.jsonl";
/// A task's files (`metadata.json` too).
pub(crate) const CHECKPOINT: &str = "checkpoint.json";
pub(crate) const CHECKPOINT_WRITERS: &str = "checkpoint_writers.json";

/// The longest file name most file systems take.
const NAME_BYTES_MAX: usize = 255;

/// `root/agents/{id}`.
pub(crate) fn agent_dir(root: &Path, agent: AgentId) -> PathBuf {
    root.join(AGENTS).join(agent.to_string())
}

/// `root/channels/{id}`.
pub(crate) fn channel_dir(root: &Path, channel: ChannelId) -> PathBuf {
    root.join(CHANNELS).join(channel.to_string())
}

/// `root/tasks/{id}`, or `None` for a task id that cannot be one directory name (empty, `.`,
/// `..`, a `/` or NUL in it, or longer than a file name may be). ag2's disk store would nest
/// such a task's files or refuse the path; hubsim leaves the task out of the store (and warns).
pub(crate) fn task_dir(root: &Path, task_id: &str) -> Option<PathBuf> {
    let unsafe_name = task_id.is_empty()
        || task_id == "."
        || task_id == ".."
        || task_id.len() > NAME_BYTES_MAX
        || task_id.contains(['/', '\0', '\\']);
    (!unsafe_name).then(|| root.join(TASKS).join(task_id))
}

/// `json.dumps(value)`.
fn dumps(value: &Value) -> String {
    to_compact_python_unsorted(value)
}

/// `passport.json`: `json.dumps(passport.to_dict())`. hubsim never keeps a claim, so `claim`
/// is `{}`, as ag2 stores every passport but a `remote_agent`'s.
pub(crate) fn passport_text(passport: &Passport) -> String {
    dumps(&wire::passport_json(passport))
}

/// `resume.json`.
pub(crate) fn resume_text(resume: &Resume) -> String {
    dumps(&wire::resume_json(resume))
}

/// `rule.json`.
pub(crate) fn rule_text(rule: &Rule) -> String {
    dumps(&wire::rule_json(rule))
}

/// `inbox.cursors.json`: `json.dumps(cursors, sort_keys=True)`.
pub(crate) fn cursors_text(cursors: &BTreeMap<String, String>) -> String {
    let map: Map<String, Value> = cursors
        .iter()
        .map(|(channel, envelope)| (channel.clone(), Value::from(envelope.as_str())))
        .collect();
    to_compact_python(&Value::Object(map))
}

/// `by_capability.json`: every capability an agent claims or was observed with, to the sorted
/// ids of those agents, keys sorted. A cache ag2 rebuilds from the resumes and never reads.
pub(crate) fn capability_index_text<'a>(
    resumes: impl Iterator<Item = (AgentId, &'a Resume)>,
) -> String {
    let mut index: BTreeMap<&str, BTreeSet<AgentId>> = BTreeMap::new();
    for (agent, resume) in resumes {
        let claimed = resume.claimed_capabilities.iter().map(String::as_str);
        for capability in claimed.chain(resume.observed.keys().map(String::as_str)) {
            index.entry(capability).or_default().insert(agent);
        }
    }
    let map: Map<String, Value> = index
        .into_iter()
        .map(|(capability, agents)| {
            let ids = agents.iter().map(|id| Value::String(id.to_string()));
            (capability.to_string(), Value::Array(ids.collect()))
        })
        .collect();
    to_compact_python(&Value::Object(map))
}

/// A channel's `metadata.json`.
pub(crate) fn channel_text(metadata: &ChannelMetadata) -> String {
    dumps(&wire::channel_json(metadata))
}

/// One `wal.jsonl` line, newline included: `envelope.to_json() + "\n"`.
pub(crate) fn wal_line(envelope: &Envelope) -> String {
    to_compact_python(&envelope.to_json()) + "\n"
}

/// A task's `metadata.json`.
pub(crate) fn task_text(task: &TaskMetadata) -> String {
    dumps(&wire::task_json(task))
}

/// A task's `checkpoint.json`: `json.dumps(state)`.
pub(crate) fn checkpoint_text(state: &Value) -> String {
    dumps(state)
}

/// A task's `checkpoint_writers.json`: `json.dumps(sorted(bound))`.
pub(crate) fn writers_text(writers: &[AgentId]) -> String {
    let mut ids: Vec<String> = writers.iter().map(AgentId::to_string).collect();
    ids.sort();
    dumps(&Value::Array(ids.into_iter().map(Value::String).collect()))
}

/// One `audit.jsonl` line, newline included: `json.dumps(record, sort_keys=True) + "\n"`.
pub(crate) fn audit_line(record: &Value) -> String {
    to_compact_python(record) + "\n"
}

/// `hubsim.json`: the format and the highest id reserved for this store.
pub(crate) fn hubsim_text(ids_reserved: u128) -> String {
    let mut map = Map::new();
    map.insert("format".into(), Value::from(HUBSIM_FORMAT));
    map.insert(
        "ids_reserved_through".into(),
        Value::String(format!("{ids_reserved:032x}")),
    );
    dumps(&Value::Object(map)) + "\n"
}
