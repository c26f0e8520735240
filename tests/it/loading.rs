//! Strict, linear loading: what used to pass or fail only at run time is refused at load time
//! with `file:line:column` and a caret, and loading stays linear in the file's size at any
//! nesting depth (a pre-scan refuses deep nesting before serde_yaml reads the text).

use crate::bad_input::{load_error, refused, TempDir};
use crate::support::root;
use hubsim::sim::scenario::{self, Scenario, NESTING_MAX};
use std::process::Command;

const AGENTS: &str = "agents:\n  - name: alice\n  - name: bob\n";

/// The error for `text` says `message` at `line_column` (`LINE:COLUMN`).
#[track_caller]
fn check(text: &str, line_column: &str, message: &str) -> String {
    let (error, path) = load_error("broken", text);
    let at = format!("--> {path}:{line_column}\n");
    assert!(error.contains(&at), "expected `{at}` in:\n{error}");
    assert!(error.contains(message), "expected `{message}` in:\n{error}");
    error
}

#[test]
fn an_unknown_adapter_type_is_shown_as_rustc_shows_an_error() {
    let text = format!(
        "{AGENTS}steps:\n  - {{op: open, as: c1, by: alice, type: consultng, target: bob}}\n"
    );
    let (error, path) = load_error("adapter", &text);
    assert_eq!(
        error,
        format!(
            "error: unknown adapter type `consultng`; expected one of consulting, conversation, discussion, workflow\n \
             --> {path}:5:41\n  \
             |\n\
             5 |   - {{op: open, as: c1, by: alice, type: consultng, target: bob}}\n  \
             |                                         ^^^^^^^^^"
        )
    );
    // An open that expects the hub's refusal may name any type.
    let text = format!(
        "{AGENTS}steps:\n  - {{op: open, by: alice, type: debate, target: bob, expect_error: NotFoundError}}\n"
    );
    Scenario::parse(&text, "debate").expect("an expected refusal loads");
}

#[test]
fn a_channel_label_must_be_opened_by_an_earlier_step() {
    let text = format!(
        "{AGENTS}steps:\n  - {{op: open, as: c1, by: alice, type: consulting, target: bob}}\n  \
         - {{op: send, channel: c9, by: alice, text: hi}}\n"
    );
    check(
        &text,
        "6:25",
        "channel `c9` is used before any step opens it (no earlier `open` has `as: c9`; opened so far: c1)",
    );
    // Used before the open that names it.
    let text = format!(
        "{AGENTS}steps:\n  - {{op: close, channel: c1, by: alice}}\n  \
         - {{op: open, as: c1, by: alice, type: consulting, target: bob}}\n"
    );
    check(&text, "5:26", "opened so far: none");
    // `chN` names an open without `as:`; `unknown_channel: true` asks for no channel at all.
    let text = format!(
        "{AGENTS}steps:\n  - {{op: open, by: alice, type: consulting, target: bob}}\n  \
         - {{op: send, channel: ch1, by: alice, text: hi}}\n  \
         - {{op: send, channel: nowhere, unknown_channel: true, by: alice, text: hi, expect_error: NotFoundError}}\n"
    );
    Scenario::parse(&text, "labels").expect("loads");
}

#[test]
fn the_name_of_a_kept_scenario_is_its_file_name() {
    let dir = TempDir::new("loading-name");
    let sims = dir.0.join("sims").join("regressions");
    std::fs::create_dir_all(&sims).expect("sims/regressions");
    let path = sims.join("lost_ack.yaml");
    std::fs::write(&path, format!("name: lost_acks\n{AGENTS}steps: []\n")).expect("write");
    let error = refused(&path);
    assert!(
        error.contains(&format!("--> {}:1:7\n", path.display())),
        "{error}"
    );
    assert!(
        error.contains("scenario name `lost_acks` differs from its file name `lost_ack`"),
        "{error}"
    );
    // Without `name:` the file name is the name; outside `sims/` any name goes.
    std::fs::write(&path, format!("{AGENTS}steps: []\n")).expect("write");
    assert_eq!(Scenario::load(&path).expect("loads").name, "lost_ack");
    let elsewhere = dir.0.join("copy.yaml");
    std::fs::write(&elsewhere, format!("name: lost_acks\n{AGENTS}steps: []\n")).expect("write");
    assert_eq!(Scenario::load(&elsewhere).expect("loads").name, "lost_acks");
}

#[test]
fn an_empty_or_comment_only_scenario_is_refused() {
    for text in [
        "",
        "\n\n",
        "# nothing yet\n\n# really\n",
        "---\n",
        "~\n",
        "{}\n",
    ] {
        check(text, "1:1", "empty scenario");
    }
    check(
        "name: x\ndescription: still empty\n",
        "1:1",
        "empty scenario: no `agents` and no `steps`",
    );
}

#[test]
fn non_utf8_input_is_located_by_line_and_column() {
    let dir = TempDir::new("loading-utf8");
    let path = dir.0.join("latin1.yaml");
    std::fs::write(&path, b"agents: []\ndescription: caf\xe9 au lait\n").expect("write");
    let error = refused(&path);
    assert!(
        error.contains(&format!("--> {}:2:17\n", path.display())),
        "{error}"
    );
    assert!(error.contains("not UTF-8: byte 0xe9"), "{error}");
}

#[test]
fn a_second_document_is_refused_where_it_starts() {
    check(
        &format!("{AGENTS}steps: []\n---\nagents: []\n"),
        "5:1",
        "a second YAML document starts here",
    );
    check(
        &format!("---\n{AGENTS}...\nsteps: []\n"),
        "6:1",
        "a second YAML document starts here",
    );
}

#[test]
fn an_alias_bomb_is_refused_at_its_first_alias() {
    let mut text = format!("{AGENTS}steps:\n  - op: checkpoint\n    agent: alice\n    task: t\n    state:\n      a: &a [x, x, x, x, x, x, x, x, x]\n");
    let mut previous = 'a';
    for name in 'b'..='i' {
        let refs = vec![format!("*{previous}"); 9].join(", ");
        text.push_str(&format!("      {name}: &{name} [{refs}]\n"));
        previous = name;
    }
    check(&text, "10:14", "aliases expand to more than 100 times");
}

/// `[` nested `depth` deep in `description:`.
fn nested(depth: usize) -> String {
    format!("description: {}\n{AGENTS}steps: []\n", "[".repeat(depth))
}

#[test]
fn deep_nesting_is_refused_before_parsing_whatever_the_depth() {
    // The pre-scan stops at the first level too deep, so the refusal is the same, at the
    // same place, for any depth, and serde_yaml (quadratic in the depth) never sees the text.
    let column = "description: ".len() + NESTING_MAX;
    let mut errors = Vec::new();
    for depth in [10_000, 40_000] {
        let before = scenario::yaml_parses();
        let error = Scenario::parse(&nested(depth), "deep").expect_err("refused");
        assert_eq!(scenario::yaml_parses(), before, "serde_yaml read the text");
        errors.push(error);
    }
    assert_eq!(errors[0], errors[1]);
    assert_eq!(
        errors[0],
        format!("1:{column}: nesting deeper than {NESTING_MAX} levels; a scenario needs a few (refused before parsing)")
    );
    // Indentation counts too.
    let mut text = String::from(
        "agents: []\nsteps:\n  - op: checkpoint\n    agent: a\n    task: t\n    state:\n",
    );
    for level in 0..200 {
        text.push_str(&format!("{}k:\n", "  ".repeat(level + 3)));
    }
    let error = Scenario::parse(&text, "deep").expect_err("refused");
    assert!(error.contains("nesting deeper than"), "{error}");
    // Nesting within the limit is handed to serde_yaml (which allows 128 levels of values).
    let before = scenario::yaml_parses();
    let error = Scenario::parse(&nested(100), "deep").expect_err("not a string");
    assert_eq!(scenario::yaml_parses(), before + 1);
    assert!(error.starts_with("1:14: "), "{error}");
}

/// Runs `hubsim ARGS` in `dir`.
fn hubsim(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("hubsim runs")
}

#[test]
fn check_refuses_an_empty_folder() {
    let dir = TempDir::new("loading-empty");
    let output = hubsim(&dir.0, &["check", "."]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no scenarios in ."), "{stderr}");
}

#[test]
fn check_never_skips_the_reference_comparison_silently() {
    let sim = root().join("sims/consulting_happy.yaml");
    let sim = sim.display().to_string();
    let dir = TempDir::new("loading-reference");
    // A --reference folder that does not exist.
    let output = hubsim(&root(), &["check", &sim, "--reference", "tests/nowhere"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--reference tests/nowhere: no such folder"),
        "{stderr}"
    );
    // From another folder, the default is found above the scenario.
    let report = dir.0.join("report.json").display().to_string();
    let output = hubsim(&dir.0, &["check", &sim, "--report", "json", &report]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(text.contains("\"compared_with_reference\": true"), "{text}");
    // A scenario with no reference folder anywhere above it: the error says what was looked for.
    let copy = dir.0.join("consulting_happy.yaml");
    std::fs::copy(root().join("sims/consulting_happy.yaml"), &copy).expect("copy");
    let output = hubsim(&dir.0, &["check", "consulting_happy.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no folder of reference traces: looked for tests/reference, "),
        "{stderr}"
    );
    assert!(stderr.contains("pass --reference DIR"), "{stderr}");
    // A network-only scenario needs no reference traces: it is swept wherever it lies.
    let copy = dir.0.join("net_first_fault.yaml");
    std::fs::copy(root().join("sims/net_first_fault.yaml"), &copy).expect("copy");
    let output = hubsim(&dir.0, &["check", "net_first_fault.yaml", "--seeds", "3"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_kept_scenario_loads() {
    for folder in ["sims", "sims/regressions"] {
        for entry in std::fs::read_dir(root().join(folder)).expect("folder") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|ext| ext == "yaml") {
                if let Err(error) = Scenario::load(&path) {
                    panic!("{error}");
                }
            }
        }
    }
}
