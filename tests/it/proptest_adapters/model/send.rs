//! The model of `send` steps: the runner's client checks, `post_envelope`'s checks in ag2's
//! order, each adapter's `validate_send`, fold and close, inbox accounting and dispatch.

use super::*;

/// Sends: the runner's client checks, then `post_envelope` in ag2's order (spec §2.6), the
/// adapter rules (§3), inbox accounting (§5) and dispatch (§2.7).
impl Model<'_> {
    pub(super) fn send(&mut self, idx: usize, channel: Option<usize>, send: &Send) -> Expect {
        let channel = match self.label(idx, channel) {
            Ok(channel) => channel,
            Err(expect) => return expect,
        };
        let by = send.by;
        // Through the client: the runner's `get_channel` lookup, then the client of an
        // unregistered agent refuses; `via: hub` goes straight to `post_envelope`.
        if !send.via_hub {
            if channel.is_none() {
                return self.not_found_channel(None);
            }
            if !self.agents[by].registered {
                return err("RuntimeError", "AgentClient is disconnected");
            }
        }
        if let Some(refused) = self.check_post(channel, send) {
            return refused;
        }
        let open = channel.expect("check_post refuses unknown channels");
        if let Some(refused) = self.validate_send(open, send) {
            return refused;
        }
        self.accept(open, send);
        Expect::Ok
    }

    /// `post_envelope` up to the adapter (steps 1-8).
    fn check_post(&self, channel: Option<usize>, send: &Send) -> Option<Expect> {
        let by = send.by;
        if !self.agents[by].registered {
            return Some(err(
                "NotFoundError",
                format!("sender not registered: {}", self.ids.agents[by]),
            ));
        }
        // authorize_send: explicit recipients other than the sender that still have a
        // passport; a broadcast skips the check (spec §8.6).
        for recipient in send.audience.iter().flatten() {
            if *recipient != by
                && self.agents[*recipient].registered
                && !glob(self.agents[by].outbound_to, NAMES[*recipient])
            {
                return Some(err(
                    "AccessDeniedError",
                    format!(
                        "sender '{}' not permitted to send to '{}'",
                        NAMES[by], NAMES[*recipient]
                    ),
                ));
            }
        }
        let Some(open) = channel else {
            return Some(self.not_found_channel(None));
        };
        let c = &self.channels[&open];
        let cid = self.ids.channel(open);
        match c.state {
            State::Closed(_) => return Some(err("ProtocolError", format!("'{cid}' is closed"))),
            State::Expired => return Some(err("ProtocolError", format!("'{cid}' is expired"))),
            _ => {}
        }
        let protocol = matches!(send.event, Event::Ack | Event::Reject);
        if !protocol && c.state != State::Active {
            return Some(err(
                "ProtocolError",
                format!("'{cid}' not active (state=pending)"),
            ));
        }
        // An unregistered agent stays a participant (spec §8.25); it fails earlier, as a sender.
        if !c.participants.contains(&by) {
            return Some(err(
                "ProtocolError",
                format!(
                    "'{cid}' only accepts sends from participants, got '{}'",
                    self.ids.agents[by]
                ),
            ));
        }
        if protocol {
            return None;
        }
        // The inbox cap: the audience in order, or the other participants; registered
        // recipients only, bound or not (spec §2.6 step 8, §5).
        for recipient in self.recipients(open, send) {
            let agent = &self.agents[recipient];
            if recipient == by || !agent.registered {
                continue;
            }
            if agent.max_pending > 0 && agent.pending as i64 >= agent.max_pending {
                return Some(err(
                    "InboxFull",
                    format!(
                        "recipient '{}' inbox at capacity ({} >= {})",
                        self.ids.agents[recipient], agent.pending, agent.max_pending
                    ),
                ));
            }
        }
        None
    }

    fn recipients(&self, open: usize, send: &Send) -> Vec<usize> {
        match &send.audience {
            Some(audience) => audience.clone(),
            None => self.channels[&open]
                .participants
                .iter()
                .copied()
                .filter(|p| *p != send.by)
                .collect(),
        }
    }

    /// The adapter's `validate_send` (spec §3); protocol events pass every adapter, and only
    /// texts move consulting and discussion (a packet never completes a consulting, §8.37).
    fn validate_send(&self, open: usize, send: &Send) -> Option<Expect> {
        let c = &self.channels[&open];
        let cid = self.ids.channel(open);
        let ids = &self.ids.agents;
        let by = send.by;
        let text = matches!(send.event, Event::Text(_));
        match &c.adapter {
            Adapter::Consulting { sent, .. } if text => {
                let respondent = c.participants.iter().copied().find(|p| *p != c.creator);
                if !sent && by != c.creator {
                    return Some(err(
                        "ProtocolError",
                        format!(
                            "'{cid}' expects first send from initiator '{}', got '{}'",
                            ids[c.creator], ids[by]
                        ),
                    ));
                }
                if *sent && Some(by) != respondent {
                    return Some(err(
                        "ProtocolError",
                        format!("'{cid}' expects reply from respondent"),
                    ));
                }
                None
            }
            Adapter::Discussion { expected, .. } if text && by != *expected => Some(err(
                "ProtocolError",
                format!(
                    "discussion channel '{cid}' expects '{}' to speak, got '{}'",
                    ids[*expected], ids[by]
                ),
            )),
            Adapter::Workflow { expected, .. }
                if matches!(send.event, Event::Text(_) | Event::Packet(_))
                    && *expected != Some(Speaker::Agent(by)) =>
            {
                // While the channel is open the expected speaker is never empty: a decision to
                // close closes it in the same post.
                let expected = match expected.expect("an open workflow expects someone") {
                    Speaker::Agent(agent) => ids[agent].clone(),
                    Speaker::Name(agent) => NAMES[agent].to_string(),
                };
                Some(err(
                    "ProtocolError",
                    format!(
                        "workflow '{cid}' expects '{expected}' to speak, got '{}'",
                        ids[by]
                    ),
                ))
            }
            _ => None,
        }
    }

    /// Append, fold, `on_accepted`, the sender's counter, ack/reject handling, dispatch, then
    /// the adapter's close (spec §2.6 steps 9-14).
    fn accept(&mut self, open: usize, send: &Send) {
        let by = send.by;
        let close = self.fold(open, send);
        match send.event {
            Event::Ack => return self.on_ack(open, by),
            Event::Reject => return self.on_reject(open, by),
            _ => {}
        }
        // The sender's own post is what drains its counter, in any channel (spec §8.11).
        let agent = &mut self.agents[by];
        agent.pending = agent.pending.saturating_sub(1);
        // Dispatch: a recipient whose `inbound_from` refuses the sender is skipped silently; an
        // unregistered one has no endpoint; each other one counts one pending envelope, the
        // sender too when it is in its own audience (spec §2.7, §8.7).
        for recipient in self.recipients(open, send) {
            let agent = &self.agents[recipient];
            if !agent.registered || (recipient != by && !glob(agent.inbound_from, NAMES[by])) {
                continue;
            }
            self.agents[recipient].pending += 1;
        }
        if let Some(reason) = close {
            self.end(open, State::Closed(reason));
        }
    }

    /// The adapter's fold and `on_accepted`: the close reason, if the channel closes.
    fn fold(&mut self, open: usize, send: &Send) -> Option<String> {
        let now = self.now;
        let c = self.channels.get_mut(&open).expect("known channel");
        let creator = c.creator;
        match (&mut c.adapter, &send.event) {
            (
                Adapter::Consulting {
                    sent,
                    replied,
                    question,
                },
                Event::Text(_),
            ) => {
                if !*sent {
                    *sent = true;
                    let respondent = c.participants.iter().copied().find(|p| *p != creator);
                    let addressed = match &send.audience {
                        None => true,
                        Some(audience) => respondent.is_some_and(|r| audience.contains(&r)),
                    };
                    *question = Some((now, addressed));
                    None
                } else {
                    *replied = true;
                    Some("consulting_complete".to_string())
                }
            }
            (Adapter::Discussion { order, expected }, Event::Text(_)) => {
                let at = order
                    .iter()
                    .position(|p| *p == send.by)
                    .expect("a participant");
                *expected = order[(at + 1) % order.len()];
                None
            }
            (
                Adapter::Workflow {
                    graph,
                    order,
                    expected,
                    turns,
                },
                Event::Text(_) | Event::Packet(_),
            ) => {
                let (next, reason) = route(graph, order, creator, send);
                *expected = next;
                *turns += 1;
                // A decision to terminate wins over `max_turns`; `max_turns: 0` closes after
                // the first turn (spec §8.24).
                match (next, graph.max_turns) {
                    (None, _) => Some(if reason.is_empty() {
                        "workflow_terminated".to_string()
                    } else {
                        reason
                    }),
                    (Some(_), Some(max)) if *turns >= max => Some("max_turns".to_string()),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// The workflow fold's routing (spec §3.4): a finish packet closes, a handoff packet with a
/// target names the next speaker verbatim, unvalidated (a name or a non-participant stalls the
/// channel, §8.21), anything else asks the graph.
fn route(
    graph: &GraphSpec,
    order: &[usize],
    creator: usize,
    send: &Send,
) -> (Option<Speaker>, String) {
    let tool = match send.event {
        Event::Packet(Routing::Finish(reason)) => {
            let reason = if reason.is_empty() {
                "finished"
            } else {
                reason
            };
            return (None, reason.to_string());
        }
        Event::Packet(Routing::HandoffId(agent)) => {
            return (Some(Speaker::Agent(agent)), String::new())
        }
        Event::Packet(Routing::HandoffName(agent)) => {
            return (Some(Speaker::Name(agent)), String::new())
        }
        Event::Packet(Routing::Tool) => true,
        _ => false,
    };
    let mut transitions: Vec<_> = graph.transitions.iter().collect();
    transitions.sort_by_key(|edge| edge.priority);
    let fires = |when: &Cond| match when {
        Cond::Always => true,
        Cond::FromSpeaker(agent) => *agent == send.by,
        Cond::ToolCalled => tool,
    };
    let target = transitions
        .iter()
        .find(|edge| fires(&edge.when))
        .map(|edge| edge.then)
        .or(graph.default)
        .unwrap_or(Target::Terminate("after_work"));
    match target {
        Target::Agent(agent) => (Some(Speaker::Agent(agent)), String::new()),
        Target::RoundRobin => {
            let at = order
                .iter()
                .position(|p| *p == send.by)
                .expect("a participant");
            (
                Some(Speaker::Agent(order[(at + 1) % order.len()])),
                String::new(),
            )
        }
        Target::Stay => (Some(Speaker::Agent(send.by)), String::new()),
        Target::RevertToInitiator => (Some(Speaker::Agent(creator)), String::new()),
        Target::Terminate(reason) => (None, reason.to_string()),
    }
}
