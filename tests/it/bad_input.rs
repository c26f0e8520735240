//! Bad scenario input gets a clear error (rustc's layout: the message, ` --> file:line:column`,
//! the line with a caret) and never a panic: specific broken files, then thousands of seeded
//! random mutations of the real ones.

use crate::support::{root, Rng};
use hubsim::sim::run_in_process;
use hubsim::sim::scenario::Scenario;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary folder of its own (tests run in parallel), removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static DIRS: AtomicUsize = AtomicUsize::new(0);
        let serial = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hubsim-{tag}-{}-{serial}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `path`, which must be refused; returns the error text, checked to be laid out as
/// rustc's (`error: `, then ` --> ` and the file).
#[track_caller]
pub(crate) fn refused(path: &Path) -> String {
    let error = Scenario::load(path)
        .expect_err("the scenario must be refused")
        .to_string();
    assert!(error.starts_with("error: "), "{error}");
    assert!(
        error.contains(&format!("--> {}", path.display())),
        "error does not name the file: {error}"
    );
    error
}

/// Writes `text` to a temporary scenario file and loads it; returns the error text and the
/// file's path as printed.
#[track_caller]
pub(crate) fn load_error(name: &str, text: &str) -> (String, String) {
    let dir = TempDir::new("bad-input");
    let path = dir.0.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write");
    (refused(&path), path.display().to_string())
}

/// The error for `text` is at `line_column` (`LINE:COLUMN`) and says each of `expected`.
#[track_caller]
fn check_error(text: &str, line_column: &str, expected: &[&str]) {
    let (error, path) = load_error("broken", text);
    let at = format!("--> {path}:{line_column}\n");
    assert!(error.contains(&at), "expected `{at}` in: {error}");
    for part in expected {
        assert!(error.contains(part), "expected `{part}` in: {error}");
    }
}

const AGENTS: &str = "agents:\n  - name: alice\n  - name: bob\n";

#[test]
fn syntax_errors_name_line_and_column() {
    check_error("agents: [\n  - name: x\n", "2:3", &[]);
    check_error("name: x\nsteps:\n  - {op: open, by: alice\n", "4:1", &[]);
}

#[test]
fn unknown_fields_list_the_known_ones() {
    let text = format!("{AGENTS}steps:\n  - {{op: send, chanel: c1, by: alice}}\n");
    check_error(
        &text,
        "5:16",
        &["unknown field `chanel`", "expected one of", "`channel`"],
    );
    check_error(
        "nme: x\n",
        "1:1",
        &["unknown field `nme`", "`name`", "`steps`"],
    );
    check_error(
        "agents:\n  - name: a\n    promt: hi\n",
        "3:5",
        &["unknown field `promt`", "`prompt`"],
    );
    check_error(
        "agents:\n  - name: a\n    rule: {access: {outbound: [b]}}\n",
        "3:21",
        &["unknown field `outbound`", "`outbound_to`"],
    );
}

#[test]
fn op_specific_fields_are_checked_where_the_step_is() {
    let text =
        format!("{AGENTS}steps:\n  - {{op: advance, seconds: 1}}\n  - op: send\n    by: alice\n");
    check_error(&text, "6:5", &["op `send` needs `channel`"]);
    let text = format!("{AGENTS}steps:\n  - {{op: advance, seconds: 1, by: alice}}\n");
    check_error(
        &text,
        "5:31",
        &["op `advance` does not take `by`", "seconds"],
    );
    let text = format!("{AGENTS}steps:\n  - {{op: teleport}}\n");
    check_error(
        &text,
        "5:10",
        &["unknown op `teleport`", "open, send, close"],
    );
    let text = format!("{AGENTS}steps:\n  - {{op: send, channel: c1, by: zed}}\n");
    check_error(
        &text,
        "5:33",
        &["unknown agent `zed`", "agents: alice, bob"],
    );
    let text = format!("{AGENTS}steps:\n  - {{op: open, by: alice, type: consulting}}\n");
    check_error(&text, "5:5", &["op `open` needs `target`"]);
}

#[test]
fn wrong_types_say_what_was_expected() {
    check_error(
        "agents:\n  - name: [a]\n",
        "2:11",
        &["invalid type: sequence, expected a string"],
    );
    let text = format!("{AGENTS}steps:\n  - {{op: advance, seconds: [1]}}\n");
    check_error(&text, "5:28", &["a number or a duration string"]);
    let text = format!(
        "{AGENTS}steps:\n  - {{op: send, channel: c1, by: alice, expect_error: {{match: '('}}}}\n"
    );
    check_error(&text, "5:54", &["expect_error.match"]);
    check_error(
        "agents:\n  - {name: a, replies: [{raise: 'NoSuchError: x'}]}\n",
        "2:25",
        &["not a Python built-in"],
    );
    check_error(
        "agents:\n  - {name: a, handler: loud}\n",
        "2:24",
        &["unknown handler `loud`", "`silent`"],
    );
    check_error(
        "agents:\n  - {name: a}\n  - {name: a}\n",
        "3:12",
        &["agent name `a` is declared twice"],
    );
    check_error(
        "hub: {epoch: yesterday}\n",
        "1:14",
        &["hub.epoch", "ISO-8601"],
    );
}

#[test]
fn network_settings_faults_and_humans_are_checked_where_written() {
    check_error(
        "network: {latency: 20ms..1ms}\nagents: []\n",
        "1:20",
        &["network.latency", "wrong way round"],
    );
    check_error(
        "network: {latency: soon}\nagents: []\n",
        "1:20",
        &["network.latency", "expected a duration"],
    );
    check_error(
        "network: {clock: wall}\nagents: []\n",
        "1:18",
        &["network.clock", "`sim` or `frozen`"],
    );
    check_error(
        "network: {faults: [{at: 1s, crash: bob}]}\nagents: []\n",
        "1:36",
        &["network.faults[0]", "only `hub` can crash"],
    );
    check_error(
        "network: {faults: [{at: 1s, partition: zoe}]}\nagents:\n  - name: alice\n",
        "1:40",
        &["network.faults[0]: unknown agent `zoe`", "alice"],
    );
    check_error(
        "network: {faults: [{at: 1s, partition: a, hold: a}]}\nagents:\n  - name: a\n",
        "1:43",
        &["one fault per entry"],
    );
    let text = format!("{AGENTS}steps:\n  - {{op: partition, agent: zoe}}\n");
    check_error(&text, "5:28", &["unknown agent `zoe`"]);
    let text = format!("{AGENTS}steps:\n  - {{op: wait}}\n");
    check_error(&text, "5:5", &["op `wait` needs `seconds`"]);
    check_error(
        "agents:\n  - {name: a, kind: robot}\n",
        "2:21",
        &["unknown kind `robot`"],
    );
    check_error(
        "agents:\n  - {name: a, kind: human, handler: silent}\n",
        "2:28",
        &["takes no `handler`"],
    );
    check_error(
        "agents:\n  - {name: a, auto_ack_invites: false}\n",
        "2:15",
        &["goes with `kind: human`"],
    );
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b":-[]{}\"',\n #&*!|>0123456789abcxyz_.";
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                let len = 1 + rng.below(8);
                let end = (at + len).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 => {
                let lines: Vec<&str> = text.lines().collect();
                let line = lines[rng.below(lines.len())].as_bytes().to_vec();
                for (offset, byte) in line.into_iter().chain([b'\n']).enumerate() {
                    bytes.insert((at + offset).min(bytes.len()), byte);
                }
            }
            _ => {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = ALPHABET[rng.below(ALPHABET.len())];
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn random_mutations_never_panic() {
    let mut sims: Vec<_> = std::fs::read_dir(root().join("sims"))
        .expect("sims/")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "yaml"))
        .map(|entry| std::fs::read_to_string(entry.path()).expect("readable"))
        .collect();
    sims.sort();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let (mut parsed, mut refused) = (0, 0);
    for _ in 0..3000 {
        let original = &sims[rng.below(sims.len())];
        let text = mutate(original, &mut rng);
        match Scenario::parse(&text, "mutant") {
            Ok(scenario) => {
                parsed += 1;
                let outcome = run_in_process(&scenario);
                assert!(outcome.trace.ends_with("}\n"));
            }
            Err(message) => {
                refused += 1;
                assert!(!message.is_empty());
            }
        }
    }
    // Both paths must be exercised for the test to mean anything.
    assert!(
        parsed > 300 && refused > 300,
        "parsed {parsed}, refused {refused}"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0xbad_f00d);
    for _ in 0..2000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(scenario) = Scenario::parse(&text, "noise") {
            let _ = run_in_process(&scenario);
        }
    }
}

#[test]
fn sweep_keys_are_checked_where_they_are_written() {
    let cases: [(&str, &str, &[&str]); 7] = [
        ("seeds: 5..2\n", "1:8", &["seeds", "empty"]),
        (
            "seeds: lots\n",
            "1:8",
            &["a seed count `N` or a range `A..B`"],
        ),
        (
            "invariants: [delivery, liveness]\n",
            "1:24",
            &["unknown invariant `liveness`", "auto_close"],
        ),
        (
            "known_violations:\n  - kind: ttl/late\n",
            "2:11",
            &["not one of ag2's known holes", "because:"],
        ),
        (
            "expect_reached: [inbox_overflowed]\n",
            "1:18",
            &["unknown probe `inbox_overflowed`", "inbox_full"],
        ),
        (
            "chaos: {until: 10s, faults: [partition, flood]}\n",
            "1:41",
            &["unknown fault `flood`", "disconnect"],
        ),
        (
            "chaos: {from: 20s, until: 10s, faults: [crash]}\n",
            "1:15",
            &["`from` must come before `until`"],
        ),
    ];
    for (key, line_column, expected) in cases {
        check_error(&format!("{key}{AGENTS}steps: []\n"), line_column, expected);
    }
}

#[test]
fn inputs_that_would_run_without_bound_are_refused_where_written() {
    let agents = "agents:\n  - name: alice\n  - name: bob\n";
    // A run simulates at most 30 days: a ten-year wait, or waits that add up past it.
    check_error(
        &format!("{agents}steps:\n  - {{op: wait, seconds: 315360000}}\n"),
        "5:25",
        &[
            "op `wait`: the waits up to here add up to 315360000 s",
            "at most 30 days (2592000 s)",
        ],
    );
    check_error(
        &format!("{agents}steps:\n  - {{op: wait, seconds: 2000000}}\n  - {{op: wait, seconds: 600000}}\n"),
        "6:25",
        &["add up to 2600000 s"],
    );
    check_error(
        &format!("network:\n  faults:\n    - {{at: 8640000, partition: bob}}\n{agents}steps: []\n"),
        "3:12",
        &["network.faults[0]: at 8640000 s, past the longest run"],
    );
    check_error(
        &format!("{agents}steps: []\nchaos: {{until: 86400000, faults: [hold], rate: 0.0001}}\n"),
        "5:16",
        &["chaos.until: 86400000 s is past the longest run"],
    );
    // A chaos profile that would draw more than 10,000 faults of a kind.
    check_error(
        &format!("{agents}steps: []\nchaos: {{until: 100s, faults: [hold], rate: 1000}}\n"),
        "5:44",
        &["chaos: up to 100000 faults of each kind (1000 a second for 100 s); at most 10000"],
    );
}
