//! ag2's default notify handler (`client/handlers.py`), split at the point where the real one
//! awaits the model: [`react`] is everything before `Agent.ask` (invite acks, the state check,
//! causation dedupe, the `can_send` probe, the usable-input check) and [`finish_turn`] everything
//! after it (the adapter's round envelope, the post, turn-failure reports).

use super::{HandlerMode, ToolRun, TurnOutcome};
use crate::hub::adapter::graph::Graph;
use crate::hub::adapter::{AdapterKind, AdapterState};
use crate::hub::channel::ChannelState;
use crate::hub::Hub;
use crate::ids::AgentId;
use crate::proto::envelope::map_of;
use crate::proto::{Envelope, EventType};
use crate::time::Now;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a delivery makes the handler do before any model call.
#[derive(Clone, Debug, PartialEq)]
pub enum Reaction {
    /// Nothing.
    Ignore,
    /// Post this `invite.ack` (errors are suppressed, as in ag2).
    Ack(Box<Envelope>),
    /// Run a model turn on this envelope.
    Turn,
}

/// The handler's work up to the model call, for `agent` receiving `envelope`.
pub fn react(hub: &Hub, agent: AgentId, mode: HandlerMode, envelope: &Envelope) -> Reaction {
    if mode == HandlerMode::Silent {
        return Reaction::Ignore;
    }
    if envelope.event_type == EventType::CHANNEL_INVITE {
        let mut ack = Envelope::new(
            envelope.channel_id,
            agent,
            None,
            EventType::CHANNEL_INVITE_ACK,
            map_of([("channel_id", Value::String(envelope.channel_id.to_string()))]),
        );
        ack.causation_id = Some(envelope.id_text());
        return Reaction::Ack(Box::new(ack));
    }
    if mode == HandlerMode::AckOnly || EventType::is_protocol(&envelope.event_type) {
        return Reaction::Ignore;
    }
    let Ok(metadata) = hub.get_channel(envelope.channel_id) else {
        return Reaction::Ignore;
    };
    if metadata.state != ChannelState::Active {
        return Reaction::Ignore;
    }
    if hub
        .find_envelope_by_causation(envelope.channel_id, agent, &envelope.id_text())
        .is_some()
    {
        return Reaction::Ignore;
    }
    if !hub.can_send(envelope.channel_id, agent, None) {
        return Reaction::Ignore;
    }
    if !has_turn_input(AdapterKind::of(metadata), envelope, agent) {
        return Reaction::Ignore;
    }
    Reaction::Turn
}

/// Whether the view renders `envelope` into a non-empty prompt for `agent` (ag2's
/// `_render_current_input`). Consulting and conversation render non-empty text only; discussion
/// and workflow prefix other senders with `[name]:`, so even an empty text from a peer is input.
pub fn has_turn_input(kind: AdapterKind, envelope: &Envelope, agent: AgentId) -> bool {
    if !envelope.visible_to(agent) {
        return false;
    }
    let own = envelope.sender_id == agent;
    let text = || match envelope.event_data.get("text") {
        None => Some(""),
        Some(Value::String(text)) => Some(text.as_str()),
        Some(_) => None,
    };
    match (kind, envelope.event_type.as_str()) {
        (_, EventType::TEXT) => match kind {
            AdapterKind::Consulting | AdapterKind::Conversation => {
                text().is_some_and(|t| !t.is_empty())
            }
            _ if own => text().is_some_and(|t| !t.is_empty()),
            _ => text().is_some(),
        },
        (AdapterKind::Workflow, EventType::PACKET) => {
            !packet_parts(&envelope.event_data).is_empty()
        }
        _ => false,
    }
}

/// ag2's `_packet_parts`: the handoff signal line and the body, each when present.
fn packet_parts(data: &Map<String, Value>) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(Value::Object(routing)) = data.get("routing") {
        if routing.get("kind").and_then(Value::as_str) == Some("handoff") {
            let tool = routing.get("tool").map_or("handoff".to_string(), py_str);
            let reason = routing.get("reason").map_or(String::new(), py_str);
            parts.push(if reason.is_empty() {
                format!("[Handed off via {tool}]")
            } else {
                format!("[Handed off via {tool}] {reason}")
            });
        }
    }
    if let Some(Value::String(body)) = data.get("body") {
        if !body.is_empty() {
            parts.push(body.clone());
        }
    }
    parts
}

/// Python's `str()` of a JSON-built value.
fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => crate::json::py_repr(other),
    }
}

/// The handler's work after the model answered: build the adapter's round envelope from the
/// current state, post it as a reply to `trigger`, and report any failure as `turn_failed`.
pub fn finish_turn(
    hub: &mut Hub,
    now: Now,
    agent: AgentId,
    trigger: &Arc<Envelope>,
    outcome: TurnOutcome,
) {
    let channel = trigger.channel_id;
    let body = match outcome.reply {
        Ok(body) => body,
        Err(failure) => {
            hub.report_turn_failure(now, channel, agent, &trigger.id_text(), &failure);
            return;
        }
    };
    let graph = match hub.adapter_state(channel) {
        Some(AdapterState::Workflow(state)) => Some(&*state.graph),
        _ => None,
    };
    let round = Round {
        workflow: graph,
        names: hub.name_to_id(),
    };
    let Some(reply) = round.envelope(agent, trigger, &body, &outcome.tools) else {
        return;
    };
    if let Err(failure) = hub.post_envelope(now, reply) {
        hub.report_turn_failure(now, channel, agent, &trigger.id_text(), &failure);
    }
}

/// What the adapter's `build_round_envelope` reads besides the turn itself: the workflow graph
/// (for workflow channels) and the name directory handoff targets resolve through (the hub's in
/// process, the client's name cache in remote mode).
#[derive(Clone, Copy, Debug)]
pub struct Round<'a> {
    /// The channel's transition graph, for a workflow channel; `None` for the other adapters.
    pub workflow: Option<&'a Graph>,
    /// Name to agent id.
    pub names: &'a BTreeMap<String, AgentId>,
}

impl Round<'_> {
    /// The round envelope replying to `trigger` (its `causation_id` set), or `None` when the
    /// turn posts nothing: text for consulting, conversation and discussion (none when the body
    /// is empty); a packet for workflow.
    pub fn envelope(
        &self,
        agent: AgentId,
        trigger: &Envelope,
        body: &str,
        tools: &[ToolRun],
    ) -> Option<Envelope> {
        let channel = trigger.channel_id;
        let mut envelope = match self.workflow {
            Some(graph) => {
                let routing =
                    resolve_routing(self.names, tools, graph.tool_called_names().collect());
                let text_only = routing.get("kind").and_then(Value::as_str) == Some("text");
                if text_only && body.is_empty() {
                    return None;
                }
                let updates = map_of([
                    ("set", Value::Object(Map::new())),
                    ("delete", Value::Array(Vec::new())),
                ]);
                let data = map_of([
                    ("routing", Value::Object(routing)),
                    ("context_updates", Value::Object(updates)),
                    ("body", Value::from(body)),
                ]);
                Envelope::new(channel, agent, None, EventType::PACKET, data)
            }
            None if body.is_empty() => return None,
            None => Envelope::new(
                channel,
                agent,
                None,
                EventType::TEXT,
                map_of([("text", Value::from(body))]),
            ),
        };
        envelope.causation_id = Some(trigger.id_text());
        Some(envelope)
    }
}

/// ag2's `_resolve_routing`: the first tool call that returned a `Finish` or a `Handoff`, or
/// whose name a `tool_called` condition routes on; otherwise plain text.
fn resolve_routing(
    names: &BTreeMap<String, AgentId>,
    tools: &[ToolRun],
    tool_called: Vec<&Value>,
) -> Map<String, Value> {
    for run in tools {
        if let Some((reason, summary)) = &run.finish {
            return map_of([
                ("kind", Value::from("finish")),
                ("tool", Value::from(run.name.as_str())),
                ("reason", Value::from(reason.as_str())),
                ("summary", Value::from(summary.as_str())),
            ]);
        }
        if let Some((target, reason)) = &run.handoff {
            // ag2: `target if target in name_to_id.values() else name_to_id.get(target, target)`.
            let known_id = names.values().any(|id| id.to_string() == *target);
            let resolved = if known_id {
                target.clone()
            } else {
                names
                    .get(target)
                    .map_or(target.clone(), ToString::to_string)
            };
            return map_of([
                ("kind", Value::from("handoff")),
                ("tool", Value::from(run.name.as_str())),
                ("reason", Value::from(reason.as_str())),
                ("target", Value::from(resolved)),
            ]);
        }
        if tool_called
            .iter()
            .any(|name| name.as_str() == Some(run.name.as_str()))
        {
            return map_of([
                ("kind", Value::from("handoff")),
                ("tool", Value::from(run.name.as_str())),
                ("reason", Value::from(run.call_reason.as_str())),
            ]);
        }
    }
    map_of([("kind", Value::from("text"))])
}
