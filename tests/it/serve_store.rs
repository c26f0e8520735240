//! `hubsim serve --store`: a hub served on loopback keeps its store on disk. A conversation
//! goes on across a clean restart (same channel, the WAL appended to, ids after the old ones, a
//! re-attaching agent replayed from its cursor); with `--sync always` an answered write is on
//! disk even when the hub dies without its shutdown path; a second hub cannot take the store;
//! a broken store is refused with its place; the binary's flags.

use futures_util::{SinkExt, StreamExt};
use hubsim::disk::{DiskStore, DiskSync, SyncPolicy};
use hubsim::hub::{Hub, HubConfig};
use hubsim::net::{serve_durable, ServeOptions};
use hubsim::server::HubServer;
use hubsim::time::{Instant, Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// A fresh directory under the system's temporary one.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hubsim-serve-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A hub served on a free loopback port over the store in `dir`, until `stop` is used.
struct Served {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(dir: &Path, policy: SyncPolicy) -> TestResult<Served> {
    let opened = DiskStore::open(dir)?;
    let hub = Hub::hydrate(
        HubConfig::default(),
        &opened.store,
        opened.id_floor,
        Instant(0),
    )?;
    let durability = Box::new(DiskSync::new(opened.disk, policy));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).ok_or("epoch")?;
    let shutdown = async {
        let _ = stopped.await;
    };
    let server = HubServer::new(hub);
    let options = ServeOptions::default();
    let serving = serve_durable(listener, server, epoch, options, shutdown, Some(durability));
    let task = tokio::spawn(serving);
    Ok(Served { addr, stop, task })
}

impl Served {
    /// The clean stop (SIGINT, SIGTERM): the shutdown future resolves.
    async fn stop(self) -> TestResult {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }

    /// kill -9: the serve future is dropped where it stands, without its shutdown path.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One client connection that keeps frames it read while waiting for others.
struct Peer {
    ws: WebSocketStream<TcpStream>,
    backlog: VecDeque<Value>,
}

impl Peer {
    async fn connect(addr: SocketAddr) -> TestResult<Peer> {
        let stream = TcpStream::connect(addr).await?;
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await?;
        Ok(Peer {
            ws,
            backlog: VecDeque::new(),
        })
    }

    async fn send(&mut self, frame: Value) -> TestResult {
        self.ws.send(Message::text(frame.to_string())).await?;
        Ok(())
    }

    async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> TestResult<Value> {
        if let Some(idx) = self.backlog.iter().position(&wanted) {
            return Ok(self.backlog.remove(idx).ok_or("found")?);
        }
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await?;
            match next.ok_or("connection ended")?? {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str())?;
                    if wanted(&frame) {
                        return Ok(frame);
                    }
                    self.backlog.push_back(frame);
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => return Err(format!("expected text, got {other:?}").into()),
            }
        }
    }

    async fn answer(&mut self, id: &str) -> TestResult<Value> {
        let response = self
            .next_where(|f| f["kind"] == "response" && f["request_id"] == id)
            .await?;
        assert_eq!(response["ok"], json!(true), "{response}");
        Ok(response["result"].clone())
    }

    async fn rpc(&mut self, id: &str, op: &str, params: Value) -> TestResult<Value> {
        self.send(json!({"request_id": id, "op": op, "params": params, "kind": "request"}))
            .await?;
        self.answer(id).await
    }

    async fn notify(&mut self, event_type: &str) -> TestResult<Value> {
        let frame = self
            .next_where(|f| f["kind"] == "notify" && f["envelope"]["event_type"] == event_type)
            .await?;
        Ok(frame["envelope"].clone())
    }

    /// Re-attaches as `name`; `since`: replay from the cursor.
    async fn hello(&mut self, name: &str, since: Option<&str>) -> TestResult {
        self.send(json!({"kind": "hello", "name": name, "auth_scheme": "none",
                         "auth_claim": {}, "since_envelope_id": since}))
            .await?;
        self.next_where(|f| f["kind"] == "welcome").await?;
        Ok(())
    }

    /// Every frame sent before this has been handled (frames of a connection are in order).
    async fn settle(&mut self) -> TestResult {
        self.send(json!({"kind": "ping"})).await?;
        self.next_where(|f| f["kind"] == "pong").await?;
        Ok(())
    }
}

fn text_to(channel: &Value, sender: &str, to: &str, text: &str) -> Value {
    json!({"envelope": {"channel_id": channel, "sender_id": sender, "audience": [to],
                        "event_type": "ag2.msg.text", "event_data": {"text": text}}})
}

/// alice and bob registered, and a conversation between them open: (alice, bob, their ids, the
/// channel id).
async fn conversation(addr: SocketAddr) -> TestResult<(Peer, Peer, String, String, Value)> {
    let mut alice = Peer::connect(addr).await?;
    let mut bob = Peer::connect(addr).await?;
    let register = |name: &str| json!({"passport": {"name": name}, "resume": {}});
    let alice_id = alice.rpc("a1", "register", register("alice")).await?["agent_id"]
        .as_str()
        .ok_or("alice's id")?
        .to_string();
    let bob_id = bob.rpc("b1", "register", register("bob")).await?["agent_id"]
        .as_str()
        .ok_or("bob's id")?
        .to_string();
    let open = json!({"creator_id": alice_id, "manifest_type": "conversation",
                      "participants": [bob_id]});
    alice
        .send(
            json!({"request_id": "a2", "op": "create_channel", "params": open, "kind": "request"}),
        )
        .await?;
    let invite = bob.notify("ag2.channel.invite").await?;
    let ack = json!({"envelope": {
        "channel_id": invite["channel_id"], "sender_id": bob_id, "audience": null,
        "event_type": "ag2.channel.invite.ack",
        "event_data": {"channel_id": invite["channel_id"]},
        "causation_id": invite["envelope_id"]
    }});
    bob.rpc("b2", "post_envelope", ack).await?;
    let channel = alice.answer("a2").await?;
    assert_eq!(channel["state"], json!("active"));
    Ok((alice, bob, alice_id, bob_id, channel["channel_id"].clone()))
}

fn wal_path(dir: &Path, channel: &Value) -> TestResult<PathBuf> {
    let id = channel.as_str().ok_or("a channel id")?;
    Ok(dir.join("channels").join(id).join("wal.jsonl"))
}

#[tokio::test]
async fn a_conversation_goes_on_after_a_clean_restart() -> TestResult {
    let dir = scratch("restart");
    let served = start(&dir, SyncPolicy::Every(Duration::from_secs(3600))).await?;
    let (mut alice, mut bob, alice_id, bob_id, channel) = conversation(served.addr).await?;
    let one = alice
        .rpc(
            "a3",
            "post_envelope",
            text_to(&channel, &alice_id, &bob_id, "one"),
        )
        .await?;
    let two = alice
        .rpc(
            "a4",
            "post_envelope",
            text_to(&channel, &alice_id, &bob_id, "two"),
        )
        .await?;
    let first = bob.notify("ag2.msg.text").await?;
    assert_eq!(first["envelope_id"], one);
    // bob acks "one" only: his cursor stops there.
    bob.send(
        json!({"kind": "receipt", "envelope_id": one, "status": "ack",
                    "recipient_id": bob_id, "channel_id": channel, "reason": ""}),
    )
    .await?;
    bob.settle().await?;
    // A sync every hour: only the clean stop writes the store.
    served.stop().await?;
    let wal_before = std::fs::read_to_string(wal_path(&dir, &channel)?)?;
    assert!(wal_before.contains("\"text\": \"two\""), "{wal_before}");

    let served = start(&dir, SyncPolicy::Every(Duration::from_millis(100))).await?;
    let mut bob = Peer::connect(served.addr).await?;
    bob.hello("bob", Some("")).await?;
    // The replay starts after the cursor: "two" comes again, "one" does not.
    let replayed = bob.notify("ag2.msg.text").await?;
    assert_eq!(replayed["envelope_id"], two);
    let mut alice = Peer::connect(served.addr).await?;
    alice.hello("alice", None).await?;
    let got = alice
        .rpc("get", "get_channel", json!({"channel_id": channel}))
        .await?;
    assert_eq!(got["state"], json!("active"), "{got}");
    let three = alice
        .rpc(
            "a5",
            "post_envelope",
            text_to(&channel, &alice_id, &bob_id, "three"),
        )
        .await?;
    let ids = |id: &Value| id.as_str().unwrap_or_default().to_string();
    assert!(
        ids(&three) > ids(&two),
        "new ids after the old ones: {three} {two}"
    );
    assert_eq!(bob.notify("ag2.msg.text").await?["envelope_id"], three);
    served.stop().await?;

    // The WAL was appended to: its old lines are untouched, one line more.
    let wal_after = std::fs::read_to_string(wal_path(&dir, &channel)?)?;
    assert!(wal_after.starts_with(&wal_before));
    assert_eq!(wal_after.lines().count(), wal_before.lines().count() + 1);
    assert!(wal_after.ends_with("\n") && wal_after[wal_before.len()..].contains("three"));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn with_sync_always_an_answered_write_survives_a_kill() -> TestResult {
    let dir = scratch("always");
    let served = start(&dir, SyncPolicy::Always).await?;
    let (mut alice, _bob, alice_id, bob_id, channel) = conversation(served.addr).await?;
    let posted = alice
        .rpc(
            "a3",
            "post_envelope",
            text_to(&channel, &alice_id, &bob_id, "durable"),
        )
        .await?;
    // Answered: on disk before the answer left, so the kill loses nothing.
    served.kill().await;
    let wal = std::fs::read_to_string(wal_path(&dir, &channel)?)?;
    let last = wal.lines().last().ok_or("an empty WAL")?;
    assert!(last.contains("\"text\": \"durable\""), "{last}");
    assert!(
        last.contains(&format!("\"envelope_id\": {posted}")),
        "{last}"
    );

    // The killed hub's lock went with it; a new hub reads everything back.
    let served = start(&dir, SyncPolicy::Always).await?;
    let mut alice = Peer::connect(served.addr).await?;
    alice.hello("alice", None).await?;
    let wal = alice
        .rpc("r", "read_wal", json!({"channel_id": channel}))
        .await?;
    let texts: Vec<&Value> = wal
        .as_array()
        .ok_or("a list")?
        .iter()
        .map(|envelope| &envelope["event_data"]["text"])
        .filter(|text| !text.is_null())
        .collect();
    assert_eq!(texts, [&json!("durable")]);
    served.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn a_timed_sync_writes_within_its_period() -> TestResult {
    let dir = scratch("timed");
    let served = start(&dir, SyncPolicy::Every(Duration::from_millis(50))).await?;
    let (_alice, _bob, _, _, channel) = conversation(served.addr).await?;
    let wal = wal_path(&dir, &channel)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !wal.exists() {
        assert!(tokio::time::Instant::now() < deadline, "no WAL written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn a_second_hub_on_a_store_in_use_is_refused() -> TestResult {
    let dir = scratch("locked");
    let served = start(&dir, SyncPolicy::Always).await?;
    let error = start(&dir, SyncPolicy::Always)
        .await
        .err()
        .ok_or("a second hub started")?;
    assert!(
        error
            .to_string()
            .contains("another hubsim serve is using this store"),
        "{error}"
    );
    served.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn the_binary_refuses_a_broken_store_with_its_place() -> TestResult {
    let dir = scratch("broken");
    let channel = dir.join("channels").join(format!("{:032x}", 7));
    std::fs::create_dir_all(&channel)?;
    std::fs::write(channel.join("metadata.json"), "{\"channel_id\": ")?;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .args(["serve", "--port", "0", "--store"])
        .arg(&dir)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = channel.join("metadata.json");
    assert!(
        stderr.contains(&format!("{}: not JSON", file.display())),
        "{stderr}"
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .args(["serve", "--port", "0", "--sync", "soon", "--store"])
        .arg(&dir)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`soon` is not `always` or a duration"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
