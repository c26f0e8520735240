//! The text timeline as a person reads it: snapshots of a partition, a crash and a known
//! delivery hole (`snapshots/timelines/`), its filters, and the violation line pointing back at
//! the events it concerns.

use crate::support::{root, sim_path};
use hubsim::sim::scenario::Scenario;
use hubsim::sim::timeline::{Entry, Filter, Kind, Timeline};
use hubsim::sim::{Backend, LogLevel, RunOptions};
use std::process::Command;

fn timeline(name: &str, seed: u64, log: LogLevel) -> Timeline {
    let scenario = Scenario::load(&sim_path(name)).expect("loads");
    let options = RunOptions {
        backend: Backend::Events,
        seed,
        log,
        ..RunOptions::default()
    };
    hubsim::sim::run(&scenario, &options)
        .expect("runs")
        .timeline
        .expect("a log was kept")
}

fn snapshot(name: &str, text: &str, command: &str) {
    insta::with_settings!({
        snapshot_path => root().join("snapshots").join("timelines"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => command.to_string(),
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// 32 hex digits in a row: a raw id.
fn raw_id(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, b) in bytes.iter().enumerate() {
        run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run == 32 {
            return Some(&text[i + 1 - 32..(i + 1 + 8).min(text.len())]);
        }
    }
    None
}

#[test]
fn a_partition_shows_the_cut_the_dropped_connection_and_the_re_attach() {
    let seen = timeline("net_partition_discussion", 0, LogLevel::Events);
    let text = seen.render(&Filter::default());
    for expected in [
        "network          fault: partition bob",
        "bob              connection closed (keepalive)",
        "bob              re-attach: hello replaying past the cursor (connection 2)",
        "network          fault: repair bob",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(seen
        .bands
        .iter()
        .any(|b| b.kind == "partition" && b.to.is_some()));
    assert_eq!(raw_id(&text), None);
    snapshot(
        "net_partition_discussion",
        &text,
        "hubsim run sims/net_partition_discussion.yaml --seed 0 --timeline (frames left out)",
    );
}

#[test]
fn a_crash_shows_the_sync_the_lost_writes_and_the_restart() {
    let seen = timeline("net_crash_workflow", 0, LogLevel::Events);
    let text = seen.render(&Filter::default());
    for expected in [
        "hub              store synced",
        "hub              crashed: writes since the last sync are lost",
        "connection closed (hub crash)",
        "hub              restarted from its store",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    assert!(seen.bands.iter().any(|b| b.kind == "crash"));
    assert_eq!(raw_id(&text), None);
    snapshot(
        "net_crash_workflow",
        &text,
        "hubsim run sims/net_crash_workflow.yaml --seed 0 --timeline (frames left out)",
    );
}

#[test]
fn the_cursor_skip_violation_points_at_the_receipt_that_moved_the_cursor() {
    let seen = timeline("net_hole_cursor_skip", 0, LogLevel::Frames);
    let text = seen.render(&Filter::default());
    let violation = seen
        .entries
        .iter()
        .find(|e| e.kind == Kind::Violation)
        .expect("the hole shows");
    assert!(violation
        .what
        .starts_with("VIOLATION delivery/cursor_skipped: bob"));
    let concerned: Vec<&str> = violation
        .refs
        .iter()
        .map(|&n| seen.entries[n - 1].what.as_str())
        .collect();
    // The skipped envelope's delivery and turn, and the later envelope's receipt.
    for expected in [
        "received <env:c1#3> ag2.msg.text (connection 1)",
        "model turn for <env:c1#3> started",
        "sent receipt <env:c1#4> ack",
    ] {
        assert!(
            concerned.contains(&expected),
            "the violation does not point at `{expected}`: {concerned:#?}"
        );
    }
    assert!(violation.refs.iter().all(|&n| n < violation.n));
    assert_eq!(raw_id(&text), None);
    snapshot(
        "net_hole_cursor_skip",
        &text,
        "hubsim run sims/net_hole_cursor_skip.yaml --seed 0 --timeline",
    );
}

#[test]
fn filters_keep_an_agent_a_channel_or_a_window_and_always_the_violations() {
    let seen = timeline("net_hole_cursor_skip", 0, LogLevel::Frames);
    let all = seen.entries.len();
    fn only<'a>(seen: &'a Timeline, filter: &Filter) -> Vec<&'a Entry> {
        seen.filtered(filter).collect()
    }
    let alice = only(
        &seen,
        &Filter {
            agents: vec!["alice".into()],
            ..Filter::default()
        },
    );
    assert!(alice.len() < all && !alice.is_empty());
    assert!(alice
        .iter()
        .all(|e| e.kind == Kind::Violation || e.agents.contains(&0)));
    assert!(alice.iter().any(|e| e.kind == Kind::Violation));
    let window = only(
        &seen,
        &Filter {
            from: Some(2_000_000),
            to: Some(4_000_000),
            ..Filter::default()
        },
    );
    assert!(window
        .iter()
        .all(|e| e.kind == Kind::Violation || (2_000_000..=4_000_000).contains(&e.at)));
    assert!(window.iter().any(|e| e.what == "fault: disconnect bob"));
    let channel = only(
        &seen,
        &Filter {
            channels: vec!["c1".into()],
            ..Filter::default()
        },
    );
    assert!(channel.len() < all);
    assert!(channel
        .iter()
        .any(|e| e.what == "delivered notify <env:c1#3> ag2.msg.text"));
    assert!(channel
        .iter()
        .all(|e| e.kind == Kind::Violation || e.channels.contains(&"c1".to_string())));
    let unknown = Filter {
        agents: vec!["carol".into()],
        ..Filter::default()
    };
    let refused = seen.check_filter(&unknown).expect_err("no carol");
    assert!(refused.contains("alice, bob"), "{refused}");
}

#[test]
fn hubsim_run_prints_the_filtered_timeline() {
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .args([
            "run",
            "sims/net_hole_cursor_skip.yaml",
            "--timeline",
            "--only",
            "bob",
            "--from",
            "2s",
            "--to",
            "4s",
        ])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("timeline of net_hole_cursor_skip (seed 0, events backend)"));
    assert!(stdout.contains("filter: only bob, from 2.0s, to 4.0s"));
    assert!(stdout.contains("bob -> hub       sent hello replaying past the hub's cursor"));
    assert!(stdout.contains("VIOLATION delivery/cursor_skipped"));
    assert!(!stdout.contains("\"scenario\""), "the trace is not printed");
    let refused = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .current_dir(root())
        .args(["run", "sims/net_hole_cursor_skip.yaml", "--only", "bob"])
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("add --timeline"));
}
