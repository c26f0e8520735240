//! Faults and a recording on real connections: the [`Tap`] `hubsim serve --faults FILE
//! --record DIR` puts between the sockets and the hub.
//!
//! **Faults.** The fault file's timed faults (and its `chaos` profile, drawn from `--seed`) are
//! applied at their offsets from the start of the serve, to the connections of the agent they
//! name. A connection belongs to the agent named by its first `hello` or `register`, and then
//! to the agents the hub binds to it. They mean what they mean in a scenario:
//! - `hold: A` keeps A's messages, both ways, with the connection open; `release: A` hands
//!   them on in order;
//! - `partition: A` keeps them too, and once a partition has lasted `keepalive` every
//!   connection of A is cut (what was kept is lost); `repair: A` hands on what is left. A
//!   connection A opens during a partition is cut as soon as it names A;
//! - `disconnect: A` cuts A's connections now (no closing handshake: the peer sees the
//!   socket go, as on a lost network);
//! - `crash: hub` cuts every connection and takes the hub down (connections that open while
//!   it is down are closed at once); `restart: hub` brings it back from its durable state;
//! - `latency: R` (for `agent: A`, or everyone) delays each message by a draw from R, in order.
//!
//! **Recording.** With `--record DIR`, every message, connection, fault and crash goes into the
//! event log the simulated runs keep ([`EventLog`]), and what each agent's connection carried is
//! folded into the checkers' client logs: a notify written to an agent's socket is a delivery,
//! a receipt it sends is a handled envelope. At shutdown the invariants that a recording can
//! judge run once (`delivery`, `ttl`, `auto_close`, `inbox`, `wal`: not `determinism` or
//! `settle`, and not the one-turn-per-trigger part of `delivery`, which needs the agents'
//! model turns), and the run is written as `DIR/timeline.txt` and `DIR/report.html`. The
//! checks read the hub from outside, as in the simulations; they run at shutdown, so stop the
//! hub once the agents are quiet, or deliveries still in flight are reported as missing.

use super::check::{Invariant, Selection};
use super::log::{CloseReason, DropReason, Event, EventLog, FrameSummary, LogLevel};
use super::monitor::{Clocks, Monitor};
use super::random::{draw, stream};
use super::record::{Run, RunAgent};
use super::scenario::{Fault, FaultPlan, Range};
use super::timeline::{Filter, Origin, Timeline};
use crate::client::host::HostEvent;
use crate::client::{HandlerMode, ScriptedAgent};
use crate::hub::{Hub, HubConfig};
use crate::ids::{AgentId, EndpointId};
use crate::net::{Command, Ended, Pass, Tap, TapContext};
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::{Envelope, HubError};
use crate::time::{Instant, Timestamp};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The invariants a recorded run is checked for.
pub const RECORDED_INVARIANTS: [Invariant; 5] = [
    Invariant::Delivery,
    Invariant::Ttl,
    Invariant::AutoClose,
    Invariant::Inbox,
    Invariant::Wal,
];

/// Messages kept for one direction of one connection at most: past it the connection is cut,
/// as a socket whose buffers filled would be (the server's own bound on a writer's queue).
pub const KEPT_MAX: usize = crate::net::ws::OUTBOUND_MESSAGES_MAX;

/// What `hubsim serve --faults/--record` asks for.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// The faults (an empty plan: none).
    pub plan: FaultPlan,
    /// The seed `chaos` and latency draws come from.
    pub seed: u64,
    /// Where the recording goes (`None`: nothing is recorded).
    pub record: Option<PathBuf>,
    /// The hub clock at the start (the timeline's times count from it).
    pub epoch: Timestamp,
    /// The TTL sweep interval (µs; 0: off), for the `ttl` checker.
    pub ttl_sweep: u64,
}

/// What a recording found, for the caller once the serve ended.
#[derive(Clone, Debug, Default)]
pub struct LiveOutcome {
    /// Whether the recording was written.
    pub written: bool,
    /// The files it wrote.
    pub files: Vec<PathBuf>,
    /// What failed while writing it.
    pub error: Option<String>,
    /// How many violations were found at shutdown.
    pub violations: usize,
    /// Each violation with the events it concerns, as printed.
    pub report: String,
    /// Faults applied.
    pub faults: usize,
}

/// One kept message.
struct Kept {
    text: String,
    /// When it goes on (`None`: when its hold or partition ends).
    ready: Option<u64>,
    /// Its frame number in the log (0: not logged).
    seq: u64,
}

/// What the tap knows of one connection.
#[derive(Default)]
struct Conn {
    /// The agent it belongs to.
    agent: Option<String>,
    /// Its number among that agent's connections (from 1).
    number: u32,
    /// The agents the hub has bound to it.
    bound: BTreeSet<AgentId>,
    /// Its last hello asked for a replay (`since_envelope_id` a string).
    replay: bool,
}

/// One agent's faults.
#[derive(Default)]
struct AgentFaults {
    /// Since when it is partitioned.
    partitioned: Option<u64>,
    held: bool,
    /// Its own latency (`None`: everyone's).
    latency: Option<Range>,
}

/// See the module docs.
pub struct LiveTap {
    schedule: VecDeque<(u64, Fault, bool)>,
    keepalive: u64,
    agents: BTreeMap<String, AgentFaults>,
    latency_all: Range,
    /// When to cut a partitioned agent's connections, if it is still partitioned since then.
    keepalive_cuts: BTreeSet<(u64, String)>,
    conns: BTreeMap<EndpointId, Conn>,
    /// Connections per agent so far.
    numbers: BTreeMap<String, u32>,
    queues: BTreeMap<(EndpointId, bool), VecDeque<Kept>>,
    pending: Vec<Command>,
    rng: ChaCha8Rng,
    down: bool,
    recorder: Option<Recorder>,
    outcome: Arc<Mutex<LiveOutcome>>,
}

impl LiveTap {
    /// A tap for `options`, and where its outcome will be once the serve ended.
    pub fn new(options: LiveOptions) -> (LiveTap, Arc<Mutex<LiveOutcome>>) {
        let mut schedule: Vec<(u64, Fault, bool)> = options
            .plan
            .faults
            .iter()
            .map(|timed| (timed.at, timed.fault.clone(), false))
            .collect();
        if let Some(chaos) = &options.plan.chaos {
            let drawn =
                super::chaos::schedule(chaos, options.seed, &options.plan.agents, Range::fixed(0));
            schedule.extend(drawn.into_iter().map(|(at, fault)| (at, fault, true)));
        }
        // Stable: faults at one time keep file order, then the drawn ones.
        schedule.sort_by_key(|(at, _, _)| *at);
        let outcome = Arc::new(Mutex::new(LiveOutcome::default()));
        let recorder = options
            .record
            .clone()
            .map(|dir| Recorder::new(dir, &options));
        let tap = LiveTap {
            schedule: schedule.into(),
            keepalive: options.plan.keepalive,
            agents: BTreeMap::new(),
            latency_all: Range::fixed(0),
            keepalive_cuts: BTreeSet::new(),
            conns: BTreeMap::new(),
            numbers: BTreeMap::new(),
            queues: BTreeMap::new(),
            pending: Vec::new(),
            rng: stream(options.seed, "live/latency"),
            down: false,
            recorder,
            outcome: Arc::clone(&outcome),
        };
        (tap, outcome)
    }

    fn faults_of(&self, agent: Option<&str>) -> (bool, Range) {
        let Some(name) = agent else {
            return (false, self.latency_all);
        };
        match self.agents.get(name) {
            Some(f) => (
                f.held || f.partitioned.is_some(),
                f.latency.unwrap_or(self.latency_all),
            ),
            None => (false, self.latency_all),
        }
    }

    /// Names a connection's agent from its first `hello` or `register`.
    fn learn(&mut self, endpoint: EndpointId, frame: &Frame) -> Option<String> {
        let conn = self.conns.entry(endpoint).or_default();
        if frame.kind == FrameKind::Hello {
            conn.replay = frame.get("since_envelope_id").is_string();
        }
        if conn.agent.is_none() {
            let name = match frame.kind {
                FrameKind::Hello => frame.get("name").as_str(),
                FrameKind::Request if frame.get("op").as_str() == Some("register") => frame
                    .get("params")
                    .get("passport")
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str),
                _ => None,
            };
            if let Some(name) = name {
                let number = self.numbers.entry(name.to_string()).or_insert(0);
                *number += 1;
                conn.number = *number;
                conn.agent = Some(name.to_string());
            }
        }
        conn.agent.clone()
    }

    /// Shows one message to the faults: passes it, or keeps it.
    fn pass(&mut self, at: u64, endpoint: EndpointId, up: bool, text: &str, seq: u64) -> Pass {
        let agent = self.conns.get(&endpoint).and_then(|c| c.agent.clone());
        let (held, latency) = self.faults_of(agent.as_deref());
        let queue = self.queues.entry((endpoint, up)).or_default();
        if !held && latency.max == 0 && queue.is_empty() {
            return Pass::Now;
        }
        if queue.len() >= KEPT_MAX {
            self.pending.push(Command::Cut(endpoint));
            return Pass::Drop;
        }
        let ready = if held {
            None
        } else {
            let after = at.saturating_add(draw(&mut self.rng, latency));
            let behind = queue.back().and_then(|k| k.ready).unwrap_or(0);
            Some(after.max(behind))
        };
        queue.push_back(Kept {
            text: text.to_string(),
            ready,
            seq,
        });
        Pass::Keep
    }

    /// Hands on what an agent's hold or partition kept, after `at` plus each message's
    /// latency, in order.
    fn unhold(&mut self, at: u64, agent: &str) {
        let endpoints: Vec<EndpointId> = self.endpoints_of(agent);
        let (_, latency) = self.faults_of(Some(agent));
        for endpoint in endpoints {
            for up in [true, false] {
                let Some(queue) = self.queues.get_mut(&(endpoint, up)) else {
                    continue;
                };
                let mut behind = at;
                for kept in queue.iter_mut() {
                    let ready = kept
                        .ready
                        .unwrap_or_else(|| at.saturating_add(draw(&mut self.rng, latency)));
                    behind = behind.max(ready);
                    kept.ready = Some(behind);
                }
            }
        }
    }

    fn endpoints_of(&self, agent: &str) -> Vec<EndpointId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.agent.as_deref() == Some(agent))
            .map(|(e, _)| *e)
            .collect()
    }

    /// Applies one fault.
    fn apply(&mut self, cx: TapContext<'_>, fault: &Fault, chaos: bool) {
        self.outcome().faults += 1;
        if let Some(recorder) = &mut self.recorder {
            recorder.log(
                cx.at,
                Event::Fault {
                    fault: fault.clone(),
                    chaos,
                },
            );
        }
        let at = cx.at;
        match fault {
            Fault::Hold(agent) => self.agents.entry(agent.clone()).or_default().held = true,
            Fault::Partition(agent) => {
                let faults = self.agents.entry(agent.clone()).or_default();
                if faults.partitioned.is_none() {
                    faults.partitioned = Some(at);
                    self.keepalive_cuts
                        .insert((at.saturating_add(self.keepalive), agent.clone()));
                }
            }
            Fault::Release(agent) | Fault::Repair(agent) => {
                let faults = self.agents.entry(agent.clone()).or_default();
                if matches!(fault, Fault::Release(_)) {
                    faults.held = false;
                } else {
                    faults.partitioned = None;
                }
                if !faults.held && faults.partitioned.is_none() {
                    self.unhold(at, agent);
                }
            }
            Fault::Disconnect(agent) => {
                for endpoint in self.endpoints_of(agent) {
                    self.pending.push(Command::Cut(endpoint));
                }
            }
            Fault::Crash => self.pending.push(Command::Crash),
            Fault::Restart => self.pending.push(Command::Restart),
            Fault::Latency { agent, range } => match agent {
                Some(agent) => self.agents.entry(agent.clone()).or_default().latency = Some(*range),
                None => {
                    self.latency_all = *range;
                    for faults in self.agents.values_mut() {
                        faults.latency = None;
                    }
                }
            },
        }
    }

    /// Why a cut connection closed, for the log.
    fn close_reason(ended: Ended, keepalive: bool) -> CloseReason {
        match ended {
            Ended::Peer => CloseReason::Peer,
            Ended::Hub(_) => CloseReason::Hub,
            Ended::Cut if keepalive => CloseReason::Keepalive,
            Ended::Cut => CloseReason::Disconnect,
            Ended::Crash => CloseReason::Crash,
        }
    }
}

impl Tap for LiveTap {
    fn opened(&mut self, _cx: TapContext<'_>, endpoint: EndpointId) {
        self.conns.insert(endpoint, Conn::default());
    }

    fn inbound(&mut self, cx: TapContext<'_>, endpoint: EndpointId, text: &str) -> Pass {
        let frame = Frame::decode(text).ok();
        let agent = match &frame {
            Some(frame) => self.learn(endpoint, frame),
            None => self.conns.get(&endpoint).and_then(|c| c.agent.clone()),
        };
        let seq = match (&mut self.recorder, &agent) {
            (Some(recorder), Some(agent)) => recorder.sent(cx.at, agent, true, text),
            _ => 0,
        };
        // A connection that names a partitioned agent cannot get through.
        if let Some(name) = &agent {
            if self
                .agents
                .get(name)
                .is_some_and(|f| f.partitioned.is_some())
                && !self.queues.contains_key(&(endpoint, true))
                && self
                    .conns
                    .get(&endpoint)
                    .is_some_and(|c| c.bound.is_empty())
            {
                self.pending.push(Command::Cut(endpoint));
                if let Some(recorder) = &mut self.recorder {
                    recorder.dropped(cx.at, name, true, seq, DropReason::ConnectionClosed);
                }
                return Pass::Drop;
            }
        }
        let pass = self.pass(cx.at, endpoint, true, text, seq);
        if let (Some(recorder), Some(agent)) = (&mut self.recorder, &agent) {
            match pass {
                Pass::Now => recorder.delivered_up(cx.at, agent, seq),
                Pass::Drop => {
                    recorder.dropped(cx.at, agent, true, seq, DropReason::ConnectionClosed);
                }
                Pass::Keep => {}
            }
        }
        pass
    }

    fn handled(&mut self, cx: TapContext<'_>, endpoint: EndpointId) {
        let Some(server) = cx.server else { return };
        let Some(conn) = self.conns.get_mut(&endpoint) else {
            return;
        };
        let bound: BTreeSet<AgentId> = server.hub().bound_to(endpoint).into_iter().collect();
        if bound == conn.bound {
            return;
        }
        let new: Vec<AgentId> = bound.difference(&conn.bound).copied().collect();
        conn.bound = bound;
        let (number, replay) = (conn.number, conn.replay);
        if let Some(recorder) = &mut self.recorder {
            for id in new {
                let Some(entry) = server.hub().agents.get(&id) else {
                    continue;
                };
                recorder.bound(cx.at, &entry.passport.name, id, number.max(1), replay);
            }
        }
    }

    fn outbound(&mut self, cx: TapContext<'_>, endpoint: EndpointId, text: &str) -> Pass {
        let agent = self.conns.get(&endpoint).and_then(|c| c.agent.clone());
        let seq = match (&mut self.recorder, &agent) {
            (Some(recorder), Some(agent)) => recorder.sent(cx.at, agent, false, text),
            _ => 0,
        };
        let pass = self.pass(cx.at, endpoint, false, text, seq);
        match pass {
            Pass::Now => self.delivered_down(cx.at, endpoint, seq),
            Pass::Drop => {
                if let (Some(recorder), Some(agent)) = (&mut self.recorder, &agent) {
                    recorder.dropped(cx.at, agent, false, seq, DropReason::ConnectionClosed);
                }
            }
            Pass::Keep => {}
        }
        pass
    }

    fn closed(&mut self, cx: TapContext<'_>, endpoint: EndpointId, ended: Ended) {
        let Some(conn) = self.conns.remove(&endpoint) else {
            return;
        };
        let keepalive = self.pending.is_empty()
            && conn
                .agent
                .as_ref()
                .is_some_and(|a| self.agents.get(a).is_some_and(|f| f.partitioned.is_some()));
        for up in [true, false] {
            let Some(queue) = self.queues.remove(&(endpoint, up)) else {
                continue;
            };
            if let (Some(recorder), Some(agent)) = (&mut self.recorder, &conn.agent) {
                for kept in queue {
                    recorder.dropped(cx.at, agent, up, kept.seq, DropReason::ConnectionClosed);
                }
            }
        }
        if let (Some(recorder), Some(agent)) = (&mut self.recorder, &conn.agent) {
            let why = LiveTap::close_reason(ended, keepalive);
            recorder.closed(cx.at, agent, why);
        }
    }

    fn next_due(&self) -> Option<u64> {
        if !self.pending.is_empty() {
            return Some(0);
        }
        let fault = self.schedule.front().map(|(at, _, _)| *at);
        let cut = self.keepalive_cuts.first().map(|(at, _)| *at);
        let kept = self
            .queues
            .values()
            .filter_map(|queue| queue.front().and_then(|k| k.ready))
            .min();
        [fault, cut, kept].into_iter().flatten().min()
    }

    fn due(&mut self, cx: TapContext<'_>) -> Vec<Command> {
        let at = cx.at;
        while self
            .schedule
            .front()
            .is_some_and(|(when, _, _)| *when <= at)
        {
            if let Some((_, fault, chaos)) = self.schedule.pop_front() {
                self.apply(cx, &fault, chaos);
            }
        }
        while let Some((when, agent)) = self.keepalive_cuts.first().cloned() {
            if when > at {
                break;
            }
            self.keepalive_cuts.pop_first();
            let since = self.agents.get(&agent).and_then(|f| f.partitioned);
            if since.is_some_and(|since| since.saturating_add(self.keepalive) <= when) {
                for endpoint in self.endpoints_of(&agent) {
                    self.pending.push(Command::Cut(endpoint));
                }
            }
        }
        let mut commands = std::mem::take(&mut self.pending);
        // Ready messages, earliest first (ties: by connection, then up before down).
        let mut ready: Vec<(u64, EndpointId, bool)> = Vec::new();
        for ((endpoint, up), queue) in &self.queues {
            let mut behind = 0;
            for kept in queue {
                match kept.ready {
                    Some(when) if when <= at => {
                        behind = behind.max(when);
                        ready.push((behind, *endpoint, *up));
                    }
                    _ => break,
                }
            }
        }
        ready.sort_by_key(|(when, endpoint, up)| (*when, *endpoint, !*up));
        for (_, endpoint, up) in ready {
            let Some(kept) = self
                .queues
                .get_mut(&(endpoint, up))
                .and_then(VecDeque::pop_front)
            else {
                continue;
            };
            if up {
                let agent = self.conns.get(&endpoint).and_then(|c| c.agent.clone());
                if let (Some(recorder), Some(agent)) = (&mut self.recorder, agent) {
                    recorder.delivered_up(at, &agent, kept.seq);
                }
            } else {
                self.delivered_down(at, endpoint, kept.seq);
            }
            commands.push(Command::Deliver {
                endpoint,
                up,
                text: kept.text,
            });
        }
        self.queues.retain(|_, queue| !queue.is_empty());
        commands
    }

    fn crashed(&mut self, cx: TapContext<'_>) {
        self.down = true;
        if let Some(recorder) = &mut self.recorder {
            recorder.log(cx.at, Event::HubCrashed);
        }
    }

    fn restarted(&mut self, cx: TapContext<'_>, result: Result<(), &HubError>) {
        let Some(recorder) = &mut self.recorder else {
            self.down = result.is_err();
            return;
        };
        match result {
            Ok(()) => {
                self.down = false;
                recorder.log(cx.at, Event::HubRestarted);
                recorder.clock_floor = cx.at;
                recorder.monitor.as_mut().map(Monitor::hub_restarted);
            }
            Err(error) => {
                let message = format!(
                    "the hub did not restart from its durable state: {}: {}",
                    error.type_name, error.message
                );
                recorder.log(cx.at, Event::HubNotRestarted { message });
            }
        }
    }

    fn finish(&mut self, cx: TapContext<'_>) {
        let Some(recorder) = self.recorder.take() else {
            return;
        };
        let hub = cx.server.map(|server| server.hub());
        let outcome = recorder.finish(cx.at, hub);
        let faults = self.outcome().faults;
        *self.outcome() = LiveOutcome { faults, ..outcome };
    }
}

impl LiveTap {
    fn outcome(&self) -> MutexGuard<'_, LiveOutcome> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message reached an agent's socket (its writer has it).
    fn delivered_down(&mut self, at: u64, endpoint: EndpointId, seq: u64) {
        let Some(conn) = self.conns.get(&endpoint) else {
            return;
        };
        let (Some(recorder), Some(agent)) = (&mut self.recorder, conn.agent.as_deref()) else {
            return;
        };
        recorder.delivered_down(at, agent, seq, &conn.bound, conn.number.max(1));
    }
}

/// The event log and the checkers of a recorded serve.
struct Recorder {
    dir: PathBuf,
    seed: u64,
    epoch: Timestamp,
    ttl_sweep: u64,
    clock_floor: u64,
    /// Agents by name, in the order they first appeared.
    names: Vec<String>,
    monitor: Option<Monitor>,
    seq: u64,
    /// Frames sent and not yet delivered or dropped, by number.
    in_flight: BTreeMap<u64, FrameSummary>,
}

impl Recorder {
    fn new(dir: PathBuf, options: &LiveOptions) -> Recorder {
        let selection = RECORDED_INVARIANTS
            .iter()
            .fold(Selection::NONE, |s, inv| s.with(*inv));
        Recorder {
            dir,
            seed: options.seed,
            epoch: options.epoch,
            ttl_sweep: options.ttl_sweep,
            clock_floor: 0,
            names: Vec::new(),
            monitor: Some(Monitor::new(
                selection,
                std::iter::empty(),
                EventLog::new(LogLevel::Frames),
            )),
            seq: 0,
            in_flight: BTreeMap::new(),
        }
    }

    fn monitor(&mut self) -> &mut Monitor {
        self.monitor.get_or_insert_with(|| {
            Monitor::new(Selection::NONE, std::iter::empty(), EventLog::off())
        })
    }

    fn log(&mut self, at: u64, event: Event) {
        self.monitor().record(at, event);
    }

    /// The agent's index, adding it the first time.
    fn agent(&mut self, name: &str) -> usize {
        if let Some(idx) = self.names.iter().position(|n| n == name) {
            return idx;
        }
        self.names.push(name.to_string());
        self.monitor().add_agent(name)
    }

    /// A message left one end of `agent`'s link; its frame number.
    fn sent(&mut self, at: u64, agent: &str, up: bool, text: &str) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        let agent = self.agent(agent);
        // A message that is not a frame is logged nowhere (the hub drops it too).
        if let Some(frame) = FrameSummary::of_text(seq, text) {
            self.in_flight.insert(seq, frame.clone());
            self.log(at, Event::FrameSent { agent, up, frame });
        }
        seq
    }

    /// A message reached the hub: a receipt is a handled envelope.
    fn delivered_up(&mut self, at: u64, agent: &str, seq: u64) {
        let idx = self.agent(agent);
        let Some(frame) = self.in_flight.remove(&seq) else {
            return;
        };
        let handled = (frame.kind == FrameKind::Receipt)
            .then_some(frame.envelope)
            .flatten();
        self.log(
            at,
            Event::FrameDelivered {
                agent: idx,
                up: true,
                frame,
            },
        );
        if let Some(envelope) = handled {
            self.monitor()
                .host_events(at, idx, std::iter::once(HostEvent::Handled(envelope)));
        }
    }

    /// A message reached an agent's socket: a notify is a delivery to each of its
    /// recipients bound there.
    fn delivered_down(
        &mut self,
        at: u64,
        agent: &str,
        seq: u64,
        bound: &BTreeSet<AgentId>,
        connection: u32,
    ) {
        let idx = self.agent(agent);
        let Some(summary) = self.in_flight.remove(&seq) else {
            return;
        };
        let notify = summary.kind == FrameKind::Notify;
        let text = Arc::clone(&summary.text);
        self.log(
            at,
            Event::FrameDelivered {
                agent: idx,
                up: false,
                frame: summary,
            },
        );
        if !notify {
            return;
        }
        let Ok(frame) = Frame::decode(&text) else {
            return;
        };
        let raw = frame.get("envelope");
        let Some(envelope) = Envelope::from_json(raw) else {
            return;
        };
        let recipient = frame.get("recipient_id").as_str().and_then(AgentId::parse);
        if recipient.is_some_and(|r| !bound.contains(&r)) {
            return;
        }
        let envelope = Arc::new(envelope);
        self.monitor().host_events(
            at,
            idx,
            std::iter::once(HostEvent::Received {
                connection,
                envelope,
            }),
        );
    }

    fn dropped(&mut self, at: u64, agent: &str, up: bool, seq: u64, why: DropReason) {
        if seq == 0 {
            return;
        }
        let idx = self.agent(agent);
        if let Some(frame) = self.in_flight.remove(&seq) {
            self.log(
                at,
                Event::FrameDropped {
                    agent: idx,
                    up,
                    frame,
                    why,
                },
            );
        }
    }

    /// The hub bound `name` (id `id`) to its connection number `number`.
    fn bound(&mut self, at: u64, name: &str, id: AgentId, number: u32, replay: bool) {
        let idx = self.agent(name);
        self.log(
            at,
            Event::Connected {
                agent: idx,
                connection: number,
            },
        );
        if replay {
            self.log(
                at,
                Event::Reattached {
                    agent: idx,
                    connection: number,
                },
            );
        }
        self.monitor().host_events(
            at,
            idx,
            [HostEvent::Connected(number), HostEvent::Registered(id)].into_iter(),
        );
    }

    fn closed(&mut self, at: u64, agent: &str, why: CloseReason) {
        let idx = self.agent(agent);
        self.log(at, Event::ConnectionClosed { agent: idx, why });
    }

    /// The checks at shutdown, the timeline and the report written.
    fn finish(mut self, at: u64, hub: Option<&Hub>) -> LiveOutcome {
        let clocks = Clocks {
            now: at,
            frozen_clock: false,
            mock: self.epoch,
            clock_floor: self.clock_floor,
            ttl_sweep: self.ttl_sweep,
        };
        let mut monitor = self
            .monitor
            .take()
            .unwrap_or_else(|| Monitor::new(Selection::NONE, std::iter::empty(), EventLog::off()));
        monitor.finish(hub, clocks, true);
        let (violations, agent_logs, log) = monitor.into_parts();
        let hub = hub
            .cloned()
            .unwrap_or_else(|| Hub::new(HubConfig::default(), Instant(0)));
        let agents = self
            .names
            .iter()
            .zip(&agent_logs)
            .map(|(name, agent_log)| RunAgent {
                id: hub
                    .names
                    .get(name)
                    .copied()
                    .or(agent_log.id)
                    .unwrap_or(AgentId(0)),
                model: ScriptedAgent {
                    name: name.clone(),
                    handler: HandlerMode::Default,
                    tools: Vec::new(),
                    turns: Vec::new(),
                    used: 0,
                },
                handled: agent_log.handled.len(),
            })
            .collect();
        let labels = hub
            .channels
            .keys()
            .enumerate()
            .map(|(idx, id)| (*id, format!("c{}", idx + 1)))
            .collect();
        let run = Run {
            hub,
            agents,
            labels,
            steps: Vec::new(),
            mismatches: Vec::new(),
            epoch: self.epoch,
        };
        let origin = Origin {
            scenario: "serve",
            seed: self.seed,
            backend: "serve",
            invariants: RECORDED_INVARIANTS
                .iter()
                .map(|inv| inv.name().to_string())
                .collect(),
        };
        let timeline = Timeline::new(&origin, &run, &log, &violations);
        let mut outcome = LiveOutcome {
            violations: violations.len(),
            report: timeline.violation_report(),
            ..LiveOutcome::default()
        };
        let files = [
            (
                self.dir.join("timeline.txt"),
                timeline.render(&Filter::default()),
            ),
            (
                self.dir.join("report.html"),
                crate::report::html::page(&timeline),
            ),
        ];
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| {
            files
                .iter()
                .try_for_each(|(path, text)| std::fs::write(path, text))
        });
        match written {
            Ok(()) => {
                outcome.written = true;
                outcome.files = files.into_iter().map(|(path, _)| path).collect();
            }
            Err(error) => {
                outcome.error = Some(format!("{}: {error}", self.dir.display()));
            }
        }
        outcome
    }
}

/// Writes each of `outcome`'s violations for a terminal.
pub fn describe(outcome: &LiveOutcome) -> String {
    let mut out = String::new();
    for file in &outcome.files {
        let _ = writeln!(out, "recorded: {}", file.display());
    }
    if let Some(error) = &outcome.error {
        let _ = writeln!(out, "the recording could not be written: {error}");
    }
    if outcome.violations == 0 {
        let _ = writeln!(out, "invariants at shutdown: no violation");
    } else {
        let _ = writeln!(
            out,
            "invariants at shutdown: {} violation(s)",
            outcome.violations
        );
        out.push_str(&outcome.report);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{LiveOptions, LiveTap, KEPT_MAX};
    use crate::ids::EndpointId;
    use crate::net::{Command, Pass, Tap, TapContext};
    use crate::sim::scenario::FaultPlan;
    use crate::time::{Timestamp, DEFAULT_EPOCH};

    fn tap(plan: &str) -> LiveTap {
        let options = LiveOptions {
            plan: FaultPlan::parse(plan).expect("plan"),
            seed: 1,
            record: None,
            epoch: Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch"),
            ttl_sweep: 0,
        };
        LiveTap::new(options).0
    }

    fn cx(at: u64) -> TapContext<'static> {
        TapContext { at, server: None }
    }

    const HELLO: &str = r#"{"kind": "hello", "name": "bob", "auth_scheme": "none", "auth_claim": {}, "since_envelope_id": null}"#;
    const PING: &str = r#"{"kind": "ping"}"#;

    fn delivered(commands: &[Command]) -> Vec<(bool, String)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Deliver { up, text, .. } => Some((*up, text.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_hold_keeps_both_ways_in_order_until_its_release() {
        let mut tap = tap("faults: [{at: 1s, hold: bob}, {at: 2s, release: bob}]");
        let bob = EndpointId(1);
        tap.opened(cx(0), bob);
        assert_eq!(tap.inbound(cx(10), bob, HELLO), Pass::Now);
        assert_eq!(tap.next_due(), Some(1_000_000));
        assert!(tap.due(cx(1_000_000)).is_empty());
        assert_eq!(tap.inbound(cx(1_100_000), bob, PING), Pass::Keep);
        assert_eq!(tap.outbound(cx(1_200_000), bob, "first"), Pass::Keep);
        assert_eq!(tap.outbound(cx(1_300_000), bob, "second"), Pass::Keep);
        // Nothing moves before the release.
        assert_eq!(tap.next_due(), Some(2_000_000));
        let released = tap.due(cx(2_000_000));
        assert_eq!(
            delivered(&released),
            [
                (true, PING.to_string()),
                (false, "first".to_string()),
                (false, "second".to_string())
            ]
        );
        assert_eq!(tap.next_due(), None);
        // Another connection, not named bob, was never held.
        let other = EndpointId(2);
        tap.opened(cx(0), other);
        assert_eq!(tap.outbound(cx(1_500_000), other, "x"), Pass::Now);
    }

    #[test]
    fn latency_delays_each_message_in_order() {
        let mut tap = tap("faults: [{at: 0s, latency: 10ms..50ms, agent: bob}]");
        let bob = EndpointId(1);
        tap.opened(cx(0), bob);
        tap.due(cx(0));
        assert_eq!(tap.inbound(cx(0), bob, HELLO), Pass::Keep);
        for n in 0..20 {
            assert_eq!(tap.outbound(cx(n), bob, &n.to_string()), Pass::Keep);
        }
        let mut out = Vec::new();
        while let Some(at) = tap.next_due() {
            assert!(at >= 10_000, "delivered before the least latency: {at}");
            out.extend(delivered(&tap.due(cx(at))));
        }
        let down: Vec<String> = out
            .iter()
            .filter(|(up, _)| !up)
            .map(|(_, t)| t.clone())
            .collect();
        let expected: Vec<String> = (0..20).map(|n: u64| n.to_string()).collect();
        assert_eq!(down, expected);
    }

    #[test]
    fn a_held_connection_past_the_cap_is_cut() {
        let mut tap = tap("faults: [{at: 0s, hold: bob}]");
        let bob = EndpointId(1);
        tap.opened(cx(0), bob);
        assert_eq!(tap.inbound(cx(0), bob, HELLO), Pass::Now);
        tap.due(cx(0));
        for _ in 0..KEPT_MAX {
            assert_eq!(tap.outbound(cx(1), bob, "x"), Pass::Keep);
        }
        assert_eq!(tap.outbound(cx(1), bob, "x"), Pass::Drop);
        assert_eq!(tap.due(cx(2)), [Command::Cut(bob)]);
    }

    #[test]
    fn a_disconnect_cuts_every_connection_of_its_agent_only() {
        let mut tap = tap("faults: [{at: 1s, disconnect: bob}]");
        for (endpoint, name) in [(1, "bob"), (2, "alice"), (3, "bob")] {
            let endpoint = EndpointId(endpoint);
            tap.opened(cx(0), endpoint);
            let hello = HELLO.replace("bob", name);
            assert_eq!(tap.inbound(cx(0), endpoint, &hello), Pass::Now);
        }
        assert_eq!(
            tap.due(cx(1_000_000)),
            [Command::Cut(EndpointId(1)), Command::Cut(EndpointId(3))]
        );
    }
}
