//! Logging across a tree: `RUST_LOG` reaches children, every line names
//! its actor, and a line logged inside a remote function or a context
//! carries the actor span (name, uuid, pid) and the dialog's span (cid,
//! function, peer, side).
//!
//! The tree runs as a separate root process (a scenario) whose stderr the
//! test reads: children inherit their root's stderr, so every actor's lines
//! arrive there.

use anyhow::{Context as _, ensure};
use furrow::Context;
use std::time::Duration;

#[furrow::remote]
async fn say_in_call(word: String) -> u32 {
    tracing::info!("in a call: {word}");
    std::process::id()
}

#[furrow::context]
async fn say_in_context(ctx: Context) -> furrow::Result<()> {
    tracing::info!("in a context");
    ctx.started(&std::process::id()).await
}

/// A root, one child `talker`; the child logs at INFO in a call and in a
/// context. Prints `talker PID` and `root PID`.
#[furrow_testing::test(scenario)]
async fn scenario_talker() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor("talker").await?;
        let pid = p.run(say_in_call, ("hello".to_owned(),)).await?;
        p.open_context(say_in_context, (), async |_ctx, _pid: u32| furrow::Ok(())).await?;
        tracing::info!("root after the calls");
        println!("talker {pid}");
        println!("root {}", std::process::id());
        Ok(())
    })
    .await
}

/// Run the scenario with `RUST_LOG=rust_log`; its stdout and stderr.
async fn run_talker(rust_log: &str) -> anyhow::Result<(String, String)> {
    let mut cmd = furrow_testing::scenario("scenario_talker");
    cmd.env("RUST_LOG", rust_log).stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.context("scenario hung")??;
    let (stdout, stderr) = (String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?);
    ensure!(out.status.success(), "scenario: {}\n{stdout}\n--- stderr:\n{stderr}", out.status);
    Ok((stdout, stderr))
}

fn pid_of(stdout: &str, who: &str) -> anyhow::Result<u32> {
    let line = stdout.lines().find(|l| l.starts_with(&format!("{who} "))).with_context(|| stdout.to_owned())?;
    Ok(line[who.len() + 1..].trim().parse()?)
}

#[furrow_testing::test]
async fn rust_log_reaches_children_and_lines_carry_their_spans() -> anyhow::Result<()> {
    let (stdout, stderr) = run_talker("info").await?;
    let talker = pid_of(&stdout, "talker")?;
    let root = pid_of(&stdout, "root")?;

    // INFO is enabled only through RUST_LOG (the default is warn), in a
    // process the root spawned: it reached the child.
    let call = stderr.lines().find(|l| l.contains("in a call: hello")).with_context(|| stderr.clone())?;
    // The actor, by the prefix and by its span.
    ensure!(call.starts_with(&format!("[talker@{talker}] ")), "{call}");
    ensure!(call.contains("actor{"), "{call}");
    ensure!(call.contains(&format!("pid={talker}")), "{call}");
    ensure!(call.contains("name=\"talker\"") || call.contains("name=talker"), "{call}");
    ensure!(call.contains("uuid="), "{call}");
    // The dialog: a plain call, served here, for the root.
    ensure!(call.contains(":call{"), "{call}");
    ensure!(call.contains("cid="), "{call}");
    ensure!(call.contains("say_in_call"), "{call}");
    ensure!(call.contains("side=\"callee\"") || call.contains("side=callee"), "{call}");
    ensure!(call.contains("peer="), "{call}");

    let ctx = stderr.lines().find(|l| l.contains("in a context")).with_context(|| stderr.clone())?;
    ensure!(ctx.starts_with(&format!("[talker@{talker}] ")), "{ctx}");
    ensure!(ctx.contains("actor{") && ctx.contains(&format!("pid={talker}")), "{ctx}");
    ensure!(ctx.contains(":context{") && ctx.contains("cid=") && ctx.contains("say_in_context"), "{ctx}");

    // The root's own line names the root.
    let own = stderr.lines().find(|l| l.contains("root after the calls")).with_context(|| stderr.clone())?;
    ensure!(own.starts_with('[') && own.contains(&format!("@{root}] ")), "{own}");
    ensure!(own.contains("actor{") && own.contains(&format!("pid={root}")), "{own}");

    // Without RUST_LOG saying so, the child says nothing at INFO.
    let (_, quiet) = run_talker("warn").await?;
    ensure!(!quiet.contains("in a call") && !quiet.contains("in a context"), "{quiet}");
    println!("{call}\n{ctx}\n{own}");
    Ok(())
}
