//! The event-driven network backend (`--net events`, the default): the hub served as a
//! [`HubServer`], every agent a remote-mode client ([`AgentHost`]) on its own connection, and
//! frames carried between them over a simulated network with a mock clock that jumps from event
//! to event. The steps run in the one [`harness`], which drives this backend
//! through `Network`.
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
//! The state is split along its seams: `HubHost` (the server, its store and syncs),
//! `Links` (links, connections, the event queue), the agents' clients, and the run's
//! `Monitor` (checkers and event log).

mod faults;

use super::harness::{self, Ending, Network, Until};
use super::log::{CloseReason, DropReason, Event, EventLog, FrameSummary};
use super::monitor::{Clocks, Monitor};
use super::random::{draw, stream, Think};
use super::record::RunAgent;
use super::scenario::{Fault, NetworkOptions, Range, Scenario};
use super::NetStats;
use crate::client::host::{AgentHost, Command, CommandId};
use crate::hub::store::Store;
use crate::hub::{Bugs, Hub, HubConfig, Refused};
use crate::ids::{AgentId, EndpointId};
use crate::proto::frame::Frame;
use crate::proto::HubError;
use crate::server::{HubServer, ServerOutput};
use crate::time::{Instant, Now, Timestamp};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::BTreeMap;

/// Runs `scenario` on the event-driven network with `seed`, checking the invariants it
/// selects and keeping `log`.
pub fn run(scenario: &Scenario, seed: u64, bugs: Bugs, log: EventLog) -> harness::NetRun {
    harness::run(World::new(scenario, seed, bugs, log), scenario, seed)
}

/// [`run`] on a hub without defects, keeping no event log.
pub fn run_seed(scenario: &Scenario, seed: u64) -> harness::NetRun {
    run(scenario, seed, Bugs::default(), EventLog::off())
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
    /// Messages a cut or held link keeps, with their frame numbers.
    up_held: Vec<(u64, Msg)>,
    down_held: Vec<(u64, Msg)>,
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
        seq: u64,
        msg: Msg,
    },
    ToHost {
        conn: usize,
        seq: u64,
        msg: Msg,
    },
    Keepalive {
        host: usize,
        epoch: u64,
    },
    Reconnect(usize),
    /// A fault (`chaos`: drawn by the chaos profile, dropped when its phase ends).
    Fault {
        fault: Fault,
        chaos: bool,
    },
}

/// The hub's host: the server while it is up, its durable store and when it last synced.
struct HubHost {
    config: HubConfig,
    server: Option<HubServer>,
    /// The hub as it was when it crashed, for a trace of a hub that never came back.
    last_hub: Option<Hub>,
    store: Store,
    synced_at: u64,
    /// Something changed since the last sync.
    dirty: bool,
    /// The highest id minted before a crash: a restarted hub mints past it.
    id_floor: u128,
    /// Frames, not text, on the links (`network.wire: frames`).
    carry_frames: bool,
    /// `post_envelope` requests refused for a full inbox by the hub now running since it
    /// started (or by the last one, while the hub is down).
    refused_inbox_full: u64,
}

impl HubHost {
    fn hub(&self) -> Option<&Hub> {
        self.server.as_ref().map(HubServer::hub)
    }

    /// The requests the hub refused since the last call, counting those refused for a full
    /// inbox.
    fn take_refused(&mut self) -> Vec<Refused> {
        let Some(server) = &mut self.server else {
            return Vec::new();
        };
        let refused: Vec<Refused> = std::iter::from_fn(|| server.poll_refused()).collect();
        self.refused_inbox_full += refused.iter().filter(|r| r.inbox_full()).count() as u64;
        refused
    }
}

/// The links, their connections and the event queue.
struct Links {
    links: Vec<Link>,
    conns: Vec<Conn>,
    by_endpoint: BTreeMap<EndpointId, usize>,
    net_rng: ChaCha8Rng,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    /// Messages scheduled for delivery.
    in_flight: usize,
    /// Frames sent so far (each frame's number in the event log).
    frames: u64,
}

/// The agents' clients and what their commands returned.
struct Agents {
    hosts: Vec<AgentHost>,
    thinks: Vec<Think>,
    results: BTreeMap<(usize, CommandId), Result<Value, HubError>>,
}

struct World {
    options: NetworkOptions,
    /// Simulated time (µs).
    now: u64,
    /// The scenario's mock clock (moved by `advance`).
    mock: Timestamp,
    /// Simulated time of the last wall-clock jump or hub (re)start (see [`Clocks`]).
    clock_floor: u64,
    hub: HubHost,
    net: Links,
    agents: Agents,
    monitor: Monitor,
    stats: NetStats,
    notes: Vec<String>,
    /// Queued events fired so far.
    events: u64,
    /// The run exceeded `network.events_max` events and was stopped.
    aborted: bool,
}

impl World {
    fn new(scenario: &Scenario, seed: u64, bugs: Bugs, log: EventLog) -> World {
        let options = scenario.network.clone();
        let config = scenario.hub_config(bugs, true);
        let hosts: Vec<AgentHost> = scenario
            .agents
            .iter()
            .map(|spec| AgentHost::new(spec.scripted(), options.rpc_timeout))
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
        let names = scenario.agents.iter().map(|spec| spec.name.as_str());
        let mut world = World {
            now: 0,
            mock: scenario.hub.epoch,
            clock_floor: 0,
            hub: HubHost {
                server: Some(serve(
                    Hub::new(config.clone(), Instant(0)),
                    !options.text_wire,
                )),
                config,
                last_hub: None,
                store: Store::default(),
                synced_at: 0,
                dirty: false,
                id_floor: 0,
                carry_frames: !options.text_wire,
                refused_inbox_full: 0,
            },
            net: Links {
                links,
                conns: Vec::new(),
                by_endpoint: BTreeMap::new(),
                net_rng: stream(seed, "net"),
                queue: BTreeMap::new(),
                seq: 0,
                in_flight: 0,
                frames: 0,
            },
            agents: Agents {
                hosts,
                thinks,
                results: BTreeMap::new(),
            },
            monitor: Monitor::new(scenario.sweep.invariants, names, log),
            stats: NetStats::default(),
            notes: Vec::new(),
            events: 0,
            aborted: false,
            options,
        };
        for timed in world.options.faults.clone() {
            world.schedule_fault(timed.at, timed.fault, false);
        }
        world
    }

    fn clocks(&self) -> Clocks {
        Clocks {
            now: self.now,
            frozen_clock: self.options.frozen_clock,
            mock: self.mock,
            clock_floor: self.clock_floor,
            ttl_sweep: self.options.ttl_sweep,
        }
    }

    /// Runs the invariant checkers on the run as it is now.
    fn check(&mut self) {
        let clocks = self.clocks();
        self.monitor.check(self.hub.hub(), clocks, None);
    }

    fn schedule(&mut self, at: u64, event: Ev) {
        self.net.seq += 1;
        self.net.queue.insert((at, self.net.seq), event);
    }

    /// Work is under way: messages in flight, a handler running, a re-attach that can succeed
    /// (the hub is up and the link not cut). A command still waiting for its answer (a
    /// background open) is not work, as for the reference runner's drain.
    fn busy(&self) -> bool {
        self.net.in_flight > 0
            || self.agents.hosts.iter().any(|host| !host.handlers_idle())
            || (self.hub.server.is_some()
                && self
                    .net
                    .links
                    .iter()
                    .any(|link| link.reconnecting && !link.partitioned))
    }

    fn holds(&self, until: Until) -> bool {
        match until {
            Until::Idle => !self.busy(),
            Until::Connected(host) => self.net.links[host].conn.is_some(),
            Until::Result(host, command) => self.agents.results.contains_key(&(host, command)),
            Until::Pulled(host) => self.agents.hosts[host].pulled_len() > 0,
            Until::Never => false,
        }
    }

    fn next_sync(&self) -> Option<u64> {
        (self.hub.dirty && self.options.sync > 0 && self.hub.server.is_some())
            .then(|| self.hub.synced_at.saturating_add(self.options.sync))
    }

    /// The next moment anything happens.
    fn next_time(&self) -> Option<u64> {
        let queue = self.net.queue.keys().next().map(|(at, _)| *at);
        let hub = self
            .hub
            .server
            .as_ref()
            .and_then(HubServer::poll_timeout)
            .map(|at| at.0);
        let hosts = self
            .agents
            .hosts
            .iter()
            .filter_map(|host| host.poll_timeout().map(|at| at.0))
            .min();
        [queue, hub, hosts, self.next_sync()]
            .into_iter()
            .flatten()
            .min()
    }

    fn fire_due(&mut self) {
        while let Some(entry) = self.net.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let event = entry.remove();
            self.fire(event);
            if !self.count_event() {
                return;
            }
        }
        if self
            .hub
            .server
            .as_ref()
            .and_then(HubServer::poll_timeout)
            .is_some_and(|at| at.0 <= self.now)
        {
            self.hub_timers();
            if !self.count_event() {
                return;
            }
        }
        for host in 0..self.agents.hosts.len() {
            if self.agents.hosts[host]
                .poll_timeout()
                .is_some_and(|at| at.0 <= self.now)
            {
                self.agents.hosts[host]
                    .handle_timeout(Instant(self.now), &mut self.agents.thinks[host]);
                self.drain_host(host);
                if !self.count_event() {
                    return;
                }
            }
        }
        if self.next_sync().is_some_and(|at| at <= self.now) {
            self.sync_store();
            self.count_event();
        }
    }

    /// Counts one event (a message, a hub timer, a client timer, a store sync) toward
    /// `network.events_max`; past it the run is stopped (`false`): a runaway run, whose work
    /// never ends at one moment or over time, is reported instead of running for ever.
    fn count_event(&mut self) -> bool {
        self.events += 1;
        if self.events > self.options.events_max {
            self.aborted = true;
            self.net.queue.clear();
            return false;
        }
        true
    }

    /// Runs the hub's due timers, then the checkers.
    fn hub_timers(&mut self) {
        let now = self.hub_clock();
        let Some(server) = &mut self.hub.server else {
            return;
        };
        let before = server.hub().trace_counters();
        server.handle_timeout(now);
        let after = server.hub().trace_counters();
        self.monitor.record(
            self.now,
            Event::HubTimers {
                appended: after.0 - before.0,
                audited: after.1.saturating_sub(before.1),
            },
        );
        self.hub.dirty = true;
        self.drain_hub();
        self.check();
    }

    fn sync_store(&mut self) {
        if let Some(server) = &self.hub.server {
            self.hub.store = server.hub().snapshot();
            self.hub.synced_at = self.now;
            self.hub.dirty = false;
            self.monitor.record(self.now, Event::StoreSynced);
        }
    }

    /// The hub's clock.
    fn hub_clock(&self) -> Now {
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

    fn fire(&mut self, event: Ev) {
        match event {
            Ev::ToHub { conn, seq, msg } => {
                self.net.in_flight -= 1;
                let host = self.net.conns[conn].host;
                if !self.net.conns[conn].alive {
                    self.lost(host, true, seq, &msg, DropReason::ConnectionClosed);
                    return;
                }
                self.stats.messages += 1;
                self.log_frame(host, true, seq, &msg, None);
                let (now, endpoint) = (self.hub_clock(), self.net.conns[conn].endpoint);
                let Some(server) = &mut self.hub.server else {
                    return;
                };
                match msg {
                    Msg::Text(text) => server.receive(now, endpoint, &text),
                    Msg::Frame(frame) => server.receive_frame(now, endpoint, frame),
                }
                self.hub.dirty = true;
                let refused = self.hub.take_refused();
                let clocks = self.clocks();
                self.monitor.refused(self.hub.hub(), clocks, &refused);
                self.drain_hub();
            }
            Ev::ToHost { conn, seq, msg } => {
                self.net.in_flight -= 1;
                let host = self.net.conns[conn].host;
                if !self.net.conns[conn].alive {
                    self.lost(host, false, seq, &msg, DropReason::ConnectionClosed);
                    return;
                }
                if self.net.links[host].conn != Some(conn) {
                    self.lost(host, false, seq, &msg, DropReason::StaleConnection);
                    return;
                }
                self.stats.messages += 1;
                self.log_frame(host, false, seq, &msg, None);
                let (now, think) = (Instant(self.now), &mut self.agents.thinks[host]);
                match msg {
                    Msg::Text(text) => self.agents.hosts[host].receive(now, &text, think),
                    Msg::Frame(frame) => self.agents.hosts[host].receive_frame(now, frame, think),
                }
                self.drain_host(host);
            }
            Ev::Keepalive { host, epoch } => {
                let link = &self.net.links[host];
                if link.partitioned && link.partition_epoch == epoch {
                    if let Some(conn) = link.conn {
                        self.kill(conn, CloseReason::Keepalive);
                    }
                }
            }
            Ev::Reconnect(host) => self.reconnect(host),
            Ev::Fault { fault, chaos } => self.inject(&fault, chaos),
        }
    }

    /// A message that will never arrive.
    fn lost(&mut self, host: usize, up: bool, seq: u64, msg: &Msg, why: DropReason) {
        self.stats.lost += 1;
        self.log_frame(host, up, seq, msg, Some(why));
    }

    /// Logs frame `seq` delivered (or dropped, with `why`), if frames are logged.
    fn log_frame(&mut self, agent: usize, up: bool, seq: u64, msg: &Msg, why: Option<DropReason>) {
        if !self.monitor.frames() {
            return;
        }
        let Some(frame) = summary(seq, msg) else {
            return;
        };
        let event = match why {
            None => Event::FrameDelivered { agent, up, frame },
            Some(why) => Event::FrameDropped {
                agent,
                up,
                frame,
                why,
            },
        };
        self.monitor.record(self.now, event);
    }

    /// The next frame's number, for the log.
    fn number(&mut self) -> u64 {
        self.net.frames += 1;
        self.net.frames
    }

    /// Sends `msg` on `conn`: a new frame, numbered and logged as sent.
    fn send(&mut self, conn: usize, up: bool, msg: Msg) {
        let seq = self.number();
        if self.monitor.frames() {
            if let Some(frame) = summary(seq, &msg) {
                let agent = self.net.conns[conn].host;
                self.monitor
                    .record(self.now, Event::FrameSent { agent, up, frame });
            }
        }
        self.transmit(conn, up, seq, msg);
    }

    /// Puts frame `seq` on its link: held while the link is cut or held, else scheduled after
    /// a drawn latency, FIFO per direction.
    fn transmit(&mut self, conn: usize, up: bool, seq: u64, msg: Msg) {
        let host = self.net.conns[conn].host;
        let link = &self.net.links[host];
        if link.held || link.partitioned {
            let c = &mut self.net.conns[conn];
            if up {
                c.up_held.push((seq, msg));
            } else {
                c.down_held.push((seq, msg));
            }
            return;
        }
        let latency = draw(&mut self.net.net_rng, link.latency);
        let c = &mut self.net.conns[conn];
        let last = if up { &mut c.up_last } else { &mut c.down_last };
        let at = self.now.saturating_add(latency).max(*last);
        *last = at;
        self.net.in_flight += 1;
        let event = if up {
            Ev::ToHub { conn, seq, msg }
        } else {
            Ev::ToHost { conn, seq, msg }
        };
        self.schedule(at, event);
    }

    /// Routes what the hub produced. Requests it refused outside a received message (while
    /// handling timers or an admin call) are counted, not checked.
    fn drain_hub(&mut self) {
        self.hub.take_refused();
        while let Some(output) = self.hub.server.as_mut().and_then(HubServer::poll_output) {
            match output {
                ServerOutput::Send { endpoint, text } => self.route_down(endpoint, Msg::Text(text)),
                ServerOutput::Frame { endpoint, frame } => {
                    self.route_down(endpoint, Msg::Frame(frame))
                }
                ServerOutput::Close { endpoint } => {
                    if let Some(&conn) = self.net.by_endpoint.get(&endpoint) {
                        self.kill(conn, CloseReason::Hub);
                    }
                }
            }
        }
    }

    fn route_down(&mut self, endpoint: EndpointId, msg: Msg) {
        if let Some(&conn) = self.net.by_endpoint.get(&endpoint) {
            if self.net.conns[conn].alive {
                self.send(conn, false, msg);
            }
        }
    }

    /// Routes what a client produced, and takes what it reported.
    fn drain_host(&mut self, host: usize) {
        loop {
            let msg = if self.options.text_wire {
                self.agents.hosts[host].poll_send().map(Msg::Text)
            } else {
                self.agents.hosts[host].poll_send_frame().map(Msg::Frame)
            };
            let Some(msg) = msg else { break };
            match self.net.links[host].conn {
                Some(conn) if self.net.conns[conn].alive => self.send(conn, true, msg),
                _ => {
                    let seq = self.number();
                    self.lost(host, true, seq, &msg, DropReason::NoConnection);
                }
            }
        }
        while let Some((id, result)) = self.agents.hosts[host].poll_result() {
            self.agents.results.insert((host, id), result);
        }
        let events = self.agents.hosts[host].take_events();
        self.monitor.host_events(self.now, host, events);
    }

    /// Opens a new connection for `host` (the hub must be up).
    fn open_connection(&mut self, host: usize) -> bool {
        let Some(server) = &mut self.hub.server else {
            return false;
        };
        let endpoint = server.connect();
        self.net.conns.push(Conn {
            host,
            endpoint,
            alive: true,
            up_last: 0,
            down_last: 0,
            up_held: Vec::new(),
            down_held: Vec::new(),
        });
        let conn = self.net.conns.len() - 1;
        self.net.by_endpoint.insert(endpoint, conn);
        self.net.links[host].conn = Some(conn);
        self.agents.hosts[host].connected();
        let connection = self.agents.hosts[host].connections();
        self.monitor.record(
            self.now,
            Event::Connected {
                agent: host,
                connection,
            },
        );
        true
    }

    fn host_named(&self, name: &str) -> Option<usize> {
        self.agents
            .hosts
            .iter()
            .position(|host| host.name() == name)
    }
}

impl Network for World {
    fn now(&self) -> u64 {
        self.now
    }

    fn hub_now(&self) -> Now {
        self.hub_clock()
    }

    fn mock(&self) -> Timestamp {
        self.mock
    }

    fn set_mock(&mut self, mock: Timestamp) {
        self.mock = mock;
        self.clock_floor = self.now;
    }

    fn connect(&mut self, host: usize) {
        self.open_connection(host);
    }

    fn start(&mut self, host: usize, command: Command) -> CommandId {
        let think = &mut self.agents.thinks[host];
        let id = self.agents.hosts[host].command(Instant(self.now), command, think);
        self.drain_host(host);
        id
    }

    fn take_result(&mut self, host: usize, command: CommandId) -> Option<Result<Value, HubError>> {
        self.agents.results.remove(&(host, command))
    }

    fn has_result(&self, host: usize, command: CommandId) -> bool {
        self.agents.results.contains_key(&(host, command))
    }

    fn pop_pulled(&mut self, host: usize) -> Option<Value> {
        self.agents.hosts[host].pop_pulled()
    }

    fn run_until(&mut self, deadline: u64, until: Until) -> bool {
        loop {
            if self.holds(until) {
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
                    return self.holds(until);
                }
            }
        }
    }

    fn admin<R>(&mut self, call: impl FnOnce(&mut Hub, Now) -> R) -> Option<R> {
        let now = self.hub_clock();
        let server = self.hub.server.as_mut()?;
        let result = server.admin(now, call);
        self.hub.dirty = true;
        self.drain_hub();
        Some(result)
    }

    fn read_hub<R>(&self, read: impl FnOnce(&Hub) -> R) -> Option<R> {
        self.hub.hub().map(read)
    }

    fn agent_id(&self, host: usize) -> Option<AgentId> {
        self.agents.hosts[host].id
    }

    fn apply_fault(&mut self, fault: &Fault, chaos: bool) {
        self.inject(fault, chaos);
    }

    fn schedule_fault(&mut self, at: u64, fault: Fault, chaos: bool) {
        self.schedule(at, Ev::Fault { fault, chaos });
    }

    fn drop_chaos(&mut self) {
        self.net
            .queue
            .retain(|_, event| !matches!(event, Ev::Fault { chaos: true, .. }));
    }

    fn sync(&mut self) {
        self.sync_store();
    }

    fn heal(&mut self) {
        self.heal_all();
    }

    fn aborted(&self) -> bool {
        self.aborted
    }

    fn observe<R>(&mut self, observe: impl FnOnce(&mut Monitor, Option<&Hub>, Clocks) -> R) -> R {
        let clocks = self.clocks();
        observe(&mut self.monitor, self.hub.hub(), clocks)
    }

    fn finish(mut self) -> Ending {
        let hub = match (&self.hub.server, self.hub.last_hub.take()) {
            (Some(server), _) => server.hub().clone(),
            (None, Some(hub)) => hub,
            (None, None) => Hub::new(self.hub.config.clone(), Instant(self.now)),
        };
        self.stats.sim_micros = self.now;
        let agents = self
            .agents
            .hosts
            .into_iter()
            .map(|host| RunAgent {
                id: host.id.unwrap_or(AgentId(0)),
                model: host.model,
                handled: 0, // the harness counts them from the client's log
            })
            .collect();
        Ending {
            hub,
            agents,
            refused_inbox_full: self.hub.refused_inbox_full,
            stats: self.stats,
            notes: self.notes,
            monitor: self.monitor,
        }
    }
}

fn serve(hub: Hub, carry_frames: bool) -> HubServer {
    let mut server = HubServer::new(hub);
    server.carry_frames(carry_frames);
    server.keep_refused(true);
    server
}

fn summary(seq: u64, msg: &Msg) -> Option<FrameSummary> {
    match msg {
        Msg::Text(text) => FrameSummary::of_text(seq, text),
        Msg::Frame(frame) => Some(FrameSummary::of(seq, frame)),
    }
}
