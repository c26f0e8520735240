//! Connections: hello, receipts and cursors, replay, ping.

use super::*;
use crate::proto::frame::{Frame, FrameKind};
use serde_json::json;

fn frames(hub: &mut Hub) -> Vec<(EndpointId, String)> {
    outputs(hub)
        .into_iter()
        .filter_map(|output| match output {
            Output::Frame { endpoint, frame } => Some((endpoint, frame.encode())),
            Output::Notify {
                endpoint, envelope, ..
            } => Some((endpoint, format!("notify {}", envelope.id_text()))),
            _ => None,
        })
        .collect()
}

fn hello(name: Value, since: Value) -> Frame {
    Frame::new(
        FrameKind::Hello,
        vec![("name", name), ("since_envelope_id", since)],
    )
}

#[test]
fn hello_binds_welcomes_and_evicts_the_previous_binding() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob"]);
    let old = hub.endpoint_of(ids[1]).expect("bound at registration");
    let fresh = hub.mint_endpoint();
    hub.handle_frame(at(5), fresh, hello(json!("bob"), Value::Null));
    let sent = frames(&mut hub);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1,
        format!(
            r#"{{"endpoint_id": "{fresh}", "hub_time": "2026-01-01T00:00:05+00:00", "kind": "welcome"}}"#
        )
    );
    assert_eq!(hub.endpoint_of(ids[1]), Some(fresh));
    assert!(hub.bound_to(old).is_empty(), "the old connection lost bob");
}

#[test]
fn hello_refusals_match_ag2() {
    let mut config = quiet();
    config.auth = link::AuthConfig {
        no_auth: true,
        api_keys: Some([("carol".to_string(), "s3cret".to_string())].into()),
    };
    let mut hub = Hub::new(config, Instant(0));
    hub.register(at(0), Passport::named("bob"), Resume::default(), None)
        .expect("none scheme");
    let mut carol = Passport {
        auth_scheme: "api_key".into(),
        ..Passport::named("carol")
    };
    let claim = json!({"token": "s3cret"});
    hub.register_with_claim(
        at(0),
        &mut carol,
        claim.as_object().expect("object"),
        Resume::default(),
        None,
    )
    .expect("right token");
    let endpoint = hub.mint_endpoint();
    let cases = [
        (
            hello(json!(["bob"]), Value::Null),
            r#"{"code": "protocol_error", "message": "malformed hello frame: name""#,
        ),
        (
            hello(json!("zed"), Value::Null),
            r#"{"code": "not_found", "message": "unknown name: zed""#,
        ),
        (
            Frame::new(
                FrameKind::Hello,
                vec![("name", json!("bob")), ("auth_scheme", json!("api_key"))],
            ),
            r#"{"code": "auth_failed", "message": "auth scheme 'api_key' does not match 'bob''s registered scheme 'none'""#,
        ),
        (
            Frame::new(
                FrameKind::Hello,
                vec![("name", json!("carol")), ("auth_scheme", json!("api_key"))],
            ),
            r#"{"code": "auth_failed", "message": "api_key claim missing required string field 'token'""#,
        ),
        (
            Frame::new(
                FrameKind::Hello,
                vec![
                    ("name", json!("carol")),
                    ("auth_scheme", json!("api_key")),
                    ("auth_claim", json!({"token": "nope"})),
                ],
            ),
            r#"{"code": "auth_failed", "message": "api_key mismatch for 'carol'""#,
        ),
        (
            Frame::new(
                FrameKind::Hello,
                vec![("name", json!("bob")), ("auth_claim", json!("x"))],
            ),
            r#"{"code": "auth_failed", "message": "auth_claim must be a JSON object""#,
        ),
    ];
    for (frame, expected) in cases {
        hub.handle_frame(at(0), endpoint, frame);
        let sent = frames(&mut hub);
        assert!(
            sent.len() == 1 && sent[0].1.starts_with(expected),
            "{sent:?} vs {expected}"
        );
    }
    assert!(hub.bound_to(endpoint).is_empty());
    let ok = Frame::new(
        FrameKind::Hello,
        vec![
            ("name", json!("carol")),
            ("auth_scheme", json!("api_key")),
            ("auth_claim", json!({"token": "s3cret"})),
        ],
    );
    hub.handle_frame(at(0), endpoint, ok);
    assert!(frames(&mut hub)[0].1.contains(r#""kind": "welcome""#));
    let mut mallory = Passport {
        auth_scheme: "kerberos".into(),
        ..Passport::named("mallory")
    };
    let error = hub
        .register_with_claim(at(0), &mut mallory, &Map::new(), Resume::default(), None)
        .expect_err("scheme");
    assert_eq!(
        (error.type_name.as_str(), error.message.as_str()),
        ("AuthError", "unknown auth scheme: 'kerberos'")
    );
}

fn receipt(recipient: AgentId, envelope: &str, status: &str, channel: ChannelId) -> Frame {
    Frame::new(
        FrameKind::Receipt,
        vec![
            ("envelope_id", json!(envelope)),
            ("status", json!(status)),
            ("recipient_id", json!(recipient.to_string())),
            ("channel_id", json!(channel.to_string())),
        ],
    )
}

#[test]
fn receipts_move_cursors_forward_only_from_the_bound_connection() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob"]);
    let channel = open_active(&mut hub, "conversation", ids[0], &[ids[1]]);
    outputs(&mut hub);
    let bob = hub.endpoint_of(ids[1]).expect("bound");
    let other = hub.mint_endpoint();
    let key = channel.to_string();
    hub.handle_frame(
        at(0),
        other,
        receipt(ids[1], "0000000000000000000000000000000f", "ack", channel),
    );
    assert_eq!(
        hub.inbox_cursor(ids[1], &key),
        "",
        "an unbound connection cannot ack for bob"
    );
    hub.handle_frame(
        at(0),
        bob,
        receipt(ids[1], "0000000000000000000000000000000f", "ack", channel),
    );
    hub.handle_frame(
        at(0),
        bob,
        receipt(ids[1], "0000000000000000000000000000000a", "ack", channel),
    );
    hub.handle_frame(
        at(0),
        bob,
        receipt(ids[1], "00000000000000000000000000000010", "nack", channel),
    );
    assert_eq!(
        hub.inbox_cursor(ids[1], &key),
        "0000000000000000000000000000000f",
        "monotonic; nacks ignored"
    );
    assert!(frames(&mut hub).is_empty(), "receipts are never answered");
}

#[test]
fn replay_sends_what_is_past_the_cursor_and_visible() {
    let (mut hub, ids) = hub_with(quiet(), &["alice", "bob", "carol"]);
    let channel = open_active(&mut hub, "conversation", ids[0], &[ids[1]]);
    let mut addressed = text(channel, ids[0], "to bob");
    addressed.audience = Some(vec![ids[1]]);
    let first = hub.post_envelope(at(1), addressed).expect("posted");
    hub.post_envelope(at(2), text(channel, ids[1], "bob's own"))
        .expect("posted");
    let mut elsewhere = text(channel, ids[0], "to alice only");
    elsewhere.audience = Some(vec![ids[0]]);
    hub.post_envelope(at(3), elsewhere).expect("posted");
    let last = hub
        .post_envelope(at(4), text(channel, ids[0], "broadcast"))
        .expect("posted");
    outputs(&mut hub);
    let bob = hub.endpoint_of(ids[1]).expect("bound");
    hub.handle_frame(
        at(5),
        bob,
        receipt(ids[1], &first.to_string(), "ack", channel),
    );
    let fresh = hub.mint_endpoint();
    hub.handle_frame(at(6), fresh, hello(json!("bob"), json!("")));
    let sent: Vec<String> = frames(&mut hub).into_iter().map(|(_, f)| f).collect();
    assert!(sent[0].contains("welcome"));
    // The acked invite-era envelopes and bob's own post are skipped; "to alice only" is not
    // visible to bob; past the cursor only the broadcast remains.
    assert_eq!(&sent[1..], &[format!("notify {last}")]);
    hub.handle_frame(at(7), fresh, hello(json!("bob"), Value::Null));
    assert_eq!(frames(&mut hub).len(), 1, "a null since replays nothing");
    hub.handle_frame(at(7), fresh, Frame::new(FrameKind::Ping, vec![]));
    assert_eq!(frames(&mut hub)[0].1, r#"{"kind": "pong"}"#);
}
