//! The integration tests but the scenarios' own (`tests/sims.rs`): scenario parity with the
//! reference hub, bad input, tidiness, and the hub over WebSocket on a simulated network.

mod bad_input;
mod check_cli;
mod expect;
mod faults;
mod fuzz;
mod invariants;
mod loading;
mod names;
mod network;
mod proptest_adapters;
mod report;
mod serve;
mod serve_fair;
mod serve_live;
mod serve_store;
mod store;
mod support;
mod tidy;
mod timeline;
mod turmoil;
mod wire;
