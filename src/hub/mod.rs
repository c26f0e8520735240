//! The hub core: a pure, deterministic state machine reproducing ag2 1.2.1's `Hub`.
//!
//! It is fed calls stamped with [`Now`] (direct calls, which return their result, and wire frames,
//! [`Hub::handle_frame`], which return nothing) and queues what it says: [`Output`]s
//! ([`Hub::poll_output`]: notifies, frames, refused requests, handshake outcomes), the answers to
//! wire `create_channel` requests that waited for acks ([`Hub::poll_answer`], with
//! [`Hub::waiting_on`] telling which connection waits), and its next deadline
//! ([`Hub::poll_timeout`]). It never reads a clock, never spawns, never does IO, and iterates only
//! ordered maps, so the same calls give the same outputs byte for byte. Drivers (in-process,
//! simulated network, real sockets) own the links and timers around it.
//!
//! Submodules: `registry` (agents), `lifecycle` (channel creation, handshake, transitions),
//! `post` (`post_envelope` and dispatch), `sweep` (TTL and expectations, timers), `tasks`
//! (observed tasks).

pub mod adapter;
pub mod audit;
pub mod channel;
pub mod expectations;
pub mod rule;
pub mod store;

mod lifecycle;
pub mod link;
mod post;
mod registry;
pub mod rpc;
mod tasks;
mod timers;
pub mod wire;

pub use lifecycle::{CreateChannel, Created};
pub use registry::{ObservedStat, Passport, PassportDetails, Resume};
pub use tasks::{TaskMetadata, TaskSpec, TaskState, TaskUpdate};

use crate::ids::{AgentId, ChannelId, EndpointId, EnvelopeId, IdGen};
use crate::proto::{Envelope, HubError};
use crate::time::{Instant, Now, Timestamp};
use adapter::{AdapterKind, AdapterState};
use audit::AuditLog;
use channel::ChannelMetadata;
use rule::Rule;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Limits on what input can grow. Exceeding one is refused at the boundary.
pub mod limits {
    /// Participants of one channel.
    pub const PARTICIPANTS_MAX: usize = 1024;
    /// Envelopes in one channel's WAL.
    pub const WAL_ENTRIES_MAX: usize = 1 << 20;
}

/// Hub settings. Durations are on the monotonic clock, in microseconds; 0 disables a sweeper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// How long `create_channel` waits for every invitee's ack (ag2 default 30 s).
    pub invite_ack_timeout_micros: u64,
    /// Interval of the TTL sweeper (`expire_due`); ag2 default 30 s.
    pub ttl_sweep_interval_micros: u64,
    /// Interval of the expectation sweeper; ag2 default 10 s.
    pub expectation_sweep_interval_micros: u64,
    /// Registered auth adapters.
    pub auth: link::AuthConfig,
    /// Deliberate defects, all off by default; only tests set them.
    pub bugs: Bugs,
}

/// Deliberate defects that tests switch on to show the invariant checkers catch them. A
/// scenario file cannot set them; `hubsim run --inject-bug NAME` can, so a failure's repro line
/// reproduces it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The TTL sweep expires a channel one sweep interval after it should.
    pub late_expiry: bool,
    /// The first substantive notify to a bound recipient is never sent.
    pub drop_dispatch: bool,
    /// A closed consulting channel accepts posts (no terminal check, no `validate_send`).
    pub closed_consulting_accepts: bool,
}

impl Bugs {
    /// The switch names `--inject-bug` takes.
    pub const NAMES: [&'static str; 3] =
        ["late_expiry", "drop_dispatch", "closed_consulting_accepts"];

    /// The switches named in `names` turned on.
    ///
    /// # Errors
    /// The names there are, for an unknown one.
    pub fn from_names(names: &[String]) -> Result<Bugs, String> {
        let mut bugs = Bugs::default();
        for name in names {
            bugs.enable(name)?;
        }
        Ok(bugs)
    }

    /// Turns on the switch named `name`.
    ///
    /// # Errors
    /// The names there are, for an unknown one.
    pub fn enable(&mut self, name: &str) -> Result<(), String> {
        match name {
            "late_expiry" => self.late_expiry = true,
            "drop_dispatch" => self.drop_dispatch = true,
            "closed_consulting_accepts" => self.closed_consulting_accepts = true,
            _ => {
                return Err(format!(
                    "unknown bug `{name}`; expected one of: {}",
                    Bugs::NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            invite_ack_timeout_micros: 30_000_000,
            ttl_sweep_interval_micros: 30_000_000,
            expectation_sweep_interval_micros: 10_000_000,
            auth: link::AuthConfig::default(),
            bugs: Bugs::default(),
        }
    }
}

/// Something the hub hands its driver ([`Hub::poll_output`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Deliver `envelope` to `recipient` over `endpoint` (ag2's `NotifyFrame`).
    Notify {
        /// The connection the recipient is bound to.
        endpoint: EndpointId,
        /// The addressed identity on that connection.
        recipient: AgentId,
        /// The envelope, shared (ag2 passes the same object to every recipient in-process).
        envelope: Arc<Envelope>,
    },
    /// A pending `create_channel` that no connection waits on (an in-process open) finished:
    /// `Ok` on activation, or the error its caller sees. The answer to a wire `create_channel`
    /// comes from [`Hub::poll_answer`] instead.
    OpenResolved {
        /// The channel whose handshake ended.
        channel: ChannelId,
        /// The outcome.
        result: Result<(), HubError>,
    },
    /// Send this frame on `endpoint` (welcome, error, pong, responses).
    Frame {
        /// The connection.
        endpoint: EndpointId,
        /// The frame.
        frame: crate::proto::frame::Frame,
    },
    /// A recipient's pending count crossed its high-water mark upward (ag2's
    /// `on_inbox_pressure`; not audited).
    InboxPressure {
        /// The recipient.
        agent: AgentId,
        /// Its pending count after the increment.
        pending: u64,
        /// Its `max_pending`.
        cap: i64,
    },
    /// A request the hub answered with an error (the response itself goes out as an
    /// [`Output::Frame`] just before this).
    Refused(Refused),
}

/// A well-formed request from a connection that the hub refused, and what it left behind: the
/// hub's [`Hub::trace_counters`] before and after it (a refused post must leave them as they
/// were).
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// The connection that sent it.
    pub endpoint: EndpointId,
    /// Its op (`post_envelope`, ...).
    pub op: String,
    /// The error its response carries.
    pub error: HubError,
    /// (WAL appends, audit records) before the request.
    pub before: (u64, usize),
    /// (WAL appends, audit records) after it.
    pub after: (u64, usize),
}

impl Refused {
    /// A `post_envelope` refused for a full inbox.
    pub fn inbox_full(&self) -> bool {
        self.op == "post_envelope" && self.error.kind == crate::proto::ErrorKind::InboxFull
    }

    /// A `post_envelope` that changed the WAL or the audit log although it was refused.
    pub fn post_left_trace(&self) -> bool {
        self.op == "post_envelope" && self.before != self.after
    }
}

/// A registered agent.
#[derive(Clone, Debug)]
pub(crate) struct AgentEntry {
    /// Shared, so that a `list_agents` answer holds the passports without copying them.
    pub(crate) passport: Arc<Passport>,
    pub(crate) resume: Resume,
    pub(crate) rule: Rule,
    pub(crate) skill: Option<String>,
}

/// A channel and everything the hub keeps about it.
#[derive(Clone, Debug)]
pub(crate) struct ChannelEntry {
    pub(crate) metadata: ChannelMetadata,
    /// `None` for a "ghost" channel whose `initial_state` failed (ag2 keeps it anyway).
    pub(crate) state: Option<AdapterState>,
    pub(crate) wal: Vec<Arc<Envelope>>,
    /// Expectation violation keys already fired: (expectation index, violator or "").
    pub(crate) fired: BTreeSet<(usize, String)>,
    /// `(sender, causation_id)` to the most recent envelope posted under that key.
    pub(crate) causation: BTreeMap<(AgentId, String), EnvelopeId>,
    /// `read_wal` records, filled on first read (a WAL only grows, and a stored envelope never
    /// changes).
    pub(crate) wire: std::cell::RefCell<WireCache>,
}

/// The `read_wal` records of a channel's WAL entries so far, and the whole WAL as one shared
/// record for the length it was built at.
#[derive(Clone, Debug, Default)]
pub(crate) struct WireCache {
    pub(crate) records: Vec<serde_json::Value>,
    pub(crate) whole: Option<(usize, Arc<serde_json::Value>)>,
}

impl WireCache {
    /// Adds the records of the entries not yet cached.
    pub(crate) fn fill(&mut self, wal: &[Arc<Envelope>]) {
        while self.records.len() < wal.len() {
            let record = wire::stored_envelope_json(&wal[self.records.len()]);
            self.records.push(record);
        }
    }
}

/// A pending open's invite-ack deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpenWaiter {
    pub(crate) deadline: Instant,
}

/// A wire `create_channel` waiting for its handshake: who asked, and the request to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RpcWaiter {
    pub(crate) endpoint: EndpointId,
    pub(crate) request_id: String,
}

/// A turn the protocol expects from an agent (`pending_turns_for`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTurn {
    /// The channel.
    pub channel: ChannelId,
    /// The envelope that made it the agent's turn, if any.
    pub trigger: Option<EnvelopeId>,
    /// When the turn became theirs.
    pub expected_at: Timestamp,
}

/// The hub. See the module docs.
#[derive(Clone, Debug)]
pub struct Hub {
    pub(crate) config: HubConfig,
    pub(crate) ids: IdGen,
    pub(crate) agents: BTreeMap<AgentId, AgentEntry>,
    pub(crate) names: BTreeMap<String, AgentId>,
    pub(crate) channels: BTreeMap<ChannelId, ChannelEntry>,
    /// PENDING and ACTIVE channels; ids are minted in creation order, so this iterates in it.
    pub(crate) active: BTreeSet<ChannelId>,
    pub(crate) inbox_pending: BTreeMap<AgentId, u64>,
    /// Delivery cursors: the last acked envelope id per (agent, channel id as sent), compared as
    /// strings. ag2 does not check that either id exists.
    pub(crate) cursors: BTreeMap<AgentId, BTreeMap<String, String>>,
    pub(crate) bindings: BTreeMap<AgentId, EndpointId>,
    /// Attached connections.
    pub(crate) endpoints: BTreeSet<EndpointId>,
    pub(crate) waiters: BTreeMap<ChannelId, OpenWaiter>,
    pub(crate) tasks: tasks::TaskBook,
    pub(crate) audit: AuditLog,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) next_ttl_sweep: Option<Instant>,
    pub(crate) next_expectation_sweep: Option<Instant>,
    /// Wire `create_channel` requests not answered yet, by channel.
    pub(crate) rpc_waiters: BTreeMap<ChannelId, RpcWaiter>,
    /// Wire `create_channel` requests whose handshake ended, in the order they ended, with the
    /// outcome: [`Hub::poll_answer`] answers them.
    pub(crate) answers: VecDeque<(ChannelId, Result<(), HubError>)>,
    /// WAL appends since this hub started (see [`Hub::trace_counters`]).
    pub(crate) wal_entries: u64,
    /// The `drop_dispatch` bug switch has dropped its notify.
    pub(crate) dropped_dispatch: bool,
}

impl Hub {
    /// A fresh hub whose sweepers (if enabled) first run one interval after `now`.
    pub fn new(config: HubConfig, now: Instant) -> Hub {
        let first = |interval: u64| (interval > 0).then(|| now.plus_micros(interval));
        Hub {
            next_ttl_sweep: first(config.ttl_sweep_interval_micros),
            next_expectation_sweep: first(config.expectation_sweep_interval_micros),
            config,
            ids: IdGen::default(),
            agents: BTreeMap::new(),
            names: BTreeMap::new(),
            channels: BTreeMap::new(),
            active: BTreeSet::new(),
            inbox_pending: BTreeMap::new(),
            cursors: BTreeMap::new(),
            bindings: BTreeMap::new(),
            endpoints: BTreeSet::new(),
            waiters: BTreeMap::new(),
            tasks: tasks::TaskBook::default(),
            audit: AuditLog::default(),
            outputs: VecDeque::new(),
            rpc_waiters: BTreeMap::new(),
            answers: VecDeque::new(),
            wal_entries: 0,
            dropped_dispatch: false,
        }
    }

    /// The next output, in the order the hub produced them.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// WAL appends since this hub started and audit records so far (what a refused post must
    /// not change).
    pub fn trace_counters(&self) -> (u64, usize) {
        (self.wal_entries, self.audit.records().len())
    }

    /// The channel whose `create_channel` `endpoint` sent and has not had its answer yet
    /// (pending, or ended and waiting for [`Hub::poll_answer`]). ag2 handles a connection's
    /// frames one at a time, so a driver holds that connection's later frames until then.
    pub fn waiting_on(&self, endpoint: EndpointId) -> Option<ChannelId> {
        self.rpc_waiters
            .iter()
            .find(|(_, waiter)| waiter.endpoint == endpoint)
            .map(|(channel, _)| *channel)
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Mints a connection id from the hub's id counter and attaches it (ag2's
    /// `LocalLink.client()`).
    pub fn mint_endpoint(&mut self) -> EndpointId {
        let endpoint = EndpointId(self.ids.next_raw());
        self.attach_endpoint(endpoint);
        endpoint
    }

    /// The highest id minted so far (a restarted hub continues after it).
    pub fn last_id(&self) -> u128 {
        self.ids.last()
    }

    /// Channel ids in creation order.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    /// ag2's `get_channel`.
    ///
    /// # Errors
    /// `NotFoundError("channel not found: <id>")`.
    pub fn get_channel(&self, channel: ChannelId) -> Result<&ChannelMetadata, HubError> {
        self.channels
            .get(&channel)
            .map(|entry| &entry.metadata)
            .ok_or_else(|| HubError::not_found(format!("channel not found: {channel}")))
    }

    /// The adapter state of a channel (`None` for unknown or ghost channels).
    pub fn adapter_state(&self, channel: ChannelId) -> Option<&AdapterState> {
        self.channels
            .get(&channel)
            .and_then(|entry| entry.state.as_ref())
    }

    /// ag2's `read_wal(cid)`: the whole WAL; an unknown channel reads as empty.
    pub fn read_wal(&self, channel: ChannelId) -> &[Arc<Envelope>] {
        self.channels
            .get(&channel)
            .map_or(&[], |entry| entry.wal.as_slice())
    }

    /// ag2's `read_wal(cid, since=, until=)`: the Python slice `wal[since:until]` (negative
    /// indexes count from the end; `None` is the open end). An unknown channel reads as empty.
    pub fn read_wal_slice(
        &self,
        channel: ChannelId,
        since: Option<i64>,
        until: Option<i64>,
    ) -> &[Arc<Envelope>] {
        let wal = self.read_wal(channel);
        &wal[python_slice(wal.len(), since, until)]
    }

    /// ag2's `list_channels` without state filter or limit: every channel (terminal ones too) in
    /// creation order, or those `agent` participates in.
    pub fn list_channels(&self, agent: Option<AgentId>) -> Vec<ChannelId> {
        self.channels
            .iter()
            .filter(|(_, entry)| agent.is_none_or(|agent| entry.metadata.has_participant(agent)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The hub's inbox pending counters (agents that were ever counted and are still registered).
    pub fn inbox_pending(&self) -> &BTreeMap<AgentId, u64> {
        &self.inbox_pending
    }

    /// ag2's `can_send`: would the adapter accept a text probe from `sender` now? It does not
    /// check the channel is ACTIVE, participation, inboxes or access.
    pub fn can_send(&self, channel: ChannelId, sender: AgentId, event_type: Option<&str>) -> bool {
        let Some(entry) = self.channels.get(&channel) else {
            return false;
        };
        if entry.metadata.is_terminal() {
            return false;
        }
        let Some(state) = &entry.state else {
            return false;
        };
        let probe = Envelope::new(
            channel,
            sender,
            None,
            event_type.unwrap_or(crate::proto::EventType::TEXT),
            crate::proto::envelope::map_of([("text", serde_json::Value::from(""))]),
        );
        state.validate_send(&entry.metadata, &probe).is_ok()
    }

    /// ag2's `find_envelope_by_causation`: the latest envelope `sender` posted in `channel`
    /// answering `causation`. Cleared when the channel becomes terminal.
    pub fn find_envelope_by_causation(
        &self,
        channel: ChannelId,
        sender: AgentId,
        causation: &str,
    ) -> Option<&Arc<Envelope>> {
        let entry = self.channels.get(&channel)?;
        let id = entry.causation.get(&(sender, causation.to_string()))?;
        entry
            .wal
            .iter()
            .find(|envelope| envelope.envelope_id == Some(*id))
    }

    /// ag2's `pending_turns_for`: active (PENDING included) channels whose adapter expects `agent`.
    pub fn pending_turns_for(&self, agent: AgentId, now: Timestamp) -> Vec<PendingTurn> {
        if !self.agents.contains_key(&agent) {
            return Vec::new();
        }
        let agent_text = agent.to_string();
        let mut turns = Vec::new();
        for channel in &self.active {
            let entry = &self.channels[channel];
            if !entry.metadata.has_participant(agent) {
                continue;
            }
            let Some(state) = &entry.state else { continue };
            let Some(expected) = state.expected_next(&entry.metadata) else {
                continue;
            };
            if expected.speaker.as_str() != Some(agent_text.as_str()) {
                continue;
            }
            let expected_at = expected
                .trigger
                .and_then(|id| {
                    entry
                        .wal
                        .iter()
                        .find(|envelope| envelope.envelope_id == Some(id))
                })
                .and_then(|envelope| envelope.created_at)
                .unwrap_or(now);
            turns.push(PendingTurn {
                channel: *channel,
                trigger: expected.trigger,
                expected_at,
            });
        }
        turns
    }

    /// ag2's `report_turn_failure`: a client's notify handler raised; audit `turn_failed`.
    pub fn report_turn_failure(
        &mut self,
        now: Now,
        channel: ChannelId,
        agent: AgentId,
        envelope_id: &str,
        failure: &HubError,
    ) {
        self.audit.turn_failed(
            now.wall,
            channel,
            agent,
            envelope_id,
            &failure.type_name,
            &failure.message,
        );
    }

    /// The adapter of a channel.
    pub fn adapter_kind(&self, channel: ChannelId) -> Option<AdapterKind> {
        self.channels
            .get(&channel)
            .map(|entry| AdapterKind::of(&entry.metadata))
    }

    /// A summary of the hub's size, as ag2's `health()` reports it.
    pub fn health(&self) -> Health {
        Health {
            active_channels: self.active.len(),
            registered_agents: self.agents.len(),
            pending_inbox_total: self.inbox_pending.values().sum(),
            max_pending_inbox_depth: self.inbox_pending.values().max().copied(),
            audit_records: self.audit.records().len(),
        }
    }
}

/// The index range of Python's `items[start:stop]` (step 1) over `len` items: negative bounds
/// count from the end, and every bound is clamped to the list.
pub fn python_slice(len: usize, start: Option<i64>, stop: Option<i64>) -> std::ops::Range<usize> {
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let clamp = |bound: Option<i64>, default: i64| -> usize {
        let index = match bound {
            None => default,
            Some(index) if index < 0 => index.saturating_add(len_i).max(0),
            Some(index) => index.min(len_i),
        };
        usize::try_from(index).expect("clamped to 0..=len")
    };
    let (start, stop) = (clamp(start, 0), clamp(stop, len_i));
    start..stop.max(start)
}

/// ag2's `health()`, minus the byte counters of its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// PENDING and ACTIVE channels.
    pub active_channels: usize,
    /// Registered agents.
    pub registered_agents: usize,
    /// Sum of the inbox counters.
    pub pending_inbox_total: u64,
    /// The largest inbox counter, if any agent has one.
    pub max_pending_inbox_depth: Option<u64>,
    /// Audit records written.
    pub audit_records: usize,
}

#[cfg(test)]
mod tests;
