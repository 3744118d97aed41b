//! The test harness itself (`furrow_testing::main`) stopped in the middle
//! of a test: a Ctrl-C, a `timeout`'s SIGTERM or a SIGKILL to the harness
//! leaves none of the tests it was running, nor their actors, behind.
//!
//! Each case starts this binary as a harness of its own, running the
//! fixture `observe_dump::fixture_hangs_in_a_call_when_asked` (a test that
//! hangs in a call to its actor), stops that harness, and checks that the
//! whole tree is gone.

use anyhow::{Context as _, ensure};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What was left after the harness was stopped.
struct Stopped {
    status: std::process::ExitStatus,
    stderr: String,
    /// Every process found below the harness while the fixture hung.
    tree: Vec<u32>,
    /// The fixture's socket directories still there afterwards.
    dirs: Vec<PathBuf>,
}

/// The socket directories (and secrets) of the harness `pid`'s tests.
fn test_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("furrow-test-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).map(|e| e.path()).collect()
        })
        .unwrap_or_default()
}

/// Start a harness on the hanging fixture, wait until the fixture's tree
/// (its test process and the actor it calls) is up, send `sig` to the
/// harness, and see what is left.
fn stop_harness_mid_test(sig: i32) -> anyhow::Result<Stopped> {
    let exe = std::env::current_exe()?;
    let mut harness = std::process::Command::new(exe)
        .args(["--exact", "observe_dump::fixture_hangs_in_a_call_when_asked"])
        .env("FURROW_TEST_HANG_FIXTURE", "1")
        // Far beyond this test's own bounds: only the stop may end it.
        .env("FURROW_TEST_TIMEOUT", "600")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let hpid = harness.id();
    // The test process and its actor, both below the harness.
    let deadline = Instant::now() + Duration::from_secs(30);
    let tree = loop {
        let below = furrow_testing::descendants(hpid as i32);
        if below.len() >= 2 {
            break below;
        }
        if Instant::now() > deadline || harness.try_wait()?.is_some() {
            let _ = harness.kill();
            let _ = harness.wait();
            anyhow::bail!("the fixture's tree never came up: {below:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Into the hanging call.
    std::thread::sleep(Duration::from_millis(500));
    let tree: Vec<u32> = furrow_testing::descendants(hpid as i32)
        .iter()
        .chain(&tree)
        .map(|p| p.pid as u32)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // SAFETY: kill has no memory preconditions; `hpid` is our own child,
    // not yet reaped.
    unsafe { libc::kill(hpid as i32, sig) };
    let mut stderr = String::new();
    if let Some(mut e) = harness.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let status = harness.wait()?;
    // Whatever outlived the harness was adopted by this test process (a
    // subreaper) and is reaped here as it ends.
    if let Err(left) = furrow_testing::wait_gone(&tree, Duration::from_secs(10)) {
        for &pid in &tree {
            // SAFETY: as above; each pid was found below our own child a
            // moment ago, and the survivors are ours now.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = furrow_testing::wait_gone(&tree, Duration::from_secs(10));
        remove_dirs(&test_dirs_of(hpid));
        anyhow::bail!("after the harness got signal {sig}: {left}\nits stderr:\n{stderr}");
    }
    Ok(Stopped { status, stderr, tree, dirs: test_dirs_of(hpid) })
}

fn remove_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = if d.is_dir() { std::fs::remove_dir_all(d) } else { std::fs::remove_file(d) };
    }
}

/// SIGTERM (what `timeout` and CI runners send) and SIGINT (Ctrl-C at a
/// terminal, which reaches only the harness: each test runs in a process
/// group of its own): the harness kills each running test's tree, removes
/// its socket directory and secret, says so, and exits with 128 + the
/// signal.
#[furrow_testing::test]
fn a_harness_stopped_by_sigterm_or_ctrl_c_ends_its_tests_and_their_actors() -> anyhow::Result<()> {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let s = stop_harness_mid_test(sig).with_context(|| name)?;
        let dirs = s.dirs.clone();
        remove_dirs(&dirs);
        ensure!(s.tree.len() >= 2, "{name}: the fixture's tree was {:?}", s.tree);
        ensure!(s.status.code() == Some(128 + sig), "{name}: the harness ended with {}:\n{}", s.status, s.stderr);
        ensure!(
            s.stderr.contains(&format!("furrow-testing: {name}: killed 1 running test(s)")),
            "{name}: the harness did not say what it stopped:\n{}",
            s.stderr
        );
        ensure!(dirs.is_empty(), "{name}: left behind: {dirs:?}");
    }
    Ok(())
}

/// SIGKILL, which the harness cannot see: its test process dies with it
/// (it asked the kernel to), and the test's actor ends because its parent's
/// channel closed. The test's socket directory stays until the next
/// harness run sweeps it (removed here by hand).
#[furrow_testing::test]
fn a_harness_killed_outright_takes_its_tests_and_their_actors_with_it() -> anyhow::Result<()> {
    let s = stop_harness_mid_test(libc::SIGKILL)?;
    remove_dirs(&s.dirs);
    ensure!(s.tree.len() >= 2, "the fixture's tree was {:?}", s.tree);
    ensure!(s.status.signal() == Some(libc::SIGKILL), "the harness ended with {}", s.status);
    Ok(())
}
