//! [`SharedHub`]: a hub server that the owner loop of [`serve_shared`](super::serve_shared)
//! and code on the same thread (a turmoil harness) both reach.

use crate::hub::Refused;
use crate::ids::EndpointId;
use crate::server::HubServer;
use crate::time::Now;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Notify;

/// A [`HubServer`] shared between the owner loop of [`serve_shared`](super::ws::serve_shared) and code on the same
/// thread, with the hub clock they both read. Cloning gives another handle to the same hub.
#[derive(Clone)]
pub struct SharedHub {
    inner: Rc<SharedInner>,
}

struct SharedInner {
    server: RefCell<HubServer>,
    clock: Box<dyn Fn() -> Now>,
    /// Set by [`SharedHub::with`], cleared once the owner sent what the call produced.
    unrouted: Cell<bool>,
    changed: Notify,
    inbound: Cell<u64>,
    outbound: Cell<u64>,
    /// Connections [`SharedHub::close`] asked the owner to drop.
    closing: RefCell<Vec<EndpointId>>,
}

impl std::fmt::Debug for SharedHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHub")
            .field("inbound", &self.inner.inbound.get())
            .field("outbound", &self.inner.outbound.get())
            .finish_non_exhaustive()
    }
}

impl SharedHub {
    /// Shares `server`; `clock` gives the hub clock (its `mono` must move with tokio's time).
    pub fn new(server: HubServer, clock: impl Fn() -> Now + 'static) -> SharedHub {
        SharedHub {
            inner: Rc::new(SharedInner {
                server: RefCell::new(server),
                clock: Box::new(clock),
                unrouted: Cell::new(false),
                changed: Notify::new(),
                inbound: Cell::new(0),
                outbound: Cell::new(0),
                closing: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The hub clock now.
    pub fn now(&self) -> Now {
        (self.inner.clock)()
    }

    /// Runs `f` on the server and has the owner loop send what it produced.
    pub fn with<R>(&self, f: impl FnOnce(&mut HubServer, Now) -> R) -> R {
        let now = self.now();
        let result = f(&mut self.inner.server.borrow_mut(), now);
        self.inner.unrouted.set(true);
        self.inner.changed.notify_one();
        result
    }

    /// Has the owner loop drop a connection, as a peer that stopped answering pings is
    /// dropped: the server forgets it and its socket is closed.
    pub fn close(&self, endpoint: EndpointId) {
        self.inner.closing.borrow_mut().push(endpoint);
        self.inner.changed.notify_one();
    }

    /// Reads the server.
    pub fn read<R>(&self, f: impl FnOnce(&HubServer) -> R) -> R {
        f(&self.inner.server.borrow())
    }

    /// The requests the hub refused since the last call, when the server keeps them
    /// ([`HubServer::keep_refused`]). Unlike [`SharedHub::with`], this does not wake the owner
    /// loop: taking them produces nothing to send.
    pub fn take_refused(&self) -> Vec<Refused> {
        let mut server = self.inner.server.borrow_mut();
        std::iter::from_fn(|| server.poll_refused()).collect()
    }

    /// Whether something [`SharedHub::with`] produced still waits for the owner loop.
    pub fn unrouted(&self) -> bool {
        self.inner.unrouted.get()
    }

    /// Messages the owner received from connections and handed to the server.
    pub fn inbound(&self) -> u64 {
        self.inner.inbound.get()
    }

    /// Messages the owner handed to connection writers.
    pub fn outbound(&self) -> u64 {
        self.inner.outbound.get()
    }
}

impl Seat for SharedHub {
    fn with<R>(&mut self, f: impl FnOnce(&mut HubServer, Now) -> R) -> R {
        let now = self.now();
        f(&mut self.inner.server.borrow_mut(), now)
    }

    fn deadline(&mut self) -> Option<tokio::time::Instant> {
        let at = self.inner.server.borrow().poll_timeout()?;
        let now = self.now().mono;
        tokio::time::Instant::now().checked_add(Duration::from_micros(at.0.saturating_sub(now.0)))
    }

    fn changed(&self) -> impl Future<Output = ()> {
        self.inner.changed.notified()
    }

    fn routed(&self) {
        self.inner.unrouted.set(false);
    }

    fn count(&self, inbound: bool) {
        let counter = if inbound {
            &self.inner.inbound
        } else {
            &self.inner.outbound
        };
        counter.set(counter.get() + 1);
    }

    fn take_closing(&self) -> Vec<EndpointId> {
        std::mem::take(&mut *self.inner.closing.borrow_mut())
    }
}

/// Where the owner loop keeps the server and reads the hub clock.
pub(crate) trait Seat {
    /// Runs `f` on the server with the hub clock's current reading.
    fn with<R>(&mut self, f: impl FnOnce(&mut HubServer, Now) -> R) -> R;

    /// The tokio instant of the server's next deadline.
    fn deadline(&mut self) -> Option<tokio::time::Instant>;

    /// Resolves when code outside the owner changed the server.
    fn changed(&self) -> impl Future<Output = ()>;

    /// The owner has sent everything the server produced.
    fn routed(&self) {}

    /// Counts a message from a connection (`inbound`) or to one.
    fn count(&self, _inbound: bool) {}

    /// Connections that code outside the owner asked to drop (without a close code).
    fn take_closing(&self) -> Vec<EndpointId> {
        Vec::new()
    }
}
