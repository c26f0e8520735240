//! The hub on real loopback sockets, as `hubsim serve` runs it: API keys with ag2's answers to a
//! bad token, the hello deadline, the connection cap, keepalive pings closing a silent peer,
//! graceful shutdown, and (in a child process with few descriptors) accept errors waited out.

use futures_util::{SinkExt, StreamExt};
use hubsim::hub::link::AuthConfig;
use hubsim::hub::{Hub, HubConfig};
use hubsim::net::ws::{KEEPALIVE_REASON, NO_HELLO_REASON, OVER_CAP_REASON};
use hubsim::net::{serve_with, ServeOptions};
use hubsim::server::HubServer;
use hubsim::time::{Instant, Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Value};
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub(crate) type TestResult<T = ()> = Result<T, Box<dyn Error>>;
type Ws = WebSocketStream<TcpStream>;

/// A hub served on a free loopback port until the sender is used or dropped.
struct Served {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(config: HubConfig, options: ServeOptions) -> TestResult<Served> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = HubServer::new(Hub::new(config, Instant(0)));
    let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("epoch");
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = tokio::spawn(serve_with(listener, server, epoch, options, shutdown));
    Ok(Served { addr, stop, task })
}

/// Keys for alice only, and no NoAuth, as `hubsim serve --api-keys` sets up.
fn keyed() -> HubConfig {
    HubConfig {
        auth: AuthConfig {
            no_auth: false,
            api_keys: Some([("alice".to_string(), "k-alice".to_string())].into()),
        },
        ..HubConfig::default()
    }
}

async fn connect(addr: SocketAddr) -> TestResult<Ws> {
    let stream = TcpStream::connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await?;
    Ok(ws)
}

/// The next text message (pings are answered by tungstenite as they are read).
async fn text(ws: &mut Ws) -> TestResult<String> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await?;
        match next.ok_or("connection ended")?? {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => return Err(format!("expected text, got {other:?}").into()),
        }
    }
}

/// The close frame the hub sends next: its code and reason.
async fn close_frame(ws: &mut Ws) -> TestResult<(u16, String)> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await?;
        match next.ok_or("connection ended without a close frame")?? {
            Message::Close(Some(frame)) => {
                return Ok((u16::from(frame.code), frame.reason.as_str().to_owned()))
            }
            Message::Close(None) => return Err("a close frame without a code".into()),
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) -> TestResult {
    ws.send(Message::text(frame.to_string())).await?;
    Ok(())
}

fn register(id: &str, name: &str, scheme: &str, token: &str) -> Value {
    json!({"request_id": id, "op": "register", "kind": "request", "params": {
        "passport": {"name": name, "auth": {"scheme": scheme, "claim": {"token": token}}},
        "resume": {},
    }})
}

fn hello(name: &str, scheme: &str, token: &str) -> Value {
    json!({"kind": "hello", "name": name, "auth_scheme": scheme,
           "auth_claim": {"token": token}, "since_envelope_id": null})
}

/// The app-level ping answers on a working connection.
async fn answers(ws: &mut Ws) -> TestResult {
    send(ws, json!({"kind": "ping"})).await?;
    assert_eq!(text(ws).await?, r#"{"kind": "pong"}"#);
    Ok(())
}

#[tokio::test]
async fn api_keys_admit_the_right_token_and_refuse_others_as_ag2() -> TestResult {
    let served = start(keyed(), ServeOptions::real()).await?;
    let mut alice = connect(served.addr).await?;
    send(&mut alice, register("r1", "alice", "api_key", "k-alice")).await?;
    let registered: Value = serde_json::from_str(&text(&mut alice).await?)?;
    assert_eq!(registered["ok"], json!(true), "{registered}");

    // Without NoAuth, the `none` scheme is unknown; a wrong or missing token is refused.
    let mut mallory = connect(served.addr).await?;
    send(&mut mallory, register("m1", "mallory", "none", "")).await?;
    assert_eq!(
        text(&mut mallory).await?,
        r#"{"request_id": "m1", "ok": false, "result": null, "error_code": "auth_failed", "error_message": "unknown auth scheme: 'none'", "kind": "response"}"#
    );
    for (frame, answer) in [
        (
            hello("alice", "api_key", "k-wrong"),
            r#"{"code": "auth_failed", "message": "api_key mismatch for 'alice'", "envelope_id": null, "kind": "error"}"#,
        ),
        (
            hello("alice", "api_key", ""),
            r#"{"code": "auth_failed", "message": "api_key claim missing required string field 'token'", "envelope_id": null, "kind": "error"}"#,
        ),
        (
            hello("alice", "none", ""),
            r#"{"code": "auth_failed", "message": "auth scheme 'none' does not match 'alice''s registered scheme 'api_key'", "envelope_id": null, "kind": "error"}"#,
        ),
    ] {
        send(&mut mallory, frame).await?;
        assert_eq!(text(&mut mallory).await?, answer);
    }
    // The refused connection stays open, and the right token binds.
    send(&mut mallory, hello("alice", "api_key", "k-alice")).await?;
    let welcome: Value = serde_json::from_str(&text(&mut mallory).await?)?;
    assert_eq!(welcome["kind"], json!("welcome"), "{welcome}");
    drop(served.stop);
    served.task.await??;
    Ok(())
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_and_one_that_did_stays() -> TestResult {
    let options = ServeOptions {
        hello_timeout: Some(Duration::from_millis(300)),
        ..ServeOptions::real()
    };
    let served = start(HubConfig::default(), options).await?;
    let mut bob = connect(served.addr).await?;
    send(&mut bob, register("b1", "bob", "none", "")).await?;
    assert!(text(&mut bob).await?.contains(r#""ok": true"#));
    let mut idle = connect(served.addr).await?;
    let started = tokio::time::Instant::now();
    assert_eq!(
        close_frame(&mut idle).await?,
        (1008, NO_HELLO_REASON.to_string())
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    tokio::time::sleep(Duration::from_millis(300)).await;
    answers(&mut bob).await?;
    let _ = served.stop.send(());
    served.task.await??;
    Ok(())
}

#[tokio::test]
async fn connections_over_the_cap_are_told_1013_while_the_others_keep_working() -> TestResult {
    let options = ServeOptions {
        max_connections: Some(2),
        ..ServeOptions::real()
    };
    let served = start(HubConfig::default(), options).await?;
    let mut alice = connect(served.addr).await?;
    let _idle = connect(served.addr).await?;
    answers(&mut alice).await?;
    for _ in 0..3 {
        let mut over = connect(served.addr).await?;
        assert_eq!(
            close_frame(&mut over).await?,
            (1013, OVER_CAP_REASON.to_string())
        );
        answers(&mut alice).await?;
    }
    // A place freed is taken again.
    drop(_idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect(served.addr).await?;
    answers(&mut again).await?;
    let _ = served.stop.send(());
    served.task.await??;
    Ok(())
}

/// Opens a WebSocket by hand and then never answers a ping: a peer that vanished.
async fn silent_peer(addr: SocketAddr) -> TestResult<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    Ok(stream)
}

/// The next server frame, read raw: (opcode, payload). Server frames are unmasked.
async fn raw_frame(stream: &mut TcpStream) -> TestResult<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await?;
    let length = usize::from(head[1] & 0x7f);
    assert!(length < 126, "short control frames only");
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    Ok((head[0] & 0x0f, payload))
}

#[tokio::test]
async fn keepalive_closes_a_peer_that_stops_answering_pings_and_keeps_one_that_answers(
) -> TestResult {
    let options = ServeOptions {
        ping_interval: Some(Duration::from_millis(200)),
        ping_timeout: Some(Duration::from_millis(200)),
        hello_timeout: None,
        ..ServeOptions::real()
    };
    let served = start(HubConfig::default(), options).await?;
    let mut live = connect(served.addr).await?;
    // The peer that reads (tungstenite answers the pings) outlives many intervals.
    let reading = tokio::spawn(async move {
        for _ in 0..10 {
            let _ = tokio::time::timeout(Duration::from_millis(150), live.next()).await;
        }
        live
    });
    let mut silent = silent_peer(served.addr).await?;
    let started = tokio::time::Instant::now();
    // A ping (opcode 9) with a 4-byte payload, then, unanswered, a close (opcode 8) with 1011.
    let (opcode, payload) = raw_frame(&mut silent).await?;
    assert_eq!((opcode, payload.len()), (9, 4));
    let (opcode, payload) = raw_frame(&mut silent).await?;
    assert_eq!(opcode, 8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1011);
    assert_eq!(&payload[2..], KEEPALIVE_REASON.as_bytes());
    assert!(started.elapsed() >= Duration::from_millis(350));
    let mut live = reading.await?;
    answers(&mut live).await?;
    let _ = served.stop.send(());
    served.task.await??;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() -> TestResult {
    let served = start(HubConfig::default(), ServeOptions::real()).await?;
    let mut first = connect(served.addr).await?;
    let mut second = connect(served.addr).await?;
    answers(&mut first).await?;
    answers(&mut second).await?;
    served.stop.send(()).map_err(|()| "stopped")?;
    for ws in [&mut first, &mut second] {
        assert_eq!(close_frame(ws).await?, (1001, String::new()));
        // Reading on sends the answer to the close frame.
        while let Some(Ok(_)) = ws.next().await {}
    }
    tokio::time::timeout(Duration::from_secs(5), served.task).await???;
    // No longer accepting.
    assert!(connect(served.addr).await.is_err());
    Ok(())
}

/// The rest of a child's stderr, read on a thread so that the child never blocks on it.
pub(crate) type Log = std::thread::JoinHandle<String>;

/// `hubsim serve` in a child process; `shell` runs before it (`ulimit -n 256`). Returns the
/// child and its address, read from its first stderr line.
pub(crate) fn spawn_serve(
    shell: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> TestResult<(Child, SocketAddr, Log)> {
    let script = format!("{shell} exec \"$0\" serve \"$@\"");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_hubsim"))
        .args(args)
        .env_remove("HUBSIM_API_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().ok_or("stderr")?);
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("hubsim: serving on ws://")
        .and_then(|rest| rest.strip_suffix('/'))
        .ok_or_else(|| format!("unexpected first line: {line:?}"))?
        .parse()?;
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    Ok((child, addr, log))
}

fn signal_term(child: &Child) -> TestResult {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    Ok(())
}

/// Sends SIGTERM and waits for the exit status, with the rest of stderr.
pub(crate) fn terminate(child: Child, log: Log) -> TestResult<(std::process::ExitStatus, String)> {
    signal_term(&child)?;
    finish(child, log)
}

/// Waits for the exit status, with the rest of stderr.
fn finish(mut child: Child, log: Log) -> TestResult<(std::process::ExitStatus, String)> {
    let status = child.wait()?;
    Ok((status, log.join().map_err(|_| "log thread")?))
}

#[test]
fn the_binary_takes_keys_from_the_environment_and_stops_cleanly_on_sigterm() -> TestResult {
    // No keys: a non-loopback host is refused.
    let output = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("HUBSIM_API_KEYS")
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-unauthenticated"));

    let env = [("HUBSIM_API_KEYS", "alice=k-alice,bob=k-bob")];
    let (child, addr, log) = spawn_serve("", &["--host", "127.0.0.1", "--port", "0"], &env)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bob = runtime.block_on(async {
        let mut bob = connect(addr).await?;
        send(&mut bob, register("b1", "bob", "api_key", "k-bob")).await?;
        assert!(text(&mut bob).await?.contains(r#""ok": true"#));
        send(&mut bob, hello("bob", "api_key", "k-alice")).await?;
        let refused = text(&mut bob).await?;
        assert!(refused.contains("api_key mismatch for 'bob'"), "{refused}");
        TestResult::Ok(bob)
    })?;
    signal_term(&child)?;
    runtime.block_on(async {
        assert_eq!(close_frame(&mut bob).await?, (1001, String::new()));
        while let Some(Ok(_)) = bob.next().await {}
        TestResult::Ok(())
    })?;
    let (status, log) = finish(child, log)?;
    assert!(status.success(), "{status:?}\n{log}");
    for line in [
        "connection opened",
        "refused: auth_failed",
        "SIGTERM received",
        "code=1001",
        "stopped",
    ] {
        assert!(log.contains(line), "no `{line}` in the log:\n{log}");
    }
    assert!(
        !log.contains("k-bob") && !log.contains("k-alice"),
        "a token in the log:\n{log}"
    );
    Ok(())
}

#[test]
fn out_of_descriptors_the_server_waits_and_goes_on_serving() -> TestResult {
    let args = ["--port", "0", "--max-connections", "100000"];
    let (mut child, addr, log) = spawn_serve("ulimit -n 256 &&", &args, &[])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Idle sockets that never start a WebSocket: the hub holds each until its handshake
        // times out (10 s), and runs out of descriptors long before 400.
        let mut idle = Vec::new();
        for _ in 0..400 {
            idle.push(TcpStream::connect(addr).await?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut client = tokio::time::timeout(Duration::from_secs(30), connect(addr)).await??;
        answers(&mut client).await?;
        drop(idle);
        TestResult::Ok(())
    })?;
    assert!(child.try_wait()?.is_none(), "the server exited");
    let (status, log) = terminate(child, log)?;
    assert!(status.success(), "{status:?}");
    assert!(
        log.contains("accept failed"),
        "no accept error logged:\n{log}"
    );
    assert!(log.contains("accepting again"), "{log}");
    Ok(())
}

#[tokio::test]
async fn a_message_over_the_limit_is_closed_with_1009_and_websockets_reason() -> TestResult {
    let served = start(HubConfig::default(), ServeOptions::real()).await?;
    let mut big = connect(served.addr).await?;
    let mut other = connect(served.addr).await?;
    big.send(Message::text(
        "x".repeat(hubsim::net::ws::MESSAGE_BYTES_MAX + 1),
    ))
    .await?;
    assert_eq!(
        close_frame(&mut big).await?,
        (1009, hubsim::net::ws::TOO_BIG_REASON.to_string())
    );
    // The hub serves the others on.
    answers(&mut other).await?;
    drop((big, other));
    let _ = served.stop.send(());
    served.task.await??;
    Ok(())
}
