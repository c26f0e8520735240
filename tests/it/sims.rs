//! One test per scenario in `sims/`, so `cargo test NAME` runs one. Each runs the scenario's
//! sweep (its first [`TEST_SEEDS`] seeds, every invariant it selects, each seed twice) and
//! compares its snapshot (`snapshots/NAME.snap`: the invariant summary and the normalised trace
//! at its fixed seed). A reference-format scenario must also give, in process, byte for byte
//! the trace the real ag2 1.2.1 hub printed (`tests/reference/NAME.json`).

use crate::support::{check_sim, root};
use hubsim::hub::Bugs;
use hubsim::sim::scenario::{Scenario, SeedRange};
use hubsim::sim::sweep::{self, Repro};

/// Seeds each scenario's test sweeps (`hubsim check` runs them all).
const TEST_SEEDS: u64 = 10;

/// `rel` is `NAME` for `sims/NAME.yaml` or `regressions/NAME` for `sims/regressions/NAME.yaml`;
/// the snapshot sits at the same place under `snapshots/`.
fn check_scenario(rel: &str) {
    let path = root().join("sims").join(format!("{rel}.yaml"));
    let (folder, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let scenario = Scenario::load(&path).unwrap_or_else(|error| panic!("{error}"));
    if !scenario.network_only() && folder.is_empty() {
        check_sim(name);
    }
    let full = scenario.seed_range();
    let seeds = SeedRange {
        start: full.start,
        end: full.end.min(full.start + TEST_SEEDS),
    };
    let repro = Repro {
        file: std::path::PathBuf::from(format!("sims/{rel}.yaml")),
        bugs: Vec::new(),
        backend: hubsim::sim::Backend::Events,
    };
    let mut tally = sweep::sweep(&scenario, seeds, Bugs::default(), &repro);
    tally.finish(&scenario, seeds, &repro);
    let failures: Vec<String> = tally
        .failures
        .iter()
        .map(|f| {
            format!(
                "{}
    repro: {}",
                f.what, f.repro
            )
        })
        .collect();
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    insta::with_settings!({
        snapshot_path => root().join("snapshots").join(folder),
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!("hubsim run sims/{rel}.yaml"),
    }, {
        insta::assert_snapshot!(name, sweep::snapshot(&scenario));
    });
}

macro_rules! sims {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_scenario(stringify!($name));
            }
        )*

        /// Every scenario the macro lists (the tidy test compares it with `sims/`).
        pub(crate) const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

sims! {
    access_denied,
    clock_overflow,
    consulting_edges,
    consulting_happy,
    consulting_reject,
    consulting_turn_failure,
    conversation_multi_turn,
    discussion_ack_timeout_partial,
    discussion_creator_order,
    discussion_partial_ack_reject,
    discussion_round_robin,
    discussion_unregister_stall,
    duplicate_labels,
    expectation_max_silence_anchor,
    expectation_pending_states,
    expectation_reply_within_multi,
    inbox_high_traffic,
    inbox_overflow,
    invite_ack_expectation,
    invite_ack_timeout,
    net_chaos_discussion,
    net_checkpoint_crash,
    net_crash_workflow,
    net_disconnect_replay,
    net_hole_closed_channel,
    net_hole_cursor_skip,
    net_hole_duplicate_turn,
    net_human_participant,
    net_long_chaos_discussion,
    net_inbox_overflow,
    net_lost_invite_ack,
    net_partition_discussion,
    net_standard,
    net_ttl_partition,
    open_validation_errors,
    protocol_events_in_process,
    rules_delegation_depth,
    rules_max_concurrent_channels,
    rules_set_rule_midway,
    self_addressed_send,
    step_timeout_pending_open,
    ttl_expiry,
    ttl_variants,
    unknown_channel_errors,
    workflow_bad_graphs,
    workflow_finish,
    workflow_graph,
    workflow_handoff_name_stall,
    workflow_malformed_payloads,
    workflow_packet_routing,
    workflow_round_robin,
}

/// `sims/regressions/`: findings of `hubsim fuzz`, shrunk (`cargo test NAME` runs one).
pub(crate) mod regressions {
    macro_rules! regressions {
        ($($name:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() {
                    super::check_scenario(concat!("regressions/", stringify!($name)));
                }
            )*

            /// Every regression scenario (the tidy test compares it with `sims/regressions/`).
            pub(crate) const LISTED: &[&str] = &[$(stringify!($name)),*];
        };
    }

    regressions! {
        checker_audience_outsider,
        checker_died_handler_closed_channel,
        checker_inbound_rule_changed,
        checker_restart_reopens_channel,
        checker_unregistered_sender,
        fuzz_delivery_closed_channel_not_replayed_consulting,
        fuzz_delivery_closed_channel_not_replayed_conversation,
        fuzz_delivery_closed_channel_not_replayed_discussion,
        fuzz_delivery_closed_channel_not_replayed_workflow,
        fuzz_delivery_cursor_skipped_consulting,
        fuzz_delivery_cursor_skipped_conversation,
        fuzz_delivery_cursor_skipped_discussion,
        fuzz_delivery_cursor_skipped_workflow,
        fuzz_delivery_duplicate_turn,
        fuzz_delivery_duplicate_turn_consulting,
        fuzz_delivery_duplicate_turn_conversation,
        fuzz_delivery_duplicate_turn_discussion,
        fuzz_delivery_duplicate_turn_workflow,
        fuzz_delivery_fold_failed_not_dispatched_workflow,
        fuzz_inbox_fold_failed_after_append,
        fuzz_settle_hub_not_restarted,
    }
}
