//! `expect:`, what must hold at the end of every seed: a passing block, a failing one as
//! `hubsim run` and `hubsim check` print it, `any_of` over the seed-dependent outcomes of a real
//! fault scenario, `expect_error`'s `any_of`, and names refused at load time where written.

use crate::bad_input::{load_error, TempDir};
use crate::support::{root, sim_path};
use hubsim::hub::Bugs;
use hubsim::sim::scenario::{Scenario, SeedRange};
use hubsim::sim::sweep::{self, Repro};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A consulting exchange that completes: bob answers "42" and the channel closes.
const CONSULTING: &str = "agents:
  - name: alice
  - name: bob
    replies: [\"42\"]
steps:
  - {op: open, as: c1, by: alice, type: consulting, target: bob}
  - {op: send, channel: c1, by: alice, text: \"What is 6 x 7?\", audience: [bob]}
";

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.0.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write");
    path
}

fn hubsim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("hubsim runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The failures a sweep of `path` over `seeds` reports.
fn sweep_failures(path: &Path, seeds: u64) -> Vec<sweep::Failure> {
    let scenario = Scenario::load(path).expect("loads");
    let range = SeedRange {
        start: 0,
        end: seeds,
    };
    sweep::sweep(&scenario, range, Bugs::default(), &Repro::new(path)).failures
}

#[test]
fn a_passing_expect_holds_in_process_and_on_the_network() {
    let dir = TempDir::new("expect-pass");
    let text = format!(
        "{CONSULTING}expect:
  channels:
    c1: {{state: closed, close_reason: consulting_complete, turns: 2}}
  wal:
    c1:
      contains: [{{event_type: ag2.msg.text, sender: bob, text: \"^42$\"}}, {{event_type: ag2.msg.text, count: 2}}]
      not_contains: [{{sender: bob, text: \"43\"}}]
  agents:
    bob: {{model_turns: 1, handled: {{min: 1}}, inbox: {{pending: {{max: 1}}}}}}
    alice: {{model_turns: 0}}
"
    );
    let path = write(&dir, "passing", &text);
    let scenario = Scenario::load(&path).expect("loads");
    assert!(!scenario.expect.is_empty());
    let outcome = hubsim::sim::run_in_process(&scenario);
    assert_eq!(outcome.expect, Vec::<String>::new());
    assert_eq!(outcome.mismatches, Vec::<String>::new());
    assert_eq!(sweep_failures(&path, 3), Vec::new());
    let (ok, stderr) = hubsim(&["run", &path.display().to_string()]);
    assert!(ok, "{stderr}");
}

#[test]
fn the_expect_key_changes_no_trace_byte() {
    let with = Scenario::parse(
        &format!("{CONSULTING}expect: {{channels: {{c1: {{state: closed}}}}}}\n"),
        "same",
    )
    .expect("loads");
    let without = Scenario::parse(CONSULTING, "same").expect("loads");
    assert_eq!(
        hubsim::sim::run_in_process(&with).trace,
        hubsim::sim::run_in_process(&without).trace
    );
    assert_eq!(
        hubsim::sim::run_on_network(&with, 3).trace,
        hubsim::sim::run_on_network(&without, 3).trace
    );
}

#[test]
fn a_failing_expect_prints_the_assertion_the_actual_value_and_the_repro() {
    let dir = TempDir::new("expect-fail");
    let text = format!(
        "{CONSULTING}expect:
  channels:
    c1: {{state: active}}
  agents:
    bob: {{model_turns: {{min: 2, max: 3}}}}
  wal:
    c1: {{not_contains: [{{event_type: ag2.msg.text, sender: bob}}]}}
"
    );
    let path = write(&dir, "failing", &text);
    let file = path.display().to_string();
    // `hubsim run`: each assertion on stderr, then the repro line; the exit status fails.
    let (ok, stderr) = hubsim(&["run", &file, "--seed", "4"]);
    assert!(!ok, "{stderr}");
    for line in [
        "failing: EXPECT FAILED expect.channels.c1.state: expected active, actual closed"
            .to_string(),
        "failing: EXPECT FAILED expect.agents.bob.model_turns: expected between 2 and 3, actual 1"
            .to_string(),
        "failing: EXPECT FAILED expect.wal.c1.not_contains[0] {event_type: ag2.msg.text, sender: \
         bob}: expected none matching, actual 1: #4 ag2.msg.text from bob \"42\""
            .to_string(),
        format!("repro: hubsim run {file} --seed 4   # hubsim"),
    ] {
        assert!(stderr.contains(&line), "expected `{line}` in:\n{stderr}");
    }
    // `hubsim check`: one failure per assertion and seed, each with its repro line.
    let failures = sweep_failures(&path, 2);
    assert_eq!(failures.len(), 6, "{failures:#?}");
    assert_eq!(
        failures[0].what,
        "expect failed: expect.channels.c1.state: expected active, actual closed"
    );
    assert_eq!(failures[0].seed, Some(0));
    assert!(failures[3]
        .repro
        .starts_with(&format!("hubsim run {file} --seed 1   # hubsim ")));
    let (ok, stderr) = hubsim(&["check", &file, "--seeds", "1"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "FAIL failing (seed 0): expect failed: expect.channels.c1.state: expected active, \
             actual closed\n    repro: hubsim run "
        ),
        "{stderr}"
    );
    // `hubsim trace` (in process) fails the same way.
    let (ok, stderr) = hubsim(&["trace", &file]);
    assert!(!ok);
    assert!(
        stderr.contains("EXPECT FAILED expect.channels.c1.state: expected active"),
        "{stderr}"
    );
}

#[test]
fn messages_name_ids_as_the_trace_does() {
    // A close reason holding the channel's own id is printed with the trace's name.
    let text = format!(
        "{CONSULTING}expect: {{channels: {{c1: {{close_reason: nope}}}}, wal: {{c1: {{contains: [{{text: zzz}}]}}}}}}\n"
    );
    let scenario = Scenario::parse(&text, "named").expect("loads");
    let outcome = hubsim::sim::run_on_network(&scenario, 0);
    assert_eq!(outcome.expect.len(), 2, "{:?}", outcome.expect);
    for message in &outcome.expect {
        let hex = message
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|word| word.len() == 32);
        assert!(!hex, "a raw id in: {message}");
    }
}

/// `sims/net_partition_discussion.yaml` with its `expect:` block replaced by `expect`.
fn partition_with(dir: &TempDir, expect: &str) -> PathBuf {
    let text = std::fs::read_to_string(sim_path("net_partition_discussion")).expect("read");
    let start = text
        .find("\nexpect:\n")
        .expect("the scenario has an expect block")
        + 1;
    let end = start + text[start..].find("\nagents:\n").expect("agents follow") + 1;
    let text = format!(
        "{}{expect}{}",
        &text[..start].replace("name: net_partition_discussion", "name: partition"),
        &text[end..]
    );
    write(dir, "partition", &text)
}

#[test]
fn any_of_accepts_both_outcomes_of_a_partition_across_seeds() {
    // The seed decides whether bob's first turn dies with his connection (the discussion
    // stalls after 4 turns) or lands (it completes with 6): each outcome alone fails on some
    // of 50 seeds, either of them holds on all.
    let dir = TempDir::new("expect-any-of");
    let seeds = 50;
    let completed = partition_with(&dir, "expect: {channels: {d1: {turns: 6}}}\n");
    let stalled_seeds: Vec<u64> = sweep_failures(&completed, seeds)
        .iter()
        .filter(|f| f.what.starts_with("expect failed"))
        .filter_map(|f| f.seed)
        .collect();
    let stalled = partition_with(&dir, "expect: {channels: {d1: {turns: 4}}}\n");
    let completed_seeds: Vec<u64> = sweep_failures(&stalled, seeds)
        .iter()
        .filter(|f| f.what.starts_with("expect failed"))
        .filter_map(|f| f.seed)
        .collect();
    assert!(!stalled_seeds.is_empty() && !completed_seeds.is_empty());
    assert_eq!(stalled_seeds.len() + completed_seeds.len(), seeds as usize);
    let either = partition_with(
        &dir,
        "expect: {channels: {d1: {state: active, any_of: [{turns: 6}, {turns: 4}]}}}\n",
    );
    assert_eq!(sweep_failures(&either, seeds), Vec::new());
    // The scenario's own block (whole-block `any_of` pairing turns with the WAL) holds too.
    let kept = sim_path("net_partition_discussion");
    assert_eq!(sweep_failures(&kept, seeds), Vec::new());
    // When no alternative holds, each one's failure is listed.
    let neither = partition_with(
        &dir,
        "expect: {channels: {d1: {any_of: [{turns: 5}, {state: closed}]}}}\n",
    );
    let failures = sweep_failures(&neither, 1);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].what.starts_with(
            "expect failed: expect.channels.d1.any_of: no alternative holds: (1) turns: expected 5, actual "
        ) && failures[0].what.contains(" | (2) state: expected closed, actual active"),
        "{}",
        failures[0].what
    );
}

#[test]
fn expect_error_any_of_allows_either_outcome() {
    // The same step succeeds in one scenario and fails in the other; one `any_of` accepts both.
    let expect = "expect_error: {any_of: [{type: ProtocolError, match: \"is closed\"}, null]}";
    let question = "  - {op: send, channel: c1, by: alice, text: \"What is 6 x 7?\"";
    for (name, text) in [
        // After the reply the channel is closed: a second reply fails.
        (
            "fails",
            format!("{CONSULTING}  - {{op: send, channel: c1, by: bob, text: again, {expect}}}\n"),
        ),
        // Before the question, any event but a text is accepted.
        (
            "succeeds",
            CONSULTING.replace(
                question,
                &format!(
                    "  - {{op: send, channel: c1, by: bob, event_type: ag2.note, {expect}}}\n{question}"
                ),
            ),
        ),
    ] {
        let scenario = Scenario::parse(&text, name).expect("loads");
        let outcome = hubsim::sim::run_in_process(&scenario);
        assert_eq!(outcome.mismatches, Vec::<String>::new(), "{name}");
    }
    // An error none of the alternatives names is a mismatch, printed with every alternative.
    let text = format!(
        "{CONSULTING}  - {{op: send, channel: c1, by: bob, text: again, expect_error: {{any_of: [NotFoundError, null]}}}}\n"
    );
    let scenario = Scenario::parse(&text, "other").expect("loads");
    let outcome = hubsim::sim::run_in_process(&scenario);
    assert_eq!(outcome.mismatches.len(), 1);
    assert!(
        outcome.mismatches[0]
            .starts_with("step 2 (send): expected NotFoundError or success, got ProtocolError: "),
        "{}",
        outcome.mismatches[0]
    );
    // `any_of` stands alone, and holds a non-empty list.
    let text = format!(
        "{CONSULTING}  - {{op: send, channel: c1, by: bob, text: x, expect_error: {{any_of: []}}}}\n"
    );
    let error = Scenario::parse(&text, "empty").expect_err("refused");
    assert!(error.starts_with("8:"), "{error}");
    assert!(
        error.contains("expect_error.any_of: expected a non-empty list"),
        "{error}"
    );
}

/// The load error of `CONSULTING` plus `expect` is at `line_column` and says `message`.
#[track_caller]
fn refused_at(expect: &str, line_column: &str, message: &str) {
    let (error, path) = load_error("names", &format!("{CONSULTING}{expect}"));
    let at = format!("--> {path}:{line_column}\n");
    assert!(error.contains(&at), "expected `{at}` in:\n{error}");
    assert!(error.contains(message), "expected `{message}` in:\n{error}");
}

#[test]
fn unknown_labels_and_agents_are_refused_where_written() {
    // Line 8 is the first line after CONSULTING.
    refused_at(
        "expect:\n  channels:\n    c9: {state: closed}\n",
        "10:5",
        "expect.channels.c9: unknown channel label `c9`: no step opens it (labels: c1)",
    );
    refused_at(
        "expect:\n  wal:\n    c1: {contains: [{sender: dave}]}\n",
        "10:30",
        "expect.wal.c1.contains[0].sender: unknown agent `dave` (agents: alice, bob)",
    );
    refused_at(
        "expect:\n  agents:\n    carol: {model_turns: 1}\n",
        "10:5",
        "expect.agents.carol: unknown agent `carol` (agents: alice, bob)",
    );
    refused_at(
        "expect:\n  any_of:\n    - agents: {bob: {handled: 1}}\n    - wal: {d2: {}}\n",
        "11:13",
        "expect.any_of[1].wal.d2: unknown channel label `d2`",
    );
    refused_at(
        "expect:\n  channels:\n    c1: {state: done}\n",
        "10:17",
        "expect.channels.c1.state: unknown state `done`; expected one of: pending, active, closed, expired",
    );
    refused_at(
        "expect:\n  agents:\n    bob: {turns: 1}\n",
        "10:11",
        "expect.agents.bob: unknown key `turns`; expected one of: model_turns, handled, inbox, any_of",
    );
    refused_at(
        "expect:\n  agents:\n    bob: {handled: {min: 3, max: 1}}\n",
        "10:20",
        "expect.agents.bob.handled: min 3 is above max 1",
    );
    refused_at(
        "expect:\n  wal:\n    c1: {contains: [{text: \"(\"}]}\n",
        "10:28",
        "expect.wal.c1.contains[0].text: not a regex",
    );
    refused_at(
        "expect:\n  wal:\n    c1: {not_contains: [{count: 1}]}\n",
        "10:26",
        "unknown key `count`",
    );
}
