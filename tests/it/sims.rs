//! One test per scenario in `sims/`, so `cargo test NAME` runs one. Each checks byte-identical
//! parity with the trace the real ag2 1.2.1 hub printed (`tests/reference/NAME.json`).

use crate::support::check_sim;

macro_rules! sims {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_sim(stringify!($name));
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
