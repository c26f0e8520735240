//! `hubsim fuzz` (random scenarios on worker threads, each distinct failure shrunk into a
//! scenario file) and `hubsim shrink` (the same for a failing seed of an existing scenario).

use hubsim::hub::Bugs;
use hubsim::sim::check::Invariant;
use hubsim::sim::fuzz::{self, explicit, generate, shrink, Finding, Findings};
use hubsim::sim::scenario::Scenario;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Run random scenarios on the simulated network with every invariant checked, and shrink each
/// distinct failure into a scenario file that `hubsim run` reproduces.
///
/// Each case's scenario is drawn from its seed with every random decision written out (fixed
/// latencies and model time, faults at fixed times), so the shrunk file replays without a seed.
/// Exits non-zero if a failure is not one of ag2's known holes.
#[derive(clap::Args)]
pub(crate) struct FuzzArgs {
    /// How long to generate cases (`60s`, `2m`); shrinking comes after.
    #[arg(long, value_parser = parse_time, conflicts_with = "seeds")]
    time: Option<Duration>,
    /// Run this many cases instead (seeds START..START+N).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first case seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Where the shrunk scenarios go.
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
    /// Switch on a deliberate hub defect (tests of the fuzzer).
    #[arg(long, hide = true)]
    inject_bug: Vec<String>,
}

/// Shrink a failing seed of a scenario into a small scenario that reproduces it.
///
/// The seed's chaos faults become timed faults and random ranges are pinned where the failure
/// survives it; then steps, faults, agents and durations are cut while the same failure shows.
#[derive(clap::Args)]
pub(crate) struct ShrinkArgs {
    /// The scenario file.
    file: PathBuf,
    /// The failing seed (default: the scenario's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// The failure to keep: a failure as `hubsim fuzz` names it
    /// (`delivery/cursor_skipped@discussion`), a violation kind (`delivery/cursor_skipped`,
    /// `determinism/diverged`), a kind's last part (`cursor_skipped`), or an invariant
    /// (`delivery`: any of its kinds). Of several matching failures, the first the scenario does
    /// not list as known. Default: the seed's first failure the scenario does not list as known.
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Where to write the result (default: `sims/regressions/NAME_shrunk.yaml`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Switch on a deliberate hub defect.
    #[arg(long, hide = true)]
    inject_bug: Vec<String>,
}

fn parse_time(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like `60s`, `2m` or `500ms`, got `{text}`");
    let seconds = hubsim::sim::scenario::duration_seconds(text).ok_or_else(bad)?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e7) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(crate) fn fuzz(args: FuzzArgs) -> Result<ExitCode, Box<dyn Error>> {
    let bugs = Bugs::from_names(&args.inject_bug)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let (deadline, end) = match (args.time, args.seeds) {
        (_, Some(n)) => (None, args.start.saturating_add(n)),
        (Some(time), None) => (Some(Instant::now() + time), u64::MAX),
        (None, None) => (Some(Instant::now() + Duration::from_secs(60)), u64::MAX),
    };
    let started = Instant::now();
    let progress = ProgressBar::new_spinner();
    progress.set_style(ProgressStyle::with_template(
        "{elapsed_precise} {pos} cases ({per_sec}) {msg}",
    )?);
    let next = AtomicU64::new(args.start);
    let merged = Mutex::new(Findings::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let mut mine = Findings::default();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    mine.run_case(seed, bugs);
                    progress.inc(1);
                }
                if let Ok(mut all) = merged.lock() {
                    all.merge(mine);
                }
            });
        }
    });
    let fuzzing = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let findings = merged.into_inner().map_err(|_| "a fuzz worker panicked")?;
    out!(
        "{} cases in {fuzzing:.1}s on {jobs} threads: {:.0} cases/s; {} distinct failures",
        findings.cases,
        findings.cases as f64 / fuzzing,
        findings.by_kind.len()
    );
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut unexplained = 0;
    for finding in findings.by_kind.values() {
        let tree = generate::scenario(finding.seed);
        let path = args
            .out
            .join(format!("fuzz_{}.yaml", fuzz::stem(&finding.kind)));
        let origin = format!("`hubsim fuzz` in the case drawn from seed {}", finding.seed);
        let target = Target {
            path: &path,
            name: &format!("fuzz_{}", fuzz::stem(&finding.kind)),
            origin: &origin,
        };
        let verdict = report(finding, &tree, 0, bugs, &target, &args.inject_bug)?;
        unexplained += usize::from(!verdict);
    }
    Ok(if unexplained == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where a shrunk finding goes and what it is called.
struct Target<'a> {
    path: &'a Path,
    name: &'a str,
    origin: &'a str,
}

/// Shrinks `finding` from `tree`, writes it to its target, prints it; returns whether it is
/// one of ag2's known holes.
fn report(
    finding: &Finding,
    tree: &Value,
    seed: u64,
    bugs: Bugs,
    target: &Target<'_>,
    inject: &[String],
) -> Result<bool, Box<dyn Error>> {
    let path = target.path;
    let from = shrink::size(tree);
    let shrunk = shrink::shrink(tree, &mut |candidate| {
        fuzz::still_fails(candidate, seed, bugs, &finding.kind)
    });
    let pinned = fuzz::pin_step_outcomes(&shrunk.scenario, seed, bugs);
    // Its message as the shrunk scenario shows it, and what else that shows.
    let mut finding = finding.clone();
    let found = fuzz::failures(&pinned, seed, bugs).unwrap_or_default();
    if let Some(message) = found.get(&finding.kind) {
        finding.message = message.clone();
    }
    let also: Vec<String> = found.keys().cloned().collect();
    let finding = &finding;
    let text = fuzz::regression_yaml(
        target.name,
        target.origin,
        finding,
        &pinned,
        &also,
        from,
        shrunk.runs,
    );
    std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    let known = fuzz::classify(&finding.kind);
    out!(
        "{} ({} cases, first seed {}): shrunk {from} -> {} steps and faults in {} runs; {}",
        finding.kind,
        finding.cases,
        finding.seed,
        shrink::size(&shrunk.scenario),
        shrunk.runs,
        known.map_or("unexplained".to_string(), |hole| format!(
            "ag2 behaviour, {}",
            hole.section
        ))
    );
    out!("    {}", finding.message);
    let bugs_flags: String = inject
        .iter()
        .map(|bug| format!(" --inject-bug {bug}"))
        .collect();
    out!(
        "    repro: hubsim run {}{bugs_flags}   {}",
        path.display(),
        hubsim::sim::sweep::REPRO_NOTE
    );
    Ok(known.is_some())
}

pub(crate) fn shrink_file(args: ShrinkArgs) -> Result<ExitCode, Box<dyn Error>> {
    let bugs = Bugs::from_names(&args.inject_bug)?;
    let scenario = Scenario::load(&args.file)?;
    let text = std::fs::read_to_string(&args.file)?;
    let tree: Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let seed = args.seed.unwrap_or(scenario.sweep.seed);
    let found = fuzz::failures(&tree, seed, bugs)?;
    let known: Vec<&str> = scenario
        .sweep
        .known_violations
        .iter()
        .map(|k| k.kind.as_str())
        .collect();
    let matching: Vec<&String> = match &args.kind {
        Some(wanted) => found.keys().filter(|s| kind_matches(wanted, s)).collect(),
        None => found.keys().collect(),
    };
    // The first the scenario does not list as known (`known_violations` name kinds without
    // the adapter), else the first.
    let unknown = |s: &&&String| !known.contains(&s.split('@').next().unwrap_or_default());
    let Some(kind) = matching
        .iter()
        .find(unknown)
        .or_else(|| matching.first())
        .map(|s| (*s).clone())
    else {
        let shows = if found.is_empty() {
            "no failure".to_string()
        } else {
            format!(
                "these failures: {}",
                found.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(match &args.kind {
            Some(wanted) => format!(
                "seed {seed} of {} shows no failure matching `--kind {wanted}`; it shows {shows} \
                 (--kind takes one of these, its kind without `@ADAPTER`, its last part, or an \
                 invariant: {})",
                args.file.display(),
                Invariant::ALL.map(Invariant::name).join(", ")
            ),
            None => format!("seed {seed} of {} shows {shows}", args.file.display()),
        }
        .into());
    };
    let explicit = explicit::explicit(&tree, &scenario, seed, bugs, &kind);
    let start = if fuzz::still_fails(&explicit, seed, bugs, &kind) {
        explicit
    } else {
        // The explicit form lost it: shrink the scenario as it is, with its seed.
        let mut tree = tree.clone();
        if let Some(map) = tree.as_object_mut() {
            map.remove("known_violations");
            map.insert("seed".into(), Value::from(seed));
        }
        tree
    };
    let finding = Finding {
        kind: kind.clone(),
        seed,
        cases: 1,
        message: found.get(&kind).cloned().unwrap_or_default(),
    };
    let path = args.out.unwrap_or_else(|| {
        PathBuf::from("sims/regressions").join(format!("{}_shrunk.yaml", scenario.name))
    });
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let seed_of_run = start["seed"].as_u64().unwrap_or(0);
    let origin = format!("`hubsim shrink {} --seed {seed}`", args.file.display());
    let target = Target {
        path: &path,
        name: &format!("{}_shrunk", scenario.name),
        origin: &origin,
    };
    report(
        &finding,
        &start,
        seed_of_run,
        bugs,
        &target,
        &args.inject_bug,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `--kind wanted` picks the failure `signature` (`INVARIANT/KIND` or
/// `INVARIANT/KIND@ADAPTER`): the signature itself, its kind without the adapter, the kind's
/// last part (with or without the adapter), or its invariant.
fn kind_matches(wanted: &str, signature: &str) -> bool {
    let (kind, adapter) = signature
        .split_once('@')
        .map_or((signature, None), |(kind, adapter)| (kind, Some(adapter)));
    let (invariant, last) = kind.split_once('/').unwrap_or((kind, kind));
    wanted == signature
        || wanted == kind
        || wanted == last
        || wanted == invariant
        || adapter.is_some_and(|adapter| wanted == format!("{last}@{adapter}"))
}
