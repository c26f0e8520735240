//! `Envelope`, the unit of channel traffic, and the event-type vocabulary with ag2's three
//! (different) classifications of event types.

use crate::ids::{AgentId, ChannelId, EnvelopeId};
use crate::time::Timestamp;
use serde_json::{Map, Value};

/// Event type strings. Free-form strings are allowed; these are the ones ag2 defines.
pub struct EventType;

impl EventType {
    /// `ag2.msg.text`: `{"text": str}`.
    pub const TEXT: &'static str = "ag2.msg.text";
    /// `ag2.packet`: a workflow round capture (`routing`, `context_updates`, `body`).
    pub const PACKET: &'static str = "ag2.packet";
    /// `ag2.channel.invite`, hub-posted to each invitee.
    pub const CHANNEL_INVITE: &'static str = "ag2.channel.invite";
    /// `ag2.channel.invite.ack`, posted by an invitee.
    pub const CHANNEL_INVITE_ACK: &'static str = "ag2.channel.invite.ack";
    /// `ag2.channel.invite.reject`, posted by an invitee (or anyone in the channel).
    pub const CHANNEL_INVITE_REJECT: &'static str = "ag2.channel.invite.reject";
    /// `ag2.channel.opened`, hub-posted on activation.
    pub const CHANNEL_OPENED: &'static str = "ag2.channel.opened";
    /// `ag2.channel.closed`, hub-appended on a terminal CLOSED transition.
    pub const CHANNEL_CLOSED: &'static str = "ag2.channel.closed";
    /// `ag2.channel.expired`, hub-appended on a TTL expiry.
    pub const CHANNEL_EXPIRED: &'static str = "ag2.channel.expired";
    /// `ag2.expectation.violated`, posted by the `notify_channel` handler.
    pub const EXPECTATION_VIOLATED: &'static str = "ag2.expectation.violated";
    /// `ag2.context.set`: `{"set": {...}, "delete": [...]}`, folded by workflows only.
    pub const CONTEXT_SET: &'static str = "ag2.context.set";
    /// `ag2.task.cancel_request`: the one event a non-participant may send.
    pub const TASK_CANCEL_REQUEST: &'static str = "ag2.task.cancel_request";

    /// The hub's "protocol event": `ag2.channel.*` or `ag2.task.*`. Protocol events are allowed
    /// while a channel is PENDING and are exempt from inbox caps and accounting.
    pub fn is_protocol(event_type: &str) -> bool {
        event_type.starts_with("ag2.channel.") || event_type.starts_with("ag2.task.")
    }

    /// The adapters' "channel protocol" events: the six `ag2.channel.*` constants, plus every
    /// `ag2.task.*` event. Adapters pass these through unchecked and never fold them.
    pub fn is_adapter_passthrough(event_type: &str) -> bool {
        matches!(
            event_type,
            EventType::CHANNEL_INVITE
                | EventType::CHANNEL_INVITE_ACK
                | EventType::CHANNEL_INVITE_REJECT
                | EventType::CHANNEL_OPENED
                | EventType::CHANNEL_CLOSED
                | EventType::CHANNEL_EXPIRED
        ) || event_type.starts_with("ag2.task.")
    }

    /// The expectations' "content event": not `ag2.channel.*`, not `ag2.task.*`, and not
    /// `ag2.expectation.violated`.
    pub fn is_content(event_type: &str) -> bool {
        !Self::is_protocol(event_type) && event_type != EventType::EXPECTATION_VIOLATED
    }
}

/// One envelope. Field for field ag2's `Envelope` dataclass; the hub stamps `envelope_id` and
/// `created_at` on accept, overwriting whatever the client put there.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// The channel this envelope belongs to.
    pub channel_id: ChannelId,
    /// The posting agent. Must be registered.
    pub sender_id: AgentId,
    /// `None` broadcasts to every participant but the sender; a list addresses explicitly.
    pub audience: Option<Vec<AgentId>>,
    /// See [`EventType`].
    pub event_type: String,
    /// The payload (a Python dict, insertion-ordered).
    pub event_data: Map<String, Value>,
    /// Hub-stamped on accept; `None` before (ag2's `""`).
    pub envelope_id: Option<EnvelopeId>,
    /// Carried, never interpreted by the hub except for task events.
    pub task_id: Option<String>,
    /// The envelope this one answers (free-form from clients; indexed by the hub).
    pub causation_id: Option<String>,
    /// W3C traceparent; hubsim never enables tracing, so it stays as sent.
    pub trace_id: Option<String>,
    /// `"background" | "normal" | "urgent"`; neither validated nor used.
    pub priority: String,
    /// Delegation hop count, checked against the sender's `delegation_depth`.
    pub depth: i64,
    /// Ignored by the hub.
    pub idempotency_key: Option<String>,
    /// Hub-stamped on accept; `None` before (ag2's `""`).
    pub created_at: Option<Timestamp>,
    /// Ignored by the hub (there is no per-envelope TTL).
    pub ttl_seconds: Option<i64>,
}

impl Envelope {
    /// A fresh, unstamped envelope with ag2's defaults (`priority="normal"`, `depth=0`).
    pub fn new(
        channel_id: ChannelId,
        sender_id: AgentId,
        audience: Option<Vec<AgentId>>,
        event_type: &str,
        event_data: Map<String, Value>,
    ) -> Envelope {
        Envelope {
            channel_id,
            sender_id,
            audience,
            event_type: event_type.to_string(),
            event_data,
            envelope_id: None,
            task_id: None,
            causation_id: None,
            trace_id: None,
            priority: "normal".to_string(),
            depth: 0,
            idempotency_key: None,
            created_at: None,
            ttl_seconds: None,
        }
    }

    /// ag2's `visible_to`: the sender, every agent of a broadcast, or an addressed agent.
    pub fn visible_to(&self, agent: AgentId) -> bool {
        self.sender_id == agent
            || self
                .audience
                .as_ref()
                .is_none_or(|list| list.contains(&agent))
    }

    /// The envelope id as text (`""` before it is stamped), as ag2 stores it.
    pub fn id_text(&self) -> String {
        self.envelope_id
            .map(|id| id.to_string())
            .unwrap_or_default()
    }

    /// The envelope as ag2's `asdict(envelope)`: every field, ids as 32-hex strings.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert(
            "channel_id".into(),
            Value::String(self.channel_id.to_string()),
        );
        map.insert(
            "sender_id".into(),
            Value::String(self.sender_id.to_string()),
        );
        map.insert(
            "audience".into(),
            match &self.audience {
                None => Value::Null,
                Some(list) => Value::Array(
                    list.iter()
                        .map(|id| Value::String(id.to_string()))
                        .collect(),
                ),
            },
        );
        map.insert("event_type".into(), Value::String(self.event_type.clone()));
        map.insert("event_data".into(), Value::Object(self.event_data.clone()));
        map.insert("envelope_id".into(), Value::String(self.id_text()));
        map.insert("task_id".into(), opt_string(&self.task_id));
        map.insert("causation_id".into(), opt_string(&self.causation_id));
        map.insert("trace_id".into(), opt_string(&self.trace_id));
        map.insert("priority".into(), Value::String(self.priority.clone()));
        map.insert("depth".into(), Value::from(self.depth));
        map.insert("idempotency_key".into(), opt_string(&self.idempotency_key));
        map.insert(
            "created_at".into(),
            Value::String(self.created_at.map(|at| at.to_string()).unwrap_or_default()),
        );
        map.insert(
            "ttl_seconds".into(),
            self.ttl_seconds.map_or(Value::Null, Value::from),
        );
        Value::Object(map)
    }
    /// Reads an envelope as the hub sends it (`notify`, `read_wal`): the inverse of
    /// [`Envelope::to_json`]. `None` when a field is missing or has the wrong shape (a client
    /// then has nothing it can act on).
    pub fn from_json(value: &Value) -> Option<Envelope> {
        let map = value.as_object()?;
        let text = |key: &str| -> Option<Option<String>> {
            match map.get(key) {
                None | Some(Value::Null) => Some(None),
                Some(Value::String(text)) => Some(Some(text.clone())),
                Some(_) => None,
            }
        };
        let audience = match map.get("audience")? {
            Value::Null => None,
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|item| item.as_str().and_then(AgentId::parse))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        };
        let id = map.get("envelope_id")?.as_str()?;
        let created_at = map.get("created_at")?.as_str()?;
        Some(Envelope {
            channel_id: ChannelId::parse(map.get("channel_id")?.as_str()?)?,
            sender_id: AgentId::parse(map.get("sender_id")?.as_str()?)?,
            audience,
            event_type: map.get("event_type")?.as_str()?.to_string(),
            event_data: map.get("event_data")?.as_object()?.clone(),
            envelope_id: if id.is_empty() {
                None
            } else {
                Some(EnvelopeId::parse(id)?)
            },
            task_id: text("task_id")?,
            causation_id: text("causation_id")?,
            trace_id: text("trace_id")?,
            priority: map.get("priority")?.as_str()?.to_string(),
            depth: map.get("depth")?.as_i64()?,
            idempotency_key: text("idempotency_key")?,
            created_at: if created_at.is_empty() {
                None
            } else {
                Some(Timestamp::parse_iso(created_at)?)
            },
            ttl_seconds: match map.get("ttl_seconds") {
                None | Some(Value::Null) => None,
                Some(value) => Some(value.as_i64()?),
            },
        })
    }
}

fn opt_string(value: &Option<String>) -> Value {
    value
        .as_ref()
        .map_or(Value::Null, |text| Value::String(text.clone()))
}

/// Builds a `Map` from `(key, value)` pairs, keeping their order.
pub fn map_of<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DEFAULT_EPOCH;

    #[test]
    fn from_json_reads_back_what_to_json_writes() {
        let mut envelope = Envelope::new(
            ChannelId(7),
            AgentId(1),
            Some(vec![AgentId(2), AgentId(3)]),
            EventType::TEXT,
            map_of([("text", Value::from("hi")), ("n", Value::from(2))]),
        );
        assert_eq!(
            Envelope::from_json(&envelope.to_json()),
            Some(envelope.clone())
        );
        envelope.envelope_id = Some(EnvelopeId(9));
        envelope.created_at = Timestamp::parse_iso(DEFAULT_EPOCH);
        envelope.causation_id = Some("abc".into());
        envelope.ttl_seconds = Some(5);
        envelope.depth = 2;
        assert_eq!(Envelope::from_json(&envelope.to_json()), Some(envelope));
    }

    #[test]
    fn from_json_refuses_a_malformed_envelope() {
        let good = Envelope::new(ChannelId(7), AgentId(1), None, "x", Map::new()).to_json();
        for (key, bad) in [
            ("channel_id", Value::from("nope")),
            ("audience", Value::from(3)),
            ("event_data", Value::from("x")),
            ("depth", Value::from("1")),
            ("created_at", Value::from("yesterday")),
        ] {
            let mut broken = good.clone();
            broken[key] = bad;
            assert_eq!(Envelope::from_json(&broken), None, "{key}");
        }
        let mut missing = good.as_object().cloned().unwrap_or_default();
        missing.remove("sender_id");
        assert_eq!(Envelope::from_json(&Value::Object(missing)), None);
    }
}
