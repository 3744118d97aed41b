//! A long-running service that other programs find by name.
//!
//! ```text
//! cargo run --example service_daemon     # leave it running; Ctrl-C stops it
//! cargo run --example service_client     # from another terminal, as often as you like
//! cargo run -p furrow-cli -- tree        # what is running, and who started whom
//! ```
//!
//! The daemon starts one actor, `counter-service`, which serves the
//! functions of `service_api` (`counter::add`, `counter::get`). Its root
//! joins the system's registrar at the default registry address
//! (`uds://<socket dir>/registry.sock`), or becomes it when no other
//! furrow program runs; either way `counter-service` is registered by name.
//! The client is a separate program: it joins the same registry and finds
//! the service with `furrow::wait_for_actor`. Ctrl-C cancels the tree: the
//! service actor is ended and reaped and every socket file removed.

#[path = "service_api/mod.rs"]
mod api;

use furrow::Error;

#[furrow::main]
async fn main() -> anyhow::Result<()> {
    let registry = furrow::Config::default().resolved_registry()?;
    let r = furrow::open_nursery(async |n| {
        let service = n.start_actor("counter-service").await?;
        let addrs: Vec<String> = service.addrs().iter().map(ToString::to_string).collect();
        println!("{} serves {} and {}", service.aid(), api::add.name(), api::get.name());
        println!("  listening on {}", addrs.join(", "));
        let registrar = furrow::list_actors().await?.into_iter().find(|a| a.registrar);
        let registrar = registrar.map_or_else(|| "?".to_owned(), |a| a.aid.to_string());
        let registry: Vec<String> = registry.iter().map(ToString::to_string).collect();
        println!("  registered at {} (registrar: {registrar})", registry.join(", "));
        println!("run the client:  cargo run --example service_client");
        println!("look at it:      cargo run -p furrow-cli -- tree");
        println!("stop with Ctrl-C");
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    match r {
        // Ctrl-C (or SIGTERM) cancelled the tree: the way this daemon ends.
        Err(Error::ActorCancelled { reason, .. }) => println!("daemon: stopped ({reason}); counter-service reaped"),
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    Ok(())
}
