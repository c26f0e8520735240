//! Channel metadata: states, participants and roles, manifests and expectations.

use crate::ids::{AgentId, ChannelId};
use crate::time::Timestamp;
use serde_json::{Map, Value};

/// A channel's lifecycle state. `closing` exists in ag2 but no built-in path produces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Created; waiting for every invitee's ack.
    Pending,
    /// All invitees acked; traffic flows.
    Active,
    /// Terminal: closed by an adapter, an explicit close, an expectation or a failed handshake.
    Closed,
    /// Terminal: expired by TTL.
    Expired,
}

impl ChannelState {
    /// ag2's string value.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelState::Pending => "pending",
            ChannelState::Active => "active",
            ChannelState::Closed => "closed",
            ChannelState::Expired => "expired",
        }
    }

    /// `closed` and `expired` are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(self, ChannelState::Closed | ChannelState::Expired)
    }
}

/// A participant's role, fixed at creation by the participant count, not the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantRole {
    /// The creator.
    Initiator,
    /// The other party of a 2-participant channel.
    Respondent,
    /// Everyone but the creator in a channel of 3 or more.
    Participant,
}

impl ParticipantRole {
    /// ag2's rule: the creator is the initiator; the others are respondents in a two-party
    /// channel and participants otherwise (the count decides, not the adapter).
    pub fn assign(agent: AgentId, creator: AgentId, participant_count: usize) -> ParticipantRole {
        if agent == creator {
            ParticipantRole::Initiator
        } else if participant_count == 2 {
            ParticipantRole::Respondent
        } else {
            ParticipantRole::Participant
        }
    }

    /// ag2's string value.
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantRole::Initiator => "initiator",
            ParticipantRole::Respondent => "respondent",
            ParticipantRole::Participant => "participant",
        }
    }
}

/// One participant of a channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Participant {
    /// The agent.
    pub agent_id: AgentId,
    /// Its role.
    pub role: ParticipantRole,
    /// Its index in the final participant list (the creator keeps the index the caller gave it).
    pub order: usize,
    /// The creation time.
    pub joined_at: Timestamp,
}

/// A declared expectation of a manifest (`acks_within`, `reply_within`, `max_silence`,
/// `turn_within`).
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// The evaluator name.
    pub name: &'static str,
    /// The violation handler name (`audit`, `notify_channel`, `auto_close`, or an inert one).
    pub on_violation: &'static str,
    /// The evaluator's parameters (`{"seconds": N}`).
    pub seconds: i64,
}

impl Expectation {
    /// The expectation as ag2's `asdict`: `{name, on_violation, params, applies_to}`.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("name".into(), Value::from(self.name));
        map.insert("on_violation".into(), Value::from(self.on_violation));
        map.insert("params".into(), self.params());
        map.insert("applies_to".into(), Value::Null);
        Value::Object(map)
    }

    /// `{"seconds": N}`.
    pub fn params(&self) -> Value {
        let mut params = Map::new();
        params.insert("seconds".into(), Value::from(self.seconds));
        Value::Object(params)
    }
}

/// The declarative half of a channel type (ag2's `ChannelManifest`), field for field.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The adapter dispatch key (`consulting`, ...).
    pub manifest_type: &'static str,
    /// The adapter version (always 1 for the built-ins).
    pub version: i64,
    /// `participants.min`: declared only; the adapter's `validate_create` enforces counts.
    pub participants_min: i64,
    /// `participants.max`; `None` is unbounded.
    pub participants_max: Option<i64>,
    /// `participants.roles`: declared role names.
    pub roles: &'static [&'static str],
    /// `knobs_schema`: knob name to type hint, in declaration order.
    pub knobs_schema: &'static [(&'static str, &'static str)],
    /// The adapter's default view policy name.
    pub default_view_policy: &'static str,
    /// Declared expectations, evaluated by the expectation sweeper.
    pub expectations: &'static [Expectation],
}

/// A channel's metadata, field for field ag2's `ChannelMetadata`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelMetadata {
    /// The channel id.
    pub channel_id: ChannelId,
    /// The adapter's manifest.
    pub manifest: &'static Manifest,
    /// The creator, who is also the nominal sender of every hub-generated envelope.
    pub creator_id: AgentId,
    /// Participants in list order.
    pub participants: Vec<Participant>,
    /// Lifecycle state.
    pub state: ChannelState,
    /// Creation time.
    pub created_at: Timestamp,
    /// TTL deadline; `None` when the TTL is 0 or negative.
    pub expires_at: Option<Timestamp>,
    /// Set on the terminal transition.
    pub closed_at: Option<Timestamp>,
    /// Set on every transition (`""` until then).
    pub close_reason: String,
    /// Adapter knobs, unvalidated beyond what the adapter checks.
    pub knobs: Map<String, Value>,
    /// Labels; `intent` is stored as `labels["intent"]`.
    pub labels: Map<String, Value>,
    /// Stored, never used (as in ag2).
    pub required_acks: Option<i64>,
    /// Invitees that have not acked yet, in participant order.
    pub pending_acks: Vec<AgentId>,
    /// Invitees (or anyone) that rejected.
    pub rejected_by: Vec<AgentId>,
}

impl ChannelMetadata {
    /// True in `closed` or `expired`.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// True when `agent` is a participant.
    pub fn has_participant(&self, agent: AgentId) -> bool {
        self.participants
            .iter()
            .any(|participant| participant.agent_id == agent)
    }

    /// Participant ids in list order.
    pub fn participant_ids(&self) -> Vec<AgentId> {
        self.participants
            .iter()
            .map(|participant| participant.agent_id)
            .collect()
    }

    /// The participant holding `role`, first in list order.
    pub fn with_role(&self, role: ParticipantRole) -> Option<AgentId> {
        self.participants
            .iter()
            .find(|p| p.role == role)
            .map(|p| p.agent_id)
    }

    /// Participant ids sorted by `order` (stable), the rotation of discussions and workflows.
    pub fn order(&self) -> Vec<AgentId> {
        let mut participants: Vec<&Participant> = self.participants.iter().collect();
        participants.sort_by_key(|participant| participant.order);
        participants
            .into_iter()
            .map(|participant| participant.agent_id)
            .collect()
    }
}
