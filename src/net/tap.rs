//! A tap on the owner loop of [`serve_tapped`](super::ws::serve_tapped): what sits between the
//! sockets and the hub when `hubsim serve` injects faults into real connections and records the
//! run (`--faults`, `--record`).
//!
//! The owner shows the tap every message before the hub reads it and before a writer sends it;
//! the tap lets it pass, drops it, or keeps it and hands it back later as a
//! [`Command::Deliver`]. It also tells the owner when to cut connections and when to crash and
//! restart the hub. The tap reads the hub (who is bound where) but never changes it: the owner
//! does every change. Time is microseconds from the start of the serve, on tokio's clock.

use crate::ids::EndpointId;
use crate::proto::HubError;
use crate::server::HubServer;

/// What the tap sees with every call.
#[derive(Clone, Copy)]
pub struct TapContext<'a> {
    /// Microseconds since the serve started.
    pub at: u64,
    /// The hub's server (`None` while a crashed hub is down).
    pub server: Option<&'a HubServer>,
}

/// What happens to a message the tap was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// It goes on now.
    Now,
    /// It is lost.
    Drop,
    /// The tap keeps it; a later [`Command::Deliver`] hands it on (or never does).
    Keep,
}

/// Something the tap asks the owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Hand on a message the tap kept: to the hub (`up`), or to the connection's writer.
    Deliver {
        /// The connection.
        endpoint: EndpointId,
        /// Agent to hub.
        up: bool,
        /// The message.
        text: String,
    },
    /// End a connection at once, without a closing handshake, as a lost network or a dead
    /// peer would: the peer sees the socket go (`websockets`: 1006).
    Cut(EndpointId),
    /// Crash the hub: every connection is cut, and until [`Command::Restart`] new ones are
    /// closed as soon as they open. What the hub had not made durable is lost.
    Crash,
    /// Restart a crashed hub from its durable state.
    Restart,
}

/// How a connection ended, as the owner saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed it, or its socket failed.
    Peer,
    /// The hub closed it with this code (a message over the limit, keepalive, shutdown, ...).
    Hub(u16),
    /// The tap cut it ([`Command::Cut`]).
    Cut,
    /// The hub crashed.
    Crash,
}

/// See the module docs. Every method but [`Tap::inbound`] and [`Tap::outbound`] has a default
/// that does nothing.
pub trait Tap {
    /// A connection opened (its handshake done; no agent is bound yet).
    fn opened(&mut self, _cx: TapContext<'_>, _endpoint: EndpointId) {}

    /// A message from `endpoint`, before the hub reads it.
    fn inbound(&mut self, cx: TapContext<'_>, endpoint: EndpointId, text: &str) -> Pass;

    /// The hub read a message from `endpoint` (passed or delivered later): bindings may have
    /// changed.
    fn handled(&mut self, _cx: TapContext<'_>, _endpoint: EndpointId) {}

    /// A message the hub sends to `endpoint`, before its writer gets it.
    fn outbound(&mut self, cx: TapContext<'_>, endpoint: EndpointId, text: &str) -> Pass;

    /// A kept message was handed on ([`Command::Deliver`]), or could not be: its connection
    /// is gone (`delivered` false).
    fn delivered(
        &mut self,
        _cx: TapContext<'_>,
        _endpoint: EndpointId,
        _up: bool,
        _delivered: bool,
    ) {
    }

    /// A connection ended.
    fn closed(&mut self, _cx: TapContext<'_>, _endpoint: EndpointId, _ended: Ended) {}

    /// When [`Tap::due`] wants to run next (µs since the start), if ever.
    fn next_due(&self) -> Option<u64>;

    /// What is due at `cx.at`: the owner carries the commands out in order.
    fn due(&mut self, cx: TapContext<'_>) -> Vec<Command>;

    /// The hub crashed ([`Command::Crash`]): its connections are cut (each also reported to
    /// [`Tap::closed`]).
    fn crashed(&mut self, _cx: TapContext<'_>) {}

    /// The hub restarted from its durable state, or failed to (it stays down).
    fn restarted(&mut self, _cx: TapContext<'_>, _result: Result<(), &HubError>) {}

    /// The serve is shutting down (connections are still open; the hub is as it ends).
    fn finish(&mut self, _cx: TapContext<'_>) {}
}
