//! The fault file of `hubsim serve --faults FILE`: the scenario format's timed faults and
//! `chaos` profile, applied to real connections by agent name at offsets from the start of the
//! serve. Loaded as strictly as a scenario, with errors located the same way.
//!
//! ```yaml
//! faults:                                  # as network.faults, at offsets from the start
//!   - {at: 10s, disconnect: bob}
//!   - {at: 20s, partition: alice}
//!   - {at: 50s, repair: alice}
//!   - {at: 60s, crash: hub}
//!   - {at: 65s, restart: hub}
//!   - {at: 70s, latency: 50ms..200ms, agent: bob}
//! keepalive: 40s        # a partitioned connection is cut after this (default 40s)
//! agents: [alice, bob]  # who `chaos` draws from (required with chaos)
//! chaos: {from: 1m, until: 10m, faults: [partition, hold, disconnect, latency], rate: 0.01..0.05}
//! ```

use super::checking::{self, ChaosFields};
use super::network::{duration_micros, timed_fault, FaultFields};
use super::source::{self, Problem};
use super::{limits, Chaos, Diag, Location, ScenarioError, TimedFault};
use serde::Deserialize;
use std::path::Path;

/// What `hubsim serve --faults FILE` injects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Timed faults, in file order (applied in time order).
    pub faults: Vec<TimedFault>,
    /// How long a partitioned connection lives (µs): then both ends see it cut.
    pub keepalive: u64,
    /// The agents `chaos` draws from.
    pub agents: Vec<String>,
    /// The random fault profile, drawn from `--seed`.
    pub chaos: Option<Chaos>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFields {
    #[serde(default)]
    faults: Vec<FaultFields>,
    keepalive: Option<serde_yaml::Value>,
    #[serde(default)]
    agents: Vec<String>,
    chaos: Option<ChaosFields>,
}

/// The keepalive of ag2's `websockets`: a ping every 20 s, 20 s to answer it.
const KEEPALIVE_DEFAULT: u64 = 40_000_000;

impl FaultPlan {
    /// Reads a fault file.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the file and, for format errors, the line and column.
    pub fn load(path: &Path) -> Result<FaultPlan, ScenarioError> {
        let io = |source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > limits::FILE_BYTES_MAX {
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "file is {size} bytes; at most {} are read",
                    limits::FILE_BYTES_MAX
                ),
                at: None,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|error| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "not UTF-8 (at byte {}): fault files are UTF-8 text",
                error.utf8_error().valid_up_to()
            ),
            at: None,
        })?;
        FaultPlan::parse_text(&text).map_err(|diag| ScenarioError::Invalid {
            path: path.to_path_buf(),
            message: diag.message,
            at: diag.at.map(|at| Location::of(&text, at)),
        })
    }

    /// Parses a fault file's text.
    ///
    /// # Errors
    /// `LINE:COLUMN: message`.
    pub fn parse(text: &str) -> Result<FaultPlan, String> {
        FaultPlan::parse_text(text).map_err(|diag| match diag.at {
            Some(offset) => {
                let at = source::line_column(text, offset);
                format!("{}:{}: {}", at.line, at.column, diag.message)
            }
            None => diag.message,
        })
    }

    fn parse_text(text: &str) -> Result<FaultPlan, Diag> {
        let scan = source::prescan(text).map_err(|refusal| Diag {
            message: refusal.message,
            at: Some(refusal.offset),
        })?;
        if scan.content.is_none() {
            return Err(Diag {
                message: "empty fault file: expected a mapping with `faults` and/or `chaos`".into(),
                at: Some(0),
            });
        }
        let fields: PlanFields =
            serde_yaml::from_str(text).map_err(|error| Diag::from_yaml(text, &error, &scan))?;
        fields.check().map_err(|problem| Diag::find(text, problem))
    }
}

impl PlanFields {
    fn check(self) -> Result<FaultPlan, Problem> {
        let mut plan = FaultPlan {
            keepalive: KEEPALIVE_DEFAULT,
            agents: self.agents,
            ..FaultPlan::default()
        };
        for (idx, fault) in self.faults.iter().enumerate() {
            let timed = timed_fault(fault).map_err(|p| {
                Problem {
                    message: format!("faults[{idx}]: {}", p.message),
                    ..p
                }
                .within([source::Seg::from("faults"), idx.into()])
            })?;
            plan.faults.push(timed);
        }
        if let Some(value) = &self.keepalive {
            plan.keepalive = duration_micros(value)
                .map_err(|e| Problem::at(format!("keepalive: {e}"), ["keepalive"]))?;
        }
        if let Some(fields) = self.chaos {
            if plan.agents.is_empty() {
                return Err(Problem::key(
                    "`chaos` draws its faults' agents from `agents`: add `agents: [NAME, ...]`",
                    ["chaos"],
                ));
            }
            plan.chaos = Some(checking::chaos(fields).map_err(|p| p.within(["chaos"]))?);
        }
        for (idx, name) in plan.agents.iter().enumerate() {
            if plan.agents[..idx].contains(name) {
                return Err(Problem::at(
                    format!("agents: `{name}` is listed twice"),
                    [source::Seg::from("agents"), idx.into()],
                ));
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::FaultPlan;
    use crate::sim::scenario::Fault;

    #[test]
    fn fault_files_read_timed_faults_and_chaos() {
        let plan = FaultPlan::parse(
            "faults:\n  - {at: 2s, disconnect: bob}\n  - {at: 3s, crash: hub}\nkeepalive: 5s\n\
             agents: [alice, bob]\nchaos: {from: 1s, until: 1m, faults: [hold]}\n",
        )
        .expect("parses");
        assert_eq!(plan.faults.len(), 2);
        assert_eq!(plan.faults[0].at, 2_000_000);
        assert_eq!(plan.faults[0].fault, Fault::Disconnect("bob".into()));
        assert_eq!(plan.faults[1].fault, Fault::Crash);
        assert_eq!(plan.keepalive, 5_000_000);
        let chaos = plan.chaos.expect("chaos");
        assert_eq!(chaos.until, 60_000_000);
    }

    #[test]
    fn fault_files_refuse_with_a_position() {
        for (text, expected) in [
            (
                "faults:\n  - {at: 2s, explode: bob}\n",
                "2:14: faults[0]: unknown field `explode`",
            ),
            (
                "faults:\n  - {at: 2s, crash: bob}\n",
                "2:21: faults[0]: `crash: bob`: only `hub` can crash",
            ),
            ("chaos: {until: 1m, faults: [hold]}\n", "1:1: `chaos` draws"),
            ("keepalive: soon\n", "1:12: keepalive:"),
            ("", "1:1: empty fault file"),
        ] {
            let error = FaultPlan::parse(text).expect_err(text);
            assert!(
                error.starts_with(expected),
                "{text:?}: got {error:?}, expected it to start with {expected:?}"
            );
        }
    }
}
