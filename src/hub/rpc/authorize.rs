//! ag2's `_authorize_request`: a connection acts only as the agents bound to it. Every check and
//! message follows `hub/core.py`, in its order: agent-scoped ops name a bound agent,
//! channel-scoped ops need a bound participant, task-scoped ops need the observed task's owner
//! (or, for an unobserved task, a recorded checkpoint writer), and discovery reads are open.

use super::params::{dict_get, key_text, subscript, Params};
use crate::hub::tasks::TaskMetadata;
use crate::hub::wire::hashable;
use crate::hub::Hub;
use crate::ids::{AgentId, ChannelId, EndpointId};
use crate::json::{py_repr, py_str, py_str_repr, py_truthy, py_type_name};
use crate::proto::{ErrorKind, EventType, HubError};
use serde_json::{Map, Value};

/// Discovery reads open to any connection.
const UNSCOPED_OPS: &[&str] = &[
    "get_agent",
    "get_resume",
    "get_skill",
    "get_rule",
    "find_agent_id",
    "names_for",
    "list_agents",
];

/// Ops acting as the agent named by the mapped param.
const AGENT_SCOPED_OPS: &[(&str, &str)] = &[
    ("set_resume", "agent_id"),
    ("set_skill", "agent_id"),
    ("set_rule", "agent_id"),
    ("unregister", "agent_id"),
    ("create_channel", "creator_id"),
    ("can_send", "sender_id"),
    ("pending_turns_for", "agent_id"),
    ("report_turn_failure", "agent_id"),
    ("record_observation", "owner_id"),
];

/// Ops on `params.channel_id`, which need a bound participant.
const CHANNEL_SCOPED_OPS: &[&str] = &[
    "get_channel",
    "close_channel",
    "read_wal",
    "find_envelope_by_causation",
];

/// Ops on `params.task_id`.
const TASK_SCOPED_OPS: &[&str] = &[
    "update_task",
    "fire_task_event",
    "checkpoint_task",
    "read_task_checkpoint",
];

/// The payload keys of a `mirror_failed` report, sorted as ag2 prints them.
const MIRROR_FAILURE_KEYS: &[&str] = &["channel_id", "exc_message", "exc_type", "op", "owner_id"];

/// `ProtocolError("unknown control-plane op: 'x'")`.
pub(super) fn unknown_op(op: &str) -> HubError {
    HubError::protocol(format!("unknown control-plane op: {}", py_str_repr(op)))
}

fn no_bound_agent() -> HubError {
    HubError::access_denied("connection has no bound agent")
}

impl Hub {
    /// ag2's `_authorize_request` after the task id check.
    pub(super) fn authorize(
        &mut self,
        endpoint: EndpointId,
        op: &str,
        params: Params<'_>,
    ) -> Result<(), HubError> {
        if UNSCOPED_OPS.contains(&op) || op == "list_tasks" {
            return Ok(());
        }
        if let Some((_, key)) = AGENT_SCOPED_OPS.iter().find(|(name, _)| *name == op) {
            return self.authorize_agent_op(endpoint, op, params.req(key)?, params);
        }
        if CHANNEL_SCOPED_OPS.contains(&op) {
            return self
                .require_participant(endpoint, params.req("channel_id")?)
                .map(drop);
        }
        if TASK_SCOPED_OPS.contains(&op) {
            return self.authorize_task_op(endpoint, op, params);
        }
        match op {
            "get_task" => self.authorize_get_task(endpoint, params),
            "register" => authorize_register(params),
            "post_envelope" => self.authorize_post(endpoint, params),
            "observe_task" => self.authorize_observe(endpoint, params),
            "list_channels" => match params.get("agent_id") {
                Some(agent) => self.require_bound(endpoint, agent).map(drop),
                None => Ok(()),
            },
            _ => Err(unknown_op(op)),
        }
    }

    /// ag2's `_require_bound`: `value` must be an agent bound to `endpoint`.
    pub(super) fn require_bound(
        &self,
        endpoint: EndpointId,
        value: &Value,
    ) -> Result<AgentId, HubError> {
        key_text(value)?
            .and_then(AgentId::parse)
            .filter(|agent| self.endpoint_of(*agent) == Some(endpoint))
            .ok_or_else(|| {
                HubError::access_denied(format!(
                    "connection is not bound to agent {}",
                    py_repr(value)
                ))
            })
    }

    /// The channel a param names, if the hub knows it (ghost channels included).
    pub(super) fn known_channel(&self, value: &Value) -> Result<Option<ChannelId>, HubError> {
        Ok(key_text(value)?
            .and_then(ChannelId::parse)
            .filter(|channel| self.channels.contains_key(channel)))
    }

    fn is_participant(&self, channel: ChannelId, agent: &Value) -> bool {
        let agent = agent.as_str().and_then(AgentId::parse);
        agent.is_some_and(|agent| self.channels[&channel].metadata.has_participant(agent))
    }

    /// ag2's `_require_participant`: the channel exists and some bound agent participates.
    pub(super) fn require_participant(
        &self,
        endpoint: EndpointId,
        value: &Value,
    ) -> Result<ChannelId, HubError> {
        let Some(channel) = self.known_channel(value)? else {
            return Err(HubError::not_found(format!(
                "channel not found: {}",
                py_str(value)
            )));
        };
        let metadata = &self.channels[&channel].metadata;
        if self
            .bound_to(endpoint)
            .into_iter()
            .any(|agent| metadata.has_participant(agent))
        {
            return Ok(channel);
        }
        Err(HubError::access_denied(format!(
            "connection has no participant in channel {}",
            py_repr(value)
        )))
    }

    fn authorize_agent_op(
        &self,
        endpoint: EndpointId,
        op: &str,
        agent: &Value,
        params: Params<'_>,
    ) -> Result<(), HubError> {
        self.require_bound(endpoint, agent)?;
        if op == "record_observation" {
            if let Some(task_id) = params.get("task_id") {
                self.require_task_owner(endpoint, task_id)?;
            }
        }
        if op == "report_turn_failure" {
            // A failure is reported for a turn in a channel the agent is in.
            let value = params.req("channel_id")?;
            let channel = self.known_channel(value)?;
            if !channel.is_some_and(|channel| self.is_participant(channel, agent)) {
                return Err(HubError::access_denied(format!(
                    "agent is not a participant of channel {}",
                    py_repr(value)
                )));
            }
        }
        Ok(())
    }

    /// An observed task named by a param (task ids are strings once checked; `None` is none).
    pub(super) fn observed_task(&self, value: &Value) -> Result<Option<&TaskMetadata>, HubError> {
        Ok(key_text(value)?.and_then(|task_id| self.task(task_id)))
    }

    /// ag2's `_task_visible`: the owner or a participant of the task's channel is bound here.
    pub(super) fn task_visible(&self, endpoint: EndpointId, task: &TaskMetadata) -> bool {
        let bound = self.bound_to(endpoint);
        if bound.contains(&task.owner_id) {
            return true;
        }
        let channel = task
            .channel_id
            .and_then(|channel| self.channels.get(&channel));
        channel.is_some_and(|entry| bound.iter().any(|a| entry.metadata.has_participant(*a)))
    }

    /// ag2's `_require_task_owner`: an observed task's owner must be bound; unobserved passes.
    fn require_task_owner(&self, endpoint: EndpointId, task_id: &Value) -> Result<(), HubError> {
        match self.observed_task(task_id)? {
            Some(task) => {
                let owner = Value::String(task.owner_id.to_string());
                self.require_bound(endpoint, &owner).map(drop)
            }
            None => Ok(()),
        }
    }

    fn authorize_get_task(&self, endpoint: EndpointId, params: Params<'_>) -> Result<(), HubError> {
        let task_id = params.req("task_id")?;
        match self.observed_task(task_id)? {
            // Same answer as an unknown id, so ids cannot be probed.
            Some(task) if !self.task_visible(endpoint, task) => Err(HubError::not_found(format!(
                "task not found: {}",
                py_str(task_id)
            ))),
            _ => Ok(()),
        }
    }

    /// ag2's `_require_checkpoint_writer`: the first wire checkpoint of an unobserved task records
    /// the agents bound to the writing connection (`claim`); later reads and writes need one.
    fn require_checkpoint_writer(
        &mut self,
        endpoint: EndpointId,
        task_id: &Value,
        claim: bool,
    ) -> Result<(), HubError> {
        let bound = self.bound_to(endpoint);
        if bound.is_empty() {
            return Err(no_bound_agent());
        }
        let key = py_str(task_id);
        match self.tasks.checkpoint_writers.get(&key) {
            None => {
                if claim {
                    self.tasks.checkpoint_writers.insert(key, bound);
                }
                Ok(())
            }
            Some(writers) if writers.iter().any(|w| bound.contains(w)) => Ok(()),
            Some(_) => Err(HubError::access_denied(format!(
                "connection holds no writer of task {}'s checkpoint",
                py_repr(task_id)
            ))),
        }
    }

    fn authorize_task_op(
        &mut self,
        endpoint: EndpointId,
        op: &str,
        params: Params<'_>,
    ) -> Result<(), HubError> {
        if self.bound_to(endpoint).is_empty() {
            return Err(no_bound_agent());
        }
        if op == "fire_task_event" {
            let task_id = params.req("task_id")?;
            let empty = Value::Object(Map::new());
            let payload = params.get_or("payload", &empty);
            self.authorize_mirror_failure(endpoint, task_id, params.req("kind")?, payload)?;
            if self.observed_task(task_id)?.is_none() {
                self.require_checkpoint_writer(endpoint, task_id, false)?;
            }
            return Ok(());
        }
        let task_id = params.req("task_id")?;
        if self.observed_task(task_id)?.is_some() {
            return self.require_task_owner(endpoint, task_id);
        }
        if op == "checkpoint_task" || op == "read_task_checkpoint" {
            return self.require_checkpoint_writer(endpoint, task_id, op == "checkpoint_task");
        }
        Ok(())
    }

    /// ag2's `_authorize_mirror_failure`: over the wire only `mirror_failed` is accepted, with the
    /// mirror's payload keys, a bound `owner_id`, and the task's own owner and channel.
    fn authorize_mirror_failure(
        &self,
        endpoint: EndpointId,
        task_id: &Value,
        kind: &Value,
        payload: &Value,
    ) -> Result<(), HubError> {
        if kind.as_str() != Some("mirror_failed") {
            return Err(HubError::access_denied(format!(
                "only 'mirror_failed' task events are accepted over the wire, got {}",
                py_repr(kind)
            )));
        }
        let keys_ok = payload.as_object().is_some_and(|payload| {
            payload
                .keys()
                .all(|key| MIRROR_FAILURE_KEYS.contains(&key.as_str()))
        });
        if !keys_ok {
            return Err(HubError::protocol(format!(
                "mirror_failed payload keys must be within {}",
                py_repr(&Value::from(MIRROR_FAILURE_KEYS.to_vec()))
            )));
        }
        let owner = payload.get("owner_id").filter(|owner| owner.is_string());
        let Some(owner) = owner else {
            return Err(HubError::protocol(
                "mirror_failed payload needs the reporting agent's owner_id",
            ));
        };
        self.require_bound(endpoint, owner)?;
        let channel = payload.get("channel_id").unwrap_or(&Value::Null);
        self.check_mirror_scope(task_id, owner, channel)
    }

    /// The owner and channel a `mirror_failed` report carries must be the task's own, or, for an
    /// unobserved task, a channel the owner participates in.
    fn check_mirror_scope(
        &self,
        task_id: &Value,
        owner: &Value,
        channel: &Value,
    ) -> Result<(), HubError> {
        if let Some(task) = self.observed_task(task_id)? {
            let task_channel = task.channel_id.map(|id| id.to_string());
            let sent_channel = py_truthy(channel).then_some(channel);
            let same_channel = match (sent_channel, &task_channel) {
                (None, None) => true,
                (Some(sent), Some(own)) => sent.as_str() == Some(own.as_str()),
                _ => false,
            };
            if owner.as_str() != Some(task.owner_id.to_string().as_str()) || !same_channel {
                return Err(HubError::access_denied(format!(
                    "mirror_failed for task {} must carry its own owner and channel",
                    py_repr(task_id)
                )));
            }
            return Ok(());
        }
        if channel.is_null() {
            return Ok(());
        }
        let known = match channel {
            Value::String(_) => self.known_channel(channel)?,
            _ => None,
        };
        if known.is_some_and(|known| self.is_participant(known, owner)) {
            return Ok(());
        }
        Err(HubError::access_denied(format!(
            "task owner is not a participant of channel {}",
            py_repr(channel)
        )))
    }

    /// `post_envelope`: the sender is bound, hub-only channel events are refused, and an explicit
    /// audience lists only participants of the channel (when the channel exists).
    fn authorize_post(&self, endpoint: EndpointId, params: Params<'_>) -> Result<(), HubError> {
        let envelope = params.req("envelope")?;
        self.require_bound(endpoint, subscript(envelope, "sender_id")?)?;
        let event_type = subscript(envelope, "event_type")?;
        let Some(event_type) = event_type.as_str() else {
            return Err(HubError::new(
                ErrorKind::Attribute,
                format!(
                    "'{}' object has no attribute 'startswith'",
                    py_type_name(event_type)
                ),
            ));
        };
        let hub_only = event_type.starts_with("ag2.channel.")
            && event_type != EventType::CHANNEL_INVITE_ACK
            && event_type != EventType::CHANNEL_INVITE_REJECT;
        if hub_only {
            return Err(HubError::protocol(format!(
                "{} is emitted only by the hub",
                py_str_repr(event_type)
            )));
        }
        let audience = dict_get(envelope, "audience")?;
        let channel = self.known_channel(subscript(envelope, "channel_id")?)?;
        let (Some(audience), Some(channel)) = (audience, channel) else {
            return Ok(());
        };
        let Value::Array(members) = audience else {
            return Err(audience_error());
        };
        for member in members {
            hashable(member)?;
        }
        if members
            .iter()
            .all(|member| self.is_participant(channel, member))
        {
            Ok(())
        } else {
            Err(audience_error())
        }
    }

    /// `observe_task`: the owner is bound, joins a channel only as a participant, and an id is
    /// claimed only by its owner or its checkpoint writers.
    fn authorize_observe(
        &mut self,
        endpoint: EndpointId,
        params: Params<'_>,
    ) -> Result<(), HubError> {
        let metadata = params.req("metadata")?;
        let owner = subscript(metadata, "owner_id")?;
        self.require_bound(endpoint, owner)?;
        if let Some(channel) = dict_get(metadata, "channel_id")?.filter(|c| py_truthy(c)) {
            // A task joins a channel only through a participant owner.
            let known = self.known_channel(channel)?;
            if !known.is_some_and(|known| self.is_participant(known, owner)) {
                return Err(HubError::access_denied(format!(
                    "task owner is not a participant of channel {}",
                    py_repr(channel)
                )));
            }
        }
        let task_id = subscript(metadata, "task_id")?;
        if self.observed_task(task_id)?.is_some() {
            self.require_task_owner(endpoint, task_id)
        } else {
            // Observing makes the caller the owner, so an id whose checkpoint another connection
            // wrote stays with its writers.
            self.require_checkpoint_writer(endpoint, task_id, false)
        }
    }
}

fn audience_error() -> HubError {
    HubError::protocol("audience must list only participants of the channel")
}

/// `register`: a `remote_agent` passport is refused, as by a hub without
/// `allow_remote_agent_registration` (hubsim has no remote proxies).
fn authorize_register(params: Params<'_>) -> Result<(), HubError> {
    let passport = params.req("passport")?;
    if dict_get(passport, "kind")?.and_then(Value::as_str) == Some("remote_agent") {
        return Err(HubError::access_denied(
            "this hub does not accept remote_agent registration over the wire",
        ));
    }
    Ok(())
}
