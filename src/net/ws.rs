//! WebSocket transport for the hub, as ag2's `serve_ws` / `WsLink` carry it: one JSON frame per
//! text message, 1 MiB messages at most.
//!
//! Server side ([`serve`]): one owner loop holds the [`HubServer`] and is the only code that
//! touches it. Each accepted connection gets a task that does the WebSocket handshake, then a
//! reader that forwards its messages to the owner and a writer that sends the owner's outputs
//! back, over tokio channels. The owner stamps every input with the hub clock and sleeps until
//! the server's next deadline. Nothing here reads the wall clock: time is tokio's, which turmoil
//! simulates.
//!
//! Client side: [`WsClient`](super::client::WsClient), in `client.rs`.
//!
//! Behaviour on bad input, following ag2 1.2.1 over `websockets`:
//! - a message over 1 MiB makes tungstenite fail the read; the connection is closed with code
//!   1009, and the hub keeps serving the others;
//! - a text message that is not a frame is dropped by the server, and the connection stays open;
//! - a binary message is decoded as UTF-8 and then treated as text; one that is not UTF-8 ends
//!   ag2's frame loop for that connection (its `decode("utf-8")` raises outside the decode
//!   guard), so the connection is detached from the hub and everything it sends later is
//!   ignored, while the socket stays open until the peer closes it.

use super::shared::{Seat, SharedHub};
use crate::ids::EndpointId;
use crate::proto::frame::FRAME_BYTES_MAX;
use crate::server::{HubServer, ServerOutput};
use crate::time::{Instant, Now, Timestamp};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The largest message and frame either side reads: `websockets`' default `max_size`.
pub const MESSAGE_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// Messages the owner may queue for one connection's writer. Past it the connection is dropped:
/// its peer is not reading, and the hub must not wait on one slow socket.
pub const OUTBOUND_MESSAGES_MAX: usize = 4096;

/// Events the readers may queue for the owner before they wait (backpressure on the sockets).
pub const EVENTS_QUEUE_MAX: usize = 1024;

/// How long a WebSocket opening handshake may take (`websockets`' `open_timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one message write may stall before the connection is dropped. `websockets` would
/// notice a peer that stopped reading through its keepalive (a ping every 20 s, 20 s to answer).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(40);

/// How long a closing handshake may take (`websockets`' `close_timeout`).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Consecutive accept errors before [`serve`] gives up.
pub const ACCEPT_ERRORS_MAX: u32 = 100;

/// Pause after a failed accept (for example when out of file descriptors).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The hosts ag2's `serve_ws` counts as loopback.
pub const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// ag2's `serve_ws` guard: a hub that accepts the `none` auth scheme lets any client act as any
/// agent, so it is served only on a loopback host unless `allow_unauthenticated` is set.
///
/// # Errors
/// ag2's message, naming the flag that overrides it.
pub fn check_exposure(
    host: &str,
    no_auth: bool,
    allow_unauthenticated: bool,
) -> Result<(), String> {
    if !no_auth || allow_unauthenticated || LOOPBACK_HOSTS.contains(&host) {
        return Ok(());
    }
    Err(format!(
        "serving on {} would accept the 'none' auth scheme: any client could register or \
         re-attach as any agent. Serve without NoAuth, bind a loopback host, or pass \
         --allow-unauthenticated.",
        crate::json::py_str_repr(host)
    ))
}

/// The WebSocket limits both sides use.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MESSAGE_BYTES_MAX))
        .max_frame_size(Some(MESSAGE_BYTES_MAX))
}

/// Where [`serve`] takes connections from: a tokio or a turmoil TCP listener.
pub trait Listener {
    /// The accepted stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<tokio::net::TcpStream> {
        let (stream, _peer) = tokio::net::TcpListener::accept(self).await?;
        // Frames are small and answered one by one: send them at once.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Listener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<turmoil::net::TcpStream> {
        let (stream, _peer) = turmoil::net::TcpListener::accept(self).await?;
        Ok(stream)
    }
}

/// The hub clock of a running driver: both clocks count from the moment the driver started, the
/// hub clock from `epoch`.
#[derive(Clone, Copy, Debug)]
struct Clock {
    start: tokio::time::Instant,
    epoch: Timestamp,
}

impl Clock {
    fn now(&self) -> Now {
        let elapsed_micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Now {
            wall: self
                .epoch
                .plus_micros(i64::try_from(elapsed_micros).unwrap_or(i64::MAX)),
            mono: Instant(elapsed_micros),
        }
    }

    /// The tokio instant of a hub deadline; `None` past the end of tokio's time.
    fn deadline(&self, instant: Instant) -> Option<tokio::time::Instant> {
        self.start.checked_add(Duration::from_micros(instant.0))
    }
}

/// What a connection's tasks tell the owner.
enum Event {
    /// A WebSocket handshake finished: attach it and answer with its endpoint.
    Opened {
        outgoing: mpsc::Sender<Outgoing>,
        reply: oneshot::Sender<EndpointId>,
    },
    /// A text message (or a binary one that is UTF-8).
    Message { endpoint: EndpointId, text: String },
    /// A binary message that is not UTF-8: ag2's frame loop for the connection ends.
    Detached { endpoint: EndpointId },
    /// The socket ended or failed; `close` is the code to close it with, if any.
    Ended {
        endpoint: EndpointId,
        close: Option<CloseCode>,
    },
    /// The listener failed too often.
    AcceptFailed(io::Error),
}

/// What the owner asks a connection's writer to do.
#[derive(Debug)]
enum Outgoing {
    Text(String),
    Close(CloseCode),
}

/// The owner's side of one connection.
struct Connection {
    outgoing: mpsc::Sender<Outgoing>,
    /// Still known to the server (false once it was detached).
    attached: bool,
}

/// Serves `server` on `listener` until the listener fails [`ACCEPT_ERRORS_MAX`] times in a row.
/// The hub clock starts at `epoch` and moves with tokio's clock (simulated under turmoil).
///
/// Connection tasks are spawned on the current tokio runtime; the owner loop runs in the
/// caller's task.
///
/// # Errors
/// The listener's last error.
pub async fn serve<L>(listener: L, server: HubServer, epoch: Timestamp) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    let clock = Clock {
        start: tokio::time::Instant::now(),
        epoch,
    };
    run_owner(listener, Owned { server, clock }).await
}

/// [`serve`] for a hub shared with code on the same thread (a simulation harness): the owner
/// loop holds a [`SharedHub`] handle, and the harness reaches the server between the owner's
/// turns through [`SharedHub::with`], which wakes the owner to send what the call produced. The
/// hub clock is the one the [`SharedHub`] was made with.
///
/// The future is not `Send`: run it on a current-thread runtime or a turmoil host.
///
/// # Errors
/// The listener's last error.
pub async fn serve_shared<L>(listener: L, hub: SharedHub) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    run_owner(listener, hub).await
}

async fn run_owner<L, S>(listener: L, seat: S) -> io::Result<()>
where
    L: Listener + Send + 'static,
    S: Seat,
{
    let (events_tx, events) = mpsc::channel(EVENTS_QUEUE_MAX);
    let accepting = tokio::spawn(accept_loop(listener, events_tx));
    let mut owner = Owner {
        seat,
        connections: BTreeMap::new(),
    };
    let result = owner.run(events).await;
    accepting.abort();
    result
}

/// The server owned by the loop ([`serve`]).
struct Owned {
    server: HubServer,
    clock: Clock,
}

impl Seat for Owned {
    fn with<R>(&mut self, f: impl FnOnce(&mut HubServer, Now) -> R) -> R {
        f(&mut self.server, self.clock.now())
    }

    fn deadline(&mut self) -> Option<tokio::time::Instant> {
        self.server
            .poll_timeout()
            .and_then(|instant| self.clock.deadline(instant))
    }

    fn changed(&self) -> impl Future<Output = ()> {
        std::future::pending()
    }
}

async fn accept_loop<L: Listener>(listener: L, events: mpsc::Sender<Event>) {
    let mut errors = 0;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                errors = 0;
                tokio::spawn(connection(stream, events.clone()));
            }
            Err(error) => {
                errors += 1;
                if errors >= ACCEPT_ERRORS_MAX {
                    let _ = events.send(Event::AcceptFailed(error)).await;
                    return;
                }
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

struct Owner<S> {
    seat: S,
    /// Ordered, so nothing here depends on hash order.
    connections: BTreeMap<EndpointId, Connection>,
}

impl<S: Seat> Owner<S> {
    async fn run(&mut self, mut events: mpsc::Receiver<Event>) -> io::Result<()> {
        loop {
            let deadline = self.seat.deadline();
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Some(Event::AcceptFailed(error)) => return Err(error),
                    Some(event) => self.handle_event(event),
                    // The accept loop holds a sender until it fails, and says so first.
                    None => return Ok(()),
                },
                () = self.seat.changed() => {
                    for endpoint in self.seat.take_closing() {
                        self.drop_connection(endpoint, None);
                    }
                }
                () = sleep_until(deadline) => self.seat.with(HubServer::handle_timeout),
            }
            self.route();
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Opened { outgoing, reply } => {
                let endpoint = self.seat.with(|server, _| server.connect());
                if reply.send(endpoint).is_ok() {
                    let connection = Connection {
                        outgoing,
                        attached: true,
                    };
                    self.connections.insert(endpoint, connection);
                } else {
                    self.seat.with(|server, _| server.disconnect(endpoint));
                }
            }
            Event::Message { endpoint, text } => {
                if self.connections.get(&endpoint).is_some_and(|c| c.attached) {
                    self.seat.count(true);
                    self.seat
                        .with(|server, now| server.receive(now, endpoint, &text));
                }
            }
            Event::Detached { endpoint } => {
                if let Some(connection) = self.connections.get_mut(&endpoint) {
                    if connection.attached {
                        connection.attached = false;
                        self.seat.with(|server, _| server.disconnect(endpoint));
                    }
                }
            }
            Event::Ended { endpoint, close } => self.drop_connection(endpoint, close),
            // `run` returns on it before calling here.
            Event::AcceptFailed(_) => {}
        }
    }

    /// Forgets a connection; its writer closes the socket once it has sent what is queued.
    fn drop_connection(&mut self, endpoint: EndpointId, close: Option<CloseCode>) {
        let Some(connection) = self.connections.remove(&endpoint) else {
            return;
        };
        if connection.attached {
            self.seat.with(|server, _| server.disconnect(endpoint));
        }
        if let Some(code) = close {
            // A full queue means the writer is stuck anyway; its stall timeout ends it.
            let _ = connection.outgoing.try_send(Outgoing::Close(code));
        }
    }

    /// Hands the server's outputs to the writers.
    fn route(&mut self) {
        while let Some(output) = self.seat.with(|server, _| server.poll_output()) {
            let output = match output {
                // Only a server set to carry frames hands them out; encode them for the wire.
                ServerOutput::Frame { endpoint, frame } => ServerOutput::Send {
                    endpoint,
                    text: frame.encode(),
                },
                other => other,
            };
            match output {
                ServerOutput::Frame { .. } => {}
                ServerOutput::Send { endpoint, text } => {
                    let Some(connection) = self.connections.get(&endpoint) else {
                        continue;
                    };
                    self.seat.count(false);
                    if connection.outgoing.try_send(Outgoing::Text(text)).is_err() {
                        // The peer stopped reading (or the writer is gone).
                        self.drop_connection(endpoint, Some(CloseCode::Policy));
                    }
                }
                ServerOutput::Close { endpoint } => {
                    // The server closes for size: a message, or a queue, over its cap. It has
                    // already forgotten the connection.
                    if let Some(connection) = self.connections.get_mut(&endpoint) {
                        connection.attached = false;
                    }
                    self.drop_connection(endpoint, Some(CloseCode::Size));
                }
            }
        }
        self.seat.routed();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One accepted socket: handshake, attach, then read and write until either side ends.
async fn connection<S>(stream: S, events: mpsc::Sender<Event>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config()));
    let Ok(Ok(socket)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await else {
        return;
    };
    let (outgoing_tx, outgoing) = mpsc::channel(OUTBOUND_MESSAGES_MAX);
    let (reply, endpoint) = oneshot::channel();
    let opened = Event::Opened {
        outgoing: outgoing_tx,
        reply,
    };
    if events.send(opened).await.is_err() {
        return;
    }
    let Ok(endpoint) = endpoint.await else {
        return;
    };
    let (sink, source) = socket.split();
    let reader = tokio::spawn(read(source, endpoint, events.clone()));
    let asked = write(sink, outgoing).await;
    reader.abort();
    if !asked {
        let ended = Event::Ended {
            endpoint,
            close: None,
        };
        let _ = events.send(ended).await;
    }
}

/// Forwards the peer's messages to the owner until the socket ends.
async fn read<S>(
    mut source: SplitStream<WebSocketStream<S>>,
    endpoint: EndpointId,
    events: mpsc::Sender<Event>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut detached = false;
    let close = loop {
        let message = match source.next().await {
            None => break None,
            Some(Ok(message)) => message,
            Some(Err(error)) => break close_code(&error),
        };
        let event = match message {
            _ if detached => continue,
            Message::Text(text) => Event::Message {
                endpoint,
                text: text.as_str().to_owned(),
            },
            Message::Binary(bytes) => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Event::Message { endpoint, text },
                Err(_) => {
                    detached = true;
                    Event::Detached { endpoint }
                }
            },
            // Control frames: tungstenite answers pings and close frames itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => continue,
        };
        if events.send(event).await.is_err() {
            return;
        }
    };
    let _ = events.send(Event::Ended { endpoint, close }).await;
}

/// The close code `websockets` would answer a failed read with.
fn close_code(error: &WsError) -> Option<CloseCode> {
    match error {
        WsError::Capacity(_) => Some(CloseCode::Size),
        WsError::Utf8(_) => Some(CloseCode::Invalid),
        WsError::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}

/// Sends the owner's messages until it closes the connection (true) or a write fails or
/// stalls (false).
async fn write<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(next) = outgoing.recv().await {
        match next {
            Outgoing::Text(text) => {
                let sent =
                    tokio::time::timeout(WRITE_STALL_TIMEOUT, sink.send(Message::text(text)));
                if !matches!(sent.await, Ok(Ok(()))) {
                    return false;
                }
            }
            Outgoing::Close(code) => {
                let frame = CloseFrame {
                    code,
                    reason: "".into(),
                };
                let closing = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
                return true;
            }
        }
    }
    // The owner forgot the connection without a code: a normal close.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    true
}
