//! [`Durability`]: the hook through which the owner loop of
//! [`serve_durable`](super::ws::serve_durable) lets a store keep the hub's durable state. The
//! loop knows nothing of files; `hubsim serve --store` passes `disk::DiskSync`.

use crate::hub::store::Store;
use crate::server::HubServer;
use std::io;

/// What the owner loop calls so the hub's durable state reaches a store. Every call runs on the
/// owner's task, between two events, with the server at rest.
pub trait Durability: Send {
    /// The owner handled an event (a message, a timer, a connection opened or ended). The
    /// outputs it produced have not left yet: a store that writes here makes every answer
    /// durable before it is sent.
    fn handled(&mut self, server: &HubServer);

    /// When [`Durability::flush`] is due (a timed sync, a retry); `None`: nothing pending.
    fn deadline(&self) -> Option<tokio::time::Instant>;

    /// The deadline passed: write what is pending.
    fn flush(&mut self, server: &HubServer);

    /// The hub is stopping (the shutdown future resolved, every connection told): write
    /// everything.
    ///
    /// # Errors
    /// The store could not be written; the owner loop returns the error.
    fn shutdown(&mut self, server: &HubServer) -> io::Result<()>;

    /// The hub crashed (a `crash` fault of `hubsim serve --faults`): what it restarts from,
    /// read back from the store with the id floor it needs, and nothing written since is kept
    /// in mind. `None`: the store cannot be read back, and the owner restarts the hub from its
    /// own snapshot taken at the crash.
    fn crashed(&mut self) -> Option<io::Result<(Store, u128)>> {
        None
    }
}
