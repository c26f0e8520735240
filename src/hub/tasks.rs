//! Tasks, which the hub observes and never owns: storage, the concurrency cap on first
//! observation, terminal transitions (`task_terminated` audit), TTL expiry and the cascade when a
//! channel ends.

use super::audit::TaskTermination;
use super::Hub;
use crate::ids::{AgentId, ChannelId};
use crate::proto::HubError;
use crate::time::{Now, Timestamp};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A task's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Created.
    Created,
    /// Running.
    Running,
    /// Terminal: completed.
    Completed,
    /// Terminal: failed.
    Failed,
    /// Terminal: expired (TTL or its channel ended).
    Expired,
    /// Terminal: cancelled.
    Cancelled,
}

impl TaskState {
    /// ag2's string value.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Created => "created",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Expired => "expired",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// ag2's `TaskState(value)` for a string value.
    pub fn parse(value: &str) -> Option<TaskState> {
        Some(match value {
            "created" => TaskState::Created,
            "running" => TaskState::Running,
            "completed" => TaskState::Completed,
            "failed" => TaskState::Failed,
            "expired" => TaskState::Expired,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }

    /// `completed`, `failed`, `expired` and `cancelled` are terminal.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Expired | TaskState::Cancelled
        )
    }
}

/// The descriptive part of a task's spec (ag2's `TaskSpec` minus `capability`), never read by
/// the hub.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskSpec {
    /// `spec.title`.
    pub title: String,
    /// `spec.description`.
    pub description: String,
    /// `spec.payload`.
    pub payload: Map<String, Value>,
}

/// What the hub stores about a task (ag2's `TaskMetadata`).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskMetadata {
    /// The task id (minted by the owner).
    pub task_id: String,
    /// The owning agent.
    pub owner_id: AgentId,
    /// `spec.title`, `spec.description`, `spec.payload`.
    pub spec: TaskSpec,
    /// The spec's capability tag.
    pub capability: Option<String>,
    /// `created_at` as the owner sent it (ag2 keeps `str(value)`).
    pub created_at: String,
    /// Stamped by `update_task` when it merges progress.
    pub last_progress_at: Option<Timestamp>,
    /// Lifecycle state.
    pub state: TaskState,
    /// The channel the task runs in, if any.
    pub channel_id: Option<ChannelId>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// Set on the terminal transition.
    pub completed_at: Option<Timestamp>,
    /// The owner's deadline.
    pub expires_at: Option<Timestamp>,
    /// Progress, merged on updates.
    pub progress: Map<String, Value>,
    /// The result, if any.
    pub result: Option<Value>,
    /// Why it failed or expired.
    pub error: String,
}

/// The hub's task records.
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskBook {
    pub(crate) tasks: BTreeMap<String, TaskMetadata>,
    /// Tasks per channel, for the cascade (iterated in task-id order; ag2's order depends on the
    /// hash seed).
    pub(crate) by_channel: BTreeMap<ChannelId, BTreeSet<String>>,
    /// `(owner, task)` pairs already counted by `record_observation`.
    pub(crate) observed: BTreeSet<(AgentId, String)>,
    /// Checkpoints, one JSON blob per task (last write wins).
    pub(crate) checkpoints: BTreeMap<String, Value>,
    /// Task ids in first-observation order (ag2's dict order, which `list_tasks` follows).
    pub(crate) order: Vec<String>,
    /// The agents bound to the connection that first wrote an unobserved task's checkpoint over
    /// the wire, sorted (ag2's `checkpoint_writers` file).
    pub(crate) checkpoint_writers: BTreeMap<String, Vec<AgentId>>,
}

/// The changes of one `update_task` call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskUpdate {
    /// The new state, if any.
    pub state: Option<TaskState>,
    /// Progress merged in; a non-empty map also stamps `last_progress_at`.
    pub progress: Map<String, Value>,
    /// The result, if any.
    pub result: Option<Value>,
    /// The error, if any (an empty one is ignored).
    pub error: Option<String>,
}

impl Hub {
    /// ag2's `observe_task`. A new task is capped by the owner's `max_concurrent_tasks`; a known
    /// one is updated in place with no terminal guard (as in ag2).
    ///
    /// # Errors
    /// `AccessDeniedError` when the cap is reached.
    pub fn observe_task(&mut self, task: TaskMetadata) -> Result<(), HubError> {
        if let Some(existing) = self.tasks.tasks.get_mut(&task.task_id) {
            existing.state = task.state;
            existing.started_at = task.started_at.or(existing.started_at);
            existing.expires_at = task.expires_at.or(existing.expires_at);
            existing.channel_id = task.channel_id.or(existing.channel_id);
            for (key, value) in task.progress {
                existing.progress.insert(key, value);
            }
            return Ok(());
        }
        let cap = self
            .agents
            .get(&task.owner_id)
            .map_or(0, |entry| entry.rule.limits.max_concurrent_tasks);
        if cap > 0 {
            let open = self
                .tasks
                .tasks
                .values()
                .filter(|t| t.owner_id == task.owner_id && !t.state.is_terminal())
                .count();
            if open as i64 >= cap {
                return Err(HubError::access_denied(format!(
                    "owner '{}' exceeded max_concurrent_tasks ({open} >= {cap})",
                    task.owner_id
                )));
            }
        }
        if let Some(channel) = task.channel_id {
            self.tasks
                .by_channel
                .entry(channel)
                .or_default()
                .insert(task.task_id.clone());
        }
        self.tasks.order.push(task.task_id.clone());
        self.tasks.tasks.insert(task.task_id.clone(), task);
        Ok(())
    }

    /// Tasks in first-observation order (ag2's `_tasks` dict order).
    pub fn tasks_in_order(&self) -> impl Iterator<Item = &TaskMetadata> + '_ {
        self.tasks.order.iter().map(|id| &self.tasks.tasks[id])
    }

    /// A task record.
    pub fn task(&self, task_id: &str) -> Option<&TaskMetadata> {
        self.tasks.tasks.get(task_id)
    }

    /// ag2's `update_task` without a result. See [`Hub::update_task_with`].
    ///
    /// # Errors
    /// `NotFoundError("task not found: <id>")`.
    pub fn update_task(
        &mut self,
        now: Now,
        task_id: &str,
        state: Option<TaskState>,
        progress: Map<String, Value>,
        error: Option<&str>,
    ) -> Result<(), HubError> {
        let update = TaskUpdate {
            state,
            progress,
            result: None,
            error: error.map(str::to_string),
        };
        self.update_task_with(now, task_id, update)
    }

    /// ag2's `update_task`. A terminal task is left unchanged; non-empty progress is merged and
    /// stamps `last_progress_at`; a new terminal state stamps `completed_at` and audits
    /// `task_terminated`.
    ///
    /// # Errors
    /// `NotFoundError("task not found: <id>")`.
    pub fn update_task_with(
        &mut self,
        now: Now,
        task_id: &str,
        update: TaskUpdate,
    ) -> Result<(), HubError> {
        let task = self
            .tasks
            .tasks
            .get_mut(task_id)
            .ok_or_else(|| HubError::not_found(format!("task not found: {task_id}")))?;
        if task.state.is_terminal() {
            return Ok(());
        }
        if !update.progress.is_empty() {
            task.progress.extend(update.progress);
            task.last_progress_at = Some(now.wall);
        }
        if update.result.is_some() {
            task.result = update.result;
        }
        let error = update.error.unwrap_or_default();
        if !error.is_empty() {
            task.error = error.clone();
        }
        let Some(state) = update.state else {
            return Ok(());
        };
        task.state = state;
        if state.is_terminal() {
            task.completed_at = Some(now.wall);
            self.audit_task(now, task_id, &error);
        }
        Ok(())
    }

    /// Stores a checkpoint for a task (last write wins).
    pub fn checkpoint_task(&mut self, task_id: &str, state: Value) {
        self.tasks.checkpoints.insert(task_id.to_string(), state);
    }

    /// The last checkpoint of a task.
    pub fn read_task_checkpoint(&self, task_id: &str) -> Option<&Value> {
        self.tasks.checkpoints.get(task_id)
    }

    /// ag2's `_transition_task` to EXPIRED: the error becomes the reason; audit.
    fn expire_task(&mut self, now: Now, task_id: &str, reason: &str) {
        let Some(task) = self.tasks.tasks.get_mut(task_id) else {
            return;
        };
        if task.state.is_terminal() {
            return;
        }
        task.state = TaskState::Expired;
        task.completed_at = Some(now.wall);
        if !reason.is_empty() {
            task.error = reason.to_string();
        } else if task.error.is_empty() {
            task.error = "expired".to_string();
        }
        self.audit_task(now, task_id, reason);
    }

    fn audit_task(&mut self, now: Now, task_id: &str, reason: &str) {
        let task = &self.tasks.tasks[task_id];
        let at = task.completed_at.unwrap_or(now.wall);
        let record = TaskTermination {
            task_id,
            owner_id: task.owner_id,
            channel_id: task.channel_id,
            outcome: task.state.as_str(),
            capability: task.capability.as_deref(),
            reason,
        };
        self.audit.task_terminated(at, &record);
    }

    /// Expires the live tasks of a channel that is ending (reason `channel_closed`, also when the
    /// channel expired).
    pub(super) fn cascade_tasks(&mut self, now: Now, channel: ChannelId) {
        let ids: Vec<String> = self
            .tasks
            .by_channel
            .get(&channel)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for task_id in ids {
            self.expire_task(now, &task_id, "channel_closed");
        }
    }

    /// Expires every live task whose own `expires_at` has passed.
    pub(super) fn expire_tasks(&mut self, now: Now) {
        let due: Vec<String> = self
            .tasks
            .tasks
            .values()
            .filter(|task| !task.state.is_terminal())
            .filter(|task| {
                task.expires_at
                    .is_some_and(|at| at.micros <= now.wall.micros)
            })
            .map(|task| task.task_id.clone())
            .collect();
        for task_id in due {
            self.expire_task(now, &task_id, "ttl_expired");
        }
    }
}
