//! Scenarios on turmoil with WebSocket framing (`hubsim run --net turmoil`) against the
//! event-driven network driver: with zero latency and the reference's frozen clock, the traces
//! are byte-identical, except where timers that tie in the event driver fall a few ticks apart
//! on turmoil (pinned below); one seed replays byte for byte; the hub crashes and restarts;
//! and both backends log the same client events, which are what the checkers read.

use crate::support::sim_path;
use hubsim::sim::check::AgentLog;
use hubsim::sim::log::Event;
use hubsim::sim::scenario::{Range, Scenario};
use hubsim::sim::timeline::{Filter, Kind, Origin, Timeline};
use hubsim::sim::{
    run_on_network, Backend, LogLevel, NetRun, Outcome, RunOptions, TurmoilOptions, Unsupported,
};
use std::time::Duration;

/// Scenarios whose turmoil trace equals the event driver's: every adapter, rules, TTLs,
/// expectations, inbox caps, access checks, remote-mode error mapping, background opens.
const EQUAL: &[&str] = &[
    "consulting_happy",
    "conversation_multi_turn",
    "discussion_round_robin",
    "workflow_graph",
    "ttl_expiry",
    "inbox_overflow",
    "access_denied",
    "consulting_edges",
    "discussion_ack_timeout_partial",
    "expectation_reply_within_multi",
    "invite_ack_timeout",
    "workflow_handoff_name_stall",
    "unknown_channel_errors",
];

fn frozen(name: &str) -> Scenario {
    let mut scenario = Scenario::load(&sim_path(name)).expect("loads");
    scenario.network.frozen_clock = true;
    scenario
}

fn options(tick_ms: u64) -> TurmoilOptions {
    TurmoilOptions {
        tick: Duration::from_millis(tick_ms),
    }
}

fn on_turmoil(seed: u64, options: &TurmoilOptions) -> RunOptions {
    RunOptions {
        backend: Backend::Turmoil(*options),
        seed,
        ..RunOptions::default()
    }
}

/// `scenario` on turmoil, with everything the run left.
fn run(scenario: &Scenario, seed: u64, options: &TurmoilOptions) -> Result<NetRun, Unsupported> {
    hubsim::sim::run_network(scenario, &on_turmoil(seed, options))
}

/// `scenario` on turmoil, rendered.
fn run_outcome(
    scenario: &Scenario,
    seed: u64,
    options: &TurmoilOptions,
) -> Result<Outcome, Unsupported> {
    hubsim::sim::run(scenario, &on_turmoil(seed, options))
}

#[test]
fn representative_scenarios_on_turmoil_trace_like_the_event_driver() {
    for name in EQUAL {
        let scenario = frozen(name);
        let events = run_on_network(&scenario, 0);
        let turmoil = run_outcome(&scenario, 0, &options(1)).expect("runs on turmoil");
        assert!(
            events.trace == turmoil.trace,
            "{name}: turmoil trace differs\nrepro: diff <(hubsim run sims/{name}.yaml --frozen-clock) <(hubsim run sims/{name}.yaml --frozen-clock --net turmoil)"
        );
        assert_eq!(events.mismatches, turmoil.mismatches, "{name}");
    }
}

#[test]
fn a_ten_millisecond_tick_gives_the_same_trace() {
    for name in ["consulting_happy", "workflow_graph", "ttl_expiry"] {
        let scenario = frozen(name);
        let events = run_on_network(&scenario, 0);
        let turmoil = run_outcome(&scenario, 0, &options(10)).expect("runs on turmoil");
        assert!(events.trace == turmoil.trace, "{name}: differs at 10 ms");
    }
}

#[test]
fn a_step_timeout_that_ties_with_an_invite_timer_falls_apart_on_turmoil() {
    // step_timeout_pending_open: alice's first open to a silent bob times out (0.3 s), and her
    // second open waits behind it on her connection until bob's 0.6 s invite-ack timer frees
    // it. In the event driver messages take no time, so that timer and the second step's
    // deadline tie at exactly 0.6 s and the timer wins: c1 closes by `invite_timeout` and c2
    // opens. On turmoil the first open's `get_agent` round trip takes ticks before its
    // `create_channel`, so the timer falls a few milliseconds after the deadline: the second open
    // times out too, and c1 stays pending until the `expectation_tick` after `advance: 30`
    // closes it by `acks_within`.
    let scenario = frozen("step_timeout_pending_open");
    let events = run_on_network(&scenario, 0);
    let turmoil = run_outcome(&scenario, 0, &options(1)).expect("runs on turmoil");
    assert!(events.trace.contains("\"reason\": \"invite_timeout\""));
    assert!(events.mismatches.is_empty(), "{:#?}", events.mismatches);
    assert!(turmoil
        .trace
        .contains("\"reason\": \"expectation_violated:acks_within\""));
    assert_eq!(
        turmoil.mismatches,
        ["step 1 (open): expected success, got StepTimeout: step did not finish in 0.3s"]
    );
}

#[test]
fn one_seed_replays_byte_for_byte_on_turmoil() {
    // Random latencies (turmoil's per-message draw) and model turns (the `agent/NAME` streams).
    let mut scenario = frozen("discussion_round_robin");
    scenario.network.latency = Range {
        min: 1_000,
        max: 20_000,
    };
    scenario.network.model_time = Range {
        min: 50_000,
        max: 900_000,
    };
    for tick_ms in [1, 10] {
        let first = run(&scenario, 7, &options(tick_ms)).expect("runs");
        let second = run(&scenario, 7, &options(tick_ms)).expect("runs");
        let render = |net: &NetRun| hubsim::sim::trace::render(&scenario.name, &net.run);
        assert_eq!(render(&first), render(&second), "tick {tick_ms} ms");
        assert_eq!(first.stats, second.stats, "tick {tick_ms} ms");
        assert!(
            first.run.mismatches.is_empty(),
            "{:#?}",
            first.run.mismatches
        );
    }
}

#[test]
fn a_disconnected_agent_reattaches_on_a_new_websocket() {
    let text = r#"
name: reattach
agents:
  - name: alice
    replies: ["unused"]
  - name: bob
    replies: ["42", "43"]
steps:
  - {op: open, as: c1, by: alice, type: conversation, target: bob}
  - {op: send, channel: c1, by: alice, text: "first", audience: [bob]}
  - {op: disconnect, agent: bob}
  - {op: send, channel: c1, by: alice, text: "second", audience: [bob]}
"#;
    let scenario = Scenario::parse(text, "reattach").expect("parses");
    let net = run(&scenario, 0, &options(1)).expect("runs");
    assert_eq!(net.stats.reconnects, 1, "{:?}", net.stats);
    let trace = hubsim::sim::trace::render(&scenario.name, &net.run);
    assert!(
        trace.contains("\"43\""),
        "bob answered after re-attaching\n{trace}"
    );
    assert!(net.run.mismatches.is_empty(), "{:#?}", net.run.mismatches);
}

#[test]
fn the_hub_crashes_and_restarts_from_its_store_on_turmoil() {
    let text = r#"
name: crashing
network: {sync: 0}
agents:
  - name: alice
    replies: []
  - name: bob
    replies: ["before", "after"]
steps:
  - {op: open, as: c1, by: alice, type: conversation, target: bob}
  - {op: send, channel: c1, by: alice, text: "one", audience: [bob]}
  - {op: crash}
  - {op: wait, seconds: 2}
  - {op: restart}
  - {op: wait, seconds: 2}
  - {op: send, channel: c1, by: alice, text: "two", audience: [bob]}
"#;
    let scenario = Scenario::parse(text, "crashing").expect("parses");
    let net = run(&scenario, 0, &options(1)).expect("runs");
    assert_eq!(net.stats.crashes, 1, "{:?}", net.stats);
    assert_eq!(
        net.stats.reconnects, 2,
        "both agents re-attach: {:?}",
        net.stats
    );
    let trace = hubsim::sim::trace::render(&scenario.name, &net.run);
    assert!(
        trace.contains("\"before\"") && trace.contains("\"after\""),
        "bob answered before the crash and after the restart\n{trace}"
    );
    assert!(net.run.mismatches.is_empty(), "{:#?}", net.run.mismatches);
    assert!(net.violations.is_empty(), "{:#?}", net.violations);
}

/// What agent `name` saw and did in a run's timeline, times dropped: its client's events,
/// the frames it sent, the frames it received, each in order. (Across the three, events of one
/// moment may interleave differently: turmoil's backend takes client events after each tick.)
fn client_lines(timeline: &Timeline, name: &str) -> [Vec<String>; 3] {
    let (sent, received) = (format!("{name} -> hub"), format!("hub -> {name}"));
    let mut lines: [Vec<String>; 3] = Default::default();
    for entry in &timeline.entries {
        let slot = match entry.kind {
            Kind::Sent if entry.who == sent => 1,
            Kind::Delivered if entry.who == received => 2,
            _ if entry.who == name => 0,
            _ => continue,
        };
        lines[slot].push(entry.what.clone());
    }
    lines
}

#[test]
fn both_network_backends_log_the_same_client_events_and_the_checkers_read_that_log() {
    for name in [
        "consulting_happy",
        "discussion_round_robin",
        "workflow_graph",
        "net_disconnect_replay",
    ] {
        let scenario = frozen(name);
        let logged = |backend| RunOptions {
            backend,
            log: LogLevel::Frames,
            ..RunOptions::default()
        };
        let events = hubsim::sim::run_network(&scenario, &logged(Backend::Events)).expect("runs");
        let turmoil = hubsim::sim::run_network(&scenario, &logged(Backend::Turmoil(options(1))))
            .expect("runs on turmoil");
        let timeline = |run: &NetRun, backend| {
            let origin = Origin {
                scenario: &scenario.name,
                seed: 0,
                backend,
                invariants: Vec::new(),
            };
            Timeline::new(&origin, &run.run, &run.events, &run.violations)
        };
        let (here_all, there_all) = (timeline(&events, "events"), timeline(&turmoil, "turmoil"));
        let events_text = here_all.render(&Filter::default());
        for agent in &scenario.agents {
            let here = client_lines(&here_all, &agent.name);
            let there = client_lines(&there_all, &agent.name);
            assert!(
                here[0].iter().any(|l| l.starts_with("received <env:"))
                    && here[1]
                        .iter()
                        .any(|l| l.starts_with("sent request post_envelope"))
                    && here[2]
                        .iter()
                        .any(|l| l.starts_with("delivered notify <env:")),
                "{name}/{}: the log misses deliveries or posts:\n{events_text}",
                agent.name
            );
            assert_eq!(
                here, there,
                "{name}/{}: the backends' logs differ",
                agent.name
            );
        }
        assert!(
            !events_text.contains("0000000000000000"),
            "{name}: a raw id in the log:\n{events_text}"
        );
        for run in [&events, &turmoil] {
            // The checkers' view of each client is the client events of the log, folded.
            for (idx, agent) in scenario.agents.iter().enumerate() {
                let mut folded = AgentLog::new(&agent.name);
                for logged in run.events.events() {
                    if let Event::Host { agent, event } = &logged.event {
                        if *agent == idx {
                            folded.observe(event);
                        }
                    }
                }
                assert_eq!(
                    format!("{folded:?}"),
                    format!("{:?}", run.logs[idx]),
                    "{name}/{}",
                    agent.name
                );
            }
        }
    }
}
