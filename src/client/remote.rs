//! The transport core of ag2's `HubClient` in remote mode, sans-IO: RPC requests and their
//! responses, the hello handshake, notify demultiplexing, receipts, RPC timeouts and what a
//! dropped connection does to everything in flight.
//!
//! It speaks text frames ([`Frame`]) and hands its driver [`ClientEvent`]s; the driver runs
//! handlers (each notify its own task in ag2's remote mode) and answers with [`RemoteLink::receipt`].
//! Errors come back as ag2's client raises them: the four wire codes map to their exception
//! classes, any other code to a bare `NetworkError` (so `InboxFull` loses its type, as in ag2).

use crate::ids::{AgentId, IdGen};
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::{ErrorKind, HubError};
use crate::time::Instant;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// ag2's default `rpc_timeout` (30 s), in microseconds.
pub const RPC_TIMEOUT_MICROS: u64 = 30_000_000;

/// What the link tells its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// An RPC finished: its result, or the error ag2's client would raise.
    Response {
        /// The request it answers.
        request_id: String,
        /// The op that was called.
        op: String,
        /// `result` (shared: a WAL read may be handed to many readers), or the mapped error
        /// (`TimeoutError`, `RuntimeError("connection closed")`).
        result: Result<Arc<Value>, HubError>,
    },
    /// A hello finished.
    Handshake {
        /// The name it was for.
        name: String,
        /// The welcome's `endpoint_id`, or the mapped error.
        result: Result<String, HubError>,
    },
    /// An envelope for one of this connection's identities; answer with a receipt.
    Notify {
        /// The identity it is for.
        recipient: AgentId,
        /// The envelope as sent (an object with the envelope's 14 keys).
        envelope: Value,
    },
}

#[derive(Clone, Debug)]
struct Call {
    op: String,
    deadline: Instant,
}

/// One connection's client side. See the module docs.
#[derive(Clone, Debug)]
pub struct RemoteLink {
    ids: IdGen,
    rpc_timeout_micros: u64,
    calls: BTreeMap<String, Call>,
    /// Hellos in flight, oldest first: any welcome or error frame resolves the oldest (as in ag2).
    handshakes: VecDeque<(String, Instant)>,
    identities: BTreeSet<AgentId>,
    outgoing: VecDeque<Frame>,
    events: VecDeque<ClientEvent>,
    closed: bool,
}

/// ag2's `_error_from_code`.
pub fn error_from_code(code: &str, message: &str) -> HubError {
    let kind = match code {
        "not_found" => ErrorKind::NotFound,
        "access_denied" => ErrorKind::AccessDenied,
        "protocol_error" => ErrorKind::Protocol,
        "auth_failed" => ErrorKind::Auth,
        _ => return HubError::named("NetworkError", message),
    };
    HubError::new(kind, message)
}

impl RemoteLink {
    /// A link whose request ids come from `ids` (ag2 mints them with `make_id`).
    pub fn new(ids: IdGen, rpc_timeout_micros: u64) -> RemoteLink {
        RemoteLink {
            ids,
            rpc_timeout_micros,
            calls: BTreeMap::new(),
            handshakes: VecDeque::new(),
            identities: BTreeSet::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// Sends an RPC; its answer arrives as [`ClientEvent::Response`]. Returns the request id.
    pub fn call(&mut self, now: Instant, op: &str, params: Map<String, Value>) -> String {
        let request_id = format!("{:032x}", self.ids.next_raw());
        if self.closed {
            // ag2 "sends" into the dead socket and the call times out.
            self.calls.insert(
                request_id.clone(),
                Call {
                    op: op.to_string(),
                    deadline: self.deadline(now),
                },
            );
            return request_id;
        }
        let frame = Frame::new(
            FrameKind::Request,
            vec![
                ("request_id", json!(request_id)),
                ("op", json!(op)),
                ("params", Value::Object(params)),
            ],
        );
        self.outgoing.push_back(frame);
        self.calls.insert(
            request_id.clone(),
            Call {
                op: op.to_string(),
                deadline: self.deadline(now),
            },
        );
        request_id
    }

    fn deadline(&self, now: Instant) -> Instant {
        now.plus_micros(self.rpc_timeout_micros)
    }

    /// Sends a hello for `name`; `since` is the replay high-water mark (`None`: no replay).
    pub fn hello(
        &mut self,
        now: Instant,
        name: &str,
        auth_scheme: &str,
        claim: Map<String, Value>,
        since: Option<&str>,
    ) {
        let frame = Frame::new(
            FrameKind::Hello,
            vec![
                ("name", json!(name)),
                ("auth_scheme", json!(auth_scheme)),
                ("auth_claim", Value::Object(claim)),
                ("since_envelope_id", since.map_or(Value::Null, Value::from)),
            ],
        );
        if !self.closed {
            self.outgoing.push_back(frame);
        }
        self.handshakes
            .push_back((name.to_string(), self.deadline(now)));
    }

    /// Adds an identity to the demux table (after `register`, or before a hello so replayed
    /// notifies find it, as ag2's `attach` does).
    pub fn adopt(&mut self, agent: AgentId) {
        self.identities.insert(agent);
    }

    /// Identities this connection hosts.
    pub fn identities(&self) -> &BTreeSet<AgentId> {
        &self.identities
    }

    /// One text message from the hub. Undecodable messages are dropped, as in ag2.
    pub fn receive(&mut self, text: &str) {
        if let Ok(frame) = Frame::decode(text) {
            self.receive_frame(frame);
        }
    }

    /// One frame from the hub, for drivers that carry frames without encoding them.
    pub fn receive_frame(&mut self, mut frame: Frame) {
        match frame.kind {
            FrameKind::Response => self.on_response(&mut frame),
            FrameKind::Welcome => {
                let endpoint = frame
                    .get("endpoint_id")
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.resolve_handshake(Ok(endpoint));
            }
            FrameKind::Error => {
                let code = frame.get("code").as_str().unwrap_or_default();
                let message = frame.get("message").as_str().unwrap_or_default();
                self.resolve_handshake(Err(error_from_code(code, message)));
            }
            FrameKind::Notify => self.on_notify(&mut frame),
            _ => {}
        }
    }

    fn on_response(&mut self, frame: &mut Frame) {
        let Some(request_id) = frame.get("request_id").as_str().map(str::to_string) else {
            return;
        };
        // A late answer (the call already timed out) finds no waiter and is dropped.
        let Some(call) = self.calls.remove(&request_id) else {
            return;
        };
        let result = if frame.get("ok") == &Value::Bool(true) {
            Ok(frame.take_result())
        } else {
            let code = frame.get("error_code").as_str().unwrap_or_default();
            Err(error_from_code(
                code,
                frame.get("error_message").as_str().unwrap_or_default(),
            ))
        };
        self.events.push_back(ClientEvent::Response {
            request_id,
            op: call.op,
            result,
        });
    }

    fn resolve_handshake(&mut self, result: Result<String, HubError>) {
        if let Some((name, _)) = self.handshakes.pop_front() {
            self.events
                .push_back(ClientEvent::Handshake { name, result });
        }
    }

    fn on_notify(&mut self, frame: &mut Frame) {
        let envelope = frame.take("envelope");
        let recipient = frame.get("recipient_id").as_str().unwrap_or_default();
        let recipients: Vec<AgentId> = if !recipient.is_empty() {
            AgentId::parse(recipient).into_iter().collect()
        } else {
            match envelope.get("audience") {
                Some(Value::Array(audience)) => audience
                    .iter()
                    .filter_map(|a| a.as_str().and_then(AgentId::parse))
                    .collect(),
                _ => Vec::new(),
            }
        };
        for recipient in recipients
            .into_iter()
            .filter(|r| self.identities.contains(r))
        {
            self.events.push_back(ClientEvent::Notify {
                recipient,
                envelope: envelope.clone(),
            });
        }
    }

    /// Answers a delivered notify once its handler ran: `ack`, or `nack` with the handler's
    /// error. Nothing is sent for an envelope without an id or on a closed connection.
    pub fn receipt(&mut self, recipient: AgentId, envelope: &Value, outcome: Result<(), String>) {
        let id = envelope
            .get("envelope_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if id.is_empty() || self.closed {
            return;
        }
        let channel = envelope
            .get("channel_id")
            .cloned()
            .unwrap_or(Value::String(String::new()));
        let (status, reason) = match outcome {
            Ok(()) => ("ack", String::new()),
            Err(reason) => ("nack", reason),
        };
        let frame = Frame::new(
            FrameKind::Receipt,
            vec![
                ("envelope_id", json!(id)),
                ("status", json!(status)),
                ("recipient_id", json!(recipient.to_string())),
                ("channel_id", channel),
                ("reason", json!(reason)),
            ],
        );
        self.outgoing.push_back(frame);
    }

    /// The connection dropped: every call and hello in flight fails with
    /// `RuntimeError("connection closed")`; later calls time out (ag2 sends into the dead socket).
    pub fn closed(&mut self) {
        self.closed = true;
        self.outgoing.clear();
        let failure = HubError::runtime("connection closed");
        for (request_id, call) in std::mem::take(&mut self.calls) {
            self.events.push_back(ClientEvent::Response {
                request_id,
                op: call.op,
                result: Err(failure.clone()),
            });
        }
        for (name, _) in std::mem::take(&mut self.handshakes) {
            self.events.push_back(ClientEvent::Handshake {
                name,
                result: Err(failure.clone()),
            });
        }
    }

    /// Whether the connection dropped.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The earliest RPC or handshake deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.values().map(|call| call.deadline).min();
        let hellos = self.handshakes.iter().map(|(_, deadline)| *deadline).min();
        calls.into_iter().chain(hellos).min()
    }

    /// Fails every call and handshake whose deadline passed (`asyncio.TimeoutError`).
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = || HubError::named("TimeoutError", "");
        let expired: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, call)| call.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for request_id in expired {
            let call = self.calls.remove(&request_id).expect("listed above");
            self.events.push_back(ClientEvent::Response {
                request_id,
                op: call.op,
                result: Err(timeout()),
            });
        }
        while self
            .handshakes
            .front()
            .is_some_and(|(_, deadline)| *deadline <= now)
        {
            let (name, _) = self.handshakes.pop_front().expect("checked");
            self.events.push_back(ClientEvent::Handshake {
                name,
                result: Err(timeout()),
            });
        }
    }

    /// The next text message to send.
    pub fn poll_send(&mut self) -> Option<String> {
        self.outgoing.pop_front().map(|frame| frame.encode())
    }

    /// The next frame to send, for drivers that carry frames without encoding them.
    pub fn poll_send_frame(&mut self) -> Option<Frame> {
        self.outgoing.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
