//! Sweeps: a scenario run on a network backend over a range of seeds, each run checked against
//! the scenario's invariants (and run twice for `determinism`), every failure with the one
//! command line that reproduces it. Seeds can be split into chunks run on any thread; merging
//! the chunks in seed order gives the same report whatever the split. What a seed reports
//! (violations, mismatches, notes) names ids as the trace does ([`reported`]).

use super::check::{
    first_divergence, first_divergent_event, Divergence, Invariant, Selection, Violation,
};
use super::scenario::{Scenario, SeedRange};
use super::trace::Normaliser;
use super::{trace, Backend, LogLevel, NetRun, RunOptions};
use crate::hub::Bugs;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What one seed gave.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// The normalised trace.
    pub trace: String,
    /// `expect_error` mismatches and harness notes, with the trace's names.
    pub mismatches: Vec<String>,
    /// The `expect:` assertions that do not hold at the end, with the trace's names.
    pub expect: Vec<String>,
    /// Every broken invariant, known or not, its message with the trace's names.
    pub violations: Vec<Violation>,
    /// Where a second run of the seed diverged.
    pub divergence: Option<Divergence>,
    /// The probes and violation kinds this seed reached.
    pub reached: BTreeSet<String>,
    /// The backend could not run the seed (the reason is in `mismatches`).
    pub failed: bool,
}

/// Runs `scenario` with `seed` on the event-driven backend (twice if `determinism` is
/// checked).
pub fn run_seed(scenario: &Scenario, seed: u64, bugs: Bugs) -> SeedOutcome {
    run_seed_on(scenario, seed, bugs, Backend::Events)
}

/// [`run_seed`] on `backend` (a network backend; a run the backend could not make is an
/// outcome with that error as a note).
pub fn run_seed_on(scenario: &Scenario, seed: u64, bugs: Bugs, backend: Backend) -> SeedOutcome {
    let options = RunOptions {
        backend,
        seed,
        bugs,
        ..RunOptions::default()
    };
    let run = match super::run_network(scenario, &options) {
        Ok(run) => run,
        Err(error) => {
            return SeedOutcome {
                seed,
                trace: String::new(),
                mismatches: vec![format!("hubsim: {error}")],
                expect: Vec::new(),
                violations: Vec::new(),
                divergence: None,
                reached: BTreeSet::new(),
                failed: true,
            }
        }
    };
    let rendered = trace::render(&scenario.name, &run.run);
    let divergence = if scenario.sweep.invariants.has(Invariant::Determinism) {
        match super::run_network(scenario, &options) {
            Ok(again) => first_divergence(&rendered, &trace::render(&scenario.name, &again.run))
                .map(|trace| Divergence {
                    trace,
                    event: event_divergence(scenario, &options, &options),
                }),
            Err(error) => Some(Divergence {
                trace: (0, String::new(), format!("the second run failed: {error}")),
                event: None,
            }),
        }
    } else {
        None
    };
    let mut reached = BTreeSet::new();
    let stats = &run.stats;
    for (probe, hit) in [
        ("hub_crash", stats.crashes > 0),
        ("reconnect", stats.reconnects > 0),
        ("message_lost", stats.lost > 0),
        (
            "inbox_full",
            run.refused_inbox_full > 0 || rendered.contains("\"InboxFull\""),
        ),
        ("channel_expired", channel_expired(&run.run.hub)),
        ("duplicate_delivery", duplicate_delivery(&run)),
    ] {
        if hit {
            reached.insert(probe.to_string());
        }
    }
    reached.extend(run.violations.iter().map(|v| v.kind.to_string()));
    let (violations, mismatches) = reported(&run);
    let expect = expect_failures(scenario, &run);
    SeedOutcome {
        seed,
        trace: rendered,
        mismatches,
        expect,
        violations,
        divergence,
        reached,
        failed: false,
    }
}

/// What a network run reports: its violations and its `expect_error` mismatches and harness
/// notes (`hubsim: ...`), with the trace's names for ids and timestamps
/// ([`Normaliser::for_messages`], which also names the envelopes the clients received that
/// the final WALs do not hold). The run keeps its raw messages; names are made only when there
/// is something to report.
pub fn reported(run: &NetRun) -> (Vec<Violation>, Vec<String>) {
    let mut mismatches = run.run.mismatches.clone();
    mismatches.extend(run.notes.iter().map(|note| format!("hubsim: {note}")));
    if run.violations.is_empty() && mismatches.is_empty() {
        return (Vec::new(), mismatches);
    }
    let seen = run
        .logs
        .iter()
        .flat_map(|log| log.received.iter().map(|delivery| &*delivery.envelope));
    let names = Normaliser::for_messages(&run.run, seen);
    let violations = run
        .violations
        .iter()
        .map(|violation| violation.clone().named(&names))
        .collect();
    let mismatches = mismatches.iter().map(|m| names.message(m)).collect();
    (violations, mismatches)
}

/// The scenario's `expect:` assertions that do not hold at the end of a network run, named as
/// [`reported`] names its messages.
pub fn expect_failures(scenario: &Scenario, run: &NetRun) -> Vec<String> {
    let failed = super::expect::check(&scenario.expect, &run.run);
    if failed.is_empty() {
        return failed;
    }
    let seen = run
        .logs
        .iter()
        .flat_map(|log| log.received.iter().map(|delivery| &*delivery.envelope));
    let names = Normaliser::for_messages(&run.run, seen);
    failed.iter().map(|m| names.message(m)).collect()
}

/// Runs `scenario` as `first` and as `second` say, each with its event log on (frames
/// included), and names the first line where the two logs, rendered with the trace's names,
/// differ (`None`: they agree, or a run failed). Compares two runs of one seed whose traces
/// diverged, on any backend.
pub fn event_divergence(
    scenario: &Scenario,
    first: &RunOptions,
    second: &RunOptions,
) -> Option<(usize, String, String)> {
    let timeline = |options: &RunOptions| {
        let logged = RunOptions {
            log: LogLevel::Frames,
            ..*options
        };
        super::run(scenario, &logged).map(|outcome| {
            outcome
                .timeline
                .map(|seen| seen.entry_lines())
                .unwrap_or_default()
        })
    };
    match (timeline(first), timeline(second)) {
        (Ok(a), Ok(b)) => first_divergent_event(&a, &b),
        _ => None,
    }
}

/// Some channel expired.
fn channel_expired(hub: &crate::hub::Hub) -> bool {
    hub.channel_ids().any(|channel| {
        hub.get_channel(channel)
            .is_ok_and(|m| m.state == crate::hub::channel::ChannelState::Expired)
    })
}

/// Some agent received one envelope twice.
fn duplicate_delivery(run: &NetRun) -> bool {
    run.logs.iter().any(|log| {
        let mut seen = BTreeSet::new();
        log.received
            .iter()
            .any(|d| !seen.insert(d.envelope.envelope_id))
    })
}

/// What every repro line ends with: the hubsim version that printed it, and how to get the
/// `hubsim` it runs on PATH (README, "Set up, run, test").
pub const REPRO_NOTE: &str = concat!(
    "# hubsim ",
    env!("CARGO_PKG_VERSION"),
    "; cargo install --path . (in its repository) puts it on PATH"
);

/// How a failure is reproduced: `hubsim run FILE --seed N` (with the backend and the bug
/// switches of the run).
#[derive(Clone, Debug)]
pub struct Repro {
    /// The scenario file as given.
    pub file: PathBuf,
    /// Bug switches on (`--inject-bug`).
    pub bugs: Vec<String>,
    /// Where the seeds run.
    pub backend: Backend,
}

impl Repro {
    /// A repro for `file` on the event-driven backend, with no bug switches.
    pub fn new(file: impl Into<PathBuf>) -> Repro {
        Repro {
            file: file.into(),
            bugs: Vec::new(),
            backend: Backend::Events,
        }
    }

    /// The `--net` arguments of the backend (none for the default).
    fn net_args(&self) -> String {
        match self.backend {
            Backend::Turmoil(options) => {
                format!(" --net turmoil --tick-ms {}", options.tick.as_millis())
            }
            Backend::Events | Backend::InProcess => String::new(),
        }
    }

    /// The command that reruns `seed`, with the hubsim version.
    pub fn seed(&self, seed: u64) -> String {
        let mut line = format!("hubsim run {} --seed {seed}", self.file.display());
        line.push_str(&self.net_args());
        for bug in &self.bugs {
            line.push_str(&format!(" --inject-bug {bug}"));
        }
        line.push_str("   ");
        line.push_str(REPRO_NOTE);
        line
    }

    /// The command that reruns a sweep over `seeds`.
    pub fn sweep(&self, seeds: SeedRange) -> String {
        format!(
            "hubsim check {} --seeds {seeds}{}   {REPRO_NOTE}",
            self.file.display(),
            self.net_args(),
        )
    }
}

/// One failure, with the line that reproduces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The seed, when one seed shows it.
    pub seed: Option<u64>,
    /// Its kind: the violation kind (`delivery/missing`, `determinism/diverged`), or for other
    /// failures a category: `load`, `run`, `expectation`, `reference`, `unreached`.
    pub kind: String,
    /// What went wrong.
    pub what: String,
    /// The command that reproduces it.
    pub repro: String,
}

/// A sweep's findings over some seeds (a chunk, or the whole range once merged).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Runs made (seeds).
    pub runs: u64,
    /// Invariant checks made (selected invariants times runs).
    pub checks: u64,
    /// Failures, in seed order.
    pub failures: Vec<Failure>,
    /// Violations not listed as known.
    pub violations: u64,
    /// Known violations seen, by kind: the seeds that showed each.
    pub known: BTreeMap<String, u64>,
    /// Probes and violation kinds reached by at least one seed.
    pub reached: BTreeSet<String>,
}

impl Tally {
    /// Adds a later chunk's findings.
    pub fn merge(&mut self, later: Tally) {
        self.runs += later.runs;
        self.checks += later.checks;
        self.failures.extend(later.failures);
        self.violations += later.violations;
        for (kind, seeds) in later.known {
            *self.known.entry(kind).or_insert(0) += seeds;
        }
        self.reached.extend(later.reached);
    }
}

/// Runs `seeds` of `scenario` and tallies what breaks.
pub fn sweep(scenario: &Scenario, seeds: SeedRange, bugs: Bugs, repro: &Repro) -> Tally {
    let mut tally = Tally::default();
    let checks = scenario.sweep.invariants.iter().count() as u64;
    for seed in seeds.start..seeds.end {
        let outcome = run_seed_on(scenario, seed, bugs, repro.backend);
        tally.runs += 1;
        tally.checks += checks;
        tally.add(scenario, &outcome, repro);
    }
    tally
}

impl Tally {
    /// Tallies one seed's outcome.
    pub fn add(&mut self, scenario: &Scenario, outcome: &SeedOutcome, repro: &Repro) {
        let seed = outcome.seed;
        let mut fail = |kind: &str, what: String| {
            self.failures.push(Failure {
                seed: Some(seed),
                kind: if outcome.failed { "run" } else { kind }.to_string(),
                what,
                repro: repro.seed(seed),
            })
        };
        // A reference-format scenario's `expect_error`s describe ag2 in process (checked by
        // [`check_in_process`]); over the wire some errors arrive untyped (README, "remote
        // mode"), so on the network only its invariants count.
        if scenario.network_only() || outcome.failed {
            for mismatch in &outcome.mismatches {
                fail("expectation", format!("expectation mismatch: {mismatch}"));
            }
        }
        // `expect:` holds on every seed, whatever the scenario's format.
        for failed in &outcome.expect {
            fail("expect", format!("expect failed: {failed}"));
        }
        if let Some(divergence) = &outcome.divergence {
            // One run cannot show it; a sweep of this seed runs it twice.
            self.failures.push(Failure {
                seed: Some(seed),
                kind: "determinism/diverged".to_string(),
                what: format!("determinism: {divergence}"),
                repro: repro.sweep(SeedRange {
                    start: seed,
                    end: seed + 1,
                }),
            });
        }
        let mut known_here = BTreeSet::new();
        for violation in &outcome.violations {
            if is_known(scenario, violation) {
                known_here.insert(violation.kind.to_string());
            } else {
                self.violations += 1;
                self.failures.push(Failure {
                    seed: Some(seed),
                    kind: violation.kind.to_string(),
                    what: violation.to_string(),
                    repro: repro.seed(seed),
                });
            }
        }
        for kind in known_here {
            *self.known.entry(kind).or_insert(0) += 1;
        }
        self.reached.extend(outcome.reached.iter().cloned());
    }

    /// The sweep-wide check, once every chunk is merged: each `expect_reached` probe was
    /// reached by some seed.
    pub fn finish(&mut self, scenario: &Scenario, seeds: SeedRange, repro: &Repro) {
        for name in &scenario.sweep.expect_reached {
            if !self.reached.contains(name) {
                self.failures.push(Failure {
                    seed: None,
                    kind: "unreached".to_string(),
                    what: format!("no seed in {seeds} reached `{name}`"),
                    repro: repro.sweep(seeds),
                });
            }
        }
    }
}

/// Whether the scenario lists `violation` as known.
pub fn is_known(scenario: &Scenario, violation: &Violation) -> bool {
    scenario
        .sweep
        .known_violations
        .iter()
        .any(|k| k.kind == violation.kind)
}

/// The in-process checks of a reference-format scenario: two runs give the same bytes, every
/// `expect_error` holds, and the trace equals `reference/NAME.json` when there is one. Returns
/// the failures and whether a reference trace was compared.
pub fn check_in_process(
    file: &Path,
    scenario: &Scenario,
    reference: &Path,
) -> (Vec<Failure>, bool) {
    let repro = format!("hubsim trace {}   {REPRO_NOTE}", file.display());
    let first = super::run_in_process(scenario);
    let second = super::run_in_process(scenario);
    let mut problems: Vec<(&str, String)> = first
        .mismatches
        .iter()
        .map(|m| {
            (
                "expectation",
                format!("expectation mismatch (in process): {m}"),
            )
        })
        .chain(
            first
                .expect
                .iter()
                .map(|m| ("expect", format!("expect failed (in process): {m}"))),
        )
        .collect();
    if let Some(trace) = first_divergence(&first.trace, &second.trace) {
        let in_process = RunOptions {
            backend: Backend::InProcess,
            ..RunOptions::default()
        };
        let divergence = Divergence {
            trace,
            event: event_divergence(scenario, &in_process, &in_process),
        };
        problems.push((
            "determinism/diverged",
            format!("determinism (in process): {divergence}"),
        ));
    }
    let expected_path = reference.join(format!("{}.json", scenario.name));
    let compared = match std::fs::read_to_string(&expected_path) {
        Ok(expected) => {
            if let Some((line, want, got)) = first_divergence(&expected, &first.trace) {
                problems.push((
                    "reference",
                    format!(
                        "differs from {} at line {line}: expected `{want}`, got `{got}`",
                        expected_path.display()
                    ),
                ));
            }
            true
        }
        Err(_) => false,
    };
    let failures = problems
        .into_iter()
        .map(|(kind, what)| Failure {
            seed: None,
            kind: kind.to_string(),
            what,
            repro: repro.clone(),
        })
        .collect();
    (failures, compared)
}

/// The snapshot of a scenario: its invariant summary over the fixed seed, then the trace.
pub fn snapshot(scenario: &Scenario) -> String {
    let seed = scenario.sweep.seed;
    let outcome = run_seed(scenario, seed, Bugs::default());
    let mut text = format!("seed: {seed}\n");
    let selection: Selection = scenario.sweep.invariants;
    for invariant in selection.iter() {
        let mut kinds: Vec<String> = outcome
            .violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .map(|v| {
                let known = if is_known(scenario, v) {
                    " (known)"
                } else {
                    ""
                };
                format!("{}{known}", v.kind)
            })
            .collect();
        if invariant == Invariant::Determinism && outcome.divergence.is_some() {
            kinds.push("determinism/diverged".to_string());
        }
        let mut seen = BTreeSet::new();
        kinds.retain(|kind| seen.insert(kind.clone()));
        let status = if kinds.is_empty() {
            "ok".to_string()
        } else {
            kinds.join(", ")
        };
        text.push_str(&format!("{}: {status}\n", invariant.name()));
    }
    text.push_str("trace:\n");
    text.push_str(&outcome.trace);
    text
}
