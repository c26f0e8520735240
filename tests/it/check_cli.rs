//! `hubsim check` as users run it: the report does not depend on the thread count, shards
//! split the scenarios without overlap, an unreached probe fails the sweep, and the chaos
//! profile differs from seed to seed but not from run to run.

use crate::support::{root, sim_path};
use hubsim::hub::Bugs;
use hubsim::sim::events;
use hubsim::sim::scenario::{Scenario, SeedRange};
use hubsim::sim::sweep::{self, Repro};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

/// Runs `hubsim check ARGS --report json FILE` and returns the report without its timings.
fn report(args: &[&str], tag: &str) -> Value {
    let file = std::env::temp_dir().join(format!("hubsim-check-{}-{tag}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .arg("check")
        .args(args)
        .args(["--report", "json", &file.display().to_string()])
        .output()
        .expect("hubsim runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("report written");
    let _ = std::fs::remove_file(&file);
    let mut report: Value = serde_json::from_str(&text).expect("JSON");
    report["wall_seconds"] = Value::Null;
    for scenario in report["scenarios"].as_array_mut().expect("scenarios") {
        scenario["seconds"] = Value::Null;
    }
    report
}

#[test]
fn the_report_does_not_depend_on_the_thread_count() {
    let paths = [
        "sims/net_chaos_discussion.yaml",
        "sims/net_crash_workflow.yaml",
        "sims/consulting_happy.yaml",
    ];
    let mut args: Vec<&str> = paths.to_vec();
    args.extend(["--seeds", "40"]);
    let one = report(&[&args[..], &["--jobs", "1"]].concat(), "jobs1");
    let three = report(&[&args[..], &["--jobs", "3"]].concat(), "jobs3");
    assert_eq!(one, three);
    assert_eq!(one["scenarios"][0]["runs"], 40);
}

#[test]
fn shards_split_the_scenarios_without_overlap() {
    let names = |report: &Value| -> BTreeSet<String> {
        report["scenarios"]
            .as_array()
            .expect("scenarios")
            .iter()
            .map(|s| s["name"].as_str().expect("name").to_string())
            .collect()
    };
    let first = names(&report(&["--shard", "1/2", "--seeds", "1"], "shard1"));
    let second = names(&report(&["--shard", "2/2", "--seeds", "1"], "shard2"));
    let all = names(&report(&["--seeds", "1"], "all"));
    assert!(first.is_disjoint(&second));
    assert_eq!(first.union(&second).cloned().collect::<BTreeSet<_>>(), all);
    assert_eq!(
        all.len(),
        crate::support::scenario_names("").len()
            + crate::support::scenario_names("regressions").len()
    );
}

#[test]
fn a_probe_no_seed_reaches_fails_the_sweep_with_a_repro() {
    let path = sim_path("net_inbox_overflow");
    let mut scenario = Scenario::load(&path).expect("loads");
    let repro = Repro {
        file: "sims/net_inbox_overflow.yaml".into(),
        bugs: Vec::new(),
        backend: hubsim::sim::Backend::Events,
    };
    let seeds = SeedRange { start: 0, end: 5 };
    let mut reached = sweep::sweep(&scenario, seeds, Bugs::default(), &repro);
    reached.finish(&scenario, seeds, &repro);
    assert!(reached.failures.is_empty(), "{:?}", reached.failures);
    // The same sweep told to expect a crash it never has.
    scenario.sweep.expect_reached.push("hub_crash".into());
    let mut unreached = sweep::sweep(&scenario, seeds, Bugs::default(), &repro);
    unreached.finish(&scenario, seeds, &repro);
    assert_eq!(unreached.failures.len(), 1, "{:?}", unreached.failures);
    let failure = &unreached.failures[0];
    assert_eq!(failure.what, "no seed in 0..5 reached `hub_crash`");
    assert!(failure
        .repro
        .starts_with("hubsim check sims/net_inbox_overflow.yaml --seeds 0..5"));
}

#[test]
fn the_chaos_profile_varies_by_seed_and_replays_by_seed() {
    let scenario = Scenario::load(&sim_path("net_chaos_discussion")).expect("loads");
    let mut profiles = BTreeSet::new();
    for seed in 0..40 {
        let stats = events::run_seed(&scenario, seed).stats;
        assert_eq!(
            stats,
            events::run_seed(&scenario, seed).stats,
            "seed {seed}"
        );
        profiles.insert((stats.crashes > 0, stats.reconnects > 0, stats.lost > 0));
    }
    assert!(
        profiles.len() >= 3,
        "40 seeds drew only these (crash, reconnect, loss) profiles: {profiles:?}"
    );
}

#[test]
fn a_runaway_run_is_stopped_and_reported() {
    // Past the parser (which refuses `reconnect` under 1 ms): a client that retries its
    // re-attach at once, forever, while its link is cut.
    let text = "network:\n  keepalive: 1s\n  faults:\n    - {at: 1s, partition: bob}\n\
                agents:\n  - name: alice\n  - name: bob\n\
                steps:\n  - {op: open, as: c1, by: alice, type: conversation, target: bob}\n\
                \x20 - {op: wait, seconds: 5}\n";
    let mut scenario = Scenario::parse(text, "runaway").expect("parses");
    scenario.network.reconnect = Some(0);
    scenario.network.events_max = 10_000;
    let run = events::run_seed(&scenario, 0);
    let kinds: Vec<&str> = run.violations.iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&"settle/runaway"), "{kinds:?}");
    let refused = Scenario::parse(&text.replace("keepalive: 1s", "reconnect: 0"), "x");
    assert!(
        refused.is_err_and(|e| e.contains("network.reconnect: at least 1ms")),
        "a zero reconnect is refused"
    );
}

#[test]
fn a_failing_sweep_prints_its_failures_by_kind_and_writes_every_report_asked_for() {
    let dir = std::env::temp_dir().join(format!("hubsim-kinds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp folder");
    // A scenario that does not load: a failure of no seed, of kind `load`.
    std::fs::write(
        dir.join("broken.yaml"),
        "agents: [{name: alice}]\nsteps: 3\n",
    )
    .expect("written");
    let (json, junit) = (dir.join("report.json"), dir.join("report.xml"));
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .args(["check", "tests/data/bugs/drop_dispatch.yaml"])
        .arg(dir.join("broken.yaml"))
        .args([
            "--inject-bug",
            "drop_dispatch",
            "--seeds",
            "6",
            "--jobs",
            "1",
        ])
        .args(["--max-failures", "2", "--report", "json"])
        .arg(&json)
        .args(["--report", "junit"])
        .arg(&junit)
        .output()
        .expect("hubsim runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // --max-failures 2: two failures of the six printed, then the count of the rest.
    let printed = stderr
        .lines()
        .filter(|line| line.starts_with("FAIL drop_dispatch (seed"))
        .count();
    assert_eq!(printed, 2, "{stderr}");
    assert!(
        stderr.contains("FAIL drop_dispatch: ... and 4 more failures"),
        "{stderr}"
    );
    // The table by kind, after the failures: every failure counted, the first seeds named.
    let table: Vec<Vec<&str>> = stderr
        .lines()
        .skip_while(|line| !line.starts_with("scenario "))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        table.first().map(|header| header.join(" ")),
        Some("scenario kind failures first seeds".to_string()),
        "{stderr}"
    );
    assert_eq!(
        table[1].join(" "),
        "drop_dispatch delivery/missing 6 0, 1, 2, …",
        "{stderr}"
    );
    assert_eq!(table[2].join(" "), "broken load 1 -", "{stderr}");
    // Both reports: --report may be repeated.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).expect("JSON");
    let xml = std::fs::read_to_string(&junit).expect("JUnit written");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(xml.contains("<testcase classname=\"sims\" name=\"drop_dispatch\""));
    let failures = |idx: usize| report["scenarios"][idx]["failures"].as_array().cloned();
    let swept = failures(0).expect("failures");
    assert_eq!(swept.len(), 6);
    for (seed, failure) in swept.iter().enumerate() {
        assert_eq!(failure["kind"], "delivery/missing", "{failure}");
        assert_eq!(failure["seed"], seed, "{failure}");
    }
    let broken = failures(1).expect("failures");
    assert_eq!(broken[0]["kind"], "load");
    assert_eq!(broken[0]["seed"], Value::Null);
}

#[test]
fn version_and_repro_lines_say_how_to_get_hubsim_on_path() {
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .arg("--version")
        .output()
        .expect("hubsim runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("hubsim {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert!(
        lines
            .next()
            .is_some_and(|line| line.contains("cargo install --path .")),
        "{stdout}"
    );
    let line = Repro::new("sims/net_standard.yaml").seed(4);
    assert_eq!(
        line,
        format!(
            "hubsim run sims/net_standard.yaml --seed 4   # hubsim {}; cargo install --path . \
             (in its repository) puts it on PATH",
            env!("CARGO_PKG_VERSION")
        )
    );
    // The README's set-up names the same step.
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    assert!(readme.contains("cargo install --path ."));
}

/// The resident memory of a running process, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_seed_range_of_any_size_starts_at_once_in_bounded_memory() {
    // 2^40 seeds under a 4 GB address-space cap: the sweep runs them one chunk at a time
    // instead of listing them first (which needed ~10 bytes a seed and aborted).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000; exec \"$0\" check --jobs 2 --seeds 0..1099511627776 \"$1\"")
        .arg(env!("CARGO_BIN_EXE_hubsim"))
        .arg(sim_path("consulting_happy"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let running = child.try_wait().expect("waits").is_none();
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let output = child.wait_with_output().expect("ends");
    assert!(
        running,
        "the sweep ended early: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    if let Some(rss) = rss {
        assert!(rss < 256 * 1024, "{rss} KiB resident after 3 s");
    }
}

#[test]
fn hub_timers_count_toward_the_event_budget() {
    // A TTL sweep every millisecond during an hour's wait: each sweep is an event of its own
    // (besides the moment it falls on), so the run is stopped after half as many moments.
    let text = "network:\n  ttl_sweep: 1ms\n  expectation_sweep: 0\n\
                agents:\n  - name: alice\n  - name: bob\n\
                steps:\n  - {op: wait, seconds: 3600}\n";
    let mut scenario = Scenario::parse(text, "sweepy").expect("parses");
    scenario.network.events_max = 20_000;
    let run = events::run_seed(&scenario, 0);
    let runaway = run
        .violations
        .iter()
        .find(|v| v.kind == "settle/runaway")
        .expect("stopped as a runaway");
    assert!(
        runaway.at <= 10_500_000,
        "stopped at {} µs: timers were not counted",
        runaway.at
    );
}
