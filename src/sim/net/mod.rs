//! The network driver: the hub served as a [`HubServer`], every agent a remote-mode client
//! ([`AgentHost`]) on its own connection, and text frames carried between them over a simulated
//! network with a mock clock that jumps from event to event.
//!
//! Topology is a star: each agent's link to the hub is a pair of FIFO pipes (TCP keeps order),
//! each message delayed by a latency drawn from the `net` stream. Faults act on links
//! (partition, hold, disconnect, latency) and on the hub (crash, restart). A partitioned link
//! holds traffic; if it stays cut past the keepalive, the connection drops at both ends and what
//! it held is lost. A crash drops every connection and loses the store's unsynced writes; a
//! restart hydrates the hub from the store. Clients whose connection dropped re-attach after
//! `network.reconnect` (a new `HubClient`, a hello replaying past the hub's cursor, then
//! `resume_pending_turns`).
//!
//! Every random draw comes from a ChaCha stream derived from the seed and a stable name (`net`,
//! `agent/NAME`), so a seed replays byte for byte. Scenario steps are run by a harness that,
//! like the reference runner, reaches the hub directly for the admin ops (`advance`, ticks,
//! `via: hub`) and its channel lookups, and the agents' clients for everything else.

pub mod chaos;
mod checks;
mod faults;
mod random;
mod steps;

pub use random::stream;
pub(crate) use random::{draw, Think};

pub(crate) use steps::record_pulled;

use super::runner::{Run, RunAgent};
use super::scenario::{Fault, NetworkOptions, Range, Scenario};
use crate::client::host::{AgentHost, CommandId, HostLog};
use crate::client::ScriptedAgent;
use crate::hub::store::Store;
use crate::hub::{Bugs, Hub, HubConfig};
use crate::ids::{ChannelId, EndpointId};
use crate::proto::frame::Frame;
use crate::proto::HubError;
use crate::server::{HubServer, ServerOutput};
use crate::sim::check::{self, Checker, View, Violation};
use crate::time::{Instant, Now, Timestamp, MICROS_PER_SECOND};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a network run did besides its trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Simulated time at the end (µs).
    pub sim_micros: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Messages lost (dropped connections, crashes).
    pub lost: u64,
    /// Hub crashes.
    pub crashes: u64,
    /// Client re-attaches.
    pub reconnects: u64,
}

/// A finished network run.
#[derive(Clone, Debug)]
pub struct NetRun {
    /// What the trace is rendered from.
    pub run: Run,
    /// Counters.
    pub stats: NetStats,
    /// Things the harness could not do (a restart whose store does not hydrate, ...).
    pub notes: Vec<String>,
    /// Broken invariants (of those the scenario selects), in the order they were seen.
    pub violations: Vec<Violation>,
    /// What each agent's client saw, in scenario order.
    pub logs: Vec<HostLog>,
    /// When the chaos phase's clock started (µs), for a scenario with `chaos`.
    pub chaos_start: Option<u64>,
}

/// Runs `scenario` on the simulated network with `seed`, checking the invariants it selects.
pub fn run(scenario: &Scenario, seed: u64) -> NetRun {
    run_with(scenario, seed, Bugs::default())
}

/// [`run`] on a hub with deliberate defects switched on (tests of the checkers).
pub fn run_with(scenario: &Scenario, seed: u64, bugs: Bugs) -> NetRun {
    let mut world = World::new(scenario, seed, bugs);
    world.register_agents(scenario);
    world.check(None);
    if let Some(chaos) = &scenario.sweep.chaos {
        world.schedule_chaos(chaos, seed);
    }
    for (idx, step) in scenario.steps.iter().enumerate() {
        if world.aborted {
            break;
        }
        world.run_step(idx, step);
    }
    world.end_chaos();
    world.finish(scenario)
}

#[derive(Clone, Debug)]
struct Link {
    latency: Range,
    held: bool,
    partitioned: bool,
    /// Bumped at each partition, so a stale keepalive check does nothing.
    partition_epoch: u64,
    conn: Option<usize>,
    /// A re-attach is scheduled.
    reconnecting: bool,
}

#[derive(Clone, Debug)]
struct Conn {
    host: usize,
    endpoint: EndpointId,
    alive: bool,
    up_last: u64,
    down_last: u64,
    up_held: Vec<Msg>,
    down_held: Vec<Msg>,
}

/// A message on a link: text (the exact bytes, `network.wire: text`) or a frame carried
/// without encoding (`network.wire: frames`, the default).
#[derive(Clone, Debug)]
enum Msg {
    Text(String),
    Frame(Frame),
}

#[derive(Clone, Debug)]
enum Ev {
    ToHub {
        conn: usize,
        msg: Msg,
    },
    ToHost {
        conn: usize,
        msg: Msg,
    },
    Keepalive {
        host: usize,
        epoch: u64,
    },
    Reconnect(usize),
    Fault(Fault),
    /// A fault of the chaos phase (dropped when it ends).
    Chaos(Fault),
}

struct World {
    options: NetworkOptions,
    config: HubConfig,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    /// Messages scheduled for delivery.
    in_flight: usize,
    server: Option<HubServer>,
    /// The hub as it was when it crashed, for a trace of a hub that never came back.
    last_hub: Option<Hub>,
    store: Store,
    synced_at: u64,
    dirty: bool,
    id_floor: u128,
    hosts: Vec<AgentHost>,
    thinks: Vec<Think>,
    links: Vec<Link>,
    conns: Vec<Conn>,
    by_endpoint: BTreeMap<EndpointId, usize>,
    net_rng: ChaCha8Rng,
    /// The scenario's mock clock (moved by `advance`).
    mock: Timestamp,
    step_timeout: u64,
    results: BTreeMap<(usize, CommandId), Result<Value, HubError>>,
    labels: BTreeMap<ChannelId, String>,
    steps: Vec<Map<String, Value>>,
    mismatches: Vec<String>,
    background: Vec<steps::Background>,
    notes: Vec<String>,
    stats: NetStats,
    checker: Checker,
    /// Simulated time of the last wall-clock jump or hub (re)start (see [`View`]).
    clock_floor: u64,
    /// The end of the chaos phase (0: no chaos).
    chaos_until: u64,
    /// When the chaos phase's clock started (the end of registration), with `chaos`.
    chaos_start: Option<u64>,
    /// Queued events fired so far.
    events: u64,
    /// The run exceeded `network.events_max` events and was stopped.
    aborted: bool,
}

impl World {
    fn new(scenario: &Scenario, seed: u64, bugs: Bugs) -> World {
        let options = scenario.network.clone();
        let config = HubConfig {
            invite_ack_timeout_micros: (scenario.hub.invite_ack_timeout_seconds
                * MICROS_PER_SECOND as f64) as u64,
            ttl_sweep_interval_micros: options.ttl_sweep,
            expectation_sweep_interval_micros: options.expectation_sweep,
            auth: Default::default(),
            bugs,
        };
        let hosts: Vec<AgentHost> = scenario
            .agents
            .iter()
            .map(|spec| {
                AgentHost::new(
                    ScriptedAgent {
                        name: spec.name.clone(),
                        handler: spec.handler,
                        tools: spec.tools.clone(),
                        turns: spec.replies.clone(),
                        used: 0,
                    },
                    options.rpc_timeout,
                )
            })
            .collect();
        let thinks = scenario
            .agents
            .iter()
            .map(|spec| Think::new(seed, &spec.name, options.model_time))
            .collect();
        let links = vec![
            Link {
                latency: options.latency,
                held: false,
                partitioned: false,
                partition_epoch: 0,
                conn: None,
                reconnecting: false,
            };
            hosts.len()
        ];
        let mut world = World {
            config: config.clone(),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            in_flight: 0,
            server: Some(serve(Hub::new(config, Instant(0)), options.text_wire)),
            last_hub: None,
            store: Store::default(),
            synced_at: 0,
            dirty: false,
            id_floor: 0,
            hosts,
            thinks,
            links,
            conns: Vec::new(),
            by_endpoint: BTreeMap::new(),
            net_rng: stream(seed, "net"),
            mock: scenario.hub.epoch,
            step_timeout: (scenario.hub.step_timeout_seconds * MICROS_PER_SECOND as f64) as u64,
            results: BTreeMap::new(),
            labels: BTreeMap::new(),
            steps: Vec::new(),
            mismatches: Vec::new(),
            background: Vec::new(),
            notes: Vec::new(),
            stats: NetStats::default(),
            checker: Checker::new(scenario.sweep.invariants),
            clock_floor: 0,
            chaos_until: 0,
            chaos_start: None,
            events: 0,
            aborted: false,
            options,
        };
        for timed in world.options.faults.clone() {
            world.schedule(timed.at, Ev::Fault(timed.fault));
        }
        world
    }

    /// The hub's clock.
    fn hub_now(&self) -> Now {
        let wall = if self.options.frozen_clock {
            self.mock
        } else {
            self.mock.plus_micros(self.now as i64)
        };
        Now {
            wall,
            mono: Instant(self.now),
        }
    }

    fn schedule(&mut self, at: u64, event: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    /// Work is under way: messages in flight, a handler running, a re-attach that can succeed
    /// (the hub is up and the link not cut). A command still waiting for its answer (a
    /// background open) is not work, as for the reference runner's drain.
    fn busy(&self) -> bool {
        self.in_flight > 0
            || self.hosts.iter().any(|host| !host.handlers_idle())
            || (self.server.is_some()
                && self
                    .links
                    .iter()
                    .any(|link| link.reconnecting && !link.partitioned))
    }

    fn next_sync(&self) -> Option<u64> {
        (self.dirty && self.options.sync > 0 && self.server.is_some())
            .then(|| self.synced_at.saturating_add(self.options.sync))
    }

    /// The next moment anything happens.
    fn next_time(&self) -> Option<u64> {
        let queue = self.queue.keys().next().map(|(at, _)| *at);
        let hub = self
            .server
            .as_ref()
            .and_then(HubServer::poll_timeout)
            .map(|at| at.0);
        let hosts = self
            .hosts
            .iter()
            .filter_map(|host| host.poll_timeout().map(|at| at.0))
            .min();
        [queue, hub, hosts, self.next_sync()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs events until `done` holds or simulated time would pass `deadline` (then the clock
    /// stops at the deadline). Returns whether `done` held.
    fn run_until(&mut self, deadline: u64, done: &dyn Fn(&World) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.aborted {
                return false;
            }
            match self.next_time() {
                Some(at) if at <= deadline => {
                    self.now = self.now.max(at);
                    // Each moment counts too: timers that keep falling due at one moment are
                    // a runaway as well.
                    self.events += 1;
                    self.fire_due();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return done(self);
                }
            }
        }
    }

    /// Runs until nothing is under way, for at most the step timeout.
    fn settle(&mut self) {
        let deadline = self.now.saturating_add(self.step_timeout);
        self.run_until(deadline, &|world| !world.busy());
    }

    fn fire_due(&mut self) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let event = entry.remove();
            self.fire(event);
            self.events += 1;
            if self.events > self.options.events_max {
                // A runaway run (work that never ends, at one moment or over time): stop it
                // and report it instead of running forever.
                self.aborted = true;
                self.queue.clear();
                return;
            }
        }
        if self
            .server
            .as_ref()
            .and_then(HubServer::poll_timeout)
            .is_some_and(|at| at.0 <= self.now)
        {
            let now = self.hub_now();
            if let Some(server) = &mut self.server {
                server.handle_timeout(now);
            }
            self.dirty = true;
            self.drain_hub();
            self.check(None);
        }
        for host in 0..self.hosts.len() {
            if self.hosts[host]
                .poll_timeout()
                .is_some_and(|at| at.0 <= self.now)
            {
                self.hosts[host].handle_timeout(Instant(self.now), &mut self.thinks[host]);
                self.drain_host(host);
            }
        }
        if self.next_sync().is_some_and(|at| at <= self.now) {
            self.sync();
        }
    }

    fn sync(&mut self) {
        if let Some(server) = &self.server {
            self.store = server.hub().snapshot();
            self.synced_at = self.now;
            self.dirty = false;
        }
    }

    fn fire(&mut self, event: Ev) {
        match event {
            Ev::ToHub { conn, msg } => {
                self.in_flight -= 1;
                if !self.conns[conn].alive {
                    self.stats.lost += 1;
                    return;
                }
                self.stats.messages += 1;
                let (now, endpoint) = (self.hub_now(), self.conns[conn].endpoint);
                let mark = self.refusal_mark();
                if let Some(server) = &mut self.server {
                    match msg {
                        Msg::Text(text) => server.receive(now, endpoint, &text),
                        Msg::Frame(frame) => server.receive_frame(now, endpoint, frame),
                    }
                    self.dirty = true;
                }
                self.check_refusals(mark);
                self.drain_hub();
            }
            Ev::ToHost { conn, msg } => {
                self.in_flight -= 1;
                let host = self.conns[conn].host;
                if !self.conns[conn].alive || self.links[host].conn != Some(conn) {
                    self.stats.lost += 1;
                    return;
                }
                self.stats.messages += 1;
                let (now, think) = (Instant(self.now), &mut self.thinks[host]);
                match msg {
                    Msg::Text(text) => self.hosts[host].receive(now, &text, think),
                    Msg::Frame(frame) => self.hosts[host].receive_frame(now, frame, think),
                }
                self.drain_host(host);
            }
            Ev::Keepalive { host, epoch } => {
                let link = &self.links[host];
                if link.partitioned && link.partition_epoch == epoch {
                    if let Some(conn) = link.conn {
                        self.kill(conn);
                    }
                }
            }
            Ev::Reconnect(host) => self.reconnect(host),
            Ev::Fault(fault) | Ev::Chaos(fault) => self.apply(&fault),
        }
    }

    fn send(&mut self, conn: usize, up: bool, msg: Msg) {
        let host = self.conns[conn].host;
        let link = &self.links[host];
        if link.held || link.partitioned {
            let c = &mut self.conns[conn];
            if up {
                c.up_held.push(msg);
            } else {
                c.down_held.push(msg);
            }
            return;
        }
        let latency = draw(&mut self.net_rng, link.latency);
        let c = &mut self.conns[conn];
        let last = if up { &mut c.up_last } else { &mut c.down_last };
        let at = self.now.saturating_add(latency).max(*last);
        *last = at;
        self.in_flight += 1;
        let event = if up {
            Ev::ToHub { conn, msg }
        } else {
            Ev::ToHost { conn, msg }
        };
        self.schedule(at, event);
    }

    /// Routes what the hub produced.
    fn drain_hub(&mut self) {
        while let Some(output) = self.server.as_mut().and_then(HubServer::poll_output) {
            match output {
                ServerOutput::Send { endpoint, text } => self.route_down(endpoint, Msg::Text(text)),
                ServerOutput::Frame { endpoint, frame } => {
                    self.route_down(endpoint, Msg::Frame(frame))
                }
                ServerOutput::Close { endpoint } => {
                    if let Some(&conn) = self.by_endpoint.get(&endpoint) {
                        self.kill(conn);
                    }
                }
            }
        }
    }

    fn route_down(&mut self, endpoint: EndpointId, msg: Msg) {
        if let Some(&conn) = self.by_endpoint.get(&endpoint) {
            if self.conns[conn].alive {
                self.send(conn, false, msg);
            }
        }
    }

    /// Routes what a client produced.
    fn drain_host(&mut self, host: usize) {
        loop {
            let msg = if self.options.text_wire {
                self.hosts[host].poll_send().map(Msg::Text)
            } else {
                self.hosts[host].poll_send_frame().map(Msg::Frame)
            };
            let Some(msg) = msg else { break };
            match self.links[host].conn {
                Some(conn) if self.conns[conn].alive => self.send(conn, true, msg),
                _ => self.stats.lost += 1,
            }
        }
        while let Some((id, result)) = self.hosts[host].poll_result() {
            self.results.insert((host, id), result);
        }
    }

    /// Opens a new connection for `host` (the hub must be up).
    fn connect(&mut self, host: usize) -> bool {
        let Some(server) = &mut self.server else {
            return false;
        };
        let endpoint = server.connect();
        self.conns.push(Conn {
            host,
            endpoint,
            alive: true,
            up_last: 0,
            down_last: 0,
            up_held: Vec::new(),
            down_held: Vec::new(),
        });
        let conn = self.conns.len() - 1;
        self.by_endpoint.insert(endpoint, conn);
        self.links[host].conn = Some(conn);
        self.hosts[host].connected();
        true
    }

    fn host_named(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|host| host.name() == name)
    }
}

fn serve(hub: Hub, text_wire: bool) -> HubServer {
    let mut server = HubServer::new(hub);
    server.carry_frames(!text_wire);
    server
}

/// Microseconds as seconds for messages (`1.5s`).
fn seconds(micros: u64) -> String {
    format!("{}s", micros as f64 / MICROS_PER_SECOND as f64)
}
