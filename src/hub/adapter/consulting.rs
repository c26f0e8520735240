//! `consulting`: one question from the initiator, one text reply from the respondent, then the
//! channel closes with `consulting_complete`. Only `ag2.msg.text` moves the state; any other
//! event is accepted from either side at any time.

use super::{id_repr, AdapterResult, ExpectedTurn};
use crate::hub::channel::{ChannelMetadata, ParticipantRole};
use crate::ids::EnvelopeId;
use crate::proto::{Envelope, EventType, HubError};
use serde_json::Value;

/// Folded state of a consulting channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsultingState {
    /// The initiator's question has landed.
    pub initiator_sent: bool,
    /// The respondent's reply has landed.
    pub respondent_replied: bool,
    /// The last text envelope.
    pub last_envelope: Option<EnvelopeId>,
}

impl ConsultingState {
    pub(super) fn validate_send(
        &self,
        metadata: &ChannelMetadata,
        envelope: &Envelope,
    ) -> Result<(), HubError> {
        if envelope.event_type != EventType::TEXT {
            return Ok(());
        }
        let channel = metadata.channel_id;
        if self.initiator_sent && self.respondent_replied {
            return Err(HubError::protocol(format!(
                "consulting channel '{channel}' already complete"
            )));
        }
        if !self.initiator_sent {
            let initiator = metadata.creator_id;
            if envelope.sender_id != initiator {
                return Err(HubError::protocol(format!(
                    "consulting channel '{channel}' expects first send from initiator {}, got {}",
                    id_repr(initiator),
                    id_repr(envelope.sender_id)
                )));
            }
        } else {
            let respondent = respondent(metadata)?;
            if envelope.sender_id != respondent {
                return Err(HubError::protocol(format!(
                    "consulting channel '{channel}' expects reply from respondent {}, got {}",
                    id_repr(respondent),
                    id_repr(envelope.sender_id)
                )));
            }
        }
        Ok(())
    }

    pub(super) fn fold(&mut self, envelope: &Envelope) {
        if envelope.event_type != EventType::TEXT {
            return;
        }
        if !self.initiator_sent {
            self.initiator_sent = true;
            self.last_envelope = envelope.envelope_id;
        } else if !self.respondent_replied {
            self.respondent_replied = true;
            self.last_envelope = envelope.envelope_id;
        }
    }

    pub(super) fn on_accepted(&self, envelope: &Envelope) -> AdapterResult {
        if envelope.event_type == EventType::TEXT && self.initiator_sent && self.respondent_replied
        {
            return AdapterResult {
                close_reason: Some("consulting_complete".to_string()),
            };
        }
        AdapterResult::default()
    }

    pub(super) fn expected_next(&self, metadata: &ChannelMetadata) -> Option<ExpectedTurn> {
        let speaker = if !self.initiator_sent {
            metadata.creator_id
        } else if !self.respondent_replied {
            respondent(metadata).ok()?
        } else {
            return None;
        };
        Some(ExpectedTurn {
            speaker: Value::String(speaker.to_string()),
            trigger: self.last_envelope,
        })
    }
}

fn respondent(metadata: &ChannelMetadata) -> Result<crate::ids::AgentId, HubError> {
    metadata
        .with_role(ParticipantRole::Respondent)
        .ok_or_else(|| {
            HubError::protocol(format!(
                "consulting channel '{}' has no respondent",
                metadata.channel_id
            ))
        })
}
