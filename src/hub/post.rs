//! `post_envelope` in ag2's exact order of checks, the WAL append, and dispatch.
//!
//! Order: sender registered; `authorize_send` (outbound_to on explicit recipients, then
//! delegation depth); channel known; not terminal; ACTIVE unless a protocol event; sender a
//! participant; adapter loaded; inbox caps (substantive events only); adapter state present;
//! `validate_send`; stamp; append; fold; `on_accepted`; decrement the sender's counter; acks and
//! rejects are absorbed; dispatch; the adapter's close, if any. A refused post leaves no trace.

use super::limits::WAL_ENTRIES_MAX;
use super::rule::matches_any;
use super::{Hub, Output};
use crate::ids::{ChannelId, EnvelopeId};
use crate::json::py_str_repr;
use crate::proto::{Envelope, EventType, HubError};
use crate::time::Now;
use std::sync::Arc;

impl Hub {
    /// ag2's `Hub.post_envelope`. Returns the stamped envelope id.
    ///
    /// # Errors
    /// ag2's `NetworkError`s with its messages; an adapter's fold failure (a malformed workflow
    /// payload) surfaces after the append, as in ag2.
    pub fn post_envelope(
        &mut self,
        now: Now,
        mut envelope: Envelope,
    ) -> Result<EnvelopeId, HubError> {
        self.admit(&envelope)?;
        let channel = envelope.channel_id;
        let id = EnvelopeId(self.ids.next_raw());
        envelope.envelope_id = Some(id);
        envelope.created_at = Some(now.wall);
        let envelope = Arc::new(envelope);
        self.append(channel, envelope.clone());
        let entry = self.channels.get_mut(&channel).expect("checked above");
        let state = entry.state.as_mut().expect("checked above");
        // Every fold assigns only after its last fallible step, so a failure leaves the state as
        // it was (the envelope stays in the WAL, as in ag2).
        state.fold(&envelope)?;
        let result = state.on_accepted(&envelope);

        let substantive = !EventType::is_protocol(&envelope.event_type);
        if substantive {
            if let Some(count) = self.inbox_pending.get_mut(&envelope.sender_id) {
                *count = count.saturating_sub(1);
            }
        }
        match envelope.event_type.as_str() {
            EventType::CHANNEL_INVITE_ACK => {
                self.on_invite_ack(now, channel, envelope.sender_id);
                return Ok(id);
            }
            EventType::CHANNEL_INVITE_REJECT => {
                self.on_invite_reject(now, channel, envelope.sender_id);
                return Ok(id);
            }
            _ => {}
        }
        self.dispatch(&envelope);
        if let Some(reason) = result.close_reason {
            self.transition(now, channel, super::channel::ChannelState::Closed, &reason);
        }
        Ok(id)
    }

    /// Every check before the append: [`Hub::check_post`], the adapter state, `validate_send`,
    /// the WAL limit.
    fn admit(&self, envelope: &Envelope) -> Result<(), HubError> {
        let bypass = self.config.bugs.closed_consulting_accepts && self.closed_consulting(envelope);
        if !bypass {
            self.check_post(envelope)?;
        }
        let channel = envelope.channel_id;
        let entry = self.channels.get(&channel).expect("checked by check_post");
        let Some(state) = &entry.state else {
            return Err(HubError::protocol(format!(
                "channel '{channel}' has no adapter state (manifest '{}'@v{} may not be registered)",
                entry.metadata.manifest.manifest_type, entry.metadata.manifest.version
            )));
        };
        if !bypass {
            state.validate_send(&entry.metadata, envelope)?;
        }
        if entry.wal.len() >= WAL_ENTRIES_MAX {
            return Err(HubError::protocol(format!(
                "hubsim: channel '{channel}' WAL is full ({WAL_ENTRIES_MAX})"
            )));
        }
        Ok(())
    }

    /// A closed consulting channel (for the `closed_consulting_accepts` bug switch).
    fn closed_consulting(&self, envelope: &Envelope) -> bool {
        self.channels
            .get(&envelope.channel_id)
            .is_some_and(|entry| {
                entry.metadata.state == super::channel::ChannelState::Closed
                    && matches!(
                        entry.state,
                        Some(super::adapter::AdapterState::Consulting(_))
                    )
            })
    }

    /// Every check before the WAL lock, in ag2's order.
    fn check_post(&self, envelope: &Envelope) -> Result<(), HubError> {
        let sender_id = envelope.sender_id;
        let Some(sender) = self.agents.get(&sender_id) else {
            return Err(HubError::not_found(format!(
                "sender not registered: {sender_id}"
            )));
        };
        if let Some(audience) = &envelope.audience {
            for recipient in audience.iter().filter(|id| **id != sender_id) {
                let Some(recipient) = self.agents.get(recipient) else {
                    continue;
                };
                if !matches_any(&recipient.passport.name, &sender.rule.access.outbound_to) {
                    return Err(HubError::access_denied(format!(
                        "sender {} not permitted to send to {}",
                        py_str_repr(&sender.passport.name),
                        py_str_repr(&recipient.passport.name)
                    )));
                }
            }
        }
        let cap = sender.rule.limits.delegation_depth;
        if cap > 0 && envelope.depth > cap {
            return Err(HubError::access_denied(format!(
                "sender {} exceeded delegation_depth ({} > {cap})",
                py_str_repr(&sender.passport.name),
                envelope.depth
            )));
        }
        let channel = envelope.channel_id;
        let Some(entry) = self.channels.get(&channel) else {
            return Err(HubError::not_found(format!("channel not found: {channel}")));
        };
        let metadata = &entry.metadata;
        if metadata.is_terminal() {
            return Err(HubError::protocol(format!(
                "channel '{channel}' is {}",
                metadata.state.as_str()
            )));
        }
        let protocol = EventType::is_protocol(&envelope.event_type);
        if !protocol && metadata.state != super::channel::ChannelState::Active {
            return Err(HubError::protocol(format!(
                "channel '{channel}' not active (state={})",
                metadata.state.as_str()
            )));
        }
        if !metadata.has_participant(sender_id) && !self.is_peer_cancel_request(envelope) {
            return Err(HubError::protocol(format!(
                "channel '{channel}' only accepts sends from participants, got '{sender_id}'"
            )));
        }
        if !protocol {
            self.check_inboxes(envelope)?;
        }
        Ok(())
    }

    /// The inbox cap of every recipient that has a passport and a rule, bound or not.
    fn check_inboxes(&self, envelope: &Envelope) -> Result<(), HubError> {
        let metadata = &self.channels[&envelope.channel_id].metadata;
        let recipients = match &envelope.audience {
            Some(audience) => audience.clone(),
            None => metadata.participant_ids(),
        };
        for recipient in recipients
            .into_iter()
            .filter(|id| *id != envelope.sender_id)
        {
            let Some(entry) = self.agents.get(&recipient) else {
                continue;
            };
            let cap = entry.rule.limits.inbox.max_pending;
            let current = self.inbox_pending.get(&recipient).copied().unwrap_or(0);
            if cap > 0 && current as i64 >= cap {
                return Err(HubError::new(
                    crate::proto::ErrorKind::InboxFull,
                    format!("recipient '{recipient}' inbox at capacity ({current} >= {cap})"),
                ));
            }
        }
        Ok(())
    }

    /// A well-formed cancel request from a non-participant: for a live task of this channel,
    /// addressed to its owner alone, with exactly `{task_id, reason}` and a short reason.
    fn is_peer_cancel_request(&self, envelope: &Envelope) -> bool {
        if envelope.event_type != EventType::TASK_CANCEL_REQUEST {
            return false;
        }
        let Some(task_id) = &envelope.task_id else {
            return false;
        };
        let Some(task) = self.tasks.tasks.get(task_id) else {
            return false;
        };
        let data = &envelope.event_data;
        let channel_active = self.channels[&envelope.channel_id].metadata.state
            == super::channel::ChannelState::Active;
        let reason_ok = data
            .get("reason")
            .and_then(|r| r.as_str())
            .is_some_and(|r| r.chars().count() <= 500);
        !task.state.is_terminal()
            && channel_active
            && task.channel_id == Some(envelope.channel_id)
            && envelope.audience.as_deref() == Some(&[task.owner_id][..])
            && data.len() == 2
            && data.get("task_id").and_then(|t| t.as_str()) == Some(task_id.as_str())
            && reason_ok
    }

    /// Appends a stamped envelope to its channel's WAL and indexes its causation.
    pub(super) fn append(&mut self, channel: ChannelId, envelope: Arc<Envelope>) {
        let entry = self
            .channels
            .get_mut(&channel)
            .expect("append to a known channel");
        let id = envelope.envelope_id.expect("WAL envelopes are stamped");
        debug_assert!(
            entry
                .wal
                .last()
                .is_none_or(|last| last.envelope_id < Some(id)),
            "WAL ids increase"
        );
        if let Some(causation) = envelope.causation_id.as_ref().filter(|c| !c.is_empty()) {
            entry
                .causation
                .insert((envelope.sender_id, causation.clone()), id);
        }
        entry.wal.push(envelope);
        self.wal_entries += 1;
    }

    /// ag2's `_dispatch`: recipients are the explicit audience as given, or every participant but
    /// the sender. A recipient whose `inbound_from` refuses the sender is skipped silently; an
    /// unbound one is skipped uncounted; a bound one gets a notify, counted if substantive.
    pub(super) fn dispatch(&mut self, envelope: &Arc<Envelope>) {
        let metadata = &self.channels[&envelope.channel_id].metadata;
        let recipients = match &envelope.audience {
            Some(audience) => audience.clone(),
            None => metadata
                .participant_ids()
                .into_iter()
                .filter(|id| *id != envelope.sender_id)
                .collect(),
        };
        let substantive = !EventType::is_protocol(&envelope.event_type);
        let sender_name = self
            .agents
            .get(&envelope.sender_id)
            .map(|entry| entry.passport.name.clone());
        for recipient in recipients {
            if recipient != envelope.sender_id {
                if let (Some(sender_name), Some(entry)) =
                    (&sender_name, self.agents.get(&recipient))
                {
                    if !matches_any(sender_name, &entry.rule.access.inbound_from) {
                        continue;
                    }
                }
            }
            let Some(endpoint) = self.bindings.get(&recipient).copied() else {
                continue;
            };
            if substantive && self.config.bugs.drop_dispatch && !self.dropped_dispatch {
                self.dropped_dispatch = true;
                continue;
            }
            if substantive {
                let count = self.inbox_pending.entry(recipient).or_insert(0);
                let previous = *count;
                *count += 1;
                let current = *count;
                self.signal_pressure(recipient, previous, current);
            }
            self.outputs.push_back(Output::Notify {
                endpoint,
                recipient,
                envelope: envelope.clone(),
            });
        }
    }

    /// `on_inbox_pressure` once per upward crossing of the high-water mark.
    fn signal_pressure(&mut self, agent: crate::ids::AgentId, previous: u64, current: u64) {
        let Some(entry) = self.agents.get(&agent) else {
            return;
        };
        let inbox = &entry.rule.limits.inbox;
        let cap = inbox.max_pending;
        if cap <= 0 {
            return;
        }
        let high_water = match inbox.high_water {
            None => ((cap as f64 * 0.8) as i64).max(1),
            Some(mark) if mark <= 0 => return,
            Some(mark) => mark,
        };
        if (previous as i64) < high_water && high_water <= current as i64 {
            self.outputs.push_back(Output::InboxPressure {
                agent,
                pending: current,
                cap,
            });
        }
    }
}
