//! `hubsim serve --faults FILE --record DIR` on loopback sockets: faults applied to real
//! connections by agent name at offsets from the start (a disconnect followed by a re-attach
//! with replay, a hold that delays an answer, a hub crash and restart), the recording written
//! and checked at shutdown, and a fault file refused with its position.

use hubsim::hub::{Hub, HubConfig};
use hubsim::net::{serve_tapped, Received, ServeOptions, WsClient};
use hubsim::server::HubServer;
use hubsim::sim::live::{LiveOptions, LiveOutcome, LiveTap};
use hubsim::sim::scenario::FaultPlan;
use hubsim::time::{Instant, Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// A hub served with a fault plan and a recording, on a current-thread runtime's local set.
struct Live {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    outcome: std::sync::Arc<std::sync::Mutex<LiveOutcome>>,
    started: std::time::Instant,
}

async fn start(plan: &str, record: Option<PathBuf>) -> TestResult<Live> {
    let plan = FaultPlan::parse(plan)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = HubServer::new(Hub::new(HubConfig::default(), Instant(0)));
    let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
    let (tap, outcome) = LiveTap::new(LiveOptions {
        plan,
        seed: 7,
        record,
        epoch,
        ttl_sweep: 30_000_000,
    });
    let shutdown = async {
        let _ = stopped.await;
    };
    let started = std::time::Instant::now();
    let task = tokio::task::spawn_local(serve_tapped(
        listener,
        server,
        epoch,
        ServeOptions::default(),
        Box::new(tap),
        shutdown,
    ));
    Ok(Live {
        addr,
        stop,
        task,
        outcome,
        started,
    })
}

impl Live {
    /// Stops the hub while `peers` read their connections to the end (the hub waits for each
    /// to answer its close); what the recording found.
    async fn stop(self, peers: Vec<Peer>) -> TestResult<LiveOutcome> {
        let _ = self.stop.send(());
        let drained = futures_util::future::join_all(peers.into_iter().map(Peer::drain));
        let (served, _) = tokio::join!(self.task, drained);
        served??;
        let outcome = self.outcome.lock().map_err(|_| "poisoned")?.clone();
        Ok(outcome)
    }

    /// Waits until `seconds` after the start.
    async fn until(&self, seconds: f64) {
        let at = self.started + Duration::from_secs_f64(seconds);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// One WebSocket client speaking the hub's frames.
struct Peer {
    ws: WsClient<TcpStream>,
    backlog: VecDeque<Value>,
    next: u32,
}

impl Peer {
    async fn connect(addr: SocketAddr) -> TestResult<Peer> {
        let stream = TcpStream::connect(addr).await?;
        let ws = WsClient::connect(stream, &format!("ws://{addr}/")).await?;
        Ok(Peer {
            ws,
            backlog: VecDeque::new(),
            next: 0,
        })
    }

    async fn send(&mut self, frame: Value) -> TestResult {
        self.ws.send_text(frame.to_string()).await?;
        Ok(())
    }

    async fn read(&mut self) -> TestResult<Value> {
        let received = tokio::time::timeout(Duration::from_secs(10), self.ws.recv()).await??;
        match received {
            Received::Text(text) => Ok(serde_json::from_str(&text)?),
            other => Err(format!("expected a text frame, got {other:?}").into()),
        }
    }

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

    async fn rpc(&mut self, op: &str, params: Value) -> TestResult<Value> {
        self.next += 1;
        let id = format!("r{}", self.next);
        let request = json!({"request_id": id, "op": op, "params": params, "kind": "request"});
        self.send(request).await?;
        let response = self
            .next_where(|f| f["kind"] == "response" && f["request_id"] == json!(id))
            .await?;
        assert_eq!(response["ok"], json!(true), "{op}: {response}");
        Ok(response["result"].clone())
    }

    async fn register(&mut self, name: &str) -> TestResult<String> {
        let params = json!({"passport": {"name": name}, "resume": {}});
        let result = self.rpc("register", params).await?;
        Ok(result["agent_id"]
            .as_str()
            .ok_or("no agent id")?
            .to_string())
    }

    async fn notify(&mut self, event_type: &str) -> TestResult<Value> {
        let frame = self
            .next_where(|f| f["kind"] == "notify" && f["envelope"]["event_type"] == event_type)
            .await?;
        Ok(frame["envelope"].clone())
    }

    /// Acknowledges a delivered envelope, as ag2's clients do once their handler ran.
    async fn receipt(&mut self, me: &str, envelope: &Value) -> TestResult {
        self.send(
            json!({"kind": "receipt", "envelope_id": envelope["envelope_id"],
                         "status": "ack", "recipient_id": me,
                         "channel_id": envelope["channel_id"], "reason": ""}),
        )
        .await
    }

    async fn post(
        &mut self,
        me: &str,
        channel: &Value,
        event_type: &str,
        data: Value,
    ) -> TestResult {
        let envelope = json!({"envelope": {"channel_id": channel, "sender_id": me,
            "audience": null, "event_type": event_type, "event_data": data}});
        self.rpc("post_envelope", envelope).await?;
        Ok(())
    }

    /// Reads until the connection ends.
    async fn drain(mut self) {
        let reading = async {
            while let Ok(Received::Text(_) | Received::Binary(_)) = self.ws.recv().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), reading).await;
    }

    /// The connection ended without a closing handshake (a cut).
    async fn cut(&mut self) -> TestResult {
        loop {
            let received = tokio::time::timeout(Duration::from_secs(10), self.ws.recv()).await?;
            match received {
                Ok(Received::Text(_) | Received::Binary(_)) => {}
                Ok(Received::Closed(None)) | Err(_) => return Ok(()),
                Ok(Received::Closed(Some(code))) => {
                    return Err(format!("closed with code {code}, not cut").into())
                }
            }
        }
    }
}

/// Alice opens a conversation with bob (bob acks the invite); the channel's id.
async fn converse(
    alice: &mut Peer,
    bob: &mut Peer,
    alice_id: &str,
    bob_id: &str,
) -> TestResult<Value> {
    let open = json!({"creator_id": alice_id, "manifest_type": "conversation",
                      "participants": [bob_id]});
    alice
        .send(
            json!({"request_id": "open", "op": "create_channel", "params": open,
                     "kind": "request"}),
        )
        .await?;
    let invite = bob.notify("ag2.channel.invite").await?;
    bob.post(
        bob_id,
        &invite["channel_id"],
        "ag2.channel.invite.ack",
        json!({"channel_id": invite["channel_id"]}),
    )
    .await?;
    bob.receipt(bob_id, &invite).await?;
    let opened = alice
        .next_where(|f| f["kind"] == "response" && f["request_id"] == "open")
        .await?;
    assert_eq!(opened["result"]["state"], json!("active"), "{opened}");
    Ok(opened["result"]["channel_id"].clone())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn local<F: std::future::Future<Output = TestResult>>(test: F) -> TestResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, test)
}

#[test]
fn a_disconnect_fault_cuts_the_agent_which_re_attaches_and_gets_the_replay() -> TestResult {
    let dir = tempdir("disconnect");
    local(async {
        let live = start(
            "faults:\n  - {at: 1s, disconnect: bob}\n",
            Some(dir.clone()),
        )
        .await?;
        let mut alice = Peer::connect(live.addr).await?;
        let mut bob = Peer::connect(live.addr).await?;
        let alice_id = alice.register("alice").await?;
        let bob_id = bob.register("bob").await?;
        let channel = converse(&mut alice, &mut bob, &alice_id, &bob_id).await?;
        let opened = bob.notify("ag2.channel.opened").await?;
        bob.receipt(&bob_id, &opened).await?;
        let opened = alice.notify("ag2.channel.opened").await?;
        alice.receipt(&alice_id, &opened).await?;
        assert!(
            live.started.elapsed() < Duration::from_millis(900),
            "too slow to test"
        );
        // At 1 s the fault cuts bob's socket: no close frame.
        bob.cut().await?;
        let text = json!({"text": "are you there?"});
        alice
            .post(&alice_id, &channel, "ag2.msg.text", text)
            .await?;
        // Bob comes back on a new connection and asks for what he missed.
        let mut bob = Peer::connect(live.addr).await?;
        bob.send(
            json!({"kind": "hello", "name": "bob", "auth_scheme": "none",
                        "auth_claim": {}, "since_envelope_id": ""}),
        )
        .await?;
        bob.next_where(|f| f["kind"] == "welcome").await?;
        let missed = bob.notify("ag2.msg.text").await?;
        assert_eq!(missed["event_data"]["text"], json!("are you there?"));
        bob.receipt(&bob_id, &missed).await?;
        // A round trip, so the receipt has reached the hub before it stops.
        bob.rpc("list_channels", json!({"agent_id": bob_id}))
            .await?;
        let outcome = live.stop(vec![alice, bob]).await?;
        assert_eq!(outcome.faults, 1);
        assert!(outcome.written, "{outcome:?}");
        let timeline = read(&dir.join("timeline.txt"));
        for expected in [
            "timeline of serve (seed 7, serve backend)",
            "network          fault: disconnect bob",
            "bob              connection closed (disconnect)",
            "re-attach: hello replaying past the cursor (connection 2)",
            "bob              received <env:c1#3> ag2.msg.text (connection 2)",
        ] {
            assert!(
                timeline.contains(expected),
                "no {expected:?} in:\n{timeline}"
            );
        }
        assert!(read(&dir.join("report.html")).contains("<svg"));
        assert_eq!(outcome.violations, 0, "{}", outcome.report);
        Ok(())
    })
}

#[test]
fn a_hold_delays_an_agents_messages_until_its_release() -> TestResult {
    local(async {
        let plan = "faults:\n  - {at: 0s, hold: carol}\n  - {at: 1s, release: carol}\n";
        let live = start(plan, None).await?;
        let mut carol = Peer::connect(live.addr).await?;
        let mut dave = Peer::connect(live.addr).await?;
        // Dave, not held, is answered at once; carol's register waits for the release.
        dave.register("dave").await?;
        assert!(
            live.started.elapsed() < Duration::from_millis(900),
            "too slow to test"
        );
        carol.register("carol").await?;
        assert!(
            live.started.elapsed() >= Duration::from_secs(1),
            "answered at {:?}, before the release",
            live.started.elapsed()
        );
        live.stop(vec![carol, dave]).await?;
        Ok(())
    })
}

#[test]
fn a_crashed_hub_refuses_connections_and_restarts_with_its_registry() -> TestResult {
    let dir = tempdir("crash");
    local(async {
        let plan = "faults:\n  - {at: 1s, crash: hub}\n  - {at: 2s, restart: hub}\n";
        let live = start(plan, Some(dir.clone())).await?;
        let mut erin = Peer::connect(live.addr).await?;
        let erin_id = erin.register("erin").await?;
        erin.cut().await?;
        // Down: a new connection is closed as soon as it opens.
        live.until(1.3).await;
        let refused = match Peer::connect(live.addr).await {
            Err(_) => true,
            Ok(mut peer) => peer.cut().await.is_ok(),
        };
        assert!(refused, "a connection to the crashed hub stayed open");
        // Restarted: erin's identity came back from the durable state.
        live.until(2.2).await;
        let mut erin = Peer::connect(live.addr).await?;
        erin.send(
            json!({"kind": "hello", "name": "erin", "auth_scheme": "none",
                         "auth_claim": {}, "since_envelope_id": null}),
        )
        .await?;
        erin.next_where(|f| f["kind"] == "welcome").await?;
        let found = erin.rpc("find_agent_id", json!({"name": "erin"})).await?;
        assert_eq!(found, json!(erin_id));
        let outcome = live.stop(vec![erin]).await?;
        assert_eq!(outcome.faults, 2);
        let timeline = read(&dir.join("timeline.txt"));
        for expected in [
            "fault: crash the hub",
            "erin             connection closed (hub crash)",
            "hub              crashed",
            "hub              restarted from its store",
            "erin             connected (connection 2)",
        ] {
            assert!(
                timeline.contains(expected),
                "no {expected:?} in:\n{timeline}"
            );
        }
        Ok(())
    })
}

#[test]
fn a_recording_reports_an_envelope_its_agent_never_handled_with_its_events() -> TestResult {
    let dir = tempdir("unhandled");
    local(async {
        let live = start("{}\n", Some(dir.clone())).await?;
        let mut alice = Peer::connect(live.addr).await?;
        let mut bob = Peer::connect(live.addr).await?;
        let alice_id = alice.register("alice").await?;
        let bob_id = bob.register("bob").await?;
        let channel = converse(&mut alice, &mut bob, &alice_id, &bob_id).await?;
        alice
            .post(
                &alice_id,
                &channel,
                "ag2.msg.text",
                json!({"text": "ping?"}),
            )
            .await?;
        // Bob reads it and never acknowledges it.
        bob.notify("ag2.msg.text").await?;
        let outcome = live.stop(vec![alice, bob]).await?;
        assert!(outcome.violations > 0, "{outcome:?}");
        assert!(
            outcome.report.contains("VIOLATION delivery/"),
            "{}",
            outcome.report
        );
        // Each violation points back at the frames that carried its envelope.
        for expected in [
            "VIOLATION delivery/missing: bob is bound but never handled ag2.msg.text <env:c1#3>",
            "hub -> bob       delivered notify <env:c1#3> ag2.msg.text",
            "bob              received <env:c1#3> ag2.msg.text (connection 1)",
        ] {
            assert!(
                outcome.report.contains(expected),
                "no {expected:?} in:\n{}",
                outcome.report
            );
        }
        Ok(())
    })
}

/// A fresh folder under the target directory.
fn tempdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve_live_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_binary_injects_a_fault_file_with_chaos_and_prints_what_its_recording_found() -> TestResult {
    let dir = tempdir("binary");
    std::fs::create_dir_all(&dir)?;
    let faults = dir.join("faults.yaml");
    std::fs::write(
        &faults,
        "faults:\n  - {at: 200ms, disconnect: zed}\nagents: [zed]\n\
         chaos: {from: 0s, until: 1s, faults: [hold, latency], rate: 20..20, duration: 10ms..50ms}\n",
    )?;
    let record = dir.join("recording");
    let args = [
        "--port",
        "0",
        "--log-level",
        "warn",
        "--seed",
        "3",
        "--faults",
        faults.to_str().ok_or("path")?,
        "--record",
        record.to_str().ok_or("path")?,
    ];
    let (child, addr, log) = crate::serve::spawn_serve("", &args, &[])?;
    local(async {
        let mut zed = Peer::connect(addr).await?;
        zed.register("zed").await?;
        zed.cut().await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        Ok(())
    })?;
    let (status, log) = crate::serve::terminate(child, log)?;
    assert!(status.success(), "{status:?}\n{log}");
    let timeline = read(&record.join("timeline.txt"));
    assert!(timeline.contains("fault: disconnect zed"), "{timeline}");
    // The seed's chaos draws: holds and latency changes of zed, at least one of each kind
    // the seed switched on (20 a second for a second).
    assert!(timeline.matches("fault: ").count() > 2, "{timeline}");
    for line in [
        format!("recorded: {}", record.join("timeline.txt").display()),
        format!("recorded: {}", record.join("report.html").display()),
        "invariants at shutdown: no violation".to_string(),
    ] {
        assert!(log.contains(&line), "no {line:?} in:\n{log}");
    }

    // A fault file with a mistake is refused before serving, with its position.
    std::fs::write(&faults, "faults:\n  - {at: 2s, disconect: zed}\n")?;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .args([
            "serve",
            "--port",
            "0",
            "--faults",
            faults.to_str().ok_or("path")?,
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `disconect`"), "{stderr}");
    assert!(stderr.contains("faults.yaml:2:14"), "{stderr}");
    Ok(())
}

#[test]
fn the_readmes_example_fault_file_loads() -> TestResult {
    let path = crate::support::root().join("docs/serve-faults.yaml");
    let plan = FaultPlan::load(&path).map_err(|e| e.to_string())?;
    assert_eq!(plan.faults.len(), 9);
    assert_eq!(plan.keepalive, 40_000_000);
    assert!(plan.chaos.is_some());
    Ok(())
}

#[test]
fn a_partition_outliving_the_keepalive_cuts_the_agent_and_loses_what_waited() -> TestResult {
    let dir = tempdir("partition");
    local(async {
        let plan = "faults:\n  - {at: 500ms, partition: gus}\nkeepalive: 500ms\n";
        let live = start(plan, Some(dir.clone())).await?;
        let mut gus = Peer::connect(live.addr).await?;
        gus.register("gus").await?;
        live.until(0.6).await;
        // Partitioned: the request waits, unanswered, until the keepalive cuts the socket.
        gus.send(
            json!({"request_id": "lost", "op": "list_agents", "params": {},
                        "kind": "request"}),
        )
        .await?;
        gus.cut().await?;
        assert!(live.started.elapsed() >= Duration::from_secs(1));
        // A new connection naming gus during the partition is cut as soon as it does.
        let mut again = Peer::connect(live.addr).await?;
        again
            .send(
                json!({"kind": "hello", "name": "gus", "auth_scheme": "none",
                         "auth_claim": {}, "since_envelope_id": null}),
            )
            .await?;
        again.cut().await?;
        live.stop(Vec::new()).await?;
        let timeline = read(&dir.join("timeline.txt"));
        for expected in [
            "fault: partition gus",
            "gus -> hub       dropped (connection closed) request list_agents",
            "gus              connection closed (keepalive)",
            "gus -> hub       dropped (connection closed) hello (no replay)",
        ] {
            assert!(
                timeline.contains(expected),
                "no {expected:?} in:\n{timeline}"
            );
        }
        Ok(())
    })
}

/// A crash with a store: the hub restarts from what reached the disk, so what the last sync had
/// not written is lost (`--sync 1h`), and what it had is kept (`--sync always`).
#[test]
fn a_crashed_hub_with_a_store_restarts_from_what_reached_the_disk() -> TestResult {
    use hubsim::disk::{DiskStore, DiskSync, SyncPolicy};
    use hubsim::net::{serve_extended, Extras};
    for (policy, kept) in [
        (SyncPolicy::Every(Duration::from_secs(3600)), false),
        (SyncPolicy::Always, true),
    ] {
        let dir = tempdir(&format!("crash_store_{kept}"));
        local(async {
            let opened = DiskStore::open(&dir.join("store")).map_err(|e| e.to_string())?;
            let hub = Hub::hydrate(
                HubConfig::default(),
                &opened.store,
                opened.id_floor,
                Instant(0),
            )
            .map_err(|e| e.message)?;
            let plan = "faults:\n  - {at: 1s, crash: hub}\n  - {at: 1200ms, restart: hub}\n";
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
            let (tap, _) = LiveTap::new(LiveOptions {
                plan: FaultPlan::parse(plan)?,
                seed: 0,
                record: None,
                epoch,
                ttl_sweep: 0,
            });
            let extras = Extras {
                tap: Some(Box::new(tap)),
                durability: Some(Box::new(DiskSync::new(opened.disk, policy))),
            };
            let started = std::time::Instant::now();
            let task = tokio::task::spawn_local(serve_extended(
                listener,
                HubServer::new(hub),
                epoch,
                ServeOptions::default(),
                extras,
                async {
                    let _ = stopped.await;
                },
            ));
            let mut hal = Peer::connect(addr).await?;
            hal.register("hal").await?;
            assert!(
                started.elapsed() < Duration::from_millis(900),
                "too slow to test"
            );
            hal.cut().await?;
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + Duration::from_millis(1500),
            ))
            .await;
            let mut probe = Peer::connect(addr).await?;
            let found = probe.rpc("find_agent_id", json!({"name": "hal"})).await?;
            assert_eq!(found.is_string(), kept, "{policy:?}: hal found as {found}");
            let _ = stop.send(());
            let (served, ()) = tokio::join!(task, probe.drain());
            served??;
            Ok(())
        })?;
    }
    Ok(())
}
