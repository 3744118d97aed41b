//! A tree across hosts, for real: two network namespaces joined by a veth
//! pair. The registrar's program runs in one, a second program and its
//! actor in the other; they meet over TCP only (each side's UDS sockets are
//! out of the other's reach), authenticate with the shared secret, and
//! the first calls, streams with, cancels and receives errors from the
//! second.
//!
//! Needs root and `ip netns`; without them the test reports itself
//! ignored, with the reason (a failure under `CI=true`).

use anyhow::{Context as _, bail, ensure};
use furrow::{Addr, Config, Context, Discovery, Error, Outcome, SpawnOptions};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Who and where: name, pid, and the inode of the network namespace.
#[furrow::remote]
async fn where_am_i() -> (String, u32, u64) {
    let name = furrow::local_aid().map(|a| a.name).unwrap_or_default();
    (name, std::process::id(), netns_inode())
}

fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

#[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("boom at {at}, far away")]
pub struct FarBoom {
    at: u64,
}

impl From<Error> for FarBoom {
    fn from(_: Error) -> Self {
        FarBoom { at: u64::MAX }
    }
}

/// Doubles every number it receives; fails when it sees `fail_at`.
#[furrow::context]
async fn doubler(ctx: Context, fail_at: u64) -> Result<u64, FarBoom> {
    ctx.started(&()).await?;
    ctx.open_stream(async |s| {
        let mut n = 0;
        while let Some(x) = s.recv::<u64>().await? {
            if x == fail_at {
                return Err(FarBoom { at: x });
            }
            s.send(&(x * 2)).await?;
            n += 1;
        }
        Ok(n)
    })
    .await
}

struct Netns {
    a: String,
    b: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it
        // the other end.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().with_context(|| format!("cannot run ip {args:?}"))?;
    ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Two namespaces joined by a veth pair: `10.77.K.1` in `a`, `10.77.K.2`
/// in `b`. `Err` when this machine cannot do it (not root, no `ip`).
fn make_netns() -> anyhow::Result<(Netns, String, String)> {
    let k = std::process::id() % 200 + 20;
    let ns = Netns { a: format!("furrow-a-{}", std::process::id()), b: format!("furrow-b-{}", std::process::id()) };
    ip(&["netns", "add", &ns.a])?;
    ip(&["netns", "add", &ns.b])?;
    let (va, vb) = (format!("fra{k}"), format!("frb{k}"));
    ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
    ip(&["link", "set", &va, "netns", &ns.a])?;
    ip(&["link", "set", &vb, "netns", &ns.b])?;
    let (ha, hb) = (format!("10.77.{k}.1"), format!("10.77.{k}.2"));
    ip(&["-n", &ns.a, "addr", "add", &format!("{ha}/24"), "dev", &va])?;
    ip(&["-n", &ns.b, "addr", "add", &format!("{hb}/24"), "dev", &vb])?;
    for (n, v) in [(&ns.a, &va), (&ns.b, &vb)] {
        ip(&["-n", n, "link", "set", v, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    Ok((ns, ha, hb))
}

#[furrow_testing::test]
async fn a_tree_across_two_network_namespaces() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        furrow_testing::skip("needs root: it creates network namespaces");
    }
    let (ns, ha, hb) = match make_netns() {
        Ok(v) => v,
        Err(e) => furrow_testing::skip(format!("cannot create network namespaces here: {e}")),
    };
    let registry = format!("tcp://{ha}:7711");
    let dir = furrow_testing::socket_dir();
    // The hub: registrar, in namespace a.
    let mut hub = furrow_testing::scenario_via(&["ip", "netns", "exec", &ns.a], "scenario_hub")
        .env(furrow::REGISTRY_ENV, &registry)
        .env("FURROW_TEST_HOST", &ha)
        .env(furrow::SOCKET_DIR_ENV, dir.join("a"))
        .spawn()?;
    let mut hub_out = BufReader::new(hub.stdout.take().context("stdout")?).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), hub_out.next_line()).await??.context("hub output")?;
    ensure!(first == format!("serving {registry}"), "{first}");
    // The far program, in namespace b.
    let mut far = furrow_testing::scenario_via(&["ip", "netns", "exec", &ns.b], "scenario_far")
        .env(furrow::REGISTRY_ENV, &registry)
        .env("FURROW_TEST_HOST", &hb)
        .env(furrow::SOCKET_DIR_ENV, dir.join("b"))
        .spawn()?;

    let mut lines = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = hub_out.next_line().await? {
            println!("hub: {l}");
            lines.push(l);
        }
        anyhow::Ok(hub.wait().await?)
    })
    .await
    .context("hub hung")??;
    ensure!(status.success(), "hub failed: {status}; said {lines:?}");
    let far_status = tokio::time::timeout(Duration::from_secs(20), far.wait()).await.context("far program hung")??;
    ensure!(far_status.success(), "far program: {far_status}");

    let text = lines.join("\n");
    ensure!(text.contains(&format!("rpc far-worker at tcp://{hb}:")), "{text}");
    ensure!(text.contains("in another network namespace"), "{text}");
    ensure!(text.contains("stream 1000 doubled, callee returned 1000"), "{text}");
    ensure!(text.contains("error from far-worker: boom at 7, far away (relayed by [\"far-worker\"])"), "{text}");
    ensure!(text.contains("far-root cancelled"), "{text}");
    drop(ns);
    // The two programs' socket directories: empty (each removed its own
    // sockets; b's were on its private tmpfs anyway), so they can go.
    for d in ["a", "b"] {
        std::fs::remove_dir(dir.join(d)).with_context(|| format!("socket directory {d} not empty"))?;
    }
    Ok(())
}

/// Namespace a: the registrar (TCP only), which waits for `far-worker` and
/// exercises it.
#[furrow_testing::test(scenario)]
async fn scenario_hub() -> anyhow::Result<()> {
    let host = std::env::var("FURROW_TEST_HOST")?;
    let registry: Addr = std::env::var(furrow::REGISTRY_ENV)?.parse()?;
    let cfg = Config::new("hub")
        .registry([registry.clone()])
        .discovery(Discovery::Serve)
        .bind([format!("tcp://{host}:0").parse()?]);
    furrow::run_root(cfg, async {
        println!("serving {registry}");
        let here = netns_inode();
        let far = tokio::time::timeout(
            Duration::from_secs(30),
            furrow::wait_for_actor("far-worker", async |p| {
                // 1. RPC. Only TCP addresses are reachable from here.
                let addr = p.addrs().iter().find(|a| matches!(a, Addr::Tcp(_))).cloned().context("a TCP address")?;
                let (name, pid, netns) = p.run(where_am_i, ()).await?;
                ensure!(netns != here, "the far worker runs in this very namespace");
                println!("rpc {name} at {addr} pid {pid} in another network namespace");

                // 2. A context with a stream, both ways.
                let n = p
                    .open_context(doubler, (u64::MAX,), async |ctx, (): ()| {
                        ctx.open_stream(async |s| {
                            for i in 0..1000u64 {
                                s.send(&i).await?;
                                let back: u64 = s.recv().await?.context("stream ended early")?;
                                ensure!(back == 2 * i, "{back} for {i}");
                            }
                            Ok(())
                        })
                        .await?;
                        match ctx.wait_for_result::<u64>().await? {
                            Outcome::Returned(n) => Ok(n),
                            other => bail!("unexpected {other:?}"),
                        }
                    })
                    .await?;
                println!("stream 1000 doubled, callee returned {n}");

                // 3. An error raised over there, mid-stream, arrives here typed.
                let r = p
                    .open_context(doubler, (7,), async |ctx, (): ()| {
                        ctx.open_stream(async |s| {
                            for i in 0..100u64 {
                                if s.send(&i).await.is_err() {
                                    break;
                                }
                                if s.recv::<u64>().await.is_err() {
                                    break;
                                }
                            }
                            anyhow::Ok(())
                        })
                        .await
                    })
                    .await;
                let err = match r {
                    Ok(()) => bail!("the far error did not arrive"),
                    Err(e) => e,
                };
                let e = err.downcast_ref::<Error>().with_context(|| format!("a furrow error, got {err:?}"))?;
                let remote = e.as_remote().context("a remote error")?;
                let boom = remote.downcast::<FarBoom>().context("typed")?;
                let path: Vec<&str> = remote.relay_path.iter().map(|a| a.name.as_str()).collect();
                println!("error from {}: {boom} (relayed by {path:?})", remote.src.name);
                anyhow::Ok(pid)
            }),
        )
        .await
        .context("far-worker never registered")??;

        // 4. Cancel the far program's root across the link: its whole tree
        //    ends, and leaves the registry.
        furrow::find_actor("far-root", async |p| match p {
            Some(p) => p.cancel_actor().await,
            None => Err(Error::Usage("far-root is not registered".into())),
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !furrow::query_actors("far-worker").await?.is_empty() {
            ensure!(Instant::now() < deadline, "far-worker still registered after its root was cancelled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("far-root cancelled; far-worker (pid {far}) gone from the registry");
        anyhow::Ok(())
    })
    .await?
}

/// Namespace b: a root that joins the hub over TCP and starts `far-worker`,
/// listening on TCP only as far as the hub can tell (its UDS sockets are
/// on a tmpfs private to this namespace's mounts).
#[furrow_testing::test(scenario)]
async fn scenario_far() -> anyhow::Result<()> {
    let host = std::env::var("FURROW_TEST_HOST")?;
    let dir = std::path::PathBuf::from(std::env::var(furrow::SOCKET_DIR_ENV)?);
    std::fs::create_dir_all(&dir)?;
    private_tmpfs(&dir)?;
    let registry: Addr = std::env::var(furrow::REGISTRY_ENV)?.parse()?;
    let tcp: Addr = format!("tcp://{host}:0").parse()?;
    let cfg = Config::new("far-root").registry([registry]).discovery(Discovery::Join).bind([tcp.clone()]);
    let r = furrow::run_root(cfg, async {
        furrow::open_nursery(async |n| {
            n.start_actor_with("far-worker", SpawnOptions::new().bind([tcp])).await?;
            // Until the hub cancels this root.
            std::future::pending::<()>().await;
            furrow::Ok(())
        })
        .await
    })
    .await?;
    match r {
        // The expected end: cancelled by the hub, from the other namespace.
        Err(Error::ActorCancelled { canceller: Some(by), .. }) if by.name == "hub" => Ok(()),
        Err(e) => bail!("far root: {e}"),
        Ok(()) => bail!("far root ended on its own"),
    }
}

/// Mount a tmpfs on `dir`, visible only in this process's mount namespace
/// (`ip netns exec` gives it one whose mounts do not propagate back).
fn private_tmpfs(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: plain mount(2) with valid NUL-terminated strings.
    let rc =
        unsafe { libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
    ensure!(rc == 0, "mount tmpfs on {}: {}", dir.display(), std::io::Error::last_os_error());
    Ok(())
}
