//! `hubsim check`: every scenario over its seeds on worker threads, a progress bar, a summary
//! table, one repro line per failure, and an optional JUnit or JSON report.

use crate::report::{self, ScenarioResult};
use hubsim::hub::Bugs;
use hubsim::sim::scenario::{NetworkBackend, Scenario, SeedRange};
use hubsim::sim::sweep::{self, Failure, Repro, Tally};
use hubsim::sim::Backend;
use indicatif::{ProgressBar, ProgressStyle};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seeds per unit of work: small enough to balance threads, large enough to amortise.
const CHUNK: u64 = 16;

/// Failures printed per scenario (the report has them all).
const PRINTED_PER_SCENARIO: usize = 5;

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
    /// Write a report: `--report junit FILE` or `--report json FILE`.
    #[arg(long, num_args = 2, value_names = ["FORMAT", "FILE"])]
    report: Option<Vec<String>>,
    /// The network backend the seeds run on. On turmoil, a scenario without `--seeds` runs
    /// its first 3 seeds (turmoil runs 100-400 times slower than the event driver).
    #[arg(long, value_enum, default_value_t = crate::Net::Events)]
    net: crate::Net,
    /// turmoil's tick in milliseconds (`--net turmoil`).
    #[arg(long, default_value_t = 1)]
    tick_ms: u64,
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

/// What a unit found.
enum Found {
    InProcess(Vec<Failure>, bool),
    Seeds(Tally),
}

pub(crate) fn check(args: CheckArgs) -> Result<ExitCode, Box<dyn Error>> {
    let started = Instant::now();
    let bugs = Bugs::from_names(&args.inject_bug)?;
    let backend = args.net.backend(args.tick_ms)?;
    let report = match args.report.as_deref() {
        None => None,
        Some([format, file]) => {
            let format = <report::Format as clap::ValueEnum>::from_str(format, true)
                .map_err(|_| format!("--report: expected `junit` or `json`, got `{format}`"))?;
            Some((format, PathBuf::from(file)))
        }
        Some(_) => return Err("--report takes a format and a file".into()),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut files = crate::scenario_files(&args.paths)?;
    let reference = reference_folder(args.reference.as_deref(), &files)?;
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
    if !skipped.is_empty() {
        eprintln!(
            "hubsim: skipped {} scenarios whose `backends:` leave out {}: {}",
            skipped.len(),
            net.name(),
            skipped.join(", ")
        );
    }

    let mut units = Vec::new();
    for (idx, entry) in entries.iter().enumerate() {
        let Ok(scenario) = &entry.scenario else {
            continue;
        };
        if !scenario.network_only() {
            units.push(Unit::InProcess(idx));
        }
        let mut start = entry.seeds.start;
        while start < entry.seeds.end {
            let end = entry.seeds.end.min(start.saturating_add(CHUNK));
            units.push(Unit::Seeds(idx, SeedRange { start, end }));
            start = end;
        }
    }
    let total_seeds: u64 = units
        .iter()
        .map(|unit| match unit {
            Unit::Seeds(_, seeds) => seeds.len(),
            Unit::InProcess(_) => 0,
        })
        .sum();
    let progress = ProgressBar::new(total_seeds);
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} seeds ({per_sec}, {eta} left) {msg}",
        )?
        .progress_chars("=> "),
    );

    let results: Vec<Mutex<Option<(Found, Duration)>>> =
        units.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let jobs = jobs.max(1).min(units.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                let Some(unit) = units.get(idx) else { break };
                let began = Instant::now();
                let found = run_unit(*unit, &entries, &reference, bugs, &progress);
                let spent = began.elapsed();
                if let Ok(mut slot) = results[idx].lock() {
                    *slot = Some((found, spent));
                }
            });
        }
    });
    progress.finish_and_clear();

    // Merge in unit order: the same report whatever the thread count.
    let mut merged: Vec<ScenarioResult> = entries
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
    for (idx, entry) in entries.iter().enumerate() {
        if let Err(error) = &entry.scenario {
            merged[idx].tally.failures.push(Failure {
                seed: None,
                what: error.clone(),
                repro: format!("hubsim check {}", entry.file.display()),
            });
        }
    }
    for (unit, slot) in units.iter().zip(results) {
        let Some((found, spent)) = slot.into_inner().ok().flatten() else {
            continue;
        };
        let idx = match unit {
            Unit::InProcess(idx) | Unit::Seeds(idx, _) => *idx,
        };
        let result = &mut merged[idx];
        result.seconds += spent.as_secs_f64();
        match found {
            Found::InProcess(failures, compared) => {
                result.tally.failures.extend(failures);
                result.compared = compared;
            }
            Found::Seeds(tally) => result.tally.merge(tally),
        }
    }
    for (entry, result) in entries.iter().zip(&mut merged) {
        if let Ok(scenario) = &entry.scenario {
            result.tally.finish(scenario, entry.seeds, &entry.repro);
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
    print_failures(&merged);
    report::print_summary(&merged, elapsed, jobs);
    if let Some((format, path)) = &report {
        report::write(*format, path, &merged, elapsed)?;
        eprintln!("hubsim: wrote {}", path.display());
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

fn print_failures(results: &[ScenarioResult]) {
    for result in results {
        let failures = &result.tally.failures;
        for failure in failures.iter().take(PRINTED_PER_SCENARIO) {
            let seed = failure
                .seed
                .map_or(String::new(), |seed| format!(" (seed {seed})"));
            eprintln!("FAIL {}{seed}: {}", result.name, failure.what);
            eprintln!("    repro: {}", failure.repro);
        }
        if failures.len() > PRINTED_PER_SCENARIO {
            eprintln!(
                "FAIL {}: ... and {} more failures (--report json FILE lists them all)",
                result.name,
                failures.len() - PRINTED_PER_SCENARIO
            );
        }
    }
}

fn stem(file: &Path) -> String {
    file.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}
