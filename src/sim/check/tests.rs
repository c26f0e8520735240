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

#[test]
fn first_divergent_event_names_the_log_line() {
    let log = "      0.0s  harness        step 0 open\n      0.1s  alice          connected (connection 1)\n";
    assert_eq!(first_divergent_event(log, log), None);
    let other = "      0.0s  harness        step 0 open\n      0.2s  alice          connected (connection 1)\n";
    let event = first_divergent_event(log, other);
    assert_eq!(
        event,
        Some((
            2,
            "      0.1s  alice          connected (connection 1)".to_string(),
            "      0.2s  alice          connected (connection 1)".to_string()
        ))
    );
    assert_eq!(
        first_divergent_event("a\n", "a\nb\n"),
        Some((2, "<end of log>".to_string(), "b".to_string()))
    );
    let divergence = Divergence {
        trace: (7, "\"turn\": 1,".to_string(), "\"turn\": 2,".to_string()),
        event,
    };
    assert_eq!(
        divergence.to_string(),
        "two runs diverge at trace line 7: `\"turn\": 1,` vs `\"turn\": 2,`; their first \
         divergent event is line 2 of the event logs: `0.1s  alice          connected \
         (connection 1)` vs `0.2s  alice          connected (connection 1)`"
    );
}

#[test]
fn a_reported_violation_names_ids_as_the_trace_does_and_tells_unnamed_ones_apart() {
    use crate::ids::{EnvelopeId, UNKNOWN_CHANNEL};
    use crate::sim::trace::Normaliser;
    let scenario = Scenario::parse(CONSULTING, "consulting").expect("parses");
    let mut run = runner::run(&scenario);
    let c1 = channel(&run.hub);
    let bob = run.hub.names["bob"];
    let text = run.hub.channels[&c1]
        .wal
        .iter()
        .position(|e| e.event_type == EventType::TEXT)
        .expect("a text");
    let sent = run.hub.channels[&c1].wal[text].clone();
    // Envelopes no final WAL holds (lost in a hub crash, say): two of c1 that clients received,
    // one of a channel the run never labelled, and one a send step returned.
    let last = run.hub.ids.last();
    let unheld = |raw: u128, channel: ChannelId| {
        let mut envelope = Envelope::clone(&sent);
        envelope.envelope_id = Some(EnvelopeId(raw));
        envelope.channel_id = channel;
        envelope
    };
    let seen = [
        unheld(last + 2, c1),
        unheld(last + 1, c1),
        unheld(last + 4, ChannelId(last + 3)),
    ];
    let send = run
        .steps
        .iter_mut()
        .find(|record| record.op == "send")
        .expect("a send step");
    send.result = Some(serde_json::Value::from(EnvelopeId(last + 5).to_string()));
    let names = Normaliser::for_messages(&run, &seen);
    let violation = Violation {
        invariant: Invariant::Delivery,
        kind: "delivery/missing",
        at: 0,
        step: None,
        adapter: Some("consulting"),
        message: format!(
            "{bob} never handled {} in channel {c1}, nor {}, {}, {} in {}, {}; {} and {} by {}",
            EnvelopeId(sent.envelope_id.expect("stamped").0),
            EnvelopeId(last + 1),
            EnvelopeId(last + 2),
            EnvelopeId(last + 4),
            ChannelId(last + 3),
            EnvelopeId(last + 5),
            EnvelopeId(last + 9),
            UNKNOWN_CHANNEL,
            crate::time::DEFAULT_EPOCH,
        ),
    };
    let raw = violation.message.clone();
    let named = violation.named(&names);
    assert_eq!(
        named.message,
        format!(
            "<agent:bob> never handled <env:c1#{text}> in channel <channel:c1>, nor \
             <env:c1#?1>, <env:c1#?2>, <env:?1> in <channel:?1>, <env:c1#?3>; <id:?{}> and \
             <channel:unknown_channel> by <T+0s>",
            last + 9
        )
    );
    // The trace's own normalisation is unchanged: what it cannot name stays `<id:unknown>`.
    assert!(names.text(&raw).contains("nor <id:unknown>, <id:unknown>"));
}
