//! A registry entry belongs to the connection that registered it: nobody
//! else can replace or remove it, and an impostor's disconnection takes
//! only its own entries with it.

use crate::raw_peer::{Answer, Raw, kwargs};
use crate::registry_wire::{Info, REGISTRY, Register, Unregister};
use anyhow::{Context as _, bail, ensure};
use furrow::proto::Aid;
use furrow::{Addr, ErrorKind};
use std::time::{Duration, Instant};

#[furrow::remote]
async fn whoami() -> u32 {
    std::process::id()
}

/// The addresses the registry lists for `uuid` (empty: not listed).
async fn listed(uuid: uuid::Uuid) -> anyhow::Result<Vec<Addr>> {
    Ok(furrow::query_actors(uuid).await?.into_iter().next().map(|i| i.addrs).unwrap_or_default())
}

#[furrow_testing::test]
async fn only_the_registering_connection_may_change_or_remove_an_entry() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let real = n.start_actor("real").await?;
        let real_addrs = listed(real.aid().uuid).await?;
        ensure!(!real_addrs.is_empty(), "the real actor is registered once start_actor returns");

        // An impostor (any program of the system: it got past the socket
        // directory, so it passes the uid check) talks to the registrar.
        let registrar = furrow::local_addrs()?.into_iter().find(|a| matches!(a, Addr::Uds(_))).context("uds")?;
        let mut imp = Raw::uds(&registrar, Aid::new("impostor", std::process::id())).await?;
        imp.handshake().await?;
        let lure = Addr::Uds(furrow_testing::socket_dir().join("lure.sock"));

        // 1. It registers the real actor's uuid, pointing at its own address.
        let hijack = Register { info: Info { aid: real.aid().clone(), addrs: vec![lure.clone()] } };
        let (kind, why) = imp.request(1, REGISTRY, "register", kwargs(&hijack)).await?.refusal()?;
        println!("register under another's uuid: {kind}: {why}");
        ensure!(kind == ErrorKind::RegistrationRefused && why.contains("registered by another connection"), "{why}");
        ensure!(listed(real.aid().uuid).await? == real_addrs, "the real entry must be untouched");

        // 2. It unregisters the real actor.
        let gone = Unregister { uuid: real.aid().uuid };
        let (kind, why) = imp.request(3, REGISTRY, "unregister", kwargs(&gone)).await?.refusal()?;
        println!("unregister another's entry: {kind}: {why}");
        ensure!(kind == ErrorKind::RegistrationRefused && why.contains("registered by another connection"), "{why}");
        ensure!(listed(real.aid().uuid).await? == real_addrs, "the real entry must still be listed");

        // Its own entries are its own: registered, changed, and dropped
        // with its connection.
        let own = Aid::new("impostor-own", std::process::id());
        let mine = |addrs| Register { info: Info { aid: own.clone(), addrs } };
        ensure!(matches!(
            imp.request(5, REGISTRY, "register", kwargs(&mine(vec![lure.clone()]))).await?,
            Answer::Returned(_)
        ));
        let moved = Addr::Uds(furrow_testing::socket_dir().join("moved.sock"));
        ensure!(matches!(
            imp.request(7, REGISTRY, "register", kwargs(&mine(vec![moved.clone()]))).await?,
            Answer::Returned(_)
        ));
        ensure!(listed(own.uuid).await? == vec![moved], "an entry's owner may change it");

        // 3. It disconnects: its own entry goes, the real actor stays.
        drop(imp);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !listed(own.uuid).await?.is_empty() {
            ensure!(Instant::now() < deadline, "the impostor's own entry outlived its connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ensure!(listed(real.aid().uuid).await? == real_addrs, "the real actor vanished with the impostor");
        let pid = furrow::find_actor(real.aid().uuid, async |p| match p {
            Some(p) => Ok(p.run(whoami, ()).await?),
            None => bail!("the real actor is no longer found"),
        })
        .await?;
        ensure!(pid == real.aid().pid);
        let by_name = furrow::find_actor("real", async |p| furrow::Ok(p.map(|p| p.aid().clone()))).await?;
        ensure!(by_name.as_ref() == Some(real.aid()), "{by_name:?}");
        Ok(())
    })
    .await
}
