//! The turmoil backend (`--net turmoil`): the same scenarios with real WebSocket framing over
//! turmoil's simulated TCP, driven by the one [`harness`] like the event-driven
//! backend.
//!
//! The hub is a [`HubServer`] served by [`serve_shared`] on the turmoil host `hub`, and every
//! agent is an [`AgentHost`] pumped by a task on its own turmoil host (`agent0`, `agent1`, ...
//! in scenario order), which owns a [`WsClient`] over turmoil's TCP: messages in go to
//! [`AgentHost::receive`], [`AgentHost::poll_send`] goes out with [`WsClient::send_text`], and
//! the task sleeps until [`AgentHost::poll_timeout`]. Model-turn times come from the seeded
//! stream `agent/NAME`; turmoil's seed, epoch and tick are fixed, so a seed replays byte for
//! byte.
//!
//! The harness runs outside the simulation: `Network::run_until` steps it one tick at a time
//! ([`turmoil::Sim::step`]), and between ticks the harness gives commands to the hosts, reads
//! their results, and calls the hub directly through the [`SharedHub`]. After each tick this
//! backend takes what the clients reported, runs the checkers if the hub did anything, applies
//! the faults that fell due and syncs the store. Every wait ends on a tick.
//!
//! Faults: `hold`/`release` are turmoil's, between the agent's host and `hub`. A `partition`
//! is a hold too, as on the event-driven backend (TCP retransmits across a cut rather than
//! losing what crosses it; turmoil's own partition drops segments), and one that outlives
//! `network.keepalive` drops the connection at both ends. `disconnect` drops the agent's socket, and the agent
//! re-attaches after `network.reconnect` on a new connection. `latency` sets turmoil's
//! per-link latency (millisecond granularity). A hub `crash` is turmoil's host crash (its
//! sockets close, writes since the last sync are lost); `restart` hydrates a hub from the
//! store and bounces the host.

use super::harness::{self, Ending, Network, Until};
use super::log::{CloseReason, Event, EventLog, FrameSummary};
use super::monitor::{Clocks, Monitor};
use super::random::Think;
use super::record::RunAgent;
use super::scenario::{Fault, NetworkOptions, Range, Scenario};
use super::NetStats;
use crate::client::host::{AgentHost, Command, CommandId};
use crate::hub::store::Store;
use crate::hub::{Bugs, Hub, HubConfig, Refused};
use crate::ids::AgentId;
use crate::net::{serve_shared, Received, SharedHub, WsClient};
use crate::proto::HubError;
use crate::server::HubServer;
use crate::time::{Instant, Now, Timestamp};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use turmoil::net::{TcpListener, TcpStream};

/// The hub's port on the host `hub`.
const HUB_PORT: u16 = 8765;

/// The URL agents open.
const HUB_URL: &str = "ws://hub:8765/";

/// How long a (re)connection may take before it is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Segments a simulated TCP socket may buffer.
const TCP_CAPACITY: usize = 65_536;

/// The longest simulated run: far past any scenario's step timeouts and quiesce.
const SIMULATION_DURATION: Duration = Duration::from_secs(100 * 24 * 3600);

/// How a turmoil run is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurmoilOptions {
    /// turmoil's tick: each step of the simulation moves time by this much, and every wait of
    /// the harness ends on a tick.
    pub tick: Duration,
}

impl Default for TurmoilOptions {
    fn default() -> TurmoilOptions {
        TurmoilOptions {
            tick: Duration::from_millis(1),
        }
    }
}

/// A scenario a backend cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Runs `scenario` on turmoil with `seed`.
///
/// # Errors
/// The simulation itself failed.
pub(crate) fn run(
    scenario: &Scenario,
    seed: u64,
    bugs: Bugs,
    log: EventLog,
    options: &TurmoilOptions,
) -> Result<harness::NetRun, Unsupported> {
    let backend = Turmoil::new(scenario, seed, bugs, log, options);
    let failed = backend.failed.clone();
    let run = harness::run(backend, scenario, seed);
    match failed.take() {
        Some(error) => Err(Unsupported(format!("the simulation failed: {error}"))),
        None => Ok(run),
    }
}

/// The turmoil host name of agent `idx`.
fn host_name(idx: usize) -> String {
    format!("agent{idx}")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One agent's state, shared by its task and the backend.
#[derive(Debug)]
struct AgentState {
    host: AgentHost,
    think: Think,
    /// Finished commands, by id.
    results: BTreeMap<CommandId, Result<Value, HubError>>,
    /// The host may have messages its task has not sent yet.
    unsent: bool,
    /// The harness asked for the first connection.
    want_connect: bool,
    /// A WebSocket to the hub is open.
    connected: bool,
    /// The backend asked the task to drop its connection (`disconnect`, keepalive).
    kill: bool,
    /// The task waits to re-attach.
    reconnecting: bool,
}

impl AgentState {
    fn drain_results(&mut self) {
        while let Some((id, result)) = self.host.poll_result() {
            self.results.insert(id, result);
        }
    }
}

#[derive(Debug)]
struct Agent {
    state: RefCell<AgentState>,
    /// Wakes the task: a command, a connection request, a disconnect.
    wake: Notify,
}

/// What the backend, the agent tasks and the hub host share on the simulation's one thread.
#[derive(Debug)]
struct Shared {
    options: NetworkOptions,
    /// The hub while it is up (the hub host's factory serves what it holds).
    hub: RefCell<Option<SharedHub>>,
    /// The scenario's mock clock (moved by `advance`).
    mock: Rc<Cell<Timestamp>>,
    /// Simulated time between ticks (µs), for hub calls made from outside the simulation.
    elapsed: Rc<Cell<u64>>,
    agents: Vec<Agent>,
    /// Messages the agents sent and received.
    sent: Cell<u64>,
    received: Cell<u64>,
    reconnects: Cell<u64>,
    /// Messages in and out of hubs that crashed.
    carried: Cell<(u64, u64)>,
    /// Whether frames are logged.
    log_frames: bool,
    /// Events the tasks saw, for the backend to log after the tick.
    events: RefCell<Vec<(u64, Event)>>,
}

impl Shared {
    fn agent_named(&self, name: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|agent| agent.state.borrow().host.name() == name)
    }

    fn hub(&self) -> Option<SharedHub> {
        self.hub.borrow().clone()
    }

    /// Messages the hub received and sent, over every hub of the run.
    fn hub_counts(&self) -> (u64, u64) {
        let (inbound, outbound) = self
            .hub()
            .map_or((0, 0), |hub| (hub.inbound(), hub.outbound()));
        let carried = self.carried.get();
        (inbound + carried.0, outbound + carried.1)
    }

    /// Every message sent was received (none in flight, none lost).
    fn balanced(&self) -> bool {
        let (inbound, outbound) = self.hub_counts();
        self.sent.get() == inbound && outbound == self.received.get()
    }

    /// Messages sent and received so far, on both sides.
    fn activity(&self) -> u64 {
        let (inbound, outbound) = self.hub_counts();
        self.sent.get() + self.received.get() + inbound + outbound
    }

    /// No host has work under way: handlers idle, nothing unsent, no connection or re-attach
    /// pending, nothing the harness asked of the hub left unsent.
    fn hosts_idle(&self) -> bool {
        let hub_up = self.hub.borrow().is_some();
        !self.hub().is_some_and(|hub| hub.unrouted())
            && self.agents.iter().all(|agent| {
                let state = agent.state.borrow();
                // A re-attach or first connection waits only while the hub is up.
                let reattaching = state.reconnecting && hub_up;
                let connecting = state.want_connect && !state.connected && hub_up;
                state.host.handlers_idle()
                    && !state.unsent
                    && !state.kill
                    && !reattaching
                    && !connecting
            })
    }

    fn log(&self, event: impl FnOnce() -> Event) {
        if self.log_frames {
            self.events.borrow_mut().push((sim_now(), event()));
        }
    }
}

/// Simulated time since the start of the run (µs), from inside the simulation.
fn sim_now() -> u64 {
    turmoil::sim_elapsed().map_or(0, micros)
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// A fault, or a keepalive check, due at a time.
#[derive(Clone, Debug)]
enum Due {
    /// A fault (`chaos`: drawn by the chaos profile, dropped when its phase ends).
    Fault {
        fault: Fault,
        chaos: bool,
    },
    Keepalive {
        host: usize,
        epoch: u64,
    },
}

/// The backend. See the module docs.
struct Turmoil {
    sim: turmoil::Sim<'static>,
    shared: Rc<Shared>,
    config: HubConfig,
    options: NetworkOptions,
    tick: u64,
    monitor: Monitor,
    /// Faults and keepalive checks by time.
    due: BTreeMap<(u64, u64), Due>,
    seq: u64,
    partitioned: Vec<bool>,
    held: Vec<bool>,
    partition_epochs: Vec<u64>,
    /// Each link's latency now.
    latencies: Vec<Range>,
    store: Store,
    synced_at: u64,
    id_floor: u128,
    /// The hub as it was when it crashed.
    last_hub: Option<Hub>,
    clock_floor: u64,
    /// Hub activity (messages in and out, its next deadline) at the last check.
    hub_mark: (u64, Option<Instant>, u64),
    /// `post_envelope` requests refused for a full inbox by the hub now running since it
    /// started (or by the last one, while the hub is down).
    refused_inbox_full: u64,
    stats: NetStats,
    notes: Vec<String>,
    /// Ticks stepped so far: each counts toward `network.events_max`.
    ticks: u64,
    /// The run stepped more than `network.events_max` ticks and was stopped.
    runaway: bool,
    /// The simulation failed (shared with [`run`], which reports it).
    failed: Rc<Cell<Option<String>>>,
}

impl Turmoil {
    fn new(
        scenario: &Scenario,
        seed: u64,
        bugs: Bugs,
        log: EventLog,
        options: &TurmoilOptions,
    ) -> Turmoil {
        let network = scenario.network.clone();
        let config = scenario.hub_config(bugs, true);
        let mock = Rc::new(Cell::new(scenario.hub.epoch));
        let elapsed = Rc::new(Cell::new(0));
        let agents = scenario
            .agents
            .iter()
            .map(|spec| Agent {
                state: RefCell::new(AgentState {
                    host: AgentHost::new(spec.scripted(), network.rpc_timeout),
                    think: Think::new(seed, &spec.name, network.model_time),
                    results: BTreeMap::new(),
                    unsent: false,
                    want_connect: false,
                    connected: false,
                    kill: false,
                    reconnecting: false,
                }),
                wake: Notify::new(),
            })
            .collect();
        let shared = Rc::new(Shared {
            options: network.clone(),
            hub: RefCell::new(None),
            mock,
            elapsed,
            agents,
            sent: Cell::new(0),
            received: Cell::new(0),
            reconnects: Cell::new(0),
            carried: Cell::new((0, 0)),
            log_frames: log.frames(),
            events: RefCell::new(Vec::new()),
        });
        *shared.hub.borrow_mut() = Some(shared_hub(&shared, Hub::new(config.clone(), Instant(0))));
        let mut sim = build_sim(scenario, seed, options);
        let factory = shared.clone();
        sim.host("hub", move || {
            let hub = factory.hub();
            async move {
                let Some(hub) = hub else { return Ok(()) };
                let listener = TcpListener::bind(("0.0.0.0", HUB_PORT)).await?;
                serve_shared(listener, hub).await?;
                Ok(())
            }
        });
        for idx in 0..shared.agents.len() {
            let task_shared = shared.clone();
            sim.host(host_name(idx).as_str(), move || {
                agent_task(task_shared.clone(), idx)
            });
        }
        let names = scenario.agents.iter().map(|spec| spec.name.as_str());
        let count = scenario.agents.len();
        let mut backend = Turmoil {
            sim,
            shared,
            config,
            tick: micros(options.tick).max(1),
            monitor: Monitor::new(scenario.sweep.invariants, names, log),
            due: BTreeMap::new(),
            seq: 0,
            partitioned: vec![false; count],
            held: vec![false; count],
            partition_epochs: vec![0; count],
            latencies: vec![network.latency; count],
            store: Store::default(),
            synced_at: 0,
            id_floor: 0,
            last_hub: None,
            clock_floor: 0,
            hub_mark: (0, None, 0),
            refused_inbox_full: 0,
            stats: NetStats::default(),
            notes: Vec::new(),
            ticks: 0,
            runaway: false,
            failed: Rc::new(Cell::new(None)),
            options: network,
        };
        for timed in backend.options.faults.clone() {
            backend.schedule_fault(timed.at, timed.fault, false);
        }
        backend
    }

    fn schedule(&mut self, at: u64, due: Due) {
        self.seq += 1;
        self.due.insert((at, self.seq), due);
    }

    fn elapsed(&self) -> u64 {
        micros(self.sim.elapsed())
    }

    fn clocks(&self) -> Clocks {
        Clocks {
            now: self.elapsed(),
            frozen_clock: self.options.frozen_clock,
            mock: self.shared.mock.get(),
            clock_floor: self.clock_floor,
            ttl_sweep: self.options.ttl_sweep,
        }
    }

    /// One tick: the faults and keepalive checks that fell due, the simulation's step, then
    /// what the clients reported, the checkers (if the hub did anything) and the store sync.
    fn step(&mut self) {
        let now = self.elapsed();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Due::Fault { fault, chaos } => self.inject(&fault, chaos),
                Due::Keepalive { host, epoch } => {
                    if self.partitioned[host] && self.partition_epochs[host] == epoch {
                        self.drop_connection(host, CloseReason::Keepalive);
                    }
                }
            }
        }
        self.ticks += 1;
        if self.ticks > self.options.events_max {
            // A run that never ends (a wait of years): stop it and report it.
            self.runaway = true;
            return;
        }
        if let Err(error) = self.sim.step() {
            // Past turmoil's duration cap: nothing more can run.
            self.failed.set(Some(error.to_string()));
        }
        let now = self.elapsed();
        self.shared.elapsed.set(now);
        self.take_reports(now);
        let hub_activity = self.shared.hub().map(|hub| {
            let deadline = hub.read(HubServer::poll_timeout);
            (hub.inbound(), deadline, hub.outbound())
        });
        if let Some(mark) = hub_activity {
            if mark != self.hub_mark {
                self.hub_mark = mark;
                self.hub_changed();
            }
        }
    }

    /// Takes what the clients reported and what the tasks logged.
    fn take_reports(&mut self, now: u64) {
        for (at, event) in self.shared.events.borrow_mut().drain(..) {
            self.monitor.record(at, event);
        }
        for (idx, agent) in self.shared.agents.iter().enumerate() {
            let mut state = agent.state.borrow_mut();
            let events = state.host.take_events();
            self.monitor.host_events(now, idx, events);
        }
    }

    /// The hub handled something (messages, timers): the checkers, the requests it refused
    /// since the last check, the store sync.
    fn hub_changed(&mut self) {
        let Some(hub) = self.shared.hub() else { return };
        let clocks = self.clocks();
        let refused = self.take_refused(&hub);
        hub.read(|server| {
            let hub = Some(server.hub());
            self.monitor.refused(hub, clocks, &refused);
            self.monitor.check(hub, clocks, None);
        });
        if self.options.sync > 0 && clocks.now >= self.synced_at.saturating_add(self.options.sync) {
            self.sync_store();
        }
    }

    /// The requests `hub` refused since the last call, counting those refused for a full inbox.
    fn take_refused(&mut self, hub: &SharedHub) -> Vec<Refused> {
        let refused = hub.take_refused();
        self.refused_inbox_full += refused.iter().filter(|r| r.inbox_full()).count() as u64;
        refused
    }

    fn sync_store(&mut self) {
        if let Some(hub) = self.shared.hub() {
            self.store = hub.read(|server| server.hub().snapshot());
            self.synced_at = self.elapsed();
            self.monitor.record(self.synced_at, Event::StoreSynced);
        }
    }

    /// Drops agent `host`'s connection at both ends.
    fn drop_connection(&mut self, host: usize, why: CloseReason) {
        let agent = &self.shared.agents[host];
        let id = {
            let mut state = agent.state.borrow_mut();
            if !state.connected {
                return;
            }
            state.kill = true;
            state.host.id
        };
        agent.wake.notify_one();
        if let (Some(hub), Some(id)) = (self.shared.hub(), id) {
            if let Some(endpoint) = hub.read(|server| server.hub().bindings.get(&id).copied()) {
                hub.close(endpoint);
            }
        }
        self.monitor
            .record(self.elapsed(), Event::ConnectionClosed { agent: host, why });
    }

    fn inject(&mut self, fault: &Fault, chaos: bool) {
        let now = self.elapsed();
        self.monitor.record(
            now,
            Event::Fault {
                fault: fault.clone(),
                chaos,
            },
        );
        let agent = fault.agent().and_then(|name| self.shared.agent_named(name));
        let link = agent.map(host_name);
        match (fault, agent, link) {
            // TCP does not lose what crosses a cut link: it retransmits until the cut heals
            // or the keepalive gives up. turmoil's partition drops segments, so a cut is
            // turmoil's hold, and the keepalive drops the connection.
            (Fault::Partition(_), Some(idx), Some(host)) if !self.partitioned[idx] => {
                self.sim.hold("hub", host.as_str());
                self.partitioned[idx] = true;
                self.partition_epochs[idx] += 1;
                let epoch = self.partition_epochs[idx];
                let at = now.saturating_add(self.options.keepalive);
                self.schedule(at, Due::Keepalive { host: idx, epoch });
            }
            (Fault::Repair(_), Some(idx), Some(host)) => {
                self.partitioned[idx] = false;
                if !self.held[idx] {
                    self.sim.release("hub", host.as_str());
                }
            }
            (Fault::Hold(_), Some(idx), Some(host)) => {
                self.held[idx] = true;
                self.sim.hold("hub", host.as_str());
            }
            (Fault::Release(_), Some(idx), Some(host)) => {
                self.held[idx] = false;
                if !self.partitioned[idx] {
                    self.sim.release("hub", host.as_str());
                }
            }
            (Fault::Disconnect(_), Some(idx), _) => {
                self.drop_connection(idx, CloseReason::Disconnect);
            }
            (Fault::Latency { agent: name, range }, _, _) => {
                self.set_latency(name.as_deref(), *range);
            }
            (Fault::Crash, _, _) => self.crash(),
            (Fault::Restart, _, _) => self.restart(),
            _ => {}
        }
    }

    fn set_latency(&mut self, agent: Option<&str>, range: Range) {
        let hosts: Vec<usize> = match agent {
            None => (0..self.shared.agents.len()).collect(),
            Some(name) => self.shared.agent_named(name).into_iter().collect(),
        };
        for idx in hosts {
            self.latencies[idx] = range;
            let host = host_name(idx);
            self.sim
                .set_link_latency("hub", host.as_str(), Duration::from_micros(range.min));
            self.sim.set_link_max_message_latency(
                "hub",
                host.as_str(),
                Duration::from_micros(range.max),
            );
        }
    }

    fn crash(&mut self) {
        let Some(hub) = self.shared.hub.borrow_mut().take() else {
            return;
        };
        self.stats.crashes += 1;
        self.take_refused(&hub);
        let carried = self.shared.carried.get();
        self.shared
            .carried
            .set((carried.0 + hub.inbound(), carried.1 + hub.outbound()));
        self.monitor.record(self.elapsed(), Event::HubCrashed);
        let (snapshot, last_id, last) = hub.read(|server| {
            let hub = server.hub();
            (hub.snapshot(), hub.last_id(), hub.clone())
        });
        if self.options.sync == 0 {
            self.store = snapshot;
        }
        self.id_floor = self.id_floor.max(last_id);
        self.last_hub = Some(last);
        self.sim.crash("hub");
        for agent in 0..self.shared.agents.len() {
            if self.shared.agents[agent].state.borrow().connected {
                self.monitor.record(
                    self.elapsed(),
                    Event::ConnectionClosed {
                        agent,
                        why: CloseReason::Crash,
                    },
                );
            }
        }
    }

    fn restart(&mut self) {
        if self.shared.hub.borrow().is_some() {
            return;
        }
        let now = self.elapsed();
        match Hub::hydrate(
            self.config.clone(),
            &self.store,
            self.id_floor,
            Instant(now),
        ) {
            Ok(hub) => {
                let hub = shared_hub(&self.shared, hub);
                *self.shared.hub.borrow_mut() = Some(hub);
                self.sim.bounce("hub");
                self.clock_floor = now;
                self.monitor.hub_restarted();
                self.monitor.record(now, Event::HubRestarted);
                self.synced_at = now;
                self.hub_mark = (0, None, 0);
                self.refused_inbox_full = 0;
            }
            Err(error) => {
                let clocks = self.clocks();
                if let Some(note) = self.monitor.hub_not_restarted(clocks, &error) {
                    self.notes.push(note);
                }
            }
        }
    }

    /// Runs until nothing is under way. A message lost with a dropped connection never
    /// arrives: then the network counts as quiet once nothing moved for longer than the slowest
    /// link takes.
    fn settle(&mut self, deadline: u64) -> bool {
        let slowest = self
            .latencies
            .iter()
            .map(|range| range.max)
            .max()
            .unwrap_or(0);
        let latency = slowest.div_ceil(1000) * 1000;
        let window = latency.saturating_add(self.tick.saturating_mul(3));
        let mut last = (self.shared.activity(), self.elapsed());
        loop {
            let now = self.elapsed();
            let activity = self.shared.activity();
            if activity != last.0 {
                last = (activity, now);
            }
            let quiet = self.shared.balanced() || now.saturating_sub(last.1) >= window;
            if self.shared.hosts_idle() && quiet {
                return true;
            }
            if now >= deadline || self.aborted() {
                return false;
            }
            self.step();
        }
    }

    fn holds(&self, until: Until) -> bool {
        let agent = |host: usize| self.shared.agents[host].state.borrow_mut();
        match until {
            Until::Idle => unreachable!("settle() waits for idle"),
            Until::Connected(host) => agent(host).connected,
            Until::Result(host, command) => {
                let mut state = agent(host);
                state.drain_results();
                state.results.contains_key(&command)
            }
            Until::Pulled(host) => agent(host).host.pulled_len() > 0,
            Until::Never => false,
        }
    }
}

/// A [`SharedHub`] over `hub`, on the run's clock.
fn shared_hub(shared: &Rc<Shared>, hub: Hub) -> SharedHub {
    let mock = shared.mock.clone();
    let elapsed = shared.elapsed.clone();
    let frozen = shared.options.frozen_clock;
    let clock = move || {
        let now = turmoil::sim_elapsed().map_or(elapsed.get(), micros);
        let wall = if frozen {
            mock.get()
        } else {
            mock.get()
                .plus_micros(i64::try_from(now).unwrap_or(i64::MAX))
        };
        Now {
            wall,
            mono: Instant(now),
        }
    };
    let mut server = HubServer::new(hub);
    server.keep_refused(true);
    SharedHub::new(server, clock)
}

fn build_sim(scenario: &Scenario, seed: u64, options: &TurmoilOptions) -> turmoil::Sim<'static> {
    let epoch = UNIX_EPOCH
        .checked_add(Duration::from_micros(
            u64::try_from(scenario.hub.epoch.micros).unwrap_or(0),
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let latency = scenario.network.latency;
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch)
        .tick_duration(options.tick)
        .min_message_latency(Duration::from_micros(latency.min))
        .max_message_latency(Duration::from_micros(latency.max))
        .tcp_capacity(TCP_CAPACITY)
        .simulation_duration(SIMULATION_DURATION)
        .build()
}

impl Network for Turmoil {
    fn now(&self) -> u64 {
        self.elapsed()
    }

    fn hub_now(&self) -> Now {
        let now = self.elapsed();
        let mock = self.shared.mock.get();
        let wall = if self.options.frozen_clock {
            mock
        } else {
            mock.plus_micros(i64::try_from(now).unwrap_or(i64::MAX))
        };
        Now {
            wall,
            mono: Instant(now),
        }
    }

    fn mock(&self) -> Timestamp {
        self.shared.mock.get()
    }

    fn set_mock(&mut self, mock: Timestamp) {
        self.shared.mock.set(mock);
        self.clock_floor = self.elapsed();
    }

    fn connect(&mut self, host: usize) {
        let agent = &self.shared.agents[host];
        agent.state.borrow_mut().want_connect = true;
        agent.wake.notify_one();
    }

    fn start(&mut self, host: usize, command: Command) -> CommandId {
        let agent = &self.shared.agents[host];
        let mut state = agent.state.borrow_mut();
        let state = &mut *state;
        let id = state
            .host
            .command(Instant(self.elapsed()), command, &mut state.think);
        if state.connected {
            state.unsent = true;
        } else {
            // Nothing goes out without a connection (the event driver counts it lost).
            while state.host.poll_send().is_some() {}
        }
        state.drain_results();
        agent.wake.notify_one();
        id
    }

    fn take_result(&mut self, host: usize, command: CommandId) -> Option<Result<Value, HubError>> {
        let mut state = self.shared.agents[host].state.borrow_mut();
        state.drain_results();
        state.results.remove(&command)
    }

    fn has_result(&self, host: usize, command: CommandId) -> bool {
        let mut state = self.shared.agents[host].state.borrow_mut();
        state.drain_results();
        state.results.contains_key(&command)
    }

    fn pop_pulled(&mut self, host: usize) -> Option<Value> {
        self.shared.agents[host]
            .state
            .borrow_mut()
            .host
            .pop_pulled()
    }

    fn run_until(&mut self, deadline: u64, until: Until) -> bool {
        if until == Until::Idle {
            return self.settle(deadline);
        }
        loop {
            if self.holds(until) {
                return true;
            }
            if self.elapsed() >= deadline || self.aborted() {
                return false;
            }
            self.step();
        }
    }

    fn admin<R>(&mut self, call: impl FnOnce(&mut Hub, Now) -> R) -> Option<R> {
        let hub = self.shared.hub()?;
        Some(hub.with(|server, now| server.admin(now, call)))
    }

    fn read_hub<R>(&self, read: impl FnOnce(&Hub) -> R) -> Option<R> {
        let hub = self.shared.hub()?;
        Some(hub.read(|server| read(server.hub())))
    }

    fn agent_id(&self, host: usize) -> Option<AgentId> {
        self.shared.agents[host].state.borrow().host.id
    }

    fn apply_fault(&mut self, fault: &Fault, chaos: bool) {
        self.inject(fault, chaos);
    }

    fn schedule_fault(&mut self, at: u64, fault: Fault, chaos: bool) {
        self.schedule(at, Due::Fault { fault, chaos });
    }

    fn drop_chaos(&mut self) {
        self.due
            .retain(|_, due| !matches!(due, Due::Fault { chaos: true, .. }));
    }

    fn sync(&mut self) {
        self.sync_store();
    }

    fn heal(&mut self) {
        self.restart();
        for idx in 0..self.shared.agents.len() {
            let host = host_name(idx);
            self.sim.release("hub", host.as_str());
            self.partitioned[idx] = false;
            self.held[idx] = false;
        }
        self.set_latency(None, self.options.latency);
    }

    fn aborted(&self) -> bool {
        if self.runaway {
            return true;
        }
        let failed = self.failed.take();
        let aborted = failed.is_some();
        self.failed.set(failed);
        aborted
    }

    fn observe<R>(&mut self, observe: impl FnOnce(&mut Monitor, Option<&Hub>, Clocks) -> R) -> R {
        let clocks = self.clocks();
        match self.shared.hub() {
            Some(hub) => hub.read(|server| observe(&mut self.monitor, Some(server.hub()), clocks)),
            None => observe(&mut self.monitor, None, clocks),
        }
    }

    fn finish(mut self) -> Ending {
        let now = self.elapsed();
        self.take_reports(now);
        if let Some(hub) = self.shared.hub() {
            self.take_refused(&hub);
        }
        let hub = match (self.shared.hub(), self.last_hub.take()) {
            (Some(hub), _) => hub.read(|server| server.hub().clone()),
            (None, Some(hub)) => hub,
            (None, None) => Hub::new(self.config.clone(), Instant(now)),
        };
        let agents = self
            .shared
            .agents
            .iter()
            .map(|agent| {
                let state = agent.state.borrow();
                RunAgent {
                    id: state.host.id.unwrap_or(AgentId(0)),
                    model: state.host.model.clone(),
                    handled: 0, // the harness counts them from the client's log
                }
            })
            .collect();
        let (sent, received) = (self.shared.sent.get(), self.shared.received.get());
        let (inbound, outbound) = self.shared.hub_counts();
        self.stats.sim_micros = now;
        self.stats.messages = received + inbound;
        self.stats.lost = (sent + outbound).saturating_sub(received + inbound);
        self.stats.reconnects = self.shared.reconnects.get();
        Ending {
            hub,
            agents,
            refused_inbox_full: self.refused_inbox_full,
            stats: self.stats,
            notes: self.notes,
            monitor: self.monitor,
        }
    }
}

/// One agent's host: waits for the harness to ask for a connection, then pumps its
/// [`AgentHost`] over a WebSocket, re-attaching after `network.reconnect` when it drops.
async fn agent_task(shared: Rc<Shared>, idx: usize) -> turmoil::Result {
    let agent = &shared.agents[idx];
    while !agent.state.borrow().want_connect {
        agent.wake.notified().await;
    }
    let mut first = true;
    loop {
        let opened = offline(agent, tokio::time::timeout(CONNECT_TIMEOUT, open())).await;
        if let Ok(Ok(ws)) = opened {
            {
                let mut state = agent.state.borrow_mut();
                state.host.connected();
                let connection = state.host.connections();
                shared.log(|| Event::Connected {
                    agent: idx,
                    connection,
                });
                if !first {
                    shared.log(|| Event::Reattached {
                        agent: idx,
                        connection,
                    });
                    state.host.attach(Instant(sim_now()), Some(""));
                    bump(&shared.reconnects);
                }
                state.connected = true;
                state.reconnecting = false;
                state.unsent = true;
            }
            first = false;
            pump(&shared, idx, ws).await;
            let mut state = agent.state.borrow_mut();
            let state = &mut *state;
            state.connected = false;
            state.kill = false;
            state
                .host
                .connection_lost(Instant(sim_now()), &mut state.think);
            // Nothing goes out without a connection (the event driver counts it lost).
            while state.host.poll_send().is_some() {}
            state.unsent = false;
            state.drain_results();
        }
        let Some(after) = shared.options.reconnect else {
            return give_up(agent).await;
        };
        let done = {
            let mut state = agent.state.borrow_mut();
            let done = state.host.disconnected || state.host.id.is_none();
            state.reconnecting = !done;
            done
        };
        if done {
            return give_up(agent).await;
        }
        offline(agent, tokio::time::sleep(Duration::from_micros(after))).await;
    }
}

/// Runs `work` while the host has no connection, handling its timers meanwhile (a model turn
/// ends, an RPC times out): what it sends then is lost, as on the event-driven backend.
async fn offline<F: std::future::Future>(agent: &Agent, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    loop {
        let deadline = agent.state.borrow().host.poll_timeout();
        tokio::select! {
            biased;
            output = &mut work => return output,
            () = sleep_until(deadline) => offline_timeout(agent),
        }
    }
}

/// A timer of a host without a connection.
fn offline_timeout(agent: &Agent) {
    let mut state = agent.state.borrow_mut();
    let state = &mut *state;
    state
        .host
        .handle_timeout(Instant(sim_now()), &mut state.think);
    while state.host.poll_send().is_some() {}
    state.unsent = false;
    state.drain_results();
}

/// The task stops connecting; the host's timers still run until none is left.
async fn give_up(agent: &Agent) -> turmoil::Result {
    {
        let mut state = agent.state.borrow_mut();
        state.reconnecting = false;
        state.want_connect = false;
    }
    loop {
        let deadline = agent.state.borrow().host.poll_timeout();
        if deadline.is_none() {
            return Ok(());
        }
        sleep_until(deadline).await;
        offline_timeout(agent);
    }
}

async fn open() -> Result<WsClient<TcpStream>, Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(("hub", HUB_PORT)).await?;
    Ok(WsClient::connect(stream, HUB_URL).await?)
}

/// Pumps `agent`'s host over `ws` until the connection ends or the harness drops it.
async fn pump(shared: &Shared, idx: usize, mut ws: WsClient<TcpStream>) {
    let agent = &shared.agents[idx];
    loop {
        loop {
            let next = {
                let mut state = agent.state.borrow_mut();
                let next = state.host.poll_send();
                if next.is_none() {
                    state.unsent = false;
                }
                next
            };
            let Some(text) = next else { break };
            bump(&shared.sent);
            log_frame(shared, idx, true, &text);
            if ws.send_text(text).await.is_err() {
                return;
            }
        }
        let deadline = {
            let mut state = agent.state.borrow_mut();
            state.drain_results();
            if state.kill {
                // Dropped without a closing handshake: both ends see the connection end.
                return;
            }
            state.host.poll_timeout()
        };
        tokio::select! {
            biased;
            received = ws.recv() => match received {
                Ok(Received::Text(text)) => {
                    bump(&shared.received);
                    log_frame(shared, idx, false, &text);
                    let mut state = agent.state.borrow_mut();
                    let state = &mut *state;
                    state.host.receive(Instant(sim_now()), &text, &mut state.think);
                    state.unsent = true;
                }
                // The hub sends text only.
                Ok(Received::Binary(_)) => {}
                Ok(Received::Closed(_)) | Err(_) => return,
            },
            () = agent.wake.notified() => {}
            () = sleep_until(deadline) => {
                let mut state = agent.state.borrow_mut();
                let state = &mut *state;
                state.host.handle_timeout(Instant(sim_now()), &mut state.think);
                state.unsent = true;
            }
        }
    }
}

/// Sleeps until the host clock reads `deadline` (forever for `None`).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => {
            let wait = at.0.saturating_sub(sim_now());
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        None => std::future::pending().await,
    }
}

/// Logs a frame agent `agent` sent (`up`) or received, if frames are logged.
fn log_frame(shared: &Shared, agent: usize, up: bool, text: &str) {
    let Some(frame) = shared
        .log_frames
        .then(|| FrameSummary::of_text(0, text))
        .flatten()
    else {
        return;
    };
    shared.log(|| {
        if up {
            Event::FrameSent { agent, up, frame }
        } else {
            Event::FrameDelivered { agent, up, frame }
        }
    });
}
