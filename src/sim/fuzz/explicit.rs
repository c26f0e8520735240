//! A seeded run of an existing scenario made explicit, for `hubsim shrink FILE --seed N`: the
//! chaos profile's faults for that seed become timed faults, latency and model-time ranges are
//! pinned to their lower bound where the failure survives it, and the sweep keys that would
//! hide the failure go. A scenario with nothing left to draw drops its seed.

use super::still_fails;
use crate::hub::Bugs;
use crate::sim::scenario::{Fault, Range, Scenario};
use crate::sim::{chaos, events, EventLog};
use serde_json::{json, Map, Value};

/// `fault` at `at` µs, as a `network.faults` entry.
pub fn fault_json(at: u64, fault: &Fault) -> Value {
    let at = json!(format!("{at}us"));
    let range = |r: &Range| json!(format!("{}us..{}us", r.min, r.max));
    match fault {
        Fault::Partition(a) => json!({"at": at, "partition": a}),
        Fault::Repair(a) => json!({"at": at, "repair": a}),
        Fault::Hold(a) => json!({"at": at, "hold": a}),
        Fault::Release(a) => json!({"at": at, "release": a}),
        Fault::Disconnect(a) => json!({"at": at, "disconnect": a}),
        Fault::Crash => json!({"at": at, "crash": "hub"}),
        Fault::Restart => json!({"at": at, "restart": "hub"}),
        Fault::Latency { agent, range: r } => match agent {
            Some(agent) => json!({"at": at, "latency": range(r), "agent": agent}),
            None => json!({"at": at, "latency": range(r)}),
        },
    }
}

/// The tree of `scenario`'s file made explicit for `seed`, keeping failure `kind`.
pub fn explicit(tree: &Value, scenario: &Scenario, seed: u64, bugs: Bugs, kind: &str) -> Value {
    let mut out = tree.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    for key in ["seeds", "known_violations", "expect_reached"] {
        map.remove(key);
    }
    map.insert("seed".into(), json!(seed));
    let mut current = out.clone();
    if let Some(chaos_profile) = &scenario.sweep.chaos {
        let run = events::run(scenario, seed, bugs, EventLog::off());
        let start = run.chaos_start.unwrap_or(0);
        let names: Vec<String> = scenario.agents.iter().map(|a| a.name.clone()).collect();
        let mut candidate = current.clone();
        let faults = chaos::schedule(chaos_profile, seed, &names, scenario.network.latency)
            .into_iter()
            .filter(|(at, _)| *at < chaos_profile.until)
            .map(|(at, fault)| fault_json(start + at, &fault));
        if let Some(map) = candidate.as_object_mut() {
            map.remove("chaos");
            let network = map
                .entry("network")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(network) = network.as_object_mut() {
                let list = network
                    .entry("faults")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(list) = list.as_array_mut() {
                    list.extend(faults);
                }
            }
            // The chaos phase ran on to `until`; a final wait keeps that time.
            if let Some(steps) = map.get_mut("steps").and_then(Value::as_array_mut) {
                let seconds = (start + chaos_profile.until).div_ceil(1_000_000);
                steps.push(json!({"op": "wait", "seconds": seconds}));
            }
        }
        if still_fails(&candidate, seed, bugs, kind) {
            current = candidate;
        }
    }
    for key in ["latency", "model_time"] {
        let Some(range) = scenario_range(scenario, key) else {
            continue;
        };
        if range.min == range.max {
            continue;
        }
        let mut candidate = current.clone();
        candidate["network"][key] = json!(format!("{}us", range.min));
        if still_fails(&candidate, seed, bugs, kind) {
            current = candidate;
        }
    }
    if let Ok(pinned) = Scenario::parse(&super::to_yaml(&current), "explicit") {
        if !pinned.draws_randomly() {
            if let Some(map) = current.as_object_mut() {
                map.remove("seed");
            }
        }
    }
    current
}

fn scenario_range(scenario: &Scenario, key: &str) -> Option<Range> {
    match key {
        "latency" => Some(scenario.network.latency),
        "model_time" => Some(scenario.network.model_time),
        _ => None,
    }
}
