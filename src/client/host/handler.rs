//! The default notify handler as a task over RPCs, and ag2's `HumanClient.receive`.

use super::*;

impl AgentHost {
    pub(super) fn on_notify(&mut self, now: Instant, raw: Value, receipt: bool) {
        let Some(envelope) = Envelope::from_json(&raw) else {
            // Nothing to act on; ag2's handler would fail and still ack.
            if receipt {
                self.receipt(self.current, &raw);
            }
            return;
        };
        let envelope = Arc::new(envelope);
        if receipt {
            self.events.push(HostEvent::Received {
                connection: self.current,
                envelope: envelope.clone(),
            });
        }
        let task = self.start_task(
            Stage::GetChannel,
            Work::Handler {
                envelope: envelope.clone(),
                receipt,
                raw,
                outcome: None,
                until: now,
            },
        );
        let mode = self.model.handler;
        let Some(me) = self.id else {
            self.end_handler(task);
            return;
        };
        if mode == HandlerMode::Silent {
            self.end_handler(task);
            return;
        }
        if let HandlerMode::Human { auto_ack } = mode {
            // HumanClient.receive: the ack is awaited before the envelope is queued.
            let invite = envelope.event_type == EventType::CHANNEL_INVITE;
            if auto_ack && invite && envelope.sender_id != me {
                let ack = invite_ack(&envelope, me);
                let params = map_of([("envelope", ack.to_json())]);
                self.call(now, task, Stage::HumanAck, "post_envelope", params);
            } else {
                self.human_deliver(now, task, me);
            }
            return;
        }
        if envelope.event_type == EventType::CHANNEL_INVITE {
            if self.disconnected {
                self.end_handler(task);
                return;
            }
            let ack = invite_ack(&envelope, me);
            let params = map_of([("envelope", ack.to_json())]);
            self.call(now, task, Stage::AckInvite, "post_envelope", params);
            return;
        }
        if mode == HandlerMode::AckOnly || EventType::is_protocol(&envelope.event_type) {
            self.end_handler(task);
            return;
        }
        let params = map_of([("channel_id", Value::String(envelope.channel_id.to_string()))]);
        self.call(now, task, Stage::GetChannel, "get_channel", params);
    }

    pub(super) fn handler_envelope(&self, task: u64) -> Option<Arc<Envelope>> {
        match &self.tasks.get(&task)?.work {
            Work::Handler { envelope, .. } => Some(envelope.clone()),
            _ => None,
        }
    }

    pub(super) fn on_handler_response(
        &mut self,
        now: Instant,
        task: u64,
        stage: Stage,
        result: Result<Arc<Value>, HubError>,
        think: &mut dyn ThinkTime,
    ) {
        let Some(envelope) = self.handler_envelope(task) else {
            return;
        };
        let Some(me) = self.id else {
            self.end_handler(task);
            return;
        };
        let channel = Value::String(envelope.channel_id.to_string());
        match stage {
            // A failed auto-ack is suppressed; the envelope is queued either way.
            Stage::HumanAck => return self.human_deliver(now, task, me),
            // A push callback's refused post is logged and skipped.
            Stage::HumanPost => return self.end_handler(task),
            _ => {}
        }
        if stage == Stage::AckInvite || stage == Stage::Report {
            // Invite-ack failures are suppressed; so are failures to report a failure.
            self.end_handler(task);
            return;
        }
        let value = match result {
            Ok(value) => value,
            Err(error) => return self.report(now, task, &error),
        };
        let me_text = Value::String(me.to_string());
        match stage {
            Stage::GetChannel => {
                self.cache_channel(&value);
                let missing = self.missing_names(&value);
                if !missing.is_empty() {
                    let params = map_of([("agent_ids", Value::Array(missing))]);
                    self.call(now, task, Stage::Names, "names_for", params);
                    return;
                }
                self.after_metadata(now, task, &envelope, me)
            }
            Stage::Names => {
                self.cache_names(&value);
                self.after_metadata(now, task, &envelope, me)
            }
            Stage::Causation => {
                if !value.is_null() {
                    return self.end_handler(task);
                }
                let params = map_of([
                    ("channel_id", channel),
                    ("sender_id", me_text),
                    ("event_type", Value::Null),
                ]);
                self.call(now, task, Stage::CanSend, "can_send", params);
            }
            Stage::CanSend => {
                if !py_truthy(&value) {
                    return self.end_handler(task);
                }
                self.call(now, task, Stage::History, "read_wal", read_wal(channel));
            }
            Stage::History => {
                let kind = self
                    .channels
                    .get(&envelope.channel_id)
                    .and_then(adapter_kind_of);
                let usable = kind.is_some_and(|kind| has_turn_input(kind, &envelope, me));
                if !usable {
                    return self.end_handler(task);
                }
                self.call(now, task, Stage::StateBefore, "read_wal", read_wal(channel));
            }
            Stage::StateBefore => {
                if let Some(id) = envelope.envelope_id {
                    self.events.push(HostEvent::TurnStarted(id));
                }
                let outcome = self.model.ask();
                let until = now.plus_micros(think.turn_micros(&outcome));
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.stage = Stage::Thinking;
                    if let Work::Handler {
                        outcome: slot,
                        until: at,
                        ..
                    } = &mut t.work
                    {
                        *slot = Some(Box::new(outcome));
                        *at = until;
                    }
                }
            }
            Stage::StateAfter => self.post_round(now, task, &envelope, me),
            _ => self.end_handler(task),
        }
    }

    /// The rest of `HumanClient.receive`: queue the envelope, then run the push callback (the
    /// next scripted reply to a substantive envelope from someone else).
    pub(super) fn human_deliver(&mut self, now: Instant, task: u64, me: AgentId) {
        let Some(Task {
            work: Work::Handler { envelope, raw, .. },
            ..
        }) = self.tasks.get(&task)
        else {
            return;
        };
        let (envelope, raw) = (envelope.clone(), raw.clone());
        self.pulled.push_back(raw);
        let answers = !EventType::is_protocol(&envelope.event_type) && envelope.sender_id != me;
        let reply = match self.model.turns.get(self.model.used) {
            Some(items) if answers => items.iter().find_map(|item| match item {
                crate::client::TurnItem::Text(text) => Some(text.clone()),
                _ => None,
            }),
            _ => None,
        };
        if answers && self.model.used < self.model.turns.len() {
            self.model.used += 1;
        }
        let Some(text) = reply.filter(|text| !text.is_empty()) else {
            return self.end_handler(task);
        };
        let post = Envelope::new(
            envelope.channel_id,
            me,
            None,
            EventType::TEXT,
            map_of([("text", Value::String(text))]),
        );
        let params = map_of([("envelope", post.to_json())]);
        self.call(now, task, Stage::HumanPost, "post_envelope", params);
    }

    pub(super) fn after_metadata(
        &mut self,
        now: Instant,
        task: u64,
        envelope: &Envelope,
        me: AgentId,
    ) {
        let active = self
            .channels
            .get(&envelope.channel_id)
            .and_then(|m| m.get("state"))
            .and_then(Value::as_str)
            == Some("active");
        if !active {
            return self.end_handler(task);
        }
        let params = map_of([
            ("channel_id", Value::String(envelope.channel_id.to_string())),
            ("sender_id", Value::String(me.to_string())),
            ("causation_id", Value::String(envelope.id_text())),
        ]);
        self.call(
            now,
            task,
            Stage::Causation,
            "find_envelope_by_causation",
            params,
        );
    }

    pub(super) fn turn_done(&mut self, now: Instant, task: u64) {
        let Some(envelope) = self.handler_envelope(task) else {
            return;
        };
        let failed = match self.tasks.get(&task).map(|t| &t.work) {
            Some(Work::Handler {
                outcome: Some(outcome),
                ..
            }) => outcome.reply.clone().err(),
            _ => None,
        };
        if let Some(error) = failed {
            return self.report(now, task, &error);
        }
        let channel = Value::String(envelope.channel_id.to_string());
        self.call(now, task, Stage::StateAfter, "read_wal", read_wal(channel));
    }

    pub(super) fn post_round(&mut self, now: Instant, task: u64, trigger: &Envelope, me: AgentId) {
        let Some(Work::Handler {
            outcome: Some(outcome),
            ..
        }) = self.tasks.get(&task).map(|t| t.work.clone())
        else {
            return self.end_handler(task);
        };
        let graph = self
            .channels
            .get(&trigger.channel_id)
            .filter(|m| adapter_kind_of(m) == Some(AdapterKind::Workflow))
            .and_then(|m| m.get("knobs")?.get("graph")?.as_object().cloned())
            .and_then(|data| Graph::load(&data).ok());
        let round = Round {
            workflow: graph.as_ref(),
            names: &self.names,
        };
        let body = outcome.reply.clone().unwrap_or_default();
        let Some(reply) = round.envelope(me, trigger, &body, &outcome.tools) else {
            return self.end_handler(task);
        };
        if self.disconnected {
            return self.report(now, task, &disconnected_error());
        }
        let params = map_of([("envelope", reply.to_json())]);
        self.call(now, task, Stage::Post, "post_envelope", params);
    }

    /// `report_turn_failure` over the wire: the exception travels as `str(exc)`.
    pub(super) fn report(&mut self, now: Instant, task: u64, error: &HubError) {
        let Some(envelope) = self.handler_envelope(task) else {
            return;
        };
        let params = map_of([
            ("channel_id", Value::String(envelope.channel_id.to_string())),
            (
                "agent_id",
                self.id
                    .map_or(Value::Null, |id| Value::String(id.to_string())),
            ),
            ("envelope_id", Value::String(envelope.id_text())),
            ("error", Value::String(error.message.clone())),
        ]);
        self.call(now, task, Stage::Report, "report_turn_failure", params);
    }

    /// The handler returned: ack the delivery on the connection it came from.
    pub(super) fn end_handler(&mut self, task: u64) {
        let Some(t) = self.tasks.remove(&task) else {
            return;
        };
        if let Work::Handler {
            receipt,
            envelope,
            outcome,
            raw,
            ..
        } = &t.work
        {
            if let Some(id) = envelope.envelope_id {
                if outcome.is_some() {
                    self.events.push(HostEvent::TurnEnded(id));
                }
                let live = self.links.get(&t.link).is_some_and(|l| !l.is_closed());
                if live && self.id.is_some() {
                    self.events.push(HostEvent::Handled(id));
                }
            }
            if *receipt {
                self.receipt(t.link, raw);
            }
        }
        self.finished.push(task);
    }

    pub(super) fn receipt(&mut self, gen: u32, raw: &Value) {
        let Some(me) = self.id else { return };
        if let Some(link) = self.links.get_mut(&gen) {
            link.receipt(me, raw, Ok(()));
        }
    }
}
