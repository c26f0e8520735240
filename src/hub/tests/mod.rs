//! Hub behaviour the scenario format cannot reach: tasks, resumes, skills, sweepers and the
//! invite-ack timeout on the hub's own clock, inbox pressure, pending turns.

use super::channel::ChannelState;
use super::*;
use crate::proto::envelope::map_of;
use crate::proto::EventType;
use crate::time::{Instant, Timestamp, DEFAULT_EPOCH};
use serde_json::{Map, Value};

fn at(seconds: u64) -> Now {
    let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
    Now {
        wall: epoch.plus_micros(seconds as i64 * 1_000_000),
        mono: Instant(seconds * 1_000_000),
    }
}

fn hub_with(config: HubConfig, names: &[&str]) -> (Hub, Vec<AgentId>) {
    let mut hub = Hub::new(config, Instant(0));
    let ids = names
        .iter()
        .map(|name| {
            let endpoint = hub.mint_endpoint();
            let id = hub
                .register(at(0), Passport::named(name), Resume::default(), None)
                .expect("registers");
            hub.bind_endpoint(endpoint, id).expect("binds");
            id
        })
        .collect();
    (hub, ids)
}

fn quiet() -> HubConfig {
    HubConfig {
        ttl_sweep_interval_micros: 0,
        expectation_sweep_interval_micros: 0,
        ..HubConfig::default()
    }
}

fn request(creator: AgentId, kind: &str, participants: Vec<AgentId>) -> CreateChannel {
    CreateChannel {
        creator,
        manifest_type: kind.to_string(),
        manifest_version: 1,
        participants,
        required_acks: None,
        ttl: None,
        knobs: Map::new(),
        intent: None,
        labels: Map::new(),
    }
}

fn ack(hub: &mut Hub, now: Now, channel: ChannelId, agent: AgentId) {
    let data = map_of([("channel_id", Value::String(channel.to_string()))]);
    let envelope = Envelope::new(channel, agent, None, EventType::CHANNEL_INVITE_ACK, data);
    hub.post_envelope(now, envelope).expect("ack accepted");
}

fn text(channel: ChannelId, sender: AgentId, body: &str) -> Envelope {
    Envelope::new(
        channel,
        sender,
        None,
        EventType::TEXT,
        map_of([("text", Value::from(body))]),
    )
}

fn open_active(hub: &mut Hub, kind: &str, creator: AgentId, others: &[AgentId]) -> ChannelId {
    let Created::Pending(channel) = hub
        .create_channel(at(0), request(creator, kind, others.to_vec()))
        .expect("opens")
    else {
        panic!("channels with invitees start pending")
    };
    for other in others {
        ack(hub, at(0), channel, *other);
    }
    channel
}

fn outputs(hub: &mut Hub) -> Vec<Output> {
    std::iter::from_fn(|| hub.poll_output()).collect()
}

fn kinds(hub: &Hub) -> Vec<String> {
    hub.audit()
        .records()
        .iter()
        .map(|r| r["kind"].as_str().expect("kind").to_string())
        .collect()
}

#[test]
fn invite_ack_timeout_fires_on_the_hubs_monotonic_clock() {
    let config = HubConfig {
        invite_ack_timeout_micros: 250_000,
        ..quiet()
    };
    let (mut hub, ids) = hub_with(config, &["alice", "bob"]);
    let created = hub
        .create_channel(at(0), request(ids[0], "consulting", vec![ids[1]]))
        .expect("opens");
    let Created::Pending(channel) = created else {
        panic!("pending")
    };
    assert_eq!(hub.poll_timeout(), Some(Instant(250_000)));
    // Nothing is due a microsecond early.
    hub.handle_timeout(Now {
        mono: Instant(249_999),
        ..at(0)
    });
    assert_eq!(
        hub.get_channel(channel).expect("exists").state,
        ChannelState::Pending
    );
    hub.handle_timeout(Now {
        mono: Instant(250_000),
        ..at(0)
    });
    let metadata = hub.get_channel(channel).expect("exists");
    assert_eq!(
        (metadata.state, metadata.close_reason.as_str()),
        (ChannelState::Closed, "invite_timeout")
    );
    let resolved: Vec<_> = outputs(&mut hub)
        .into_iter()
        .filter_map(|o| match o {
            Output::OpenResolved { result, .. } => Some(result),
            _ => None,
        })
        .collect();
    let error = resolved[0].as_ref().expect_err("the open fails");
    assert_eq!(error.message, format!("channel '{channel}' ack timeout"));
    assert_eq!(hub.poll_timeout(), None, "no waiter is left");
}

#[test]
fn sweepers_run_one_interval_after_start_and_after_each_run() {
    let config = HubConfig {
        invite_ack_timeout_micros: 30_000_000,
        ttl_sweep_interval_micros: 30_000_000,
        expectation_sweep_interval_micros: 10_000_000,
        ..HubConfig::default()
    };
    let (mut hub, ids) = hub_with(config, &["alice", "bob"]);
    assert_eq!(hub.poll_timeout(), Some(Instant(10_000_000)));
    let mut request = request(ids[0], "conversation", vec![ids[1]]);
    request.ttl = Some(rule::DurationSpec::Text("15s".into()));
    let Created::Pending(channel) = hub.create_channel(at(0), request).expect("opens") else {
        panic!()
    };
    ack(&mut hub, at(0), channel, ids[1]);
    hub.handle_timeout(at(10));
    assert_eq!(
        hub.poll_timeout(),
        Some(Instant(20_000_000)),
        "the expectation sweeper re-arms"
    );
    assert_eq!(
        hub.get_channel(channel).expect("exists").state,
        ChannelState::Active
    );
    hub.handle_timeout(at(30));
    let metadata = hub.get_channel(channel).expect("exists");
    // The TTL sweep ran at 30 s, so the channel expired late, stamped with the sweep time.
    assert_eq!(metadata.state, ChannelState::Expired);
    assert_eq!(metadata.closed_at, Some(at(30).wall));
}

#[test]
fn inbox_pressure_fires_once_per_upward_crossing() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob"]);
    let mut rule = Rule::default();
    rule.limits.inbox.max_pending = 3;
    hub.set_rule(at(0), ids[1], rule).expect("rule set");
    let channel = open_active(&mut hub, "conversation", ids[0], &[ids[1]]);
    outputs(&mut hub);
    let mut pressure = Vec::new();
    for body in ["1", "2", "3"] {
        hub.post_envelope(at(0), text(channel, ids[0], body))
            .expect("accepted");
        for output in outputs(&mut hub) {
            if let Output::InboxPressure { pending, cap, .. } = output {
                pressure.push((pending, cap));
            }
        }
    }
    assert_eq!(pressure, vec![(2, 3)], "cap 3 gives a high-water mark of 2");
    let error = hub
        .post_envelope(at(0), text(channel, ids[0], "4"))
        .expect_err("full");
    assert_eq!(
        (error.type_name.as_str(), hub.read_wal(channel).len()),
        ("InboxFull", 6)
    );
}

#[test]
fn tasks_audit_terminations_and_cascade_when_their_channel_ends() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob"]);
    let channel = open_active(&mut hub, "conversation", ids[0], &[ids[1]]);
    let task = |id: &str, expires_at: Option<Timestamp>| TaskMetadata {
        task_id: id.to_string(),
        owner_id: ids[1],
        spec: TaskSpec::default(),
        capability: Some("summarise".into()),
        created_at: String::new(),
        last_progress_at: None,
        state: TaskState::Running,
        channel_id: Some(channel),
        started_at: Some(at(0).wall),
        completed_at: None,
        expires_at,
        progress: Map::new(),
        result: None,
        error: String::new(),
    };
    hub.observe_task(task("t-done", None)).expect("observed");
    hub.observe_task(task("t-late", Some(at(5).wall)))
        .expect("observed");
    hub.observe_task(task("t-cascade", None)).expect("observed");
    hub.update_task(
        at(1),
        "t-done",
        Some(TaskState::Completed),
        Map::new(),
        None,
    )
    .expect("known");
    hub.update_task(
        at(2),
        "t-done",
        Some(TaskState::Failed),
        Map::new(),
        Some("ignored"),
    )
    .expect("known");
    assert_eq!(
        hub.task("t-done").expect("kept").state,
        TaskState::Completed,
        "terminal tasks stay terminal"
    );
    hub.expire_due(at(5));
    assert_eq!(hub.task("t-late").expect("kept").error, "ttl_expired");
    hub.close_channel(at(6), channel, "").expect("closes");
    assert_eq!(hub.task("t-cascade").expect("kept").error, "channel_closed");
    let terminated: Vec<(String, String)> = hub
        .audit()
        .records()
        .iter()
        .filter(|r| r["kind"] == "task_terminated")
        .map(|r| {
            (
                r["task_id"].as_str().expect("id").into(),
                r["reason"].as_str().expect("reason").into(),
            )
        })
        .collect();
    assert_eq!(
        terminated,
        [
            ("t-done", ""),
            ("t-late", "ttl_expired"),
            ("t-cascade", "channel_closed")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let mut capped = Rule::default();
    capped.limits.max_concurrent_tasks = 1;
    hub.set_rule(at(7), ids[0], capped).expect("rule");
    let mut mine = task("a-1", None);
    mine.owner_id = ids[0];
    hub.observe_task(mine.clone()).expect("first task");
    mine.task_id = "a-2".into();
    let error = hub.observe_task(mine).expect_err("cap reached");
    assert_eq!(
        error.message,
        format!("owner '{}' exceeded max_concurrent_tasks (1 >= 1)", ids[0])
    );
}

#[test]
fn all_eleven_audit_kinds_are_written() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob", "carol"]);
    hub.set_resume(
        at(0),
        ids[0],
        Resume {
            summary: "asks".into(),
            ..Resume::default()
        },
    )
    .expect("resume");
    hub.set_skill(at(0), ids[0], Some("# skill".into()))
        .expect("skill");
    hub.set_rule(at(0), ids[0], Rule::default()).expect("rule");
    hub.record_observation(
        at(0),
        ids[0],
        "ask",
        TaskState::Completed,
        Some(12),
        Some("t1"),
    );
    hub.record_observation(
        at(0),
        ids[0],
        "ask",
        TaskState::Completed,
        Some(12),
        Some("t1"),
    );
    let consulting = open_active(&mut hub, "consulting", ids[0], &[ids[1]]);
    hub.post_envelope(at(0), text(consulting, ids[0], "q"))
        .expect("question");
    hub.report_turn_failure(
        at(0),
        consulting,
        ids[1],
        "x",
        &HubError::runtime("model down"),
    );
    hub.expectation_tick(at(600));
    let expiring = open_active(&mut hub, "conversation", ids[0], &[ids[2]]);
    hub.expire_due(at(7200));
    hub.observe_task(TaskMetadata {
        task_id: "t2".into(),
        owner_id: ids[0],
        spec: TaskSpec::default(),
        capability: None,
        created_at: String::new(),
        last_progress_at: None,
        state: TaskState::Running,
        channel_id: None,
        started_at: None,
        completed_at: None,
        expires_at: None,
        progress: Map::new(),
        result: None,
        error: String::new(),
    })
    .expect("observed");
    hub.update_task(at(7200), "t2", Some(TaskState::Cancelled), Map::new(), None)
        .expect("known");
    hub.unregister(at(7200), ids[2]).expect("registered");
    let mut seen = kinds(&hub);
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "agent_registered",
            "agent_unregistered",
            "channel_closed",
            "channel_created",
            "channel_expired",
            "expectation_violated",
            "resume_set",
            "rule_set",
            "skill_set",
            "task_terminated",
            "turn_failed",
        ]
    );
    let observed = hub.resume_of(ids[0]).expect("resume").observed["ask"].clone();
    assert_eq!(
        (observed.n, observed.completed),
        (1, 1),
        "one task is counted once"
    );
    assert_eq!(
        hub.get_channel(expiring).expect("exists").state,
        ChannelState::Expired
    );
    assert_eq!(
        hub.get_channel(consulting).expect("exists").close_reason,
        "expectation_violated:reply_within"
    );
}

#[test]
fn pending_turns_follow_the_adapter() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob", "carol"]);
    let channel = open_active(&mut hub, "discussion", ids[0], &[ids[1], ids[2]]);
    let turns = hub.pending_turns_for(ids[0], at(0).wall);
    assert_eq!(
        turns,
        vec![PendingTurn {
            channel,
            trigger: None,
            expected_at: at(0).wall
        }]
    );
    let id = hub
        .post_envelope(at(3), text(channel, ids[0], "topic"))
        .expect("creator speaks");
    assert!(hub.pending_turns_for(ids[0], at(4).wall).is_empty());
    let turns = hub.pending_turns_for(ids[1], at(4).wall);
    assert_eq!(
        turns,
        vec![PendingTurn {
            channel,
            trigger: Some(id),
            expected_at: at(3).wall
        }]
    );
}

#[test]
fn a_refused_post_leaves_no_trace() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob"]);
    let channel = open_active(&mut hub, "consulting", ids[0], &[ids[1]]);
    let before = (
        hub.read_wal(channel).len(),
        hub.audit().records().len(),
        hub.inbox_pending().clone(),
    );
    let error = hub
        .post_envelope(at(0), text(channel, ids[1], "first"))
        .expect_err("initiator first");
    assert_eq!(error.type_name, "ProtocolError");
    assert_eq!(
        (
            hub.read_wal(channel).len(),
            hub.audit().records().len(),
            hub.inbox_pending().clone()
        ),
        before
    );
}

mod links;

#[test]
fn a_failing_fold_keeps_the_wal_line_and_the_old_state() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob"]);
    let mut request = request(ids[0], "workflow", vec![ids[1]]);
    let graph = serde_json::json!({"initial_speaker": ids[0].to_string()});
    request.knobs = map_of([("graph", graph)]);
    let Created::Pending(channel) = hub.create_channel(at(0), request).expect("opens") else {
        panic!()
    };
    ack(&mut hub, at(0), channel, ids[1]);
    outputs(&mut hub);
    let before = hub.adapter_state(channel).cloned();
    let data = map_of([
        ("routing", Value::from("not a dict")),
        ("body", Value::from("x")),
    ]);
    let packet = Envelope::new(channel, ids[0], None, EventType::PACKET, data);
    let error = hub
        .post_envelope(at(1), packet)
        .expect_err("routing must be a dict");
    assert_eq!(
        (error.type_name.as_str(), error.message.as_str()),
        ("AttributeError", "'str' object has no attribute 'get'")
    );
    assert_eq!(
        hub.read_wal(channel).last().map(|e| e.event_type.as_str()),
        Some(EventType::PACKET),
        "ag2 appended it"
    );
    assert_eq!(
        hub.adapter_state(channel).cloned(),
        before,
        "the fold did not happen"
    );
    assert!(outputs(&mut hub).is_empty(), "nothing was dispatched");
}
