//! The hub over real and simulated networks: an IO driver around the sans-IO
//! [`HubServer`](crate::server::HubServer), and a WebSocket client helper.
//!
//! This is the only module that does network IO. It owns sockets, tasks and the clock; the hub
//! and the server stay pure and are fed text messages stamped with [`Now`](crate::time::Now).
//! The same code runs over `tokio::net` (the `hubsim serve` command) and `turmoil::net` (the
//! simulated network of the tests): everything is generic over `AsyncRead + AsyncWrite`
//! streams, and [`Listener`] is the one seam between the two.

pub mod client;
pub mod durable;
pub mod shared;
pub mod tap;
pub mod ws;

pub use client::{Received, WsClient};
pub use durable::Durability;
pub use shared::SharedHub;
pub use tap::{Command, Ended, Pass, Tap, TapContext};
pub use ws::{
    check_exposure, serve, serve_durable, serve_extended, serve_shared, serve_tapped, serve_with,
    Extras, Listener, ServeOptions,
};
