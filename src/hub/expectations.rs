//! Expectation evaluators (`acks_within`, `reply_within`, `max_silence`), pure functions of a
//! channel's metadata, WAL and the hub clock. `turn_within` has no evaluator, as in ag2.

use super::channel::{ChannelMetadata, ChannelState, Expectation};
use crate::ids::AgentId;
use crate::proto::{Envelope, EventType};
use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A fired expectation.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The violators; empty for a channel-wide violation.
    pub violators: Vec<AgentId>,
    /// Evaluator-specific numbers (`elapsed_seconds`, `threshold_seconds`), as floats.
    pub detail: Map<String, Value>,
}

/// True when an evaluator is registered under this name.
pub fn has_evaluator(name: &str) -> bool {
    matches!(name, "acks_within" | "reply_within" | "max_silence")
}

/// True when a violation handler is registered under this name.
pub fn has_handler(name: &str) -> bool {
    matches!(name, "audit" | "notify_channel" | "auto_close")
}

/// Evaluates one expectation. Thresholds are inclusive (`elapsed >= seconds`).
pub fn evaluate(
    expectation: &Expectation,
    metadata: &ChannelMetadata,
    wal: &[Arc<Envelope>],
    now: Timestamp,
) -> Option<Violation> {
    let seconds = expectation.seconds as f64;
    let now_seconds = now.as_epoch_seconds();
    match expectation.name {
        "acks_within" => {
            if metadata.state != ChannelState::Pending {
                return None;
            }
            let elapsed = now_seconds - metadata.created_at.as_epoch_seconds();
            if elapsed < seconds || metadata.pending_acks.is_empty() {
                return None;
            }
            Some(Violation {
                violators: metadata.pending_acks.clone(),
                detail: detail(&[("elapsed_seconds", elapsed), ("threshold_seconds", seconds)]),
            })
        }
        "reply_within" => reply_within(metadata, wal, now_seconds, seconds),
        "max_silence" => {
            if metadata.state != ChannelState::Active {
                return None;
            }
            let anchor = wal
                .iter()
                .rev()
                .find(|envelope| EventType::is_content(&envelope.event_type))
                .and_then(|envelope| envelope.created_at)
                .unwrap_or(metadata.created_at);
            let elapsed = now_seconds - anchor.as_epoch_seconds();
            if elapsed < seconds {
                return None;
            }
            Some(Violation {
                violators: Vec::new(),
                detail: detail(&[("elapsed_seconds", elapsed), ("threshold_seconds", seconds)]),
            })
        }
        _ => None,
    }
}

/// For each participant, the latest text addressed to it must be answered by a later (or
/// same-instant) text of its own within `seconds`. Only `ag2.msg.text` counts.
fn reply_within(
    metadata: &ChannelMetadata,
    wal: &[Arc<Envelope>],
    now_seconds: f64,
    seconds: f64,
) -> Option<Violation> {
    if metadata.state != ChannelState::Active {
        return None;
    }
    let mut latest_in: BTreeMap<AgentId, Timestamp> = BTreeMap::new();
    let mut latest_out: BTreeMap<AgentId, Timestamp> = BTreeMap::new();
    for envelope in wal
        .iter()
        .filter(|envelope| envelope.event_type == EventType::TEXT)
    {
        let at = envelope.created_at.expect("WAL envelopes are stamped");
        latest_out.insert(envelope.sender_id, at);
        for participant in &metadata.participants {
            let id = participant.agent_id;
            if id == envelope.sender_id {
                continue;
            }
            if envelope
                .audience
                .as_ref()
                .is_some_and(|audience| !audience.contains(&id))
            {
                continue;
            }
            latest_in.insert(id, at);
        }
    }
    let violators: Vec<AgentId> = metadata
        .participants
        .iter()
        .map(|participant| participant.agent_id)
        .filter(|id| {
            let Some(inbound) = latest_in.get(id) else {
                return false;
            };
            let inbound_at = inbound.as_epoch_seconds();
            if latest_out
                .get(id)
                .is_some_and(|out| out.as_epoch_seconds() >= inbound_at)
            {
                return false;
            }
            now_seconds - inbound_at >= seconds
        })
        .collect();
    if violators.is_empty() {
        return None;
    }
    Some(Violation {
        violators,
        detail: detail(&[("threshold_seconds", seconds)]),
    })
}

fn detail(pairs: &[(&str, f64)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), Value::from(*value)))
        .collect()
}
