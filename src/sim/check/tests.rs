//! Each checker fires on the state it forbids: a finished in-process run is checked clean, then
//! tampered with one defect at a time.

use super::*;
use crate::hub::adapter::AdapterState;
use crate::hub::channel::ChannelState;
use crate::proto::{Envelope, EventType};
use crate::sim::runner;
use crate::sim::scenario::Scenario;
use std::sync::Arc;

const CONSULTING: &str = r#"
agents:
  - name: alice
    replies: []
  - name: bob
    replies: ["an answer"]
    rule: {limits: {inbox: {max_pending: 1}}}
steps:
  - {op: open, as: c1, by: alice, type: consulting, target: bob}
  - {op: send, channel: c1, by: alice, text: "a question"}
"#;

fn hub() -> Hub {
    let scenario = Scenario::parse(CONSULTING, "consulting").expect("parses");
    runner::run(&scenario).hub
}

fn host(name: &str, id: crate::ids::AgentId) -> AgentLog {
    let mut host = AgentLog::new(name);
    host.id = Some(id);
    host
}

fn kinds(hub: &Hub, agents: &[AgentLog]) -> Vec<&'static str> {
    let view = View {
        hub: Some(hub),
        agents,
        now: 1_000_000,
        step: None,
        frozen_clock: false,
        mock: Timestamp::parse_iso(crate::time::DEFAULT_EPOCH).expect("epoch"),
        clock_floor: 0,
        ttl_sweep: 30_000_000,
    };
    let mut checker = Checker::new(Selection::ALL);
    checker.finish(&view, false);
    checker.violations().iter().map(|v| v.kind).collect()
}

fn channel(hub: &Hub) -> ChannelId {
    hub.channel_ids().next().expect("one channel")
}

#[test]
fn a_correct_run_is_clean() {
    assert_eq!(kinds(&hub(), &[]), Vec::<&str>::new());
}

#[test]
fn a_live_state_the_wal_does_not_fold_to_breaks_wal() {
    let mut hub = hub();
    let id = channel(&hub);
    if let Some(AdapterState::Consulting(state)) = &mut hub.channels.get_mut(&id).expect("c").state
    {
        state.respondent_replied = false;
    }
    assert_eq!(kinds(&hub, &[]), ["wal/fold_differs"]);
}

#[test]
fn a_reply_without_the_close_breaks_auto_close() {
    let mut hub = hub();
    let id = channel(&hub);
    let entry = hub.channels.get_mut(&id).expect("c");
    entry.metadata.state = ChannelState::Active;
    entry.wal.pop();
    assert_eq!(kinds(&hub, &[]), ["auto_close/consulting_not_closed"]);
}

#[test]
fn pending_above_the_cap_breaks_inbox() {
    let mut hub = hub();
    let bob = hub.names["bob"];
    hub.inbox_pending.insert(bob, 3);
    assert_eq!(kinds(&hub, &[]), ["inbox/over_cap"]);
}

#[test]
fn an_expiry_before_the_deadline_breaks_ttl() {
    let mut hub = hub();
    let id = channel(&hub);
    let metadata = &mut hub.channels.get_mut(&id).expect("c").metadata;
    let closed_at = metadata.closed_at.expect("closed");
    metadata.state = ChannelState::Expired;
    metadata.expires_at = Some(closed_at.plus_micros(1));
    // (Expired rather than closed on the reply, it breaks auto_close too.)
    let found = kinds(&hub, &[]);
    assert!(found.contains(&"ttl/early"), "{found:?}");
}

#[test]
fn deliveries_outside_the_audience_out_of_order_or_turns_twice_break_delivery() {
    let hub = hub();
    let id = channel(&hub);
    let (alice, bob) = (hub.names["alice"], hub.names["bob"]);
    let wal = &hub.channels[&id].wal;
    let text = wal
        .iter()
        .find(|e| e.event_type == EventType::TEXT)
        .expect("a text")
        .clone();
    let mut bob_host = host("bob", bob);
    // A later envelope first, then an earlier one, on one connection.
    for envelope in [wal[wal.len() - 1].clone(), text.clone()] {
        bob_host.received.push(Delivery {
            connection: 1,
            envelope,
        });
    }
    // An envelope addressed to alice alone.
    let mut private = Envelope::clone(&text);
    private.audience = Some(vec![alice]);
    bob_host.received.push(Delivery {
        connection: 2,
        envelope: Arc::new(private),
    });
    let trigger = text.envelope_id.expect("stamped");
    bob_host.turns.insert(
        trigger,
        TurnLog {
            started: 2,
            running: 0,
            concurrent: 1,
        },
    );
    let mut found = kinds(&hub, &[bob_host]);
    found.sort();
    assert_eq!(
        found,
        [
            "delivery/duplicate_turn",
            "delivery/out_of_order",
            "delivery/outside_audience"
        ]
    );
}

#[test]
fn a_selection_checks_only_what_it_names() {
    let mut hub = hub();
    let bob = hub.names["bob"];
    hub.inbox_pending.insert(bob, 3);
    let view = View {
        hub: Some(&hub),
        agents: &[],
        now: 0,
        step: Some(1),
        frozen_clock: true,
        mock: Timestamp::parse_iso(crate::time::DEFAULT_EPOCH).expect("epoch"),
        clock_floor: 0,
        ttl_sweep: 0,
    };
    let mut checker = Checker::new(Selection::NONE.with(Invariant::Wal));
    checker.check(&view);
    assert!(checker.violations().is_empty());
    assert_eq!(
        Selection::NONE
            .with(Invariant::Ttl)
            .with(Invariant::Settle)
            .iter()
            .collect::<Vec<_>>(),
        [Invariant::Ttl, Invariant::Settle]
    );
}

#[test]
fn first_divergence_names_the_line() {
    assert_eq!(first_divergence("a\nb\n", "a\nb\n"), None);
    assert_eq!(
        first_divergence("a\nb\nc", "a\nx\nc"),
        Some((2, "b".to_string(), "x".to_string()))
    );
    assert_eq!(
        first_divergence("a\n", "a\nb\n"),
        Some((2, "<end of trace>".to_string(), "b".to_string()))
    );
}
