//! `conversation`: free-form two-party exchange. Any text from a participant is accepted; the
//! channel never closes by itself (explicit close, TTL or an `auto_close` expectation only).

use crate::ids::{AgentId, EnvelopeId};
use crate::proto::{Envelope, EventType};

/// Folded state of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationState {
    /// Texts accepted so far.
    pub turn_count: u64,
    /// The last text's sender.
    pub last_speaker: Option<AgentId>,
    /// The last text envelope.
    pub last_envelope: Option<EnvelopeId>,
}

impl ConversationState {
    /// Only participants may send. The hub checks this before the adapter for real posts, but the
    /// `can_send` probe reaches it for outsiders named in an audience.
    pub(super) fn validate_send(
        &self,
        metadata: &crate::hub::channel::ChannelMetadata,
        envelope: &Envelope,
    ) -> Result<(), crate::proto::HubError> {
        if metadata.has_participant(envelope.sender_id) {
            return Ok(());
        }
        Err(crate::proto::HubError::protocol(format!(
            "conversation channel '{}' only accepts sends from participants, got '{}'",
            metadata.channel_id, envelope.sender_id
        )))
    }

    pub(super) fn fold(&mut self, envelope: &Envelope) {
        if envelope.event_type == EventType::TEXT {
            self.turn_count += 1;
            self.last_speaker = Some(envelope.sender_id);
            self.last_envelope = envelope.envelope_id;
        }
    }
}
