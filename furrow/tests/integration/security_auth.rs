//! Nobody outside the system gets anything run: TCP peers must prove they
//! know the secret before any message is acted on, UDS peers must be our
//! uid, and an actor serves only the functions it exposes.

use crate::raw_peer::{Raw, aid_msg};
use anyhow::{Context as _, bail, ensure};
use furrow::ErrorKind;
use furrow::proto::codec;
use furrow::proto::{Aid, Msg, Payload};
use furrow::{Addr, SpawnOptions};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long a raw peer waits to be answered or disconnected: an intruder
/// is dealt with promptly.
const BOUND: Duration = Duration::from_secs(5);

/// The side effect that must not happen for an outsider: creates `path`.
#[furrow::remote]
async fn touch(path: String) -> bool {
    std::fs::write(&path, b"ran").is_ok()
}

pub mod exposed {
    /// The one function of this module: served by an actor that exposes
    /// only this module.
    #[furrow::remote]
    pub async fn hello() -> String {
        "hello".into()
    }
}

/// A well-formed `Start` of `touch(marker)`.
fn start_touch(me: &Aid, marker: &Path) -> anyhow::Result<Msg> {
    #[derive(serde::Serialize)]
    struct Kw<'a> {
        path: &'a str,
    }
    let path = marker.to_str().context("utf-8 path")?;
    Ok(Msg::Start {
        cid: 1,
        ns: module_path!().to_owned(),
        func: "touch".into(),
        kwargs: Payload::encode(&Kw { path })?,
        uid: me.clone(),
    })
}

fn tcp_of(p: &furrow::Portal) -> anyhow::Result<String> {
    p.addrs()
        .iter()
        .find_map(|a| if let Addr::Tcp(hp) = a { Some(hp.clone()) } else { None })
        .context("the actor listens on TCP")
}

#[furrow_testing::test]
async fn unauthenticated_tcp_start_runs_nothing_and_is_disconnected() -> anyhow::Result<()> {
    let dir = furrow_testing::socket_dir().to_path_buf();
    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("guarded", SpawnOptions::new().bind(["tcp://127.0.0.1:0".parse()?])).await?;
        let hp = tcp_of(&p)?;
        let me = Aid::new("intruder", std::process::id());

        // 1. Ignores the challenge and sends a handshake and a well-formed
        //    Start right away.
        let marker = dir.join("intruder-1");
        let mut raw = Raw::new(tokio::net::TcpStream::connect(&hp).await?, me.clone()).bounded(BOUND);
        raw.send(&aid_msg(&me)).await?;
        raw.send_after_refusal_is_possible(&start_touch(&me, &marker)?).await?;
        match raw.recv().await? {
            Some(Msg::Challenge { nonce }) => ensure!(nonce.len() == 32),
            other => bail!("expected a challenge first, got {other:?}"),
        }
        // Disconnected, with nothing else said.
        let next = raw.recv().await?;
        ensure!(next.is_none(), "expected the connection closed, got {next:?}");

        // 2. Answers the challenge with a proof made without the secret.
        let marker2 = dir.join("intruder-2");
        let mut raw = Raw::new(tokio::net::TcpStream::connect(&hp).await?, me.clone()).bounded(BOUND);
        let Some(Msg::Challenge { .. }) = raw.recv().await? else { bail!("no challenge") };
        raw.send(&Msg::Auth { nonce: vec![7; 32], mac: vec![0; 32] }).await?;
        raw.send_after_refusal_is_possible(&aid_msg(&me)).await?;
        raw.send_after_refusal_is_possible(&start_touch(&me, &marker2)?).await?;
        let next = raw.recv().await?;
        ensure!(next.is_none(), "a wrong proof must be refused: got {next:?}");

        // 3. An oversized first frame is refused before it is read.
        let mut raw = Raw::new(tokio::net::TcpStream::connect(&hp).await?, me.clone()).bounded(BOUND);
        let Some(Msg::Challenge { .. }) = raw.recv().await? else { bail!("no challenge") };
        // (Only a header: the acceptor refuses it from the length alone.)
        let _ = raw.s.write_all(&(64u32 << 20).to_le_bytes()).await;
        ensure!(raw.recv().await?.is_none());

        // Control: the same call from inside the system has its effect, so
        // the absence of the files above is the refusal, not a broken
        // function.
        let control = dir.join("insider");
        ensure!(p.run(touch, (control.to_string_lossy().into_owned(),)).await?);
        ensure!(control.exists(), "the insider's call must run");
        std::fs::remove_file(&control)?;
        ensure!(!marker.exists() && !marker2.exists(), "an unauthenticated Start ran a function");
        // The actor is unharmed and still serves over TCP.
        let who = furrow::connect(&Addr::Tcp(hp), async |q| furrow::Ok(q.aid().clone())).await?;
        ensure!(who == *p.aid());
        Ok(())
    })
    .await
}

/// Connects to `FURROW_TEST_TARGET` and prints `ok NAME` or `error: ...`.
#[furrow_testing::test(scenario)]
async fn scenario_connect_target() -> anyhow::Result<()> {
    let target: Addr = std::env::var("FURROW_TEST_TARGET")?.parse()?;
    match furrow::connect(&target, async |p| furrow::Ok(p.aid().name.clone())).await {
        Ok(name) => println!("ok {name}"),
        Err(e) => println!("error: {e}"),
    }
    Ok(())
}

#[furrow_testing::test]
async fn a_program_with_another_secret_is_refused() -> anyhow::Result<()> {
    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("guarded", SpawnOptions::new().bind(["tcp://127.0.0.1:0".parse()?])).await?;
        let target = format!("tcp://{}", tcp_of(&p)?);
        let run = |secret: Option<std::path::PathBuf>| {
            let mut cmd = furrow_testing::scenario("scenario_connect_target");
            cmd.env("FURROW_TEST_TARGET", &target);
            if let Some(s) = secret {
                cmd.env(furrow::SECRET_FILE_ENV, s);
            }
            async move {
                let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await??;
                anyhow::Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            }
        };
        // Same secret file (inherited): accepted.
        let same = run(None).await?;
        ensure!(same == "ok guarded", "{same}");
        // Another secret (a file created on the spot): refused, clearly.
        let other = furrow_testing::socket_dir().with_extension("other-secret");
        let refused = run(Some(other.clone())).await;
        let _ = std::fs::remove_file(&other);
        let refused = refused?;
        ensure!(
            refused.starts_with("error: authentication with") && refused.contains("refused our proof"),
            "{refused}"
        );
        println!("{refused}");
        Ok(())
    })
    .await
}

#[furrow_testing::test]
async fn uds_peer_of_another_uid_is_refused() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        furrow_testing::skip("needs root to run a peer under another uid");
    }
    // A socket other users can reach (a misconfiguration furrow never makes
    // itself: its sockets live in a 0700 directory): the uid check is the
    // last line of defence, and it must hold on its own.
    let public = std::env::temp_dir().join(format!("furrow-public-{}", std::process::id()));
    std::fs::create_dir_all(&public)?;
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(public.clone());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o755))?;
    let sock = public.join("guarded.sock");
    let marker = public.join("marker");
    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("guarded", SpawnOptions::new().bind([Addr::Uds(sock.clone())])).await?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777))?;
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o777))?;
        let me = Aid::new("nobody", std::process::id());
        let mut frames = codec::encode_to_bytes(&aid_msg(&me), 1 << 20)?.to_vec();
        frames.extend_from_slice(&codec::encode_to_bytes(&start_touch(&me, &marker)?, 1 << 20)?);
        let code = tokio::task::spawn_blocking(move || as_nobody_send(&sock, &frames)).await??;
        match code {
            0 => {}
            10 => bail!("the actor answered a peer of another uid"),
            12 => bail!("the other uid could not even connect (test setup): cannot show the uid check"),
            c => bail!("peer process failed with code {c}"),
        }
        ensure!(!marker.exists(), "a peer of another uid ran a function");
        // The actor is unharmed.
        ensure!(p.run(exposed::hello, ()).await? == "hello");
        Ok(())
    })
    .await
}

/// Fork a process that becomes uid/gid 65534, connects to `sock`, writes
/// `frames`, and reports: 0 closed without a byte, 10 got an answer, 11
/// read error, 12 could not connect. Only async-signal-safe calls after
/// the fork.
fn as_nobody_send(sock: &Path, frames: &[u8]) -> anyhow::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = sock.as_os_str().as_bytes();
    ensure!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: after fork the child only makes raw system calls on memory
    // prepared before the fork, then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork failed: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            libc::alarm(10);
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(13);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0 || libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                libc::_exit(12);
            }
            libc::write(fd, frames.as_ptr().cast(), frames.len());
            let mut b = [0u8; 64];
            let n = libc::read(fd, b.as_mut_ptr().cast(), b.len());
            libc::_exit(if n == 0 {
                0
            } else if n > 0 {
                10
            } else if *libc::__errno_location() == libc::ECONNRESET {
                0
            } else {
                11
            });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(libc::WIFEXITED(status), "peer process killed by a signal: status {status}");
    Ok(libc::WEXITSTATUS(status))
}

#[furrow_testing::test]
async fn only_exposed_modules_are_served() -> anyhow::Result<()> {
    let marker = furrow_testing::socket_dir().join("unexposed-ran");
    furrow::open_nursery(async |n| {
        let only = format!("{}::exposed", module_path!());
        let p = n.start_actor_with("narrow", SpawnOptions::new().enable_modules([only.clone()])).await?;
        ensure!(p.run(exposed::hello, ()).await? == "hello");

        let err = p.run(touch, (marker.to_string_lossy().into_owned(),)).await.unwrap_err();
        let r = err.as_remote().context("a remote refusal")?;
        ensure!(r.kind() == &ErrorKind::ModuleNotExposed, "{err:?}");
        ensure!(r.message.contains("touch") && r.message.contains(&only), "{}", r.message);
        ensure!(!marker.exists(), "an unexposed function ran");

        // Not registered at all: a different, equally clear refusal.
        let err = p.run_by_name::<_, ()>(&format!("{only}::nope"), &()).await.unwrap_err();
        let r = err.as_remote().context("a remote refusal")?;
        ensure!(r.kind() == &ErrorKind::FunctionNotFound, "{err:?}");
        ensure!(r.message.contains("nope"), "{}", r.message);
        // And the actor keeps serving.
        ensure!(p.run(exposed::hello, ()).await? == "hello");
        Ok(())
    })
    .await
}
