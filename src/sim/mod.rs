//! Scenarios and the drivers that run them: read a scenario ([`scenario`]), run it on a backend
//! ([`run`]: in process, or on a simulated network through the one [`harness`]), check its
//! invariants ([`check`], fed by the `monitor`), and print the normalised trace ([`trace`])
//! and the run's event log ([`log`]).
//!
//! Backends: [`runner`] runs the hub core and scripted agents in process with the reference
//! runner's scheduling; [`events`] carries frames over seeded FIFO links with a clock that jumps
//! from event to event; [`turmoil`] carries them as WebSocket messages over turmoil's simulated
//! TCP. The two network backends implement `harness::Network`, so a step means the same on
//! both.

mod chaos;
pub mod check;
pub mod events;
pub mod expect;
pub mod fuzz;
pub mod harness;
pub mod live;
pub mod log;
pub(crate) mod monitor;
pub(crate) mod random;
pub mod record;
pub(crate) mod requests;
pub mod runner;
pub mod scenario;
pub mod sweep;
pub mod timeline;
pub mod trace;
pub mod turmoil;

pub use harness::NetRun;
pub use log::{EventLog, LogLevel};
pub use random::stream;
use scenario::Scenario;
pub use turmoil::{TurmoilOptions, Unsupported};

/// Where a scenario runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// In process, with the reference runner's scheduling (no network, no faults).
    InProcess,
    /// On the event-driven simulated network (the default).
    #[default]
    Events,
    /// On turmoil, with WebSocket framing over its simulated TCP.
    Turmoil(TurmoilOptions),
}

/// How to run a scenario: where, with which seed, which deliberate hub defects, what to log.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Where.
    pub backend: Backend,
    /// The seed (network backends).
    pub seed: u64,
    /// Deliberate hub defects (tests of the checkers).
    pub bugs: crate::hub::Bugs,
    /// What the event log keeps.
    pub log: LogLevel,
}

/// What a network run did besides its trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Simulated time at the end (µs).
    pub sim_micros: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Messages lost (dropped connections, crashes).
    pub lost: u64,
    /// Hub crashes.
    pub crashes: u64,
    /// Client re-attaches.
    pub reconnects: u64,
}

/// The outcome of running one scenario.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The trace, printed exactly as the reference runner prints it.
    pub trace: String,
    /// Steps whose result did not match their `expect_error`, and harness notes, with the
    /// trace's names for ids and timestamps.
    pub mismatches: Vec<String>,
    /// The `expect:` assertions that do not hold at the end, with the trace's names.
    pub expect: Vec<String>,
    /// Network counters (network runs only).
    pub stats: Option<NetStats>,
    /// Broken invariants (network runs only), their messages with the trace's names.
    pub violations: Vec<check::Violation>,
    /// The run's event log (network runs only; empty unless asked for).
    pub events: EventLog,
    /// The run as a person sees it: the event log joined with the trace's names (`None`
    /// unless a log was kept).
    pub timeline: Option<timeline::Timeline>,
}

/// Runs `scenario` as `options` say and renders its trace.
///
/// # Errors
/// The backend cannot run the scenario (turmoil's simulation failed).
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<Outcome, Unsupported> {
    let run = match options.backend {
        Backend::InProcess => return Ok(in_process(scenario, options.log)),
        Backend::Events => run_network(scenario, options)?,
        Backend::Turmoil(_) => run_network(scenario, options)?,
    };
    Ok(outcome(scenario, run, options))
}

/// Runs `scenario` on a network backend, with everything the run left.
///
/// # Errors
/// The backend cannot run the scenario ([`Backend::InProcess`] is not a network backend).
pub fn run_network(scenario: &Scenario, options: &RunOptions) -> Result<NetRun, Unsupported> {
    let log = EventLog::new(options.log);
    match options.backend {
        Backend::InProcess => Err(Unsupported(
            "the in-process driver is not a network backend".to_string(),
        )),
        Backend::Events => Ok(events::run(scenario, options.seed, options.bugs, log)),
        Backend::Turmoil(turmoil) => {
            turmoil::run(scenario, options.seed, options.bugs, log, &turmoil)
        }
    }
}

fn outcome(scenario: &Scenario, run: NetRun, options: &RunOptions) -> Outcome {
    let (violations, mismatches) = sweep::reported(&run);
    let expect = sweep::expect_failures(scenario, &run);
    let timeline = run.events.enabled().then(|| {
        let origin = timeline::Origin::of(scenario, options);
        timeline::Timeline::new(&origin, &run.run, &run.events, &run.violations)
    });
    Outcome {
        trace: trace::render(&scenario.name, &run.run),
        mismatches,
        expect,
        stats: Some(run.stats),
        violations,
        events: run.events,
        timeline,
    }
}

/// Runs `scenario` in process and renders its trace.
pub fn run_in_process(scenario: &Scenario) -> Outcome {
    in_process(scenario, LogLevel::Off)
}

fn in_process(scenario: &Scenario, level: LogLevel) -> Outcome {
    let (run, events) = runner::run_logged(scenario, EventLog::new(level));
    let timeline = events.enabled().then(|| {
        let options = RunOptions {
            backend: Backend::InProcess,
            ..RunOptions::default()
        };
        let origin = timeline::Origin::of(scenario, &options);
        timeline::Timeline::new(&origin, &run, &events, &[])
    });
    let failed = expect::check(&scenario.expect, &run);
    let (mismatches, expect) = if run.mismatches.is_empty() && failed.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let names = trace::Normaliser::for_messages(&run, []);
        let name = |messages: &[String]| messages.iter().map(|m| names.message(m)).collect();
        (name(&run.mismatches), name(&failed))
    };
    Outcome {
        trace: trace::render(&scenario.name, &run),
        mismatches,
        expect,
        stats: None,
        violations: Vec::new(),
        events,
        timeline,
    }
}

/// Runs `scenario` on the event-driven network with `seed` and renders its trace.
pub fn run_on_network(scenario: &Scenario, seed: u64) -> Outcome {
    run_on_network_with(scenario, seed, crate::hub::Bugs::default())
}

/// [`run_on_network`] on a hub with deliberate defects switched on.
pub fn run_on_network_with(scenario: &Scenario, seed: u64, bugs: crate::hub::Bugs) -> Outcome {
    let options = RunOptions {
        seed,
        bugs,
        ..RunOptions::default()
    };
    outcome(
        scenario,
        events::run(scenario, seed, bugs, EventLog::off()),
        &options,
    )
}
