//! `workflow`: N-party channel driven by a transition graph (`knobs.graph`). Substantive events
//! are `ag2.msg.text` and `ag2.packet`; only the expected speaker may send them (anyone may when
//! the expected speaker is empty). A packet's `routing` can finish the channel or hand off to any
//! target, unvalidated, as in ag2. `ag2.context.set` updates context variables at any time.

use super::graph::{py_iterate, Context, Graph};
use super::{AdapterResult, ExpectedTurn};
use crate::hub::channel::ChannelMetadata;
use crate::ids::{AgentId, EnvelopeId};
use crate::json::py_type_name;
use crate::json::{py_repr, py_truthy};
use crate::proto::ErrorKind;
use crate::proto::{Envelope, EventType, HubError};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Folded state of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowState {
    /// Participant ids sorted by `order`.
    pub order: Vec<AgentId>,
    /// The expected speaker; `None` once a finish or terminate decided the channel closes.
    pub expected: Option<Value>,
    /// The last substantive sender.
    pub last_speaker: Option<AgentId>,
    /// The last substantive envelope.
    pub last_envelope: Option<EnvelopeId>,
    /// Substantive envelopes accepted so far.
    pub turn_count: i64,
    /// The reason the channel closes with when `expected` becomes `None`.
    pub pending_close_reason: String,
    /// The creator, for `revert_to_initiator`.
    pub creator: AgentId,
    /// The graph, loaded once at creation.
    pub graph: Arc<Graph>,
    /// Context variables (`knobs.context_vars`, then `ag2.context.set` and packet updates).
    pub context_vars: Map<String, Value>,
}

/// Checks and loads the graph knob.
pub(super) fn validate_create(metadata: &ChannelMetadata) -> Result<Graph, HubError> {
    if metadata.participants.len() < 2 {
        return Err(HubError::protocol(format!(
            "workflow requires at least 2 participants, got {}",
            metadata.participants.len()
        )));
    }
    let graph = load_graph(metadata)?;
    let mut ids: Vec<String> = metadata
        .participants
        .iter()
        .map(|p| p.agent_id.to_string())
        .collect();
    if !ids
        .iter()
        .any(|id| graph.initial_speaker.as_str() == Some(id))
    {
        ids.sort();
        return Err(HubError::protocol(format!(
            "workflow initial_speaker {} not in participants {}",
            py_repr(&graph.initial_speaker),
            py_repr(&Value::from(ids))
        )));
    }
    Ok(graph)
}

fn load_graph(metadata: &ChannelMetadata) -> Result<Graph, HubError> {
    let Some(Value::Object(data)) = metadata.knobs.get("graph") else {
        return Err(HubError::protocol(
            "workflow requires knobs['graph'] as a dict — call TransitionGraph.to_dict() before passing",
        ));
    };
    Graph::load(data)
}

pub(super) fn initial_state(metadata: &ChannelMetadata) -> Result<WorkflowState, HubError> {
    let graph = load_graph(metadata)?;
    let order = metadata.order();
    if !order
        .iter()
        .any(|id| graph.initial_speaker.as_str() == Some(id.to_string().as_str()))
    {
        let ids: Vec<String> = order.iter().map(ToString::to_string).collect();
        return Err(HubError::protocol(format!(
            "workflow initial_speaker {} not in participants {}",
            py_repr(&graph.initial_speaker),
            py_repr(&Value::from(ids))
        )));
    }
    let context_vars = match metadata.knobs.get("context_vars") {
        None => Map::new(),
        Some(Value::Object(vars)) => vars.clone(),
        Some(_) => {
            return Err(HubError::protocol(
                "workflow knobs['context_vars'] must be a dict if provided",
            ))
        }
    };
    Ok(WorkflowState {
        order,
        expected: Some(graph.initial_speaker.clone()),
        last_speaker: None,
        last_envelope: None,
        turn_count: 0,
        pending_close_reason: String::new(),
        creator: metadata.creator_id,
        graph: Arc::new(graph),
        context_vars,
    })
}

fn is_substantive(event_type: &str) -> bool {
    event_type == EventType::TEXT || event_type == EventType::PACKET
}

impl WorkflowState {
    pub(super) fn validate_send(
        &self,
        metadata: &ChannelMetadata,
        envelope: &Envelope,
    ) -> Result<(), HubError> {
        if envelope.event_type == EventType::CONTEXT_SET {
            if !metadata.has_participant(envelope.sender_id) {
                return Err(HubError::protocol(format!(
                    "workflow '{}' only accepts EV_CONTEXT_SET from participants, got '{}'",
                    metadata.channel_id, envelope.sender_id
                )));
            }
            return Ok(());
        }
        if !is_substantive(&envelope.event_type) {
            return Ok(());
        }
        match &self.expected {
            Some(expected)
                if py_truthy(expected)
                    && expected.as_str() != Some(&envelope.sender_id.to_string()) =>
            {
                Err(HubError::protocol(format!(
                    "workflow '{}' expects {} to speak, got '{}'",
                    metadata.channel_id,
                    py_repr(expected),
                    envelope.sender_id
                )))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn fold(&mut self, envelope: &Envelope) -> Result<(), HubError> {
        if envelope.event_type == EventType::CONTEXT_SET {
            let mut vars = self.context_vars.clone();
            apply_updates(&mut vars, &envelope.event_data)?;
            self.context_vars = vars;
            return Ok(());
        }
        if !is_substantive(&envelope.event_type) {
            return Ok(());
        }
        let mut vars = self.context_vars.clone();
        let mut routing = Map::new();
        if envelope.event_type == EventType::PACKET {
            if let Some(updates) = envelope
                .event_data
                .get("context_updates")
                .filter(|v| py_truthy(v))
            {
                apply_updates(&mut vars, as_dict(updates)?)?;
            }
            if let Some(value) = envelope.event_data.get("routing").filter(|v| py_truthy(v)) {
                routing = as_dict(value)?.clone();
            }
        }
        let sender = envelope.sender_id.to_string();
        let order: Vec<String> = self.order.iter().map(ToString::to_string).collect();
        let creator = self.creator.to_string();
        let kind = routing.get("kind");
        let (expected, close_reason) = if kind.and_then(Value::as_str) == Some("finish") {
            let reason = routing
                .get("reason")
                .filter(|v| py_truthy(v))
                .map_or("finished".to_string(), text_of);
            (None, reason)
        } else if let Some(target) = routing
            .get("target")
            .filter(|t| kind.and_then(Value::as_str) == Some("handoff") && py_truthy(t))
        {
            (Some(target.clone()), String::new())
        } else {
            let context = Context {
                order: &order,
                sender: &sender,
                creator: &creator,
                context_vars: &vars,
                packet_tool: routing.get("tool"),
            };
            let decision = self.graph.select(&context);
            (decision.next_speaker, decision.close_reason)
        };
        self.context_vars = vars;
        self.last_speaker = Some(envelope.sender_id);
        self.last_envelope = envelope.envelope_id;
        self.turn_count += 1;
        self.expected = expected;
        self.pending_close_reason = close_reason;
        Ok(())
    }

    pub(super) fn on_accepted(&self, envelope: &Envelope) -> AdapterResult {
        if !is_substantive(&envelope.event_type) {
            return AdapterResult::default();
        }
        if self.expected.is_none() {
            let reason = if self.pending_close_reason.is_empty() {
                "workflow_terminated".to_string()
            } else {
                self.pending_close_reason.clone()
            };
            return AdapterResult {
                close_reason: Some(reason),
            };
        }
        match self.graph.max_turns {
            Some(max_turns) if self.turn_count >= max_turns => AdapterResult {
                close_reason: Some("max_turns".to_string()),
            },
            _ => AdapterResult::default(),
        }
    }

    pub(super) fn expected_next(&self) -> Option<ExpectedTurn> {
        self.expected.as_ref().map(|speaker| ExpectedTurn {
            speaker: speaker.clone(),
            trigger: self.last_envelope,
        })
    }
}

/// A close reason that ag2 would carry as an arbitrary value, as text.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn as_dict(value: &Value) -> Result<&Map<String, Value>, HubError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(HubError::new(
            ErrorKind::Attribute,
            format!("'{}' object has no attribute 'get'", py_type_name(other)),
        )),
    }
}

/// ag2's context update: pop every key of `delete`, then `dict.update(set)`.
fn apply_updates(
    vars: &mut Map<String, Value>,
    updates: &Map<String, Value>,
) -> Result<(), HubError> {
    if let Some(delete) = updates.get("delete").filter(|v| py_truthy(v)) {
        for key in py_iterate(delete)? {
            match key {
                Value::String(key) => {
                    vars.shift_remove(&key);
                }
                Value::Array(_) => return Err(HubError::type_error("unhashable type: 'list'")),
                Value::Object(_) => return Err(HubError::type_error("unhashable type: 'dict'")),
                _ => {}
            }
        }
    }
    if let Some(set) = updates.get("set").filter(|v| py_truthy(v)) {
        match set {
            Value::Object(map) => {
                for (key, value) in map {
                    vars.insert(key.clone(), value.clone());
                }
            }
            Value::String(_) => {
                return Err(HubError::value_error(
                    "dictionary update sequence element #0 has length 1; 2 is required",
                ))
            }
            Value::Array(pairs) => {
                for (idx, pair) in pairs.iter().enumerate() {
                    match pair {
                        Value::Array(items) if items.len() == 2 => {
                            let key = match &items[0] {
                                Value::String(key) => key.clone(),
                                other => other.to_string(),
                            };
                            vars.insert(key, items[1].clone());
                        }
                        _ => {
                            return Err(HubError::type_error(format!(
                                "cannot convert dictionary update sequence element #{idx} to a sequence"
                            )))
                        }
                    }
                }
            }
            other => {
                return Err(HubError::type_error(format!(
                    "'{}' object is not iterable",
                    py_type_name(other)
                )))
            }
        }
    }
    Ok(())
}
