//! Scenarios on turmoil with real WebSocket framing: the second backend of `hubsim run`
//! (`--net turmoil`), next to the event-driven driver of [`crate::sim::net`].
//!
//! The same sans-IO parts run here: the hub is a [`HubServer`] served by [`serve_shared`] on
//! the turmoil host `hub`, and every agent is an [`AgentHost`] pumped by a task on its own
//! turmoil host (`agent0`, `agent1`, ... in scenario order), which owns a [`WsClient`] over
//! turmoil's simulated TCP: messages in go to [`AgentHost::receive`], [`AgentHost::poll_send`]
//! goes out with [`WsClient::send_text`], and the task sleeps until [`AgentHost::poll_timeout`].
//! Model-turn times come from the seeded stream `agent/NAME` ([`crate::sim::net::stream`]);
//! turmoil's seed, epoch and tick are fixed, so a seed replays byte for byte.
//!
//! The steps run in the turmoil client `harness`, which shares state with the agent tasks and
//! the hub on the simulation's one thread: it gives commands to the hosts and reads their
//! results, and calls the hub directly for what the reference runner does on the hub (`advance`,
//! the ticks, `via: hub`, the channel lookup before a client send or close, the final hub).
//! After each step it settles as the event driver does: until no message is in flight and every
//! host's handlers are idle, at most the step timeout of simulated time. The harness polls once
//! per tick, so every wait ends on a tick boundary.
//!
//! Faults: `partition`/`repair` and `hold`/`release` are turmoil's, between the agent's host and
//! `hub` (a partition drops what crosses it, as turmoil does; there is no keepalive, so the
//! connection stays up); `disconnect` drops the agent's socket, and the agent re-attaches after
//! `network.reconnect` on a new connection; `latency` sets turmoil's per-link latency
//! (millisecond granularity). A hub `crash` or `restart` is refused ([`Unsupported`]).

mod steps;

use crate::client::host::{AgentHost, CommandId};
use crate::client::ScriptedAgent;
use crate::hub::{Hub, HubConfig};
use crate::net::{serve_shared, Received, SharedHub, WsClient};
use crate::proto::HubError;
use crate::server::HubServer;
use crate::sim::net::{NetRun, NetStats, Think};
use crate::sim::runner::Run;
use crate::sim::scenario::{Action, Fault, NetworkOptions, Range, Scenario};
use crate::sim::{trace, Outcome};
use crate::time::{Instant, Now, Timestamp, MICROS_PER_SECOND};
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

/// A scenario this backend cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// Runs `scenario` on turmoil with `seed` and renders its trace.
///
/// # Errors
/// The scenario crashes or restarts the hub, or the simulation itself failed.
pub fn run_outcome(
    scenario: &Scenario,
    seed: u64,
    options: &TurmoilOptions,
) -> Result<Outcome, Unsupported> {
    let run = run(scenario, seed, options)?;
    let mut mismatches = run.run.mismatches.clone();
    mismatches.extend(run.notes.iter().map(|note| format!("hubsim: {note}")));
    Ok(Outcome {
        trace: trace::render(&scenario.name, &run.run),
        mismatches,
        stats: Some(run.stats),
        violations: run.violations,
    })
}

/// Runs `scenario` on turmoil with `seed`.
///
/// # Errors
/// The scenario crashes or restarts the hub, or the simulation itself failed.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    options: &TurmoilOptions,
) -> Result<NetRun, Unsupported> {
    refuse_unsupported(scenario)?;
    let shared = Rc::new(Shared::new(scenario, seed, options));
    let mut sim = build_sim(scenario, seed, options);
    let hub = shared.hub.clone();
    sim.host("hub", move || {
        let hub = hub.clone();
        async move {
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
    let harness = steps::Harness::new(shared.clone(), scenario);
    let owned = scenario.clone();
    sim.client("harness", async move {
        harness.run(&owned).await;
        Ok(())
    });
    let mut timed = scenario.network.faults.clone();
    timed.sort_by_key(|fault| fault.at);
    let mut timed = timed.into_iter().peekable();
    loop {
        while let Some(fault) = timed.next_if(|f| micros(sim.elapsed()) >= f.at) {
            apply_fault(&shared, &fault.fault, Some(&sim));
        }
        let finished = sim
            .step()
            .map_err(|error| Unsupported(format!("the simulation failed: {error}")))?;
        let queued = std::mem::take(&mut *shared.latencies.borrow_mut());
        for (agent, range) in queued {
            set_latency(&sim, &shared, agent.as_deref(), range);
        }
        if finished {
            break;
        }
    }
    let elapsed = micros(sim.elapsed());
    drop(sim);
    finish(&shared, scenario, elapsed)
}

fn refuse_unsupported(scenario: &Scenario) -> Result<(), Unsupported> {
    let timed = scenario.network.faults.iter().map(|timed| &timed.fault);
    let stepped = scenario.steps.iter().filter_map(|step| match &step.action {
        Action::Fault(fault) => Some(fault),
        _ => None,
    });
    if timed
        .chain(stepped)
        .any(|fault| matches!(fault, Fault::Crash | Fault::Restart))
    {
        return Err(Unsupported(format!(
            "{}: the turmoil backend does not crash or restart the hub; run it with --net events",
            scenario.name
        )));
    }
    Ok(())
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

/// The turmoil host name of agent `idx`.
fn host_name(idx: usize) -> String {
    format!("agent{idx}")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Simulated time since the start of the run (µs), from inside the simulation.
fn sim_now() -> u64 {
    turmoil::sim_elapsed().map_or(0, micros)
}

/// One agent's state, shared by its task and the harness.
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
    /// The harness asked the task to drop its connection (`disconnect`).
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

/// What the harness, the agent tasks and the hub share on the simulation's thread.
#[derive(Debug)]
struct Shared {
    options: NetworkOptions,
    tick: Duration,
    hub: SharedHub,
    /// The scenario's mock clock (moved by `advance`).
    mock: Rc<Cell<Timestamp>>,
    agents: Vec<Agent>,
    /// Messages the agents sent and received.
    sent: Cell<u64>,
    received: Cell<u64>,
    reconnects: Cell<u64>,
    /// Latency changes for the driver loop, which alone can set them.
    latencies: RefCell<Vec<(Option<String>, Range)>>,
    /// What the harness leaves for the trace.
    output: RefCell<Option<steps::Output>>,
}

impl Shared {
    fn new(scenario: &Scenario, seed: u64, options: &TurmoilOptions) -> Shared {
        let network = scenario.network.clone();
        let config = HubConfig {
            invite_ack_timeout_micros: (scenario.hub.invite_ack_timeout_seconds
                * MICROS_PER_SECOND as f64) as u64,
            ttl_sweep_interval_micros: network.ttl_sweep,
            expectation_sweep_interval_micros: network.expectation_sweep,
            auth: Default::default(),
            bugs: Default::default(),
        };
        let mock = Rc::new(Cell::new(scenario.hub.epoch));
        let clock_mock = mock.clone();
        let frozen = network.frozen_clock;
        let clock = move || {
            let now = sim_now();
            let wall = if frozen {
                clock_mock.get()
            } else {
                clock_mock
                    .get()
                    .plus_micros(i64::try_from(now).unwrap_or(i64::MAX))
            };
            Now {
                wall,
                mono: Instant(now),
            }
        };
        let hub = SharedHub::new(HubServer::new(Hub::new(config.clone(), Instant(0))), clock);
        let agents = scenario
            .agents
            .iter()
            .map(|spec| {
                let host = AgentHost::new(
                    ScriptedAgent {
                        name: spec.name.clone(),
                        handler: spec.handler,
                        tools: spec.tools.clone(),
                        turns: spec.replies.clone(),
                        used: 0,
                    },
                    network.rpc_timeout,
                );
                let think = Think::new(seed, &spec.name, network.model_time);
                Agent {
                    state: RefCell::new(AgentState {
                        host,
                        think,
                        results: BTreeMap::new(),
                        unsent: false,
                        want_connect: false,
                        connected: false,
                        kill: false,
                        reconnecting: false,
                    }),
                    wake: Notify::new(),
                }
            })
            .collect();
        Shared {
            options: network,
            tick: options.tick,
            hub,
            mock,
            agents,
            sent: Cell::new(0),
            received: Cell::new(0),
            reconnects: Cell::new(0),
            latencies: RefCell::new(Vec::new()),
            output: RefCell::new(None),
        }
    }

    fn agent_named(&self, name: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|agent| agent.state.borrow().host.name() == name)
    }

    /// Every message sent was received (none in flight, none lost).
    fn balanced(&self) -> bool {
        self.sent.get() == self.hub.inbound() && self.hub.outbound() == self.received.get()
    }

    /// Messages sent and received so far, on both sides.
    fn activity(&self) -> u64 {
        self.sent.get() + self.received.get() + self.hub.inbound() + self.hub.outbound()
    }

    /// No host has work under way: handlers idle, nothing unsent, no connection or re-attach
    /// pending, nothing the harness asked of the hub left unsent.
    fn hosts_idle(&self) -> bool {
        !self.hub.unrouted()
            && self.agents.iter().all(|agent| {
                let state = agent.state.borrow();
                state.host.handlers_idle()
                    && !state.unsent
                    && !state.kill
                    && !state.reconnecting
                    && (state.connected || !state.want_connect)
            })
    }
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// Applies a fault: `sim` is the driver loop's handle for timed faults; from inside the
/// simulation (the harness) turmoil's free functions are used.
fn apply_fault(shared: &Shared, fault: &Fault, sim: Option<&turmoil::Sim<'_>>) {
    let agent = fault.agent().and_then(|name| shared.agent_named(name));
    let link = agent.map(host_name);
    match (fault, link) {
        (Fault::Partition(_), Some(host)) => match sim {
            Some(sim) => sim.partition("hub", host.as_str()),
            None => turmoil::partition("hub", host.as_str()),
        },
        (Fault::Repair(_), Some(host)) => match sim {
            Some(sim) => sim.repair("hub", host.as_str()),
            None => turmoil::repair("hub", host.as_str()),
        },
        (Fault::Hold(_), Some(host)) => match sim {
            Some(sim) => sim.hold("hub", host.as_str()),
            None => turmoil::hold("hub", host.as_str()),
        },
        (Fault::Release(_), Some(host)) => match sim {
            Some(sim) => sim.release("hub", host.as_str()),
            None => turmoil::release("hub", host.as_str()),
        },
        (Fault::Disconnect(_), Some(_)) => {
            if let Some(idx) = agent {
                let target = &shared.agents[idx];
                let mut state = target.state.borrow_mut();
                if state.connected {
                    state.kill = true;
                    target.wake.notify_one();
                }
            }
        }
        (Fault::Latency { agent: name, range }, _) => match sim {
            Some(sim) => set_latency(sim, shared, name.as_deref(), *range),
            None => shared.latencies.borrow_mut().push((name.clone(), *range)),
        },
        // Refused before the run (crash, restart) or naming no agent.
        _ => {}
    }
}

fn set_latency(sim: &turmoil::Sim<'_>, shared: &Shared, agent: Option<&str>, range: Range) {
    let hosts: Vec<usize> = match agent {
        None => (0..shared.agents.len()).collect(),
        Some(name) => shared.agent_named(name).into_iter().collect(),
    };
    for idx in hosts {
        let host = host_name(idx);
        sim.set_link_latency("hub", host.as_str(), Duration::from_micros(range.min));
        sim.set_link_max_message_latency("hub", host.as_str(), Duration::from_micros(range.max));
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
        if let Ok(Ok(ws)) = tokio::time::timeout(CONNECT_TIMEOUT, open()).await {
            {
                let mut state = agent.state.borrow_mut();
                state.host.connected();
                if !first {
                    state.host.attach(Instant(sim_now()), Some(""));
                    bump(&shared.reconnects);
                }
                state.connected = true;
                state.reconnecting = false;
                state.unsent = true;
            }
            first = false;
            pump(&shared, agent, ws).await;
            let mut state = agent.state.borrow_mut();
            let state = &mut *state;
            state.connected = false;
            state.kill = false;
            state
                .host
                .connection_lost(Instant(sim_now()), &mut state.think);
            // Nothing goes out without a connection (the event driver counts it lost).
            while state.host.poll_send().is_some() {}
            state.drain_results();
        }
        let Some(after) = shared.options.reconnect else {
            agent.state.borrow_mut().reconnecting = false;
            return Ok(());
        };
        {
            let mut state = agent.state.borrow_mut();
            if state.host.disconnected || state.host.id.is_none() {
                state.reconnecting = false;
                return Ok(());
            }
            state.reconnecting = true;
        }
        tokio::time::sleep(Duration::from_micros(after)).await;
    }
}

async fn open() -> Result<WsClient<TcpStream>, Box<dyn std::error::Error>> {
    let stream = TcpStream::connect(("hub", HUB_PORT)).await?;
    Ok(WsClient::connect(stream, HUB_URL).await?)
}

/// Pumps `agent`'s host over `ws` until the connection ends or the harness drops it.
async fn pump(shared: &Shared, agent: &Agent, mut ws: WsClient<TcpStream>) {
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

/// Assembles the run from what the harness left.
fn finish(shared: &Shared, scenario: &Scenario, elapsed: u64) -> Result<NetRun, Unsupported> {
    let output = shared
        .output
        .borrow_mut()
        .take()
        .ok_or_else(|| Unsupported("the harness did not finish".to_string()))?;
    let hub = shared.hub.read(|server| server.hub().clone());
    let mut labels = output.labels;
    let mut auto = 0;
    for channel in hub.channel_ids().collect::<Vec<_>>() {
        if let std::collections::btree_map::Entry::Vacant(slot) = labels.entry(channel) {
            auto += 1;
            slot.insert(format!("auto{auto}"));
        }
    }
    let agents = shared
        .agents
        .iter()
        .map(|agent| {
            let state = agent.state.borrow();
            crate::sim::runner::RunAgent {
                id: state.host.id.unwrap_or(crate::ids::AgentId(0)),
                model: state.host.model.clone(),
            }
        })
        .collect();
    let stats = NetStats {
        sim_micros: elapsed,
        messages: shared.received.get() + shared.hub.inbound(),
        lost: (shared.sent.get() + shared.hub.outbound())
            .saturating_sub(shared.received.get() + shared.hub.inbound()),
        crashes: 0,
        reconnects: shared.reconnects.get(),
    };
    Ok(NetRun {
        run: Run {
            hub,
            agents,
            labels,
            steps: output.steps,
            mismatches: output.mismatches,
            epoch: scenario.hub.epoch,
        },
        stats,
        notes: output.notes,
        // The invariant checkers run on the event-driven driver only.
        violations: Vec::new(),
        logs: Vec::new(),
        chaos_start: None,
    })
}
