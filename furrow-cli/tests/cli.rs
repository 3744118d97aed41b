//! The `furrow` command against a live system.
//!
//! Each test runs in its own process (the `furrow-testing` harness) whose
//! root actor, `test-root`, is the registrar of
//! `uds://<socket dir>/registry.sock`; the tests start actors under it,
//! run the real `furrow` binary, and check what it prints against what the
//! test knows (names, pids, parents) and against the test's own
//! `furrow::list_actors()`. The harness then checks that nothing leaked:
//! no process, no socket file (the command's own included), no fd.

// Tests assert with unwrap; the lint is for library code a peer can reach.
#![allow(clippy::unwrap_used)]

use anyhow::{Context as _, ensure};
use furrow::{ActorInfo, Context};
use std::process::Output;
use std::time::Duration;

fn main() {
    furrow_testing::main()
}

/// Starts a child `leaf` in its own nursery, reports the leaf's pid, and
/// keeps it until the opener cancels this context.
#[furrow::context]
async fn with_leaf(ctx: Context) -> furrow::Result<()> {
    furrow::open_nursery(async |n| {
        let leaf = n.start_actor("leaf").await?;
        ctx.started(&leaf.aid().pid).await?;
        ctx.cancelled().await;
        Ok(())
    })
    .await
}

/// Run the `furrow` binary with `args` against this test's socket
/// directory (and no registry from the environment).
async fn furrow_cli(args: &[&str]) -> anyhow::Result<Output> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_furrow"))
        .arg("--socket-dir")
        .arg(furrow_testing::socket_dir())
        .args(args)
        .env_remove(furrow::REGISTRY_ENV)
        .env_remove(furrow::SOCKET_DIR_ENV)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .with_context(|| format!("furrow {args:?} hung"))?
        .map_err(Into::into)
}

/// Its stdout, after checking it exited 0 with nothing on stderr.
async fn furrow_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = furrow_cli(args).await?;
    let (stdout, stderr) = (String::from_utf8(out.stdout)?, String::from_utf8_lossy(&out.stderr).into_owned());
    ensure!(out.status.success(), "furrow {args:?}: {}\n{stdout}\n--- stderr:\n{stderr}", out.status);
    ensure!(stderr.is_empty(), "furrow {args:?} wrote to stderr: {stderr}");
    Ok(stdout)
}

fn short(aid: &furrow::Aid) -> String {
    let mut u = aid.uuid.simple().to_string();
    u.truncate(8);
    format!("{}[{u}]", aid.name)
}

#[furrow_testing::test]
async fn ls_and_tree_show_the_live_tree() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    furrow::open_nursery(async |n| {
        let a = n.start_actor("worker-a").await?;
        let b = n.start_actor("worker-b").await?;
        a.open_context(with_leaf, (), async |ctx, leaf_pid: u32| {
            let listing = furrow::list_actors().await?;
            ensure!(listing.len() == 4, "{listing:?}");
            let leaf = listing.iter().find(|i| i.aid.name == "leaf").context("leaf registered")?.aid.clone();
            ensure!(leaf.pid == leaf_pid);

            // ls: one row per actor, the registrar marked, parents named.
            let ls = furrow_ok(&["ls"]).await?;
            let mut lines = ls.lines();
            let header: Vec<&str> = lines.next().context("a header")?.split_whitespace().collect();
            ensure!(header == ["NAME", "UUID", "HOST", "PID", "PARENT", "REGISTRAR", "ADDRESSES"], "{ls}");
            let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
            ensure!(rows.len() == 4 && rows.iter().all(|r| r.len() == 7), "{ls}");
            // Every actor here is on this host, as each one says.
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
            let expect =
                [(&me, None, "yes"), (a.aid(), Some(&me), "-"), (b.aid(), Some(&me), "-"), (&leaf, Some(a.aid()), "-")];
            for (aid, parent, registrar) in expect {
                let row =
                    rows.iter().find(|r| r[0] == aid.name).with_context(|| format!("{} missing:\n{ls}", aid.name))?;
                ensure!(format!("{}[{}]", row[0], row[1]) == short(aid), "uuid of {}:\n{ls}", aid.name);
                ensure!(row[2] == host.trim(), "host of {}:\n{ls}", aid.name);
                ensure!(row[3] == aid.pid.to_string(), "pid of {}:\n{ls}", aid.name);
                ensure!(row[4] == parent.map_or("-".to_owned(), short), "parent of {}:\n{ls}", aid.name);
                ensure!(row[5] == registrar, "registrar column of {}:\n{ls}", aid.name);
                ensure!(row[6].contains("uds://"), "addresses of {}:\n{ls}", aid.name);
            }
            // Newest registration first, as the registry gives it.
            let order: Vec<&str> = rows.iter().map(|r| r[0]).collect();
            ensure!(order == ["leaf", "worker-b", "worker-a", "test-root"], "{ls}");
            println!("furrow ls:\n{ls}");

            // ls --full: whole uuids.
            let full = furrow_ok(&["ls", "--full"]).await?;
            ensure!(full.contains(&leaf.uuid.hyphenated().to_string()), "{full}");

            // tree: the leaf under worker-a, both workers under the root.
            let tree = furrow_ok(&["tree"]).await?;
            let got: Vec<&str> = tree.lines().collect();
            let want_start = [
                format!(
                    "{} pid={} (registrar) registry=uds://{} uds://",
                    short(&me),
                    me.pid,
                    furrow_testing::socket_dir().join("registry.sock").display()
                ),
                format!("├─ {} pid={} uds://", short(a.aid()), a.aid().pid),
                format!("│  └─ {} pid={} uds://", short(&leaf), leaf.pid),
                format!("└─ {} pid={} uds://", short(b.aid()), b.aid().pid),
            ];
            ensure!(got.len() == want_start.len(), "{tree}");
            for (line, want) in got.iter().zip(&want_start) {
                ensure!(line.starts_with(want.as_str()), "expected a line starting {want:?}:\n{tree}");
            }
            println!("furrow tree:\n{tree}");

            // --json: exactly what this process's own listing says.
            let json = furrow_ok(&["ls", "--json"]).await?;
            let parsed: Vec<ActorInfo> = serde_json::from_str(&json).with_context(|| json.clone())?;
            ensure!(parsed == furrow::list_actors().await?, "{json}");

            // The command never listed itself: still the same four.
            ensure!(furrow::list_actors().await?.len() == 4);
            ctx.cancel().await?;
            Ok(())
        })
        .await
    })
    .await
}

#[furrow_testing::test]
async fn registry_addresses_are_tried_in_turn() -> anyhow::Result<()> {
    // A dead address first, then this test's registrar: the second is used.
    let live = furrow::Addr::Uds(furrow_testing::socket_dir().join("registry.sock"));
    let both = format!("uds:///nonexistent/furrow/x.sock,{live}");
    let ls = furrow_ok(&["--registry", &both, "ls"]).await?;
    ensure!(ls.lines().count() == 2 && ls.contains("test-root") && ls.contains(" yes "), "{ls}");
    // The same through the environment.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_furrow"))
        .args(["tree"])
        .env(furrow::REGISTRY_ENV, &both)
        .env(furrow::SOCKET_DIR_ENV, furrow_testing::socket_dir())
        .kill_on_drop(true)
        .output()
        .await?;
    let tree = String::from_utf8(out.stdout)?;
    ensure!(out.status.success(), "{tree} {}", String::from_utf8_lossy(&out.stderr));
    ensure!(tree.starts_with("test-root[") && tree.contains("(registrar)"), "{tree}");
    Ok(())
}

#[furrow_testing::test]
async fn no_system_is_one_clear_line_and_status_1() -> anyhow::Result<()> {
    for cmd in ["ls", "tree"] {
        let out = furrow_cli(&["--registry", "uds:///nonexistent/x.sock", cmd]).await?;
        let stderr = String::from_utf8(out.stderr)?;
        ensure!(out.status.code() == Some(1), "furrow {cmd}: {} {stderr}", out.status);
        ensure!(out.stdout.is_empty(), "furrow {cmd} printed {:?}", String::from_utf8_lossy(&out.stdout));
        ensure!(stderr.lines().count() == 1, "not one line: {stderr}");
        ensure!(stderr.starts_with("furrow: no furrow system at uds:///nonexistent/x.sock: "), "{stderr}");
        ensure!(!stderr.contains("panicked"), "{stderr}");
    }
    // A bad address is a usage error (clap's status 2), not a panic.
    let out = furrow_cli(&["--registry", "http://x", "ls"]).await?;
    ensure!(out.status.code() == Some(2), "{}", out.status);
    Ok(())
}

/// Frames of `furrow tree --watch` on a pipe: each is a header and one row
/// per actor, frames separated by a blank line.
fn frames(out: &str) -> Vec<Vec<&str>> {
    out.split("\n\n").map(|f| f.lines().collect::<Vec<_>>()).filter(|f| !f.is_empty()).collect()
}

#[furrow_testing::test]
async fn tree_watch_prints_frames_with_stats() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    furrow::open_nursery(async |n| {
        let a = n.start_actor("worker-a").await?;
        a.open_context(with_leaf, (), async |ctx, _leaf_pid: u32| {
            let out = furrow_ok(&["tree", "--watch", "--interval", "0.3", "--count", "3"]).await?;
            let frames = frames(&out);
            ensure!(frames.len() == 3, "{out}");
            for f in &frames {
                let header: Vec<&str> = f[0].split_whitespace().collect();
                ensure!(header[..4] == ["ACTOR", "PID", "UPTIME", "CTX"], "{out}");
                ensure!(f.len() == 4, "a header and three actors:\n{out}");
                ensure!(f[1].starts_with(&short(&me)), "{out}");
                ensure!(f[2].starts_with(&format!("└─ {}", short(a.aid()))), "{out}");
                ensure!(f[3].starts_with("   └─ leaf["), "{out}");
                // worker-a serves one context (ours) and opens none.
                let cells: Vec<&str> = f[2].split_whitespace().collect();
                ensure!(cells[2] == a.aid().pid.to_string() && cells[4] == "1", "{out}");
            }
            // Rates only from the second frame on.
            ensure!(frames[0][2].trim_end().ends_with('-'), "{out}");
            ensure!(!frames[2][2].trim_end().ends_with('-'), "{out}");
            ctx.cancel().await?;
            Ok(())
        })
        .await
    })
    .await
}

#[furrow::remote]
async fn own_pid() -> u32 {
    std::process::id()
}

/// A child its supervisor restarted is marked `↻N` in `furrow tree` (and
/// its sibling, never restarted, is not), from the supervising actor's
/// stats.
#[furrow_testing::test]
async fn tree_marks_a_restarted_child() -> anyhow::Result<()> {
    use furrow::supervise::{ChildSpec, Event, Strategy, SupervisorOptions, open_supervisor};
    let opts = SupervisorOptions::new(Strategy::OneForOne).intensity(5, Duration::from_secs(30));
    open_supervisor(opts, async |sup| {
        let mut events = sup.events();
        let db = sup.start(ChildSpec::new("db")).await?;
        let _cache = sup.start(ChildSpec::new("cache")).await?;
        for round in 1..=2u32 {
            let pid = db.run(own_pid, ()).await?;
            // SAFETY: kill(2) on a child actor of this test, alive (it
            // just answered); its supervisor reaps it.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    if let Event::Started { name, restarts, .. } = events.recv().await?
                        && name == "db"
                        && restarts == round
                    {
                        return anyhow::Ok(());
                    }
                }
            })
            .await
            .context("db not restarted within 20 s")??;
        }
        let new_pid = db.run(own_pid, ()).await?;
        let tree = furrow_ok(&["tree"]).await?;
        let db_line = tree.lines().find(|l| l.contains("db[")).with_context(|| format!("no db:\n{tree}"))?;
        ensure!(db_line.contains(" ↻2 pid="), "{tree}");
        ensure!(db_line.contains(&format!("pid={new_pid} ")), "the new instance is listed:\n{tree}");
        let cache_line = tree.lines().find(|l| l.contains("cache[")).with_context(|| format!("no cache:\n{tree}"))?;
        ensure!(!cache_line.contains('↻'), "{tree}");
        println!("furrow tree:\n{tree}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn tree_watch_ends_cleanly_on_ctrl_c() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_furrow"))
        .arg("--socket-dir")
        .arg(furrow_testing::socket_dir())
        .args(["tree", "--watch", "--interval", "0.2"])
        .env_remove(furrow::REGISTRY_ENV)
        .env_remove(furrow::SOCKET_DIR_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // Two frames (two headers), then Ctrl-C.
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut headers = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while headers < 2 {
            let line = lines.next_line().await?.context("ended early")?;
            headers += usize::from(line.starts_with("ACTOR"));
        }
        anyhow::Ok(())
    })
    .await
    .context("no two frames")??;
    let pid = child.id().context("pid")? as libc::pid_t;
    // SAFETY: kill(2) on our own child, not yet reaped (we wait below).
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.context("no exit")??;
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr).await?;
    ensure!(status.success(), "{status}: {stderr}");
    ensure!(stderr.is_empty(), "{stderr}");
    Ok(())
}

/// Never returns.
#[furrow::remote]
async fn hang() {
    std::future::pending::<()>().await
}

/// `furrow dump` names a stuck call from both ends (text and JSON), an
/// unknown actor is one clear line, and `tree --watch` marks the actor
/// whose dialog waits and shows a dump on demand.
#[furrow_testing::test]
async fn dump_names_a_stuck_call_from_both_ends() -> anyhow::Result<()> {
    let me = furrow::local_aid()?;
    furrow::open_nursery(async |n| {
        let p = n.start_actor("stuck").await?;
        let look = async {
            // The call is on its way: wait until the callee runs it.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !p.dump().await?.dialogs.iter().any(|d| d.func.ends_with("::hang")) {
                ensure!(std::time::Instant::now() < deadline, "the call never arrived");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pid = p.aid().pid.to_string();
            let text = furrow_ok(&["dump", "stuck", &me.pid.to_string()]).await?;
            let callee = text.lines().find(|l| l.contains("callee call") && l.contains("::hang"));
            ensure!(callee.is_some_and(|l| l.contains(&format!("from {} (pid {})", me.name, me.pid))), "{text}");
            let opener = text.lines().find(|l| l.contains("opener call") && l.contains("::hang"));
            ensure!(opener.is_some_and(|l| l.contains(&format!("to stuck (pid {pid})"))), "{text}");
            ensure!(opener.is_some_and(|l| l.contains("for the result")), "{text}");

            let json = furrow_ok(&["dump", "--json", &pid]).await?;
            let dumps: Vec<furrow::ActorDump> = serde_json::from_str(&json).with_context(|| json.clone())?;
            ensure!(dumps.len() == 1 && dumps[0].aid == *p.aid(), "{json}");
            let d = dumps[0].dialogs.iter().find(|d| d.func.ends_with("::hang")).context("no hang dialog")?;
            ensure!(d.side == furrow::dump::DialogSide::Callee && d.peer == me, "{json}");

            let out = furrow_cli(&["dump", "nobody"]).await?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(out.status.code() == Some(1) && err.contains("`nobody`") && err.lines().count() == 1, "{err}");

            // The root's wait only grows: past the mark once it has
            // waited longer than it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let frame = furrow_ok(&[
                "tree",
                "--watch",
                "--count",
                "1",
                "--interval",
                "0.2",
                "--stuck-after",
                "0.1",
                "--dump",
                "stuck",
            ])
            .await?;
            let root_row = frame.lines().find(|l| l.starts_with(&short(&me))).context("no root row")?;
            ensure!(root_row.trim_end().ends_with(" !"), "the waiting root is not marked:\n{frame}");
            ensure!(frame.contains(&format!("actor stuck (pid {pid}")) && frame.contains("callee call"), "{frame}");
            Ok(())
        };
        tokio::select! {
            r = look => r,
            r = p.run(hang, ()) => anyhow::bail!("the hanging call ended: {r:?}"),
        }
    })
    .await
}
