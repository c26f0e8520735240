//! `delivery`: at least once per visible envelope, only to its audience, in WAL order per
//! connection, one model turn per trigger.

use super::{AgentLog, Checker, View};
use crate::hub::rule::matches_any;
use crate::hub::Hub;
use crate::ids::{AgentId, EnvelopeId};
use crate::proto::{Envelope, EventType};
use std::collections::BTreeMap;

impl Checker {
    /// What can be checked at any moment: audience and order of what arrived since the last
    /// check, and turns run at once for one trigger.
    pub(super) fn check_deliveries(&mut self, view: &View<'_>) {
        for (idx, host) in view.agents.iter().enumerate() {
            let Some(me) = host.id else { continue };
            self.check_received(view, idx, host, me);
            for (trigger, turns) in &host.turns {
                if turns.concurrent > 0 {
                    self.duplicate_turn(view, host, me, *trigger, turns.started, 0);
                }
            }
        }
    }

    /// The end of the run: the above, two replies to one trigger, and (once the run settled)
    /// every envelope owed to a bound agent handled.
    pub(super) fn check_delivery(&mut self, view: &View<'_>, settled: bool) {
        self.check_deliveries(view);
        for host in view.agents {
            let Some(me) = host.id else { continue };
            let Some(hub) = view.hub else { continue };
            // A turn whose reply never landed may be run again (a retry); two replies in the
            // WAL to one trigger are a duplicate.
            let replies = replies_by_trigger(hub, me);
            for (trigger, turns) in &host.turns {
                let replied = replies.get(&trigger.to_string()).copied().unwrap_or(0);
                if replied > 1 {
                    self.duplicate_turn(view, host, me, *trigger, turns.started, replied);
                }
            }
            let bound = hub.bindings.contains_key(&me) && !host.disconnected;
            if settled && bound {
                self.check_at_least_once(view, hub, host, me);
            }
        }
    }

    fn duplicate_turn(
        &mut self,
        view: &View<'_>,
        host: &AgentLog,
        me: AgentId,
        trigger: EnvelopeId,
        started: u32,
        replies: u32,
    ) {
        let how = if replies > 1 {
            format!("the WAL holds {replies} replies to it")
        } else {
            "two of them ran at once".to_string()
        };
        let adapter = view.hub.and_then(|hub| {
            hub.channels
                .values()
                .find(|entry| entry.wal.iter().any(|e| e.envelope_id == Some(trigger)))
                .map(|entry| entry.metadata.manifest.manifest_type)
        });
        self.report_in(
            view,
            adapter,
            "delivery/duplicate_turn",
            format!("{me}/{trigger}"),
            format!(
                "{} ran {started} model turns for envelope {trigger}: {how}",
                host.name
            ),
        );
    }

    /// Audience and order of what `host` received since the last check.
    fn check_received(&mut self, view: &View<'_>, idx: usize, host: &AgentLog, me: AgentId) {
        if self.received_checked.len() <= idx {
            self.received_checked.resize(idx + 1, 0);
        }
        let from = self.received_checked[idx];
        self.received_checked[idx] = host.received.len();
        for delivery in &host.received[from.min(host.received.len())..] {
            let envelope = &delivery.envelope;
            // An explicit audience is the audience, participants or not (ag2's in-process
            // post delivers to any registered agent named in it); a broadcast
            // goes to the channel's participants but the sender.
            let participant = view.hub.is_none_or(|hub| {
                hub.channels
                    .get(&envelope.channel_id)
                    .is_none_or(|entry| entry.metadata.has_participant(me))
            });
            let outside = match &envelope.audience {
                Some(audience) => (!audience.contains(&me)).then_some("not addressed"),
                None if envelope.sender_id == me => Some("its own broadcast"),
                None => (!participant).then_some("a broadcast, and not a participant"),
            };
            let adapter = adapter_of(view, envelope.channel_id);
            if let Some(why) = outside {
                self.report_in(
                    view,
                    adapter,
                    "delivery/outside_audience",
                    format!("{me}/{}", envelope.id_text()),
                    format!(
                        "{} received {} {} from {} in channel {}, outside its audience ({why})",
                        host.name,
                        envelope.event_type,
                        envelope.id_text(),
                        envelope.sender_id,
                        envelope.channel_id,
                    ),
                );
            }
            let key = (idx, delivery.connection, envelope.channel_id);
            if let Some(previous) = self.last_received.get(&key) {
                if *previous >= envelope.envelope_id {
                    self.report_in(
                        view,
                        adapter,
                        "delivery/out_of_order",
                        format!("{me}/{}", envelope.id_text()),
                        format!(
                            "{} received {} after {} on connection {} of channel {}; the WAL \
                             has them the other way round",
                            host.name,
                            envelope.id_text(),
                            previous.map_or(String::new(), |id| id.to_string()),
                            delivery.connection,
                            envelope.channel_id
                        ),
                    );
                }
            }
            self.last_received.insert(key, envelope.envelope_id);
        }
    }

    /// Every envelope `host` may see, in every channel it is in, was handled and acked.
    fn check_at_least_once(&mut self, view: &View<'_>, hub: &Hub, host: &AgentLog, me: AgentId) {
        let mut rules: Vec<Vec<String>> = self.inbound_seen.get(&me).cloned().unwrap_or_default();
        rules.extend(
            hub.agents
                .get(&me)
                .map(|a| a.rule.access.inbound_from.clone()),
        );
        for (channel, entry) in &hub.channels {
            if !entry.metadata.has_participant(me) {
                continue;
            }
            for envelope in &entry.wal {
                let Some(id) = envelope.envelope_id else {
                    continue;
                };
                if !visible(view, envelope, me, &rules) || host.handled.contains(&id) {
                    continue;
                }
                let received = host
                    .received
                    .iter()
                    .any(|d| d.envelope.envelope_id == Some(id));
                let cursor = hub.inbox_cursor(me, &channel.to_string());
                let text = envelope.id_text();
                let position = entry.wal.iter().position(|e| e.envelope_id == Some(id));
                let fold_failed = position.is_some_and(|at| super::channels::fold_fails(entry, at));
                let (kind, why) = if !received && fold_failed {
                    (
                        "delivery/fold_failed_not_dispatched",
                        "its fold failed after the append, so the hub never dispatched it"
                            .to_string(),
                    )
                } else if received && cursor > text.as_str() {
                    (
                        "delivery/cursor_skipped",
                        format!("it was received, its handler died with its connection, and the cursor is past it ({cursor})"),
                    )
                } else if entry.metadata.is_terminal() && host.connections > 1 {
                    (
                        "delivery/closed_channel_not_replayed",
                        format!(
                            "it was {}; the agent re-attached and the channel is {}, so the \
                             replay skipped it",
                            if received {
                                "received but its handler died with its connection"
                            } else {
                                "never received"
                            },
                            entry.metadata.state.as_str()
                        ),
                    )
                } else if received {
                    (
                        "delivery/missing",
                        "it was received but its handler never finished".to_string(),
                    )
                } else {
                    ("delivery/missing", "it was never received".to_string())
                };
                self.report_in(
                    view,
                    Some(entry.metadata.manifest.manifest_type),
                    kind,
                    format!("{me}/{text}"),
                    format!(
                        "{} is bound but never handled {} {text} from {} in channel {channel}: {why}",
                        host.name,
                        envelope.event_type,
                        envelope.sender_id
                    ),
                );
            }
        }
    }
}

/// The adapter of `channel`, if the hub is up and knows it.
fn adapter_of(view: &View<'_>, channel: crate::ids::ChannelId) -> Option<&'static str> {
    view.hub?
        .channels
        .get(&channel)
        .map(|entry| entry.metadata.manifest.manifest_type)
}

/// How many envelopes `me` posted in answer to each envelope id (`causation_id`), over every
/// WAL.
fn replies_by_trigger(hub: &Hub, me: AgentId) -> BTreeMap<String, u32> {
    let mut replies = BTreeMap::new();
    for entry in hub.channels.values() {
        for envelope in entry.wal.iter().filter(|e| e.sender_id == me) {
            if let Some(cause) = envelope.causation_id.as_ref().filter(|c| !c.is_empty()) {
                *replies.entry(cause.clone()).or_insert(0) += 1;
            }
        }
    }
    replies
}

/// Whether the hub owes `me` this envelope: not its own, addressed to it (or broadcast), a
/// dispatched kind (invite acks and rejects are absorbed), and from a sender every
/// `inbound_from` it had during the run admits (`rules`: when it was dispatched is not known
/// here, so a sender any of them refused is not owed).
fn visible(view: &View<'_>, envelope: &Envelope, me: AgentId, rules: &[Vec<String>]) -> bool {
    if envelope.sender_id == me
        || envelope.event_type == EventType::CHANNEL_INVITE_ACK
        || envelope.event_type == EventType::CHANNEL_INVITE_REJECT
    {
        return false;
    }
    if envelope.audience.as_ref().is_some_and(|a| !a.contains(&me)) {
        return false;
    }
    // The sender's name from its client: it may have unregistered since.
    let sender = view
        .agents
        .iter()
        .find(|host| host.id == Some(envelope.sender_id));
    match sender {
        Some(sender) => rules
            .iter()
            .all(|patterns| matches_any(&sender.name, patterns)),
        None => true,
    }
}
