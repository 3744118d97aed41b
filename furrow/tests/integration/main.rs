//! furrow's integration tests: real processes over real sockets.
//!
//! One harness binary (`harness = false`): its `main` enters child mode
//! first (children of these tests are this binary), then runs each test in
//! its own process with leak checks (see `furrow-testing`). Modules are
//! named `area_topic`.

// Tests assert with unwrap; the lint is for library code a peer can reach.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod blocking_api;
mod chaos_found;
mod chaos_transport;
mod common;
mod context_cancel;
mod context_failure;
mod context_flow;
mod context_stream;
mod discovery_listing;
mod discovery_netns;
mod discovery_ownership;
mod discovery_registry;
mod discovery_scale;
mod discovery_scope;
mod errors_relay;
mod errors_remote;
mod ipc_bad_input;
mod ipc_limits;
mod ipc_tcp;
mod observe_dump;
mod observe_logging;
mod observe_stats;
mod pool_map;
mod raw_peer;
mod registry_wire;
mod rpc_call;
mod rpc_fragmented;
mod rpc_oversized;
mod security_auth;
mod security_flood;
mod security_identity;
mod security_secret_file;
mod spawn_frozen_neighbour;
mod spawn_launcher;
mod spawn_lifecycle;
mod spawn_names;
mod spawn_options;
mod spawn_output;
mod spawn_ssh;
mod supervise_ladder;
mod supervise_lifecycle;
mod supervise_one_cancels_all;
mod supervise_races;
mod supervise_restart;
mod supervise_signals;
mod testing_harness;

fn main() {
    furrow_testing::main()
}
