//! What `SpawnOptions` takes from `std::process::Command`: arguments,
//! environment, working directory, as the child itself observes them.

use anyhow::ensure;
use furrow::{Error, SpawnOptions};
use std::collections::BTreeMap;

/// The child's arguments after `argv[0]`.
#[furrow::remote]
async fn my_args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

/// The child's whole environment.
#[furrow::remote]
async fn my_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

#[furrow::remote]
async fn my_dir() -> String {
    std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|e| format!("error: {e}"))
}

#[furrow_testing::test]
async fn arguments_reach_the_child_and_furrow_ignores_them() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        // Arguments the test harness (libtest) would refuse, or take for a
        // filter, if the child looked at them.
        let opts = SpawnOptions::new().arg("--no-such-flag").args(["two words", "--exact", ""]);
        let p = n.start_actor_with("with-args", opts).await?;
        ensure!(p.run(my_args, ()).await? == ["--no-such-flag", "two words", "--exact", ""]);
        let plain = n.start_actor("without-args").await?;
        ensure!(plain.run(my_args, ()).await?.is_empty());
        Ok(())
    })
    .await
}

#[furrow_testing::test(env = "SPAWNIO_KEEP=kept,SPAWNIO_DROP=dropped,SPAWNIO_OVER=old")]
async fn env_sets_and_removes_variables() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new()
            .env("SPAWNIO_NEW", "new value")
            .envs([("SPAWNIO_OVER", "new"), ("SPAWNIO_MORE", "more")])
            .env_remove("SPAWNIO_DROP")
            // The last word on a name wins.
            .env("SPAWNIO_UNDONE", "set")
            .env_remove("SPAWNIO_UNDONE");
        let p = n.start_actor_with("env", opts).await?;
        let env = p.run(my_env, ()).await?;
        let get = |k: &str| env.get(k).map(String::as_str);
        ensure!(get("SPAWNIO_KEEP") == Some("kept"), "inherited: {env:?}");
        ensure!(get("SPAWNIO_NEW") == Some("new value"));
        ensure!(get("SPAWNIO_OVER") == Some("new"));
        ensure!(get("SPAWNIO_MORE") == Some("more"));
        ensure!(get("SPAWNIO_DROP").is_none());
        ensure!(get("SPAWNIO_UNDONE").is_none());
        // Child mode's variable was consumed by the child.
        ensure!(get("FURROW_SPAWN").is_none());
        Ok(())
    })
    .await
}

#[furrow_testing::test(env = "FURROW_CHAOS=seed=7;frag=0,RUST_LOG=warn,SPAWNIO_KEEP=kept")]
async fn env_clear_leaves_the_user_nothing_and_furrow_its_own() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let opts = SpawnOptions::new()
            .env("SPAWNIO_FORGOTTEN", "set before the clear")
            .env_clear()
            .env("SPAWNIO_AFTER", "set after the clear")
            // The user may override what furrow carries over…
            .env("RUST_LOG", "error")
            // …but not what makes the child a child of this tree.
            .env("FURROW_CHAOS", "seed=1;frag=1");
        let p = n.start_actor_with("clean", opts).await?;
        let env = p.run(my_env, ()).await?;
        let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
        keys.sort();
        ensure!(
            keys == ["FURROW_CHAOS", "FURROW_SECRET_FILE", "RUST_LOG", "SPAWNIO_AFTER"],
            "the child's environment: {env:?}"
        );
        ensure!(env["FURROW_CHAOS"] == "seed=7;frag=0", "the tree's chaos configuration: {env:?}");
        ensure!(env["RUST_LOG"] == "error");
        ensure!(env["FURROW_SECRET_FILE"] == std::env::var("FURROW_SECRET_FILE")?);
        // And it works as a furrow actor: it starts children of its own.
        ensure!(p.run(start_a_grandchild, ()).await? == "grandchild");
        Ok(())
    })
    .await
}

#[furrow::remote]
async fn whoami() -> String {
    furrow::local_aid().map(|a| a.name).unwrap_or_default()
}

/// Starts a child (with an empty environment too) and asks its name.
#[furrow::remote]
async fn start_a_grandchild() -> furrow::Result<String> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("grandchild", SpawnOptions::new().env_clear()).await?;
        p.run(whoami, ()).await
    })
    .await
}

#[furrow_testing::test]
async fn current_dir_is_the_childs_working_directory() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().canonicalize()?;
    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("elsewhere", SpawnOptions::new().current_dir(&dir)).await?;
        ensure!(p.run(my_dir, ()).await? == dir.display().to_string());
        // It serves, registers and starts children from there like any actor.
        ensure!(p.run(start_a_grandchild, ()).await? == "grandchild");
        let here = n.start_actor("here").await?;
        ensure!(here.run(my_dir, ()).await? == std::env::current_dir()?.display().to_string());
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn a_bad_current_dir_is_a_clear_spawn_error() -> anyhow::Result<()> {
    let start = |dir: &'static str| {
        furrow::open_nursery(async move |n| {
            n.start_actor_with("lost", SpawnOptions::new().current_dir(dir)).await.map(drop)
        })
    };
    let e = start("/nonexistent/furrow-dir").await.expect_err("no such directory");
    let Error::Spawn { lifecycle, .. } = &e else { anyhow::bail!("{e:?}") };
    ensure!(lifecycle.is_empty(), "no process was started: {lifecycle:?}");
    ensure!(
        e.to_string()
            == "cannot start actor \"lost\": its working directory /nonexistent/furrow-dir: \
                No such file or directory (os error 2)",
        "{e}"
    );
    let e = start("/dev/null").await.expect_err("not a directory");
    ensure!(e.to_string().ends_with("its working directory /dev/null is not a directory"), "{e}");
    Ok(())
}
