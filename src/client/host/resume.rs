//! `resume_pending_turns` after a re-attach: each pending turn's trigger re-run through the
//! handler, one after the other.

use super::*;

impl AgentHost {
    pub(super) fn on_resume(
        &mut self,
        now: Instant,
        task: u64,
        stage: Stage,
        result: Result<Arc<Value>, HubError>,
    ) {
        let Ok(value) = result else {
            // ag2's resume raises; nothing more is re-run.
            self.tasks.remove(&task);
            return;
        };
        match stage {
            Stage::PendingTurns => {
                let turns = value
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|turn| {
                                let channel = turn.get("channel_id")?.as_str()?;
                                let trigger = turn.get("triggering_envelope_id")?.as_str()?;
                                Some((channel.to_string(), trigger.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(Task {
                    work: Work::Resume { turns: slot, .. },
                    ..
                }) = self.tasks.get_mut(&task)
                {
                    *slot = turns;
                }
                self.next_resume(now, task);
            }
            Stage::ResumeWal => {
                let trigger = match self.tasks.get(&task) {
                    Some(Task {
                        work: Work::Resume { turns, .. },
                        ..
                    }) => turns.front().map(|(_, id)| id.clone()),
                    _ => None,
                };
                let found = value.as_array().and_then(|wal| {
                    wal.iter()
                        .find(|e| {
                            e.get("envelope_id").and_then(Value::as_str) == trigger.as_deref()
                        })
                        .cloned()
                });
                if let Some(Task {
                    work: Work::Resume { turns, .. },
                    ..
                }) = self.tasks.get_mut(&task)
                {
                    turns.pop_front();
                }
                match found {
                    Some(raw) => {
                        let before = self.next_task;
                        self.on_notify(now, raw, false);
                        let handler = before + 1;
                        if self.tasks.contains_key(&handler) {
                            if let Some(Task {
                                stage,
                                work: Work::Resume { waiting, .. },
                                ..
                            }) = self.tasks.get_mut(&task)
                            {
                                *stage = Stage::ResumeWaits;
                                *waiting = Some(handler);
                            }
                        } else {
                            self.next_resume(now, task);
                        }
                    }
                    None => self.next_resume(now, task),
                }
            }
            _ => {}
        }
    }

    pub(super) fn next_resume(&mut self, now: Instant, task: u64) {
        let next = match self.tasks.get(&task) {
            Some(Task {
                work: Work::Resume { turns, .. },
                ..
            }) => turns.front().cloned(),
            _ => return,
        };
        match next {
            Some((channel, _)) => self.call(
                now,
                task,
                Stage::ResumeWal,
                "read_wal",
                read_wal(Value::String(channel)),
            ),
            None => {
                self.tasks.remove(&task);
            }
        }
    }

    pub(super) fn wake_resumes(&mut self, now: Instant) {
        let finished = std::mem::take(&mut self.finished);
        let waiting: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                matches!(&t.work, Work::Resume { waiting: Some(h), .. } if finished.contains(h))
            })
            .map(|(id, _)| *id)
            .collect();
        for task in waiting {
            if let Some(Task {
                work: Work::Resume { waiting, .. },
                ..
            }) = self.tasks.get_mut(&task)
            {
                *waiting = None;
            }
            self.next_resume(now, task);
        }
    }
}
