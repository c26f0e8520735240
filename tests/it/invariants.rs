//! The invariant checkers catch a broken hub: behind each test-only bug switch
//! (`Bugs`, `--inject-bug`), a scenario that passes on the real hub breaks the invariant the
//! defect is about, and the failure's repro line, run as printed, shows it again.

use crate::support::root;
use hubsim::hub::Bugs;
use hubsim::sim::scenario::{Scenario, SeedRange};
use hubsim::sim::sweep::{self, Repro};
use std::path::PathBuf;
use std::process::Command;

/// (bug switch, the violation kind it must cause).
const CASES: [(&str, &str); 3] = [
    ("late_expiry", "ttl/late"),
    ("drop_dispatch", "delivery/missing"),
    (
        "closed_consulting_accepts",
        "auto_close/accepted_after_close",
    ),
];

fn file(bug: &str) -> PathBuf {
    PathBuf::from(format!("tests/data/bugs/{bug}.yaml"))
}

/// The failures of a sweep of `bug`'s scenario with the switch on: (what, repro line).
fn sweep_with(bug: &str) -> Vec<(String, String)> {
    let path = file(bug);
    let scenario = Scenario::load(&root().join(&path)).expect("loads");
    let mut bugs = Bugs::default();
    bugs.enable(bug).expect("a known switch");
    let repro = Repro {
        file: path,
        bugs: vec![bug.to_string()],
        backend: hubsim::sim::Backend::Events,
    };
    let tally = sweep::sweep(&scenario, SeedRange { start: 0, end: 3 }, bugs, &repro);
    tally
        .failures
        .into_iter()
        .map(|f| (f.what, f.repro))
        .collect()
}

#[test]
fn each_bug_switch_breaks_its_invariant_and_only_with_the_switch_on() {
    for (bug, kind) in CASES {
        let path = file(bug);
        let scenario = Scenario::load(&root().join(&path)).expect("loads");
        let clean = sweep::sweep(
            &scenario,
            SeedRange { start: 0, end: 3 },
            Bugs::default(),
            &Repro {
                file: path.clone(),
                bugs: Vec::new(),
                backend: hubsim::sim::Backend::Events,
            },
        );
        assert!(
            clean.failures.is_empty(),
            "{bug}: the scenario fails on a correct hub: {:?}",
            clean.failures
        );
        let broken = sweep_with(bug);
        assert!(
            broken.iter().any(|(what, _)| what.starts_with(kind)),
            "{bug}: expected a {kind} violation, got {broken:?}"
        );
        for (what, repro) in &broken {
            assert!(
                repro.starts_with(&format!("hubsim run {} --seed ", path.display()))
                    && repro.contains(&format!("--inject-bug {bug}"))
                    && repro.contains(&format!("# hubsim {}", env!("CARGO_PKG_VERSION"))),
                "{bug}: `{what}` has no usable repro line: {repro}"
            );
        }
    }
}

/// The repro line `hubsim check` prints, as a command to run.
fn repro_command(stderr: &str, bug: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("repro: "))
        .unwrap_or_else(|| panic!("{bug}: no repro line in:\n{stderr}"));
    let command = line.split('#').next().unwrap_or_default();
    command.split_whitespace().map(str::to_string).collect()
}

#[test]
fn check_prints_a_repro_line_that_reproduces_the_violation() {
    let hubsim = env!("CARGO_BIN_EXE_hubsim");
    for (bug, kind) in CASES {
        let path = file(bug);
        let clean = Command::new(hubsim)
            .current_dir(root())
            .args(["check", &path.display().to_string(), "--jobs", "1"])
            .output()
            .expect("hubsim runs");
        assert!(clean.status.success(), "{bug}: fails without the bug");
        let output = Command::new(hubsim)
            .current_dir(root())
            .args(["check", &path.display().to_string(), "--inject-bug", bug])
            .output()
            .expect("hubsim runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{bug}: {stderr}");
        assert!(
            stderr.contains(&format!("FAIL {bug} (seed 0): {kind}")),
            "{stderr}"
        );
        let command = repro_command(&stderr, bug);
        assert_eq!(command[0], "hubsim", "{bug}: {command:?}");
        let again = Command::new(hubsim)
            .current_dir(root())
            .args(&command[1..])
            .output()
            .expect("hubsim runs");
        let again_stderr = String::from_utf8_lossy(&again.stderr);
        assert_eq!(again.status.code(), Some(1), "{bug}: {again_stderr}");
        assert!(
            again_stderr.contains(&format!("VIOLATION {kind}")),
            "{bug}: the repro line did not show {kind}:\n{again_stderr}"
        );
    }
}

#[test]
fn each_bug_switch_is_caught_on_turmoil_and_its_repro_line_replays_there() {
    let hubsim = env!("CARGO_BIN_EXE_hubsim");
    for (bug, kind) in CASES {
        let path = file(bug).display().to_string();
        let clean = Command::new(hubsim)
            .current_dir(root())
            .args([
                "check",
                &path,
                "--net",
                "turmoil",
                "--tick-ms",
                "10",
                "--seeds",
                "1",
            ])
            .output()
            .expect("hubsim runs");
        assert!(
            clean.status.success(),
            "{bug}: fails on turmoil without the bug:\n{}",
            String::from_utf8_lossy(&clean.stderr)
        );
        let output = Command::new(hubsim)
            .current_dir(root())
            .args([
                "check",
                &path,
                "--net",
                "turmoil",
                "--tick-ms",
                "10",
                "--seeds",
                "1",
            ])
            .args(["--inject-bug", bug])
            .output()
            .expect("hubsim runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{bug}: {stderr}");
        assert!(
            stderr.contains(&format!("FAIL {bug} (seed 0): {kind}")),
            "{stderr}"
        );
        let command = repro_command(&stderr, bug);
        assert!(
            command
                .windows(4)
                .any(|w| w == ["--net", "turmoil", "--tick-ms", "10"]),
            "{bug}: the repro line does not name turmoil: {command:?}"
        );
        let again = Command::new(hubsim)
            .current_dir(root())
            .args(&command[1..])
            .output()
            .expect("hubsim runs");
        let again_stderr = String::from_utf8_lossy(&again.stderr);
        assert!(
            again_stderr.contains(&format!("VIOLATION {kind}")),
            "{bug}: the turmoil repro line did not show {kind}:\n{again_stderr}"
        );
    }
}
