//! A client of `service_daemon`: a separate program that finds the
//! `counter-service` actor by name and calls it.
//!
//! ```text
//! cargo run --example service_daemon     # first, in another terminal
//! cargo run --example service_client     # the counter keeps growing from run to run
//! ```
//!
//! `furrow::wait_for_actor` waits until an actor of that name is
//! registered, connects to it, and runs the body with a portal to it; the
//! calls use the handles of `service_api`, whose explicit wire names match
//! the daemon's. It would wait forever for a daemon that is not running, so
//! it is bounded here.

#[path = "service_api/mod.rs"]
mod api;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let calls = furrow::wait_for_actor("counter-service", async |p| {
        println!("found {} at {}", p.aid(), p.addrs().iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
        for n in [1, 2, 3] {
            let now = p.run(api::add, (n,)).await?;
            println!("  add({n}) -> {now}");
        }
        p.run(api::get, ()).await
    });
    match tokio::time::timeout(WAIT, calls).await {
        Ok(total) => println!("counter is now {}", total?),
        Err(_) => anyhow::bail!(
            "no actor named counter-service appeared within {WAIT:?}: is the daemon running? \
             (cargo run --example service_daemon)"
        ),
    }
    Ok(())
}
