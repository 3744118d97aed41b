//! The registrar: lookup, wait, listing, removal of dead actors, separate
//! programs joining one system, and what happens when the registry address
//! is not ours to use.

use anyhow::{Context as _, bail, ensure};
use furrow::{Addr, Config, Discovery, Error, SpawnOptions};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

#[furrow::remote]
async fn whoami() -> (String, u32) {
    (furrow::local_aid().map(|a| a.name).unwrap_or_default(), std::process::id())
}

/// Poll `query_actors(name)` until `pred` holds on its result, or fail
/// after `within`.
async fn until_registry(
    name: &str,
    within: Duration,
    pred: impl Fn(&[furrow::ActorInfo]) -> bool,
) -> anyhow::Result<Vec<furrow::ActorInfo>> {
    let deadline = Instant::now() + within;
    loop {
        let found = furrow::query_actors(name).await?;
        if pred(&found) {
            return Ok(found);
        }
        ensure!(Instant::now() < deadline, "registry never reached the expected state for {name:?}: {found:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[furrow_testing::test]
async fn lookup_wait_and_listing() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let alpha = n.start_actor("alpha").await?;
        // Registered before `start_actor` returned: found at once.
        let (name, pid) = furrow::find_actor("alpha", async |p| match p {
            Some(p) => Ok(p.run(whoami, ()).await?),
            None => bail!("alpha not found"),
        })
        .await?;
        ensure!(name == "alpha");
        ensure!(Some(pid) == alpha.aid().pid.into(), "pid {pid} vs {}", alpha.aid());

        let missing = furrow::find_actor("nobody-by-that-name", async |p| furrow::Ok(p.is_none())).await?;
        ensure!(missing, "an unknown name finds nothing");

        // Names need not be unique: the newest registration wins; a uuid
        // finds exactly its actor.
        let first = n.start_actor("twin").await?;
        let second = n.start_actor("twin").await?;
        let newest = furrow::find_actor("twin", async |p| furrow::Ok(p.map(|p| p.aid().clone()))).await?;
        ensure!(newest.as_ref() == Some(second.aid()), "newest twin: {newest:?}");
        let exact = furrow::find_actor(first.aid().uuid, async |p| furrow::Ok(p.map(|p| p.aid().clone()))).await?;
        ensure!(exact.as_ref() == Some(first.aid()), "by uuid: {exact:?}");
        let both = furrow::query_actors("twin").await?;
        ensure!(both.len() == 2 && both[0].aid == *second.aid() && both[1].aid == *first.aid(), "{both:?}");
        // Portals to every twin at once, newest first.
        let pids = furrow::find_all_actors("twin", async |ps| {
            let mut pids = Vec::new();
            for p in ps {
                pids.push(p.run(whoami, ()).await?.1);
            }
            furrow::Ok(pids)
        })
        .await?;
        ensure!(pids == vec![second.aid().pid, first.aid().pid], "{pids:?}");

        // wait_for_actor: waits until the actor appears.
        let waiter = tokio::spawn(async {
            furrow::wait_for_actor("late", async |p| furrow::Ok(p.run(whoami, ()).await?.0)).await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        ensure!(!waiter.is_finished(), "wait_for_actor returned before the actor existed");
        let late = n.start_actor("late").await?;
        let got = tokio::time::timeout(Duration::from_secs(10), waiter).await.context("wait_for_actor hung")???;
        ensure!(got == "late");

        // Listing: every actor with its parent; the root is the registrar.
        let all = furrow::list_actors().await?;
        let me = furrow::local_aid()?;
        let names: Vec<&str> = all.iter().map(|a| a.aid.name.as_str()).collect();
        for want in ["test-root", "alpha", "twin", "late"] {
            ensure!(names.contains(&want), "{want} missing from {names:?}");
        }
        ensure!(all.len() == 5, "{names:?}");
        for a in &all {
            if a.aid == me {
                ensure!(a.registrar && a.parent.is_none(), "{a:?}");
            } else {
                ensure!(!a.registrar && a.parent.as_ref() == Some(&me), "{a:?}");
                ensure!(!a.addrs.is_empty(), "{a:?}");
            }
        }

        // Unregistered on a graceful exit.
        late.cancel_actor().await?;
        until_registry("late", Duration::from_secs(5), |f| f.is_empty()).await?;
        Ok(())
    })
    .await
}

/// A separate root program that joins the registry and starts `victim`,
/// prints `pids ROOT VICTIM`, then blocks.
#[furrow_testing::test(scenario)]
async fn scenario_member_with_victim() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let v = n.start_actor("victim").await?;
        println!("pids {} {}", std::process::id(), v.aid().pid);
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
}

async fn read_pids(child: &mut tokio::process::Child, want: usize) -> anyhow::Result<Vec<u32>> {
    let out = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(out).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines.next_line().await?.context("scenario ended early")?;
            if let Some(rest) = line.strip_prefix("pids ") {
                let pids: Vec<u32> = rest.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
                ensure!(pids.len() == want, "{line}");
                return Ok(pids);
            }
        }
    })
    .await
    .context("scenario did not start")?
}

/// A separate program (scenario) on a registry of its own: this test
/// process's root is the registrar of the default address, so programs that
/// must meet without it use another.
fn app(name: &str) -> tokio::process::Command {
    let mut cmd = furrow_testing::scenario(name);
    let registry = furrow_testing::socket_dir().join("apps-registry.sock");
    cmd.env(furrow::REGISTRY_ENV, Addr::Uds(registry).to_string());
    cmd
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

#[furrow_testing::test]
async fn sigkilled_actors_are_dropped_from_the_registry() -> anyhow::Result<()> {
    // This test's root becomes the registrar; the scenario joins it.
    let me = furrow::local_aid()?;
    ensure!(furrow::list_actors().await?.iter().any(|a| a.aid == me && a.registrar));
    let mut member = furrow_testing::scenario("scenario_member_with_victim").spawn()?;
    let pids = read_pids(&mut member, 2).await?;
    let (root_pid, victim_pid) = (pids[0], pids[1]);
    let victim = until_registry("victim", Duration::from_secs(5), |f| f.len() == 1).await?;
    ensure!(victim[0].aid.pid == victim_pid);
    let member_root = victim[0].parent.clone().context("victim has a parent")?;
    ensure!(member_root.pid == root_pid);

    // SIGKILL: the victim cannot unregister; the registrar drops it when
    // its registry channel closes. (Its program then fails, as a nursery
    // whose child was killed does, and exits.)
    let t = Instant::now();
    kill(victim_pid, libc::SIGKILL);
    until_registry("victim", Duration::from_secs(2), |f| f.is_empty()).await?;
    println!("SIGKILLed actor gone from the registry after {:?}", t.elapsed());
    let status = tokio::time::timeout(Duration::from_secs(10), member.wait()).await.context("member hung")??;
    ensure!(status.code() == Some(1), "{status}");
    until_registry(&member_root.name, Duration::from_secs(2), |f| f.iter().all(|a| a.aid != member_root)).await?;

    // The same for a program's root: SIGKILLed, it is dropped; its child
    // ends (parent-death signal) and unregisters itself.
    let mut member = furrow_testing::scenario("scenario_member_with_victim").spawn()?;
    let pids = read_pids(&mut member, 2).await?;
    let root = until_registry("victim", Duration::from_secs(5), |f| f.len() == 1).await?[0].parent.clone();
    let root = root.context("victim has a parent")?;
    ensure!(root.pid == pids[0]);
    kill(pids[0], libc::SIGKILL);
    until_registry(&root.name, Duration::from_secs(2), |f| f.iter().all(|a| a.aid != root)).await?;
    until_registry("victim", Duration::from_secs(5), |f| f.is_empty()).await?;
    let _ = member.wait().await;
    furrow_testing::wait_gone(&pids, Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
    // The killed root could not remove its socket file; a new root's sweep
    // would. Do it here, as that root would.
    ensure!(furrow_testing::sweep_stale_sockets() == 1, "the killed root's socket");
    Ok(())
}

#[furrow::remote(name = "kv::put")]
async fn kv_put(key: String, value: u64) -> Option<u64> {
    use std::sync::Mutex;
    static STORE: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
    let mut s = STORE.lock().unwrap_or_else(|p| p.into_inner());
    let old = s.iter().position(|(k, _)| *k == key).map(|i| s.remove(i).1);
    s.push((key, value));
    old
}

/// Program A: a daemon serving `kv` until it is told to stop (SIGTERM).
#[furrow_testing::test(scenario)]
async fn scenario_kv_daemon() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let kv = n.start_actor("kv").await?;
        let registrar = furrow::list_actors().await?.into_iter().find(|a| a.registrar).context("a registrar")?;
        println!("ready {} registrar_pid={}", kv.aid(), registrar.aid.pid);
        std::future::pending::<()>().await;
        Ok(())
    })
    .await
}

/// Program B: finds `kv` by name and uses it.
#[furrow_testing::test(scenario)]
async fn scenario_kv_client() -> anyhow::Result<()> {
    let (old, again) = furrow::wait_for_actor("kv", async |p| {
        let old = p.run(kv_put, ("answer".to_string(), 41)).await?;
        let again = p.run(kv_put, ("answer".to_string(), 42)).await?;
        furrow::Ok((old, again))
    })
    .await?;
    println!("client saw {old:?} then {again:?}");
    Ok(())
}

#[furrow_testing::test]
async fn two_separately_started_programs_form_one_system() -> anyhow::Result<()> {
    // On their own registry: the daemon, started first, becomes the
    // registrar; the client joins it.
    let mut daemon = app("scenario_kv_daemon").spawn()?;
    let out = daemon.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(out).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??.context("daemon output")?;
    let daemon_pid = daemon.id().context("daemon pid")?;
    ensure!(ready.starts_with("ready kv[") && ready.ends_with(&format!("registrar_pid={daemon_pid}")), "{ready}");

    let client = app("scenario_kv_client").output();
    let client = tokio::time::timeout(Duration::from_secs(20), client).await.context("client hung")??;
    let text = String::from_utf8_lossy(&client.stdout);
    ensure!(client.status.success(), "client failed: {text} {}", String::from_utf8_lossy(&client.stderr));
    ensure!(text.trim() == "client saw None then Some(41)", "{text}");

    kill(daemon.id().context("daemon pid")?, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait()).await.context("daemon hung")??;
    ensure!(status.code() == Some(143), "daemon: {status}");
    Ok(())
}

/// A registrar's program ends: the roots still running take over, and
/// their actors register again with the new registrar.
#[furrow_testing::test]
async fn another_root_takes_over_when_the_registrar_ends() -> anyhow::Result<()> {
    let mut first = app("scenario_kv_daemon").spawn()?;
    let mut lines = BufReader::new(first.stdout.take().context("stdout")?).lines();
    let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??.context("output")?;
    ensure!(l.ends_with(&format!("registrar_pid={}", first.id().context("pid")?)), "{l}");
    let mut second = app("scenario_member_with_victim").spawn()?;
    let pids = read_pids(&mut second, 2).await?;

    kill(first.id().context("pid")?, libc::SIGTERM);
    first.wait().await?;
    // A third program, started after the registrar left, finds the second
    // program's actor: the second program's root took over the registry.
    let probe = app("scenario_find_victim").env("FURROW_TEST_JOIN_ONLY", "1").output();
    let probe = tokio::time::timeout(Duration::from_secs(20), probe).await.context("probe hung")??;
    let text = String::from_utf8_lossy(&probe.stdout);
    ensure!(probe.status.success(), "{text} {}", String::from_utf8_lossy(&probe.stderr));
    ensure!(text.trim() == format!("victim {} registrar={}", pids[1], pids[0]), "{text} vs {pids:?}");
    kill(pids[0], libc::SIGTERM);
    second.wait().await?;
    furrow_testing::wait_gone(&pids, Duration::from_secs(5)).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Joins (never serves) the registry, retrying until there is a registrar,
/// and prints the pid of `victim` and of the registrar.
#[furrow_testing::test(scenario)]
async fn scenario_find_victim() -> anyhow::Result<()> {
    let cfg = Config::new("probe").discovery(Discovery::Join);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = furrow::run_root(cfg.clone(), async {
            let pid = furrow::wait_for_actor("victim", async |p| furrow::Ok(p.run(whoami, ()).await?.1)).await?;
            let all = furrow::list_actors().await?;
            let registrar = all.iter().find(|a| a.registrar).map(|a| a.aid.pid).unwrap_or(0);
            println!("victim {pid} registrar={registrar}");
            furrow::Ok(())
        });
        match r.await {
            Ok(r) => return Ok(r?),
            Err(Error::Registry { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => bail!("probe could not join: {e}"),
        }
    }
}

#[furrow_testing::test]
async fn a_foreign_server_on_the_registry_address_is_a_clear_error() -> anyhow::Result<()> {
    let dir = furrow_testing::socket_dir();
    // Something that is not furrow: answers like a web server, then hangs up.
    let path = dir.join("foreign.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        for s in listener.incoming() {
            if stop2.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            if let Ok(mut s) = s {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
            }
        }
    });
    let t = Instant::now();
    let text = list_or_error(&Addr::Uds(path.clone())).await?;
    ensure!(text.contains("foreign.sock") && text.contains("not a furrow registrar"), "{text}");
    ensure!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    println!("{text}");
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = std::os::unix::net::UnixStream::connect(&path);
    server.join().ok();
    std::fs::remove_file(&path)?;

    // A file that is not a socket is never removed to make room.
    let plain = dir.join("plain-file");
    std::fs::write(&plain, b"keep me")?;
    let text = list_or_error(&Addr::Uds(plain.clone())).await?;
    ensure!(text.contains("not a socket"), "{text}");
    ensure!(std::fs::read(&plain)? == b"keep me");
    std::fs::remove_file(&plain)?;

    // A furrow actor that is not a registrar (asked from another program:
    // this process has its actor already).
    furrow::open_nursery(async |n| {
        let plain_actor = n.start_actor("not-a-registrar").await?;
        let addr = plain_actor.addrs().iter().find(|a| matches!(a, Addr::Uds(_))).cloned().context("uds")?;
        let text = list_or_error(&addr).await?;
        ensure!(text.contains("is a furrow actor but not a registrar"), "{text}");
        ensure!(text.contains("not-a-registrar["), "{text}");
        Ok(())
    })
    .await?;
    Ok(())
}

/// Run `scenario_list_or_error` against registry `addr`; its output.
async fn list_or_error(addr: &Addr) -> anyhow::Result<String> {
    let out = furrow_testing::scenario("scenario_list_or_error").env(furrow::REGISTRY_ENV, addr.to_string()).output();
    let out = tokio::time::timeout(Duration::from_secs(20), out).await.context("scenario hung")??;
    Ok(format!("{}\n--- its stderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Prints the registry listing (how many actors, and the registry
/// addresses the registrar serves), or the error getting it.
#[furrow_testing::test(scenario)]
async fn scenario_list_or_error() -> anyhow::Result<()> {
    match furrow::list_actors().await {
        Ok(all) => {
            let served: Vec<String> =
                all.iter().filter(|a| a.registrar).flat_map(|a| a.registry.iter().map(ToString::to_string)).collect();
            println!("{} actors; registry {}", all.len(), served.join(","));
        }
        Err(e) => println!("error: {e}"),
    }
    Ok(())
}

/// A registrar serving UDS and TCP at once: one program joins over TCP,
/// another over UDS, and they are one system.
#[furrow_testing::test]
async fn multi_homed_registrar_is_joined_by_either_address() -> anyhow::Result<()> {
    let uds = Addr::Uds(furrow_testing::socket_dir().join("mh-registry.sock"));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let tcp: Addr = format!("tcp://127.0.0.1:{port}").parse()?;
    let both = format!("{uds},{tcp}");
    let mut daemon = furrow_testing::scenario("scenario_kv_daemon").env(furrow::REGISTRY_ENV, &both).spawn()?;
    let mut lines = BufReader::new(daemon.stdout.take().context("stdout")?).lines();
    let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await??.context("output")?;
    ensure!(l.ends_with(&format!("registrar_pid={}", daemon.id().context("pid")?)), "{l}");

    // Over TCP only (authenticated with the shared secret): finds and uses kv.
    let client = furrow_testing::scenario("scenario_kv_client").env(furrow::REGISTRY_ENV, tcp.to_string()).output();
    let client = tokio::time::timeout(Duration::from_secs(20), client).await.context("client hung")??;
    let text = String::from_utf8_lossy(&client.stdout);
    ensure!(text.trim() == "client saw None then Some(41)", "{text} {}", String::from_utf8_lossy(&client.stderr));
    // Over UDS only: the same system, and the registrar says where it serves.
    let text = list_or_error(&uds).await?;
    // Three: the daemon, its kv actor, and the lister itself.
    ensure!(text.starts_with(&format!("3 actors; registry {both}")), "{text}");

    kill(daemon.id().context("pid")?, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait()).await.context("daemon hung")??;
    ensure!(status.code() == Some(143), "{status}");
    Ok(())
}

#[furrow_testing::test]
async fn multi_homed_actor_is_found_with_every_address() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let tcp: Addr = "tcp://127.0.0.1:0".parse()?;
        let p = n.start_actor_with("multi", SpawnOptions::new().bind([tcp])).await?;
        let info = furrow::query_actors("multi").await?.into_iter().next().context("registered")?;
        ensure!(info.aid == *p.aid());
        ensure!(info.addrs.len() == 2, "{:?}", info.addrs);
        ensure!(matches!(info.addrs[0], Addr::Tcp(_)) && matches!(info.addrs[1], Addr::Uds(_)), "{:?}", info.addrs);
        // Each address reaches the same actor.
        for addr in &info.addrs {
            let who = furrow::connect(addr, async |q| furrow::Ok(q.run(whoami, ()).await?)).await?;
            ensure!(who == ("multi".to_string(), p.aid().pid), "{addr}: {who:?}");
        }
        // connect_actor picks one it can reach (the local socket), and the
        // portal lists them all.
        let addrs = furrow::connect_actor(&info, async |q| furrow::Ok(q.addrs().to_vec())).await?;
        ensure!(addrs == info.addrs);
        Ok(())
    })
    .await
}

/// One round: `victim` is registered, then SIGKILLed, and looked up at
/// once (before the registrar can have noticed). What the lookup gave:
/// `Some(pid)` if it still reached the actor, `None` if it was skipped as
/// gone, or its error.
async fn find_just_killed() -> anyhow::Result<(furrow::Result<Option<u32>>, furrow::Result<()>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The lookup runs in a task of its own: the death also fails the
    // nursery, which drops its body.
    let r = furrow::open_nursery(async |n| {
        let p = n.start_actor("victim").await?;
        let pid = p.aid().pid;
        tokio::spawn(async move {
            // SAFETY: killing our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let found = furrow::find_actor("victim", async |p| Ok(p.map(|p| p.aid().pid))).await;
            let _ = tx.send(found);
        });
        std::future::pending::<()>().await;
        Ok(())
    })
    .await;
    Ok((rx.await.context("the lookup's task ended")?, r))
}

/// An actor that died a moment ago is still registered (the registrar
/// notices when its channel closes): `find_actor` skips it as gone
/// (`None`, as `wait_for_actor` skips it and waits), never reports it as
/// "not a furrow actor".
#[furrow_testing::test]
async fn find_actor_skips_a_registered_actor_that_just_died() -> anyhow::Result<()> {
    let (mut gone, mut reached) = (0, 0);
    for round in 0..20 {
        let (found, r) = find_just_killed().await?;
        match found {
            Ok(None) => gone += 1,
            // Killed but not dead yet when the lookup connected.
            Ok(Some(_)) => reached += 1,
            Err(e) => bail!("round {round}: find_actor failed: {e}"),
        }
        match r {
            Err(Error::ActorExited { actor, status, .. }) => {
                ensure!(actor.name == "victim" && status.contains("SIGKILL"), "round {round}: {actor} {status}")
            }
            other => bail!("round {round}: the nursery should fail with the death: {other:?}"),
        }
    }
    println!("skipped as gone: {gone}, reached before it died: {reached}");
    ensure!(gone > 0, "the lookup never met the dead actor");
    Ok(())
}

/// What answers with something else than furrow is "not a furrow actor";
/// what hangs up without answering is a closed transport (as a dying
/// actor does), which lookups treat as gone.
#[furrow_testing::test]
async fn a_foreign_answer_and_a_hang_up_are_told_apart() -> anyhow::Result<()> {
    let dir = furrow_testing::socket_dir();
    for (file, answer) in [("talker.sock", &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]), ("mute.sock", &b""[..])] {
        let path = dir.join(file);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        let server = std::thread::spawn(move || -> std::io::Result<()> {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept()?;
            s.write_all(answer)?;
            // Read the dialler's handshake, so that closing is a clean end
            // of stream (unread bytes would make it a reset).
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf)?;
            Ok(())
        });
        let r = furrow::connect(&Addr::Uds(path.clone()), async |_| Ok(())).await;
        let e = r.expect_err("not a furrow actor");
        match (file, &e) {
            ("talker.sock", Error::Protocol { reason, .. }) => ensure!(reason.contains("is not a furrow actor"), "{e}"),
            ("mute.sock", Error::TransportClosed { reason, .. }) => {
                ensure!(reason == "peer closed the connection during the handshake", "{e}")
            }
            _ => bail!("{file}: {e:?}"),
        }
        server.join().map_err(|_| anyhow::anyhow!("server panicked"))??;
        std::fs::remove_file(&path)?;
    }
    Ok(())
}
