//! Shrinking a failing scenario, as the JSON tree of its YAML: drop faults, then steps, then
//! open targets and audience entries, then unused agents and scripted replies, then optional
//! keys; then shorten waits, fault times and durations; when single cuts are stuck, pairs of
//! faults or steps, and steps replaced by a wait of a second (a step that only lets time pass),
//! adjacent waits merged. Each cut is kept only if the same failure still shows, and passes
//! repeat until none cuts anything (or the run budget is spent). Works on any scenario file,
//! generated or written by hand.

use serde_json::Value;

/// How many runs a shrink may spend.
pub const RUNS_MAX: usize = 2_000;

/// What shrinking did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    /// The smallest failing scenario found.
    pub scenario: Value,
    /// Runs spent.
    pub runs: usize,
}

/// The scenario's steps plus its timed faults: the size shrinking reduces first.
pub fn size(scenario: &Value) -> usize {
    let steps = scenario["steps"].as_array().map_or(0, Vec::len);
    let faults = scenario["network"]["faults"].as_array().map_or(0, Vec::len);
    steps + faults
}

/// Shrinks `scenario` while `fails` holds (`fails(scenario)` must hold at the start).
pub fn shrink(scenario: &Value, fails: &mut dyn FnMut(&Value) -> bool) -> Shrunk {
    let mut best = scenario.clone();
    let mut runs = 0;
    let mut attempt = |candidate: &Value, runs: &mut usize| -> bool {
        if *runs >= RUNS_MAX {
            return false;
        }
        *runs += 1;
        fails(candidate)
    };
    loop {
        let before = best.clone();
        for pointer in ["/network/faults", "/steps"] {
            remove_items(&mut best, pointer, &mut |c| attempt(c, &mut runs));
        }
        // Fewer targets and addressees, so that fewer agents are needed.
        let steps = best["steps"].as_array().map_or(0, Vec::len);
        for idx in 0..steps {
            for key in ["target", "audience"] {
                remove_items(&mut best, &format!("/steps/{idx}/{key}"), &mut |c| {
                    attempt(c, &mut runs)
                });
            }
        }
        remove_unused_agents(&mut best, &mut |c| attempt(c, &mut runs));
        let agents = best["agents"].as_array().map_or(0, Vec::len);
        for idx in 0..agents {
            remove_items(&mut best, &format!("/agents/{idx}/replies"), &mut |c| {
                attempt(c, &mut runs)
            });
        }
        for path in optional_keys(&best) {
            try_edit(&mut best, &mut |c| attempt(c, &mut runs), |tree| {
                remove_key(tree, &path)
            });
        }
        for path in durations(&best) {
            shorten(&mut best, &path, &mut |c| attempt(c, &mut runs));
        }
        if best == before {
            // Stuck on single cuts: a partition and its repair, say, may only go together, and
            // a step may matter only for the time it takes.
            for pointer in ["/network/faults", "/steps"] {
                remove_pairs(&mut best, pointer, &mut |c| attempt(c, &mut runs));
            }
            let steps = best["steps"].as_array().map_or(0, Vec::len);
            for idx in (0..steps).rev() {
                try_edit(&mut best, &mut |c| attempt(c, &mut runs), |tree| {
                    let Some(step) = tree.pointer_mut(&format!("/steps/{idx}")) else {
                        return false;
                    };
                    if step["op"] == "wait" || step["op"] == "open" {
                        return false;
                    }
                    *step = serde_json::json!({"op": "wait", "seconds": 1});
                    true
                });
            }
            try_edit(&mut best, &mut |c| attempt(c, &mut runs), merge_waits);
        }
        if best == before || runs >= RUNS_MAX {
            return Shrunk {
                scenario: best,
                runs,
            };
        }
    }
}

/// Applies `edit` to a copy and keeps it if it still fails.
fn try_edit(
    best: &mut Value,
    fails: &mut dyn FnMut(&Value) -> bool,
    edit: impl FnOnce(&mut Value) -> bool,
) -> bool {
    let mut candidate = best.clone();
    if edit(&mut candidate) && fails(&candidate) {
        *best = candidate;
        return true;
    }
    false
}

/// Removes the items at `indices` (highest first) from the array at `pointer`; an emptied
/// fault list goes with its key.
fn remove_at(tree: &mut Value, pointer: &str, indices: &[usize]) -> bool {
    let Some(items) = tree.pointer_mut(pointer).and_then(Value::as_array_mut) else {
        return false;
    };
    if indices.iter().any(|idx| *idx >= items.len()) {
        return false;
    }
    for idx in indices {
        items.remove(*idx);
    }
    if items.is_empty() && pointer == "/network/faults" {
        if let Some(network) = tree["network"].as_object_mut() {
            network.remove("faults");
        }
    }
    true
}

/// The length of the array at `pointer` (0 if there is none).
fn array_len(tree: &Value, pointer: &str) -> usize {
    tree.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Tries removing each item of the array at `pointer`, last first.
fn remove_items(best: &mut Value, pointer: &str, fails: &mut dyn FnMut(&Value) -> bool) {
    for idx in (0..array_len(best, pointer)).rev() {
        try_edit(best, fails, |tree| remove_at(tree, pointer, &[idx]));
    }
}

/// Merges runs of adjacent `wait` steps whose seconds are whole numbers into one.
fn merge_waits(tree: &mut Value) -> bool {
    let Some(steps) = tree["steps"].as_array_mut() else {
        return false;
    };
    let mut merged: Vec<Value> = Vec::with_capacity(steps.len());
    let mut changed = false;
    for step in steps.drain(..) {
        let seconds = |s: &Value| (s["op"] == "wait").then(|| s["seconds"].as_u64()).flatten();
        match (merged.last_mut(), seconds(&step)) {
            (Some(last), Some(more)) if seconds(last).is_some() => {
                let total = seconds(last).unwrap_or(0) + more;
                last["seconds"] = Value::from(total);
                changed = true;
            }
            _ => merged.push(step),
        }
    }
    *steps = merged;
    changed
}

/// Tries removing each pair of items of the array at `pointer`.
fn remove_pairs(best: &mut Value, pointer: &str, fails: &mut dyn FnMut(&Value) -> bool) {
    let len = array_len(best, pointer);
    for second in (1..len).rev() {
        for first in (0..second).rev() {
            if try_edit(best, fails, |tree| {
                remove_at(tree, pointer, &[second, first])
            }) {
                // The indices moved: the next pass starts over.
                return;
            }
        }
    }
}

/// Agents no step or fault mentions.
fn remove_unused_agents(best: &mut Value, fails: &mut dyn FnMut(&Value) -> bool) {
    let names: Vec<String> = best["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .filter_map(|a| a["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for name in names.iter().rev() {
        if mentions(&best["steps"], name) || mentions(&best["network"], name) {
            continue;
        }
        try_edit(best, fails, |tree| {
            let Some(agents) = tree["agents"].as_array_mut() else {
                return false;
            };
            let before = agents.len();
            agents.retain(|a| a["name"].as_str() != Some(name));
            agents.len() < before
        });
    }
}

/// Whether `name` appears as a string anywhere in `tree`.
fn mentions(tree: &Value, name: &str) -> bool {
    match tree {
        Value::String(text) => text == name,
        Value::Array(items) => items.iter().any(|item| mentions(item, name)),
        Value::Object(map) => map.values().any(|value| mentions(value, name)),
        _ => false,
    }
}

/// Keys a scenario runs without: rules, TTLs, non-default network and hub settings,
/// descriptions are kept.
fn optional_keys(tree: &Value) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for key in ["sync", "model_time", "latency", "ttl_sweep", "reconnect"] {
        if tree["network"].get(key).is_some() {
            paths.push(vec!["network".into(), key.into()]);
        }
    }
    if tree["hub"].get("step_timeout").is_some() {
        paths.push(vec!["hub".into(), "step_timeout".into()]);
    }
    for (idx, agent) in tree["agents"].as_array().into_iter().flatten().enumerate() {
        for key in ["rule", "handler", "kind"] {
            if agent.get(key).is_some() {
                paths.push(vec!["agents".into(), idx.to_string(), key.into()]);
            }
        }
    }
    for (idx, step) in tree["steps"].as_array().into_iter().flatten().enumerate() {
        for key in ["ttl", "wait"] {
            if step.get(key).is_some() && step["op"] == "open" {
                paths.push(vec!["steps".into(), idx.to_string(), key.into()]);
            }
        }
    }
    paths
}

fn remove_key(tree: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for key in parents {
        node = match node {
            Value::Object(map) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            Value::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    node.as_object_mut()
        .is_some_and(|map| map.remove(last).is_some())
}

/// JSON pointers of the numbers and duration strings worth shortening: `wait` and `advance`
/// seconds, fault times, network durations.
fn durations(tree: &Value) -> Vec<String> {
    let mut pointers = Vec::new();
    for (idx, step) in tree["steps"].as_array().into_iter().flatten().enumerate() {
        if matches!(step["op"].as_str(), Some("wait" | "advance")) {
            pointers.push(format!("/steps/{idx}/seconds"));
        }
    }
    for (idx, _) in tree["network"]["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        pointers.push(format!("/network/faults/{idx}/at"));
    }
    for key in ["latency", "model_time", "sync", "reconnect"] {
        if tree["network"].get(key).is_some() {
            pointers.push(format!("/network/{key}"));
        }
    }
    pointers
}

/// Microseconds of a number of seconds or a duration string (`250ms`, `2s`, `12us`).
fn micros(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_f64().map(|s| (s * 1e6) as u64),
        Value::String(text) => crate::sim::scenario::duration_seconds(text)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (s * 1e6).round() as u64),
        _ => None,
    }
}

/// Tries 0, then halving, on the duration at `pointer`, while the failure holds.
fn shorten(best: &mut Value, pointer: &str, fails: &mut dyn FnMut(&Value) -> bool) {
    let Some(current) = best.pointer(pointer).and_then(micros) else {
        return;
    };
    let seconds = best.pointer(pointer).is_some_and(Value::is_number);
    let render = |us: u64| {
        if seconds {
            Value::from(us / 1_000_000)
        } else {
            Value::String(format!("{}ms", us / 1_000))
        }
    };
    let mut value = current;
    for candidate in [0, value / 2] {
        if candidate >= value || (seconds && candidate % 1_000_000 != 0 && candidate != 0) {
            continue;
        }
        let rendered = render(candidate);
        if try_edit(best, fails, |tree| match tree.pointer_mut(pointer) {
            Some(slot) => {
                *slot = rendered;
                true
            }
            None => false,
        }) {
            value = candidate;
            if value == 0 {
                return;
            }
        }
    }
    // Keep halving while it helps (at most 20 halvings).
    for _ in 0..20 {
        let candidate = value / 2;
        let rounded = if seconds {
            candidate / 1_000_000 * 1_000_000
        } else {
            candidate / 1_000 * 1_000
        };
        if rounded == 0 || rounded >= value {
            return;
        }
        let rendered = render(rounded);
        let kept = try_edit(best, fails, |tree| match tree.pointer_mut(pointer) {
            Some(slot) => {
                *slot = rendered;
                true
            }
            None => false,
        });
        if !kept {
            return;
        }
        value = rounded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cuts_what_the_failure_does_not_need() {
        let scenario = json!({
            "agents": [{"name": "alice", "replies": ["a", "b"]}, {"name": "bob", "replies": []}],
            "network": {"latency": "20ms", "faults": [
                {"at": "1000ms", "crash": "hub"}, {"at": "9000ms", "partition": "bob"}
            ]},
            "steps": [
                {"op": "open", "as": "c1", "by": "alice", "type": "conversation", "target": "alice"},
                {"op": "wait", "seconds": 40},
                {"op": "send", "channel": "c1", "by": "alice", "text": "x"}
            ]
        });
        // "Fails" while a crash happens at or after 500 ms and a wait step remains.
        let mut fails = |tree: &Value| {
            let crash = tree["network"]["faults"].as_array().is_some_and(|faults| {
                faults.iter().any(|f| {
                    f.get("crash").is_some() && micros(&f["at"]).is_some_and(|at| at >= 500_000)
                })
            });
            let wait = tree["steps"]
                .as_array()
                .is_some_and(|steps| steps.iter().any(|s| s["op"] == "wait"));
            crash && wait
        };
        let shrunk = shrink(&scenario, &mut fails);
        let tree = &shrunk.scenario;
        assert_eq!(size(tree), 2, "{tree:#}");
        assert_eq!(tree["steps"][0]["op"], "wait");
        assert_eq!(tree["steps"][0]["seconds"], 0);
        assert_eq!(tree["network"]["faults"][0]["at"], "500ms");
        assert!(tree["network"].get("latency").is_none());
        assert_eq!(tree["agents"].as_array().map(Vec::len), Some(0));
        assert!(fails(tree));
    }
}
