//! `hubsim serve` is fair (`ServeOptions::fair`): a client flooding the hub with large requests
//! does not hold back another client's, and thousands of idle connections do not either.
//! Progress is compared between clients rather than timed, so that a loaded machine does not
//! make the tests flake.

use futures_util::{SinkExt, StreamExt};
use hubsim::hub::{Hub, HubConfig};
use hubsim::net::{serve_with, ServeOptions};
use hubsim::server::HubServer;
use hubsim::time::{Instant, Timestamp, DEFAULT_EPOCH};
use serde_json::{json, Value};
use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type TestResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;
type Ws = WebSocketStream<TcpStream>;

/// `hubsim serve`'s options, with room for many connections and no hello deadline.
fn options() -> ServeOptions {
    ServeOptions {
        max_connections: Some(4096),
        hello_timeout: None,
        ..ServeOptions::real()
    }
}

/// Serves a fresh hub on a free loopback port until the sender is used or dropped.
async fn start() -> TestResult<(SocketAddr, oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = HubServer::new(Hub::new(HubConfig::default(), Instant(0)));
    let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).ok_or("epoch")?;
    let shutdown = async {
        let _ = stopped.await;
    };
    tokio::spawn(serve_with(listener, server, epoch, options(), shutdown));
    Ok((addr, stop))
}

async fn connect(addr: SocketAddr) -> TestResult<Ws> {
    let stream = TcpStream::connect(addr).await?;
    // No read limit: the flood's answers are larger than the hub accepts.
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await?;
    Ok(ws)
}

/// The next text message.
async fn text(ws: &mut Ws) -> TestResult<String> {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next()).await?;
        match next.ok_or("connection ended")?? {
            Message::Text(text) => return Ok(text.as_str().to_owned()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => return Err(format!("expected text, got {other:?}").into()),
        }
    }
}

/// An app-level ping, answered.
async fn ping(ws: &mut Ws) -> TestResult {
    ws.send(Message::text(r#"{"kind": "ping"}"#)).await?;
    assert_eq!(text(ws).await?, r#"{"kind": "pong"}"#);
    Ok(())
}

fn request(id: &str, op: &str, params: Value) -> Message {
    Message::text(
        json!({"request_id": id, "op": op, "kind": "request", "params": params}).to_string(),
    )
}

/// Registers `count` agents over one connection, all requests sent before the first answer.
async fn register(addr: SocketAddr, count: usize) -> TestResult {
    let mut ws = connect(addr).await?;
    for i in 0..count {
        let params = json!({"passport": {"name": format!("agent-{i:04}")}, "resume": {}});
        ws.feed(request(&format!("r{i}"), "register", params))
            .await?;
    }
    ws.flush().await?;
    for _ in 0..count {
        let answer = text(&mut ws).await?;
        assert!(answer.contains(r#""ok": true"#), "{answer}");
    }
    Ok(())
}

#[tokio::test]
async fn a_flooding_client_does_not_hold_back_another_clients_pings() -> TestResult {
    const AGENTS: usize = 500;
    const FLOOD: usize = 200;
    const PINGS: usize = 20;
    let (addr, _stop) = start().await?;
    register(addr, AGENTS).await?;
    let mut pinger = connect(addr).await?;
    ping(&mut pinger).await?;
    // The flooder sends all its requests at once, each answered with every passport, and
    // counts the answers as they come.
    let flooder = connect(addr).await?;
    let (mut flood_out, mut flood_in) = flooder.split();
    for i in 0..FLOOD {
        flood_out
            .feed(request(
                &format!("f{i}"),
                "list_agents",
                json!({"limit": AGENTS}),
            ))
            .await?;
    }
    flood_out.flush().await?;
    let answered = Arc::new(AtomicUsize::new(0));
    let counting = {
        let answered = Arc::clone(&answered);
        tokio::spawn(async move {
            while let Some(Ok(message)) = flood_in.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let id = answered.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    r#"{{"request_id": "f{id}", "ok": true, "result": [{{"name": "agent-0000""#
                );
                assert!(text.starts_with(&head), "{}", &text[..text.len().min(200)]);
                assert_eq!(text.matches(r#""agent_id": "#).count(), AGENTS);
                if id + 1 == FLOOD {
                    return;
                }
            }
            panic!("the flooder's connection ended early");
        })
    };
    // The flood's requests are queued at the hub (or in its socket) ahead of these pings; in
    // arrival order every one of them would be answered first.
    for _ in 0..PINGS {
        ping(&mut pinger).await?;
    }
    let during = answered.load(Ordering::SeqCst);
    assert!(
        during < FLOOD / 2,
        "{PINGS} pings took as long as {during} of the {FLOOD} list_agents queued before them"
    );
    // The flood is answered in full, in order.
    tokio::time::timeout(Duration::from_secs(60), counting).await??;
    ping(&mut pinger).await?;
    Ok(())
}

#[tokio::test]
async fn thousands_of_idle_connections_do_not_hold_back_a_working_one() -> TestResult {
    const IDLE: usize = 2000;
    let (addr, _stop) = start().await?;
    register(addr, 1).await?;
    let mut worker = connect(addr).await?;
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        idle.push(connect(addr).await?);
        if i % 250 == 0 {
            ping(&mut worker).await?;
            worker
                .send(request(
                    "g",
                    "get_agent",
                    json!({"name_or_id": "agent-0000"}),
                ))
                .await?;
            let answer = text(&mut worker).await?;
            assert!(answer.contains(r#""name": "agent-0000""#), "{answer}");
        }
    }
    ping(&mut worker).await?;
    // Every one of them is still attached and answers.
    for ws in idle.iter_mut().step_by(97) {
        ping(ws).await?;
    }
    Ok(())
}
