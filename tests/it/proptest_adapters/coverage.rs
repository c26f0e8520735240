//! The generators reach what the properties are about: drawn from the default seed, each
//! sequence strategy leads the model through every outcome listed for it (accepted and refused
//! sends of each kind, each way a channel ends, each way a background open ends). Without this
//! a generator change could make the properties pass vacuously. Only the model runs here.

use super::model::{self, Expect, Ids};
use super::ops::{self, Event, KindTag, Op};
use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use std::collections::BTreeMap;

/// Sequences drawn per strategy.
const CASES: usize = 256;

/// What one step or channel end counts as.
fn outcome(ops: &[Op], idx: usize, expect: &Expect) -> Option<String> {
    let send = match &ops[idx] {
        Op::Open(open) if !open.wait => {
            return Some(match expect {
                Expect::Ok => "background: activated".into(),
                Expect::StillPending => "background: still pending".into(),
                Expect::Err { fragment, .. } if fragment.contains("closed during handshake") => {
                    "background: closed during handshake".into()
                }
                Expect::Err { .. } => "background: refused".into(),
            })
        }
        Op::Send(send) => send,
        _ => return None,
    };
    let kind = match send.channel.map(|open| &ops[open]) {
        Some(Op::Open(open)) => open.kind.name(),
        _ => "unknown",
    };
    let event = match send.event {
        Event::Text(_) => "text",
        Event::Packet(_) => "packet",
        Event::Note => "note",
        Event::Ack => "ack",
        Event::Reject => "reject",
    };
    let Expect::Err {
        type_name,
        fragment,
    } = expect
    else {
        return Some(format!("{kind}: {event} accepted"));
    };
    let classes = [
        (
            "expects first send from initiator",
            "consulting: first text not the initiator's",
        ),
        (
            "expects reply from respondent",
            "consulting: second text not the respondent's",
        ),
        ("to speak", "out of turn"),
        (" is closed", "refused: closed"),
        (" is expired", "refused: expired"),
        ("not active", "refused: pending"),
        (
            "only accepts sends from participants",
            "refused: not a participant",
        ),
        ("inbox at capacity", "refused: inbox full"),
        ("channel not found", "refused: unknown channel"),
        (
            "sender not registered",
            "refused: unregistered sender (hub)",
        ),
        (
            "AgentClient is disconnected",
            "refused: unregistered sender (client)",
        ),
        ("not permitted to send to", "refused: outbound_to"),
        ("unknown channel label", "refused: label of a failed open"),
    ];
    let class = classes
        .iter()
        .find(|(needle, _)| fragment.contains(needle))
        .map_or_else(
            || format!("refused: {type_name}"),
            |(_, class)| class.to_string(),
        );
    Some(if class == "out of turn" {
        format!("{kind}: out of turn")
    } else {
        class
    })
}

/// How often each outcome happens over `CASES` sequences of `strategy`.
fn tally(strategy: BoxedStrategy<Vec<Op>>) -> BTreeMap<String, usize> {
    let ids = Ids {
        agents: std::array::from_fn(|idx| format!("id{idx}")),
        channels: (0..32).map(|idx| (idx, format!("ch{idx}"))).collect(),
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &super::SEED.to_le_bytes().repeat(4));
    let mut runner = TestRunner::new_with_rng(super::config(), rng);
    let mut counts = BTreeMap::new();
    for _ in 0..CASES {
        let ops = strategy.new_tree(&mut runner).expect("draws").current();
        let prediction = model::predict(&ops, &ids);
        for idx in 0..ops.len() {
            let expect = match &ops[idx] {
                Op::Open(open) if !open.wait => &prediction.background[&idx],
                _ => &prediction.steps[idx],
            };
            if let Some(outcome) = outcome(&ops, idx, expect) {
                *counts.entry(outcome).or_insert(0) += 1;
            }
        }
        for end in prediction.channels.values() {
            let what = format!("end: {} {}", end.state, end.close_reason);
            *counts.entry(what.trim_end().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

#[track_caller]
fn check(name: &str, strategy: BoxedStrategy<Vec<Op>>, required: &[&str]) {
    let counts = tally(strategy);
    let missing: Vec<&&str> = required
        .iter()
        .filter(|outcome| !counts.contains_key(**outcome))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: {CASES} drawn sequences never reach {missing:?}; they reach:\n{counts:#?}"
    );
}

#[test]
fn proptest_generators_reach_every_outcome() {
    let shared = [
        "refused: closed",
        "refused: pending",
        "refused: not a participant",
        "refused: unknown channel",
        "refused: unregistered sender (client)",
        "refused: label of a failed open",
        "end: active",
        "end: closed explicit_close",
        "end: expired ttl_expired",
        "background: activated",
        "background: still pending",
    ];
    let adapter = |kind: KindTag| ops::adapter_ops(kind).boxed();
    let consulting = [
        "consulting: text accepted",
        "consulting: packet accepted",
        "consulting: note accepted",
        "consulting: first text not the initiator's",
        "consulting: second text not the respondent's",
        "end: closed consulting_complete",
        "end: closed expectation_violated:acks_within",
        "end: closed expectation_violated:reply_within",
    ];
    check(
        "consulting",
        adapter(KindTag::Consulting),
        &[&shared[..], &consulting].concat(),
    );
    let conversation = ["conversation: text accepted", "refused: inbox full"];
    check(
        "conversation",
        adapter(KindTag::Conversation),
        &[&shared[..], &conversation].concat(),
    );
    let discussion = [
        "discussion: text accepted",
        "discussion: out of turn",
        "end: closed invite_rejected",
    ];
    check(
        "discussion",
        adapter(KindTag::Discussion),
        &[&shared[..], &discussion].concat(),
    );
    let workflow = [
        "workflow: text accepted",
        "workflow: packet accepted",
        "workflow: out of turn",
        "end: closed max_turns",
        "end: closed finished",
        "end: closed after_work",
        "end: closed done",
    ];
    check(
        "workflow",
        adapter(KindTag::Workflow),
        &[&shared[..], &workflow].concat(),
    );
    let lifecycle = [
        "consulting: ack accepted",
        "discussion: reject accepted",
        "end: pending",
        "end: closed invite_rejected",
        "end: closed invite_failed",
        "end: closed gave up",
        "background: closed during handshake",
        "background: refused",
        "refused: expired",
        "refused: outbound_to",
        "refused: unregistered sender (hub)",
    ];
    check(
        "lifecycle",
        ops::lifecycle_ops().boxed(),
        &[&shared[..], &lifecycle].concat(),
    );
}
