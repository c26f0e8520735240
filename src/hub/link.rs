//! The hub's side of connections: endpoints, bindings, the hello handshake (NoAuth and
//! ApiKeyAuth), receipts and delivery cursors, replay after a hello, ping. Frames come in decoded
//! ([`Frame`]) and go out as [`Output::Frame`] / [`Output::Notify`]; control-plane requests go
//! to the RPC layer (`rpc`).

use super::{Hub, Output};
use crate::ids::{AgentId, EndpointId};
use crate::json::py_str_repr;
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::{ErrorKind, HubError};
use crate::time::Now;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The auth adapters a hub has registered (ag2's `AuthRegistry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// `NoAuth` (scheme `none`) is registered; it accepts every claim.
    pub no_auth: bool,
    /// `ApiKeyAuth` (scheme `api_key`) with its name-to-token map, when registered.
    pub api_keys: Option<BTreeMap<String, String>>,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            no_auth: true,
            api_keys: None,
        }
    }
}

impl AuthConfig {
    /// Validates `claim` for `name` under `scheme`, with ag2's messages.
    ///
    /// # Errors
    /// `AuthError` for an unknown scheme or a bad claim.
    pub fn validate(
        &self,
        scheme: &str,
        name: &str,
        claim: &Map<String, Value>,
    ) -> Result<(), HubError> {
        let auth = |message: String| HubError::new(ErrorKind::Auth, message);
        match (scheme, &self.api_keys) {
            ("none", _) if self.no_auth => Ok(()),
            ("api_key", Some(keys)) => {
                let Some(token) = claim
                    .get("token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                else {
                    return Err(auth(
                        "api_key claim missing required string field 'token'".into(),
                    ));
                };
                match keys.get(name) {
                    None => Err(auth(format!(
                        "no api_key registered for {}",
                        py_str_repr(name)
                    ))),
                    Some(expected) if !same_secret(expected, token) => {
                        Err(auth(format!("api_key mismatch for {}", py_str_repr(name))))
                    }
                    Some(_) => Ok(()),
                }
            }
            _ => Err(auth(format!(
                "unknown auth scheme: {}",
                py_str_repr(scheme)
            ))),
        }
    }
}

/// Compares two secrets in time that depends on their lengths only, as ag2's
/// `hmac.compare_digest`.
fn same_secret(expected: &str, given: &str) -> bool {
    let (expected, given) = (expected.as_bytes(), given.as_bytes());
    if expected.len() != given.len() {
        return false;
    }
    let difference = expected
        .iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

impl Hub {
    /// Registers a new connection (ag2's `attach_endpoint`).
    pub fn attach_endpoint(&mut self, endpoint: EndpointId) {
        self.endpoints.insert(endpoint);
    }

    /// A connection ended: its bindings go (ag2's `_cleanup_endpoint`).
    pub fn close_endpoint(&mut self, endpoint: EndpointId) {
        self.endpoints.remove(&endpoint);
        self.bindings.retain(|_, bound| *bound != endpoint);
    }

    /// Binds `agent` to `endpoint`; a binding to another connection is evicted (that connection
    /// stays open but stops receiving this agent's notifies).
    ///
    /// # Errors
    /// `NotFoundError` for an unattached endpoint or an unregistered agent.
    pub fn bind_endpoint(&mut self, endpoint: EndpointId, agent: AgentId) -> Result<(), HubError> {
        if !self.endpoints.contains(&endpoint) {
            return Err(HubError::not_found(format!(
                "endpoint not attached: {endpoint}"
            )));
        }
        if !self.agents.contains_key(&agent) {
            return Err(HubError::not_found(format!(
                "agent not registered: {agent}"
            )));
        }
        self.bindings.insert(agent, endpoint);
        Ok(())
    }

    /// The agents bound to `endpoint`, in id order.
    pub fn bound_to(&self, endpoint: EndpointId) -> Vec<AgentId> {
        self.bindings
            .iter()
            .filter(|(_, e)| **e == endpoint)
            .map(|(agent, _)| *agent)
            .collect()
    }

    /// ag2's `inbox_cursor`: the last envelope id `agent` acked in `channel` (`""` if none).
    pub fn inbox_cursor(&self, agent: AgentId, channel: &str) -> &str {
        self.cursors
            .get(&agent)
            .and_then(|c| c.get(channel))
            .map_or("", String::as_str)
    }

    /// ag2's `_dispatch_frame` for one decoded frame from `endpoint`: hello, receipt and ping are
    /// handled here, a request by the RPC layer; frames a client should not send (welcome,
    /// response, notify, error, pong) are ignored. What the hub says in return is queued
    /// ([`Hub::poll_output`], and [`Hub::poll_answer`] for a `create_channel` that waits for
    /// acks).
    pub fn handle_frame(&mut self, now: Now, endpoint: EndpointId, frame: Frame) {
        if let Some(field) = malformed_field(&frame) {
            let message = format!("malformed {} frame: {field}", frame.kind.as_str());
            self.send_error(endpoint, "protocol_error", &message);
            return;
        }
        match frame.kind {
            FrameKind::Request => self.handle_request(now, endpoint, &frame),
            FrameKind::Hello => self.on_hello(now, endpoint, &frame),
            FrameKind::Receipt => self.on_receipt(endpoint, &frame),
            FrameKind::Ping => self.send_frame(endpoint, Frame::new(FrameKind::Pong, vec![])),
            _ => {}
        }
    }

    fn send_frame(&mut self, endpoint: EndpointId, frame: Frame) {
        self.outputs.push_back(Output::Frame { endpoint, frame });
    }

    fn send_error(&mut self, endpoint: EndpointId, code: &str, message: &str) {
        self.send_frame(
            endpoint,
            Frame::new(
                FrameKind::Error,
                vec![("code", json!(code)), ("message", json!(message))],
            ),
        );
    }

    fn on_hello(&mut self, now: Now, endpoint: EndpointId, frame: &Frame) {
        let name = frame
            .get("name")
            .as_str()
            .expect("checked by malformed_field")
            .to_string();
        let Some(agent) = self.names.get(&name).copied() else {
            self.send_error(endpoint, "not_found", &format!("unknown name: {name}"));
            return;
        };
        let passport = &self.agents[&agent].passport;
        let scheme = frame
            .get("auth_scheme")
            .as_str()
            .expect("checked by malformed_field");
        let result = match frame.get("auth_claim") {
            Value::Object(claim) if scheme == passport.auth_scheme => {
                self.config.auth.validate(scheme, &name, claim)
            }
            Value::Object(_) => Err(HubError::new(
                ErrorKind::Auth,
                format!(
                    "auth scheme {} does not match {}'s registered scheme {}",
                    py_str_repr(scheme),
                    py_str_repr(&name),
                    py_str_repr(&passport.auth_scheme)
                ),
            )),
            _ => Err(HubError::new(
                ErrorKind::Auth,
                "auth_claim must be a JSON object",
            )),
        };
        if let Err(error) = result.and_then(|()| self.bind_endpoint(endpoint, agent)) {
            self.send_error(endpoint, error.wire_code(), &error.message);
            return;
        }
        let welcome = Frame::new(
            FrameKind::Welcome,
            vec![
                ("endpoint_id", json!(endpoint.to_string())),
                ("hub_time", json!(now.wall.to_string())),
            ],
        );
        self.send_frame(endpoint, welcome);
        if let Some(since) = frame.get("since_envelope_id").as_str() {
            self.replay(agent, since);
        }
    }

    /// ag2's `_replay_for_recipient`: for each PENDING or ACTIVE channel of `agent`, every WAL
    /// envelope above `max(cursor, since)` (string order) that the agent did not send and may see.
    /// Replay bypasses `inbound_from` and inbox counting, as in ag2.
    fn replay(&mut self, agent: AgentId, since: &str) {
        let Some(endpoint) = self.bindings.get(&agent).copied() else {
            return;
        };
        for channel in self.active.clone() {
            let entry = &self.channels[&channel];
            if !entry.metadata.has_participant(agent) {
                continue;
            }
            let cursor = self.inbox_cursor(agent, &channel.to_string());
            let high_water = if cursor > since {
                cursor.to_string()
            } else {
                since.to_string()
            };
            let replayed: Vec<_> = entry
                .wal
                .iter()
                .filter(|envelope| envelope.id_text().as_str() > high_water.as_str())
                .filter(|envelope| envelope.sender_id != agent)
                .filter(|envelope| {
                    envelope
                        .audience
                        .as_ref()
                        .is_none_or(|a| a.contains(&agent))
                })
                .cloned()
                .collect();
            for envelope in replayed {
                self.outputs.push_back(Output::Notify {
                    endpoint,
                    recipient: agent,
                    envelope,
                });
            }
        }
    }

    fn on_receipt(&mut self, endpoint: EndpointId, frame: &Frame) {
        let text = |field: &str| {
            frame
                .get(field)
                .as_str()
                .expect("checked by malformed_field")
                .to_string()
        };
        let Some(recipient) =
            AgentId::parse(&text("recipient_id")).filter(|a| self.agents.contains_key(a))
        else {
            return;
        };
        if self.bindings.get(&recipient) != Some(&endpoint) {
            return;
        }
        let (envelope, channel) = (text("envelope_id"), text("channel_id"));
        if text("status") == "ack" && !envelope.is_empty() && !channel.is_empty() {
            let cursors = self.cursors.entry(recipient).or_default();
            if cursors
                .get(&channel)
                .is_none_or(|current| envelope.as_str() > current.as_str())
            {
                cursors.insert(channel, envelope);
            }
        }
    }
}

/// ag2's `_malformed_field`: the first field of a hello, receipt or request whose JSON type is
/// wrong.
pub(super) fn malformed_field(frame: &Frame) -> Option<&'static str> {
    let fields: &[(&'static str, bool)] = match frame.kind {
        FrameKind::Hello => &[
            ("name", false),
            ("auth_scheme", false),
            ("since_envelope_id", true),
        ],
        FrameKind::Receipt => &[
            ("envelope_id", false),
            ("status", false),
            ("recipient_id", false),
            ("channel_id", false),
            ("reason", false),
        ],
        FrameKind::Request => {
            if !frame.get("params").is_object() {
                return Some("params");
            }
            &[("request_id", false), ("op", false)]
        }
        _ => return None,
    };
    fields
        .iter()
        .find(|(field, optional)| {
            let value = frame.get(field);
            !(value.is_string() || (*optional && value.is_null()))
        })
        .map(|(field, _)| *field)
}
