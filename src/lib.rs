//! hubsim: a deterministic simulation and testing harness for the AG2 agent-network hub.
//!
//! Bird's-eye view: [`hub`] is a pure state machine reproducing ag2 1.2.1's hub (registry,
//! channels, adapters, WAL, audit, TTL and expectations): it is fed inputs stamped with the
//! time, hands back outputs and its next deadline, and never reads a clock or does IO.
//! [`server`] serves it over connections, still sans-IO. [`client`] holds the scripted agents,
//! ag2's default notify handler and the remote-mode client. [`sim`] reads scenarios (YAML) and
//! runs them on a backend: in process with the reference runner's scheduling, on the
//! event-driven simulated network, or on turmoil, the two network backends under one harness
//! and one event log, checked by the invariant checkers; it prints the normalised trace in the
//! oracle's exact shape. [`net`] is the only network IO (WebSocket over tokio or turmoil
//! sockets), below [`sim`]. [`json`], [`time`], [`ids`] and [`proto`] are the vocabularies
//! underneath.
//!
//! The types a user needs are re-exported here: [`Scenario`], [`run`] with [`RunOptions`] and
//! [`Backend`], [`Outcome`] and [`NetRun`], the [`Hub`] with its [`HubConfig`], and the
//! [`HubServer`].
//!
//! # Examples
//!
//! Run a scenario on turmoil and read its trace and invariant violations:
//!
//! ```
//! use hubsim::{run, Backend, RunOptions, Scenario};
//!
//! let scenario = Scenario::parse(
//!     r#"
//! agents:
//!   - {name: alice, replies: []}
//!   - {name: bob, replies: ["42"]}
//! steps:
//!   - {op: open, as: c1, by: alice, type: consulting, target: bob}
//!   - {op: send, channel: c1, by: alice, text: "the answer?"}
//! "#,
//!     "ask",
//! )?;
//! let options = RunOptions {
//!     backend: Backend::Turmoil(Default::default()),
//!     seed: 7,
//!     ..RunOptions::default()
//! };
//! let outcome = run(&scenario, &options)?;
//! assert!(outcome.trace.contains("consulting_complete"));
//! assert!(outcome.violations.is_empty() && outcome.mismatches.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Drive the core directly: every call carries the time, and the hub says when it next wants
//! to be woken. Here an invite nobody acks times out and the channel closes:
//!
//! ```
//! use hubsim::hub::{CreateChannel, Created, Output, Passport, Resume};
//! use hubsim::time::{Instant, Now, Timestamp, DEFAULT_EPOCH};
//! use hubsim::{Hub, HubConfig};
//!
//! let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("a valid epoch");
//! let at = |mono: Instant| Now { wall: epoch.plus_micros(mono.0 as i64), mono };
//! // No sweepers: the only timer is the invite-ack timeout.
//! let config = HubConfig {
//!     ttl_sweep_interval_micros: 0,
//!     expectation_sweep_interval_micros: 0,
//!     ..HubConfig::default()
//! };
//! let mut hub = Hub::new(config, Instant(0));
//! let now = at(Instant(0));
//! let alice = hub.register(now, Passport::named("alice"), Resume::default(), None)?;
//! let bob = hub.register(now, Passport::named("bob"), Resume::default(), None)?;
//! let request = CreateChannel {
//!     creator: alice,
//!     manifest_type: "consulting".to_string(),
//!     manifest_version: 1,
//!     participants: vec![bob],
//!     required_acks: None,
//!     ttl: None,
//!     knobs: Default::default(),
//!     intent: None,
//!     labels: Default::default(),
//! };
//! let Created::Pending(channel) = hub.create_channel(now, request)? else {
//!     panic!("bob has not acked yet");
//! };
//! // Nobody is connected, so nothing goes out; the hub's next deadline is the ack timeout.
//! while hub.poll_output().is_some() {}
//! let deadline = hub.poll_timeout().expect("the invite-ack timer");
//! hub.handle_timeout(at(deadline));
//! let failed = std::iter::from_fn(|| hub.poll_output())
//!     .any(|output| matches!(output, Output::OpenResolved { result: Err(_), .. }));
//! assert!(failed, "the open failed");
//! assert!(hub.get_channel(channel)?.is_terminal());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Host the hub in your own turmoil simulation, and talk to it as a WebSocket client would:
//!
//! ```
//! use hubsim::net::{serve, Received, WsClient};
//! use hubsim::time::{Instant, Timestamp, DEFAULT_EPOCH};
//! use hubsim::{Hub, HubConfig, HubServer};
//!
//! let mut sim = turmoil::Builder::new().rng_seed(1).build();
//! sim.host("hub", || async {
//!     let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 8765)).await?;
//!     let server = HubServer::new(Hub::new(HubConfig::default(), Instant(0)));
//!     let epoch = Timestamp::parse_iso(DEFAULT_EPOCH).expect("a valid epoch");
//!     serve(listener, server, epoch).await?;
//!     Ok(())
//! });
//! sim.client("agent", async {
//!     let stream = turmoil::net::TcpStream::connect(("hub", 8765)).await?;
//!     let mut ws = WsClient::connect(stream, "ws://hub:8765/").await?;
//!     let ping = r#"{"kind": "request", "request_id": "r1", "op": "list_agents", "params": {}}"#;
//!     ws.send_text(ping.to_string()).await?;
//!     let Received::Text(answer) = ws.recv().await? else {
//!         panic!("the hub answers in text");
//!     };
//!     assert!(answer.contains(r#""request_id": "r1""#), "{answer}");
//!     Ok(())
//! });
//! sim.run().expect("the simulation runs");
//! ```

pub mod client;
pub mod disk;
pub mod hub;
pub mod ids;
pub mod json;
pub mod net;
pub mod proto;
pub mod report;
pub mod server;
pub mod sim;
pub mod time;

pub use hub::{Hub, HubConfig};
pub use server::HubServer;
pub use sim::scenario::Scenario;
pub use sim::{run, Backend, NetRun, Outcome, RunOptions};
