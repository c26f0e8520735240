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
//! `create_channel` with invitees answers only once every invitee has acked (or the handshake
//! failed): [`Hub::handle_request`] returns [`RpcOutcome::Pending`], and the driver turns the
//! later [`Output::OpenResolved`](super::Output::OpenResolved) into the response with
//! [`Hub::resolve_pending`]. ag2 serves one connection's requests in order, so a driver should
//! hold that connection's later requests until the pending one is answered.
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
use super::Hub;
use crate::ids::{ChannelId, EndpointId};
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::HubError;
use crate::time::Now;
use params::Params;
use serde_json::Value;

/// What [`Hub::handle_request`] produced.
#[derive(Clone, Debug, PartialEq)]
pub enum RpcOutcome {
    /// The response to send on the calling connection now.
    Response(Frame),
    /// A `create_channel` waiting for its invitees' acks; its response comes from
    /// [`Hub::resolve_pending`] when the hub reports [`super::Output::OpenResolved`] for
    /// `channel`.
    Pending {
        /// The channel whose handshake is under way.
        channel: ChannelId,
        /// The request to answer.
        request_id: String,
    },
}

/// An op's result before it becomes a response.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Done(Value),
    /// A result shared with other readers (see [`Frame::with_shared_result`]).
    Shared(std::sync::Arc<Value>),
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
    /// ag2's `_handle_request` for one request frame from `endpoint`.
    ///
    /// A frame [`Hub::handle_frame`] would call malformed (a non-string `request_id` or `op`,
    /// non-object `params`), or one that is not a request, is answered with a `protocol_error`
    /// response here, where ag2 sends an `error` frame before ever reaching this point.
    pub fn handle_request(&mut self, now: Now, endpoint: EndpointId, frame: &Frame) -> RpcOutcome {
        if frame.kind != FrameKind::Request {
            let error =
                HubError::protocol(format!("malformed {} frame: kind", frame.kind.as_str()));
            return RpcOutcome::Response(response(Value::Null, Err(error)));
        }
        let request_id = frame.get("request_id");
        let (Some(id), Some(op), Value::Object(params)) = (
            request_id.as_str(),
            frame.get("op").as_str(),
            frame.get("params"),
        ) else {
            let field = super::link::malformed_field(frame).unwrap_or("request_id");
            let error = HubError::protocol(format!("malformed request frame: {field}"));
            return RpcOutcome::Response(response(request_id.clone(), Err(error)));
        };
        let before = (op == "post_envelope").then(|| self.trace_counters());
        match self.run_op(now, endpoint, op, Params(params)) {
            Ok(Reply::Done(result)) => {
                RpcOutcome::Response(response(request_id.clone(), Ok(result)))
            }
            Ok(Reply::Shared(result)) => RpcOutcome::Response(
                response(request_id.clone(), Ok(Value::Null)).with_shared_result(result),
            ),
            Ok(Reply::Pending(channel)) => {
                self.rpc_waiters.insert(channel, id.to_string());
                RpcOutcome::Pending {
                    channel,
                    request_id: id.to_string(),
                }
            }
            Err(error) => {
                if let Some(before) = before {
                    let full = error.kind == crate::proto::ErrorKind::InboxFull;
                    self.refusals.record(before, self.trace_counters(), full);
                }
                RpcOutcome::Response(response(request_id.clone(), Err(error)))
            }
        }
    }

    /// The deferred response of a pending `create_channel`, from the hub's
    /// [`super::Output::OpenResolved`] for `channel`: the channel's metadata as it is now, or the
    /// handshake's error. `None` when no wire request waits on `channel` (an in-process open).
    pub fn resolve_pending(
        &mut self,
        channel: ChannelId,
        result: &Result<(), HubError>,
    ) -> Option<Frame> {
        let request_id = self.rpc_waiters.remove(&channel)?;
        let result = match result {
            Ok(()) => self.get_channel(channel).map(wire::channel_json),
            Err(error) => Err(error.clone()),
        };
        Some(response(Value::String(request_id), result))
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
