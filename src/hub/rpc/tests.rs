//! The control plane against ag2 1.2.1: every op and authorisation rule in a table whose expected
//! response bytes ag2 printed (`cases.rs`), missing params, unbound connections, the deferred
//! `create_channel`, a byte-exact walk-through, and a sweep of bad params that must never panic.

mod cases;
mod robustness;

use crate::hub::{Hub, HubConfig, Output};
use crate::ids::{ChannelId, EndpointId};
use crate::proto::frame::{Frame, FrameKind};
use crate::proto::EventType;
use crate::time::{Instant, Now, Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Value};

fn at(seconds: u64) -> Now {
    let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
    Now {
        wall: epoch.plus_micros(seconds as i64 * 1_000_000),
        mono: Instant(seconds * 1_000_000),
    }
}

fn quiet() -> HubConfig {
    HubConfig {
        ttl_sweep_interval_micros: 0,
        expectation_sweep_interval_micros: 0,
        ..HubConfig::default()
    }
}

fn request(request_id: &str, op: &str, params: Value) -> Frame {
    Frame::new(
        FrameKind::Request,
        vec![
            ("request_id", json!(request_id)),
            ("op", json!(op)),
            ("params", params),
        ],
    )
}

/// What a request got back.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    /// Its response.
    Response(Frame),
    /// A `create_channel` waiting for acks ([`Hub::waiting_on`]).
    Pending {
        /// The channel whose handshake is under way.
        channel: ChannelId,
        /// The request to answer.
        request_id: String,
    },
}

/// A hub with connections and the ids of what lives on it.
struct World {
    hub: Hub,
    endpoints: Vec<EndpointId>,
    /// `$A`, `$B`, `$C`, `$CH` to ids.
    ids: Vec<(&'static str, String)>,
    /// Outputs other than the responses [`World::send`] took.
    held: Vec<Output>,
}

impl World {
    /// `count` connections, nothing registered.
    fn with_connections(count: usize) -> World {
        let mut hub = Hub::new(quiet(), Instant(0));
        let endpoints = (0..count).map(|_| hub.mint_endpoint()).collect();
        World {
            hub,
            endpoints,
            ids: Vec::new(),
            held: Vec::new(),
        }
    }

    fn endpoint(&self, connection: &str) -> EndpointId {
        let idx = usize::from(connection.as_bytes()[0] - b'a');
        self.endpoints[idx]
    }

    /// Sends a request on `connection`: its response, or the channel it waits on.
    fn send(&mut self, connection: &str, request_id: &str, op: &str, params: Value) -> Reply {
        let endpoint = self.endpoint(connection);
        self.hub
            .handle_frame(at(0), endpoint, request(request_id, op, params));
        let mut response = None;
        while let Some(output) = self.hub.poll_output() {
            match output {
                Output::Frame {
                    endpoint: to,
                    frame,
                } if response.is_none()
                    && to == endpoint
                    && frame.kind == FrameKind::Response
                    && frame.get("request_id") == &json!(request_id) =>
                {
                    response = Some(frame);
                }
                other => self.held.push(other),
            }
        }
        match response {
            Some(frame) => Reply::Response(frame),
            None => Reply::Pending {
                channel: self.hub.waiting_on(endpoint).expect("answered or waiting"),
                request_id: request_id.to_string(),
            },
        }
    }

    #[track_caller]
    fn call(&mut self, connection: &str, op: &str, params: Value) -> Frame {
        match self.send(connection, "r", op, params) {
            Reply::Response(frame) => frame,
            pending => panic!("{op} did not answer: {pending:?}"),
        }
    }

    #[track_caller]
    fn ok(&mut self, connection: &str, op: &str, params: Value) -> Value {
        let frame = self.call(connection, op, params);
        assert_eq!(frame.get("ok"), &json!(true), "{op}: {}", frame.encode());
        frame.get("result").clone()
    }

    /// Registers `name` over the wire on `connection`.
    fn register(&mut self, connection: &str, name: &str, resume: Value) -> String {
        let params = json!({"passport": {"name": name}, "resume": resume});
        let passport = self.ok(connection, "register", params);
        passport["agent_id"].as_str().expect("id").to_string()
    }

    /// Replaces `$A`-style placeholders in `text`, longest first.
    fn substitute(&self, text: &str) -> String {
        let mut ids = self.ids.clone();
        ids.sort_by_key(|(key, _)| std::cmp::Reverse(key.len()));
        ids.iter()
            .fold(text.to_string(), |text, (key, id)| text.replace(key, id))
    }

    /// The outputs queued so far (those [`World::send`] held first), drained.
    fn outputs(&mut self) -> Vec<Output> {
        let mut outputs = std::mem::take(&mut self.held);
        outputs.extend(std::iter::from_fn(|| self.hub.poll_output()));
        outputs
    }

    /// The answers to the handshakes that ended, drained.
    fn answers(&mut self) -> Vec<(EndpointId, Frame)> {
        std::iter::from_fn(|| self.hub.poll_answer())
            .map(|answer| (answer.endpoint, answer.frame))
            .collect()
    }
}

/// The table's world, built exactly as the Python run built it: four connections, alice, bob and
/// carol registered on the first three, and an alice-bob conversation opened over the wire.
fn world() -> World {
    let mut world = World::with_connections(4);
    let alice = world.register(
        "a",
        "alice",
        json!({"claimed_capabilities": ["triage"], "summary": "Triage desk"}),
    );
    let bob = world.register("b", "bob", json!({}));
    let carol = world.register("c", "carol", json!({}));
    let params =
        json!({"creator_id": alice, "manifest_type": "conversation", "participants": [bob]});
    let Reply::Pending { channel, .. } = world.send("a", "r", "create_channel", params) else {
        panic!("an open with an invitee waits for its ack");
    };
    ack(&mut world, "b", channel, &bob, &alice);
    assert_eq!(world.answers().len(), 1, "a wire open is answered");
    assert_eq!(world.hub.waiting_on(world.endpoints[0]), None);
    world.ids = vec![
        ("$A", alice),
        ("$B", bob),
        ("$C", carol),
        ("$CH", channel.to_string()),
    ];
    world
}

fn ack(world: &mut World, connection: &str, channel: ChannelId, sender: &str, creator: &str) {
    let envelope = json!({
        "channel_id": channel.to_string(), "sender_id": sender, "audience": [creator],
        "event_type": EventType::CHANNEL_INVITE_ACK, "event_data": {}
    });
    world.ok(connection, "post_envelope", json!({"envelope": envelope}));
}

#[test]
fn every_case_answers_with_ag2s_bytes() {
    let mut world = world();
    for (idx, (connection, op, params, expected)) in cases::CASES.iter().enumerate() {
        let params: Value = serde_json::from_str(&world.substitute(params)).expect("params");
        let request_id = format!("c{idx}");
        let outcome = world.send(connection, &request_id, op, params);
        let Reply::Response(frame) = outcome else {
            panic!("case {idx} ({op}) did not answer: {outcome:?}");
        };
        assert_eq!(frame.encode(), *expected, "case {idx}: {connection} {op}");
    }
    let ops: std::collections::BTreeSet<&str> = cases::CASES.iter().map(|case| case.1).collect();
    assert_eq!(ops.len(), 31, "all 30 ops and an unknown one: {ops:?}");
}

const OPS: [&str; 30] = [
    "register",
    "get_agent",
    "get_resume",
    "get_skill",
    "get_rule",
    "find_agent_id",
    "names_for",
    "list_agents",
    "set_resume",
    "set_skill",
    "set_rule",
    "unregister",
    "create_channel",
    "get_channel",
    "list_channels",
    "close_channel",
    "post_envelope",
    "read_wal",
    "find_envelope_by_causation",
    "can_send",
    "pending_turns_for",
    "report_turn_failure",
    "get_task",
    "list_tasks",
    "observe_task",
    "update_task",
    "record_observation",
    "fire_task_event",
    "checkpoint_task",
    "read_task_checkpoint",
];

#[track_caller]
fn answer(frame: &Frame) -> (bool, String, String) {
    (
        frame.get("ok") == &json!(true),
        frame.get("error_code").as_str().expect("code").to_string(),
        frame
            .get("error_message")
            .as_str()
            .expect("message")
            .to_string(),
    )
}

/// What ag2 answered, op by op, to `{}` from a bound connection and to a set of ids from an
/// unbound one: `(ok, error_code, error_message)`.
#[test]
fn missing_params_and_unbound_connections_answer_like_ag2() {
    let mut world = World::with_connections(4);
    let alice = world.register("a", "alice", json!({}));
    let key = |name: &str| (false, "error", format!("'{name}'"));
    let open = (true, "", String::new());
    let denied = (
        false,
        "access_denied",
        format!("connection is not bound to agent '{alice}'"),
    );
    let no_agent = (
        false,
        "access_denied",
        "connection has no bound agent".to_string(),
    );
    let zz = (false, "not_found", "channel not found: zz".to_string());
    #[rustfmt::skip]
    let expected = [
        ("register", key("passport"), key("passport")),
        ("get_agent", key("name_or_id"), key("name_or_id")),
        ("get_resume", key("agent_id"), open.clone()),
        ("get_skill", key("agent_id"), open.clone()),
        ("get_rule", key("agent_id"), open.clone()),
        ("find_agent_id", key("name"), key("name")),
        ("names_for", key("agent_ids"), key("agent_ids")),
        ("list_agents", open.clone(), open.clone()),
        ("set_resume", key("agent_id"), denied.clone()),
        ("set_skill", key("agent_id"), denied.clone()),
        ("set_rule", key("agent_id"), denied.clone()),
        ("unregister", key("agent_id"), denied.clone()),
        ("create_channel", key("creator_id"), denied.clone()),
        ("get_channel", key("channel_id"), zz.clone()),
        ("list_channels", open.clone(), denied.clone()),
        ("close_channel", key("channel_id"), zz.clone()),
        ("post_envelope", key("envelope"), key("envelope")),
        ("read_wal", key("channel_id"), zz.clone()),
        ("find_envelope_by_causation", key("channel_id"), zz.clone()),
        ("can_send", key("sender_id"), denied.clone()),
        ("pending_turns_for", key("agent_id"), denied.clone()),
        ("report_turn_failure", key("agent_id"), denied.clone()),
        ("get_task", key("task_id"), (false, "not_found", "task not found: t1".to_string())),
        ("list_tasks", open.clone(), open.clone()),
        ("observe_task", key("metadata"), key("metadata")),
        ("update_task", key("task_id"), no_agent.clone()),
        ("record_observation", key("owner_id"), denied.clone()),
        ("fire_task_event", key("task_id"), no_agent.clone()),
        ("checkpoint_task", key("task_id"), no_agent.clone()),
        ("read_task_checkpoint", key("task_id"), no_agent.clone()),
    ];
    assert_eq!(expected.clone().map(|row| row.0), OPS);
    let ids = json!({
        "agent_id": alice, "creator_id": alice, "sender_id": alice, "owner_id": alice,
        "task_id": "t1", "channel_id": "zz"
    });
    for (op, empty, unbound) in expected {
        let got = answer(&world.call("a", op, json!({})));
        assert_eq!(got, (empty.0, empty.1.to_string(), empty.2), "{op} {{}}");
        let got = answer(&world.call("d", op, ids.clone()));
        assert_eq!(
            got,
            (unbound.0, unbound.1.to_string(), unbound.2),
            "{op} unbound"
        );
    }
}

/// The responses ag2 1.2.1's hub sent for the same calls (its `Hub._dispatch_frame` driven with
/// `RequestFrame`s, ids from one counter, the clock frozen at the epoch): a register, the ack that
/// activates a pending open, the open's deferred response, a WAL read whose payload keys come
/// back sorted, a resume, a refusal and a missing param.
#[test]
fn responses_match_ag2_byte_for_byte() {
    let mut world = World::with_connections(3);
    let register = json!({
        "passport": {"name": "alice", "owner": "acme", "cost": {"input_per_mtok": 1.5}},
        "resume": {"claimed_capabilities": ["triage"], "summary": "Triage desk"}
    });
    let mut replies = Vec::new();
    let mut send = |world: &mut World, connection: &str, op: &str, params: Value| {
        let request_id = format!("r{}", replies.len() + 1);
        let outcome = world.send(connection, &request_id, op, params);
        replies.push(outcome.clone());
        outcome
    };
    send(&mut world, "a", "register", register);
    let bob = json!({"passport": {"name": "bob"}, "resume": {}});
    send(&mut world, "b", "register", bob);
    send(
        &mut world,
        "c",
        "register",
        json!({"passport": {"name": "carol"}, "resume": {}}),
    );
    let (alice, bob) = (
        "00000000000000000000000000000004",
        "00000000000000000000000000000005",
    );
    let open = json!({
        "creator_id": alice, "manifest_type": "conversation", "participants": [bob],
        "intent": "chat", "labels": {"z": 1, "a": 2}
    });
    let Reply::Pending {
        channel,
        request_id,
    } = send(&mut world, "a", "create_channel", open)
    else {
        panic!("pending");
    };
    assert_eq!(request_id, "r4");
    let ack = json!({"envelope": {
        "channel_id": channel.to_string(), "sender_id": bob, "audience": [alice],
        "event_type": "ag2.channel.invite.ack", "event_data": {}
    }});
    let Reply::Response(ack_frame) = send(&mut world, "b", "post_envelope", ack) else {
        panic!("answered");
    };
    let resolved: Vec<Frame> = world.answers().into_iter().map(|(_, f)| f).collect();
    let text = json!({"envelope": {
        "channel_id": channel.to_string(), "sender_id": alice, "audience": null,
        "event_type": "ag2.msg.text", "event_data": {"text": "hi", "b": 1, "a": {"z": 1, "y": 2}}
    }});
    send(&mut world, "a", "post_envelope", text);
    let read = json!({"channel_id": channel.to_string(), "since": -1});
    let Reply::Response(wal) = send(&mut world, "a", "read_wal", read) else {
        panic!()
    };
    let resume = json!({"agent_id": alice, "resume": {
        "summary": "s", "examples": [{"title": "t"}], "observed": {"z": {"n": 1}, "a": {"n": 2}}
    }});
    send(&mut world, "a", "set_resume", resume);
    let Reply::Response(resume) = send(&mut world, "a", "get_resume", json!({"agent_id": alice}))
    else {
        panic!()
    };
    let denied = json!({"channel_id": channel.to_string()});
    let Reply::Response(denied) = send(&mut world, "c", "get_channel", denied) else {
        panic!()
    };
    let Reply::Response(key) = send(&mut world, "a", "get_agent", json!({})) else {
        panic!()
    };
    let Reply::Response(first) = &replies[0] else {
        panic!()
    };
    let got = [
        first,
        &ack_frame,
        &resolved[0],
        &wal,
        &resume,
        &denied,
        &key,
    ]
    .map(Frame::encode);
    assert_eq!(got, GOLDEN);
}

#[rustfmt::skip]
const GOLDEN: [&str; 7] = [
    r#"{"request_id": "r1", "ok": true, "result": {"name": "alice", "owner": "acme", "provider": null, "model": null, "cost": {"input_per_mtok": 1.5, "output_per_mtok": null, "latency_tier": null}, "region": null, "auth": {"scheme": "none", "issuer": null, "audience": null, "key_fingerprint": null, "claim": {}}, "kind": null, "hub_id": null, "version": 1, "agent_id": "00000000000000000000000000000004", "created_at": "2026-01-01T00:00:00+00:00"}, "error_code": "", "error_message": "", "kind": "response"}"#,
    r#"{"request_id": "r5", "ok": true, "result": "00000000000000000000000000000009", "error_code": "", "error_message": "", "kind": "response"}"#,
    r#"{"request_id": "r4", "ok": true, "result": {"channel_id": "00000000000000000000000000000007", "manifest": {"type": "conversation", "version": 1, "participants": {"min": 2, "max": 2, "roles": ["initiator", "respondent"]}, "knobs_schema": {}, "default_view_policy": "windowed_summary", "expectations": [{"name": "max_silence", "on_violation": "audit", "params": {"seconds": 3600}, "applies_to": null}]}, "creator_id": "00000000000000000000000000000004", "participants": [{"agent_id": "00000000000000000000000000000004", "role": "initiator", "order": 0, "joined_at": "2026-01-01T00:00:00+00:00"}, {"agent_id": "00000000000000000000000000000005", "role": "respondent", "order": 1, "joined_at": "2026-01-01T00:00:00+00:00"}], "state": "active", "created_at": "2026-01-01T00:00:00+00:00", "expires_at": "2026-01-01T02:00:00+00:00", "closed_at": null, "close_reason": "", "parent_channel_id": null, "knobs": {}, "labels": {"z": 1, "a": 2, "intent": "chat"}, "required_acks": null, "pending_acks": [], "rejected_by": []}, "error_code": "", "error_message": "", "kind": "response"}"#,
    r#"{"request_id": "r7", "ok": true, "result": [{"channel_id": "00000000000000000000000000000007", "sender_id": "00000000000000000000000000000004", "audience": null, "event_type": "ag2.msg.text", "event_data": {"a": {"y": 2, "z": 1}, "b": 1, "text": "hi"}, "envelope_id": "0000000000000000000000000000000b", "task_id": null, "causation_id": null, "trace_id": null, "priority": "normal", "depth": 0, "idempotency_key": null, "created_at": "2026-01-01T00:00:00+00:00", "ttl_seconds": null}], "error_code": "", "error_message": "", "kind": "response"}"#,
    r#"{"request_id": "r9", "ok": true, "result": {"claimed_capabilities": [], "domains": [], "summary": "s", "examples": [{"title": "t", "outcome": "", "task_id": null, "channel_id": null, "when": null, "note": ""}], "observed": {"z": {"n": 1, "completed": 0, "failed": 0, "expired": 0, "p50_latency_ms": null}, "a": {"n": 2, "completed": 0, "failed": 0, "expired": 0, "p50_latency_ms": null}}, "version": 2, "last_updated": "2026-01-01T00:00:00+00:00"}, "error_code": "", "error_message": "", "kind": "response"}"#,
    r#"{"request_id": "r10", "ok": false, "result": null, "error_code": "access_denied", "error_message": "connection has no participant in channel '00000000000000000000000000000007'", "kind": "response"}"#,
    r#"{"request_id": "r11", "ok": false, "result": null, "error_code": "error", "error_message": "'name_or_id'", "kind": "response"}"#,
];

/// A pending open answers with the handshake's error when an invitee rejects or the acks time
/// out; an in-process open has no answer, only an [`Output::OpenResolved`].
#[test]
fn a_failed_handshake_answers_with_its_protocol_error() {
    let mut world = World::with_connections(3);
    let alice = world.register("a", "alice", json!({}));
    let bob = world.register("b", "bob", json!({}));
    let open = json!({"creator_id": alice, "manifest_type": "consulting", "participants": [bob]});
    let Reply::Pending { channel, .. } = world.send("a", "r1", "create_channel", open.clone())
    else {
        panic!("pending");
    };
    assert_eq!(world.hub.waiting_on(world.endpoints[0]), Some(channel));
    let reject = json!({"envelope": {
        "channel_id": channel.to_string(), "sender_id": bob, "audience": [alice],
        "event_type": "ag2.channel.invite.reject", "event_data": {}
    }});
    world.ok("b", "post_envelope", reject);
    assert!(
        !world
            .outputs()
            .iter()
            .any(|output| matches!(output, Output::OpenResolved { .. })),
        "a wire open is answered, not resolved"
    );
    assert_eq!(
        world.hub.waiting_on(world.endpoints[0]),
        Some(channel),
        "until its answer is polled"
    );
    let answers = world.answers();
    assert_eq!(answers.len(), 1);
    let (endpoint, frame) = &answers[0];
    assert_eq!(*endpoint, world.endpoints[0]);
    assert_eq!(
        answer(frame),
        (
            false,
            "protocol_error".to_string(),
            format!("channel '{channel}' closed during handshake: invite_rejected")
        )
    );
    assert_eq!(frame.get("request_id"), &json!("r1"));
    assert_eq!(world.hub.waiting_on(world.endpoints[0]), None);
    assert!(world.answers().is_empty());

    let Reply::Pending { channel, .. } = world.send("a", "r2", "create_channel", open) else {
        panic!("pending");
    };
    world.outputs();
    world.hub.handle_timeout(at(31));
    let answers = world.answers();
    assert_eq!(answers.len(), 1, "the ack timeout ends the handshake");
    assert_eq!(
        answer(&answers[0].1).2,
        format!("channel '{channel}' ack timeout")
    );

    let id = |text: &str| crate::ids::AgentId::parse(text).expect("id");
    let in_process = crate::hub::CreateChannel {
        creator: id(&alice),
        manifest_type: "consulting".to_string(),
        manifest_version: 1,
        participants: vec![id(&bob)],
        required_acks: None,
        ttl: None,
        knobs: serde_json::Map::new(),
        intent: None,
        labels: serde_json::Map::new(),
    };
    world
        .hub
        .create_channel(at(40), in_process)
        .expect("pending");
    world.outputs();
    world.hub.handle_timeout(at(71));
    assert!(world.answers().is_empty());
    assert!(world
        .outputs()
        .iter()
        .any(|output| matches!(output, Output::OpenResolved { result: Err(_), .. })));
}

/// A refused request is answered and handed out as an [`Output::Refused`] with the hub's
/// counters around it.
#[test]
fn a_refused_request_is_an_output() {
    let mut world = world();
    let params = world.substitute(
        r#"{"envelope": {"channel_id": "$CH", "sender_id": "$A",
        "audience": null, "event_type": "ag2.msg.text", "event_data": {"text": "hi"}}}"#,
    );
    world.ok(
        "a",
        "post_envelope",
        serde_json::from_str(&params).expect("json"),
    );
    world.outputs();
    let counters = world.hub.trace_counters();
    let frame = world.call(
        "c",
        "post_envelope",
        serde_json::from_str(&params).expect("json"),
    );
    assert_eq!(frame.get("ok"), &json!(false));
    let refused: Vec<_> = world
        .outputs()
        .into_iter()
        .filter_map(|output| match output {
            Output::Refused(refused) => Some(refused),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].endpoint, world.endpoints[2]);
    assert_eq!(refused[0].op, "post_envelope");
    assert_eq!(refused[0].error.wire_code(), "access_denied");
    assert_eq!((refused[0].before, refused[0].after), (counters, counters));
    assert!(!refused[0].post_left_trace() && !refused[0].inbox_full());
}

#[test]
fn register_binds_and_stores_the_skill_without_a_skill_set_record() {
    let mut world = World::with_connections(1);
    let params = json!({"passport": {"name": "alice"}, "resume": {}, "skill_md": "# alice"});
    let alice = world.ok("a", "register", params)["agent_id"]
        .as_str()
        .expect("id")
        .to_string();
    let id = crate::ids::AgentId::parse(&alice).expect("id");
    assert_eq!(world.hub.endpoint_of(id), Some(world.endpoints[0]));
    assert_eq!(world.hub.skill_of(id), Some("# alice"));
    let kinds: Vec<&str> = world
        .hub
        .audit()
        .records()
        .iter()
        .filter_map(|record| record["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["agent_registered"]);
}

#[test]
fn turn_failures_are_audited_as_runtime_errors() {
    let mut world = world();
    let params = world.substitute(
        r#"{"agent_id": "$A", "channel_id": "$CH", "envelope_id": "e", "error": "boom"}"#,
    );
    world.ok(
        "a",
        "report_turn_failure",
        serde_json::from_str(&params).expect("json"),
    );
    let record = world
        .hub
        .audit()
        .records()
        .last()
        .expect("a record")
        .clone();
    assert_eq!(record["kind"], json!("turn_failed"));
    assert_eq!(record["exc_type"], json!("RuntimeError"));
    assert_eq!(record["exc_message"], json!("boom"));
}

#[test]
fn malformed_frames_still_get_a_response() {
    let mut world = World::with_connections(1);
    let endpoint = world.endpoints[0];
    let frame = Frame::new(
        FrameKind::Request,
        vec![
            ("request_id", json!("r")),
            ("op", json!(5)),
            ("params", json!({})),
        ],
    );
    world.hub.handle_request(at(0), endpoint, &frame);
    let answers = world.outputs();
    let [Output::Frame {
        frame: answer_frame,
        ..
    }] = answers.as_slice()
    else {
        panic!("answered: {answers:?}");
    };
    assert_eq!(
        answer(answer_frame),
        (
            false,
            "protocol_error".to_string(),
            "malformed request frame: op".to_string()
        )
    );
    let ping = Frame::new(FrameKind::Ping, vec![]);
    world.hub.handle_request(at(0), endpoint, &ping);
    assert!(matches!(
        world.outputs().as_slice(),
        [Output::Frame { frame, .. }] if frame.kind == FrameKind::Response
    ));
}

/// `list_agents` answers with the passports shared and writes them out when the response is
/// encoded: the text, and the value a frame carried without encoding gives, are those of the
/// response built from each passport's record.
#[test]
fn list_agents_answers_encode_as_the_records_they_share() {
    let mut world = World::with_connections(1);
    let passports = [
        json!({"name": "zoé", "owner": "ops", "cost": 0.1, "region": {"eu": [1, 2.5e16]}}),
        json!({"name": "alpha \"quoted\"\n", "kind": "human", "version": 3}),
        json!({"name": "mid", "provider": "x", "model": null, "hub_id": "h"}),
        json!({"name": "日本", "auth": {"scheme": "none", "issuer": "\u{1}"}}),
    ];
    for (i, passport) in passports.iter().enumerate() {
        let params = json!({"passport": passport, "resume": {"summary": format!("agent {i}")}});
        world.ok("a", "register", params);
    }
    let entries: Vec<_> = world
        .hub
        .agents
        .values()
        .map(|e| e.passport.clone())
        .collect();
    let by_name = {
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted
    };
    for (params, expected) in [
        (json!({}), entries.clone()),
        (
            json!({"sort_by": "name", "limit": 3}),
            by_name[..3].to_vec(),
        ),
        (json!({"limit": -1}), entries[..3].to_vec()),
        (json!({"kind": "human"}), entries[1..2].to_vec()),
        (json!({"limit": 0}), Vec::new()),
    ] {
        let mut frame = world.call("a", "list_agents", params.clone());
        let records: Vec<Value> = expected
            .iter()
            .map(|p| super::wire::passport_json(p))
            .collect();
        let eager = Frame::new(
            FrameKind::Response,
            vec![
                ("request_id", json!("r")),
                ("ok", json!(true)),
                ("result", Value::Array(records.clone())),
            ],
        );
        assert_eq!(frame.encode(), eager.encode(), "{params}");
        assert_eq!(frame, eager, "{params}");
        assert_eq!(frame.get("result"), &Value::Array(records.clone()));
        assert_eq!(*frame.take_result(), Value::Array(records), "{params}");
    }
}
