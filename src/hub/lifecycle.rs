//! Channel lifecycle: creation with invites, the ack handshake, activation, terminal
//! transitions (close, expiry) and their envelopes and audit records.

use super::adapter::AdapterKind;
use super::channel::{ChannelMetadata, ChannelState, Participant, ParticipantRole};
use super::limits::PARTICIPANTS_MAX;
use super::rule::{matches_any, parse_duration, DurationSpec};
use super::{ChannelEntry, Hub, OpenWaiter, Output};
use crate::ids::{AgentId, ChannelId};
use crate::json::py_str_repr;
use crate::proto::envelope::map_of;
use crate::proto::{Envelope, ErrorKind, EventType, HubError};
use crate::time::{Now, MICROS_PER_SECOND};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The arguments of ag2's `create_channel`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateChannel {
    /// The creator; must be registered.
    pub creator: AgentId,
    /// The adapter type (`consulting`, ...).
    pub manifest_type: String,
    /// The adapter version.
    pub manifest_version: i64,
    /// The invitees (the creator is prepended unless listed).
    pub participants: Vec<AgentId>,
    /// Stored, never used.
    pub required_acks: Option<i64>,
    /// The TTL; `None` means the creator's `channel_ttl_default`.
    pub ttl: Option<DurationSpec>,
    /// Adapter knobs.
    pub knobs: Map<String, Value>,
    /// Stored as `labels["intent"]` when non-empty.
    pub intent: Option<String>,
    /// Labels.
    pub labels: Map<String, Value>,
}

/// How a successful `create_channel` call left the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// Active already (no invitees).
    Active(ChannelId),
    /// Pending: the outcome arrives as [`Output::OpenResolved`] (or, for a wire request, as the
    /// answer [`Hub::poll_answer`] gives).
    Pending(ChannelId),
}

impl Hub {
    /// ag2's `create_channel`, with its checks in ag2's order. Invites are posted (and their
    /// notifies queued) before this returns; activation happens when the last invitee acks.
    ///
    /// # Errors
    /// `NotFoundError`, `ProtocolError`, `AccessDeniedError`, and `ValueError`/`TypeError` for a
    /// bad TTL, with ag2's messages. A failing invite leaves the channel closed `invite_failed`;
    /// a failing workflow `initial_state` leaves a PENDING ghost channel, as in ag2.
    pub fn create_channel(
        &mut self,
        now: Now,
        request: CreateChannel,
    ) -> Result<Created, HubError> {
        let creator = request.creator;
        if !self.agents.contains_key(&creator) {
            return Err(HubError::not_found(format!(
                "creator not registered: {creator}"
            )));
        }
        if request.participants.is_empty() {
            return Err(HubError::protocol(
                "channel requires at least one participant",
            ));
        }
        if request.participants.len() >= PARTICIPANTS_MAX {
            return Err(HubError::protocol(format!(
                "hubsim: at most {PARTICIPANTS_MAX} participants"
            )));
        }
        let mut seen = BTreeSet::new();
        for participant in &request.participants {
            if !seen.insert(*participant) {
                return Err(HubError::protocol(format!(
                    "participant listed twice: '{participant}'"
                )));
            }
            if *participant != creator && !self.agents.contains_key(participant) {
                return Err(HubError::not_found(format!(
                    "participant not registered: {participant}"
                )));
            }
        }
        let mut participants = request.participants.clone();
        if !participants.contains(&creator) {
            participants.insert(0, creator);
        }
        let Some(kind) = AdapterKind::lookup(&request.manifest_type, request.manifest_version)
        else {
            return Err(HubError::not_found(format!(
                "no adapter registered for {}@v{}",
                py_str_repr(&request.manifest_type),
                request.manifest_version
            )));
        };
        self.authorize_channel_open(creator, &participants)?;

        let channel_id = ChannelId(self.ids.next_raw());
        let ttl = match &request.ttl {
            Some(ttl) => ttl.clone(),
            None => self.agents[&creator]
                .rule
                .limits
                .channel_ttl_default
                .clone(),
        };
        let ttl_seconds = parse_duration(&ttl)?;
        let expires_at = if ttl_seconds > 0 {
            let micros = ttl_seconds.checked_mul(MICROS_PER_SECOND).filter(|m| {
                now.wall
                    .micros
                    .checked_add(*m)
                    .is_some_and(|t| t < MAX_TIMESTAMP_MICROS)
            });
            Some(now.wall.plus_micros(
                micros.ok_or_else(|| HubError::new(ErrorKind::Other, "date value out of range"))?,
            ))
        } else {
            None
        };
        let metadata_participants: Vec<Participant> = participants
            .iter()
            .enumerate()
            .map(|(order, agent)| Participant {
                agent_id: *agent,
                role: ParticipantRole::assign(*agent, creator, participants.len()),
                order,
                joined_at: now.wall,
            })
            .collect();
        let mut labels = request.labels.clone();
        if let Some(intent) = request.intent.as_ref().filter(|intent| !intent.is_empty()) {
            labels.insert("intent".into(), Value::from(intent.as_str()));
        }
        let invitees: Vec<AgentId> = participants
            .iter()
            .copied()
            .filter(|p| *p != creator)
            .collect();
        let metadata = ChannelMetadata {
            channel_id,
            manifest: kind.manifest(),
            creator_id: creator,
            participants: metadata_participants,
            state: ChannelState::Pending,
            created_at: now.wall,
            expires_at,
            closed_at: None,
            close_reason: String::new(),
            knobs: request.knobs.clone(),
            labels,
            required_acks: request.required_acks,
            pending_acks: invitees.clone(),
            rejected_by: Vec::new(),
        };
        kind.validate_create(&metadata)?;

        // ag2 inserts the channel into its maps before building the adapter state, so a failing
        // `initial_state` leaves a PENDING channel behind with no state and no audit record.
        let state = kind.initial_state(&metadata);
        let failed = state.as_ref().err().cloned();
        self.channels.insert(
            channel_id,
            ChannelEntry {
                metadata,
                state: state.ok(),
                wal: Vec::new(),
                fired: BTreeSet::new(),
                causation: BTreeMap::new(),
                wire: Default::default(),
            },
        );
        self.active.insert(channel_id);
        if let Some(error) = failed {
            return Err(error);
        }
        self.audit.channel_created(
            now.wall,
            channel_id,
            kind.manifest().manifest_type,
            kind.manifest().version,
            creator,
            &participants,
        );
        if invitees.is_empty() {
            self.activate(now, channel_id);
            return Ok(Created::Active(channel_id));
        }
        self.waiters.insert(
            channel_id,
            OpenWaiter {
                deadline: now.mono.plus_micros(self.config.invite_ack_timeout_micros),
            },
        );
        let entry = &self.channels[&channel_id];
        let invite_data = map_of([
            ("channel_id", Value::String(channel_id.to_string())),
            ("manifest_type", Value::from(request.manifest_type.as_str())),
            ("manifest_version", Value::from(request.manifest_version)),
            ("creator_id", Value::String(creator.to_string())),
            ("knobs", Value::Object(entry.metadata.knobs.clone())),
            ("labels", Value::Object(entry.metadata.labels.clone())),
        ]);
        for invitee in invitees {
            let invite = Envelope::new(
                channel_id,
                creator,
                Some(vec![invitee]),
                EventType::CHANNEL_INVITE,
                invite_data.clone(),
            );
            if let Err(error) = self.post_envelope(now, invite) {
                self.waiters.remove(&channel_id);
                self.transition(now, channel_id, ChannelState::Closed, "invite_failed");
                return Err(error);
            }
        }
        Ok(Created::Pending(channel_id))
    }

    /// ag2's `authorize_channel_open`: each invitee's `inbound_from` must match the creator's
    /// name, then the creator's `max_concurrent_channels` (PENDING channels count).
    fn authorize_channel_open(
        &self,
        creator: AgentId,
        participants: &[AgentId],
    ) -> Result<(), HubError> {
        let creator_entry = &self.agents[&creator];
        let creator_name = &creator_entry.passport.name;
        for invitee in participants.iter().filter(|p| **p != creator) {
            let entry = &self.agents[invitee];
            if !matches_any(creator_name, &entry.rule.access.inbound_from) {
                return Err(HubError::access_denied(format!(
                    "invitee {} does not accept inbound from {}",
                    py_str_repr(&entry.passport.name),
                    py_str_repr(creator_name)
                )));
            }
        }
        let cap = creator_entry.rule.limits.max_concurrent_channels;
        let open = self
            .active
            .iter()
            .filter(|id| self.channels[*id].metadata.creator_id == creator)
            .count();
        if cap > 0 && open as i64 >= cap {
            return Err(HubError::access_denied(format!(
                "creator '{creator}' exceeded max_concurrent_channels ({open} >= {cap})"
            )));
        }
        Ok(())
    }

    /// An accepted ack: drop the sender from `pending_acks`; activate when none are left.
    pub(super) fn on_invite_ack(&mut self, now: Now, channel: ChannelId, sender: AgentId) {
        let entry = self
            .channels
            .get_mut(&channel)
            .expect("acked channel exists");
        if entry.metadata.state != ChannelState::Pending {
            return;
        }
        entry.metadata.pending_acks.retain(|agent| *agent != sender);
        if entry.metadata.pending_acks.is_empty() && entry.metadata.rejected_by.is_empty() {
            self.activate(now, channel);
        }
    }

    /// An accepted reject: all-or-nothing, the channel closes `invite_rejected`.
    pub(super) fn on_invite_reject(&mut self, now: Now, channel: ChannelId, sender: AgentId) {
        let entry = self
            .channels
            .get_mut(&channel)
            .expect("rejected channel exists");
        if entry.metadata.state != ChannelState::Pending {
            return;
        }
        entry.metadata.pending_acks.retain(|agent| *agent != sender);
        if !entry.metadata.rejected_by.contains(&sender) {
            entry.metadata.rejected_by.push(sender);
        }
        self.transition(now, channel, ChannelState::Closed, "invite_rejected");
    }

    /// ag2's `_activate_channel`: ACTIVE, post `opened` to every participant (the creator too),
    /// then release the open's waiter.
    fn activate(&mut self, now: Now, channel: ChannelId) {
        let entry = self
            .channels
            .get_mut(&channel)
            .expect("activated channel exists");
        if entry.metadata.state != ChannelState::Pending {
            return;
        }
        entry.metadata.state = ChannelState::Active;
        let opened = Envelope::new(
            channel,
            entry.metadata.creator_id,
            Some(entry.metadata.participant_ids()),
            EventType::CHANNEL_OPENED,
            map_of([("channel_id", Value::String(channel.to_string()))]),
        );
        // Hub-built envelopes never fail the post checks on an ACTIVE channel.
        let posted = self.post_envelope(now, opened);
        debug_assert!(posted.is_ok(), "opened post failed: {posted:?}");
        if self.waiters.remove(&channel).is_some() {
            self.open_resolved(channel, Ok(()));
        }
    }

    /// ag2's `close_channel`: CLOSED with `reason` (or `explicit_close`). A terminal channel is
    /// left as it is. In-process there is no check on who closes.
    ///
    /// # Errors
    /// `KeyError` for an unknown channel, as in ag2.
    pub fn close_channel(
        &mut self,
        now: Now,
        channel: ChannelId,
        reason: &str,
    ) -> Result<(), HubError> {
        if !self.channels.contains_key(&channel) {
            return Err(HubError::key(&channel.to_string()));
        }
        let reason = if reason.is_empty() {
            "explicit_close"
        } else {
            reason
        };
        self.transition(now, channel, ChannelState::Closed, reason);
        Ok(())
    }

    /// A pending open's handshake ended with `result`: queued for [`Hub::poll_answer`] if a
    /// wire request waits on `channel`, else handed out as [`Output::OpenResolved`].
    fn open_resolved(&mut self, channel: ChannelId, result: Result<(), HubError>) {
        if self.rpc_waiters.contains_key(&channel) {
            self.answers.push_back((channel, result));
        } else {
            self.outputs
                .push_back(Output::OpenResolved { channel, result });
        }
    }

    /// Stops waiting for a pending open (its caller was cancelled). The channel stays PENDING.
    pub fn cancel_open(&mut self, channel: ChannelId) {
        self.waiters.remove(&channel);
    }

    /// The invite-ack timeout fired for a still-pending open.
    pub(super) fn expire_invites(&mut self, now: Now, channel: ChannelId) {
        self.waiters.remove(&channel);
        self.transition(now, channel, ChannelState::Closed, "invite_timeout");
        let timeout = HubError::protocol(format!("channel '{channel}' ack timeout"));
        self.open_resolved(channel, Err(timeout));
    }

    /// ag2's `_transition_channel` to a terminal state: cascade tasks, stamp, release the open's
    /// waiter, append and dispatch `closed`/`expired`, audit, prune the causation index. A
    /// terminal or unknown channel is left as it is.
    pub(super) fn transition(
        &mut self,
        now: Now,
        channel: ChannelId,
        state: ChannelState,
        reason: &str,
    ) {
        assert!(state.is_terminal(), "built-in transitions are terminal");
        match self.channels.get(&channel) {
            Some(entry) if !entry.metadata.is_terminal() => {}
            _ => return,
        }
        self.cascade_tasks(now, channel);
        let entry = self.channels.get_mut(&channel).expect("checked above");
        let was_pending = entry.metadata.state == ChannelState::Pending;
        entry.metadata.state = state;
        entry.metadata.close_reason = reason.to_string();
        entry.metadata.closed_at = Some(now.wall);
        entry.fired.clear();
        self.active.remove(&channel);
        if self.waiters.remove(&channel).is_some() && was_pending {
            let closed = format!("channel '{channel}' closed during handshake: {reason}");
            self.open_resolved(channel, Err(HubError::protocol(closed)));
        }
        let expired = state == ChannelState::Expired;
        let event_type = if expired {
            EventType::CHANNEL_EXPIRED
        } else {
            EventType::CHANNEL_CLOSED
        };
        let entry = &self.channels[&channel];
        let mut envelope = Envelope::new(
            channel,
            entry.metadata.creator_id,
            Some(entry.metadata.participant_ids()),
            event_type,
            map_of([
                ("reason", Value::from(reason)),
                ("channel_id", Value::String(channel.to_string())),
            ]),
        );
        envelope.envelope_id = Some(crate::ids::EnvelopeId(self.ids.next_raw()));
        envelope.created_at = Some(now.wall);
        let envelope = Arc::new(envelope);
        self.append(channel, envelope.clone());
        self.dispatch(&envelope);
        self.audit.channel_ended(now.wall, channel, expired, reason);
        self.channels
            .get_mut(&channel)
            .expect("checked above")
            .causation
            .clear();
    }
}

/// One microsecond before year 10000, the end of Python's `datetime`.
const MAX_TIMESTAMP_MICROS: i64 = 253_402_300_800 * MICROS_PER_SECOND;
