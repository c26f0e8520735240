//! Random scenarios: a cast of 2 to 4 agents (default handlers mostly, some ack-only, silent or
//! human, some with an inbox cap), channels of every type, a script of sends, waits, closes,
//! rule changes and unregistrations, and a fault schedule drawn swarm-style (each fault kind
//! on or off for the case). Every random decision is drawn here,
//! from the case's `fuzz` stream, and written into the scenario as an explicit value: fixed
//! latencies and model time, faults at fixed times. The scenario then runs without a random
//! draw, so it replays from its text alone.

use crate::sim::random::stream;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// The scenario (as the JSON tree of its YAML) the fuzzer draws for `seed`.
pub fn scenario(seed: u64) -> Value {
    let mut rng = stream(seed, "fuzz");
    let agents = rng.random_range(2..=4usize);
    let names: Vec<&str> = NAMES[..agents].to_vec();
    let mut root = Map::new();
    root.insert("name".into(), json!(format!("fuzz_{seed}")));
    root.insert(
        "description".into(),
        json!(format!("Drawn by `hubsim fuzz` from seed {seed}.")),
    );
    root.insert(
        "hub".into(),
        json!({"step_timeout": pick(&mut rng, &[1, 10, 10])}),
    );
    root.insert("network".into(), network(&mut rng, &names));
    root.insert(
        "agents".into(),
        Value::Array(names.iter().map(|n| agent(&mut rng, n)).collect()),
    );
    root.insert("steps".into(), Value::Array(steps(&mut rng, &names)));
    Value::Object(root)
}

fn pick<T: Clone>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())].clone()
}

fn chance(rng: &mut ChaCha8Rng, percent: u32) -> bool {
    rng.random_range(0..100) < percent
}

fn ms(millis: u64) -> Value {
    json!(format!("{millis}ms"))
}

fn network(rng: &mut ChaCha8Rng, names: &[&str]) -> Value {
    let mut network = Map::new();
    network.insert("latency".into(), ms(pick(rng, &[0, 1, 5, 20])));
    network.insert("model_time".into(), ms(pick(rng, &[0, 500, 2000, 5000])));
    network.insert("sync".into(), ms(pick(rng, &[0, 0, 100, 1000])));
    network.insert(
        "reconnect".into(),
        pick(rng, &[ms(1000), ms(1000), ms(5000), Value::Null]),
    );
    if chance(rng, 30) {
        network.insert("ttl_sweep".into(), ms(5000));
    }
    // Swarm testing: each fault kind is on or off for the case, and an enabled kind gets
    // its own number of faults.
    let mut faults = Vec::new();
    for kind in 0..5 {
        if !chance(rng, 50) {
            continue;
        }
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..40_000u64);
            let lasts = pick(rng, &[500, 2_000, 10_000, 45_000u64]);
            let who = pick(rng, names);
            match kind {
                0 => {
                    faults.push(json!({"at": ms(at), "partition": who}));
                    faults.push(json!({"at": ms(at + lasts), "repair": who}));
                }
                1 => {
                    faults.push(json!({"at": ms(at), "hold": who}));
                    faults.push(json!({"at": ms(at + lasts), "release": who}));
                }
                2 => faults.push(json!({"at": ms(at), "disconnect": who})),
                3 => {
                    faults.push(json!({"at": ms(at), "crash": "hub"}));
                    faults.push(json!({"at": ms(at + lasts.min(5_000)), "restart": "hub"}));
                }
                _ => faults.push(json!({
                    "at": ms(at), "latency": ms(pick(rng, &[50, 500, 2000])), "agent": who
                })),
            }
        }
    }
    if !faults.is_empty() {
        network.insert("faults".into(), Value::Array(faults));
    }
    Value::Object(network)
}

fn agent(rng: &mut ChaCha8Rng, name: &str) -> Value {
    let mut agent = Map::new();
    agent.insert("name".into(), json!(name));
    match rng.random_range(0..20) {
        0..=13 => {}
        14..=16 => {
            agent.insert("handler".into(), json!("ack_only"));
        }
        17 => {
            agent.insert("handler".into(), json!("silent"));
        }
        _ => {
            agent.insert("kind".into(), json!("human"));
        }
    }
    let replies: Vec<Value> = (1..=rng.random_range(1..=4))
        .map(|turn| {
            if chance(rng, 10) {
                json!("")
            } else {
                json!(format!("{name} {turn}"))
            }
        })
        .collect();
    let mut replies = replies;
    if chance(rng, 20) {
        // A `finish` tool, called in one of its turns (a workflow closes on it).
        agent.insert(
            "tools".into(),
            json!([{"name": "finish", "finish": {"reason": "done early"}}]),
        );
        let turn = rng.random_range(0..replies.len());
        replies[turn] = json!([
            {"tool_call": {"name": "finish", "arguments": {"summary": format!("{name} is done")}}},
            format!("{name} finishing")
        ]);
    }
    agent.insert("replies".into(), Value::Array(replies));
    if chance(rng, 20) {
        agent.insert(
            "rule".into(),
            json!({"limits": {"inbox": {"max_pending": rng.random_range(1..=3)}}}),
        );
    }
    Value::Object(agent)
}

/// An open by `by` of a drawn type, labelled `label`; returns the step and its participants.
fn open(rng: &mut ChaCha8Rng, names: &[&str], by: &str, label: &str) -> (Value, Vec<String>) {
    let others: Vec<&str> = names.iter().copied().filter(|n| *n != by).collect();
    let kinds: &[&str] = if others.len() >= 2 {
        &["consulting", "conversation", "discussion", "workflow"]
    } else {
        &["consulting", "conversation", "workflow"]
    };
    let kind = pick(rng, kinds);
    let targets: Vec<&str> = match kind {
        "consulting" | "conversation" => vec![pick(rng, &others)],
        _ => {
            let count = rng.random_range(1..=others.len());
            others[..count].to_vec()
        }
    };
    let mut step = Map::new();
    step.insert("op".into(), json!("open"));
    step.insert("as".into(), json!(label));
    step.insert("by".into(), json!(by));
    step.insert("type".into(), json!(kind));
    step.insert("target".into(), json!(targets));
    match kind {
        "discussion" => {
            step.insert("knobs".into(), json!({"ordering": "round_robin"}));
        }
        "workflow" => {
            let transitions = if chance(rng, 50) {
                json!([{"when": {"name": "always", "args": {}},
                        "then": {"name": "round_robin", "args": {}}}])
            } else {
                // A sequence through the participants, then the default target.
                let mut order = vec![by];
                order.extend(targets.iter().copied());
                let hops: Vec<Value> = order
                    .windows(2)
                    .map(|pair| json!({
                        "when": {"name": "from_speaker", "args": {"agent_id": {"$id": pair[0]}}},
                        "then": {"name": "agent", "args": {"agent_id": {"$id": pair[1]}}},
                        "priority": 0
                    }))
                    .collect();
                Value::Array(hops)
            };
            step.insert(
                "knobs".into(),
                json!({"graph": {
                    "initial_speaker": {"$id": by},
                    "max_turns": rng.random_range(2..=6),
                    "default_target": {"name": "terminate", "args": {"reason": "sequence_complete"}},
                    "transitions": transitions
                }}),
            );
        }
        _ => {}
    }
    if chance(rng, 25) {
        step.insert("ttl".into(), json!(pick(rng, &[5, 20, 60])));
    }
    if chance(rng, 10) {
        step.insert("wait".into(), json!(false));
    }
    let mut members = vec![by.to_string()];
    members.extend(targets.iter().map(|t| t.to_string()));
    (Value::Object(step), members)
}

/// A send on one of `channels`: mostly a text from a participant, sometimes from anyone, with
/// an explicit audience, an empty text or a custom event type.
fn send(
    rng: &mut ChaCha8Rng,
    names: &[&str],
    channels: &[(String, Vec<String>)],
    idx: usize,
) -> Value {
    let (label, members) = pick(rng, channels);
    let by = if chance(rng, 90) {
        pick(rng, &members)
    } else {
        pick(rng, names).to_string()
    };
    let mut step =
        json!({"op": "send", "channel": label, "by": by, "text": format!("{by} says {idx}")});
    match rng.random_range(0..20) {
        0..=2 => {
            let count = rng.random_range(1..=names.len());
            step["audience"] = json!(names[..count].to_vec());
        }
        3 => step["text"] = json!(""),
        4..=5 => {
            step["event_type"] = json!("app.note");
            step["event_data"] = json!({"note": idx});
        }
        // Workflow payloads, well-formed or not (a workflow's fold rejects the malformed ones
        // after the append, as ag2's does).
        6 => {
            step["event_type"] = json!("ag2.packet");
            step["event_data"] = pick(
                rng,
                &[
                    json!({"body": format!("packet {idx}")}),
                    json!({"body": "x", "routing": "not a mapping"}),
                ],
            );
        }
        7 => {
            step["event_type"] = json!("ag2.context.set");
            step["event_data"] = pick(
                rng,
                &[
                    json!({"set": {"k": idx}, "delete": []}),
                    json!({"set": {}, "delete": 3}),
                ],
            );
        }
        _ => {}
    }
    step
}

fn steps(rng: &mut ChaCha8Rng, names: &[&str]) -> Vec<Value> {
    let mut steps = Vec::new();
    let mut channels: Vec<(String, Vec<String>)> = Vec::new();
    let (first, members) = open(rng, names, names[0], "ch1");
    steps.push(first);
    channels.push(("ch1".into(), members));
    for idx in 0..rng.random_range(1..=9) {
        let step = match rng.random_range(0..26) {
            0..=8 => send(rng, names, &channels, idx),
            9..=12 => json!({"op": "wait", "seconds": pick(rng, &[1, 5, 15, 45])}),
            13..=14 => {
                let (label, members) = pick(rng, &channels);
                let mut close = json!({"op": "close", "channel": label, "by": pick(rng, &members)});
                if chance(rng, 30) {
                    close["via"] = json!("hub");
                    close["reason"] = json!("closed by the hub");
                }
                close
            }
            15..=16 if channels.len() < 3 => {
                let label = format!("ch{}", channels.len() + 1);
                let by = pick(rng, names);
                let (step, members) = open(rng, names, by, &label);
                channels.push((label, members));
                step
            }
            17 => json!({
                "op": "set_rule",
                "agent": pick(rng, names),
                "rule": {"limits": {"inbox": {"max_pending": rng.random_range(0..=2)}}}
            }),
            18 => json!({
                "op": "set_rule",
                "agent": pick(rng, names),
                "rule": {"access": {"inbound_from": [pick(rng, names)]}}
            }),
            19 => json!({"op": "unregister", "agent": pick(rng, names)}),
            20 => json!({"op": pick(rng, &["ttl_tick", "expectation_tick"])}),
            21 => json!({
                "op": "checkpoint", "agent": pick(rng, names), "task": "t1",
                "state": {"step": idx}
            }),
            22 => json!({"op": "read_checkpoint", "agent": pick(rng, names), "task": "t1"}),
            _ => json!({"op": "advance", "seconds": pick(rng, &[10, 70, 700])}),
        };
        steps.push(step);
    }
    steps.push(json!({"op": "wait", "seconds": 60}));
    steps
}
