//! The fuzzer finds a bug put into the hub on purpose and shrinks it to a small scenario that
//! replays it from its text alone; `hubsim fuzz` writes it where `hubsim run` reproduces it.

use crate::support::root;
use hubsim::hub::Bugs;
use hubsim::sim::fuzz::{self, generate, shrink, Findings};
use std::process::Command;

/// Cases the fuzzer may take to find the injected bug.
const CASES: u64 = 200;

#[test]
fn the_fuzzer_finds_and_shrinks_a_dropped_dispatch() {
    let mut bugs = Bugs::default();
    bugs.enable("drop_dispatch").expect("a switch");
    let mut findings = Findings::default();
    for seed in 0..CASES {
        findings.run_case(seed, bugs);
    }
    let finding = findings
        .by_kind
        .values()
        .find(|f| f.kind.starts_with("delivery/missing"))
        .unwrap_or_else(|| panic!("not found in {CASES} cases: {:?}", findings.by_kind.keys()));
    assert!(
        fuzz::classify(&finding.kind).is_none(),
        "not one of ag2's holes"
    );
    let tree = generate::scenario(finding.seed);
    let shrunk = shrink::shrink(&tree, &mut |candidate| {
        fuzz::still_fails(candidate, 0, bugs, &finding.kind)
    });
    let size = shrink::size(&shrunk.scenario);
    assert!(size <= 10, "shrunk only to {size} steps and faults");
    assert!(size <= shrink::size(&tree));
    assert!(fuzz::still_fails(&shrunk.scenario, 0, bugs, &finding.kind));
    // The same scenario on the real hub shows nothing of the kind: the bug is the cause.
    assert!(!fuzz::still_fails(
        &shrunk.scenario,
        0,
        Bugs::default(),
        &finding.kind
    ));
    // Drawn again, a case is the same scenario.
    assert_eq!(generate::scenario(finding.seed), tree);
}

#[test]
fn hubsim_fuzz_writes_a_scenario_that_hubsim_run_reproduces() {
    let hubsim = env!("CARGO_BIN_EXE_hubsim");
    let out = std::env::temp_dir().join(format!("hubsim-fuzz-{}", std::process::id()));
    let output = Command::new(hubsim)
        .current_dir(root())
        .args([
            "fuzz",
            "--seeds",
            "60",
            "--inject-bug",
            "drop_dispatch",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("hubsim runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "an unexplained finding: {stdout}"
    );
    // The repro line under the delivery/missing finding.
    let line = stdout
        .lines()
        .skip_while(|l| !l.starts_with("delivery/missing"))
        .find_map(|l| l.trim().strip_prefix("repro: "))
        .unwrap_or_else(|| panic!("no delivery/missing finding with a repro line: {stdout}"));
    let args: Vec<&str> = line
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(args[..2], ["hubsim", "run"], "{line}");
    let again = Command::new(hubsim)
        .current_dir(root())
        .args(&args[1..])
        .output()
        .expect("hubsim runs");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("VIOLATION delivery/missing"), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn hubsim_shrink_makes_a_chaos_seed_explicit_and_small() {
    // Seed 329 of the chaos scenario shows the cursor-skip hole (README, "ag2's own delivery holes").
    let hubsim = env!("CARGO_BIN_EXE_hubsim");
    let out = std::env::temp_dir().join(format!("hubsim-shrink-{}.yaml", std::process::id()));
    let output = Command::new(hubsim)
        .current_dir(root())
        .args(["shrink", "sims/net_chaos_discussion.yaml", "--seed", "329"])
        // A bare kind: its last part (`delivery/cursor_skipped@discussion` as the fuzzer names it).
        .args(["--kind", "cursor_skipped", "--out"])
        .arg(&out)
        .output()
        .expect("hubsim runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("written");
    let tree: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    assert!(
        tree.get("chaos").is_none(),
        "the chaos faults became timed faults"
    );
    assert!(shrink::size(&tree) <= 10, "{text}");
    let again = Command::new(hubsim)
        .current_dir(root())
        .arg("run")
        .arg(&out)
        .output()
        .expect("hubsim runs");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("known violation delivery/cursor_skipped"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&out);
}

#[test]
fn hubsim_shrink_names_the_failures_when_the_kind_matches_none() {
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .args(["shrink", "sims/net_chaos_discussion.yaml", "--seed", "329"])
        .args(["--kind", "ttl", "--out", "/nonexistent/never-written.yaml"])
        .output()
        .expect("hubsim runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("shows no failure matching `--kind ttl`")
            && stderr.contains("delivery/cursor_skipped@discussion")
            && stderr.contains("delivery, ttl, auto_close"),
        "{stderr}"
    );
}
