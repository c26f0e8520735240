//! Task ops (the hub observes tasks, it never runs them): `get_task`, `list_tasks`,
//! `observe_task`, `update_task`, `record_observation`, `fire_task_event`, `checkpoint_task`,
//! `read_task_checkpoint`.

use super::params::{slice_index, Params};
use super::Reply;
use crate::hub::wire::{self, py_dict, wrong_type};
use crate::hub::{python_slice, Hub, TaskUpdate};
use crate::ids::EndpointId;
use crate::json::{py_str, py_truthy};
use crate::proto::HubError;
use crate::time::Now;
use serde_json::Value;

type OpResult = Result<Reply, HubError>;

fn done(value: Value) -> OpResult {
    Ok(Reply::Done(value))
}

fn task_not_found(task_id: &Value) -> HubError {
    HubError::not_found(format!("task not found: {}", py_str(task_id)))
}

/// `TaskState(params[key]) if params.get(key) is not None else None`.
fn wire_state(p: Params<'_>, key: &str) -> Result<Option<crate::hub::TaskState>, HubError> {
    p.get(key).map(wire::task_state).transpose()
}

impl Hub {
    pub(super) fn op_get_task(&self, p: Params<'_>) -> OpResult {
        let task_id = p.req("task_id")?;
        let task = self.observed_task(task_id)?;
        let task = task.ok_or_else(|| task_not_found(task_id))?;
        done(wire::task_json(task))
    }

    /// `list_tasks`: owner, channel and state filters in observation order, then the tasks this
    /// connection may see, then `[:limit]`.
    pub(super) fn op_list_tasks(&self, endpoint: EndpointId, p: Params<'_>) -> OpResult {
        let state = wire_state(p, "state")?;
        let owner = p.get("agent_id");
        let channel = p.get("channel_id");
        let text_is = |value: &Value, text: &str| value.as_str() == Some(text);
        let visible: Vec<Value> = self
            .tasks_in_order()
            .filter(|task| owner.is_none_or(|owner| text_is(owner, &task.owner_id.to_string())))
            .filter(|task| {
                channel.is_none_or(|channel| {
                    task.channel_id
                        .is_some_and(|own| text_is(channel, &own.to_string()))
                })
            })
            .filter(|task| state.is_none_or(|state| task.state == state))
            .filter(|task| self.task_visible(endpoint, task))
            .map(wire::task_json)
            .collect();
        let fifty = Value::from(50);
        let range = python_slice(visible.len(), None, slice_index(p.get_or("limit", &fifty))?);
        done(Value::Array(visible[range].to_vec()))
    }

    pub(super) fn op_observe_task(&mut self, p: Params<'_>) -> OpResult {
        let Value::Object(metadata) = p.req("metadata")? else {
            // The authorisation step has already subscripted it as a dict.
            return Err(HubError::type_error("hubsim: metadata must be an object"));
        };
        self.observe_task(wire::task_from_dict(metadata)?)?;
        done(Value::Null)
    }

    /// `update_task`: the state is parsed first; progress, result and error are read only for a
    /// known task that is not terminal, as ag2 reads them.
    pub(super) fn op_update_task(&mut self, now: Now, p: Params<'_>) -> OpResult {
        let state = wire_state(p, "state")?;
        let task_id = p.req("task_id")?;
        let task = self.observed_task(task_id)?;
        let task = task.ok_or_else(|| task_not_found(task_id))?;
        if task.state.is_terminal() {
            return done(Value::Null);
        }
        let task_id = task.task_id.clone();
        let progress = match p.get("progress") {
            Some(progress) if py_truthy(progress) => py_dict(progress)?,
            _ => serde_json::Map::new(),
        };
        let error = match p.get("error") {
            Some(Value::String(error)) => Some(error.clone()),
            Some(other) if py_truthy(other) => return Err(wrong_type("error", "a str", other)),
            _ => None,
        };
        let update = TaskUpdate {
            state,
            progress,
            result: p.get("result").cloned(),
            error,
        };
        self.update_task_with(now, &task_id, update)?;
        done(Value::Null)
    }

    /// `record_observation`; a non-terminal outcome is ignored before the capability is read.
    pub(super) fn op_record_observation(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let owner = self.require_bound(endpoint, p.req("owner_id")?)?;
        let capability = p.req("capability")?;
        let outcome = wire::task_state(p.req("outcome")?)?;
        if !outcome.is_terminal() {
            return done(Value::Null);
        }
        let Some(capability) = capability.as_str() else {
            return Err(wrong_type("capability", "a str", capability));
        };
        let latency_ms = match p.get("latency_ms") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .filter(|_| !value.is_f64())
                    .ok_or_else(|| wrong_type("latency_ms", "a non-negative int", value))?,
            ),
        };
        let task_id = p.get("task_id").and_then(Value::as_str);
        self.record_observation(now, owner, capability, outcome, latency_ms, task_id);
        done(Value::Null)
    }

    /// `fire_task_event`: over the wire only a `mirror_failed` report passes the authorisation
    /// step, and ag2's audit log records no such event, so nothing changes.
    pub(super) fn op_fire_task_event(&self, p: Params<'_>) -> OpResult {
        p.req("task_id")?;
        p.req("kind")?;
        done(Value::Null)
    }

    pub(super) fn op_checkpoint_task(&mut self, p: Params<'_>) -> OpResult {
        let task_id = py_str(p.req("task_id")?);
        let state = p.req("state")?.clone();
        self.checkpoint_task(&task_id, state);
        done(Value::Null)
    }

    pub(super) fn op_read_task_checkpoint(&self, p: Params<'_>) -> OpResult {
        let task_id = py_str(p.req("task_id")?);
        done(
            self.read_task_checkpoint(&task_id)
                .cloned()
                .unwrap_or(Value::Null),
        )
    }
}
