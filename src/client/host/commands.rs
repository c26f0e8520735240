//! The client's own calls: the scenario's commands (register, open, post, close, set_rule,
//! unregister, any other RPC), their answers, and the name and channel caches they fill.

use super::*;

impl AgentHost {
    /// Gives the client a command; its result comes from [`AgentHost::poll_result`].
    pub fn command(
        &mut self,
        now: Instant,
        command: Command,
        think: &mut dyn ThinkTime,
    ) -> CommandId {
        self.next_command += 1;
        let id = self.next_command;
        let agent = self.id.map(|a| Value::String(a.to_string()));
        let work = Work::Command {
            id,
            open: None,
            result: None,
        };
        let task = self.start_task(Stage::Single, work);
        match command {
            Command::Register { rule } => {
                let params = map_of([
                    (
                        "passport",
                        wire::passport_json(&Passport::named(&self.model.name)),
                    ),
                    ("resume", wire::resume_json(&Resume::default())),
                    ("skill_md", Value::Null),
                    ("rule", rule),
                ]);
                self.call(now, task, Stage::Register, "register", params);
            }
            Command::Open(request) => {
                let OpenRequest {
                    targets,
                    manifest_type,
                    ttl,
                    knobs,
                    intent,
                    labels,
                } = *request;
                if self.disconnected {
                    self.finish_command(task, Err(disconnected_error()));
                } else {
                    let params = map_of([
                        ("creator_id", agent.unwrap_or(Value::Null)),
                        ("manifest_type", Value::String(manifest_type)),
                        ("manifest_version", Value::from(1)),
                        ("participants", Value::Null),
                        ("required_acks", Value::Null),
                        ("ttl", ttl),
                        ("knobs", knobs),
                        ("intent", intent),
                        ("labels", labels),
                    ]);
                    if let Some(t) = self.tasks.get_mut(&task) {
                        t.work = Work::Command {
                            id,
                            open: Some(Box::new(OpenState {
                                targets: targets.into(),
                                ids: Vec::new(),
                                params,
                            })),
                            result: None,
                        };
                    }
                    self.next_target(now, task);
                }
            }
            Command::Post(envelope) => {
                if self.disconnected {
                    self.finish_command(task, Err(disconnected_error()));
                } else {
                    let params = map_of([("envelope", envelope.to_json())]);
                    self.call(now, task, Stage::Single, "post_envelope", params);
                }
            }
            Command::Close { channel, reason } => {
                let params = map_of([
                    ("channel_id", Value::String(channel.to_string())),
                    ("reason", Value::String(reason)),
                ]);
                self.call(now, task, Stage::Single, "close_channel", params);
            }
            Command::SetRule { rule } => {
                let params = map_of([("agent_id", agent.unwrap_or(Value::Null)), ("rule", rule)]);
                self.call(now, task, Stage::Single, "set_rule", params);
            }
            Command::Call { op, params } => {
                self.call(now, task, Stage::Single, &op, params);
            }
            Command::Unregister if matches!(self.model.handler, HandlerMode::Human { .. }) => {
                let error = HubError::named(
                    "AttributeError",
                    "'HumanClient' object has no attribute 'unregister'",
                );
                self.finish_command(task, Err(error));
            }
            Command::Unregister => {
                if self.disconnected {
                    self.finish_command(task, Ok(Value::Null));
                } else {
                    let params = map_of([("agent_id", agent.unwrap_or(Value::Null))]);
                    self.call(now, task, Stage::Unregister, "unregister", params);
                }
            }
        }
        self.pump(now, think);
        id
    }

    pub(super) fn finish_command(&mut self, task: u64, result: Result<Value, HubError>) {
        if let Some(Task {
            work: Work::Command { id, .. },
            ..
        }) = self.tasks.remove(&task)
        {
            self.results.push_back((id, result));
        }
    }

    pub(super) fn next_target(&mut self, now: Instant, task: u64) {
        let Some(Task {
            work: Work::Command {
                open: Some(open), ..
            },
            ..
        }) = self.tasks.get_mut(&task)
        else {
            return;
        };
        if let Some(target) = open.targets.pop_front() {
            let params = map_of([("name_or_id", Value::String(target))]);
            self.call(now, task, Stage::GetAgent, "get_agent", params);
        } else {
            let mut params = open.params.clone();
            params.insert("participants".into(), Value::Array(open.ids.clone()));
            self.call(now, task, Stage::CreateChannel, "create_channel", params);
        }
    }

    pub(super) fn cache_passport(&mut self, passport: &Value) {
        let name = passport.get("name").and_then(Value::as_str);
        let id = passport
            .get("agent_id")
            .and_then(Value::as_str)
            .and_then(AgentId::parse);
        if let (Some(name), Some(id)) = (name, id) {
            self.names.insert(name.to_string(), id);
        }
    }

    /// Participants of a metadata record missing from the name cache (`_ensure_names`).
    pub(super) fn missing_names(&self, metadata: &Value) -> Vec<Value> {
        let known: Vec<String> = self.names.values().map(ToString::to_string).collect();
        metadata
            .get("participants")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|p| p.get("agent_id").and_then(Value::as_str))
                    .filter(|id| !id.is_empty() && !known.iter().any(|k| k == id))
                    .map(Value::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn cache_channel(&mut self, metadata: &Value) {
        if let Some(channel) = metadata
            .get("channel_id")
            .and_then(Value::as_str)
            .and_then(ChannelId::parse)
        {
            self.channels.insert(channel, metadata.clone());
        }
    }

    pub(super) fn cache_names(&mut self, mapping: &Value) {
        if let Some(map) = mapping.as_object() {
            for (id, name) in map {
                if let (Some(id), Some(name)) = (AgentId::parse(id), name.as_str()) {
                    self.names.insert(name.to_string(), id);
                }
            }
        }
    }

    pub(super) fn on_response(
        &mut self,
        now: Instant,
        task: u64,
        shared: Result<Arc<Value>, HubError>,
        think: &mut dyn ThinkTime,
    ) {
        let Some(stage) = self.tasks.get(&task).map(|t| t.stage) else {
            return;
        };
        match stage {
            Stage::PendingTurns | Stage::ResumeWal | Stage::ResumeWaits => {
                return self.on_resume(now, task, stage, shared)
            }
            Stage::Register
            | Stage::GetAgent
            | Stage::CreateChannel
            | Stage::OpenNames
            | Stage::Single
            | Stage::Unregister => {}
            _ => return self.on_handler_response(now, task, stage, shared, think),
        }
        // Commands keep their results: take them out of the share (they are small).
        let result = shared.map(Arc::unwrap_or_clone);
        match stage {
            Stage::Register => {
                if let Ok(passport) = &result {
                    self.cache_passport(passport);
                    let id = passport
                        .get("agent_id")
                        .and_then(Value::as_str)
                        .and_then(AgentId::parse);
                    if let Some(id) = id {
                        self.id = Some(id);
                        self.events.push(HostEvent::Registered(id));
                        if let Some(link) = self.links.get_mut(&self.current) {
                            link.adopt(id);
                        }
                    }
                }
                self.finish_command(task, result);
            }
            Stage::GetAgent => match result {
                Ok(passport) => {
                    self.cache_passport(&passport);
                    if let Some(Task {
                        work:
                            Work::Command {
                                open: Some(open), ..
                            },
                        ..
                    }) = self.tasks.get_mut(&task)
                    {
                        open.ids
                            .push(passport.get("agent_id").cloned().unwrap_or(Value::Null));
                    }
                    self.next_target(now, task);
                }
                Err(error) => self.finish_command(task, Err(error)),
            },
            Stage::CreateChannel => match result {
                Ok(metadata) => {
                    self.cache_channel(&metadata);
                    let missing = self.missing_names(&metadata);
                    if let Some(Task {
                        work: Work::Command { result, .. },
                        ..
                    }) = self.tasks.get_mut(&task)
                    {
                        *result = Some(metadata);
                    }
                    if missing.is_empty() {
                        self.finish_open(task);
                    } else {
                        let params = map_of([("agent_ids", Value::Array(missing))]);
                        self.call(now, task, Stage::OpenNames, "names_for", params);
                    }
                }
                Err(error) => self.finish_command(task, Err(error)),
            },
            Stage::OpenNames => match result {
                Ok(mapping) => {
                    self.cache_names(&mapping);
                    self.finish_open(task);
                }
                Err(error) => self.finish_command(task, Err(error)),
            },
            Stage::Single => self.finish_command(task, result),
            Stage::Unregister => {
                if result.is_ok() {
                    self.disconnected = true;
                    self.events.push(HostEvent::Unregistered);
                }
                self.finish_command(task, result.map(|_| Value::Null));
            }
            _ => {}
        }
    }

    pub(super) fn finish_open(&mut self, task: u64) {
        let metadata = match self.tasks.get(&task) {
            Some(Task {
                work: Work::Command { result, .. },
                ..
            }) => result.clone().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        self.finish_command(task, Ok(metadata));
    }
}
