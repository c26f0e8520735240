//! One scripted agent in ag2's remote mode, sans-IO: its `HubClient` (one connection at a time,
//! [`RemoteLink`]), its `AgentClient` (register, open, send, close, set_rule, unregister, attach
//! and `resume_pending_turns`) and the default notify handler running over RPCs.
//!
//! As in ag2's remote mode, every notify starts its own handler task, so one agent's handlers
//! run concurrently and their receipts go back in completion order. A substantive turn costs
//! ag2's RPC sequence: `get_channel` (and `names_for` for participants not yet in the name
//! cache), `find_envelope_by_causation`, `can_send`, `read_wal` (history), `read_wal` (state
//! before the turn), the model, `read_wal` (state after), `post_envelope`; any failure is sent
//! with `report_turn_failure` and the delivery is still acked. The model takes the simulated
//! time its driver's [`ThinkTime`] gives it.
//!
//! A dropped connection fails what was in flight (`RuntimeError("connection closed")`); the
//! tasks it leaves keep their dead link, so their later calls time out after `rpc_timeout`, as
//! in ag2. [`AgentHost::attach`] is ag2's recovery path: a new `HubClient`, a hello with
//! `since_envelope_id` (replay past the hub's cursor), then `resume_pending_turns`.

use super::handler::{has_turn_input, Round};
use super::remote::{ClientEvent, RemoteLink, RPC_TIMEOUT_MICROS};
use super::{HandlerMode, ScriptedAgent, TurnOutcome};
use crate::hub::adapter::graph::Graph;
use crate::hub::adapter::AdapterKind;
use crate::hub::wire;
use crate::hub::{Passport, Resume};
use crate::ids::{AgentId, ChannelId, EnvelopeId, IdGen};
use crate::json::py_truthy;
use crate::proto::envelope::map_of;
use crate::proto::frame::Frame;
use crate::proto::{Envelope, EventType, HubError};
use crate::time::Instant;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// How long a model turn takes, in simulated microseconds (the driver's random stream, or a
/// constant).
pub trait ThinkTime {
    /// The duration of the turn that produced `outcome`.
    fn turn_micros(&mut self, outcome: &TurnOutcome) -> u64;
}

impl ThinkTime for u64 {
    fn turn_micros(&mut self, _outcome: &TurnOutcome) -> u64 {
        *self
    }
}

/// Identifies a command given to the host.
pub type CommandId = u64;

/// What the scenario asks an agent's client to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `HubClient.register` (binds this connection); the result is the agent id.
    Register {
        /// The rule, as ag2's `Rule.to_dict()`.
        rule: Value,
    },
    /// `AgentClient.open`: `get_agent` per target, then `create_channel`.
    Open(Box<OpenRequest>),
    /// `Channel.send`: `post_envelope`.
    Post(Box<Envelope>),
    /// `Channel.close`: `close_channel`.
    Close {
        /// The channel.
        channel: ChannelId,
        /// The reason.
        reason: String,
    },
    /// `AgentClient.set_rule`.
    SetRule {
        /// The rule, as ag2's `Rule.to_dict()`.
        rule: Value,
    },
    /// `AgentClient.unregister`.
    Unregister,
    /// Any other RPC as the client sends it (`checkpoint_task` and `read_task_checkpoint` for
    /// `HubBackedCheckpointStore`); the result is the op's.
    Call {
        /// The op.
        op: String,
        /// Its params.
        params: Map<String, Value>,
    },
}

/// What `AgentClient.open` is called with.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenRequest {
    /// Target names or ids.
    pub targets: Vec<String>,
    /// The adapter type.
    pub manifest_type: String,
    /// `ttl` as given (a duration string, seconds, or null).
    pub ttl: Value,
    /// `knobs` (ids resolved) or null.
    pub knobs: Value,
    /// `intent` or null.
    pub intent: Value,
    /// `labels` or null.
    pub labels: Value,
}

/// A call's state inside a task: which RPC it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    // Commands.
    Register,
    GetAgent,
    CreateChannel,
    OpenNames,
    Single,
    Unregister,
    // Handlers.
    AckInvite,
    HumanAck,
    HumanPost,
    GetChannel,
    Names,
    Causation,
    CanSend,
    History,
    StateBefore,
    Thinking,
    StateAfter,
    Post,
    Report,
    // Resume.
    PendingTurns,
    ResumeWal,
    ResumeWaits,
}

#[derive(Clone, Debug)]
enum Work {
    Command {
        id: CommandId,
        /// Open: targets still to resolve, ids resolved, the create params.
        open: Option<Box<OpenState>>,
        result: Option<Value>,
    },
    Handler {
        envelope: Arc<Envelope>,
        /// Acked when the handler returns (false for `resume_pending_turns` re-runs).
        receipt: bool,
        raw: Value,
        outcome: Option<Box<TurnOutcome>>,
        until: Instant,
    },
    Resume {
        /// Pending turns still to re-run: (channel, triggering envelope id).
        turns: VecDeque<(String, String)>,
        /// The handler task being awaited.
        waiting: Option<u64>,
    },
}

#[derive(Clone, Debug)]
struct OpenState {
    targets: VecDeque<String>,
    ids: Vec<Value>,
    params: Map<String, Value>,
}

#[derive(Clone, Debug)]
struct Task {
    link: u32,
    stage: Stage,
    work: Work,
}

/// One agent's client side. See the module docs.
#[derive(Clone, Debug)]
pub struct AgentHost {
    /// The script and how far it ran.
    pub model: ScriptedAgent,
    /// The registered id, once `register` answered.
    pub id: Option<AgentId>,
    /// Set by a successful `unregister` (ag2's `_disconnected`).
    pub disconnected: bool,
    rpc_timeout_micros: u64,
    links: BTreeMap<u32, RemoteLink>,
    current: u32,
    /// Name cache (`_id_by_name`), filled by `register`, `get_agent` and `names_for`.
    names: BTreeMap<String, AgentId>,
    /// Channel metadata cache (`_channel_meta`), as received.
    channels: BTreeMap<ChannelId, Value>,
    tasks: BTreeMap<u64, Task>,
    next_task: u64,
    next_command: CommandId,
    calls: BTreeMap<(u32, String), u64>,
    results: VecDeque<(CommandId, Result<Value, HubError>)>,
    /// Handler tasks that finished, for `Resume` tasks awaiting them.
    finished: Vec<u64>,
    /// A human's pull queue (`HumanClient.next_envelope`), in arrival order.
    pulled: VecDeque<Value>,
    /// What happened since the driver last polled ([`AgentHost::take_events`]).
    events: Vec<HostEvent>,
}

/// What a client saw or did that an observer outside it (the run's event log, the invariant
/// checkers) cares about. The client keeps none of it; drivers take it with
/// [`AgentHost::take_events`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostEvent {
    /// A new connection (a new `HubClient`): `1` for the first, counting re-attaches.
    Connected(u32),
    /// `register` answered with this id.
    Registered(AgentId),
    /// `unregister` succeeded (ag2's `_disconnected`).
    Unregistered,
    /// A notify arrived with a receipt requested (replays included).
    Received {
        /// The connection it came on.
        connection: u32,
        /// The envelope as received.
        envelope: Arc<Envelope>,
    },
    /// The default handler started a model turn for this trigger.
    TurnStarted(EnvelopeId),
    /// A model turn for this trigger ended (its handler returned).
    TurnEnded(EnvelopeId),
    /// A handler for this envelope finished on a live connection (and acked it, or re-ran it
    /// for `resume_pending_turns`).
    Handled(EnvelopeId),
}

fn disconnected_error() -> HubError {
    HubError::runtime("AgentClient is disconnected")
}

impl AgentHost {
    /// A host for `model`, not yet connected.
    pub fn new(model: ScriptedAgent, rpc_timeout_micros: u64) -> AgentHost {
        AgentHost {
            model,
            id: None,
            disconnected: false,
            rpc_timeout_micros,
            links: BTreeMap::new(),
            current: 0,
            names: BTreeMap::new(),
            channels: BTreeMap::new(),
            tasks: BTreeMap::new(),
            next_task: 0,
            next_command: 0,
            calls: BTreeMap::new(),
            results: VecDeque::new(),
            finished: Vec::new(),
            pulled: VecDeque::new(),
            events: Vec::new(),
        }
    }

    /// A host with ag2's default `rpc_timeout`.
    pub fn with_default_timeout(model: ScriptedAgent) -> AgentHost {
        AgentHost::new(model, RPC_TIMEOUT_MICROS)
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.model.name
    }

    /// A new connection (a new `HubClient`): later calls and messages use it. Tasks started on
    /// an earlier connection keep theirs.
    pub fn connected(&mut self) {
        self.current += 1;
        let ids = IdGen::starting_after(u128::from(self.current) << 64);
        let mut link = RemoteLink::new(ids, self.rpc_timeout_micros);
        if let Some(id) = self.id {
            link.adopt(id);
        }
        self.links.insert(self.current, link);
        self.events.push(HostEvent::Connected(self.current));
    }

    /// Takes everything this client saw or did since the last call, oldest first.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, HostEvent> {
        self.events.drain(..)
    }

    /// The current connection dropped (or was never made).
    pub fn connection_lost(&mut self, now: Instant, think: &mut dyn ThinkTime) {
        if let Some(link) = self.links.get_mut(&self.current) {
            link.closed();
        }
        self.pump(now, think);
    }

    /// Connections made so far (re-attaches included).
    pub fn connections(&self) -> u32 {
        self.current
    }

    /// Whether the current connection is up.
    pub fn is_connected(&self) -> bool {
        self.links
            .get(&self.current)
            .is_some_and(|link| !link.is_closed())
    }

    /// ag2's `HubClient.attach` on the current connection: a hello (NoAuth) with
    /// `since_envelope_id`, then `resume_pending_turns` once welcomed.
    pub fn attach(&mut self, now: Instant, since: Option<&str>) {
        let name = self.model.name.clone();
        if let Some(link) = self.links.get_mut(&self.current) {
            link.hello(now, &name, "none", Map::new(), since);
        }
    }

    /// One text message from the hub.
    pub fn receive(&mut self, now: Instant, text: &str, think: &mut dyn ThinkTime) {
        if let Some(link) = self.links.get_mut(&self.current) {
            link.receive(text);
        }
        self.pump(now, think);
    }

    /// The next text message to send on the current connection.
    pub fn poll_send(&mut self) -> Option<String> {
        self.links.get_mut(&self.current)?.poll_send()
    }

    /// One frame from the hub (drivers that carry frames without encoding them).
    pub fn receive_frame(&mut self, now: Instant, frame: Frame, think: &mut dyn ThinkTime) {
        if let Some(link) = self.links.get_mut(&self.current) {
            link.receive_frame(frame);
        }
        self.pump(now, think);
    }

    /// The next frame to send on the current connection.
    pub fn poll_send_frame(&mut self) -> Option<Frame> {
        self.links.get_mut(&self.current)?.poll_send_frame()
    }

    /// Envelopes waiting in a human's pull queue.
    pub fn pulled_len(&self) -> usize {
        self.pulled.len()
    }

    /// The next envelope of a human's pull queue (`HumanClient.next_envelope`), as received.
    pub fn pop_pulled(&mut self) -> Option<Value> {
        self.pulled.pop_front()
    }

    /// A finished command.
    pub fn poll_result(&mut self) -> Option<(CommandId, Result<Value, HubError>)> {
        self.results.pop_front()
    }

    /// The earliest RPC deadline or end of a model turn.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.values().filter_map(RemoteLink::poll_timeout);
        let turns = self
            .tasks
            .values()
            .filter_map(|task| match (&task.work, task.stage) {
                (Work::Handler { until, .. }, Stage::Thinking) => Some(*until),
                _ => None,
            });
        links.chain(turns).min()
    }

    /// Runs what is due: RPC timeouts and finished model turns.
    pub fn handle_timeout(&mut self, now: Instant, think: &mut dyn ThinkTime) {
        for link in self.links.values_mut() {
            link.handle_timeout(now);
        }
        let done: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, task)| {
                task.stage == Stage::Thinking
                    && matches!(&task.work, Work::Handler { until, .. } if *until <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for task in done {
            self.turn_done(now, task);
        }
        self.pump(now, think);
    }

    /// True when no task is running (nothing in flight, no model turn under way).
    pub fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// True when no notify handler (or `resume_pending_turns`) is running; commands may still
    /// wait for their answers (a background open waiting for acks).
    pub fn handlers_idle(&self) -> bool {
        self.tasks
            .values()
            .all(|task| matches!(task.work, Work::Command { .. }))
    }

    fn start_task(&mut self, stage: Stage, work: Work) -> u64 {
        self.next_task += 1;
        self.tasks.insert(
            self.next_task,
            Task {
                link: self.current,
                stage,
                work,
            },
        );
        self.next_task
    }

    fn call(
        &mut self,
        now: Instant,
        task: u64,
        stage: Stage,
        op: &str,
        params: Map<String, Value>,
    ) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        t.stage = stage;
        let gen = t.link;
        let Some(link) = self.links.get_mut(&gen) else {
            return;
        };
        let request = link.call(now, op, params);
        self.calls.insert((gen, request), task);
    }

    /// Drains every link's events into the tasks they concern, until nothing moves.
    fn pump(&mut self, now: Instant, think: &mut dyn ThinkTime) {
        loop {
            let mut moved = false;
            let gens: Vec<u32> = self.links.keys().copied().collect();
            for gen in gens {
                while let Some(event) = self.links.get_mut(&gen).and_then(RemoteLink::poll_event) {
                    moved = true;
                    self.on_event(now, gen, event, think);
                }
            }
            if !self.finished.is_empty() {
                moved = true;
                self.wake_resumes(now);
            }
            if !moved {
                break;
            }
        }
        // Dead links nobody uses any more are dropped.
        let used: Vec<u32> = self.tasks.values().map(|task| task.link).collect();
        let current = self.current;
        self.links
            .retain(|gen, link| *gen == current || !link.is_closed() || used.contains(gen));
    }

    fn on_event(&mut self, now: Instant, gen: u32, event: ClientEvent, think: &mut dyn ThinkTime) {
        match event {
            ClientEvent::Response {
                request_id, result, ..
            } => {
                if let Some(task) = self.calls.remove(&(gen, request_id)) {
                    self.on_response(now, task, result, think);
                }
            }
            ClientEvent::Handshake { result, .. } => {
                if result.is_ok() && gen == self.current {
                    let params = map_of([(
                        "agent_id",
                        self.id
                            .map_or(Value::Null, |id| Value::String(id.to_string())),
                    )]);
                    let task = self.start_task(
                        Stage::PendingTurns,
                        Work::Resume {
                            turns: VecDeque::new(),
                            waiting: None,
                        },
                    );
                    self.call(now, task, Stage::PendingTurns, "pending_turns_for", params);
                }
            }
            ClientEvent::Notify { envelope, .. } => self.on_notify(now, envelope, true),
        }
    }
}

/// The default handler's (and `HumanClient`'s) ack of an invite.
fn invite_ack(invite: &Envelope, me: AgentId) -> Envelope {
    let mut ack = Envelope::new(
        invite.channel_id,
        me,
        None,
        EventType::CHANNEL_INVITE_ACK,
        map_of([("channel_id", Value::String(invite.channel_id.to_string()))]),
    );
    ack.causation_id = Some(invite.id_text());
    ack
}

fn read_wal(channel: Value) -> Map<String, Value> {
    map_of([
        ("channel_id", channel),
        ("since", Value::from(0)),
        ("until", Value::Null),
    ])
}

/// The adapter a metadata record names.
fn adapter_kind_of(metadata: &Value) -> Option<AdapterKind> {
    let manifest = metadata.get("manifest")?;
    let kind = manifest.get("type")?.as_str()?;
    let version = manifest.get("version").and_then(Value::as_i64).unwrap_or(1);
    AdapterKind::lookup(kind, version)
}

mod commands;
mod handler;
mod resume;

#[cfg(test)]
mod tests;
