//! hubsim: a deterministic simulation and testing harness for the AG2 agent-network hub.
//!
//! Bird's-eye view: [`hub`] is a pure state machine reproducing ag2 1.2.1's hub (registry,
//! channels, adapters, WAL, audit, TTL and expectations). [`client`] holds the scripted agents
//! and ag2's default notify-handler logic. [`sim`] reads scenarios (YAML), drives hub and agents
//! in process with the reference runner's scheduling, and prints the normalised trace in the
//! oracle's exact shape. [`json`], [`time`] and [`ids`] are the small vocabularies underneath.
//!
//! Module map:
//! - `json`: Python-compatible JSON printing, `repr()`, truthiness.
//! - `time`: hub clock ([`time::Timestamp`]) and monotonic clock ([`time::Instant`]).
//! - `ids`: 32-hex id newtypes and the one id counter.
//! - `proto`: envelopes, event types, errors.
//! - `hub`: the sans-IO core.
//! - `client`: scripted agents and the default handler's turn logic.
//! - `server`: the hub served over connections, text frames in and out (sans-IO).
//! - `sim`: scenarios, the in-process driver, traces.
//! - `net`: the only network IO: the server over WebSocket on tokio or turmoil sockets, and a
//!   WebSocket client helper.

pub mod client;
pub mod hub;
pub mod ids;
pub mod json;
pub mod net;
pub mod proto;
pub mod server;
pub mod sim;
pub mod time;
