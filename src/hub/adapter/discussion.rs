//! `discussion`: N-party round robin. The creator speaks first (wherever it sits in the order),
//! then each text passes the turn to the next participant by `order`. Never auto-closes; its
//! `turn_within` expectations are inert, as in ag2.

use super::id_repr;
use crate::hub::channel::ChannelMetadata;
use crate::ids::{AgentId, EnvelopeId};
use crate::json::py_repr;
use crate::proto::{Envelope, EventType, HubError};
use serde_json::Value;

/// Folded state of a discussion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscussionState {
    /// Participant ids sorted by `order`.
    pub order: Vec<AgentId>,
    /// Whose turn it is.
    pub expected: AgentId,
    /// The last text's sender.
    pub last_speaker: Option<AgentId>,
    /// The last text envelope.
    pub last_envelope: Option<EnvelopeId>,
    /// Texts accepted so far.
    pub turn_count: u64,
}

pub(super) fn validate_create(metadata: &ChannelMetadata) -> Result<(), HubError> {
    let count = metadata.participants.len();
    if count < 2 {
        return Err(HubError::protocol(format!(
            "discussion requires at least 2 participants, got {count}"
        )));
    }
    match metadata.knobs.get("ordering") {
        None => Ok(()),
        Some(Value::String(ordering)) if ordering == "round_robin" => Ok(()),
        // `ordering not in {"round_robin"}` hashes the value first.
        Some(Value::Array(_)) => Err(HubError::type_error("unhashable type: 'list'")),
        Some(Value::Object(_)) => Err(HubError::type_error("unhashable type: 'dict'")),
        Some(ordering) => Err(HubError::protocol(format!(
            "discussion knobs.ordering={} not supported; choose from ['round_robin']",
            py_repr(ordering)
        ))),
    }
}

pub(super) fn initial_state(metadata: &ChannelMetadata) -> DiscussionState {
    DiscussionState {
        order: metadata.order(),
        expected: metadata.creator_id,
        last_speaker: None,
        last_envelope: None,
        turn_count: 0,
    }
}

impl DiscussionState {
    pub(super) fn validate_send(
        &self,
        metadata: &ChannelMetadata,
        envelope: &Envelope,
    ) -> Result<(), HubError> {
        if envelope.event_type != EventType::TEXT || envelope.sender_id == self.expected {
            return Ok(());
        }
        Err(HubError::protocol(format!(
            "discussion channel '{}' expects {} to speak, got {}",
            metadata.channel_id,
            id_repr(self.expected),
            id_repr(envelope.sender_id)
        )))
    }

    pub(super) fn fold(&mut self, envelope: &Envelope) {
        if envelope.event_type != EventType::TEXT {
            return;
        }
        let Some(idx) = self.order.iter().position(|id| *id == envelope.sender_id) else {
            return;
        };
        self.expected = self.order[(idx + 1) % self.order.len()];
        self.last_speaker = Some(envelope.sender_id);
        self.last_envelope = envelope.envelope_id;
        self.turn_count += 1;
    }
}
