//! The counter service's remote functions, shared by the `service_daemon`
//! and `service_client` examples (each includes this file with
//! `#[path = "service_api/mod.rs"] mod api;`).
//!
//! The two programs are different binaries, and a remote function's
//! default wire name starts with its binary's crate name
//! (`service_daemon::api::add` is not `service_client::api::add`). So every
//! function one program serves and another calls has an explicit wire
//! name, the same in both: that name is the service's API.

use std::sync::Mutex;

/// The counter. It lives in whichever actor serves the calls (the
/// daemon's `counter-service` actor), so every client sees the same one.
static COUNTER: Mutex<i64> = Mutex::new(0);

/// Add `n` to the counter; returns the new value.
#[furrow::remote(name = "counter::add")]
pub(crate) async fn add(n: i64) -> i64 {
    let mut c = COUNTER.lock().unwrap_or_else(|p| p.into_inner());
    *c = c.saturating_add(n);
    *c
}

/// The counter's value.
#[furrow::remote(name = "counter::get")]
pub(crate) async fn get() -> i64 {
    *COUNTER.lock().unwrap_or_else(|p| p.into_inner())
}
