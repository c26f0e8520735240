//! The one integration-test binary: scenario parity with the reference hub, bad input, tidiness,
//! and the hub over WebSocket on a simulated network.

mod bad_input;
mod check_cli;
mod faults;
mod fuzz;
mod invariants;
mod loading;
mod names;
mod network;
mod proptest_adapters;
mod report;
mod serve;
mod sims;
mod store;
mod support;
mod tidy;
mod timeline;
mod turmoil;
mod wire;
