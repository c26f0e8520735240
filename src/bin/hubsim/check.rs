//! `hubsim check`: every scenario over its seeds on worker threads, a progress bar, a summary
//! table, one repro line per failure, and optional JUnit, JSON and HTML reports.

use crate::report::{self, ScenarioResult};
use hubsim::hub::Bugs;
use hubsim::report::html;
use hubsim::sim::scenario::{NetworkBackend, Scenario, SeedRange};
use hubsim::sim::sweep::{self, Failure, Repro, Tally};
use hubsim::sim::{Backend, LogLevel, RunOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seeds per unit of work: small enough to balance threads, large enough to amortise.
const CHUNK: u64 = 16;

/// Failing seeds per scenario that `--report html DIR` draws.
const HTML_PER_SCENARIO: usize = 3;

/// Sweep scenarios over their seeds, checking invariants, determinism and reference traces.
///
/// Each scenario (files or folders; default `sims/`) runs over its seeds on a network backend (`--net`)
/// with its invariants, each seed twice; a reference-format scenario also runs in process
/// against its reference trace. Prints a summary table and one repro line per failure; exits
/// non-zero on any failure.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Scenario files or folders of them.
    paths: Vec<PathBuf>,
    /// Folder of reference traces (`NAME.json`); it must exist. Default: `tests/reference`,
    /// looked for in the current folder and then above each scenario path.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Seeds for every scenario: a count `N` (0..N) or a range `A..B` (default: each
    /// scenario's `seeds`).
    #[arg(long, value_parser = SeedRange::parse)]
    seeds: Option<SeedRange>,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run shard K of N (1-based): every Nth scenario of the sorted list, from the Kth.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Write a report: `--report junit FILE`, `--report json FILE`, or `--report html DIR`
    /// (the timeline of the first 3 failing seeds of each scenario as HTML sequence diagrams,
    /// and an `index.html` linking them). May be repeated.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "PATH"], action = clap::ArgAction::Append)]
    report: Vec<String>,
    /// The network backend the seeds run on. On turmoil, a scenario without `--seeds` runs
    /// its first 3 seeds (turmoil runs 100-400 times slower than the event driver).
    #[arg(long, value_enum, default_value_t = crate::Net::Events)]
    net: crate::Net,
    /// turmoil's tick in milliseconds (`--net turmoil`).
    #[arg(long, default_value_t = 1)]
    tick_ms: u64,
    /// Failures printed per scenario, each with its repro line; the table by kind after them
    /// and `--report json` count them all.
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_failures: usize,
    /// Switch on a deliberate hub defect (tests of the invariant checkers).
    #[arg(long, hide = true)]
    inject_bug: Vec<String>,
}

/// Seeds of a scenario's own range that `check --net turmoil` runs when `--seeds` is not
/// given.
const TURMOIL_SEEDS_DEFAULT: u64 = 3;

/// Parses `K/N` (1 <= K <= N).
pub(crate) fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected `K/N` with 1 <= K <= N, got `{text}`");
    let (k, n) = text.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// A scenario to check, or the error loading it.
struct Entry {
    file: PathBuf,
    scenario: Result<Scenario, String>,
    seeds: SeedRange,
    repro: Repro,
}

/// A unit of work: a scenario's in-process checks, or a chunk of its seeds.
#[derive(Clone, Copy)]
enum Unit {
    InProcess(usize),
    Seeds(usize, SeedRange),
}

/// The units of a sweep, numbered from 0 in scenario order (each scenario's in-process checks,
/// then its seeds in chunks of [`CHUNK`]) and made one at a time from their number.
struct Plan {
    /// Per scenario: its first unit's number, whether it has in-process checks, its seeds.
    scenarios: Vec<(u64, bool, SeedRange)>,
    units: u64,
}

impl Plan {
    fn new(entries: &[Entry]) -> Plan {
        let mut scenarios = Vec::new();
        let mut units: u64 = 0;
        for entry in entries {
            let Ok(scenario) = &entry.scenario else {
                scenarios.push((units, false, SeedRange { start: 0, end: 0 }));
                continue;
            };
            let in_process = !scenario.network_only();
            scenarios.push((units, in_process, entry.seeds));
            let chunks = entry.seeds.len().div_ceil(CHUNK);
            units = units
                .saturating_add(u64::from(in_process))
                .saturating_add(chunks);
        }
        Plan { scenarios, units }
    }

    fn units(&self) -> u64 {
        self.units
    }

    /// Unit `number`, if there is one.
    fn unit(&self, number: u64) -> Option<Unit> {
        let idx = self
            .scenarios
            .partition_point(|(first, _, _)| *first <= number)
            .checked_sub(1)?;
        let (first, in_process, seeds) = self.scenarios[idx];
        let mut offset = number - first;
        if in_process {
            if offset == 0 {
                return Some(Unit::InProcess(idx));
            }
            offset -= 1;
        }
        let start = seeds.start.checked_add(offset.checked_mul(CHUNK)?)?;
        (start < seeds.end).then(|| {
            Unit::Seeds(
                idx,
                SeedRange {
                    start,
                    end: seeds.end.min(start.saturating_add(CHUNK)),
                },
            )
        })
    }
}

/// Units finished ahead of the first unfinished one that may wait to be merged; past it, a
/// worker waits before it takes another (memory stays bounded however long the sweep).
const AHEAD_MAX: u64 = 4096;

/// Hands out unit numbers and merges what the units found in number order.
struct Merger {
    state: Mutex<Merging>,
    wake: std::sync::Condvar,
}

struct Merging {
    /// The next unit to hand out.
    next: u64,
    /// The next unit to merge.
    merge: u64,
    /// Finished units waiting for the ones before them.
    waiting: std::collections::BTreeMap<u64, Option<(Unit, Found, Duration)>>,
    results: Vec<ScenarioResult>,
    closed: bool,
}

impl Merger {
    fn new(results: Vec<ScenarioResult>) -> Merger {
        Merger {
            state: Mutex::new(Merging {
                next: 0,
                merge: 0,
                waiting: std::collections::BTreeMap::new(),
                results,
                closed: false,
            }),
            wake: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Merging> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next unit's number, once it is at most [`AHEAD_MAX`] ahead of the merge; `None`
    /// once every unit was handed out.
    fn take(&self) -> Option<u64> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if state.next < state.merge.saturating_add(AHEAD_MAX) {
                let number = state.next;
                state.next += 1;
                return Some(number);
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Unit `number` finished (`None`: it was past the end).
    fn done(&self, number: u64, found: Option<(Unit, Found, Duration)>) {
        let mut state = self.lock();
        if found.is_none() {
            state.closed = true;
        }
        state.waiting.insert(number, found);
        loop {
            let merge = state.merge;
            let Some(found) = state.waiting.remove(&merge) else {
                break;
            };
            state.merge += 1;
            if let Some((unit, found, spent)) = found {
                let idx = match unit {
                    Unit::InProcess(idx) | Unit::Seeds(idx, _) => idx,
                };
                let result = &mut state.results[idx];
                result.seconds += spent.as_secs_f64();
                match found {
                    Found::InProcess(failures, compared) => {
                        result.tally.failures.extend(failures);
                        result.compared = compared;
                    }
                    Found::Seeds(tally) => result.tally.merge(tally),
                }
            }
        }
        drop(state);
        self.wake.notify_all();
    }

    /// No unit is left to hand out.
    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    fn into_results(self) -> Vec<ScenarioResult> {
        self.state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .results
    }
}

/// What a unit found.
enum Found {
    InProcess(Vec<Failure>, bool),
    Seeds(Tally),
}

pub(crate) fn check(args: CheckArgs) -> Result<ExitCode, Box<dyn Error>> {
    let started = Instant::now();
    let bugs = Bugs::from_names(&args.inject_bug)?;
    let backend = args.net.backend(args.tick_ms)?;
    let reports = args
        .report
        .chunks(2)
        .map(|pair| match pair {
            [format, path] => <report::Format as clap::ValueEnum>::from_str(format, true)
                .map(|format| (format, PathBuf::from(path)))
                .map_err(|_| {
                    format!("--report: expected `junit`, `json` or `html`, got `{format}`")
                }),
            _ => Err("--report takes a format and a path".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut files = crate::scenario_files(&args.paths)?;
    let all_files = files.clone();
    if let Some((k, n)) = args.shard {
        files = files
            .into_iter()
            .enumerate()
            .filter(|(idx, _)| idx % n == k - 1)
            .map(|(_, file)| file)
            .collect();
    }
    let net = match backend {
        Backend::Turmoil(_) => NetworkBackend::Turmoil,
        Backend::Events | Backend::InProcess => NetworkBackend::Events,
    };
    let mut skipped = Vec::new();
    let entries: Vec<Entry> = files
        .into_iter()
        .filter_map(|file| {
            let scenario = Scenario::load(&file).map_err(|e| e.to_string());
            if let Ok(scenario) = &scenario {
                if !scenario.sweep.runs_on(net) {
                    skipped.push(scenario.name.clone());
                    return None;
                }
            }
            let seeds = match (&scenario, args.seeds) {
                (_, Some(seeds)) => seeds,
                (Ok(scenario), None) => {
                    let range = scenario.seed_range();
                    match backend {
                        Backend::Turmoil(_) => SeedRange {
                            start: range.start,
                            end: range.end.min(range.start + TURMOIL_SEEDS_DEFAULT),
                        },
                        _ => range,
                    }
                }
                (Err(_), None) => SeedRange { start: 0, end: 1 },
            };
            let repro = Repro {
                file: file.clone(),
                bugs: args.inject_bug.clone(),
                backend,
            };
            Some(Entry {
                file,
                scenario,
                seeds,
                repro,
            })
        })
        .collect();
    // Reference traces are read for reference-format scenarios only: a sweep of network-only
    // ones needs no folder of them (a `--reference` given must still exist).
    let compares = entries
        .iter()
        .any(|entry| entry.scenario.as_ref().is_ok_and(|s| !s.network_only()));
    let reference = if compares || args.reference.is_some() {
        reference_folder(args.reference.as_deref(), &all_files)?
    } else {
        PathBuf::from(REFERENCE_DEFAULT)
    };
    if !skipped.is_empty() {
        eprintln!(
            "hubsim: skipped {} scenarios whose `backends:` leave out {}: {}",
            skipped.len(),
            net.name(),
            skipped.join(", ")
        );
    }

    // Units are numbered, not listed: a seed range of any size costs nothing before it runs.
    let plan = Plan::new(&entries);
    let total_seeds: u64 = entries
        .iter()
        .filter(|entry| entry.scenario.is_ok())
        .map(|entry| entry.seeds.len())
        .fold(0, u64::saturating_add);
    let progress = ProgressBar::new(total_seeds);
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds ({per_sec}, {eta} left) {msg}",
        )?
        .progress_chars("=> "),
    );

    // Merged in unit order as units finish: the same report whatever the thread count.
    let merged: Vec<ScenarioResult> = entries
        .iter()
        .map(|entry| ScenarioResult {
            name: entry
                .scenario
                .as_ref()
                .map_or_else(|_| stem(&entry.file), |s| s.name.clone()),
            file: entry.file.clone(),
            seeds: entry.seeds,
            invariants: entry
                .scenario
                .as_ref()
                .map_or(0, |s| s.sweep.invariants.iter().count()),
            tally: Tally::default(),
            compared: false,
            seconds: 0.0,
        })
        .collect();
    let merger = Merger::new(merged);
    let jobs = usize::try_from(plan.units())
        .unwrap_or(usize::MAX)
        .max(1)
        .min(jobs.max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while let Some(number) = merger.take() {
                    let Some(unit) = plan.unit(number) else {
                        merger.done(number, None);
                        continue;
                    };
                    let began = Instant::now();
                    let found = run_unit(unit, &entries, &reference, bugs, &progress);
                    merger.done(number, Some((unit, found, began.elapsed())));
                    if number + 1 >= plan.units() {
                        merger.close();
                    }
                }
            });
        }
    });
    progress.finish_and_clear();
    let mut merged = merger.into_results();
    for (idx, entry) in entries.iter().enumerate() {
        if let Err(error) = &entry.scenario {
            merged[idx].tally.failures.push(Failure {
                seed: None,
                kind: "load".to_string(),
                what: error.clone(),
                repro: format!(
                    "hubsim check {}   {}",
                    entry.file.display(),
                    sweep::REPRO_NOTE
                ),
            });
        }
    }
    for (entry, result) in entries.iter().zip(&mut merged) {
        if let Ok(scenario) = &entry.scenario {
            result.tally.finish(scenario, entry.seeds, &entry.repro);
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
    print_failures(&merged, args.max_failures);
    report::print_kinds(&merged);
    report::print_summary(&merged, elapsed, jobs);
    for (format, path) in &reports {
        if *format == report::Format::Html {
            let pages = write_html(path, &entries, &merged, bugs)?;
            eprintln!(
                "hubsim: wrote {} ({pages} failing seeds drawn)",
                path.join("index.html").display()
            );
        } else {
            report::write(*format, path, &merged, elapsed)?;
            eprintln!("hubsim: wrote {}", path.display());
        }
    }
    let failed = merged.iter().any(|r| !r.tally.failures.is_empty());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The default folder of reference traces, relative to the repository root.
const REFERENCE_DEFAULT: &str = "tests/reference";

/// The folder of reference traces: `--reference`, which must exist, or [`REFERENCE_DEFAULT`]
/// found in the current folder or above one of the scenario files, so the comparison never
/// goes missing without a word.
fn reference_folder(given: Option<&Path>, files: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(folder) = given {
        return if folder.is_dir() {
            Ok(folder.to_path_buf())
        } else {
            Err(format!(
                "--reference {}: no such folder of reference traces",
                folder.display()
            ))
        };
    }
    let mut looked = vec![PathBuf::from(REFERENCE_DEFAULT)];
    for file in files {
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        for dir in absolute.ancestors().skip(1) {
            let candidate = dir.join(REFERENCE_DEFAULT);
            if !looked.contains(&candidate) {
                looked.push(candidate);
            }
        }
    }
    looked
        .iter()
        .find(|dir| dir.is_dir())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = looked.iter().map(|d| d.display().to_string()).collect();
            format!(
                "no folder of reference traces: looked for {}; pass --reference DIR",
                looked.join(", ")
            )
        })
}

fn run_unit(
    unit: Unit,
    entries: &[Entry],
    reference: &Path,
    bugs: Bugs,
    progress: &ProgressBar,
) -> Found {
    match unit {
        Unit::InProcess(idx) => {
            let entry = &entries[idx];
            let Ok(scenario) = &entry.scenario else {
                return Found::InProcess(Vec::new(), false);
            };
            let (failures, compared) = sweep::check_in_process(&entry.file, scenario, reference);
            Found::InProcess(failures, compared)
        }
        Unit::Seeds(idx, seeds) => {
            let entry = &entries[idx];
            let Ok(scenario) = &entry.scenario else {
                return Found::Seeds(Tally::default());
            };
            let mut tally = Tally::default();
            for seed in seeds.start..seeds.end {
                let one = SeedRange {
                    start: seed,
                    end: seed + 1,
                };
                tally.merge(sweep::sweep(scenario, one, bugs, &entry.repro));
                progress.inc(1);
            }
            progress.set_message(scenario.name.clone());
            Found::Seeds(tally)
        }
    }
}

fn print_failures(results: &[ScenarioResult], max: usize) {
    for result in results {
        let failures = &result.tally.failures;
        for failure in failures.iter().take(max) {
            let seed = failure
                .seed
                .map_or(String::new(), |seed| format!(" (seed {seed})"));
            eprintln!("FAIL {}{seed}: {}", result.name, failure.what);
            eprintln!("    repro: {}", failure.repro);
        }
        if failures.len() > max {
            eprintln!(
                "FAIL {}: ... and {} more failures (--max-failures N prints more; --report json \
                 FILE lists them all)",
                result.name,
                failures.len() - max
            );
        }
    }
}

/// Writes `dir/index.html` and, for the first [`HTML_PER_SCENARIO`] failing seeds of each
/// scenario, `dir/NAME-seed-N.html`: the seed run again with its event log on, drawn as
/// `hubsim run FILE --seed N --html` draws it. Returns the pages written.
fn write_html(
    dir: &Path,
    entries: &[Entry],
    results: &[ScenarioResult],
    bugs: Bugs,
) -> Result<usize, Box<dyn Error>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rows = Vec::new();
    let mut left_out = 0;
    let mut unseeded = 0;
    for (entry, result) in entries.iter().zip(results) {
        let Ok(scenario) = &entry.scenario else {
            unseeded += result.tally.failures.len();
            continue;
        };
        let mut seeds: Vec<u64> = Vec::new();
        for failure in &result.tally.failures {
            match failure.seed {
                None => unseeded += 1,
                Some(seed) if !seeds.contains(&seed) => seeds.push(seed),
                Some(_) => {}
            }
        }
        left_out += seeds.len().saturating_sub(HTML_PER_SCENARIO);
        for seed in seeds.into_iter().take(HTML_PER_SCENARIO) {
            let failures: Vec<_> = result
                .tally
                .failures
                .iter()
                .filter(|f| f.seed == Some(seed))
                .collect();
            let options = RunOptions {
                backend: entry.repro.backend,
                seed,
                bugs,
                log: LogLevel::Frames,
            };
            let outcome = hubsim::sim::run(scenario, &options)
                .map_err(|e| format!("{} seed {seed}: {e}", entry.file.display()))?;
            let Some(seen) = outcome.timeline else {
                continue;
            };
            let file = format!("{}-seed-{seed}.html", scenario.name);
            let path = dir.join(&file);
            std::fs::write(&path, html::page(&seen))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            rows.push(html::IndexRow {
                scenario: scenario.name.clone(),
                seed,
                file,
                what: failures
                    .iter()
                    .map(|f| f.what.lines().next().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; "),
                repro: failures
                    .first()
                    .map(|f| f.repro.clone())
                    .unwrap_or_default(),
            });
        }
    }
    let mut note = format!(
        "{} scenarios checked; each failing seed's report is the seed run again with its event \
         log on (at most {HTML_PER_SCENARIO} per scenario).",
        results.len()
    );
    if left_out > 0 {
        note.push_str(&format!(
            " {left_out} further failing seeds are not drawn (--report json FILE lists them)."
        ));
    }
    if unseeded > 0 {
        note.push_str(&format!(
            " {unseeded} failures belong to no seed (loading, reference traces, in-process \
             runs): the terminal output lists them."
        ));
    }
    let index = dir.join("index.html");
    std::fs::write(&index, html::index("hubsim check", &rows, &note))
        .map_err(|e| format!("{}: {e}", index.display()))?;
    Ok(rows.len())
}

fn stem(file: &Path) -> String {
    file.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::{Plan, Unit, CHUNK};
    use hubsim::sim::scenario::SeedRange;

    fn plan(scenarios: &[(bool, u64, u64)]) -> Plan {
        let mut numbered = Vec::new();
        let mut units = 0u64;
        for &(in_process, start, end) in scenarios {
            numbered.push((units, in_process, SeedRange { start, end }));
            units += u64::from(in_process) + (end - start).div_ceil(CHUNK);
        }
        Plan {
            scenarios: numbered,
            units,
        }
    }

    fn describe(unit: Option<Unit>) -> String {
        match unit {
            None => "none".into(),
            Some(Unit::InProcess(idx)) => format!("{idx}:in-process"),
            Some(Unit::Seeds(idx, seeds)) => format!("{idx}:{}..{}", seeds.start, seeds.end),
        }
    }

    #[test]
    fn units_are_made_from_their_number_in_scenario_and_seed_order() {
        let plan = plan(&[(true, 0, 20), (false, 5, 6), (true, 0, 0)]);
        assert_eq!(plan.units(), 5);
        let units: Vec<String> = (0..6).map(|n| describe(plan.unit(n))).collect();
        assert_eq!(
            units,
            [
                "0:in-process",
                "0:0..16",
                "0:16..20",
                "1:5..6",
                "2:in-process",
                "none"
            ]
        );
    }

    #[test]
    fn a_huge_seed_range_is_numbered_not_listed() {
        let plan = plan(&[(false, 0, 1 << 40)]);
        assert_eq!(plan.units(), (1 << 40) / CHUNK);
        let last = plan.units() - 1;
        assert_eq!(
            describe(plan.unit(last)),
            format!("0:{}..{}", (1u64 << 40) - CHUNK, 1u64 << 40)
        );
        assert_eq!(describe(plan.unit(plan.units())), "none");
    }
}
