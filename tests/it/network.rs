//! Every reference scenario on the simulated network (hub server, remote-mode clients, zero
//! latency, no faults, the reference's frozen clock): the trace equals the in-process one, or
//! the scenario is listed below with the remote-mode behaviour of ag2 1.2.1 that changes it
//! (README, "Remote mode"), and the run shows that behaviour.

use crate::support::sim_path;
use hubsim::sim::scenario::Scenario;
use hubsim::sim::{run_in_process, run_on_network};

/// Why a scenario's remote run differs, and a text the run must show for that reason.
const REMOTE_DIFFERENCES: &[(&str, &str, &str)] = &[
    // ag2's client maps only four wire codes to exception classes; InboxFull, ValueError,
    // KeyError... arrive as a bare NetworkError with the same message.
    ("inbox_overflow", "untyped", "got NetworkError: recipient"),
    (
        "inbox_high_traffic",
        "untyped",
        "got NetworkError: recipient",
    ),
    (
        "rules_set_rule_midway",
        "untyped",
        "got NetworkError: recipient",
    ),
    (
        "open_validation_errors",
        "untyped",
        "got NetworkError: invalid literal",
    ),
    (
        "workflow_bad_graphs",
        "untyped",
        "got NetworkError: 'initial_speaker'",
    ),
    (
        "workflow_malformed_payloads",
        "untyped",
        "got NetworkError: 'str' object",
    ),
    // A pending create_channel holds its creator's connection until the acks arrive: the
    // creator's later requests wait behind it (and the step times out), and a timed-out open
    // is not cancelled hub-side, so the channel ends closed by invite_timeout.
    ("consulting_reject", "held", "got StepTimeout"),
    ("discussion_partial_ack_reject", "held", "got StepTimeout"),
    ("protocol_events_in_process", "held", "got StepTimeout"),
    ("rules_max_concurrent_channels", "held", "got StepTimeout"),
    ("ttl_variants", "held", "got StepTimeout"),
    (
        "expectation_pending_states",
        "held",
        "unknown channel label 'c2'",
    ),
    (
        "step_timeout_pending_open",
        "held",
        "\"reason\": \"invite_timeout\"",
    ),
    // Wire authorisation: close and read need a bound participant; hub-emitted event types and
    // audiences outside the channel are refused.
    (
        "discussion_unregister_stall",
        "authorised",
        "connection has no participant",
    ),
    (
        "unknown_channel_errors",
        "authorised",
        "connection has no participant",
    ),
    (
        "expectation_max_silence_anchor",
        "authorised",
        "is emitted only by the hub",
    ),
    (
        "self_addressed_send",
        "authorised",
        "audience must list only participants",
    ),
    // Handoff targets resolve through the client's name cache, which holds only agents the
    // client has met: an unknown name stays a name.
    (
        "workflow_handoff_name_stall",
        "name cache",
        "\"target\": \"dave\"",
    ),
];

#[test]
fn every_reference_scenario_runs_on_the_network_like_in_process_or_differs_as_documented() {
    for name in &crate::support::scenario_names("") {
        let mut scenario = Scenario::load(&sim_path(name)).expect("loads");
        if scenario.network_only() {
            continue;
        }
        scenario.network.frozen_clock = true;
        let local = run_in_process(&scenario);
        let remote = run_on_network(&scenario, 0);
        let again = run_on_network(&scenario, 0);
        assert_eq!(
            remote.trace, again.trace,
            "{name}: same seed, different bytes"
        );
        let repro = format!("hubsim run sims/{name}.yaml --seed 0 --frozen-clock | diff <(hubsim trace sims/{name}.yaml) -");
        match REMOTE_DIFFERENCES.iter().find(|(n, _, _)| n == name) {
            None => {
                assert!(
                    remote.mismatches.is_empty(),
                    "{name}: {:#?}",
                    remote.mismatches
                );
                assert!(
                    local.trace == remote.trace,
                    "{name}: remote trace differs\nrepro: {repro}"
                );
            }
            Some((_, why, shows)) => {
                assert_ne!(
                    local.trace, remote.trace,
                    "{name}: listed as differing ({why}) but equal"
                );
                let seen = remote.mismatches.join("\n") + &remote.trace;
                assert!(
                    seen.contains(shows),
                    "{name} ({why}): expected to show {shows:?}\nrepro: {repro}"
                );
            }
        }
    }
}

#[test]
fn the_sim_clock_moves_the_hub_clock_with_simulated_time() {
    let scenario = Scenario::load(&sim_path("invite_ack_timeout")).expect("loads");
    let remote = run_on_network(&scenario, 0);
    // The 0.25 s invite timer fires 0.25 s into the run, and the hub stamps it so.
    assert!(
        remote.trace.contains("\"closed_at\": \"<T+0.25s>\""),
        "{}",
        remote.trace
    );
    let mut frozen = scenario.clone();
    frozen.network.frozen_clock = true;
    assert!(!run_on_network(&frozen, 0).trace.contains("<T+0.25s>"));
}

#[test]
fn the_in_process_backend_logs_steps_deliveries_and_turns() {
    let scenario = Scenario::load(&sim_path("consulting_happy")).expect("loads");
    let options = hubsim::sim::RunOptions {
        backend: hubsim::sim::Backend::InProcess,
        log: hubsim::sim::LogLevel::Events,
        ..hubsim::sim::RunOptions::default()
    };
    let outcome = hubsim::sim::run(&scenario, &options).expect("runs");
    assert_eq!(outcome.trace, run_in_process(&scenario).trace);
    let timeline = outcome
        .timeline
        .as_ref()
        .expect("a log was kept")
        .render(&hubsim::sim::timeline::Filter::default());
    for expected in [
        "harness          step 0 open",
        "harness          step 1 failed: ProtocolError",
        "bob              received <env:c1#",
        "bob              model turn for <env:c1#",
    ] {
        assert!(
            timeline.contains(expected),
            "no `{expected}` in:\n{timeline}"
        );
    }
    assert!(!timeline.contains("0000000000"), "a raw id in:\n{timeline}");
}
