//! The audit log: one JSON record per event, in ag2's shape (all 11 kinds). Records carry raw
//! ids and ISO timestamps, as ag2 writes them; the trace normalises them.

use super::channel::Expectation;
use super::expectations::Violation;
use crate::ids::{AgentId, ChannelId};
use crate::json::to_compact_python;
use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Append-only audit records, in write order. Shared copy-on-write: a store snapshot holds
/// the same records until the hub writes the next one.
#[derive(Clone, Debug, Default)]
pub struct AuditLog {
    records: Arc<Vec<Value>>,
}

/// A task's terminal transition, as the `task_terminated` record reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskTermination<'a> {
    /// The task.
    pub task_id: &'a str,
    /// Its owner.
    pub owner_id: AgentId,
    /// Its channel, if any.
    pub channel_id: Option<ChannelId>,
    /// The terminal state (`completed`, `failed`, `expired`, `cancelled`).
    pub outcome: &'a str,
    /// The spec's capability, if any.
    pub capability: Option<&'a str>,
    /// Why it ended.
    pub reason: &'a str,
}

impl AuditLog {
    /// A log holding `records` (a hub rebuilt from its store).
    pub fn from_records(records: Vec<Value>) -> AuditLog {
        AuditLog {
            records: Arc::new(records),
        }
    }

    /// Every record, in write order.
    pub fn records(&self) -> &[Value] {
        &self.records
    }

    /// The log as ag2's `/audit/audit.jsonl`: one `json.dumps(record, sort_keys=True)` per line.
    pub fn to_jsonl(&self) -> String {
        self.records
            .iter()
            .map(|record| to_compact_python(record) + "\n")
            .collect()
    }

    fn push(&mut self, at: Timestamp, kind: &str, fields: Vec<(&str, Value)>) {
        let mut record = Map::new();
        record.insert("at".into(), Value::String(at.to_string()));
        record.insert("kind".into(), Value::from(kind));
        for (key, value) in fields {
            record.insert(key.to_string(), value);
        }
        Arc::make_mut(&mut self.records).push(Value::Object(record));
    }

    /// `agent_registered` / `agent_unregistered`.
    pub fn agent(&mut self, at: Timestamp, registered: bool, agent: AgentId, name: &str) {
        let kind = if registered {
            "agent_registered"
        } else {
            "agent_unregistered"
        };
        self.push(
            at,
            kind,
            vec![("agent_id", id(agent)), ("name", Value::from(name))],
        );
    }

    /// `resume_set` from a tenant's `set_resume`.
    pub fn resume_set(&mut self, at: Timestamp, agent: AgentId, version: i64) {
        self.push(
            at,
            "resume_set",
            vec![
                ("source", Value::from("tenant")),
                ("agent_id", id(agent)),
                ("version", Value::from(version)),
            ],
        );
    }

    /// `resume_set` from `record_observation`.
    pub fn observation(
        &mut self,
        at: Timestamp,
        agent: AgentId,
        version: i64,
        capability: &str,
        outcome: &str,
    ) {
        self.push(
            at,
            "resume_set",
            vec![
                ("source", Value::from("observed")),
                ("agent_id", id(agent)),
                ("version", Value::from(version)),
                ("capability", Value::from(capability)),
                ("outcome", Value::from(outcome)),
            ],
        );
    }

    /// `rule_set`.
    pub fn rule_set(&mut self, at: Timestamp, agent: AgentId, version: i64) {
        self.push(
            at,
            "rule_set",
            vec![("agent_id", id(agent)), ("version", Value::from(version))],
        );
    }

    /// `skill_set`.
    pub fn skill_set(&mut self, at: Timestamp, agent: AgentId, removed: bool) {
        self.push(
            at,
            "skill_set",
            vec![("agent_id", id(agent)), ("removed", Value::from(removed))],
        );
    }

    /// `channel_created`, before any invite.
    pub fn channel_created(
        &mut self,
        at: Timestamp,
        channel: ChannelId,
        manifest_type: &str,
        manifest_version: i64,
        creator: AgentId,
        participants: &[AgentId],
    ) {
        self.push(
            at,
            "channel_created",
            vec![
                ("channel_id", Value::String(channel.to_string())),
                ("manifest_type", Value::from(manifest_type)),
                ("manifest_version", Value::from(manifest_version)),
                ("creator_id", id(creator)),
                (
                    "participants",
                    Value::Array(participants.iter().map(|p| id(*p)).collect()),
                ),
            ],
        );
    }

    /// `channel_closed` or `channel_expired`.
    pub fn channel_ended(
        &mut self,
        at: Timestamp,
        channel: ChannelId,
        expired: bool,
        reason: &str,
    ) {
        let kind = if expired {
            "channel_expired"
        } else {
            "channel_closed"
        };
        self.push(
            at,
            kind,
            vec![
                ("channel_id", Value::String(channel.to_string())),
                ("reason", Value::from(reason)),
            ],
        );
    }

    /// `expectation_violated`: one record per new violation key, each with every violator.
    pub fn expectation_violated(
        &mut self,
        at: Timestamp,
        channel: ChannelId,
        expectation: &Expectation,
        violation: &Violation,
    ) {
        self.push(
            at,
            "expectation_violated",
            vec![
                ("channel_id", Value::String(channel.to_string())),
                ("expectation", Value::from(expectation.name)),
                ("on_violation", Value::from(expectation.on_violation)),
                ("params", expectation.params()),
                (
                    "violators",
                    Value::Array(violation.violators.iter().map(|v| id(*v)).collect()),
                ),
                ("detail", Value::Object(violation.detail.clone())),
            ],
        );
    }

    /// `task_terminated`.
    pub fn task_terminated(&mut self, at: Timestamp, task: &TaskTermination<'_>) {
        self.push(
            at,
            "task_terminated",
            vec![
                ("task_id", Value::from(task.task_id)),
                ("owner_id", id(task.owner_id)),
                (
                    "channel_id",
                    task.channel_id
                        .map_or(Value::Null, |c| Value::String(c.to_string())),
                ),
                ("outcome", Value::from(task.outcome)),
                (
                    "capability",
                    task.capability.map_or(Value::Null, Value::from),
                ),
                ("reason", Value::from(task.reason)),
            ],
        );
    }

    /// `turn_failed`: a client's notify handler raised.
    pub fn turn_failed(
        &mut self,
        at: Timestamp,
        channel: ChannelId,
        agent: AgentId,
        envelope_id: &str,
        exc_type: &str,
        exc_message: &str,
    ) {
        self.push(
            at,
            "turn_failed",
            vec![
                ("channel_id", Value::String(channel.to_string())),
                ("agent_id", id(agent)),
                ("envelope_id", Value::from(envelope_id)),
                ("exc_type", Value::from(exc_type)),
                ("exc_message", Value::from(exc_message)),
            ],
        );
    }
}

fn id(agent: AgentId) -> Value {
    Value::String(agent.to_string())
}
