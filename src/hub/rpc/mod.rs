//! The control-plane RPC: ag2's `_handle_request`, `_authorize_request` and
//! `_dispatch_request_op` for the 30 wire ops.
//!
//! A request frame comes in, a response frame goes out, with ag2's field order (`request_id`,
//! `ok`, `result`, `error_code`, `error_message`). A `NetworkError` maps to its wire code and
//! message; any other failure (a missing param's `KeyError`, `InboxFull`, a `TypeError`) maps to
//! `error` with Python's `str(exc)`. Before an op runs, every task id in the params is checked
//! and the op is authorised against the agents bound to the calling connection (ag2's
//! `_authorize_request`; in-process calls skip all of it, as in ag2).
//!
//! A request comes in through [`Hub::handle_frame`]; its response goes out as an
//! [`Output::Frame`], and a refused request is also handed out as an [`Output::Refused`].
//! `create_channel` with invitees answers only once every invitee has acked (or the handshake
//! failed): until then [`Hub::waiting_on`] names the channel for the calling connection, and once
//! the handshake ended [`Hub::poll_answer`] gives the answer, built from the channel as it is when
//! polled (ag2's handler reads the channel's metadata when it resumes, after the frame that ended
//! the handshake and whatever the event loop runs before it). ag2 serves one connection's
//! requests in order, so a driver should hold that connection's later requests until it has the
//! answer.
//!
//! Every path returns a response: bad input never panics.

mod authorize;
mod channel_ops;
mod params;
mod registry_ops;
mod task_ops;

#[cfg(test)]
mod tests;

use super::wire;
use super::{Hub, Output, Refused, RpcWaiter};
use crate::ids::{ChannelId, EndpointId};
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::HubError;
use crate::time::Now;
use params::Params;
use serde_json::Value;

/// The answer to a `create_channel` a connection waited on ([`Hub::poll_answer`]).
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAnswered {
    /// The connection that sent the request.
    pub endpoint: EndpointId,
    /// Its response: the channel's metadata, or the handshake's error.
    pub frame: Frame,
}

/// An op's result before it becomes a response.
#[derive(Clone, Debug)]
enum Reply {
    Done(Value),
    /// A result shared with other readers (see [`Frame::with_shared_result`]).
    Shared(std::sync::Arc<Value>),
    /// A result written out only when the response is encoded (see
    /// [`Frame::with_deferred_result`]).
    Deferred(std::sync::Arc<dyn crate::proto::frame::DeferredResult>),
    Pending(ChannelId),
}

/// A `response` frame for `request_id` carrying `result`.
fn response(request_id: Value, result: Result<Value, HubError>) -> Frame {
    let fields = match result {
        Ok(result) => vec![
            ("request_id", request_id),
            ("ok", Value::Bool(true)),
            ("result", result),
        ],
        Err(error) => vec![
            ("request_id", request_id),
            ("ok", Value::Bool(false)),
            ("error_code", Value::from(error.wire_code())),
            ("error_message", Value::String(error.message)),
        ],
    };
    Frame::new(FrameKind::Response, fields)
}

impl Hub {
    /// ag2's `_handle_request` for one request frame from `endpoint`: the response is queued
    /// as an [`Output::Frame`] (an error also as an [`Output::Refused`]), or, for a
    /// `create_channel` waiting for acks, answered later by [`Hub::poll_answer`].
    ///
    /// A frame [`Hub::handle_frame`] would call malformed (a non-string `request_id` or `op`,
    /// non-object `params`), or one that is not a request, is answered with a `protocol_error`
    /// response here, where ag2 sends an `error` frame before ever reaching this point.
    pub(super) fn handle_request(&mut self, now: Now, endpoint: EndpointId, frame: &Frame) {
        if frame.kind != FrameKind::Request {
            let error =
                HubError::protocol(format!("malformed {} frame: kind", frame.kind.as_str()));
            return self.respond(endpoint, response(Value::Null, Err(error)));
        }
        let request_id = frame.get("request_id");
        let (Some(id), Some(op), Value::Object(params)) = (
            request_id.as_str(),
            frame.get("op").as_str(),
            frame.get("params"),
        ) else {
            let field = super::link::malformed_field(frame).unwrap_or("request_id");
            let error = HubError::protocol(format!("malformed request frame: {field}"));
            return self.respond(endpoint, response(request_id.clone(), Err(error)));
        };
        let before = self.trace_counters();
        match self.run_op(now, endpoint, op, Params(params)) {
            Ok(Reply::Done(result)) => {
                self.respond(endpoint, response(request_id.clone(), Ok(result)));
            }
            Ok(Reply::Shared(result)) => {
                let frame =
                    response(request_id.clone(), Ok(Value::Null)).with_shared_result(result);
                self.respond(endpoint, frame);
            }
            Ok(Reply::Deferred(result)) => {
                let frame =
                    response(request_id.clone(), Ok(Value::Null)).with_deferred_result(result);
                self.respond(endpoint, frame);
            }
            Ok(Reply::Pending(channel)) => {
                let waiter = RpcWaiter {
                    endpoint,
                    request_id: id.to_string(),
                };
                self.rpc_waiters.insert(channel, waiter);
            }
            Err(error) => {
                let after = self.trace_counters();
                self.respond(endpoint, response(request_id.clone(), Err(error.clone())));
                self.outputs.push_back(Output::Refused(Refused {
                    endpoint,
                    op: op.to_string(),
                    error,
                    before,
                    after,
                }));
            }
        }
    }

    fn respond(&mut self, endpoint: EndpointId, frame: Frame) {
        self.outputs.push_back(Output::Frame { endpoint, frame });
    }

    /// The answer to the next wire `create_channel` whose handshake ended (in the order they
    /// ended): the channel's metadata as it is now, or the handshake's error. Its connection is
    /// no longer [`Hub::waiting_on`] it.
    pub fn poll_answer(&mut self) -> Option<OpenAnswered> {
        let (channel, result) = self.answers.pop_front()?;
        let waiter = self
            .rpc_waiters
            .remove(&channel)
            .expect("an ended handshake's waiter stays until answered");
        let result = match result {
            Ok(()) => self.get_channel(channel).map(wire::channel_json),
            Err(error) => Err(error),
        };
        Some(OpenAnswered {
            endpoint: waiter.endpoint,
            frame: response(Value::String(waiter.request_id), result),
        })
    }

    fn run_op(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        op: &str,
        params: Params<'_>,
    ) -> Result<Reply, HubError> {
        params::check_task_ids(params)?;
        self.authorize(endpoint, op, params)?;
        self.dispatch_op(now, endpoint, op, params)
    }

    /// ag2's `_dispatch_request_op`, after authorisation.
    fn dispatch_op(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        op: &str,
        p: Params<'_>,
    ) -> Result<Reply, HubError> {
        match op {
            "register" => self.op_register(now, endpoint, p),
            "get_agent" => self.op_get_agent(p),
            "get_resume" => self.op_get_resume(p),
            "get_skill" => self.op_get_skill(p),
            "get_rule" => self.op_get_rule(p),
            "find_agent_id" => self.op_find_agent_id(p),
            "names_for" => self.op_names_for(p),
            "list_agents" => self.op_list_agents(p),
            "set_resume" => self.op_set_resume(now, endpoint, p),
            "set_skill" => self.op_set_skill(now, endpoint, p),
            "set_rule" => self.op_set_rule(now, endpoint, p),
            "unregister" => self.op_unregister(now, endpoint, p),
            "create_channel" => self.op_create_channel(now, endpoint, p),
            "get_channel" => self.op_get_channel(endpoint, p),
            "list_channels" => self.op_list_channels(endpoint, p),
            "close_channel" => self.op_close_channel(now, endpoint, p),
            "post_envelope" => self.op_post_envelope(now, endpoint, p),
            "read_wal" => self.op_read_wal(endpoint, p),
            "find_envelope_by_causation" => self.op_find_envelope_by_causation(endpoint, p),
            "can_send" => self.op_can_send(endpoint, p),
            "pending_turns_for" => self.op_pending_turns_for(now, endpoint, p),
            "report_turn_failure" => self.op_report_turn_failure(now, endpoint, p),
            "get_task" => self.op_get_task(p),
            "list_tasks" => self.op_list_tasks(endpoint, p),
            "observe_task" => self.op_observe_task(p),
            "update_task" => self.op_update_task(now, p),
            "record_observation" => self.op_record_observation(now, endpoint, p),
            "fire_task_event" => self.op_fire_task_event(p),
            "checkpoint_task" => self.op_checkpoint_task(p),
            "read_task_checkpoint" => self.op_read_task_checkpoint(p),
            _ => Err(authorize::unknown_op(op)),
        }
    }
}
