//! Channel invariants: `ttl`, `auto_close` and `wal`, and the frozen WAL of a terminal channel
//! that both `ttl` and `auto_close` rely on.

use super::{Checker, View};
use crate::hub::adapter::{AdapterKind, AdapterState};
use crate::hub::channel::{ChannelState, ParticipantRole};
use crate::hub::{ChannelEntry, Hub};
use crate::ids::ChannelId;
use crate::proto::EventType;

impl Checker {
    /// `ttl`: expiry neither early nor more than one sweep late.
    pub(super) fn check_ttl(&mut self, view: &View<'_>, hub: &Hub) {
        let wall = view.now_wall();
        for (channel, entry) in &hub.channels {
            let metadata = &entry.metadata;
            let Some(expires_at) = metadata.expires_at else {
                continue;
            };
            if metadata.state == ChannelState::Expired {
                let closed_at = metadata.closed_at.unwrap_or(wall);
                if closed_at.micros < expires_at.micros {
                    self.report_in(
                        view,
                        Some(metadata.manifest.manifest_type),
                        "ttl/early",
                        channel.to_string(),
                        format!(
                            "channel {channel} expired at {closed_at}, before its expires_at {expires_at}"
                        ),
                    );
                }
            }
            let pending_or_active = !metadata.is_terminal();
            let expired_now =
                metadata.state == ChannelState::Expired && !self.terminal_len.contains_key(channel);
            if view.ttl_sweep == 0 || !(pending_or_active || expired_now) {
                continue;
            }
            if expires_at.micros > wall.micros {
                continue;
            }
            let reached = view.reached(expires_at);
            // When it expired: its `closed_at` on the simulated clock, or now.
            let until = match metadata.closed_at {
                Some(closed_at) if expired_now && !view.frozen_clock => {
                    view.reached(closed_at).min(view.now)
                }
                _ => view.now,
            };
            let late = until.saturating_sub(reached);
            if late > view.ttl_sweep {
                let what = if pending_or_active {
                    "is still"
                } else {
                    "was only now"
                };
                self.report_in(
                    view,
                    Some(metadata.manifest.manifest_type),
                    "ttl/late",
                    channel.to_string(),
                    format!(
                        "channel {channel} {what} {} {}s after the clock passed its expires_at \
                         {expires_at}; the sweep runs every {}s",
                        if pending_or_active {
                            metadata.state.as_str()
                        } else {
                            "expired"
                        },
                        late as f64 / 1e6,
                        view.ttl_sweep as f64 / 1e6
                    ),
                );
            }
        }
    }

    /// `ttl` and `auto_close`: nothing is appended once a channel is terminal.
    pub(super) fn check_terminal(
        &mut self,
        view: &View<'_>,
        channel: ChannelId,
        entry: &ChannelEntry,
    ) {
        let Some(&frozen) = self.terminal_len.get(&channel) else {
            return;
        };
        if entry.wal.len() <= frozen {
            return;
        }
        let extra = &entry.wal[frozen];
        let kind = if entry.metadata.state == ChannelState::Expired {
            "ttl/accepted_after_expiry"
        } else {
            "auto_close/accepted_after_close"
        };
        self.report_in(
            view,
            Some(entry.metadata.manifest.manifest_type),
            kind,
            channel.to_string(),
            format!(
                "channel {channel} is {} ({}) but its WAL grew from {frozen} to {} entries; first \
                 accepted after: {} from {}",
                entry.metadata.state.as_str(),
                entry.metadata.close_reason,
                entry.wal.len(),
                extra.event_type,
                extra.sender_id
            ),
        );
    }

    /// `auto_close` for consulting and workflow channels.
    pub(super) fn check_auto_close(
        &mut self,
        view: &View<'_>,
        channel: ChannelId,
        entry: &ChannelEntry,
    ) {
        let metadata = &entry.metadata;
        match &entry.state {
            Some(AdapterState::Consulting(_)) => {
                // The reference model: the initiator's first text, then the respondent's.
                let initiator = metadata.creator_id;
                let respondent = metadata.with_role(ParticipantRole::Respondent);
                let mut texts = entry
                    .wal
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.event_type == EventType::TEXT);
                let question = texts.next();
                let reply = texts.next();
                let closed_ok = metadata.state == ChannelState::Closed
                    && metadata.close_reason == "consulting_complete";
                match (question, reply) {
                    (Some((_, q)), Some((at, r)))
                        if q.sender_id == initiator && Some(r.sender_id) == respondent =>
                    {
                        let next = entry.wal.get(at + 1);
                        let closes_here = next.is_some_and(|e| {
                            e.event_type == EventType::CHANNEL_CLOSED
                                && e.event_data.get("reason").and_then(|r| r.as_str())
                                    == Some("consulting_complete")
                        });
                        // A channel that was terminal before the reply landed is `accepted_after_close`.
                        let was_terminal = self.terminal_len.contains_key(&channel);
                        let closed_on_reply = closed_ok && closes_here;
                        if !(was_terminal || closed_on_reply) {
                            self.report_in(
                                view,
                                Some("consulting"),
                                "auto_close/consulting_not_closed",
                                channel.to_string(),
                                format!(
                                    "consulting channel {channel} has the respondent's reply \
                                     (WAL entry {at}) but is {} ({}) with {} after it",
                                    metadata.state.as_str(),
                                    metadata.close_reason,
                                    next.map_or("nothing", |e| e.event_type.as_str())
                                ),
                            );
                        }
                    }
                    _ if closed_ok => self.report_in(
                        view,
                        Some("consulting"),
                        "auto_close/consulting_closed_early",
                        channel.to_string(),
                        format!(
                            "consulting channel {channel} closed with consulting_complete \
                             without the initiator's question and the respondent's reply"
                        ),
                    ),
                    _ => {}
                }
            }
            Some(AdapterState::Workflow(state)) => {
                let reason = metadata.close_reason.as_str();
                let closed = metadata.state == ChannelState::Closed;
                let max = state.graph.max_turns;
                // ag2 checks max_turns after each accepted substantive envelope.
                let reached = max.is_some_and(|m| state.turn_count >= m.max(1));
                if !metadata.is_terminal() && reached {
                    self.report_in(
                        view,
                        Some("workflow"),
                        "auto_close/workflow_not_closed",
                        channel.to_string(),
                        format!(
                            "workflow {channel} reached {} of max_turns {} and is still {}",
                            state.turn_count,
                            max.unwrap_or_default(),
                            metadata.state.as_str()
                        ),
                    );
                } else if !metadata.is_terminal() && state.expected.is_none() {
                    self.report_in(
                        view,
                        Some("workflow"),
                        "auto_close/workflow_not_closed",
                        channel.to_string(),
                        format!(
                            "workflow {channel} decided to close ({}) and is still {}",
                            state.pending_close_reason,
                            metadata.state.as_str()
                        ),
                    );
                } else if closed && reason == "max_turns" && !reached {
                    self.report_in(
                        view,
                        Some("workflow"),
                        "auto_close/workflow_closed_early",
                        channel.to_string(),
                        format!(
                            "workflow {channel} closed with max_turns after {} turns (max {:?})",
                            state.turn_count, max
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// `wal`: the WAL folded from scratch gives the live state.
    pub(super) fn check_fold(&mut self, view: &View<'_>, channel: ChannelId, entry: &ChannelEntry) {
        let Some(live) = &entry.state else { return };
        let kind = AdapterKind::of(&entry.metadata);
        let Ok(mut folded) = kind.initial_state(&entry.metadata) else {
            self.report_in(
                view,
                Some(entry.metadata.manifest.manifest_type),
                "wal/no_initial_state",
                channel.to_string(),
                format!("channel {channel} has a live state but no initial state"),
            );
            return;
        };
        for envelope in &entry.wal {
            // A fold that fails leaves the state as it was, as it does live.
            let _ = folded.fold(envelope);
        }
        if &folded != live {
            self.report_in(
                view,
                Some(entry.metadata.manifest.manifest_type),
                "wal/fold_differs",
                format!("{channel}@{}", entry.wal.len()),
                format!(
                    "channel {channel}: folding its {} WAL entries gives {folded:?}, the live \
                     state is {live:?}",
                    entry.wal.len()
                ),
            );
        }
    }
}

/// Whether folding WAL entry `at` fails, after the entries before it (as the live hub folded
/// them: a failed fold leaves the state as it was).
pub(super) fn fold_fails(entry: &ChannelEntry, at: usize) -> bool {
    let Ok(mut state) = AdapterKind::of(&entry.metadata).initial_state(&entry.metadata) else {
        return false;
    };
    for envelope in &entry.wal[..at.min(entry.wal.len())] {
        let _ = state.fold(envelope);
    }
    entry
        .wal
        .get(at)
        .is_some_and(|envelope| state.fold(envelope).is_err())
}

impl View<'_> {
    /// The hub's wall clock now.
    pub(super) fn now_wall(&self) -> crate::time::Timestamp {
        if self.frozen_clock {
            self.mock
        } else {
            self.mock.plus_micros(self.now as i64)
        }
    }
}
