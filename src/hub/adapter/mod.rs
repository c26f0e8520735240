//! Channel adapters: pure functions deciding who may speak and when a channel auto-closes.
//!
//! Four built-ins, dispatched by [`AdapterKind`]. Each is a set of pure functions over
//! `(metadata, state, envelope)`: `validate_create`, `initial_state`, `validate_send` (sees the
//! state before the fold), `fold`, `on_accepted` (sees the state after it) and `expected_next`.
//! The hub has already checked that the sender is a participant and, for non-protocol events,
//! that the channel is ACTIVE. Adapters never see IO, time or the registry.

pub mod consulting;
pub mod conversation;
pub mod discussion;
pub mod graph;
pub mod workflow;

#[cfg(test)]
mod tests;

use super::channel::{ChannelMetadata, Expectation, Manifest, ParticipantRole};
use crate::ids::{AgentId, EnvelopeId};
use crate::proto::{Envelope, EventType, HubError};
use serde_json::Value;

/// The registered adapters (`type@1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterKind {
    /// One question, one reply.
    Consulting,
    /// Free-form two-party exchange.
    Conversation,
    /// N-party round robin.
    Discussion,
    /// N-party transition graph.
    Workflow,
}

/// Folded adapter state, one variant per adapter.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterState {
    /// See [`consulting::ConsultingState`].
    Consulting(consulting::ConsultingState),
    /// See [`conversation::ConversationState`].
    Conversation(conversation::ConversationState),
    /// See [`discussion::DiscussionState`].
    Discussion(discussion::DiscussionState),
    /// See [`workflow::WorkflowState`].
    Workflow(workflow::WorkflowState),
}

/// What the adapter asks the hub to do after accepting an envelope. The built-ins only ever ask
/// for a close, so this is the close reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterResult {
    /// `Some(reason)`: transition to CLOSED with this reason (after dispatch and listeners).
    pub close_reason: Option<String>,
}

/// Who the protocol expects to act next, and the envelope that put the turn on them.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedTurn {
    /// The expected speaker as the adapter holds it: an agent id string, or whatever a workflow
    /// handoff named (ag2 does not validate handoff targets).
    pub speaker: Value,
    /// The envelope that made it their turn, if any.
    pub trigger: Option<EnvelopeId>,
}

const CONSULTING_EXPECTATIONS: &[Expectation] = &[
    Expectation {
        name: "acks_within",
        on_violation: "auto_close",
        seconds: 30,
    },
    Expectation {
        name: "reply_within",
        on_violation: "auto_close",
        seconds: 600,
    },
];
const CONVERSATION_EXPECTATIONS: &[Expectation] = &[Expectation {
    name: "max_silence",
    on_violation: "audit",
    seconds: 3600,
}];
const DISCUSSION_EXPECTATIONS: &[Expectation] = &[
    Expectation {
        name: "turn_within",
        on_violation: "warn",
        seconds: 120,
    },
    Expectation {
        name: "turn_within",
        on_violation: "hide",
        seconds: 600,
    },
];
const WORKFLOW_EXPECTATIONS: &[Expectation] = &[
    Expectation {
        name: "turn_within",
        on_violation: "warn",
        seconds: 120,
    },
    Expectation {
        name: "turn_within",
        on_violation: "auto_close",
        seconds: 600,
    },
];

/// The roles consulting and conversation declare.
const TWO_PARTY_ROLES: &[&str] = &["initiator", "respondent"];

static CONSULTING: Manifest = Manifest {
    manifest_type: "consulting",
    version: 1,
    participants_min: 2,
    participants_max: Some(2),
    roles: TWO_PARTY_ROLES,
    knobs_schema: &[],
    default_view_policy: "full_transcript",
    expectations: CONSULTING_EXPECTATIONS,
};
static CONVERSATION: Manifest = Manifest {
    manifest_type: "conversation",
    version: 1,
    participants_min: 2,
    participants_max: Some(2),
    roles: TWO_PARTY_ROLES,
    knobs_schema: &[],
    default_view_policy: "windowed_summary",
    expectations: CONVERSATION_EXPECTATIONS,
};
static DISCUSSION: Manifest = Manifest {
    manifest_type: "discussion",
    version: 1,
    participants_min: 2,
    participants_max: None,
    roles: &[],
    knobs_schema: &[("ordering", "str")],
    default_view_policy: "named_windowed_summary",
    expectations: DISCUSSION_EXPECTATIONS,
};
static WORKFLOW: Manifest = Manifest {
    manifest_type: "workflow",
    version: 1,
    participants_min: 2,
    participants_max: None,
    roles: &[],
    knobs_schema: &[("graph", "TransitionGraph")],
    default_view_policy: "named_windowed_summary",
    expectations: WORKFLOW_EXPECTATIONS,
};

impl AdapterKind {
    /// The adapter registered for `(manifest_type, version)`, if any.
    pub fn lookup(manifest_type: &str, version: i64) -> Option<AdapterKind> {
        if version != 1 {
            return None;
        }
        match manifest_type {
            "consulting" => Some(AdapterKind::Consulting),
            "conversation" => Some(AdapterKind::Conversation),
            "discussion" => Some(AdapterKind::Discussion),
            "workflow" => Some(AdapterKind::Workflow),
            _ => None,
        }
    }

    /// The adapter of a channel's manifest.
    pub fn of(metadata: &ChannelMetadata) -> AdapterKind {
        AdapterKind::lookup(metadata.manifest.manifest_type, metadata.manifest.version)
            .expect("every manifest comes from a registered adapter")
    }

    /// The adapter's manifest.
    pub fn manifest(self) -> &'static Manifest {
        match self {
            AdapterKind::Consulting => &CONSULTING,
            AdapterKind::Conversation => &CONVERSATION,
            AdapterKind::Discussion => &DISCUSSION,
            AdapterKind::Workflow => &WORKFLOW,
        }
    }

    /// Runs before anything is persisted; may refuse the channel.
    ///
    /// # Errors
    /// `ProtocolError` (and, for malformed workflow graphs, `KeyError`/`TypeError`) with ag2's
    /// messages.
    pub fn validate_create(self, metadata: &ChannelMetadata) -> Result<(), HubError> {
        match self {
            AdapterKind::Consulting => two_party_roles("consulting", metadata),
            AdapterKind::Conversation => two_party_roles("conversation", metadata),
            AdapterKind::Discussion => discussion::validate_create(metadata),
            AdapterKind::Workflow => workflow::validate_create(metadata).map(|_| ()),
        }
    }

    /// The empty state of a fresh channel.
    ///
    /// # Errors
    /// Workflow only: a bad graph or a non-dict `context_vars` knob (`ProtocolError`).
    pub fn initial_state(self, metadata: &ChannelMetadata) -> Result<AdapterState, HubError> {
        Ok(match self {
            AdapterKind::Consulting => AdapterState::Consulting(Default::default()),
            AdapterKind::Conversation => AdapterState::Conversation(Default::default()),
            AdapterKind::Discussion => {
                AdapterState::Discussion(discussion::initial_state(metadata))
            }
            AdapterKind::Workflow => AdapterState::Workflow(workflow::initial_state(metadata)?),
        })
    }
}

/// The role checks shared by consulting and conversation: an initiator, a respondent, exactly 2.
fn two_party_roles(kind: &str, metadata: &ChannelMetadata) -> Result<(), HubError> {
    let has = |role| metadata.participants.iter().any(|p| p.role == role);
    if !has(ParticipantRole::Initiator) {
        return Err(HubError::protocol(format!(
            "{kind} requires exactly one initiator"
        )));
    }
    if !has(ParticipantRole::Respondent) {
        return Err(HubError::protocol(format!(
            "{kind} requires exactly one respondent"
        )));
    }
    if metadata.participants.len() != 2 {
        return Err(HubError::protocol(format!(
            "{kind} requires exactly 2 participants, got {}",
            metadata.participants.len()
        )));
    }
    Ok(())
}

impl AdapterState {
    /// Refuses an envelope the protocol does not allow now. Sees the state before the fold.
    ///
    /// # Errors
    /// `ProtocolError` with ag2's message.
    pub fn validate_send(
        &self,
        metadata: &ChannelMetadata,
        envelope: &Envelope,
    ) -> Result<(), HubError> {
        if EventType::is_adapter_passthrough(&envelope.event_type) {
            return Ok(());
        }
        match self {
            AdapterState::Consulting(state) => state.validate_send(metadata, envelope),
            AdapterState::Conversation(state) => state.validate_send(metadata, envelope),
            AdapterState::Discussion(state) => state.validate_send(metadata, envelope),
            AdapterState::Workflow(state) => state.validate_send(metadata, envelope),
        }
    }

    /// Folds an accepted envelope into the state. The envelope is already stamped.
    ///
    /// # Errors
    /// Workflow only: a malformed `routing`, `context_updates` or `ag2.context.set` payload, which
    /// ag2 lets escape as a Python exception after the WAL append. The state is then unchanged.
    pub fn fold(&mut self, envelope: &Envelope) -> Result<(), HubError> {
        if EventType::is_adapter_passthrough(&envelope.event_type) {
            return Ok(());
        }
        match self {
            AdapterState::Consulting(state) => state.fold(envelope),
            AdapterState::Conversation(state) => state.fold(envelope),
            AdapterState::Discussion(state) => state.fold(envelope),
            AdapterState::Workflow(state) => return state.fold(envelope),
        }
        Ok(())
    }

    /// Decides post-accept transitions. Sees the state after the fold.
    pub fn on_accepted(&self, envelope: &Envelope) -> AdapterResult {
        match self {
            AdapterState::Consulting(state) => state.on_accepted(envelope),
            AdapterState::Workflow(state) => state.on_accepted(envelope),
            AdapterState::Conversation(_) | AdapterState::Discussion(_) => AdapterResult::default(),
        }
    }

    /// The participant the protocol expects next, if it names one.
    pub fn expected_next(&self, metadata: &ChannelMetadata) -> Option<ExpectedTurn> {
        match self {
            AdapterState::Consulting(state) => state.expected_next(metadata),
            AdapterState::Conversation(_) => None,
            AdapterState::Discussion(state) => Some(ExpectedTurn {
                speaker: Value::String(state.expected.to_string()),
                trigger: state.last_envelope,
            }),
            AdapterState::Workflow(state) => state.expected_next(),
        }
    }
}

/// `repr()` of an agent id, as adapters embed it in messages.
pub(crate) fn id_repr(id: AgentId) -> String {
    format!("'{id}'")
}
