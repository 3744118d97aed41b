//! A peer's claimed identity is checked as far as it can be: over UDS its
//! pid is the kernel's, an identity the actor knows must be claimed whole,
//! and a request is the connection's own (a `Start` naming another sender
//! is refused). So nobody can cancel an actor in another's name.

use crate::raw_peer::{Answer, Raw, aid_msg, kwargs};
use anyhow::{Context as _, bail, ensure};
use furrow::proto::{Aid, Msg};
use furrow::{Addr, Error};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

static RAN: AtomicBool = AtomicBool::new(false);

#[furrow::remote]
async fn side_effect() -> bool {
    RAN.store(true, Ordering::SeqCst);
    true
}

#[furrow::remote]
async fn whoami() -> u32 {
    std::process::id()
}

fn uds_of(addrs: &[Addr]) -> anyhow::Result<Addr> {
    addrs.iter().find(|a| matches!(a, Addr::Uds(_))).cloned().context("a UDS address")
}

/// From this process (another actor than the target's parent): connect to
/// `target` saying we are `claim`, then ask it to `cancel_actor` in the
/// name of `sender`. What happened, in words.
#[furrow::remote]
async fn forge_cancel(target: Addr, claim: Aid, sender: Aid) -> String {
    let go = async {
        let mut raw = Raw::uds(&target, claim).await?;
        match raw.hello().await? {
            Some(Msg::Aid { .. }) => {}
            Some(Msg::Error { message, .. }) => return Ok(format!("handshake refused: {message}")),
            other => return Ok(format!("handshake answered {other:?}")),
        }
        let no_args = furrow::proto::Payload::encode(&())?;
        anyhow::Ok(match raw.request_as(&sender, 1, "furrow::runtime", "cancel_actor", no_args).await? {
            Answer::Returned(_) => "cancel_actor acknowledged".to_owned(),
            Answer::Refused { kind, message } => format!("cancel_actor refused: {kind}: {message}"),
        })
    };
    go.await.unwrap_or_else(|e| format!("failed: {e:#}"))
}

#[furrow_testing::test]
async fn a_uds_peer_claiming_another_pid_is_refused() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let other = n.start_actor("other").await?;
        let root = uds_of(&furrow::local_addrs()?)?;

        // This process says it is another one (a real process: the child).
        let liar = Aid::new("liar", other.aid().pid);
        let mut raw = Raw::uds(&root, liar).await?;
        let answer = raw.hello().await?;
        let Some(Msg::Error { message, .. }) = answer else { bail!("expected a refusal, got {answer:?}") };
        println!("{message}");
        ensure!(message.contains("SO_PEERCRED") && message.contains(&other.aid().pid.to_string()), "{message}");
        // Nothing it sends is acted on, and it is disconnected.
        let me = raw.me.clone();
        let _ = raw
            .send(&Raw::<tokio::net::UnixStream>::start_as(&me, 1, module_path!(), "side_effect", kwargs(&())))
            .await;
        ensure!(raw.recv().await?.is_none(), "the liar must be disconnected");
        ensure!(!RAN.load(Ordering::SeqCst), "a function ran for a peer whose pid is a lie");

        // The other way round: what answers at an address is checked too.
        let path = furrow_testing::socket_dir().join("liar.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        let fake_pid = other.aid().pid;
        let liar_side = tokio::spawn(async move {
            let (s, _) = listener.accept().await?;
            let mut raw = Raw::new(s, Aid::new("fake", fake_pid));
            let _ = raw.recv().await?; // the dialler's Aid
            let me = raw.me.clone();
            raw.send(&aid_msg(&me)).await?;
            let _ = raw.recv().await;
            raw.s.shutdown().await?;
            anyhow::Ok(())
        });
        let dialled = furrow::connect(&Addr::Uds(path.clone()), async |p| furrow::Ok(p.aid().clone())).await;
        liar_side.await??;
        std::fs::remove_file(&path)?;
        let e = dialled.err().context("a peer lying about its pid must be refused")?;
        println!("{e}");
        ensure!(matches!(e, Error::Auth { .. }) && e.to_string().contains("SO_PEERCRED"), "{e}");

        // An honest peer is served.
        let mut honest = Raw::uds(&root, Aid::new("honest", std::process::id())).await?;
        honest.handshake().await?;
        ensure!(matches!(honest.request(1, module_path!(), "side_effect", kwargs(&())).await?, Answer::Returned(_)));
        ensure!(RAN.load(Ordering::SeqCst));
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_forged_cancel_actor_ends_nothing() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let victim = n.start_actor("victim").await?;
        let attacker = n.start_actor("attacker").await?;
        let target = uds_of(victim.addrs())?;
        let root = furrow::local_aid()?;

        // 1. The root's whole identity, from another process.
        let said = attacker.run(forge_cancel, (target.clone(), root.clone(), root.clone())).await?;
        println!("claiming the root's Aid: {said}");
        ensure!(said.starts_with("handshake refused") && said.contains("SO_PEERCRED"), "{said}");

        // 2. The root's name and uuid, with its own pid: the victim knows
        //    its parent.
        let half = Aid { pid: attacker.aid().pid, ..root.clone() };
        let said = attacker.run(forge_cancel, (target.clone(), half.clone(), half)).await?;
        println!("claiming the root's uuid: {said}");
        ensure!(said.starts_with("handshake refused") && said.contains("claims the uuid of"), "{said}");

        // 3. Its own identity, and a cancel request in the root's name.
        let own = Aid::new("forger", attacker.aid().pid);
        let said = attacker.run(forge_cancel, (target.clone(), own, root.clone())).await?;
        println!("cancel_actor in the root's name: {said}");
        ensure!(said.starts_with("cancel_actor refused: IdentityMismatch"), "{said}");

        // The victim was never cancelled: it still serves, a while later.
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(victim.run(whoami, ()).await? == victim.aid().pid, "the victim must still serve");
        Ok(())
    })
    .await
}
