//! Property tests: random op sequences over a fixed cast of four agents (`ops`), written out as
//! reference-format scenarios (`yaml`), run in process and on the network driver.
//!
//! Each case checks that (a) the network run (zero latency, seed 0) breaks no invariant except
//! ag2's own delivery holes and the two cases [`explained`] names; (b) in process, every step succeeds or fails as a small reference
//! model of the hub and its adapters predicts (`model`), each background open ends as it
//! predicts, and every channel's final state and every inbox counter match it; (c) both
//! drivers print the same trace when the scenario runs twice. A failure prints the shrunk case
//! as a scenario file that `hubsim trace FILE` and `hubsim run FILE` replay.
//!
//! 32 cases per property by default; `PROPTEST_CASES=2000` runs more, `PROPTEST_RNG_SEED=N`
//! draws other cases (the default seed is fixed, so `cargo test` is repeatable).

mod coverage;
mod model;
mod ops;
mod yaml;

use hubsim::hub::adapter::AdapterState;
use hubsim::sim::check::{first_divergence, Violation};
use hubsim::sim::record::StepRecord;
use hubsim::sim::runner::Run;
use hubsim::sim::scenario::Scenario;
use hubsim::sim::{events, runner, trace};
use model::{ChannelEnd, Expect, Ids, Turn};
use ops::{KindTag, Op};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::Value;

/// The default seed of the case generator.
const SEED: u64 = 0x6875_6273_696d;

/// 32 cases from a fixed seed, unless `PROPTEST_CASES` or `PROPTEST_RNG_SEED` say otherwise;
/// no regression files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 32;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config.failure_persistence = None;
    config
}

/// Runs one case; an `Err` carries what broke and the scenario file.
fn check(name: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let text = yaml::scenario(name, ops);
    let fail = |what: String| {
        TestCaseError::fail(format!(
            "{what}\n--- {name}.yaml (replay: hubsim trace {name}.yaml; hubsim run {name}.yaml) ---\n{text}--- end of {name}.yaml ---"
        ))
    };
    let scenario = Scenario::parse(&text, name)
        .map_err(|error| fail(format!("the generated scenario does not load: {error}")))?;

    let local = runner::run(&scenario);
    let local_trace = trace::render(&scenario.name, &local);
    let again = trace::render(&scenario.name, &runner::run(&scenario));
    if let Some((line, a, b)) = first_divergence(&local_trace, &again) {
        return Err(fail(format!(
            "in process, two runs differ at trace line {line}:\n  {a}\n  {b}"
        )));
    }
    compare_with_model(ops, &local).map_err(fail)?;

    let remote = events::run_seed(&scenario, 0);
    let remote_again = events::run_seed(&scenario, 0);
    let (a, b) = (
        trace::render(&scenario.name, &remote.run),
        trace::render(&scenario.name, &remote_again.run),
    );
    if let Some((line, a, b)) = first_divergence(&a, &b) {
        return Err(fail(format!(
            "on the network, two runs differ at trace line {line}:\n  {a}\n  {b}"
        )));
    }
    if remote.violations != remote_again.violations {
        return Err(fail(
            "on the network, two runs found different violations".into(),
        ));
    }
    let unexplained: Vec<String> = remote
        .violations
        .iter()
        .filter(|violation| !explained(violation))
        .map(ToString::to_string)
        .collect();
    if !unexplained.is_empty() {
        return Err(fail(format!(
            "invariant violations on the network:\n  {}",
            unexplained.join("\n  ")
        )));
    }
    Ok(())
}

/// Whether a violation is explained by ag2 itself (one of its delivery holes). Generated
/// payloads are well-formed, so `inbox/refused_send_left_trace` never is.
fn explained(violation: &Violation) -> bool {
    violation.hole().is_some()
}

/// (b): the in-process run against the model, step by step, then the end state.
fn compare_with_model(ops: &[Op], run: &Run) -> Result<(), String> {
    let ids = ids_of(run);
    let prediction = model::predict(ops, &ids);
    for (idx, op) in ops.iter().enumerate() {
        let expect = match op {
            Op::Open(open) if !open.wait => &prediction.background[&idx],
            _ => &prediction.steps[idx],
        };
        let record = &run.steps[idx];
        if !record_matches(record, expect) {
            return Err(format!(
                "step {idx}: the model expects {expect:?}, the run recorded {record:?}"
            ));
        }
    }
    let labelled: Vec<usize> = ids.channels.keys().copied().collect();
    let predicted: Vec<usize> = prediction.channels.keys().copied().collect();
    if labelled != predicted {
        return Err(format!(
            "the run created channels for the opens at steps {labelled:?}, the model at {predicted:?}"
        ));
    }
    for (open, expected) in &prediction.channels {
        let actual = channel_end(run, &ids, *open);
        if actual.as_ref() != Some(expected) {
            return Err(format!(
                "channel c{open}: the model ends it as {expected:?}, the run as {actual:?}"
            ));
        }
    }
    for (agent, expected) in prediction.pending.iter().enumerate() {
        let id = run.agents[agent].id;
        let actual = run.hub.inbox_pending().get(&id).copied().unwrap_or(0);
        if actual != *expected {
            return Err(format!(
                "{}'s inbox counter: the model has {expected}, the hub {actual}",
                ops::NAMES[agent]
            ));
        }
    }
    Ok(())
}

/// The ids the run minted: agents in cast order, channels by the step of their open.
fn ids_of(run: &Run) -> Ids {
    assert_eq!(
        run.agents.len(),
        ops::NAMES.len(),
        "the whole cast registers"
    );
    let channels = run
        .labels
        .iter()
        .map(|(channel, label)| {
            let open = label
                .strip_prefix('c')
                .and_then(|idx| idx.parse().ok())
                .unwrap_or_else(|| panic!("a channel no open labelled: {label}"));
            (open, channel.to_string())
        })
        .collect();
    Ids {
        agents: std::array::from_fn(|idx| run.agents[idx].id.to_string()),
        channels,
    }
}

fn record_matches(record: &StepRecord, expect: &Expect) -> bool {
    let error = record.error.as_ref();
    let still_pending = record.completion == Some(hubsim::sim::record::Completion::PendingAtEnd);
    match expect {
        Expect::Ok => error.is_none() && !still_pending,
        Expect::StillPending => error.is_none() && still_pending,
        Expect::Err {
            type_name,
            fragment,
        } => error.is_some_and(|error| {
            error.type_name == *type_name && error.message.contains(fragment.as_str())
        }),
    }
}

/// The hub's final state of the channel opened at step `open`, in the model's terms.
fn channel_end(run: &Run, ids: &Ids, open: usize) -> Option<ChannelEnd> {
    let wanted = ids.channels.get(&open)?;
    let channel = run.hub.channel_ids().find(|c| c.to_string() == *wanted)?;
    let metadata = run.hub.get_channel(channel).ok()?;
    let agent = |id: hubsim::ids::AgentId| {
        run.agents
            .iter()
            .position(|agent| agent.id == id)
            .expect("a cast member")
    };
    let turn = match run.hub.adapter_state(channel)? {
        AdapterState::Consulting(state) => Turn::Consulting {
            sent: state.initiator_sent,
            replied: state.respondent_replied,
        },
        AdapterState::Conversation(_) => Turn::Conversation,
        AdapterState::Discussion(state) => Turn::Discussion {
            expected: agent(state.expected),
        },
        AdapterState::Workflow(state) => Turn::Workflow {
            expected: state.expected.as_ref().map(|speaker| match speaker {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
            turns: state.turn_count,
        },
    };
    Some(ChannelEnd {
        state: metadata.state.as_str(),
        close_reason: metadata.close_reason.clone(),
        pending_acks: metadata.pending_acks.iter().map(|id| agent(*id)).collect(),
        turn,
    })
}

proptest! {
    #![proptest_config(config())]
    /// Consulting: the initiator's text first, one text back, then `consulting_complete`.
    #[test]
    fn proptest_consulting(ops in ops::adapter_ops(KindTag::Consulting)) {
        check("prop_consulting", &ops)?;
    }
}

proptest! {
    #![proptest_config(config())]
    /// Conversation: any participant, any time; it never closes by itself.
    #[test]
    fn proptest_conversation(ops in ops::adapter_ops(KindTag::Conversation)) {
        check("prop_conversation", &ops)?;
    }
}

proptest! {
    #![proptest_config(config())]
    /// Discussion: round robin from the creator, in participant order.
    #[test]
    fn proptest_discussion(ops in ops::adapter_ops(KindTag::Discussion)) {
        check("prop_discussion", &ops)?;
    }
}

proptest! {
    #![proptest_config(config())]
    /// Workflow: the graph, handoffs, finishes and `max_turns` decide who speaks and when it
    /// closes.
    #[test]
    fn proptest_workflow(ops in ops::adapter_ops(KindTag::Workflow)) {
        check("prop_workflow", &ops)?;
    }
}

proptest! {
    #![proptest_config(config())]
    /// The channel lifecycle across adapters: opens, acks, rejects, closes, TTLs, expectation
    /// closes, unregistration.
    #[test]
    fn proptest_lifecycle(ops in ops::lifecycle_ops()) {
        check("prop_lifecycle", &ops)?;
    }
}
