//! Adapter rules as tables: (state reached by prior sends, event, sender) -> (accepted?, next
//! state, close reason), after ag2 1.2.1's adapter rules.

use super::*;
use crate::hub::channel::{ChannelMetadata, ChannelState, Participant, ParticipantRole};
use crate::ids::ChannelId;
use crate::proto::envelope::map_of;
use crate::time::{Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Map, Value};

const A: AgentId = AgentId(1);
const B: AgentId = AgentId(2);
const C: AgentId = AgentId(3);
const X: &str = EventType::TEXT;
const P: &str = EventType::PACKET;
const CTX: &str = EventType::CONTEXT_SET;
const CUSTOM: &str = "custom.event";

/// A channel created by A with `others`, in this participant order.
fn metadata(kind: AdapterKind, order: &[AgentId], knobs: Value) -> ChannelMetadata {
    let now = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
    ChannelMetadata {
        channel_id: ChannelId(100),
        manifest: kind.manifest(),
        creator_id: A,
        participants: order
            .iter()
            .enumerate()
            .map(|(idx, id)| Participant {
                agent_id: *id,
                role: ParticipantRole::assign(*id, A, order.len()),
                order: idx,
                joined_at: now,
            })
            .collect(),
        state: ChannelState::Active,
        created_at: now,
        expires_at: None,
        closed_at: None,
        close_reason: String::new(),
        knobs: match knobs {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        labels: Map::new(),
        required_acks: None,
        pending_acks: Vec::new(),
        rejected_by: Vec::new(),
    }
}

fn envelope(event: &str, sender: AgentId, data: Value, id: u128) -> Envelope {
    let data = match data {
        Value::Object(map) => map,
        _ => map_of([("text", Value::from("hi"))]),
    };
    let mut envelope = Envelope::new(ChannelId(100), sender, None, event, data);
    envelope.envelope_id = Some(EnvelopeId(id));
    envelope
}

fn short(id: &Value) -> String {
    match id.as_str().and_then(AgentId::parse) {
        Some(A) => "A".into(),
        Some(B) => "B".into(),
        Some(C) => "C".into(),
        _ => py_repr_short(id),
    }
}

fn py_repr_short(value: &Value) -> String {
    crate::json::py_repr(value)
}

fn agent_short(id: Option<AgentId>) -> String {
    id.map_or("-".into(), |id| short(&Value::String(id.to_string())))
}

/// A compact view of the state, for the tables.
fn summary(state: &AdapterState) -> String {
    match state {
        AdapterState::Consulting(s) => {
            format!("sent={} replied={}", s.initiator_sent, s.respondent_replied)
        }
        AdapterState::Conversation(s) => format!(
            "turns={} last={}",
            s.turn_count,
            agent_short(s.last_speaker)
        ),
        AdapterState::Discussion(s) => {
            format!(
                "expected={} turns={}",
                short(&Value::String(s.expected.to_string())),
                s.turn_count
            )
        }
        AdapterState::Workflow(s) => format!(
            "expected={} turns={} reason={:?}",
            s.expected.as_ref().map_or("None".into(), short),
            s.turn_count,
            s.pending_close_reason
        ),
    }
}

/// One row: prior accepted sends, then the event under test.
struct Row {
    prior: &'static [(&'static str, AgentId)],
    event: (&'static str, AgentId),
    data: fn() -> Value,
    /// `Ok(())` or a substring of the refusal.
    accepted: Result<(), &'static str>,
    next: &'static str,
    close: Option<&'static str>,
}

fn text() -> Value {
    json!({"text": "hi"})
}

#[track_caller]
fn check(kind: AdapterKind, order: &[AgentId], knobs: Value, rows: &[Row]) {
    let metadata = metadata(kind, order, knobs);
    kind.validate_create(&metadata)
        .expect("the table's channel is valid");
    for (idx, row) in rows.iter().enumerate() {
        let mut state = kind.initial_state(&metadata).expect("initial state");
        let mut id = 1000;
        for (event, sender) in row.prior {
            id += 1;
            let prior = envelope(event, *sender, text(), id);
            state
                .validate_send(&metadata, &prior)
                .unwrap_or_else(|e| panic!("row {idx}: prior refused: {e}"));
            state.fold(&prior).expect("prior folds");
        }
        let (event, sender) = row.event;
        let envelope = envelope(event, sender, (row.data)(), id + 1);
        let before = summary(&state);
        match (state.validate_send(&metadata, &envelope), row.accepted) {
            (Ok(()), Ok(())) => {
                state.fold(&envelope).expect("folds");
                let result = state.on_accepted(&envelope);
                assert_eq!(
                    result.close_reason.as_deref(),
                    row.close,
                    "row {idx}: close reason"
                );
                assert_eq!(summary(&state), row.next, "row {idx}: next state");
            }
            (Err(error), Err(expected)) => {
                assert!(
                    error.message.contains(expected),
                    "row {idx}: `{}` lacks `{expected}`",
                    error.message
                );
                assert_eq!(error.type_name, "ProtocolError", "row {idx}");
                assert_eq!(
                    summary(&state),
                    before,
                    "row {idx}: a refusal leaves the state alone"
                );
                assert_eq!(
                    row.next, before,
                    "row {idx}: the table's next state for a refusal"
                );
            }
            (got, expected) => panic!("row {idx}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn consulting_table() {
    let rows = [
        Row {
            prior: &[],
            event: (X, A),
            data: text,
            accepted: Ok(()),
            next: "sent=true replied=false",
            close: None,
        },
        Row {
            prior: &[],
            event: (X, B),
            data: text,
            accepted: Err("expects first send from initiator"),
            next: "sent=false replied=false",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (X, B),
            data: text,
            accepted: Ok(()),
            next: "sent=true replied=true",
            close: Some("consulting_complete"),
        },
        Row {
            prior: &[(X, A)],
            event: (X, A),
            data: text,
            accepted: Err("expects reply from respondent"),
            next: "sent=true replied=false",
            close: None,
        },
        Row {
            prior: &[(X, A), (X, B)],
            event: (X, A),
            data: text,
            accepted: Err("already complete"),
            next: "sent=true replied=true",
            close: None,
        },
        Row {
            prior: &[],
            event: (P, B),
            data: text,
            accepted: Ok(()),
            next: "sent=false replied=false",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (CUSTOM, B),
            data: text,
            accepted: Ok(()),
            next: "sent=true replied=false",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (P, B),
            data: text,
            accepted: Ok(()),
            next: "sent=true replied=false",
            close: None,
        },
        Row {
            prior: &[],
            event: (EventType::CHANNEL_CLOSED, B),
            data: text,
            accepted: Ok(()),
            next: "sent=false replied=false",
            close: None,
        },
    ];
    check(AdapterKind::Consulting, &[A, B], Value::Null, &rows);
}

#[test]
fn conversation_table() {
    let rows = [
        Row {
            prior: &[],
            event: (X, B),
            data: text,
            accepted: Ok(()),
            next: "turns=1 last=B",
            close: None,
        },
        Row {
            prior: &[(X, B), (X, B)],
            event: (X, A),
            data: text,
            accepted: Ok(()),
            next: "turns=3 last=A",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (CUSTOM, B),
            data: text,
            accepted: Ok(()),
            next: "turns=1 last=A",
            close: None,
        },
        Row {
            prior: &[],
            event: (X, C),
            data: text,
            accepted: Err("only accepts sends from participants"),
            next: "turns=0 last=-",
            close: None,
        },
    ];
    check(AdapterKind::Conversation, &[A, B], Value::Null, &rows);
}

#[test]
fn discussion_table() {
    // Order [B, A, C]: the creator A speaks first, then C, then B.
    let rows = [
        Row {
            prior: &[],
            event: (X, A),
            data: text,
            accepted: Ok(()),
            next: "expected=C turns=1",
            close: None,
        },
        Row {
            prior: &[],
            event: (X, B),
            data: text,
            accepted: Err("expects '00000000000000000000000000000001' to speak"),
            next: "expected=A turns=0",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (X, C),
            data: text,
            accepted: Ok(()),
            next: "expected=B turns=2",
            close: None,
        },
        Row {
            prior: &[(X, A), (X, C)],
            event: (X, B),
            data: text,
            accepted: Ok(()),
            next: "expected=A turns=3",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (CUSTOM, B),
            data: text,
            accepted: Ok(()),
            next: "expected=C turns=1",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (P, A),
            data: text,
            accepted: Ok(()),
            next: "expected=C turns=1",
            close: None,
        },
    ];
    check(
        AdapterKind::Discussion,
        &[B, A, C],
        json!({"ordering": "round_robin"}),
        &rows,
    );
}

#[test]
fn discussion_refuses_bad_knobs_and_sizes() {
    let bad = metadata(
        AdapterKind::Discussion,
        &[A, B],
        json!({"ordering": "random"}),
    );
    let error = AdapterKind::Discussion
        .validate_create(&bad)
        .expect_err("random ordering");
    assert_eq!(
        error.message,
        "discussion knobs.ordering='random' not supported; choose from ['round_robin']"
    );
    let alone = metadata(AdapterKind::Discussion, &[A], Value::Null);
    let error = AdapterKind::Discussion
        .validate_create(&alone)
        .expect_err("one participant");
    assert_eq!(
        error.message,
        "discussion requires at least 2 participants, got 1"
    );
    let three = metadata(AdapterKind::Consulting, &[A, B, C], Value::Null);
    let error = AdapterKind::Consulting
        .validate_create(&three)
        .expect_err("three in consulting");
    assert_eq!(error.message, "consulting requires exactly one respondent");
}

fn id(agent: AgentId) -> Value {
    Value::String(agent.to_string())
}

fn graph() -> Value {
    // A -> B on text; tool `to_c` -> C; B -> revert to initiator; default terminate("done").
    json!({"graph": {
        "initial_speaker": id(A),
        "max_turns": 4,
        "default_target": {"name": "terminate", "args": {"reason": "done"}},
        "transitions": [
            {"when": {"name": "tool_called", "args": {"tool_name": "to_c"}}, "then": {"name": "agent", "args": {"agent_id": id(C)}}, "priority": 0},
            {"when": {"name": "from_speaker", "args": {"agent_id": id(A)}}, "then": {"name": "agent", "args": {"agent_id": id(B)}}, "priority": 1},
            {"when": {"name": "from_speaker", "args": {"agent_id": id(B)}}, "then": {"name": "revert_to_initiator", "args": {}}, "priority": 1},
            {"when": {"name": "context_equals", "args": {"key": "route", "value": "c"}}, "then": {"name": "agent", "args": {"agent_id": id(C)}}, "priority": -1}
        ]
    }})
}

fn handoff_to_c() -> Value {
    json!({"routing": {"kind": "handoff", "tool": "to_c"}, "body": "over to C"})
}

fn finish() -> Value {
    json!({"routing": {"kind": "finish", "reason": "", "tool": "fin"}, "body": ""})
}

fn set_route() -> Value {
    json!({"set": {"route": "c"}})
}

fn handoff_name() -> Value {
    json!({"routing": {"kind": "handoff", "tool": "x", "target": "carol"}})
}

#[test]
fn workflow_table() {
    let rows = [
        Row {
            prior: &[],
            event: (X, A),
            data: text,
            accepted: Ok(()),
            next: "expected=B turns=1 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[],
            event: (X, B),
            data: text,
            accepted: Err("expects '00000000000000000000000000000001' to speak"),
            next: "expected=A turns=0 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (X, B),
            data: text,
            accepted: Ok(()),
            next: "expected=A turns=2 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[],
            event: (P, A),
            data: handoff_to_c,
            accepted: Ok(()),
            next: "expected=C turns=1 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[],
            event: (P, A),
            data: finish,
            accepted: Ok(()),
            next: "expected=None turns=1 reason=\"finished\"",
            close: Some("finished"),
        },
        Row {
            prior: &[],
            event: (CTX, C),
            data: set_route,
            accepted: Ok(()),
            next: "expected=A turns=0 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[(X, A), (X, B), (X, A)],
            event: (X, B),
            data: text,
            accepted: Ok(()),
            next: "expected=A turns=4 reason=\"\"",
            close: Some("max_turns"),
        },
        Row {
            prior: &[],
            event: (P, A),
            data: handoff_name,
            accepted: Ok(()),
            next: "expected='carol' turns=1 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[],
            event: (CUSTOM, C),
            data: text,
            accepted: Ok(()),
            next: "expected=A turns=0 reason=\"\"",
            close: None,
        },
        Row {
            prior: &[(X, A)],
            event: (X, C),
            data: text,
            accepted: Err("expects '00000000000000000000000000000002' to speak"),
            next: "expected=B turns=1 reason=\"\"",
            close: None,
        },
    ];
    check(AdapterKind::Workflow, &[A, B, C], graph(), &rows);
}

#[test]
fn workflow_context_routes_the_next_turn() {
    let metadata = metadata(AdapterKind::Workflow, &[A, B, C], graph());
    let mut state = AdapterKind::Workflow
        .initial_state(&metadata)
        .expect("graph loads");
    state
        .fold(&envelope(CTX, B, set_route(), 1))
        .expect("context set");
    state.fold(&envelope(X, A, text(), 2)).expect("text");
    // context_equals(route, c) has the lowest priority value, so it wins over from_speaker(A).
    assert_eq!(summary(&state), "expected=C turns=1 reason=\"\"");
}

#[test]
fn workflow_graph_errors_match_ag2() {
    let cases = [
        (json!({"graph": "x"}), "ProtocolError", "workflow requires knobs['graph'] as a dict — call TransitionGraph.to_dict() before passing"),
        (json!({"graph": {}}), "KeyError", "'initial_speaker'"),
        (json!({"graph": {"initial_speaker": id(A), "transitions": [{"when": {"name": "nope"}, "then": null}]}}), "ProtocolError", "invalid workflow graph: no transition condition registered for 'nope'"),
        (json!({"graph": {"initial_speaker": id(A), "default_target": {"name": "agent"}}}), "TypeError", "AgentTarget.__init__() missing 1 required positional argument: 'agent_id'"),
        (json!({"graph": {"initial_speaker": id(A), "default_target": {"name": "stay", "args": {"x": 1}}}}), "TypeError", "StayTarget.__init__() got an unexpected keyword argument 'x'"),
        (json!({"graph": {"initial_speaker": id(A), "transitions": [{"when": {"name": "context_equals", "args": {}}, "then": null}]}}), "TypeError", "ContextEquals.__init__() missing 2 required positional arguments: 'key' and 'value'"),
        (json!({"graph": {"initial_speaker": "nobody"}}), "ProtocolError", "workflow initial_speaker 'nobody' not in participants ['00000000000000000000000000000001', '00000000000000000000000000000002']"),
    ];
    for (knobs, type_name, message) in cases {
        let metadata = metadata(AdapterKind::Workflow, &[A, B], knobs);
        let error = AdapterKind::Workflow
            .validate_create(&metadata)
            .expect_err("refused");
        assert_eq!(
            (error.type_name.as_str(), error.message.as_str()),
            (type_name, message)
        );
    }
    let ghost = metadata(
        AdapterKind::Workflow,
        &[A, B],
        json!({"graph": {"initial_speaker": id(A)}, "context_vars": [1]}),
    );
    AdapterKind::Workflow
        .validate_create(&ghost)
        .expect("validate_create does not read context_vars");
    let error = AdapterKind::Workflow
        .initial_state(&ghost)
        .expect_err("initial_state does");
    assert_eq!(
        error.message,
        "workflow knobs['context_vars'] must be a dict if provided"
    );
}
