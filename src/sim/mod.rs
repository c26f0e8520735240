//! Scenarios and the in-process driver: read a scenario ([`scenario`]), run it against the hub
//! core and scripted agents ([`runner`]), print the normalised trace ([`trace`]).

pub mod check;
pub mod fuzz;
pub mod net;
pub mod runner;
pub mod scenario;
pub mod sweep;
pub mod trace;

use scenario::Scenario;

/// The outcome of running one scenario in process.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The trace, printed exactly as the reference runner prints it.
    pub trace: String,
    /// Steps whose result did not match their `expect_error`.
    pub mismatches: Vec<String>,
    /// Network counters (network runs only).
    pub stats: Option<net::NetStats>,
    /// Broken invariants (network runs only).
    pub violations: Vec<check::Violation>,
}

/// Runs `scenario` in process and renders its trace.
pub fn run_in_process(scenario: &Scenario) -> Outcome {
    let run = runner::run(scenario);
    Outcome {
        trace: trace::render(&scenario.name, &run),
        mismatches: run.mismatches,
        stats: None,
        violations: Vec::new(),
    }
}

/// Runs `scenario` on the simulated network with `seed` and renders its trace.
pub fn run_on_network(scenario: &Scenario, seed: u64) -> Outcome {
    run_on_network_with(scenario, seed, crate::hub::Bugs::default())
}

/// [`run_on_network`] on a hub with deliberate defects switched on.
pub fn run_on_network_with(scenario: &Scenario, seed: u64, bugs: crate::hub::Bugs) -> Outcome {
    let run = net::run_with(scenario, seed, bugs);
    let mut mismatches = run.run.mismatches.clone();
    mismatches.extend(run.notes.iter().map(|note| format!("hubsim: {note}")));
    Outcome {
        trace: trace::render(&scenario.name, &run.run),
        mismatches,
        stats: Some(run.stats),
        violations: run.violations,
    }
}
