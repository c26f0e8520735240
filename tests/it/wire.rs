//! The hub over WebSocket on turmoil's simulated network: a well-formed exchange between two
//! remote agents, thousands of malformed messages from attackers while a well-behaved client
//! keeps working, and byte-identical transcripts across runs with the same seed.

use crate::support::Rng;
use hubsim::hub::{Hub, HubConfig};
use hubsim::net::{Received, WsClient};
use hubsim::proto::frame::FRAME_BYTES_MAX;
use hubsim::server::HubServer;
use hubsim::time::{Instant, Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::error::Error;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};
use turmoil::net::TcpStream;

const HUB_PORT: u16 = 8765;
const URL: &str = "ws://hub:8765/";
const SEED: u64 = 0x5eed_0001;

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// Everything one side sent (`> `) and received (`< `), in order.
type Transcript = Rc<RefCell<Vec<String>>>;

/// A simulated world with the hub served on `hub:8765`: fixed seed, epoch, tick and latency.
fn world(seed: u64) -> turmoil::Sim<'static> {
    // 2026-01-01T00:00:00Z, the scenarios' epoch.
    let epoch = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(600))
        .build();
    sim.host("hub", || async {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", HUB_PORT)).await?;
        let server = HubServer::new(Hub::new(HubConfig::default(), Instant(0)));
        let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
        hubsim::net::serve(listener, server, epoch).await?;
        Ok(())
    });
    sim
}

fn request(id: &str, op: &str, params: Value) -> String {
    json!({"request_id": id, "op": op, "params": params, "kind": "request"}).to_string()
}

/// One WebSocket client that remembers what it saw.
struct Peer {
    ws: WsClient<TcpStream>,
    transcript: Transcript,
    /// Frames read while waiting for something else.
    backlog: VecDeque<Value>,
}

impl Peer {
    async fn connect(transcript: Transcript) -> TestResult<Peer> {
        let stream = TcpStream::connect(("hub", HUB_PORT)).await?;
        let ws = WsClient::connect(stream, URL).await?;
        Ok(Peer {
            ws,
            transcript,
            backlog: VecDeque::new(),
        })
    }

    async fn send(&mut self, text: String) -> TestResult {
        self.transcript.borrow_mut().push(format!("> {text}"));
        self.ws.send_text(text).await?;
        Ok(())
    }

    /// The next frame from the wire (the backlog is not consulted).
    async fn read(&mut self) -> TestResult<Value> {
        match self.ws.recv().await? {
            Received::Text(text) => {
                self.transcript.borrow_mut().push(format!("< {text}"));
                Ok(serde_json::from_str(&text)?)
            }
            other => Err(format!("expected a text frame, got {other:?}").into()),
        }
    }

    /// The first frame, backlog first, that `wanted` accepts; the others stay in the backlog.
    async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> TestResult<Value> {
        if let Some(idx) = self.backlog.iter().position(&wanted) {
            return Ok(self.backlog.remove(idx).expect("found"));
        }
        loop {
            let frame = self.read().await?;
            if wanted(&frame) {
                return Ok(frame);
            }
            self.backlog.push_back(frame);
        }
    }

    async fn rpc(&mut self, id: &str, op: &str, params: Value) -> TestResult<Value> {
        self.send(request(id, op, params)).await?;
        let response = self
            .next_where(|f| f["kind"] == "response" && f["request_id"] == id)
            .await?;
        assert_eq!(response["ok"], json!(true), "{op}: {response}");
        Ok(response["result"].clone())
    }

    async fn notify(&mut self, event_type: &str) -> TestResult<Value> {
        let frame = self
            .next_where(|f| f["kind"] == "notify" && f["envelope"]["event_type"] == event_type)
            .await?;
        Ok(frame["envelope"].clone())
    }
}

fn register_params(name: &str) -> Value {
    json!({"passport": {"name": name}, "resume": {}})
}

fn agent_id(result: &Value) -> String {
    result["agent_id"].as_str().expect("agent id").to_string()
}

/// Bob: registers, acks the invite, answers alice's question (which closes the channel).
async fn bob(transcript: Transcript) -> TestResult {
    let mut bob = Peer::connect(transcript).await?;
    let me = agent_id(&bob.rpc("b1", "register", register_params("bob")).await?);
    let invite = bob.notify("ag2.channel.invite").await?;
    let ack = json!({"envelope": {
        "channel_id": invite["channel_id"], "sender_id": me, "audience": null,
        "event_type": "ag2.channel.invite.ack",
        "event_data": {"channel_id": invite["channel_id"]},
        "causation_id": invite["envelope_id"]
    }});
    bob.rpc("b2", "post_envelope", ack).await?;
    bob.notify("ag2.channel.opened").await?;
    let question = bob.notify("ag2.msg.text").await?;
    assert_eq!(question["event_data"]["text"], json!("What is 6 x 7?"));
    let answer = json!({"envelope": {
        "channel_id": question["channel_id"], "sender_id": me,
        "audience": [question["sender_id"]], "event_type": "ag2.msg.text",
        "event_data": {"text": "42"}, "causation_id": question["envelope_id"]
    }});
    bob.rpc("b3", "post_envelope", answer).await?;
    bob.notify("ag2.channel.closed").await?;
    bob.ws.close().await?;
    Ok(())
}

/// Alice: registers, waits (over the wire) for bob to exist, opens a consulting channel to him,
/// asks, and reads the answer and the close.
async fn alice(transcript: Transcript) -> TestResult {
    let mut alice = Peer::connect(transcript).await?;
    let me = agent_id(
        &alice
            .rpc("a1", "register", register_params("alice"))
            .await?,
    );
    let bob = loop {
        let found = alice
            .rpc("find", "find_agent_id", json!({"name": "bob"}))
            .await?;
        if let Some(bob) = found.as_str() {
            break bob.to_string();
        }
    };
    let open = json!({"creator_id": me, "manifest_type": "consulting", "participants": [bob]});
    let channel = alice.rpc("a2", "create_channel", open).await?;
    assert_eq!(channel["state"], json!("active"));
    let question = json!({"envelope": {
        "channel_id": channel["channel_id"], "sender_id": me, "audience": [bob],
        "event_type": "ag2.msg.text", "event_data": {"text": "What is 6 x 7?"}
    }});
    alice.rpc("a3", "post_envelope", question).await?;
    let answer = alice.notify("ag2.msg.text").await?;
    assert_eq!(answer["event_data"]["text"], json!("42"));
    alice.notify("ag2.channel.closed").await?;
    alice.ws.close().await?;
    Ok(())
}

/// Runs alice and bob against a hub and returns their transcripts.
fn exchange(seed: u64) -> (Vec<String>, Vec<String>) {
    let mut sim = world(seed);
    let (alice_log, bob_log) = (Transcript::default(), Transcript::default());
    sim.client("bob", bob(bob_log.clone()));
    sim.client("alice", alice(alice_log.clone()));
    if let Err(error) = sim.run() {
        panic!("seed {seed:#x}: {error}");
    }
    let alice_log = alice_log.borrow().clone();
    let bob_log = bob_log.borrow().clone();
    (alice_log, bob_log)
}

/// `> request OP`, `< response ID`, `< notify EVENT`, ... for each line of a transcript,
/// leaving out alice's polls for bob.
fn kinds(transcript: &[String]) -> Vec<String> {
    transcript
        .iter()
        .filter_map(|line| {
            let (direction, text) = line.split_at(2);
            let frame: Value = serde_json::from_str(text).expect("JSON");
            let what = match frame["kind"].as_str().expect("kind") {
                "request" => format!("request {}", frame["op"].as_str().expect("op")),
                "response" => format!("response {}", frame["request_id"].as_str().expect("id")),
                "notify" => format!("notify {}", frame["envelope"]["event_type"]),
                other => other.to_string(),
            };
            (!what.contains("find")).then(|| format!("{direction}{what}"))
        })
        .collect()
}

#[test]
fn two_agents_open_a_consulting_channel_over_websocket() {
    let (alice, bob) = exchange(SEED);
    assert_eq!(
        kinds(&bob),
        [
            "> request register",
            "< response b1",
            "< notify \"ag2.channel.invite\"",
            "> request post_envelope",
            "< notify \"ag2.channel.opened\"",
            "< response b2",
            "< notify \"ag2.msg.text\"",
            "> request post_envelope",
            "< notify \"ag2.channel.closed\"",
            "< response b3",
        ]
    );
    assert_eq!(
        kinds(&alice),
        [
            "> request register",
            "< response a1",
            "> request create_channel",
            "< notify \"ag2.channel.opened\"",
            "< response a2",
            "> request post_envelope",
            "< response a3",
            "< notify \"ag2.msg.text\"",
            "< notify \"ag2.channel.closed\"",
        ]
    );
    // The hub clock is the simulated one: it starts at the epoch and moves by milliseconds.
    let registered: Value = serde_json::from_str(&alice[1][2..]).expect("JSON");
    let created_at = registered["result"]["created_at"].as_str().expect("stamp");
    assert!(
        created_at.starts_with("2026-01-01T00:00:00."),
        "{created_at}"
    );
}

#[test]
fn the_same_seed_gives_byte_identical_transcripts() {
    let first = exchange(SEED);
    let second = exchange(SEED);
    assert!(!first.0.is_empty() && !first.1.is_empty());
    assert_eq!(first.0, second.0, "alice's transcripts differ");
    assert_eq!(first.1, second.1, "bob's transcripts differ");
}

/// What the hub must answer to one malformed message.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    /// An `error` frame with exactly these bytes.
    Error(String),
    /// A `pong`.
    Pong,
    /// A failed `response` to this request id with this error code.
    Failed { request_id: String, code: String },
}

/// One generated message: text, or bytes sent as a binary message.
enum Junk {
    Text(String),
    Binary(Vec<u8>),
}

fn error_frame(code: &str, message: &str) -> Reply {
    Reply::Error(format!(
        r#"{{"code": "{code}", "message": "{message}", "envelope_id": null, "kind": "error"}}"#
    ))
}

/// JSON values that are not strings (nor null, which some optional fields allow).
const NOT_STRINGS: [&str; 6] = ["1", "1.5", "true", "[]", "{}", r#"["a"]"#];

/// A malformed (or merely odd) message and the replies ag2 gives it.
fn junk(rng: &mut Rng, serial: usize) -> (Junk, Vec<Reply>) {
    let kinds = [
        "hello", "welcome", "ping", "pong", "request", "response", "error", "notify", "receipt",
    ];
    let silent = |text: String| (Junk::Text(text), vec![]);
    match rng.below(12) {
        // Random bytes, made UTF-8, never JSON (a leading `~`); as text or binary.
        0 | 1 => {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let text = format!("~{}", String::from_utf8_lossy(&bytes));
            if rng.below(2) == 0 {
                silent(text)
            } else {
                (Junk::Binary(text.into_bytes()), vec![])
            }
        }
        // JSON that is not an object.
        2 => silent(
            rng.pick(&[
                "1",
                "\"ping\"",
                "null",
                "[]",
                "[{\"kind\": \"ping\"}]",
                "true",
            ])
            .into(),
        ),
        // Objects with no kind, an unknown kind, or a kind of the wrong type.
        3 => silent(
            rng.pick(&[
                "{}",
                r#"{"kind": "nope"}"#,
                r#"{"kind": 1}"#,
                r#"{"kind": null, "name": "x"}"#,
                r#"{"kind": "PING"}"#,
                r#"{"op": "ping"}"#,
            ])
            .into(),
        ),
        // A known kind with an extra key.
        4 => silent(format!(
            r#"{{"kind": "{}", "x{serial}": 1}}"#,
            rng.pick(&kinds)
        )),
        // Required keys missing.
        5 => silent(
            rng.pick(&[
                r#"{"kind": "hello"}"#,
                r#"{"kind": "hello", "auth_scheme": "none"}"#,
                r#"{"kind": "request", "request_id": "r"}"#,
                r#"{"kind": "request", "op": "ping"}"#,
                r#"{"kind": "welcome"}"#,
                r#"{"kind": "notify"}"#,
                r#"{"kind": "notify", "envelope": {"channel_id": "c"}}"#,
            ])
            .into(),
        ),
        // Frames the hub ignores from a client.
        6 => silent(
            rng.pick(&[
                r#"{"kind": "pong"}"#,
                r#"{"endpoint_id": "e", "hub_time": "t", "kind": "welcome"}"#,
                r#"{"code": "x", "message": "y", "kind": "error"}"#,
                r#"{"request_id": "r", "ok": true, "kind": "response"}"#,
            ])
            .into(),
        ),
        // A hello with a field of the wrong type.
        7 => {
            let bad = rng.pick(&NOT_STRINGS);
            let (text, field) = match rng.below(3) {
                0 => (format!(r#"{{"kind": "hello", "name": {bad}}}"#), "name"),
                1 => (
                    format!(r#"{{"kind": "hello", "name": "mallory", "auth_scheme": {bad}}}"#),
                    "auth_scheme",
                ),
                _ => (
                    format!(
                        r#"{{"kind": "hello", "name": "mallory", "since_envelope_id": {bad}}}"#
                    ),
                    "since_envelope_id",
                ),
            };
            let message = format!("malformed hello frame: {field}");
            (
                Junk::Text(text),
                vec![error_frame("protocol_error", &message)],
            )
        }
        // A request with a field of the wrong type (params is checked first).
        8 => {
            let bad = rng.pick(&NOT_STRINGS);
            let (text, field) = match rng.below(3) {
                0 => (
                    format!(r#"{{"kind": "request", "request_id": {bad}, "op": "ping"}}"#),
                    "request_id",
                ),
                1 => (
                    format!(r#"{{"kind": "request", "request_id": "r", "op": {bad}}}"#),
                    "op",
                ),
                _ => {
                    let params = rng.pick(&["1", "[]", r#""x""#, "null", "true"]);
                    let text = format!(
                        r#"{{"kind": "request", "request_id": 1, "op": "x", "params": {params}}}"#
                    );
                    (text, "params")
                }
            };
            let message = format!("malformed request frame: {field}");
            (
                Junk::Text(text),
                vec![error_frame("protocol_error", &message)],
            )
        }
        // A receipt with a field of the wrong type.
        9 => {
            let bad = rng.pick(&NOT_STRINGS);
            let text = format!(r#"{{"kind": "receipt", "envelope_id": "e", "status": {bad}}}"#);
            (
                Junk::Text(text),
                vec![error_frame(
                    "protocol_error",
                    "malformed receipt frame: status",
                )],
            )
        }
        // A hello for a name nobody registered.
        10 => {
            let text = format!(r#"{{"kind": "hello", "name": "mallory{serial}"}}"#);
            let message = format!("unknown name: mallory{serial}");
            (Junk::Text(text), vec![error_frame("not_found", &message)])
        }
        // Well-formed requests the hub refuses, and pings (some sent as binary).
        _ => match rng.below(4) {
            0 => {
                let id = format!("j{serial}");
                let text = request(&id, rng.pick(&["nope", "", "PING"]), json!({}));
                let code = "protocol_error".to_string();
                let reply = Reply::Failed {
                    request_id: id,
                    code,
                };
                (Junk::Text(text), vec![reply])
            }
            1 => {
                let id = format!("j{serial}");
                let op = rng.pick(&["unregister", "set_rule", "set_resume"]);
                let text = request(&id, op, json!({"channel_id": "c", "agent_id": "a"}));
                let reply = Reply::Failed {
                    request_id: id,
                    code: "access_denied".to_string(),
                };
                (Junk::Text(text), vec![reply])
            }
            2 => (
                Junk::Binary(br#"{"kind": "ping"}"#.to_vec()),
                vec![Reply::Pong],
            ),
            _ => (Junk::Text(r#"{"kind": "ping"}"#.into()), vec![Reply::Pong]),
        },
    }
}

/// The reply a frame is, for comparison with [`Reply`].
fn reply_of(text: &str) -> Reply {
    let frame: Value = serde_json::from_str(text).expect("the hub sends JSON");
    match frame["kind"].as_str() {
        Some("error") => Reply::Error(text.to_string()),
        Some("pong") => Reply::Pong,
        Some("response") => {
            assert_eq!(frame["ok"], json!(false), "{text}");
            Reply::Failed {
                request_id: frame["request_id"].as_str().expect("id").to_string(),
                code: frame["error_code"].as_str().expect("code").to_string(),
            }
        }
        _ => panic!("unexpected frame to an attacker: {text}"),
    }
}

const ATTACKERS: usize = 4;
const BATCHES: usize = 40;
const BATCH_LEN: usize = 20;

/// Reads frames until the response to `sync`, returning the replies before it.
async fn replies_until(ws: &mut WsClient<TcpStream>, sync: &str) -> TestResult<Vec<Reply>> {
    let mut replies = Vec::new();
    loop {
        let Received::Text(text) = ws.recv().await? else {
            return Err("the connection ended".into());
        };
        let frame: Value = serde_json::from_str(&text)?;
        if frame["request_id"] == sync {
            assert_eq!(frame["result"], Value::Null, "{text}");
            return Ok(replies);
        }
        replies.push(reply_of(&text));
    }
}

/// Expects the hub to close the connection: a close frame (1009 when given) or the end.
async fn closed(ws: &mut WsClient<TcpStream>) -> TestResult {
    let ended = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await?;
    match ended {
        Ok(Received::Closed(code)) => {
            assert!(matches!(code, None | Some(1009)), "close code {code:?}");
            Ok(())
        }
        Err(_) => Ok(()),
        Ok(other) => Err(format!("expected the close, got {other:?}").into()),
    }
}

/// One attacker: batches of junk, each followed by a sync request, checking every reply; an
/// exactly-1-MiB message (read and dropped) and an oversized one (closes the connection, and the
/// attacker reconnects); attacker 0 ends with a binary message that is not UTF-8, after which
/// the hub ignores that connection.
async fn attacker(idx: usize, done: Rc<Cell<usize>>) -> TestResult {
    let mut rng = Rng(SEED ^ 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(idx as u64 + 1));
    let connect = || async {
        let stream = TcpStream::connect(("hub", HUB_PORT)).await?;
        TestResult::Ok(WsClient::connect(stream, URL).await?)
    };
    let mut ws = connect().await?;
    for batch in 0..BATCHES {
        let mut expected = Vec::new();
        for item in 0..BATCH_LEN {
            let (message, replies) = junk(&mut rng, batch * BATCH_LEN + item);
            match message {
                Junk::Text(text) => ws.send_text(text).await?,
                Junk::Binary(bytes) => ws.send_binary(bytes).await?,
            }
            expected.extend(replies);
        }
        if batch == 7 {
            // At the limit: read, not a frame, dropped.
            ws.send_text("~".repeat(FRAME_BYTES_MAX)).await?;
        }
        let sync = format!("sync{idx}.{batch}");
        ws.send_text(request(&sync, "find_agent_id", json!({"name": "nobody"})))
            .await?;
        let replies = replies_until(&mut ws, &sync).await?;
        assert_eq!(replies, expected, "attacker {idx}, batch {batch}");
        if batch == 11 {
            // The hub may reset the connection before the whole message is written.
            let _ = ws.send_text("~".repeat(FRAME_BYTES_MAX + 1)).await;
            closed(&mut ws).await?;
            ws = connect().await?;
        }
    }
    if idx == 0 {
        ws.send_binary(vec![0xff, 0xfe, b'{', b'}']).await?;
        ws.send_text(r#"{"kind": "ping"}"#).await?;
        let answer = tokio::time::timeout(Duration::from_secs(2), ws.recv()).await;
        assert!(answer.is_err(), "a detached connection got {answer:?}");
    }
    ws.close().await?;
    done.set(done.get() + 1);
    Ok(())
}

/// The well-formed client: registers carol, then asks for her id and pings until every attacker
/// is done, checking each answer. Returns how many round trips it made.
async fn bystander(done: Rc<Cell<usize>>, round_trips: Rc<Cell<usize>>) -> TestResult {
    let mut carol = Peer::connect(Transcript::default()).await?;
    let me = agent_id(
        &carol
            .rpc("c0", "register", register_params("carol"))
            .await?,
    );
    let mut round = 0;
    while done.get() < ATTACKERS {
        round += 1;
        let found = carol
            .rpc(
                &format!("c{round}"),
                "find_agent_id",
                json!({"name": "carol"}),
            )
            .await?;
        assert_eq!(found, json!(me), "round {round}");
        carol.send(r#"{"kind": "ping"}"#.to_string()).await?;
        let pong = carol.read().await?;
        assert_eq!(pong, json!({"kind": "pong"}), "round {round}");
        assert!(carol.backlog.is_empty(), "{:?}", carol.backlog);
    }
    round_trips.set(round);
    // A newcomer is still served once the attack is over.
    let mut dave = Peer::connect(Transcript::default()).await?;
    dave.rpc("d0", "register", register_params("dave")).await?;
    let listed = dave.rpc("d1", "list_agents", json!({})).await?;
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|agent| agent["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["carol", "dave"]);
    Ok(())
}

#[test]
fn malformed_messages_from_attackers_never_disturb_a_well_formed_client() {
    let mut sim = world(SEED);
    let done = Rc::new(Cell::new(0));
    let round_trips = Rc::new(Cell::new(0));
    sim.client("carol", bystander(done.clone(), round_trips.clone()));
    for idx in 0..ATTACKERS {
        sim.client(format!("attacker{idx}"), attacker(idx, done.clone()));
    }
    if let Err(error) = sim.run() {
        panic!("seed {SEED:#x}: {error}");
    }
    assert_eq!(done.get(), ATTACKERS);
    assert!(
        round_trips.get() >= 50,
        "the bystander made only {} round trips",
        round_trips.get()
    );
}

#[test]
fn every_select_in_the_network_driver_is_biased() {
    // An unbiased `select!` picks its branch with tokio's RNG: one more source of schedule
    // differences between runs.
    let mut dirs = vec![crate::support::root().join("src/net")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/net exists") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 3, "src/net and its folders are read");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        for (idx, _) in text.match_indices("select! {") {
            let next = text[idx + "select! {".len()..].trim_start();
            assert!(
                next.starts_with("biased;"),
                "{}: a select! without `biased;`",
                path.display()
            );
        }
    }
}
