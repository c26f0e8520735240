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
use crate::ids::{AgentId, ChannelId, IdGen};
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
    }

    /// The current connection dropped (or was never made).
    pub fn connection_lost(&mut self, now: Instant, think: &mut dyn ThinkTime) {
        if let Some(link) = self.links.get_mut(&self.current) {
            link.closed();
        }
        self.pump(now, think);
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

    fn finish_command(&mut self, task: u64, result: Result<Value, HubError>) {
        if let Some(Task {
            work: Work::Command { id, .. },
            ..
        }) = self.tasks.remove(&task)
        {
            self.results.push_back((id, result));
        }
    }

    fn next_target(&mut self, now: Instant, task: u64) {
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

    fn cache_passport(&mut self, passport: &Value) {
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
    fn missing_names(&self, metadata: &Value) -> Vec<Value> {
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

    fn cache_channel(&mut self, metadata: &Value) {
        if let Some(channel) = metadata
            .get("channel_id")
            .and_then(Value::as_str)
            .and_then(ChannelId::parse)
        {
            self.channels.insert(channel, metadata.clone());
        }
    }

    fn cache_names(&mut self, mapping: &Value) {
        if let Some(map) = mapping.as_object() {
            for (id, name) in map {
                if let (Some(id), Some(name)) = (AgentId::parse(id), name.as_str()) {
                    self.names.insert(name.to_string(), id);
                }
            }
        }
    }

    fn on_response(
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
                }
                self.finish_command(task, result.map(|_| Value::Null));
            }
            _ => {}
        }
    }

    fn finish_open(&mut self, task: u64) {
        let metadata = match self.tasks.get(&task) {
            Some(Task {
                work: Work::Command { result, .. },
                ..
            }) => result.clone().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        self.finish_command(task, Ok(metadata));
    }

    fn on_notify(&mut self, now: Instant, raw: Value, receipt: bool) {
        let Some(envelope) = Envelope::from_json(&raw) else {
            // Nothing to act on; ag2's handler would fail and still ack.
            if receipt {
                self.receipt(self.current, &raw);
            }
            return;
        };
        let envelope = Arc::new(envelope);
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

    fn handler_envelope(&self, task: u64) -> Option<Arc<Envelope>> {
        match &self.tasks.get(&task)?.work {
            Work::Handler { envelope, .. } => Some(envelope.clone()),
            _ => None,
        }
    }

    fn on_handler_response(
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
            Stage::Post => self.end_handler(task),
            _ => self.end_handler(task),
        }
    }

    /// The rest of `HumanClient.receive`: queue the envelope, then run the push callback (the
    /// next scripted reply to a substantive envelope from someone else).
    fn human_deliver(&mut self, now: Instant, task: u64, me: AgentId) {
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
                super::TurnItem::Text(text) => Some(text.clone()),
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

    fn after_metadata(&mut self, now: Instant, task: u64, envelope: &Envelope, me: AgentId) {
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

    fn turn_done(&mut self, now: Instant, task: u64) {
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

    fn post_round(&mut self, now: Instant, task: u64, trigger: &Envelope, me: AgentId) {
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
    fn report(&mut self, now: Instant, task: u64, error: &HubError) {
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
    fn end_handler(&mut self, task: u64) {
        let Some(t) = self.tasks.remove(&task) else {
            return;
        };
        if let Work::Handler {
            receipt: true, raw, ..
        } = &t.work
        {
            self.receipt(t.link, raw);
        }
        self.finished.push(task);
    }

    fn receipt(&mut self, gen: u32, raw: &Value) {
        let Some(me) = self.id else { return };
        if let Some(link) = self.links.get_mut(&gen) {
            link.receipt(me, raw, Ok(()));
        }
    }

    fn on_resume(
        &mut self,
        now: Instant,
        task: u64,
        stage: Stage,
        result: Result<Arc<Value>, HubError>,
    ) {
        let Ok(value) = result else {
            // ag2's resume raises; nothing more is re-run.
            self.tasks.remove(&task);
            return;
        };
        match stage {
            Stage::PendingTurns => {
                let turns = value
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|turn| {
                                let channel = turn.get("channel_id")?.as_str()?;
                                let trigger = turn.get("triggering_envelope_id")?.as_str()?;
                                Some((channel.to_string(), trigger.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(Task {
                    work: Work::Resume { turns: slot, .. },
                    ..
                }) = self.tasks.get_mut(&task)
                {
                    *slot = turns;
                }
                self.next_resume(now, task);
            }
            Stage::ResumeWal => {
                let trigger = match self.tasks.get(&task) {
                    Some(Task {
                        work: Work::Resume { turns, .. },
                        ..
                    }) => turns.front().map(|(_, id)| id.clone()),
                    _ => None,
                };
                let found = value.as_array().and_then(|wal| {
                    wal.iter()
                        .find(|e| {
                            e.get("envelope_id").and_then(Value::as_str) == trigger.as_deref()
                        })
                        .cloned()
                });
                if let Some(Task {
                    work: Work::Resume { turns, .. },
                    ..
                }) = self.tasks.get_mut(&task)
                {
                    turns.pop_front();
                }
                match found {
                    Some(raw) => {
                        let before = self.next_task;
                        self.on_notify(now, raw, false);
                        let handler = before + 1;
                        if self.tasks.contains_key(&handler) {
                            if let Some(Task {
                                stage,
                                work: Work::Resume { waiting, .. },
                                ..
                            }) = self.tasks.get_mut(&task)
                            {
                                *stage = Stage::ResumeWaits;
                                *waiting = Some(handler);
                            }
                        } else {
                            self.next_resume(now, task);
                        }
                    }
                    None => self.next_resume(now, task),
                }
            }
            _ => {}
        }
    }

    fn next_resume(&mut self, now: Instant, task: u64) {
        let next = match self.tasks.get(&task) {
            Some(Task {
                work: Work::Resume { turns, .. },
                ..
            }) => turns.front().cloned(),
            _ => return,
        };
        match next {
            Some((channel, _)) => self.call(
                now,
                task,
                Stage::ResumeWal,
                "read_wal",
                read_wal(Value::String(channel)),
            ),
            None => {
                self.tasks.remove(&task);
            }
        }
    }

    fn wake_resumes(&mut self, now: Instant) {
        let finished = std::mem::take(&mut self.finished);
        let waiting: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                matches!(&t.work, Work::Resume { waiting: Some(h), .. } if finished.contains(h))
            })
            .map(|(id, _)| *id)
            .collect();
        for task in waiting {
            if let Some(Task {
                work: Work::Resume { waiting, .. },
                ..
            }) = self.tasks.get_mut(&task)
            {
                *waiting = None;
            }
            self.next_resume(now, task);
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

#[cfg(test)]
mod tests;
