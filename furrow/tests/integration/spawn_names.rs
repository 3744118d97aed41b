//! Actor names at the limits (issue 14, defect 10): refused up front, with
//! the rule and the length, before any process starts. Before, a 4 KB name
//! failed with "exited with exit code 4 before its handshake" (the child's
//! `Aid` frame was over the 4 KiB a peer may send before its handshake;
//! only a WARN said so) and a 200 KB one with "Argument list too long".

use anyhow::{bail, ensure};
use furrow::{Error, MAX_ACTOR_NAME_LEN, SpawnOptions};

#[furrow::remote]
async fn my_name() -> String {
    furrow::local_aid().map(|a| a.name).unwrap_or_default()
}

/// The reason of a start refused for its name, checking that nothing was
/// started for it.
fn refused(r: furrow::Result<impl std::fmt::Debug>) -> anyhow::Result<(String, String)> {
    match r {
        Err(Error::Spawn { name, reason, lifecycle }) => {
            ensure!(lifecycle.is_empty(), "no process was to be started: {lifecycle:?}");
            ensure!(name.len() < 100, "the error shows a short form of the name: {} bytes", name.len());
            Ok((name, reason))
        }
        other => bail!("expected a Spawn error, got {other:?}"),
    }
}

#[furrow_testing::test]
async fn over_long_names_are_refused_with_the_limit_and_the_length() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        for len in [MAX_ACTOR_NAME_LEN + 1, 4096, 200_000] {
            let (name, reason) = refused(n.start_actor("a".repeat(len)).await)?;
            ensure!(
                reason == format!("an actor name is at most 255 bytes, and this one is {len} bytes"),
                "{len}: {reason}"
            );
            ensure!(name == format!("{}… ({len} bytes)", "a".repeat(32)), "{name}");
        }
        // The longest name works, all the way through the handshake.
        let longest = "é".repeat(MAX_ACTOR_NAME_LEN / 2) + "x";
        ensure!(longest.len() == MAX_ACTOR_NAME_LEN);
        let p = n.start_actor(longest.clone()).await?;
        ensure!(p.run(my_name, ()).await? == longest);
        // Multi-byte characters count in bytes.
        let (_, reason) = refused(n.start_actor("é".repeat(128)).await)?;
        ensure!(reason.ends_with("this one is 256 bytes"), "{reason}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn an_over_long_run_in_actor_name_fails_the_nursery_clearly() -> anyhow::Result<()> {
    let r =
        furrow::open_nursery(async |n| n.run_in_actor_with("r".repeat(4096), SpawnOptions::new(), my_name, ()).await)
            .await;
    let (_, reason) = refused(r)?;
    ensure!(reason.contains("at most 255 bytes") && reason.contains("4096 bytes"), "{reason}");
    Ok(())
}

#[furrow_testing::test]
async fn empty_names_and_control_characters_are_refused() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let (_, reason) = refused(n.start_actor("").await)?;
        ensure!(reason == "an actor name must not be empty", "{reason}");
        for (name, shown) in [
            ("nul\0byte", "'\\0' at byte 3"),
            ("two\nlines", "'\\n' at byte 3"),
            ("esc\x1b[31m", "'\\u{1b}' at byte 3"),
        ] {
            let (_, reason) = refused(n.start_actor(name).await)?;
            ensure!(reason == format!("an actor name must not contain control characters ({shown})"), "{reason}");
        }
        // Anything else printable is fine: spaces, punctuation, any script.
        let p = n.start_actor("worker 1: données/日本").await?;
        ensure!(p.run(my_name, ()).await? == "worker 1: données/日本");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
fn a_root_with_a_bad_name_does_not_start() -> anyhow::Result<()> {
    let dir = furrow_testing::socket_dir();
    for (name, want) in [
        ("r".repeat(4096), "cannot start actor \"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr… (4096 bytes)\": an actor name is at most 255 bytes, and this one is 4096 bytes".to_owned()),
        ("root\nFAKE LOG LINE".to_owned(), "cannot start actor \"root\\nFAKE LOG LINE\": an actor name must not contain control characters ('\\n' at byte 4)".to_owned()),
        (String::new(), "cannot start actor \"\": an actor name must not be empty".to_owned()),
    ] {
        match furrow::blocking::Runtime::without_signal_handling(furrow::Config::new(name).socket_dir(dir)) {
            Err(Error::Usage(m)) => ensure!(m == want, "{m}"),
            Err(other) => bail!("expected a Usage error, got {other:?}"),
            Ok(_) => bail!("a root with a bad name started"),
        }
    }
    Ok(())
}
