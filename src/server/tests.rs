//! The server driven with raw JSON text, as a remote ag2 client would send it.

use super::*;
use crate::hub::HubConfig;
use crate::time::{Timestamp, DEFAULT_EPOCH};
use serde_json::json;

fn now() -> Now {
    Now {
        wall: Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch"),
        mono: Instant(0),
    }
}

fn server() -> HubServer {
    let config = HubConfig {
        ttl_sweep_interval_micros: 0,
        expectation_sweep_interval_micros: 0,
        ..HubConfig::default()
    };
    HubServer::new(Hub::new(config, Instant(0)))
}

fn request(id: &str, op: &str, params: Value) -> String {
    json!({"request_id": id, "op": op, "params": params, "kind": "request"}).to_string()
}

/// Every message sent so far, as (connection, decoded JSON).
fn drain(server: &mut HubServer) -> Vec<(EndpointId, Value)> {
    std::iter::from_fn(|| server.poll_output())
        .map(|output| match output {
            ServerOutput::Send { endpoint, text } => {
                (endpoint, serde_json::from_str(&text).expect("valid JSON"))
            }
            ServerOutput::Close { endpoint } => (endpoint, json!({"kind": "closed"})),
            ServerOutput::Frame { endpoint, frame } => (
                endpoint,
                serde_json::from_str(&frame.encode()).expect("valid JSON"),
            ),
        })
        .collect()
}

fn register(server: &mut HubServer, endpoint: EndpointId, name: &str) -> String {
    server.receive(
        now(),
        endpoint,
        &request(
            "r",
            "register",
            json!({"passport": {"name": name}, "resume": {}}),
        ),
    );
    let sent = drain(server);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1["ok"], json!(true), "{sent:?}");
    sent[0].1["result"]["agent_id"]
        .as_str()
        .expect("stamped id")
        .to_string()
}

fn kinds(sent: &[(EndpointId, Value)]) -> Vec<String> {
    sent.iter()
        .map(|(_, v)| match v["kind"].as_str() {
            Some("notify") => format!(
                "notify {}",
                v["envelope"]["event_type"].as_str().unwrap_or("?")
            ),
            Some("response") => format!("response {}", v["request_id"].as_str().unwrap_or("?")),
            Some(other) => other.to_string(),
            None => "?".to_string(),
        })
        .collect()
}

#[test]
fn create_channel_answers_after_the_last_ack_and_holds_the_connection_meanwhile() {
    let mut server = server();
    let (a, b) = (server.connect(), server.connect());
    let alice = register(&mut server, a, "alice");
    let bob = register(&mut server, b, "bob");
    let open = json!({"creator_id": alice, "manifest_type": "consulting", "participants": [bob]});
    server.receive(now(), a, &request("open", "create_channel", open));
    server.receive(now(), a, r#"{"kind": "ping"}"#);
    let sent = drain(&mut server);
    assert_eq!(
        kinds(&sent),
        ["notify ag2.channel.invite"],
        "the ping waits behind the pending open"
    );
    assert_eq!(sent[0].0, b);
    let invite = &sent[0].1["envelope"];
    let ack = json!({"envelope": {
        "channel_id": invite["channel_id"], "sender_id": bob, "audience": null,
        "event_type": "ag2.channel.invite.ack", "event_data": {"channel_id": invite["channel_id"]},
        "causation_id": invite["envelope_id"]
    }});
    server.receive(now(), b, &request("ack", "post_envelope", ack));
    let sent = drain(&mut server);
    // opened to both (dispatch order), then the ack's own response, then alice's open answer,
    // then the ping that waited behind it.
    assert_eq!(
        kinds(&sent),
        [
            "notify ag2.channel.opened",
            "notify ag2.channel.opened",
            "response ack",
            "response open",
            "pong"
        ]
    );
    assert_eq!(sent[3].0, a);
    assert_eq!(sent[3].1["result"]["state"], json!("active"));
    assert_eq!(sent[4].0, a);
}

/// bob's ack and a close for alice's channel wait behind bob's own pending open; once carol acks
/// bob's, his queue runs (the ack activates alice's channel, the close closes it), and only then
/// is alice answered, with the channel as it is by then (ag2's handler reads the metadata when it
/// resumes).
#[test]
fn an_open_is_answered_after_the_connection_that_ended_its_handshake_ran_dry() {
    let mut server = server();
    let (a, b, c) = (server.connect(), server.connect(), server.connect());
    let alice = register(&mut server, a, "alice");
    let bob = register(&mut server, b, "bob");
    let carol = register(&mut server, c, "carol");
    let consulting = |creator: &str, invitee: &str| json!({"creator_id": creator, "manifest_type": "consulting", "participants": [invitee]});
    server.receive(
        now(),
        b,
        &request("b-open", "create_channel", consulting(&bob, &carol)),
    );
    server.receive(
        now(),
        a,
        &request("a-open", "create_channel", consulting(&alice, &bob)),
    );
    let invites: Vec<Value> = drain(&mut server)
        .into_iter()
        .map(|(_, sent)| sent["envelope"].clone())
        .collect();
    assert_eq!(invites.len(), 2);
    let ack = |invite: &Value, sender: &str| {
        json!({"envelope": {
            "channel_id": invite["channel_id"], "sender_id": sender, "audience": null,
            "event_type": "ag2.channel.invite.ack", "event_data": {},
        }})
    };
    let alices = invites[1]["channel_id"].clone();
    server.receive(
        now(),
        b,
        &request("b-ack", "post_envelope", ack(&invites[1], &bob)),
    );
    let close = json!({"channel_id": alices, "reason": "changed my mind"});
    server.receive(now(), b, &request("b-close", "close_channel", close));
    assert!(drain(&mut server).is_empty(), "bob waits on his own open");
    assert_eq!(
        server.hub().waiting_on(a).map(|c| c.to_string()),
        alices.as_str().map(str::to_string)
    );
    server.receive(
        now(),
        c,
        &request("c-ack", "post_envelope", ack(&invites[0], &carol)),
    );
    let sent = drain(&mut server);
    let responses: Vec<(EndpointId, String)> = sent
        .iter()
        .filter(|(_, v)| v["kind"] == json!("response"))
        .map(|(to, v)| (*to, v["request_id"].as_str().unwrap_or("?").to_string()))
        .collect();
    assert_eq!(
        responses,
        [
            (c, "c-ack".to_string()),
            (b, "b-open".to_string()),
            (b, "b-ack".to_string()),
            (b, "b-close".to_string()),
            (a, "a-open".to_string()),
        ]
    );
    let answer = &sent
        .iter()
        .rev()
        .find(|(to, _)| *to == a)
        .expect("answered")
        .1;
    assert_eq!(answer["result"]["state"], json!("closed"));
    assert_eq!(answer["result"]["close_reason"], json!("changed my mind"));
    assert_eq!(server.hub().waiting_on(a), None);
}

/// A server keeps the hub's refusals only when asked to.
#[test]
fn refused_requests_are_kept_only_when_asked() {
    for keep in [false, true] {
        let mut server = server();
        server.keep_refused(keep);
        let a = server.connect();
        server.receive(
            now(),
            a,
            &request("r", "get_agent", json!({"name_or_id": "zed"})),
        );
        assert_eq!(drain(&mut server)[0].1["ok"], json!(false));
        let refused = server.poll_refused();
        assert_eq!(refused.is_some(), keep);
        if let Some(refused) = refused {
            assert_eq!((refused.endpoint, refused.op.as_str()), (a, "get_agent"));
            assert_eq!(refused.error.wire_code(), "not_found");
        }
        assert_eq!(server.poll_refused(), None);
    }
}

#[test]
fn a_handshake_that_times_out_answers_and_releases_the_connection() {
    let mut server = server();
    let (a, b) = (server.connect(), server.connect());
    let alice = register(&mut server, a, "alice");
    let bob = register(&mut server, b, "bob");
    let open = json!({"creator_id": alice, "manifest_type": "consulting", "participants": [bob]});
    server.receive(now(), a, &request("open", "create_channel", open));
    server.receive(now(), a, r#"{"kind": "ping"}"#);
    drain(&mut server);
    let deadline = server.poll_timeout().expect("invite deadline");
    server.handle_timeout(Now {
        mono: deadline,
        ..now()
    });
    let sent = drain(&mut server);
    let answer = sent
        .iter()
        .find(|(_, v)| v["kind"] == "response")
        .expect("answered");
    assert_eq!(answer.1["error_code"], json!("protocol_error"));
    assert!(answer.1["error_message"]
        .as_str()
        .expect("message")
        .ends_with("ack timeout"));
    assert_eq!(kinds(&sent).last().map(String::as_str), Some("pong"));
}

/// A small seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn junk(rng: &mut Rng, alice: &str) -> String {
    let kinds = [
        "hello", "welcome", "ping", "pong", "request", "response", "error", "notify", "receipt",
        "nope", "",
    ];
    let keys = [
        "name",
        "request_id",
        "op",
        "params",
        "envelope",
        "status",
        "recipient_id",
        "channel_id",
        "x",
    ];
    let values = [
        r#""alice""#,
        "1",
        "null",
        "[]",
        "{}",
        r#""ack""#,
        r#""get_agent""#,
        "true",
        r#""""#,
    ];
    match rng.next() % 6 {
        0 => (0..rng.next() % 64)
            .map(|_| char::from((rng.next() % 128) as u8))
            .collect(),
        1 => format!(r#"{{"kind": "{}"}}"#, rng.pick(&kinds)),
        2 => {
            let fields: Vec<String> = (0..1 + rng.next() % 4)
                .map(|_| format!(r#""{}": {}"#, rng.pick(&keys), rng.pick(&values)))
                .collect();
            format!(
                r#"{{"kind": "{}", {}}}"#,
                rng.pick(&kinds),
                fields.join(", ")
            )
        }
        3 => {
            let ops = [
                "get_agent",
                "post_envelope",
                "create_channel",
                "read_wal",
                "unregister",
                "set_rule",
                "nope",
            ];
            request(
                "j",
                rng.pick(&ops),
                json!({"name_or_id": alice, "agent_id": alice, "channel_id": 1}),
            )
        }
        4 => format!(
            r#"{{"kind": "receipt", "envelope_id": "e", "status": "ack", "recipient_id": "{alice}", "channel_id": "c"}}"#
        ),
        _ => format!(
            r#"{{"kind": "hello", "name": "alice", "since_envelope_id": {}}}"#,
            rng.pick(&values)
        ),
    }
}

#[test]
fn thousands_of_malformed_frames_never_crash_or_wedge_the_hub() {
    let mut server = server();
    let (attacker, client) = (server.connect(), server.connect());
    // On a NoAuth hub any connection may hello as alice and act as her (ag2 allows it), so the
    // probe asks about bob, whom the junk never names.
    let alice = register(&mut server, client, "alice");
    let bob = register(&mut server, client, "bob");
    let mut rng = Rng(0x0bad_cafe);
    for round in 0..5000 {
        server.receive(now(), attacker, &junk(&mut rng, &alice));
        if round % 50 == 0 {
            server.receive(
                now(),
                client,
                &request(
                    &format!("q{round}"),
                    "find_agent_id",
                    json!({"name": "bob"}),
                ),
            );
            let answered = drain(&mut server).into_iter().any(|(endpoint, v)| {
                endpoint == client
                    && v["request_id"] == json!(format!("q{round}"))
                    && v["result"] == json!(bob)
            });
            assert!(
                answered,
                "round {round}: the well-formed client was not served"
            );
        }
    }
    drain(&mut server);
    let huge = format!(
        r#"{{"kind": "ping", "pad": "{}"}}"#,
        "x".repeat(crate::proto::frame::FRAME_BYTES_MAX)
    );
    server.receive(now(), attacker, &huge);
    assert_eq!(
        drain(&mut server),
        vec![(attacker, json!({"kind": "closed"}))],
        "an oversized message closes its connection"
    );
    server.receive(
        now(),
        client,
        &request("after", "find_agent_id", json!({"name": "bob"})),
    );
    assert_eq!(drain(&mut server).len(), 1, "the hub still serves");
}

#[test]
fn a_server_carrying_frames_hands_out_the_frames_it_would_have_encoded() {
    let run = |frames: bool| {
        let mut server = server();
        server.carry_frames(frames);
        let endpoint = server.connect();
        let hello = json!({"name": "nobody", "auth_scheme": "none", "auth_claim": {}, "since_envelope_id": null, "kind": "hello"});
        server.receive(now(), endpoint, &hello.to_string());
        server.receive(now(), endpoint, &request("l", "list_agents", json!({})));
        std::iter::from_fn(|| server.poll_output())
            .map(|output| match output {
                ServerOutput::Send { text, .. } => text,
                ServerOutput::Frame { frame, .. } => {
                    assert!(frames, "a text server sent a frame");
                    frame.encode()
                }
                ServerOutput::Close { .. } => "closed".to_string(),
            })
            .collect::<Vec<String>>()
    };
    let text = run(false);
    assert_eq!(text.len(), 2, "{text:?}");
    assert_eq!(run(true), text);
}
