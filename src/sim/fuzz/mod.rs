//! Fuzzing: random scenarios ([`generate`]) run on the simulated network with every invariant
//! checked; each distinct failure (a violation kind, or a divergence between two runs) is
//! shrunk ([`shrink`]) to a small scenario that replays it from its text alone, and triaged as
//! one of ag2's known holes or as unexplained (a hubsim bug until shown otherwise).

pub mod explicit;
pub mod generate;
pub mod shrink;

use super::check::{ag2_behaviour, Hole};
use super::scenario::Scenario;
use super::sweep::run_seed;
use crate::hub::Bugs;
use serde_json::Value;
use std::collections::BTreeMap;

/// The failure kind of two runs that diverge.
pub const DIVERGED: &str = "determinism/diverged";

/// The YAML text of a scenario tree.
pub fn to_yaml(tree: &Value) -> String {
    serde_yaml::to_string(tree).unwrap_or_default()
}

/// A failure's signature: its kind, and the adapter of the channel it happened in
/// (`delivery/duplicate_turn@workflow`). Distinct signatures are distinct findings.
pub fn signature(violation: &super::check::Violation) -> String {
    match violation.adapter {
        Some(adapter) => format!("{}@{adapter}", violation.kind),
        None => violation.kind.to_string(),
    }
}

/// Runs the scenario tree with `seed` and returns each failure signature it shows with its
/// first message (with the trace's names, as [`run_seed`] reports it); `Err` if the tree is
/// not a valid scenario.
pub fn failures(tree: &Value, seed: u64, bugs: Bugs) -> Result<BTreeMap<String, String>, String> {
    let scenario = Scenario::parse(&to_yaml(tree), "fuzz")?;
    let outcome = run_seed(&scenario, seed, bugs);
    let mut found = BTreeMap::new();
    for violation in &outcome.violations {
        found
            .entry(signature(violation))
            .or_insert_with(|| violation.to_string());
    }
    if let Some(divergence) = &outcome.divergence {
        found.insert(DIVERGED.to_string(), divergence.to_string());
    }
    Ok(found)
}

/// The tree with each step that fails given an `expect_error` naming the error type it fails
/// with, so a scenario file records its steps' outcomes (a generated step may fail: a send out
/// of turn, a close by an outsider, a step timeout under a fault).
pub fn pin_step_outcomes(tree: &Value, seed: u64, bugs: Bugs) -> Value {
    let mut out = tree.clone();
    let Ok(scenario) = Scenario::parse(&to_yaml(tree), "fuzz") else {
        return out;
    };
    let run = super::events::run(&scenario, seed, bugs, super::EventLog::off());
    let network_only = scenario.network_only();
    let Some(steps) = out.get_mut("steps").and_then(Value::as_array_mut) else {
        return out;
    };
    for record in &run.run.steps {
        let error_type = record.error.as_ref().map(|e| e.type_name.as_str());
        if let (Some(step), Some(error_type)) = (steps.get_mut(record.idx), error_type) {
            if step.get("expect_error").is_none() {
                // A reference-format scenario is also run in process, where errors keep their
                // Python types (over the wire some arrive as a bare NetworkError): it expects
                // a failure of any type.
                step["expect_error"] = if network_only {
                    serde_json::json!({"type": error_type})
                } else {
                    serde_json::json!({})
                };
            }
        }
    }
    out
}

/// Whether the tree still shows failure `kind` with `seed`.
pub fn still_fails(tree: &Value, seed: u64, bugs: Bugs, kind: &str) -> bool {
    failures(tree, seed, bugs).is_ok_and(|found| found.contains_key(kind))
}

/// The ag2 behaviour a failure signature shows, if it is one (a delivery hole or a hub
/// surprise).
pub fn classify(signature: &str) -> Option<&'static Hole> {
    ag2_behaviour(signature.split('@').next().unwrap_or_default())
}

/// A file-name stem for a failure signature.
pub fn stem(signature: &str) -> String {
    signature.replace(['/', '@'], "_")
}

/// One distinct failure the fuzzer found.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The failure signature ([`signature`]).
    pub kind: String,
    /// The first case that showed it.
    pub seed: u64,
    /// Cases that showed it.
    pub cases: u64,
    /// Its message in the first case.
    pub message: String,
}

/// What the fuzzer found over some cases.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Cases run.
    pub cases: u64,
    /// By failure kind.
    pub by_kind: BTreeMap<String, Finding>,
}

impl Findings {
    /// Runs the case drawn from `seed` and records what it shows.
    pub fn run_case(&mut self, seed: u64, bugs: Bugs) {
        self.cases += 1;
        let tree = generate::scenario(seed);
        let Ok(found) = failures(&tree, 0, bugs) else {
            return;
        };
        for (kind, message) in found {
            self.by_kind
                .entry(kind.clone())
                .and_modify(|f| f.cases += 1)
                .or_insert(Finding {
                    kind,
                    seed,
                    cases: 1,
                    message,
                });
        }
    }

    /// Adds findings of other cases; for a kind both saw, the lower seed is kept as first.
    pub fn merge(&mut self, other: Findings) {
        self.cases += other.cases;
        for (kind, finding) in other.by_kind {
            match self.by_kind.get_mut(&kind) {
                Some(mine) => {
                    mine.cases += finding.cases;
                    if finding.seed < mine.seed {
                        mine.seed = finding.seed;
                        mine.message = finding.message;
                    }
                }
                None => {
                    self.by_kind.insert(kind, finding);
                }
            }
        }
    }
}

/// A finding shrunk into a scenario file's text named `name`, saying where it came from
/// (`origin`), what it shows and how it is classified; `also` lists every failure signature the
/// shrunk scenario shows.
pub fn regression_yaml(
    name: &str,
    origin: &str,
    finding: &Finding,
    shrunk: &Value,
    also: &[String],
    from: usize,
    runs: usize,
) -> String {
    let class = match classify(&finding.kind) {
        Some(hole) => format!(
            "ag2 1.2.1 behaviour ({}): {}.",
            hole.section, hole.explanation
        ),
        None => "Unexplained: a hubsim bug until shown otherwise.".to_string(),
    };
    let description = format!(
        "Found by {origin}, shrunk from {from} to {} steps and faults in {runs} runs. It shows \
         {} {class}",
        shrink::size(shrunk),
        finding.message
    );
    let mut ordered = serde_json::Map::new();
    ordered.insert("name".into(), Value::String(name.to_string()));
    ordered.insert("description".into(), Value::String(description));
    if let Some(hole) = classify(&finding.kind) {
        // ag2's own behaviour: on record, and the sweep fails if it stops showing. Other holes
        // the scenario shows on the way are listed too.
        let mut known: Vec<&str> = also
            .iter()
            .filter_map(|k| classify(k))
            .map(|h| h.kind)
            .collect();
        known.push(hole.kind);
        known.sort_unstable();
        known.dedup();
        let known: Vec<Value> = known
            .iter()
            .map(|k| serde_json::json!({"kind": k}))
            .collect();
        ordered.insert("known_violations".into(), Value::Array(known));
        ordered.insert("expect_reached".into(), serde_json::json!([hole.kind]));
    }
    // Its faults fall at the event driver's moments (registration there takes no time).
    ordered.insert("backends".into(), serde_json::json!(["events"]));
    for (key, value) in shrunk.as_object().into_iter().flatten() {
        if !matches!(
            key.as_str(),
            "name" | "description" | "known_violations" | "expect_reached" | "backends"
        ) {
            ordered.insert(key.clone(), value.clone());
        }
    }
    to_yaml(&Value::Object(ordered))
}
