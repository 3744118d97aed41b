//! A flood of silent TCP connections cannot take an actor's file
//! descriptors: at most `max_unauthenticated` of them wait to authenticate,
//! the rest are refused at once, saying why; when descriptors run out all
//! the same, callers are told so instead of timing out; and the log says
//! each a few times, not once per connection. Everything on loopback.

use anyhow::{Context as _, ensure};
use furrow::{Addr, Error, SpawnOptions};
use std::time::{Duration, Instant};

#[furrow::remote]
async fn whoami() -> u32 {
    std::process::id()
}

/// How many file descriptors this process has open.
#[furrow::remote]
async fn fd_count() -> std::io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Set this process's soft limit on open files (the hard one stays).
#[furrow::remote]
async fn set_fd_limit(soft: u64) -> std::io::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = soft.min(lim.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// From now on, this process's log lines (its stderr) go to `path`.
#[furrow::remote]
async fn log_to(path: String) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // SAFETY: dup2 onto fd 2, which this process owns; `f` stays valid
    // for the call.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `n` TCP connections to `hp` that never say anything (each given 2 s to
/// connect; those that could not are left out).
async fn silent(hp: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let tries = (0..n).map(|_| tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(hp)));
    futures::future::join_all(tries).await.into_iter().filter_map(|r| r.ok()?.ok()).collect()
}

/// A call over TCP by a legitimate member of the system; its error as text.
async fn call(hp: &str) -> Result<u32, String> {
    let addr = Addr::Tcp(hp.to_owned());
    furrow::connect(&addr, async |p| p.run(whoami, ()).await).await.map_err(|e: Error| e.to_string())
}

/// `call` until it succeeds, within 15 s.
async fn call_until_through(hp: &str) -> anyhow::Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call(hp).await {
            Ok(pid) => return Ok(pid),
            Err(e) if Instant::now() < deadline => {
                println!("  (not yet: {e})");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("a legitimate caller never got through: {e}"),
        }
    }
}

/// `Config::max_unauthenticated`'s documented default.
const MAX_UNAUTHENTICATED: u64 = 64;

#[furrow_testing::test]
async fn a_flood_of_silent_tcp_connections_is_capped_and_named() -> anyhow::Result<()> {
    let log = furrow_testing::socket_dir().join("guarded.log");
    let log_text = log.to_string_lossy().into_owned();
    let run = furrow::open_nursery(async |n| {
        let p = n.start_actor_with("guarded", SpawnOptions::new().bind(["tcp://127.0.0.1:0".parse()?])).await?;
        let hp = p
            .addrs()
            .iter()
            .find_map(|a| if let Addr::Tcp(hp) = a { Some(hp.clone()) } else { None })
            .context("the actor listens on TCP")?;
        p.run(log_to, (log_text.clone(),)).await?;
        let base = p.run(fd_count, ()).await?;
        // Room for the 64 connections that may authenticate at once, and
        // some, but far from room for the flood.
        p.run(set_fd_limit, (base + 100,)).await?;

        // 1. 400 silent connections.
        let flood = silent(&hp, 400).await;
        let during = p.run(fd_count, ()).await;
        println!("{} silent connections made; the actor holds {during:?} fds ({base} before)", flood.len());
        let during = during.context("the flood took every file descriptor of the actor")?;
        ensure!(
            during <= base + MAX_UNAUTHENTICATED + 8,
            "the actor holds {during} file descriptors with a flood on it ({base} before)"
        );
        // A legitimate caller gets through, or is told why not.
        match call(&hp).await {
            Ok(pid) => ensure!(pid == p.aid().pid),
            Err(e) => {
                println!("during the flood: {e}");
                ensure!(e.contains("Config::max_unauthenticated"), "{e}");
            }
        }
        drop(flood);
        ensure!(call_until_through(&hp).await? == p.aid().pid);

        // 2. Fewer descriptors left than the flood takes: accept fails
        //    (EMFILE); callers are told so, not left to time out.
        let now = p.run(fd_count, ()).await?;
        p.run(set_fd_limit, (now + 10,)).await?;
        let flood = silent(&hp, 100).await;
        let t = Instant::now();
        let e = call(&hp).await.err().context("a caller got through with no descriptor left")?;
        println!("out of descriptors, after {:?}: {e}", t.elapsed());
        ensure!(e.contains("out of file descriptors") && e.contains("EMFILE"), "{e}");
        drop(flood);
        p.run(set_fd_limit, (base + 100,)).await?;
        ensure!(call_until_through(&hp).await? == p.aid().pid);
        Ok(())
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_file(&log)?;
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    println!("{} warning and error lines logged by the flooded actor:", lines.len());
    for l in lines.iter().take(40) {
        println!("  {l}");
    }
    run?;
    ensure!(lines.len() <= 30, "{} lines logged for the floods", lines.len());
    ensure!(lines.iter().any(|l| l.contains("EMFILE")), "the log must name the exhaustion");
    Ok(())
}
