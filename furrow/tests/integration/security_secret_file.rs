//! Secret files that are not a usable secret (issue 14, defect 8): a
//! program that needs the secret fails at once, naming the file and what
//! is wrong with it. Before, a FIFO without a writer hung it for good
//! (deaf to SIGINT and SIGTERM), `/dev/zero` was read until memory ran out,
//! a 1-byte secret was accepted, a 40 MB one made every spawn fail with a
//! frame-size error that did not mention the secret, and binary bytes gave
//! "stream did not contain valid UTF-8".
//!
//! Each case is a separate program (`security_auth::scenario_connect_target`)
//! dialling a TCP actor with `FURROW_SECRET_FILE` pointing at the file.

use anyhow::{Context as _, ensure};
use furrow::{Addr, SpawnOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The program's bound: a hang is the bug.
const BOUND: Duration = Duration::from_secs(20);

/// Run the dialling program with `secret` as its secret file; what it
/// printed, and how long it took.
async fn dial_with(target: &str, secret: &Path) -> anyhow::Result<(String, Duration)> {
    let mut cmd = furrow_testing::scenario("scenario_connect_target");
    cmd.env("FURROW_TEST_TARGET", target).env(furrow::SECRET_FILE_ENV, secret);
    // A regression reading `/dev/zero` must not take the machine's memory
    // with it: 4 GiB of address space is plenty for the program.
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the
    // child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 4 << 30, rlim_max: 4 << 30 };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let out = tokio::time::timeout(BOUND, cmd.output()).await.context("the program hung loading its secret")??;
    Ok((String::from_utf8_lossy(&out.stdout).trim().to_owned(), started.elapsed()))
}

/// `bytes` in a private file `name` beside the test's socket directory.
fn private_file(name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let f = furrow_testing::socket_dir().with_extension(name);
    std::fs::write(&f, bytes)?;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Removes the files it holds when dropped (the test's leftovers, whatever
/// fails).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[furrow_testing::test]
async fn a_secret_file_that_is_no_usable_secret_fails_at_once_naming_it() -> anyhow::Result<()> {
    let fifo = furrow_testing::socket_dir().with_extension("fifo-secret");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())?;
    // SAFETY: mkfifo on a path of the test's own.
    ensure!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0, "mkfifo: {}", std::io::Error::last_os_error());
    let mut cleanup = Cleanup(vec![fifo.clone()]);
    let short = private_file("short-secret", b"x\n")?;
    let huge = private_file("huge-secret", &vec![b'k'; 40 << 20])?;
    let binary = private_file("binary-secret", &(0..32u8).map(|i| i.wrapping_mul(37) ^ 0xf0).collect::<Vec<_>>())?;
    cleanup.0.extend([short.clone(), huge.clone(), binary.clone()]);

    furrow::open_nursery(async |n| {
        let p = n.start_actor_with("guarded", SpawnOptions::new().bind(["tcp://127.0.0.1:0".parse()?])).await?;
        let target = p
            .addrs()
            .iter()
            .find_map(|a| if let Addr::Tcp(hp) = a { Some(format!("tcp://{hp}")) } else { None })
            .context("the actor listens on TCP")?;
        let cases: [(&Path, String); 4] = [
            (&fifo, "is a FIFO (named pipe), not a regular file: point FURROW_SECRET_FILE".into()),
            (Path::new("/dev/zero"), "is a character device, not a regular file".into()),
            (&short, "holds a secret of 1 byte; a secret is at least 16 bytes".into()),
            (&huge, format!("is {} bytes; a secret is at most 4096 bytes (is it the right file?)", 40 << 20)),
        ];
        for (file, why) in cases {
            let (said, took) = dial_with(&target, file).await?;
            let want = format!("error: secret file {} {why}", file.display());
            ensure!(said.starts_with(&want), "{}: {said:?}, expected it to start with {want:?}", file.display());
            println!("{} ({took:?}): {said}", file.display());
        }
        // Binary bytes are a secret like any other: loaded, and then (it is
        // not the system's) refused by the peer, not by the loading.
        let (said, _) = dial_with(&target, &binary).await?;
        ensure!(said.starts_with("error: authentication with") && said.contains("refused our proof"), "{said}");
        Ok(())
    })
    .await
}
