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
//! [`serve_with`] adds what a hub on real sockets needs ([`ServeOptions`]): WebSocket keepalive
//! as `websockets` does it (the server pings every connection; one that does not answer in time
//! is closed with 1011), a connection cap (1013 past it), a deadline for binding an agent (1008
//! after it), accept errors (out of descriptors) waited out with a growing pause, a graceful
//! shutdown (1001 to every connection), and a `tracing` line per connection opened, closed or
//! refused. [`serve`] and [`serve_shared`] (the simulations) use none of them.
//!
//! Behaviour on bad input, following ag2 1.2.1 over `websockets`:
//! - a message over 1 MiB makes tungstenite fail the read; the connection is closed with code
//!   1009, and the hub keeps serving the others;
//! - a text message that is not a frame is dropped by the server, and the connection stays open;
//! - a binary message is decoded as UTF-8 and then treated as text; one that is not UTF-8 ends
//!   ag2's frame loop for that connection (its `decode("utf-8")` raises outside the decode
//!   guard), so the connection is detached from the hub and everything it sends later is
//!   ignored, while the socket stays open until the peer closes it.

use super::durable::Durability;
use super::shared::{Seat, SharedHub};
use super::tap::{Command, Ended, Pass, Tap, TapContext};
use crate::hub::store::Store;
use crate::hub::{Hub, HubConfig};
use crate::ids::EndpointId;
use crate::proto::frame::{Frame, FrameKind, FRAME_BYTES_MAX};
use crate::server::{HubServer, ServerOutput};
use crate::time::{Instant, Now, Timestamp};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_tungstenite::tungstenite::error::ProtocolError;
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

/// With [`ServeOptions::fair`], messages one connection's reader may queue for the owner before
/// it stops reading its socket (and TCP pushes back on the peer).
pub const INBOX_MESSAGES_MAX: usize = 32;

/// With [`ServeOptions::fair`], the bytes a connection reads from its socket at once (and the
/// read buffer it starts with); tungstenite's default, 128 KiB, is zero-filled on the first read
/// and so costs every idle connection that much memory. Larger messages still arrive whole.
pub const FAIR_READ_BUFFER_BYTES: usize = 8 * 1024;

/// With [`ServeOptions::fair`], a frame whose deferred result (see
/// [`DeferredResult`](crate::proto::frame::DeferredResult)) encodes to about this many bytes or
/// more is encoded on a blocking thread.
pub const ENCODE_APART_BYTES: usize = 64 * 1024;

/// Large frames encoded at once (the others wait their turn).
pub const ENCODING_AT_ONCE: usize = 1;

/// How long a WebSocket opening handshake may take (`websockets`' `open_timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one message write may stall before the connection is dropped. `websockets` would
/// notice a peer that stopped reading through its keepalive (a ping every 20 s, 20 s to answer).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(40);

/// How long a closing handshake may take (`websockets`' `close_timeout`).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause after a failed accept (for example when out of file descriptors); it doubles
/// with each failure in a row up to [`ACCEPT_BACKOFF_MAX`]. The listener never gives up.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// The longest pause after failed accepts.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Over-cap connections being told so at once; past it, more are dropped without a close frame.
const REFUSING_MAX: usize = 64;

/// How long telling an over-cap connection to go away (handshake and close frame) may take.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// `websockets`' keepalive defaults, which ag2's `serve_ws` and `WsLink` keep.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);

/// How long `websockets` waits for the answer to a keepalive ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The close reason `websockets` gives when a keepalive ping goes unanswered (code 1011).
pub const KEEPALIVE_REASON: &str = "keepalive ping timeout";

/// The close reason `websockets` gives a message over the 1 MiB limit (code 1009).
pub const TOO_BIG_REASON: &str = "frame exceeds limit of 1048576 bytes";

/// The close reason of a connection over the cap (code 1013).
pub const OVER_CAP_REASON: &str = "too many connections; try again later";

/// The close reason of a connection that bound no agent in time (code 1008).
pub const NO_HELLO_REASON: &str = "no hello in time";

/// What [`serve_with`] does beyond carrying frames. The default does none of it, as the
/// simulations want; [`ServeOptions::real`] is `hubsim serve`'s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Ping every connection this often (a WebSocket ping frame, as `websockets`); `None`: no
    /// keepalive.
    pub ping_interval: Option<Duration>,
    /// Close a connection with 1011 when a ping is not answered within this; `None`: wait for
    /// the answer forever.
    pub ping_timeout: Option<Duration>,
    /// Connections at once (including those still in their handshake); more are accepted and
    /// closed at once with 1013.
    pub max_connections: Option<usize>,
    /// Close a connection with 1008 when no agent is bound to it (a hello welcomed, or a
    /// `register`) within this.
    pub hello_timeout: Option<Duration>,
    /// Serve the connections in turn, one message of each connection that has one per turn,
    /// from a queue per connection (instead of every message in arrival order from one queue,
    /// where a flooding client's backlog sits ahead of everyone), and have each connection's
    /// writer encode the frames it sends, off the owner loop (a large answer, `list_agents`
    /// over thousands of agents, then costs the loop little more than a reference count per
    /// record). Reads use a small buffer ([`FAIR_READ_BUFFER_BYTES`]), and a large message is
    /// written without shifting tungstenite's buffer after every partial write. The order in
    /// which one connection's frames are handled, and every byte sent, are the same either way.
    pub fair: bool,
}

impl ServeOptions {
    /// ag2's keepalive (20 s / 20 s), 1024 connections, 30 s to say hello, fair.
    pub fn real() -> ServeOptions {
        ServeOptions {
            ping_interval: Some(PING_INTERVAL),
            ping_timeout: Some(PING_TIMEOUT),
            max_connections: Some(1024),
            hello_timeout: Some(Duration::from_secs(30)),
            fair: true,
        }
    }
}

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

/// The server's WebSocket configuration: [`config`], with a small read buffer when fair.
fn server_config(options: ServeOptions) -> WebSocketConfig {
    if options.fair {
        config().read_buffer_size(FAIR_READ_BUFFER_BYTES)
    } else {
        config()
    }
}

/// Where [`serve`] takes connections from: a tokio or a turmoil TCP listener.
pub trait Listener {
    /// The accepted stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and its peer's address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Frames are small and answered one by one: send them at once. A socket that refuses
        // the option still works.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
}

impl Listener for turmoil::net::TcpListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        turmoil::net::TcpListener::accept(self).await
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
    /// A WebSocket handshake finished: attach it and answer with its endpoint. When fair, the
    /// connection's other events come through `inbox`.
    Opened {
        outgoing: mpsc::Sender<Outgoing>,
        inbox: Option<mpsc::Receiver<Event>>,
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
}

/// What the owner asks a connection's writer to do.
#[derive(Debug)]
enum Outgoing {
    Text(String),
    /// A frame for the writer to encode and send (when fair).
    Frame(Frame),
    /// Send a close frame with this code and reason, and end.
    Close(CloseCode, &'static str),
    /// End at once, without a closing handshake (a fault: the peer sees the socket go).
    Cut,
}

/// The owner's side of one connection.
struct Connection {
    outgoing: mpsc::Sender<Outgoing>,
    /// When fair: the events its tasks queued, and whether it is in the owner's turn order.
    inbox: Option<mpsc::Receiver<Event>>,
    in_turn: bool,
    /// Still known to the server (false once it was detached).
    attached: bool,
    /// When it must have an agent bound by; `None` once it had one, or without a deadline.
    hello_by: Option<tokio::time::Instant>,
}

/// Serves `server` on `listener` for ever, with none of [`ServeOptions`]. The hub clock starts
/// at `epoch` and moves with tokio's clock (simulated under turmoil).
///
/// Connection tasks are spawned on the current tokio runtime; the owner loop runs in the
/// caller's task.
///
/// # Errors
/// None today; the listener's failures are waited out.
pub async fn serve<L>(listener: L, server: HubServer, epoch: Timestamp) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    serve_with(
        listener,
        server,
        epoch,
        ServeOptions::default(),
        std::future::pending(),
    )
    .await
}

/// [`serve`] with `options`, until `shutdown` resolves: then it stops accepting, closes every
/// connection with 1001 (going away, as `websockets` does when its server closes) and returns
/// once they are closed, after [`CLOSE_TIMEOUT`] at most.
///
/// # Errors
/// None today; the listener's failures are waited out.
pub async fn serve_with<L>(
    listener: L,
    server: HubServer,
    epoch: Timestamp,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    serve_extended(
        listener,
        server,
        epoch,
        options,
        Extras::default(),
        shutdown,
    )
    .await
}

/// What `hubsim serve` may put around the owner loop of [`serve_extended`].
#[derive(Default)]
pub struct Extras {
    /// Sees every message both ways before it goes on, and may drop it, delay it, cut
    /// connections, or crash and restart the hub (`--faults`, `--record`); at shutdown it is
    /// told before any connection closes ([`Tap::finish`]).
    pub tap: Option<Box<dyn Tap + Send>>,
    /// Keeps the hub's durable state in a store (`--store`): called after every event (before
    /// the event's outputs leave), at the deadline it asks for, and at shutdown; a crashed hub
    /// restarts from what it holds.
    pub durability: Option<Box<dyn Durability>>,
}

/// [`serve_with`], with a store kept through `durability` (see [`Extras::durability`]).
///
/// # Errors
/// The store could not be written at shutdown.
pub async fn serve_durable<L>(
    listener: L,
    server: HubServer,
    epoch: Timestamp,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
    durability: Option<Box<dyn Durability>>,
) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    let extras = Extras {
        tap: None,
        durability,
    };
    serve_extended(listener, server, epoch, options, extras, shutdown).await
}

/// [`serve_with`] with a [`Tap`] between the sockets and the hub (see [`Extras::tap`]).
///
/// # Errors
/// None today; the listener's failures are waited out.
pub async fn serve_tapped<L>(
    listener: L,
    server: HubServer,
    epoch: Timestamp,
    options: ServeOptions,
    tap: Box<dyn Tap + Send>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    let extras = Extras {
        tap: Some(tap),
        durability: None,
    };
    serve_extended(listener, server, epoch, options, extras, shutdown).await
}

/// [`serve_with`] with [`Extras`].
///
/// # Errors
/// A store could not be written at shutdown.
pub async fn serve_extended<L>(
    listener: L,
    server: HubServer,
    epoch: Timestamp,
    options: ServeOptions,
    extras: Extras,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    let clock = Clock {
        start: tokio::time::Instant::now(),
        epoch,
    };
    let mut server = server;
    if options.fair {
        // The writers encode the frames.
        server.carry_frames(true);
    }
    let seat = Owned { server, clock };
    run_owner(listener, seat, options, extras, shutdown).await
}

/// [`serve`] for a hub shared with code on the same thread (a simulation harness): the owner
/// loop holds a [`SharedHub`] handle, and the harness reaches the server between the owner's
/// turns through [`SharedHub::with`], which wakes the owner to send what the call produced. The
/// hub clock is the one the [`SharedHub`] was made with.
///
/// The future is not `Send`: run it on a current-thread runtime or a turmoil host.
///
/// # Errors
/// None today; the listener's failures are waited out.
pub async fn serve_shared<L>(listener: L, hub: SharedHub) -> io::Result<()>
where
    L: Listener + Send + 'static,
{
    let options = ServeOptions::default();
    run_owner(
        listener,
        hub,
        options,
        Extras::default(),
        std::future::pending(),
    )
    .await
}

async fn run_owner<L, S>(
    listener: L,
    seat: S,
    options: ServeOptions,
    extras: Extras,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    L: Listener + Send + 'static,
    S: Seat,
{
    let (events_tx, events) = mpsc::channel(EVENTS_QUEUE_MAX);
    // When fair, each reader says which connection has a message queued.
    let (ready_tx, ready) = match options.fair {
        true => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    // Every connection task holds a sender; once all are dropped, every socket is closed.
    let (alive, mut closed) = mpsc::channel::<()>(1);
    let inboxes = Inboxes {
        events: events_tx,
        ready: ready_tx,
        encoding: Arc::new(Semaphore::new(ENCODING_AT_ONCE)),
    };
    let accepting = tokio::spawn(accept_loop(listener, inboxes, options, alive));
    let mut owner = Owner {
        seat,
        connections: BTreeMap::new(),
        hello_deadlines: BTreeSet::new(),
        hello_timeout: options.hello_timeout,
        tap: extras.tap,
        started: tokio::time::Instant::now(),
        down: None,
        durability: extras.durability,
        turns: VecDeque::new(),
        fair: options.fair,
    };
    let result = owner.run(events, ready, shutdown).await;
    accepting.abort();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closed.recv()).await;
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

/// Counts itself in a shared counter while it lives.
struct Counted {
    counter: Arc<AtomicUsize>,
    /// The count with this one in it.
    value: usize,
}

impl Counted {
    fn new(counter: &Arc<AtomicUsize>) -> Counted {
        let value = counter.fetch_add(1, Ordering::Relaxed) + 1;
        Counted {
            counter: Arc::clone(counter),
            value,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections for ever. A failed accept (out of descriptors, say) is waited out with a
/// pause that grows to [`ACCEPT_BACKOFF_MAX`]; connections over the cap are told to come back.
async fn accept_loop<L: Listener>(
    listener: L,
    inboxes: Inboxes,
    options: ServeOptions,
    alive: mpsc::Sender<()>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut backoff: Option<Duration> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                let pause = backoff.map_or(ACCEPT_BACKOFF_MIN, |pause| {
                    (pause * 2).min(ACCEPT_BACKOFF_MAX)
                });
                tracing::warn!(%error, pause_ms = pause.as_millis() as u64, "accept failed; pausing");
                backoff = Some(pause);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if backoff.take().is_some() {
            tracing::info!("accepting again");
        }
        let counted = Counted::new(&open);
        if options
            .max_connections
            .is_some_and(|max| counted.value > max)
        {
            drop(counted);
            let refusal = Counted::new(&refusing);
            if refusal.value > REFUSING_MAX {
                tracing::warn!(%peer, "refused: too many connections (dropped at once)");
                continue;
            }
            tokio::spawn(refuse(stream, peer, refusal, alive.clone()));
            continue;
        }
        let spawned = connection(
            stream,
            peer,
            inboxes.clone(),
            options,
            counted,
            alive.clone(),
        );
        tokio::spawn(spawned);
    }
}

/// Tells a connection over the cap to come back later: handshake, a close frame with 1013, and
/// the peer's answer (so it reads the frame before the socket goes).
async fn refuse<S>(stream: S, peer: SocketAddr, _counted: Counted, _alive: mpsc::Sender<()>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let refusing = async {
        let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config()));
        let mut socket = handshake.await.ok()?;
        let frame = CloseFrame {
            code: CloseCode::Again,
            reason: OVER_CAP_REASON.into(),
        };
        socket.close(Some(frame)).await.ok()?;
        while let Some(Ok(_)) = socket.next().await {}
        Some(())
    };
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, refusing).await;
    tracing::warn!(%peer, code = 1013, reason = OVER_CAP_REASON, "refused: too many connections");
}

/// Where connections' tasks send their events: the owner's queue, and when fair the channel on
/// which readers say which connection has a message in its own queue.
#[derive(Clone)]
struct Inboxes {
    events: mpsc::Sender<Event>,
    ready: Option<mpsc::UnboundedSender<EndpointId>>,
    /// Turns to encode a large frame (see [`ENCODE_APART_BYTES`]).
    encoding: Arc<Semaphore>,
}

/// Where one attached connection's tasks send its events.
#[derive(Clone)]
enum Inbox {
    /// The owner's queue, shared by every connection: handled in arrival order.
    Shared(mpsc::Sender<Event>),
    /// The connection's own queue (fair); `ready` tells the owner a message is in it.
    Own {
        queue: mpsc::Sender<Event>,
        ready: mpsc::UnboundedSender<EndpointId>,
        endpoint: EndpointId,
    },
}

impl Inbox {
    /// Hands `event` to the owner, waiting while the queue is full; an error once the owner
    /// is gone.
    async fn send(&self, event: Event) -> Result<(), ()> {
        match self {
            Inbox::Shared(events) => events.send(event).await.map_err(|_| ()),
            Inbox::Own {
                queue,
                ready,
                endpoint,
            } => {
                if ready.is_closed() {
                    return Err(());
                }
                // The owner closes the queue of a connection it forgot; what such a connection
                // still sends is dropped, as a shared queue's owner ignores it.
                if queue.send(event).await.is_ok() {
                    let _ = ready.send(*endpoint);
                }
                Ok(())
            }
        }
    }
}

struct Owner<S> {
    seat: S,
    /// Ordered, so nothing here depends on hash order.
    connections: BTreeMap<EndpointId, Connection>,
    /// The connections with no agent bound yet, by deadline.
    hello_deadlines: BTreeSet<(tokio::time::Instant, EndpointId)>,
    hello_timeout: Option<Duration>,
    /// The store kept in step with the hub, if any.
    durability: Option<Box<dyn Durability>>,
    /// What `hubsim serve --faults/--record` puts between the sockets and the hub.
    tap: Option<Box<dyn Tap + Send>>,
    /// When the owner started: the tap's time counts from it.
    started: tokio::time::Instant,
    /// A crashed hub's durable state, until it restarts.
    down: Option<Down>,
    /// When fair: the connections with a message queued, in turn order (each once).
    turns: VecDeque<EndpointId>,
    fair: bool,
}

/// What a crashed hub restarts from.
struct Down {
    store: Store,
    config: HubConfig,
    /// The highest id the crashed hub minted: the restarted one mints past it.
    id_floor: u128,
}

impl<S: Seat> Owner<S> {
    /// Handles events until `shutdown`: in arrival order from `events`; or, when fair, the
    /// connections opening from `events` and the others' messages in turn, one message of each
    /// connection that `ready` said has one per turn.
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<Event>,
        mut ready: Option<mpsc::UnboundedReceiver<EndpointId>>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let deadline = if self.down.is_some() {
                None
            } else {
                self.seat.deadline()
            };
            let hello_deadline = self.hello_deadlines.first().map(|(at, _)| *at);
            let tap_deadline = self
                .tap
                .as_ref()
                .and_then(|tap| tap.next_due())
                .and_then(|at| self.started.checked_add(Duration::from_micros(at)));
            let sync_deadline = self.durability.as_ref().and_then(|store| store.deadline());
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!(connections = self.connections.len(), "shutting down");
                    self.tap_finish();
                    let endpoints: Vec<EndpointId> = self.connections.keys().copied().collect();
                    for endpoint in endpoints {
                        self.drop_connection(endpoint, Some((CloseCode::Away, "")));
                    }
                    self.route();
                    return self
                        .durable(|store, server| store.shutdown(server))
                        .unwrap_or(Ok(()));
                }
                () = sleep_until(tap_deadline) => self.tap_due(),
                event = events.recv() => match event {
                    Some(event) => self.handle_event(event),
                    // The accept loop holds a sender for ever.
                    None => return Ok(()),
                },
                Some(endpoint) = next_ready(&mut ready) => {
                    self.queue_turn(endpoint);
                    if let Some(ready) = &mut ready {
                        while let Ok(endpoint) = ready.try_recv() {
                            self.queue_turn(endpoint);
                        }
                    }
                }
                () = self.seat.changed() => {
                    for endpoint in self.seat.take_closing() {
                        self.drop_connection(endpoint, None);
                    }
                }
                () = sleep_until(deadline) => self.seat.with(HubServer::handle_timeout),
                () = sleep_until(hello_deadline) => self.expire_hellos(),
                () = sleep_until(sync_deadline) => {
                    self.durable(|store, server| store.flush(server));
                    continue;
                }
                () = std::future::ready(()), if !self.turns.is_empty() => self.take_turn(),
            }
            self.durable(|store, server| store.handled(server));
            self.route();
            if !self.turns.is_empty() {
                // Turns never wait: let the connections' tasks run now and then.
                tokio::task::consume_budget().await;
            }
        }
    }

    /// `endpoint` has a message queued: it takes its turn after those already waiting.
    fn queue_turn(&mut self, endpoint: EndpointId) {
        if let Some(connection) = self.connections.get_mut(&endpoint) {
            if !connection.in_turn {
                connection.in_turn = true;
                self.turns.push_back(endpoint);
            }
        }
    }

    /// Handles one event of the connection whose turn it is; it goes to the back of the turn
    /// order while it has more.
    fn take_turn(&mut self) {
        let Some(endpoint) = self.turns.pop_front() else {
            return;
        };
        let Some(connection) = self.connections.get_mut(&endpoint) else {
            return;
        };
        let Some(event) = connection
            .inbox
            .as_mut()
            .and_then(|inbox| inbox.try_recv().ok())
        else {
            connection.in_turn = false;
            return;
        };
        self.handle_event(event);
        if self.connections.contains_key(&endpoint) {
            self.turns.push_back(endpoint);
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Opened { .. } if self.down.is_some() => {
                // The hub is down: dropping the reply ends the connection at once.
            }
            Event::Opened {
                outgoing,
                inbox,
                reply,
            } => {
                let endpoint = self.seat.with(|server, _| server.connect());
                if reply.send(endpoint).is_ok() {
                    let hello_by = self
                        .hello_timeout
                        .and_then(|timeout| tokio::time::Instant::now().checked_add(timeout));
                    if let Some(at) = hello_by {
                        self.hello_deadlines.insert((at, endpoint));
                    }
                    let connection = Connection {
                        outgoing,
                        inbox,
                        in_turn: false,
                        attached: true,
                        hello_by,
                    };
                    self.connections.insert(endpoint, connection);
                    self.tap_opened(endpoint);
                } else {
                    self.seat.with(|server, _| server.disconnect(endpoint));
                }
            }
            Event::Message { endpoint, text } => {
                let Some(connection) = self.connections.get(&endpoint) else {
                    return;
                };
                if !connection.attached {
                    return;
                }
                if self.tap_inbound(endpoint, &text) == Pass::Now {
                    self.receive(endpoint, &text);
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
            Event::Ended { endpoint, close } => {
                let reason = |code| match code {
                    CloseCode::Size => TOO_BIG_REASON,
                    _ => "",
                };
                self.drop_connection(endpoint, close.map(|code| (code, reason(code))));
            }
        }
    }

    /// The hub reads a message from `endpoint` (a live, attached connection).
    fn receive(&mut self, endpoint: EndpointId, text: &str) {
        let Some(connection) = self.connections.get(&endpoint) else {
            return;
        };
        let waiting = connection.hello_by;
        self.seat.count(true);
        self.seat
            .with(|server, now| server.receive(now, endpoint, text));
        if let Some(at) = waiting {
            if self.has_agent(endpoint) {
                self.hello_said(endpoint, at);
            }
        }
        let at = self.tap_now();
        if let Some(tap) = &mut self.tap {
            self.seat.with(|server, _| {
                tap.handled(
                    TapContext {
                        at,
                        server: Some(server),
                    },
                    endpoint,
                );
            });
        }
    }

    /// Microseconds since the owner started.
    fn tap_now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Calls the tap (if any) with the server (while the hub is up).
    fn with_tap<R: Default>(&mut self, f: impl FnOnce(&mut dyn Tap, TapContext<'_>) -> R) -> R {
        let at = self.tap_now();
        let Some(tap) = self.tap.as_deref_mut() else {
            return R::default();
        };
        if self.down.is_some() {
            return f(tap, TapContext { at, server: None });
        }
        self.seat.with(|server, _| {
            f(
                tap,
                TapContext {
                    at,
                    server: Some(server),
                },
            )
        })
    }

    fn tap_opened(&mut self, endpoint: EndpointId) {
        self.with_tap(|tap, cx| tap.opened(cx, endpoint));
    }

    fn tap_inbound(&mut self, endpoint: EndpointId, text: &str) -> Pass {
        if self.tap.is_none() {
            return Pass::Now;
        }
        self.with_tap(|tap, cx| Some(tap.inbound(cx, endpoint, text)))
            .unwrap_or(Pass::Now)
    }

    fn tap_outbound(&mut self, endpoint: EndpointId, text: &str) -> Pass {
        if self.tap.is_none() {
            return Pass::Now;
        }
        self.with_tap(|tap, cx| Some(tap.outbound(cx, endpoint, text)))
            .unwrap_or(Pass::Now)
    }

    fn tap_finish(&mut self) {
        self.with_tap(|tap, cx| tap.finish(cx));
    }

    /// Carries out what the tap says is due.
    fn tap_due(&mut self) {
        let commands = self.with_tap(|tap, cx| tap.due(cx));
        for command in commands {
            match command {
                Command::Deliver { endpoint, up, text } => {
                    let live = self
                        .connections
                        .get(&endpoint)
                        .is_some_and(|connection| connection.attached || !up);
                    self.with_tap(|tap, cx| tap.delivered(cx, endpoint, up, live));
                    if !live {
                        continue;
                    }
                    if up {
                        self.receive(endpoint, &text);
                    } else {
                        self.send(endpoint, Outgoing::Text(text));
                    }
                }
                Command::Cut(endpoint) => self.cut(endpoint, Ended::Cut),
                Command::Crash => self.crash(),
                Command::Restart => self.restart(),
            }
            self.durable(|store, server| store.handled(server));
            self.route();
        }
    }

    /// Ends a connection without a closing handshake.
    fn cut(&mut self, endpoint: EndpointId, ended: Ended) {
        let Some(connection) = self.connections.remove(&endpoint) else {
            return;
        };
        if let Some(at) = connection.hello_by {
            self.hello_deadlines.remove(&(at, endpoint));
        }
        if connection.attached && self.down.is_none() {
            self.seat.with(|server, _| server.disconnect(endpoint));
        }
        let _ = connection.outgoing.try_send(Outgoing::Cut);
        self.with_tap(|tap, cx| tap.closed(cx, endpoint, ended));
    }

    /// The hub crashes: its durable state is kept, every connection is cut.
    fn crash(&mut self) {
        if self.down.is_some() {
            return;
        }
        let endpoints: Vec<EndpointId> = self.connections.keys().copied().collect();
        for endpoint in endpoints {
            self.cut(endpoint, Ended::Crash);
        }
        let mut down = self.seat.with(|server, _| Down {
            store: Store::default(),
            config: server.hub().config.clone(),
            id_floor: server.hub().last_id(),
        });
        // A hub with a store restarts from what reached it; one without, from its state now.
        match self
            .durability
            .as_deref_mut()
            .and_then(|store| store.crashed())
        {
            Some(Ok((store, id_floor))) => {
                down.store = store;
                down.id_floor = down.id_floor.max(id_floor);
            }
            failed => {
                if let Some(Err(error)) = failed {
                    tracing::error!(%error, "the crashed hub's store cannot be read back; it restarts from its state at the crash");
                }
                down.store = self.seat.with(|server, _| server.hub().snapshot());
            }
        }
        // What the crashed hub still had to send goes with it.
        while self.seat.with(|server, _| server.poll_output()).is_some() {}
        self.down = Some(down);
        tracing::warn!("hub crashed (a fault)");
        self.with_tap(|tap, cx| tap.crashed(cx));
    }

    /// A crashed hub restarts from its durable state (ag2's `Hub.open` over its store).
    fn restart(&mut self) {
        let Some(down) = self.down.take() else {
            return;
        };
        let frames = self.fair;
        let hydrated = self.seat.with(|server, now| {
            Hub::hydrate(down.config.clone(), &down.store, down.id_floor, now.mono).map(|hub| {
                *server = HubServer::new(hub);
                server.carry_frames(frames);
            })
        });
        match &hydrated {
            Ok(()) => tracing::warn!("hub restarted from its durable state (a fault)"),
            Err(error) => {
                tracing::error!(error = %error.message, "the hub could not restart from its durable state");
                self.down = Some(down);
            }
        }
        self.with_tap(|tap, cx| tap.restarted(cx, hydrated.as_ref().map(|_| ())));
    }

    /// Hands `text` to `endpoint`'s writer; a writer that is not keeping up loses its
    /// connection.
    fn send(&mut self, endpoint: EndpointId, outgoing: Outgoing) {
        let Some(connection) = self.connections.get(&endpoint) else {
            return;
        };
        self.seat.count(false);
        if connection.outgoing.try_send(outgoing).is_err() {
            // The peer stopped reading (or the writer is gone).
            self.drop_connection(endpoint, Some((CloseCode::Policy, "")));
        }
    }

    /// Calls the store with the server, if there is a store (and the hub is up).
    fn durable<R>(&mut self, call: impl FnOnce(&mut dyn Durability, &HubServer) -> R) -> Option<R> {
        if self.down.is_some() {
            return None;
        }
        let store = self.durability.as_deref_mut()?;
        Some(self.seat.with(|server, _| call(store, server)))
    }

    /// Whether an agent is bound to `endpoint`.
    fn has_agent(&mut self, endpoint: EndpointId) -> bool {
        self.seat
            .with(|server, _| !server.hub().bound_to(endpoint).is_empty())
    }

    /// `endpoint` had an agent bound: its hello deadline goes.
    fn hello_said(&mut self, endpoint: EndpointId, at: tokio::time::Instant) {
        self.hello_deadlines.remove(&(at, endpoint));
        if let Some(connection) = self.connections.get_mut(&endpoint) {
            connection.hello_by = None;
        }
    }

    /// Closes the connections past their hello deadline that still have no agent bound (a
    /// hello held behind a blocked frame may have bound one since).
    fn expire_hellos(&mut self) {
        let now = tokio::time::Instant::now();
        while let Some(&(at, endpoint)) = self.hello_deadlines.first() {
            if at > now {
                break;
            }
            self.hello_said(endpoint, at);
            if !self.has_agent(endpoint) {
                self.drop_connection(endpoint, Some((CloseCode::Policy, NO_HELLO_REASON)));
            }
        }
    }

    /// Forgets a connection; its writer closes the socket once it has sent what is queued.
    fn drop_connection(&mut self, endpoint: EndpointId, close: Option<(CloseCode, &'static str)>) {
        let Some(connection) = self.connections.remove(&endpoint) else {
            return;
        };
        if let Some(at) = connection.hello_by {
            self.hello_deadlines.remove(&(at, endpoint));
        }
        if connection.attached {
            self.seat.with(|server, _| server.disconnect(endpoint));
        }
        let ended = match close {
            Some((code, reason)) => {
                // A full queue means the writer is stuck anyway; its stall timeout ends it.
                let _ = connection.outgoing.try_send(Outgoing::Close(code, reason));
                Ended::Hub(u16::from(code))
            }
            None => Ended::Peer,
        };
        self.with_tap(|tap, cx| tap.closed(cx, endpoint, ended));
    }

    /// Hands the server's outputs to the writers (through the tap, if any).
    fn route(&mut self) {
        while let Some(output) = self.seat.with(|server, _| server.poll_output()) {
            let (endpoint, outgoing) = match output {
                // A fair server carries frames: the writer encodes them, unless a tap reads
                // them first.
                ServerOutput::Frame { endpoint, frame } if self.fair && self.tap.is_none() => {
                    (endpoint, Outgoing::Frame(frame))
                }
                // Only a server set to carry frames hands them out; encode them for the wire.
                ServerOutput::Frame { endpoint, frame } => {
                    (endpoint, Outgoing::Text(frame.encode()))
                }
                ServerOutput::Send { endpoint, text } => (endpoint, Outgoing::Text(text)),
                ServerOutput::Close { endpoint } => {
                    // The server closes for size: a message, or a queue, over its cap. It has
                    // already forgotten the connection.
                    if let Some(connection) = self.connections.get_mut(&endpoint) {
                        connection.attached = false;
                    }
                    self.drop_connection(endpoint, Some((CloseCode::Size, "")));
                    continue;
                }
            };
            if !self.connections.contains_key(&endpoint) {
                continue;
            }
            if tracing::enabled!(tracing::Level::WARN) {
                match &outgoing {
                    Outgoing::Text(text) if text.contains("\"auth_failed\"") => {
                        log_auth_refusal(endpoint, text);
                    }
                    Outgoing::Frame(frame) => log_auth_refusal_frame(endpoint, frame),
                    _ => {}
                }
            }
            if let Outgoing::Text(text) = &outgoing {
                if self.tap_outbound(endpoint, text) != Pass::Now {
                    continue;
                }
            }
            self.send(endpoint, outgoing);
        }
        self.seat.routed();
    }
}

/// The next connection a reader said has a message queued (fair owners only).
async fn next_ready(ready: &mut Option<mpsc::UnboundedReceiver<EndpointId>>) -> Option<EndpointId> {
    match ready {
        Some(ready) => ready.recv().await,
        None => std::future::pending().await,
    }
}

/// [`log_auth_refusal`] for a frame not yet encoded.
fn log_auth_refusal_frame(endpoint: EndpointId, frame: &Frame) {
    let (code, message) = match frame.kind {
        FrameKind::Error => (frame.get("code"), frame.get("message")),
        FrameKind::Response => (frame.get("error_code"), frame.get("error_message")),
        _ => return,
    };
    if code.as_str() == Some("auth_failed") {
        let message = message.as_str().unwrap_or_default();
        tracing::warn!(%endpoint, error = message, "refused: auth_failed");
    }
}

/// Logs a hello or `register` refused for its credentials: the hub's `auth_failed` answer (an
/// `error` frame, or a response's `error_code`), whose message names no secret.
fn log_auth_refusal(endpoint: EndpointId, text: &str) {
    let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let code = frame.get("code").or_else(|| frame.get("error_code"));
    if code.and_then(serde_json::Value::as_str) != Some("auth_failed") {
        return;
    }
    let message = frame
        .get("message")
        .or_else(|| frame.get("error"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    tracing::warn!(%endpoint, error = message, "refused: auth_failed");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How a connection ended, for its log line.
enum Ending {
    /// The hub closed it with this code and reason.
    Closed(CloseCode, &'static str),
    /// A keepalive ping went unanswered: closed with 1011.
    Keepalive,
    /// A write failed or stalled.
    Lost,
    /// A fault cut it: no closing handshake.
    Cut,
    /// The hub forgot it without a code: the peer ended it (or a harness dropped it).
    Ended,
}

/// One accepted socket: handshake, attach, then read and write until either side ends.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    inboxes: Inboxes,
    options: ServeOptions,
    _counted: Counted,
    _alive: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = Unshifted::new(stream, options.fair);
    let handshake =
        tokio_tungstenite::accept_async_with_config(stream, Some(server_config(options)));
    let socket = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "refused: WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "refused: WebSocket handshake timed out");
            return;
        }
    };
    let (outgoing_tx, outgoing) = mpsc::channel(OUTBOUND_MESSAGES_MAX);
    let (reply, endpoint) = oneshot::channel();
    let (queue, inbox) = match inboxes.ready {
        Some(_) => {
            let (queue, inbox) = mpsc::channel(INBOX_MESSAGES_MAX);
            (Some(queue), Some(inbox))
        }
        None => (None, None),
    };
    let opened = Event::Opened {
        outgoing: outgoing_tx,
        inbox,
        reply,
    };
    if inboxes.events.send(opened).await.is_err() {
        return;
    }
    let Ok(endpoint) = endpoint.await else {
        return;
    };
    let events = match (queue, inboxes.ready) {
        (Some(queue), Some(ready)) => Inbox::Own {
            queue,
            ready,
            endpoint,
        },
        _ => Inbox::Shared(inboxes.events),
    };
    tracing::info!(%endpoint, %peer, "connection opened");
    let (sink, source) = socket.split();
    let (pongs_tx, pongs) = watch::channel(Vec::new());
    let mut reader = tokio::spawn(read(source, endpoint, events.clone(), pongs_tx));
    let ending = write(sink, outgoing, pongs, options, inboxes.encoding).await;
    let mut peer_end = PeerEnd::default();
    match ending {
        Ending::Closed(..) => {
            // Let the peer answer the close frame, so that what it sent meanwhile is read and
            // the socket is not reset before the peer reads the frame.
            if let Ok(Ok(end)) = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await {
                peer_end = end;
            }
        }
        Ending::Ended if reader.is_finished() => {
            if let Ok(end) = (&mut reader).await {
                peer_end = end;
            }
        }
        Ending::Ended | Ending::Keepalive | Ending::Lost | Ending::Cut => {}
    }
    reader.abort();
    if matches!(ending, Ending::Keepalive | Ending::Lost) {
        // The writer already sent a keepalive close: the owner's own close goes nowhere.
        let close = matches!(ending, Ending::Keepalive).then_some(CloseCode::Error);
        let ended = Event::Ended { endpoint, close };
        let _ = events.send(ended).await;
    }
    match ending {
        Ending::Closed(code, reason) => {
            let code = u16::from(code);
            tracing::info!(%endpoint, %peer, code, reason, "connection closed by the hub");
        }
        Ending::Keepalive => tracing::warn!(
            %endpoint,
            %peer,
            code = 1011,
            reason = KEEPALIVE_REASON,
            "connection closed by the hub"
        ),
        Ending::Lost => {
            tracing::info!(%endpoint, %peer, "connection lost: a write failed or stalled");
        }
        Ending::Cut => tracing::info!(%endpoint, %peer, "connection cut (a fault)"),
        Ending::Ended => tracing::info!(
            %endpoint,
            %peer,
            code = peer_end.code,
            reason = peer_end.reason,
            "connection closed by the peer"
        ),
    }
}

/// How the peer ended its side: its close frame, or what failed.
#[derive(Debug, Default)]
struct PeerEnd {
    code: Option<u16>,
    reason: String,
}

/// Forwards the peer's messages to the owner, and its pongs' payloads to the writer, until the
/// socket ends.
async fn read<S>(
    mut source: SplitStream<WebSocketStream<S>>,
    endpoint: EndpointId,
    events: Inbox,
    pongs: watch::Sender<Vec<u8>>,
) -> PeerEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut detached = false;
    let mut end = PeerEnd::default();
    let close = loop {
        let message = match source.next().await {
            None => break None,
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                if end.code.is_none() {
                    end.reason = error.to_string();
                }
                break close_code(&error);
            }
        };
        let event = match message {
            Message::Pong(payload) => {
                pongs.send_replace(payload.to_vec());
                continue;
            }
            Message::Close(frame) => {
                if let Some(frame) = frame {
                    end.code = Some(u16::from(frame.code));
                    end.reason = frame.reason.as_str().to_owned();
                }
                continue;
            }
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
            Message::Ping(_) | Message::Frame(_) => continue,
        };
        if events.send(event).await.is_err() {
            return end;
        }
    };
    let _ = events.send(Event::Ended { endpoint, close }).await;
    end
}

/// The close code `websockets` would answer a failed read with.
fn close_code(error: &WsError) -> Option<CloseCode> {
    match error {
        WsError::Capacity(_) => Some(CloseCode::Size),
        WsError::Utf8(_) => Some(CloseCode::Invalid),
        // A peer that vanished without a closing handshake gets no frame (`websockets`: 1006).
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}

/// A keepalive ping waiting for its pong.
struct Pinged {
    payload: Vec<u8>,
    sent: tokio::time::Instant,
    answer_by: Option<tokio::time::Instant>,
}

/// Sends the owner's messages until it closes the connection or a write fails or stalls, and
/// keeps the connection alive as `websockets` does: a ping every `ping_interval`, the next one
/// only once the last was answered, and a close with 1011 when an answer takes longer than
/// `ping_timeout`.
async fn write<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut pongs: watch::Receiver<Vec<u8>>,
    options: ServeOptions,
    encoding: Arc<Semaphore>,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let interval = options.ping_interval;
    let mut next_ping = interval.and_then(|every| tokio::time::Instant::now().checked_add(every));
    let mut pinged: Option<Pinged> = None;
    let mut pings: u32 = 0;
    let mut reading = true;
    loop {
        let ping_at = if pinged.is_none() { next_ping } else { None };
        let answer_by = pinged.as_ref().and_then(|p| p.answer_by);
        tokio::select! {
            biased;
            next = outgoing.recv() => match next {
                Some(Outgoing::Text(text)) => {
                    let sent =
                        tokio::time::timeout(WRITE_STALL_TIMEOUT, sink.send(Message::text(text)));
                    if !matches!(sent.await, Ok(Ok(()))) {
                        return Ending::Lost;
                    }
                }
                Some(Outgoing::Cut) => return Ending::Cut,
                Some(Outgoing::Frame(frame)) => {
                    let text = if frame.deferred_size_hint() >= ENCODE_APART_BYTES {
                        // Milliseconds of work: on a blocking thread, so that the runtime's
                        // workers keep reading and writing the other sockets, and one at a time,
                        // so that large answers leave the other cores to everyone else.
                        let Ok(turn) = Arc::clone(&encoding).acquire_owned().await else {
                            return Ending::Lost;
                        };
                        let encoded = tokio::task::spawn_blocking(move || {
                            let text = frame.encode();
                            drop((frame, turn));
                            text
                        });
                        let Ok(text) = encoded.await else {
                            return Ending::Lost;
                        };
                        text
                    } else {
                        frame.encode()
                    };
                    let sent =
                        tokio::time::timeout(WRITE_STALL_TIMEOUT, sink.send(Message::text(text)));
                    if !matches!(sent.await, Ok(Ok(()))) {
                        return Ending::Lost;
                    }
                }
                Some(Outgoing::Close(code, reason)) => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let closing = sink.send(Message::Close(Some(frame)));
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
                    return Ending::Closed(code, reason);
                }
                None => {
                    // The owner forgot the connection without a code: a normal close.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
                    return Ending::Ended;
                }
            },
            changed = pongs.changed(), if reading => {
                if changed.is_err() {
                    reading = false;
                    continue;
                }
                let answered = pinged
                    .as_ref()
                    .is_some_and(|p| *pongs.borrow_and_update() == p.payload);
                if let (true, Some(ping)) = (answered, pinged.take()) {
                    let now = tokio::time::Instant::now();
                    next_ping = interval
                        .and_then(|every| ping.sent.checked_add(every))
                        .map(|at| at.max(now));
                }
            }
            () = sleep_until(ping_at) => {
                pings = pings.wrapping_add(1);
                let payload = pings.to_be_bytes().to_vec();
                let sending = sink.send(Message::Ping(payload.clone().into()));
                if !matches!(tokio::time::timeout(WRITE_STALL_TIMEOUT, sending).await, Ok(Ok(()))) {
                    return Ending::Lost;
                }
                let sent = tokio::time::Instant::now();
                match options.ping_timeout {
                    Some(timeout) => {
                        pinged = Some(Pinged {
                            payload,
                            sent,
                            answer_by: sent.checked_add(timeout),
                        });
                    }
                    // Without a timeout, `websockets` does not wait for the answer.
                    None => next_ping = interval.and_then(|every| sent.checked_add(every)),
                }
            }
            () = sleep_until(answer_by) => {
                let frame = CloseFrame {
                    code: CloseCode::Error,
                    reason: KEEPALIVE_REASON.into(),
                };
                // `websockets` sends the frame and drops the connection without waiting.
                let closing = sink.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
                return Ending::Keepalive;
            }
        }
    }
}

/// A stream whose writes always take the whole buffer: what the socket does not take at once is
/// kept and sent from an offset by the next write or flush. tungstenite writes a message from
/// its own buffer and shifts the rest of that buffer to the front after every partial write, so
/// a message of megabytes sent in socket-sized pieces costs it megabytes of copying per piece;
/// here it is written once and shifted once. The bytes on the wire are the same. With `stash`
/// off, writes go straight through.
struct Unshifted<S> {
    inner: S,
    stash: bool,
    pending: Vec<u8>,
    sent: usize,
}

impl<S> Unshifted<S> {
    fn new(inner: S, stash: bool) -> Unshifted<S> {
        Unshifted {
            inner,
            stash,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Unshifted<S> {
    /// Sends what is kept; ready once it all went.
    fn poll_pending(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        while self.sent < self.pending.len() {
            let rest = &self.pending[self.sent..];
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => self.sent += written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Unshifted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Unshifted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::Poll;
        if !self.stash {
            return std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        match self.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|done| done.map(|()| 0)),
        }
        let written = match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => written,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            // The socket is full: keep it all (the waker is registered).
            Poll::Pending => 0,
        };
        self.pending.extend_from_slice(&buf[written..]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
