//! The vocabulary shared by the hub, its clients and (later) the wire: envelopes, event types
//! and errors. Nothing here does IO or keeps state.

pub mod envelope;
pub mod error;
pub mod frame;

pub use envelope::{Envelope, EventType};
pub use error::{ErrorKind, HubError};
