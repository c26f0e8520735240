//! Wire frames: the nine kinds of ag2's `transport/frames.py`, byte-compatible with its
//! WebSocket encoding (`json.dumps(encode_frame(frame))`).
//!
//! ag2 decodes by key, not by type: `kind` picks the frame, every other key must be a field of
//! that frame, required fields must be present, and a nested `envelope` object must have exactly
//! the envelope's keys. Field *types* are not checked at decode time (the hub checks some of them
//! afterwards and answers `malformed ... frame`), so decoded fields stay raw JSON values here.
//! Encoding writes the fields in dataclass order with `kind` last, compact and ASCII-escaped.

use crate::json::{py_str_repr, write_compact_python_unsorted, write_json_string};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The largest message either side accepts (the `websockets` default `max_size`); a larger one
/// makes the receiver close the connection.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

/// A frame's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Client binds its connection to a registered identity.
    Hello,
    /// Hub accepts a hello.
    Welcome,
    /// Heartbeat.
    Ping,
    /// Heartbeat reply.
    Pong,
    /// Control-plane RPC.
    Request,
    /// RPC result.
    Response,
    /// Failure outside a request (handshake refusals, malformed frames).
    Error,
    /// One envelope delivered to one identity.
    Notify,
    /// Ack or nack of a notify.
    Receipt,
}

/// `(field, default)` in dataclass order; `None` marks a required field.
type Fields = &'static [(&'static str, Option<fn() -> Value>)];

fn empty_object() -> Value {
    Value::Object(Map::new())
}
fn null() -> Value {
    Value::Null
}
fn empty_string() -> Value {
    Value::String(String::new())
}
fn none_scheme() -> Value {
    Value::from("none")
}

impl FrameKind {
    /// The `kind` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Welcome => "welcome",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::Request => "request",
            FrameKind::Response => "response",
            FrameKind::Error => "error",
            FrameKind::Notify => "notify",
            FrameKind::Receipt => "receipt",
        }
    }

    fn parse(kind: &str) -> Option<FrameKind> {
        Some(match kind {
            "hello" => FrameKind::Hello,
            "welcome" => FrameKind::Welcome,
            "ping" => FrameKind::Ping,
            "pong" => FrameKind::Pong,
            "request" => FrameKind::Request,
            "response" => FrameKind::Response,
            "error" => FrameKind::Error,
            "notify" => FrameKind::Notify,
            "receipt" => FrameKind::Receipt,
            _ => return None,
        })
    }

    fn class(self) -> &'static str {
        match self {
            FrameKind::Hello => "HelloFrame",
            FrameKind::Welcome => "WelcomeFrame",
            FrameKind::Ping => "PingFrame",
            FrameKind::Pong => "PongFrame",
            FrameKind::Request => "RequestFrame",
            FrameKind::Response => "ResponseFrame",
            FrameKind::Error => "ErrorFrame",
            FrameKind::Notify => "NotifyFrame",
            FrameKind::Receipt => "ReceiptFrame",
        }
    }

    fn fields(self) -> Fields {
        match self {
            FrameKind::Hello => &[
                ("name", None),
                ("auth_scheme", Some(none_scheme)),
                ("auth_claim", Some(empty_object)),
                ("since_envelope_id", Some(null)),
            ],
            FrameKind::Welcome => &[("endpoint_id", None), ("hub_time", None)],
            FrameKind::Ping | FrameKind::Pong => &[],
            FrameKind::Request => &[
                ("request_id", None),
                ("op", None),
                ("params", Some(empty_object)),
            ],
            FrameKind::Response => &[
                ("request_id", None),
                ("ok", None),
                ("result", Some(null)),
                ("error_code", Some(empty_string)),
                ("error_message", Some(empty_string)),
            ],
            FrameKind::Error => &[
                ("code", None),
                ("message", None),
                ("envelope_id", Some(null)),
            ],
            FrameKind::Notify => &[("envelope", None), ("recipient_id", Some(empty_string))],
            FrameKind::Receipt => &[
                ("envelope_id", None),
                ("status", None),
                ("recipient_id", Some(empty_string)),
                ("channel_id", Some(empty_string)),
                ("reason", Some(empty_string)),
            ],
        }
    }
}

/// The envelope's fields in dataclass order; the first five are required.
pub(crate) const ENVELOPE_FIELDS: &[&str] = &[
    "channel_id",
    "sender_id",
    "audience",
    "event_type",
    "event_data",
    "envelope_id",
    "task_id",
    "causation_id",
    "trace_id",
    "priority",
    "depth",
    "idempotency_key",
    "created_at",
    "ttl_seconds",
];
pub(crate) const ENVELOPE_REQUIRED: usize = 5;

/// A decoded (or to-be-encoded) frame: its kind and every field, defaults filled in, in
/// dataclass order.
///
/// Two frames are equal when their kinds and fields are, a response's `result` compared as the
/// JSON value it stands for, however it is held.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The kind.
    pub kind: FrameKind,
    fields: Vec<(&'static str, Value)>,
    /// A response's `result` when it is shared rather than owned: a read-only record the hub
    /// hands to many readers (a WAL read), which a frame carried without encoding need not copy.
    shared_result: Option<Arc<Value>>,
    /// A response's `result` held as shared records and written out only when the frame is
    /// encoded (or read as a value, see [`DeferredResult`]).
    deferred_result: Option<Deferred>,
}

/// A response `result` built from shared, read-only records only when it is needed: a large
/// answer (`list_agents` over thousands of agents) costs its producer a handful of reference
/// counts, and whoever encodes the frame (a connection's writer, off the hub's loop) pays for
/// the text.
pub trait DeferredResult: Send + Sync + std::fmt::Debug {
    /// The result as a JSON value.
    fn value(&self) -> Value;

    /// Appends the result as `json.dumps` prints it; the same text as
    /// `write_compact_python_unsorted(out, &self.value())`.
    fn write(&self, out: &mut String);

    /// About how many bytes [`DeferredResult::write`] appends.
    fn size_hint(&self) -> usize {
        0
    }
}

/// A deferred result and its value once something read it.
#[derive(Clone, Debug)]
struct Deferred {
    result: Arc<dyn DeferredResult>,
    value: std::sync::OnceLock<Value>,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.kind == other.kind
            && self.fields.len() == other.fields.len()
            && self
                .fields
                .iter()
                .zip(&other.fields)
                .all(|((a, _), (b, _))| a == b && self.get(a) == other.get(b))
    }
}

/// Why a message is not a frame. ag2 logs it and drops the message; the connection stays open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Over [`FRAME_BYTES_MAX`]: the receiver closes the connection.
    #[error("message of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
    /// Not JSON, not an object, an unknown kind, or keys that do not fit the frame.
    #[error("ws frame decode failed: {0}")]
    Undecodable(String),
}

impl Frame {
    /// A frame of `kind` from `(field, value)` pairs; missing fields take their defaults.
    ///
    /// # Panics
    /// On a field the kind does not have, or a missing required one: frames built in code are
    /// bugs if they do not fit.
    pub fn new(kind: FrameKind, values: Vec<(&str, Value)>) -> Frame {
        let mut map: Map<String, Value> = values
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let frame =
            Frame::from_fields(kind, &mut map).expect("frames built in code fit their kind");
        assert!(map.is_empty(), "unknown fields for {kind:?}: {map:?}");
        frame
    }

    fn from_fields(kind: FrameKind, map: &mut Map<String, Value>) -> Result<Frame, String> {
        let class = kind.class();
        if let Some(extra) = map
            .keys()
            .find(|key| !kind.fields().iter().any(|(name, _)| name == key))
        {
            return Err(format!(
                "{class}.__init__() got an unexpected keyword argument {}",
                py_str_repr(extra)
            ));
        }
        let missing: Vec<&str> = kind
            .fields()
            .iter()
            .filter(|(name, default)| default.is_none() && !map.contains_key(*name))
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(crate::json::py_missing_args(
                &format!("{class}.__init__()"),
                &missing,
            ));
        }
        let fields = kind
            .fields()
            .iter()
            .map(|(name, default)| {
                let value = map
                    .shift_remove(*name)
                    .unwrap_or_else(|| default.expect("checked above")());
                (*name, value)
            })
            .collect();
        Ok(Frame {
            kind,
            fields,
            shared_result: None,
            deferred_result: None,
        })
    }

    /// A `response` whose `result` is shared (see [`Frame::take_result`]).
    pub fn with_shared_result(mut self, result: Arc<Value>) -> Frame {
        if self.kind == FrameKind::Response {
            self.shared_result = Some(result);
        }
        self
    }

    /// A `response` whose `result` is deferred (see [`DeferredResult`]).
    pub fn with_deferred_result(mut self, result: Arc<dyn DeferredResult>) -> Frame {
        if self.kind == FrameKind::Response {
            self.deferred_result = Some(Deferred {
                result,
                value: std::sync::OnceLock::new(),
            });
        }
        self
    }

    /// About how many bytes [`Frame::encode`] writes for a deferred result (0 without one): what
    /// a writer looks at to encode a large answer away from its sockets' tasks.
    pub fn deferred_size_hint(&self) -> usize {
        self.deferred_result
            .as_ref()
            .map_or(0, |deferred| deferred.result.size_hint())
    }

    /// Moves a response's `result` out, shared, deferred or not.
    pub fn take_result(&mut self) -> Arc<Value> {
        if let Some(deferred) = self.deferred_result.take() {
            let value = deferred.value.into_inner();
            return Arc::new(value.unwrap_or_else(|| deferred.result.value()));
        }
        match self.shared_result.take() {
            Some(shared) => shared,
            None => Arc::new(self.take("result")),
        }
    }

    /// Moves a field's value out, leaving `null`.
    ///
    /// # Panics
    /// When `kind` has no such field: a bug in the caller.
    pub fn take(&mut self, field: &str) -> Value {
        self.fields
            .iter_mut()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| std::mem::take(value))
            .unwrap_or_else(|| panic!("{:?} frames have no field {field}", self.kind))
    }

    /// A field's value (defaults included).
    ///
    /// # Panics
    /// When `kind` has no such field: a bug in the caller.
    pub fn get(&self, field: &str) -> &Value {
        if let (Some(deferred), "result") = (&self.deferred_result, field) {
            return deferred.value.get_or_init(|| deferred.result.value());
        }
        if let (Some(shared), "result") = (&self.shared_result, field) {
            return shared;
        }
        self.fields
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("{:?} frames have no field {field}", self.kind))
    }

    /// `json.dumps(encode_frame(frame))`: fields in dataclass order, then `kind`.
    pub fn encode(&self) -> String {
        let deferred = self.deferred_result.as_ref().map(|d| &d.result);
        let mut out = String::with_capacity(256 + deferred.map_or(0, |d| d.size_hint()));
        out.push('{');
        for (name, value) in &self.fields {
            write_json_string(&mut out, name);
            out.push_str(": ");
            match (deferred, &self.shared_result, *name) {
                (Some(deferred), _, "result") => deferred.write(&mut out),
                (None, Some(shared), "result") => write_compact_python_unsorted(&mut out, shared),
                _ => write_compact_python_unsorted(&mut out, value),
            }
            out.push_str(", ");
        }
        out.push_str("\"kind\": ");
        write_json_string(&mut out, self.kind.as_str());
        out.push('}');
        out
    }

    /// `decode_frame(json.loads(text))`, refusing what ag2 refuses.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] over 1 MiB; [`FrameError::Undecodable`] otherwise.
    pub fn decode(text: &str) -> Result<Frame, FrameError> {
        if text.len() > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge(text.len()));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::Undecodable(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(FrameError::Undecodable("a frame is a JSON object".into()));
        };
        let kind = map.shift_remove("kind").unwrap_or(Value::Null);
        let Some(kind) = kind.as_str().and_then(FrameKind::parse) else {
            return Err(FrameError::Undecodable(format!(
                "unknown frame kind: {}",
                crate::json::py_repr(&kind)
            )));
        };
        if let Some(Value::Object(envelope)) = map.get("envelope") {
            check_envelope(envelope).map_err(FrameError::Undecodable)?;
        }
        Frame::from_fields(kind, &mut map).map_err(FrameError::Undecodable)
    }
}

/// `Envelope.from_dict`: exactly the envelope's keys, the first five required.
fn check_envelope(envelope: &Map<String, Value>) -> Result<(), String> {
    if let Some(extra) = envelope
        .keys()
        .find(|key| !ENVELOPE_FIELDS.contains(&key.as_str()))
    {
        return Err(format!(
            "Envelope.__init__() got an unexpected keyword argument {}",
            py_str_repr(extra)
        ));
    }
    let missing: Vec<&str> = ENVELOPE_FIELDS[..ENVELOPE_REQUIRED]
        .iter()
        .copied()
        .filter(|name| !envelope.contains_key(*name))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(crate::json::py_missing_args(
            "Envelope.__init__()",
            &missing,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_like_ag2() {
        // The examples the 1.2.1 encoder printed (transport spec §3.2).
        let hello = Frame::new(
            FrameKind::Hello,
            vec![("name", json!("bob")), ("since_envelope_id", json!(""))],
        );
        assert_eq!(
            hello.encode(),
            r#"{"name": "bob", "auth_scheme": "none", "auth_claim": {}, "since_envelope_id": "", "kind": "hello"}"#
        );
        assert_eq!(
            Frame::new(FrameKind::Ping, vec![]).encode(),
            r#"{"kind": "ping"}"#
        );
        let response = Frame::new(
            FrameKind::Response,
            vec![
                ("request_id", json!("r1")),
                ("ok", json!(false)),
                ("error_code", json!("not_found")),
                ("error_message", json!("agent not found: bob")),
            ],
        );
        assert_eq!(
            response.encode(),
            r#"{"request_id": "r1", "ok": false, "result": null, "error_code": "not_found", "error_message": "agent not found: bob", "kind": "response"}"#
        );
        let receipt = Frame::new(
            FrameKind::Receipt,
            vec![
                ("envelope_id", json!("e1")),
                ("status", json!("ack")),
                ("recipient_id", json!("b1")),
                ("channel_id", json!("c1")),
            ],
        );
        assert_eq!(
            receipt.encode(),
            r#"{"envelope_id": "e1", "status": "ack", "recipient_id": "b1", "channel_id": "c1", "reason": "", "kind": "receipt"}"#
        );
        let error = Frame::new(
            FrameKind::Error,
            vec![("code", json!("auth_failed")), ("message", json!("x"))],
        );
        assert_eq!(
            error.encode(),
            r#"{"code": "auth_failed", "message": "x", "envelope_id": null, "kind": "error"}"#
        );
    }

    #[test]
    fn decodes_keys_strictly_and_fills_defaults() {
        let hello = Frame::decode(r#"{"kind": "hello", "name": "bob"}"#).expect("decodes");
        assert_eq!(
            (hello.get("auth_scheme"), hello.get("auth_claim")),
            (&json!("none"), &json!({}))
        );
        assert_eq!(hello.get("since_envelope_id"), &Value::Null);
        // Types are not checked at decode time: the hub reports them as malformed later.
        let odd = Frame::decode(r#"{"kind": "hello", "name": ["x"]}"#).expect("decodes");
        assert_eq!(odd.get("name"), &json!(["x"]));
        let cases = [
            (r#"{"kind": "ping", "x": 1}"#, "PingFrame.__init__() got an unexpected keyword argument 'x'"),
            (r#"{"kind": "hello"}"#, "HelloFrame.__init__() missing 1 required positional argument: 'name'"),
            (r#"{"kind": "shout"}"#, "unknown frame kind: 'shout'"),
            (r#"{"name": "bob"}"#, "unknown frame kind: None"),
            (
                r#"{"kind": "receipt"}"#,
                "ReceiptFrame.__init__() missing 2 required positional arguments: 'envelope_id' and 'status'",
            ),
            (
                r#"{"kind": "notify", "envelope": {"channel_id": "c", "bogus": 1}}"#,
                "Envelope.__init__() got an unexpected keyword argument 'bogus'",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(
                Frame::decode(text),
                Err(FrameError::Undecodable(message.to_string())),
                "{text}"
            );
        }
        assert!(matches!(
            Frame::decode("[1]"),
            Err(FrameError::Undecodable(_))
        ));
        assert!(matches!(
            Frame::decode("not json"),
            Err(FrameError::Undecodable(_))
        ));
        let huge = format!(
            r#"{{"kind": "ping", "pad": "{}"}}"#,
            "x".repeat(FRAME_BYTES_MAX)
        );
        assert!(matches!(Frame::decode(&huge), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn notify_round_trips_with_the_envelope_in_dataclass_order() {
        let envelope = json!({
            "channel_id": "c1", "sender_id": "a1", "audience": ["b1"], "event_type": "ag2.msg.text",
            "event_data": {"text": "hi é"}, "envelope_id": "e1", "task_id": null, "causation_id": null,
            "trace_id": null, "priority": "normal", "depth": 0, "idempotency_key": null,
            "created_at": "2026-01-01T00:00:00+00:00", "ttl_seconds": null
        });
        let notify = Frame::new(
            FrameKind::Notify,
            vec![("envelope", envelope), ("recipient_id", json!("b1"))],
        );
        let text = notify.encode();
        assert!(text.starts_with(
            r#"{"envelope": {"channel_id": "c1", "sender_id": "a1", "audience": ["b1"]"#
        ));
        assert!(text.contains(r#""text": "hi \u00e9""#));
        assert!(text.ends_with(r#""ttl_seconds": null}, "recipient_id": "b1", "kind": "notify"}"#));
        assert_eq!(Frame::decode(&text), Ok(notify));
    }
}
