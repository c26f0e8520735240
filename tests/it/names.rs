//! Every message hubsim prints names ids as the trace does (`<agent:bob>`, `<channel:c1>`,
//! `<env:c1#2>`): `run`, `check` (and its JSON and JUnit reports), `fuzz` (and the regression
//! files it writes) and `shrink` (and the file it writes), on the bug switches' scenarios, where
//! there is something to report. A determinism failure names the first divergent event of the
//! two runs' event logs.

use crate::support::{root, sim_path};
use hubsim::sim::scenario::Scenario;
use hubsim::sim::sweep;
use hubsim::sim::{Backend, RunOptions};
use std::process::{Command, Output};

/// The bug switches, each with its scenario in `tests/data/bugs/`.
const BUGS: [&str; 3] = ["late_expiry", "drop_dispatch", "closed_consulting_accepts"];

/// Whether `text` holds 32 hex digits in a row: a raw id.
fn has_raw_id(text: &str) -> bool {
    let mut run = 0;
    for byte in text.bytes() {
        run = if byte.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 32 {
            return true;
        }
    }
    false
}

/// Fails on the first line of `text` (from `what`) that holds a raw id.
#[track_caller]
fn assert_no_raw_id(what: &str, text: &str) {
    if let Some(line) = text.lines().find(|line| has_raw_id(line)) {
        panic!("{what}: a raw id in `{line}`\n{text}");
    }
}

fn hubsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("hubsim runs")
}

/// stdout and stderr of a run, checked for raw ids; returns stderr.
#[track_caller]
fn checked(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_no_raw_id(&format!("{what} (stdout)"), &stdout);
    assert_no_raw_id(&format!("{what} (stderr)"), &stderr);
    format!("{stdout}{stderr}")
}

fn bug_file(bug: &str) -> String {
    format!("tests/data/bugs/{bug}.yaml")
}

#[test]
fn the_scan_finds_raw_ids() {
    assert!(has_raw_id("channel 00000000000000000000000000000005 is"));
    assert!(has_raw_id("x0000000000000000000000000000000Ay"));
    assert!(!has_raw_id("channel <channel:c1> at <T+5.007s>"));
    assert!(!has_raw_id(&"0".repeat(31)));
}

#[test]
fn run_and_check_print_names_never_raw_ids() {
    // `closed_consulting_accepts` also prints a remote-mode difference.
    for bug in BUGS {
        let file = bug_file(bug);
        let output = hubsim(&["run", &file, "--inject-bug", bug]);
        let text = checked(&format!("run {bug}"), &output);
        assert_eq!(output.status.code(), Some(1), "{bug}: {text}");
        let violation = text
            .lines()
            .find(|line| line.contains("VIOLATION "))
            .unwrap_or_else(|| panic!("{bug}: no violation line in:\n{text}"));
        assert!(
            violation.contains("<channel:") || violation.contains("<agent:"),
            "{bug}: {violation}"
        );
    }
    let dir = std::env::temp_dir().join(format!("hubsim-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let files: Vec<String> = BUGS.iter().map(|bug| bug_file(bug)).collect();
    for format in ["json", "junit"] {
        let report = dir.join(format!("report.{format}"));
        let mut args: Vec<&str> = vec!["check"];
        args.extend(files.iter().map(String::as_str));
        for bug in BUGS {
            args.extend(["--inject-bug", bug]);
        }
        let report_arg = report.display().to_string();
        args.extend(["--report", format, &report_arg]);
        let output = hubsim(&args);
        let text = checked(&format!("check --report {format}"), &output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        let fail = text
            .lines()
            .find(|line| line.starts_with("FAIL late_expiry (seed 0): ttl/late"))
            .unwrap_or_else(|| panic!("no ttl/late failure in:\n{text}"));
        assert!(
            fail.contains("channel <channel:c1> is still active"),
            "{fail}"
        );
        let written = std::fs::read_to_string(&report).expect("report written");
        assert_no_raw_id(&format!("the {format} report"), &written);
        // (escaped in XML)
        assert!(written.contains("channel:c1"), "{written}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fuzz_and_shrink_print_and_write_names_never_raw_ids() {
    let dir = std::env::temp_dir().join(format!("hubsim-names-fuzz-{}", std::process::id()));
    let out = dir.display().to_string();
    let output = hubsim(&[
        "fuzz",
        "--seeds",
        "5",
        "--jobs",
        "1",
        "--inject-bug",
        "drop_dispatch",
        "--out",
        &out,
    ]);
    let text = checked("fuzz", &output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "an unexplained finding: {text}"
    );
    assert!(
        text.lines()
            .any(|line| line.trim_start().starts_with("delivery/missing at")
                && line.contains("<agent:")),
        "{text}"
    );
    let mut written = 0;
    for entry in std::fs::read_dir(&dir).expect("findings written") {
        let path = entry.expect("an entry").path();
        let scenario = std::fs::read_to_string(&path).expect("readable");
        assert_no_raw_id(&path.display().to_string(), &scenario);
        written += 1;
    }
    assert!(written > 0, "fuzz wrote no regression file");

    let shrunk = dir.join("shrunk.yaml");
    let shrunk_arg = shrunk.display().to_string();
    for bug in BUGS {
        let output = hubsim(&[
            "shrink",
            &bug_file(bug),
            "--inject-bug",
            bug,
            "--out",
            &shrunk_arg,
        ]);
        let text = checked(&format!("shrink {bug}"), &output);
        assert!(output.status.success(), "{bug}: {text}");
        let scenario = std::fs::read_to_string(&shrunk).expect("written");
        assert_no_raw_id(&format!("the file shrink {bug} wrote"), &scenario);
        let description = scenario
            .lines()
            .find(|line| line.starts_with("description:"))
            .unwrap_or_else(|| panic!("{bug}: no description in\n{scenario}"));
        assert!(
            description.contains("<channel:") || description.contains("<agent:"),
            "{bug}: {description}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_divergence_names_the_first_divergent_event_of_the_two_logs() {
    // Two seeds of a scenario with random latencies stand in for two runs of one seed that
    // diverge: their event logs part at some event, which is named with the trace's names.
    let scenario = Scenario::load(&sim_path("net_chaos_discussion")).expect("loads");
    let seed = |seed| RunOptions {
        seed,
        ..RunOptions::default()
    };
    let (line, first, second) =
        sweep::event_divergence(&scenario, &seed(1), &seed(2)).expect("two seeds differ");
    assert!(line > 1, "the logs start alike (registration): line {line}");
    assert_ne!(first, second);
    assert_no_raw_id("the divergent events", &format!("{first}\n{second}"));
    // One seed run twice agrees with itself, on the network and in process.
    assert_eq!(sweep::event_divergence(&scenario, &seed(1), &seed(1)), None);
    let reference = Scenario::load(&sim_path("consulting_happy")).expect("loads");
    let in_process = RunOptions {
        backend: Backend::InProcess,
        ..RunOptions::default()
    };
    assert_eq!(
        sweep::event_divergence(&reference, &in_process, &in_process),
        None
    );
}
