//! The `hubsim` command line: `trace`, `run`, `check` and `bench` over scenario files, and
//! `serve`.

#![allow(clippy::print_stdout)] // printing is this binary's job

/// `println!`, except that a closed stdout (`hubsim fuzz | head`) ends the process with the
/// shell's status for a broken pipe (141) instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(141);
            }
        }
    }};
}

mod bench_serve;
mod check;
mod fuzz;
mod report;
mod serve;

use clap::{Parser, Subcommand, ValueEnum};
use hubsim::hub::Bugs;
use hubsim::sim::scenario::Scenario;
use hubsim::sim::timeline::Filter;
use hubsim::sim::{run_in_process, Backend, LogLevel, Outcome, RunOptions, TurmoilOptions};
use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "hubsim",
    version,
    long_version = concat!(
        env!("CARGO_PKG_VERSION"),
        "\nOn PATH: `cargo install --path .` in hubsim's repository; without it, \
         `cargo run --release -- COMMAND ...` there (README, \"Set up, run, test\")"
    ),
    about = "Deterministic simulation harness for the AG2 agent-network hub"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a scenario's normalised trace, byte-identical to the reference runner's.
    Trace {
        /// The scenario file.
        file: PathBuf,
    },
    /// Run a scenario on the simulated network (hub server, remote-mode clients, faults) with a
    /// seed, and print its normalised trace.
    Run(RunArgs),
    Check(check::CheckArgs),
    Fuzz(fuzz::FuzzArgs),
    Shrink(fuzz::ShrinkArgs),
    /// Measure runs per second of each scenario (trace rendering included): in process, or for
    /// network-only scenarios on the network driver over successive seeds, with the simulated
    /// to wall-clock time ratio.
    Bench {
        /// Scenario files or folders of them.
        paths: Vec<PathBuf>,
        /// Wall-clock seconds to spend on each scenario.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Run exactly this many times instead (for instruction counts under callgrind).
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Serve a hub over WebSocket, as ag2's `serve_ws`, until SIGINT or SIGTERM: API keys,
    /// keepalive, a connection cap and a hello deadline, a log line per connection.
    Serve(serve::ServeArgs),
    /// Measure how fair `hubsim serve` is: a client's ping latency alone and while others
    /// loop `list_agents` over thousands of agents, and memory per idle connection.
    #[command(hide = true)]
    BenchServe(bench_serve::BenchServeArgs),
}

/// `hubsim run`'s arguments.
#[derive(clap::Args)]
struct RunArgs {
    /// The scenario file.
    file: PathBuf,
    /// The seed every random draw of the run derives from (default: the scenario's `seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the hub clock on the scenario's mock clock (`network.clock: frozen`), as the
    /// reference runner does.
    #[arg(long)]
    frozen_clock: bool,
    /// Print the run's network counters to stderr.
    #[arg(long)]
    stats: bool,
    /// The network backend: the event-driven driver, or turmoil with WebSocket framing.
    #[arg(long, value_enum, default_value_t = Net::Events)]
    net: Net,
    /// turmoil's tick in milliseconds (`--net turmoil`).
    #[arg(long, default_value_t = 1)]
    tick_ms: u64,
    /// Switch on a deliberate hub defect (tests of the invariant checkers).
    #[arg(long, hide = true)]
    inject_bug: Vec<String>,
    /// Write the run's timeline (every event, frames included) to this file.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Print the run's timeline instead of its trace: one numbered line per event (steps,
    /// frames, connections, faults, model turns, timers, crashes, violations) with the trace's
    /// names, after the chaos schedule the seed drew.
    #[arg(long)]
    timeline: bool,
    /// With --timeline: only the events of these agents (repeat, or separate with commas;
    /// `hub` for the hub's own).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
    /// With --timeline: only the events of these channels (labels, as in the trace).
    #[arg(long, value_name = "LABEL", value_delimiter = ',')]
    channel: Vec<String>,
    /// With --timeline: from this simulated time (`40s`, `1500ms`, `2m`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<u64>,
    /// With --timeline: up to this simulated time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<u64>,
    /// Write the run as one self-contained HTML page: a sequence diagram of the hub and the
    /// agents, fault periods, model turns, violations, each channel's WAL.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// A simulated time on the command line (`40s`, `1500ms`, `2m`, seconds), in µs.
fn parse_time(text: &str) -> Result<u64, String> {
    hubsim::sim::scenario::duration_seconds(text)
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| (seconds * 1e6).round() as u64)
        .ok_or_else(|| format!("`{text}` is not a time: expected e.g. 40s, 1500ms, 2m"))
}

/// The backend of `hubsim run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Net {
    /// The event-driven network driver (FIFO links, a jumping mock clock).
    Events,
    /// turmoil's simulated TCP with real WebSocket framing.
    Turmoil,
}

impl Net {
    /// The backend, with turmoil's tick of `tick_ms`.
    fn backend(self, tick_ms: u64) -> Result<Backend, Box<dyn Error>> {
        Ok(match self {
            Net::Events => Backend::Events,
            Net::Turmoil => {
                if tick_ms == 0 {
                    return Err("--tick-ms must be at least 1".into());
                }
                Backend::Turmoil(TurmoilOptions {
                    tick: std::time::Duration::from_millis(tick_ms),
                })
            }
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace { file } => trace(&file),
        Command::Run(args) => run(&args),
        Command::Check(args) => check::check(args),
        Command::Fuzz(args) => fuzz::fuzz(args),
        Command::Shrink(args) => fuzz::shrink_file(args),
        Command::Bench {
            paths,
            seconds,
            runs,
        } => bench(&paths, seconds, runs),
        Command::Serve(args) => serve::serve(args),
        Command::BenchServe(args) => bench_serve::bench_serve(args),
    };
    match result {
        Ok(code) => code,
        // A scenario error is printed as rustc prints one (it starts with `error:`).
        Err(error) if error.is::<hubsim::sim::scenario::ScenarioError>() => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
        // The reader went away (`hubsim run ... --timeline | head`): stop quietly, as `out!` does.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::from(141)
        }
        Err(error) => {
            eprintln!("hubsim: {error}");
            ExitCode::from(2)
        }
    }
}

fn trace(file: &Path) -> Result<ExitCode, Box<dyn Error>> {
    let scenario = Scenario::load(file)?;
    if scenario.network_only() {
        return Err(format!(
            "{}: this scenario injects faults or waits on simulated time; run it on the network: hubsim run {} --seed N",
            file.display(),
            file.display()
        )
        .into());
    }
    print_outcome(&scenario, &run_in_process(&scenario))
}

fn run(args: &RunArgs) -> Result<ExitCode, Box<dyn Error>> {
    let RunArgs {
        file,
        seed,
        frozen_clock,
        stats,
        net,
        tick_ms,
        inject_bug,
        events,
        timeline,
        only,
        channel,
        from,
        to,
        html,
    } = args;
    let (seed, frozen_clock, stats, net, tick_ms) = (*seed, *frozen_clock, *stats, *net, *tick_ms);
    let mut scenario = Scenario::load(file)?;
    scenario.network.frozen_clock |= frozen_clock;
    let seed = seed.unwrap_or(scenario.sweep.seed);
    let bugs = Bugs::from_names(inject_bug)?;
    let backend = net.backend(tick_ms)?;
    let filter = Filter {
        agents: only.clone(),
        channels: channel.clone(),
        from: *from,
        to: *to,
    };
    if !*timeline && !filter.is_empty() {
        return Err(
            "--only, --channel, --from and --to filter the timeline: add --timeline".into(),
        );
    }
    let log = if events.is_some() || *timeline || html.is_some() {
        LogLevel::Frames
    } else {
        LogLevel::Off
    };
    let options = RunOptions {
        backend,
        seed,
        bugs,
        log,
    };
    let outcome = hubsim::sim::run(&scenario, &options)?;
    if let Some(seen) = &outcome.timeline {
        seen.check_filter(&filter)?;
        if let Some(path) = events {
            std::fs::write(path, seen.render(&Filter::default()))
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
        if let Some(path) = html {
            std::fs::write(path, hubsim::report::html::page(seen))
                .map_err(|error| format!("{}: {error}", path.display()))?;
        }
    }
    if let (true, Some(s)) = (stats, &outcome.stats) {
        eprintln!(
            "simulated {:.3}s, {} messages delivered, {} lost, {} hub crashes, {} re-attaches",
            s.sim_micros as f64 / 1e6,
            s.messages,
            s.lost,
            s.crashes,
            s.reconnects
        );
    }
    let mut code = if *timeline {
        let seen = outcome.timeline.as_ref().ok_or("no event log was kept")?;
        std::io::stdout().write_all(seen.render(&filter).as_bytes())?;
        let label = if scenario.network_only() {
            "EXPECTATION MISMATCH"
        } else {
            "remote-mode difference:"
        };
        for mismatch in &outcome.mismatches {
            eprintln!("{}: {label} {mismatch}", scenario.name);
        }
        if scenario.network_only() && !outcome.mismatches.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    } else if scenario.network_only() {
        std::io::stdout().write_all(outcome.trace.as_bytes())?;
        print_mismatches(&scenario, &outcome)
    } else {
        // A reference-format scenario's `expect_error`s describe ag2 in process (`hubsim
        // trace`); over the wire some errors arrive untyped, as `check` also allows.
        std::io::stdout().write_all(outcome.trace.as_bytes())?;
        for mismatch in &outcome.mismatches {
            eprintln!("{}: remote-mode difference: {mismatch}", scenario.name);
        }
        ExitCode::SUCCESS
    };
    if !print_expect(&scenario, &outcome) {
        code = ExitCode::FAILURE;
    }
    for violation in &outcome.violations {
        if hubsim::sim::sweep::is_known(&scenario, violation) {
            eprintln!("{}: known violation {violation}", scenario.name);
        } else {
            eprintln!("{}: VIOLATION {violation}", scenario.name);
            code = ExitCode::FAILURE;
        }
    }
    if code != ExitCode::SUCCESS {
        let mut line = format!("hubsim run {} --seed {seed}", file.display());
        if frozen_clock {
            line.push_str(" --frozen-clock");
        }
        if net == Net::Turmoil {
            line.push_str(&format!(" --net turmoil --tick-ms {tick_ms}"));
        }
        for bug in inject_bug {
            line.push_str(&format!(" --inject-bug {bug}"));
        }
        eprintln!("repro: {line}   {}", hubsim::sim::sweep::REPRO_NOTE);
    }
    Ok(code)
}

/// `hubsim trace`: the trace, then what did not hold (`expect_error`, `expect:`).
fn print_outcome(scenario: &Scenario, outcome: &Outcome) -> Result<ExitCode, Box<dyn Error>> {
    std::io::stdout().write_all(outcome.trace.as_bytes())?;
    let code = print_mismatches(scenario, outcome);
    Ok(if print_expect(scenario, outcome) {
        code
    } else {
        ExitCode::FAILURE
    })
}

fn print_mismatches(scenario: &Scenario, outcome: &Outcome) -> ExitCode {
    for mismatch in &outcome.mismatches {
        eprintln!("{}: EXPECTATION MISMATCH {mismatch}", scenario.name);
    }
    if outcome.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the `expect:` assertions that did not hold; true if all held.
fn print_expect(scenario: &Scenario, outcome: &Outcome) -> bool {
    for failed in &outcome.expect {
        eprintln!("{}: EXPECT FAILED {failed}", scenario.name);
    }
    outcome.expect.is_empty()
}

/// Scenario files named by `paths` (folders are read for `*.yaml`, with their subfolders,
/// sorted); `sims/` by default.
pub(crate) fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let defaults = [PathBuf::from("sims")];
    let paths = if paths.is_empty() {
        &defaults[..]
    } else {
        paths
    };
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            yaml_files(path, &mut found)?;
            if found.is_empty() {
                return Err(format!("no scenarios in {} (no *.yaml files)", path.display()).into());
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}

fn bench(
    paths: &[PathBuf],
    seconds: f64,
    fixed_runs: Option<u64>,
) -> Result<ExitCode, Box<dyn Error>> {
    out!(
        "{:<36} {:>10} {:>14} {:>10} {:>10}",
        "scenario",
        "runs",
        "scenarios/s",
        "µs/run",
        "sim/wall"
    );
    for file in scenario_files(paths)? {
        let scenario = Scenario::load(&file)?;
        // Network-only scenarios run on the network driver, one seed after another.
        let network = scenario.network_only();
        let started = Instant::now();
        let (mut runs, mut simulated) = (0u64, 0u64);
        while fixed_runs.map_or(started.elapsed().as_secs_f64() < seconds, |n| runs < n) {
            let batch = fixed_runs.map_or(16, |n| (n - runs).min(16));
            for _ in 0..batch {
                if network {
                    let options = RunOptions {
                        seed: runs,
                        ..RunOptions::default()
                    };
                    let run = hubsim::sim::run_network(std::hint::black_box(&scenario), &options)?;
                    simulated += run.stats.sim_micros;
                    std::hint::black_box(hubsim::sim::trace::render(&scenario.name, &run.run));
                } else {
                    std::hint::black_box(run_in_process(std::hint::black_box(&scenario)));
                }
                runs += 1;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        if runs == 0 {
            out!(
                "{:<36} {:>10} {:>14} {:>10} {:>10}",
                scenario.name,
                0,
                "-",
                "-",
                "-"
            );
            continue;
        }
        let ratio = if network {
            format!("{:.0}x", simulated as f64 / 1e6 / elapsed)
        } else {
            "-".to_string()
        };
        out!(
            "{:<36} {:>10} {:>14.0} {:>10.1} {:>10}",
            scenario.name,
            runs,
            runs as f64 / elapsed,
            elapsed * 1e6 / runs as f64,
            ratio
        );
    }
    Ok(ExitCode::SUCCESS)
}
