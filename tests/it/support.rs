//! Shared helpers: paths and the scenario check.

use hubsim::sim::run_in_process;
use hubsim::sim::scenario::Scenario;
use std::path::PathBuf;

/// The crate root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `sims/NAME.yaml`.
pub(crate) fn sim_path(name: &str) -> PathBuf {
    root().join("sims").join(format!("{name}.yaml"))
}

/// `tests/reference/NAME.json`: the trace the real ag2 1.2.1 hub printed for the scenario.
pub(crate) fn reference_path(name: &str) -> PathBuf {
    root()
        .join("tests")
        .join("reference")
        .join(format!("{name}.json"))
}

/// Runs `sims/NAME.yaml` in process and checks that every `expect_error` holds, that the trace
/// is byte-identical to the reference hub's, and that a second run prints the same bytes.
#[track_caller]
pub(crate) fn check_sim(name: &str) {
    let scenario = Scenario::load(&sim_path(name)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        scenario.name, name,
        "the scenario name must match its file name"
    );
    let first = run_in_process(&scenario);
    assert!(
        first.mismatches.is_empty(),
        "{name}: {:#?}\nrepro: hubsim trace sims/{name}.yaml",
        first.mismatches
    );
    let expected = std::fs::read_to_string(reference_path(name)).expect("reference trace exists");
    if first.trace != expected {
        let line = expected
            .lines()
            .zip(first.trace.lines())
            .position(|(a, b)| a != b)
            .map_or("(length)".to_string(), |idx| (idx + 1).to_string());
        panic!(
            "{name}: trace differs from the reference at line {line}\nrepro: hubsim trace sims/{name}.yaml | diff tests/reference/{name}.json -"
        );
    }
    let second = run_in_process(&scenario);
    assert_eq!(
        first.trace, second.trace,
        "{name}: two runs gave different bytes"
    );
}

/// A small seeded generator (xorshift64*): tests stay deterministic without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One of `items`.
    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}
