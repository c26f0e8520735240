//! The model of `open` steps: the runner's lookups, then `create_channel`'s checks in ag2's
//! order, the invites, and the acks of the `ack_only` invitees as the step settles.

use super::*;

/// Opens: the runner's lookups, then `create_channel`'s checks in ag2's order (spec §2.4).
impl Model<'_> {
    pub(super) fn open(&mut self, idx: usize, open: &Open) -> Expect {
        let outcome = self.create(idx, open);
        if open.wait {
            return outcome;
        }
        // A background open's record shows its eventual outcome: an immediate failure now,
        // otherwise whatever ends the handshake.
        match (&outcome, self.channels.get_mut(&idx)) {
            (Expect::Ok, Some(channel)) if channel.state == State::Pending => {
                channel.waiter = true;
            }
            _ => {
                self.background.insert(idx, outcome);
            }
        }
        Expect::Ok
    }

    fn create(&mut self, idx: usize, open: &Open) -> Expect {
        let by = open.by;
        if !self.agents[by].registered {
            return err("RuntimeError", "AgentClient is disconnected");
        }
        if let Some(target) = open.targets.iter().find(|t| !self.agents[**t].registered) {
            return err(
                "NotFoundError",
                format!("agent not found: {}", NAMES[*target]),
            );
        }
        let participants = super::super::ops::participants(open);
        let invitees: Vec<usize> = participants.iter().copied().filter(|p| *p != by).collect();
        for invitee in &invitees {
            if !glob(self.agents[*invitee].inbound_from, NAMES[by]) {
                return err(
                    "AccessDeniedError",
                    format!(
                        "invitee '{}' does not accept inbound from '{}'",
                        NAMES[*invitee], NAMES[by]
                    ),
                );
            }
        }
        let adapter = match self.validate_create(open, &participants) {
            Ok(adapter) => adapter,
            Err(expect) => return expect,
        };
        let ttl_seconds = match open.ttl {
            Ttl::CreatorDefault => DEFAULT_TTL_SECONDS,
            Ttl::Seconds(seconds) => i64::from(seconds),
            Ttl::Never => 0,
        };
        self.channels.insert(
            idx,
            Channel {
                creator: by,
                participants,
                state: State::Pending,
                pending_acks: invitees.clone(),
                rejected: false,
                created_at: self.now,
                expires_at: (ttl_seconds > 0).then_some(self.now + ttl_seconds * MICROS),
                adapter,
                waiter: false,
            },
        );
        // Each invite is a post from the creator to [invitee]: the creator's `outbound_to`
        // applies, and a refusal leaves the channel closed `invite_failed` (spec §2.4 step 13).
        for invitee in &invitees {
            if !glob(self.agents[by].outbound_to, NAMES[*invitee]) {
                self.end(idx, State::Closed("invite_failed".to_string()));
                return err(
                    "AccessDeniedError",
                    format!(
                        "sender '{}' not permitted to send to '{}'",
                        NAMES[by], NAMES[*invitee]
                    ),
                );
            }
        }
        // The ack_only invitees ack as the step settles; dave never does.
        for invitee in invitees.iter().filter(|i| **i != SILENT) {
            self.on_ack(idx, *invitee);
        }
        let state = &self.channels[&idx].state;
        assert!(
            !open.wait || *state == State::Active,
            "the generators never block on an open that stays pending"
        );
        Expect::Ok
    }

    fn validate_create(&self, open: &Open, participants: &[usize]) -> Result<Adapter, Expect> {
        let count = participants.len();
        let two_party = |kind: &str| {
            // The creator is the initiator; a respondent exists only with exactly 2 participants.
            if count == 2 {
                Ok(())
            } else {
                Err(err(
                    "ProtocolError",
                    format!("{kind} requires exactly one respondent"),
                ))
            }
        };
        match &open.kind {
            Kind::Consulting => two_party("consulting").map(|()| Adapter::Consulting {
                sent: false,
                replied: false,
                question: None,
            }),
            Kind::Conversation => two_party("conversation").map(|()| Adapter::Conversation),
            Kind::Discussion if count < 2 => Err(err(
                "ProtocolError",
                format!("discussion requires at least 2 participants, got {count}"),
            )),
            Kind::Discussion => Ok(Adapter::Discussion {
                order: participants.to_vec(),
                expected: open.by,
            }),
            Kind::Workflow(_) if count < 2 => Err(err(
                "ProtocolError",
                format!("workflow requires at least 2 participants, got {count}"),
            )),
            Kind::Workflow(graph) if !participants.contains(&graph.initial) => Err(err(
                "ProtocolError",
                format!(
                    "workflow initial_speaker '{}' not in participants",
                    self.ids.agents[graph.initial]
                ),
            )),
            Kind::Workflow(graph) => Ok(Adapter::Workflow {
                graph: graph.clone(),
                order: participants.to_vec(),
                expected: Some(Speaker::Agent(graph.initial)),
                turns: 0,
            }),
        }
    }

    /// An accepted ack (spec §2.5): only a PENDING channel moves (an ack after activation is
    /// appended and ignored, §8.9); the last invitee's ack activates it unless someone rejected.
    pub(super) fn on_ack(&mut self, open: usize, by: usize) {
        let channel = self.channels.get_mut(&open).expect("known channel");
        if channel.state != State::Pending {
            return;
        }
        channel.pending_acks.retain(|a| *a != by);
        if channel.pending_acks.is_empty() && !channel.rejected {
            self.activate(open);
        }
    }

    /// An accepted reject: any participant, the creator included (spec §8.10).
    pub(super) fn on_reject(&mut self, open: usize, by: usize) {
        let channel = self.channels.get_mut(&open).expect("known channel");
        if channel.state != State::Pending {
            return;
        }
        channel.pending_acks.retain(|a| *a != by);
        channel.rejected = true;
        self.end(open, State::Closed("invite_rejected".to_string()));
    }
}
