//! Params of every odd shape: each gets a response, never a panic, and the shapes ag2 was
//! run on answer with ag2's bytes.

use super::*;

/// Every op, every param key any op reads, every shape of JSON value: an answer, never a panic.
#[test]
fn bad_params_never_panic() {
    let mut world = world();
    let keys = [
        "passport",
        "resume",
        "rule",
        "skill_md",
        "name_or_id",
        "agent_id",
        "name",
        "agent_ids",
        "capability",
        "query",
        "kind",
        "sort_by",
        "limit",
        "creator_id",
        "manifest_type",
        "manifest_version",
        "participants",
        "required_acks",
        "ttl",
        "knobs",
        "intent",
        "labels",
        "channel_id",
        "reason",
        "envelope",
        "since",
        "until",
        "sender_id",
        "causation_id",
        "event_type",
        "envelope_id",
        "error",
        "task_id",
        "state",
        "metadata",
        "progress",
        "result",
        "owner_id",
        "outcome",
        "latency_ms",
        "payload",
    ];
    let ids: Vec<String> = world.ids.iter().map(|(_, id)| id.clone()).collect();
    let mut values = vec![
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!(""),
        json!("x"),
        json!("t1"),
        json!([]),
        json!([1]),
        json!([[1, 2]]),
        json!(["x", "y"]),
        json!({}),
        json!({"a": 1}),
        json!("ffffffffffffffffffffffffffffffff"),
    ];
    values.extend(ids.iter().map(|id| json!(id)));
    values.push(json!(ids));
    let nested = [
        "channel_id",
        "sender_id",
        "audience",
        "event_type",
        "event_data",
        "task_id",
        "owner_id",
        "name",
        "kind",
        "auth",
        "cost",
        "depth",
        "priority",
        "spec",
        "state",
        "examples",
        "observed",
        "access",
        "limits",
    ];
    let mut count = 0;
    for op in OPS {
        for key in keys {
            for value in &values {
                for connection in ["a", "d"] {
                    world.send(connection, "r", op, json!({key: value}));
                    count += 1;
                }
            }
        }
        for parent in ["passport", "resume", "rule", "envelope", "metadata"] {
            for key in nested {
                for value in &values {
                    let mut params = json!({"agent_id": ids[0], "task_id": "t1", "resume": {}});
                    params[parent] = json!({key: value, "sender_id": ids[0], "owner_id": ids[0],
                        "name": "zed", "channel_id": ids[3], "event_type": "ag2.msg.text",
                        "audience": null, "event_data": {}, "task_id": "t1"});
                    params[parent][key] = value.clone();
                    world.send("a", "r", op, params);
                    count += 1;
                }
            }
        }
    }
    assert!(count > 10_000);
}

/// Odd shapes, answered as ag2 1.2.1 answered them in the same world: auth blocks, names and ids
/// of the wrong type, unhashable params.
#[test]
fn odd_param_shapes_answer_like_ag2() {
    let mut world = World::with_connections(2);
    let alice = world.register("a", "alice", json!({}));
    let bob = world.register("b", "bob", json!({}));
    let unhashable = (false, "error", "unhashable type: 'list'".to_string());
    let cases = [
        (
            "register",
            json!({"passport": {"name": "x", "auth": "s"}, "resume": {}}),
            (
                false,
                "error",
                "'str' object has no attribute 'scheme'".to_string(),
            ),
        ),
        (
            "register",
            json!({"passport": {"name": "x", "auth": {"scheme": 5}}, "resume": {}}),
            (false, "auth_failed", "unknown auth scheme: 5".to_string()),
        ),
        (
            "register",
            json!({"passport": {"name": "x", "auth": {"scheme": [5]}}, "resume": {}}),
            unhashable.clone(),
        ),
        (
            "register",
            json!({"passport": {"name": None::<()>}, "resume": {}}),
            (
                false,
                "error",
                "expected string or bytes-like object, got 'NoneType'".to_string(),
            ),
        ),
        (
            "list_agents",
            json!({"capability": [5]}),
            unhashable.clone(),
        ),
        (
            "can_send",
            json!({"sender_id": alice, "channel_id": [1]}),
            unhashable.clone(),
        ),
        (
            "create_channel",
            json!({"creator_id": alice, "manifest_type": "consulting", "participants": [bob],
                "manifest_version": true, "ttl": "1.5h"}),
            (
                false,
                "error",
                "invalid literal for int() with base 10: '1.5'".to_string(),
            ),
        ),
        (
            "create_channel",
            json!({"creator_id": alice, "manifest_type": ["consulting"], "participants": [bob]}),
            unhashable.clone(),
        ),
        (
            "create_channel",
            json!({"creator_id": alice, "manifest_type": "consulting", "participants": [[bob]]}),
            unhashable.clone(),
        ),
        (
            "create_channel",
            json!({"creator_id": alice, "manifest_type": "consulting", "participants": [bob, 5]}),
            (
                false,
                "not_found",
                "participant not registered: 5".to_string(),
            ),
        ),
        (
            "report_turn_failure",
            json!({"agent_id": alice, "channel_id": [1], "envelope_id": "e"}),
            unhashable.clone(),
        ),
        (
            "observe_task",
            json!({"metadata": {"task_id": "t5", "owner_id": alice, "channel_id": [1]}}),
            unhashable.clone(),
        ),
        (
            "observe_task",
            json!({"metadata": {"task_id": "t6", "owner_id": alice, "state": 5}}),
            (
                false,
                "error",
                "'int' object has no attribute 'value'".to_string(),
            ),
        ),
        (
            "observe_task",
            json!({"metadata": {"owner_id": alice}}),
            (false, "error", "'task_id'".to_string()),
        ),
        (
            "observe_task",
            json!({"metadata": {"task_id": None::<()>, "owner_id": alice}}),
            (true, "", String::new()),
        ),
        (
            "get_task",
            json!({"task_id": None::<()>}),
            (false, "not_found", "task not found: None".to_string()),
        ),
    ];
    for (op, params, (ok, code, message)) in cases {
        let got = answer(&world.call("a", op, params.clone()));
        assert_eq!(got, (ok, code.to_string(), message), "{op} {params}");
    }
    let names = world.ok(
        "a",
        "names_for",
        json!({"agent_ids": {alice.as_str(): 1, "q": 2}}),
    );
    assert_eq!(names, json!({alice.as_str(): "alice", "q": "q"}));
    assert_eq!(
        world.ok("a", "list_agents", json!({"capability": 5})),
        json!([])
    );
    let id = world.ok(
        "a",
        "register",
        json!({"passport": {"name": "x", "auth": {"claim": 5}}, "resume": {}}),
    );
    assert_eq!(id["auth"]["claim"], json!({}));
}
