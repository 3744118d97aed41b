//! The test harness for furrow programs.
//!
//! Integration tests that spawn actors need three things a normal
//! `#[test]` cannot give them:
//!
//! 1. **Child mode first.** A child actor is the test binary re-executed;
//!    its `main` must enter child mode before anything else. So the test
//!    target is `harness = false` and its `main` is [`main`].
//! 2. **One process per test.** Each test runs in a fresh process (the
//!    harness re-executes itself), with its own socket directory, so tests
//!    cannot disturb each other and every leak is attributable.
//! 3. **Leak checks that cannot lie.** The per-test process makes itself a
//!    *child subreaper*, so orphaned grandchildren come back to it and are
//!    seen. After the test body: no live or unreaped descendant, no file
//!    left in the socket directory, and the same set of open fds as before.
//!    Any of those fails the test, naming what leaked.
//!
//! ```toml
//! [[test]]
//! name = "integration"
//! path = "tests/integration/main.rs"
//! harness = false
//! ```
//!
//! ```ignore
//! // tests/integration/main.rs
//! mod rpc_call;
//! fn main() { furrow_testing::main() }
//!
//! // tests/integration/rpc_call.rs
//! #[furrow::remote]
//! async fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! #[furrow_testing::test]
//! async fn call_returns() -> anyhow::Result<()> {
//!     furrow::open_nursery(async |n| {
//!         let p = n.start_actor("adder").await?;
//!         assert_eq!(p.run(add, (1, 2)).await?, 3);
//!         Ok(())
//!     }).await?;
//!     Ok(())
//! }
//! ```
//!
//! A test that cannot run on this machine (it needs root, sshd) ends
//! itself with [`skip`]: reported `ignored (reason)`, never as passed, and
//! a failure under `CI=true`. [`ssh::SshHost`] is a far host for tests: a
//! real sshd in a network namespace of the test's own.
//!
//! The harness prints libtest's usual summary (`test result: ok. N
//! passed; …`) and accepts its usual arguments (a name filter, `--exact`,
//! `--list`, `--test-threads`). `FURROW_TEST_TIMEOUT` (seconds, default
//! 120) bounds each test; a test past it is a *hang report*: each actor
//! of its tree is asked for its dump (SIGUSR1, see [`ask_for_dumps`])
//! before the tree is killed, so its stderr says what every dialog was
//! waiting for. A failing test's stdout and stderr are printed;
//! `FURROW_TEST_SHOW_OUTPUT=1` prints a passing test's stdout too (the
//! figures some tests report).
//!
//! Stopping the harness stops its tests: on Ctrl-C (SIGINT), SIGTERM or
//! SIGHUP it kills each running test's tree and removes its files before
//! it exits (with 128 + the signal); if the harness is SIGKILLed, each
//! test process dies with it and its actors end by themselves.

pub mod chaos;
mod leak;
pub mod ssh;
mod stop;
mod sys;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use furrow_macros::test;
pub use leak::{LeakReport, Process, descendants, process};

const ONE_TEST_ENV: &str = "FURROW_TEST_ONE";
const TIMEOUT_ENV: &str = "FURROW_TEST_TIMEOUT";
const DIR_ENV: &str = "FURROW_TEST_DIR";
const SCENARIO_ENV: &str = "FURROW_TEST_SCENARIO";
/// Set (to anything) to print a passing test's stdout too.
const SHOW_OUTPUT_ENV: &str = "FURROW_TEST_SHOW_OUTPUT";

/// Used by `#[furrow_testing::test]`. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use linkme;

    /// One registered test.
    #[derive(Debug)]
    pub struct TestCase {
        /// `crate::module::function`.
        pub name: &'static str,
        /// Environment variables for the test's process.
        pub env: &'static [(&'static str, &'static str)],
        /// A scenario (started by other tests), not a test.
        pub scenario: bool,
        /// Runs the test body.
        pub run: Body,
    }

    /// A test's body.
    #[derive(Debug, Clone, Copy)]
    pub enum Body {
        /// An `async fn`: run as the root actor of the test's tree.
        Async(fn() -> futures::future::BoxFuture<'static, Result<(), String>>),
        /// A plain `fn`: run on the main thread with no runtime around it
        /// (it starts its own, e.g. a `furrow::blocking::Runtime` on
        /// [`root_config`](crate::root_config)).
        Sync(fn() -> Result<(), String>),
    }

    /// Every test of the binary, collected at link time.
    #[linkme::distributed_slice]
    pub static TESTS: [TestCase];

    /// What a test function may return.
    pub trait IntoTestResult {
        /// Ok, or the failure message.
        fn into_test_result(self) -> Result<(), String>;
    }

    impl IntoTestResult for () {
        fn into_test_result(self) -> Result<(), String> {
            Ok(())
        }
    }

    impl<E: std::fmt::Debug> IntoTestResult for Result<(), E> {
        fn into_test_result(self) -> Result<(), String> {
            self.map_err(|e| format!("{e:?}"))
        }
    }
}

static SOCKET_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The socket directory of the running test (inside a test body).
///
/// ```no_run
/// #[furrow_testing::test]
/// async fn leaves_no_socket_behind() -> anyhow::Result<()> {
///     furrow::open_nursery(async |n| n.start_actor("worker").await.map(drop)).await?;
///     let left: Vec<_> = std::fs::read_dir(furrow_testing::socket_dir())?.collect();
///     # let _ = left;
///     Ok(())
/// }
/// ```
pub fn socket_dir() -> &'static Path {
    SOCKET_DIR.get().map(PathBuf::as_path).unwrap_or(Path::new("/nonexistent"))
}

fn display_name(full: &str) -> &str {
    // Drop the crate name: `integration::rpc_call::x` -> `rpc_call::x`.
    full.split_once("::").map(|(_, rest)| rest).unwrap_or(full)
}

/// The harness `main`: child mode, then one test in this process (when
/// re-executed for it), or else every selected test, each in its own
/// process.
///
/// ```no_run
/// // tests/integration/main.rs (a `harness = false` test target)
/// #[furrow_testing::test]
/// async fn a_root_starts() -> anyhow::Result<()> {
///     furrow::local_aid()?;
///     Ok(())
/// }
///
/// fn main() {
///     furrow_testing::main()
/// }
/// ```
pub fn main() -> ! {
    furrow::enter_child_if_spawned();
    if let Ok(name) = std::env::var(ONE_TEST_ENV) {
        std::process::exit(run_one(&name));
    }
    if let Ok(name) = std::env::var(SCENARIO_ENV) {
        std::process::exit(run_scenario(&name));
    }
    // Test directories of an earlier harness that was SIGKILLed (its
    // cleanup never ran, nor its tests' own) are cleared before new ones
    // are made.
    let cleared = leak::sweep_abandoned_dirs();
    if cleared > 0 {
        eprintln!("furrow-testing: removed {cleared} test director(y/ies) left by a killed test run");
    }
    // A Ctrl-C or SIGTERM to the harness ends the tests it runs too.
    stop::watch_signals();
    let args = libtest_mimic::Arguments::from_args();
    let mut cases: Vec<&'static __private::TestCase> = __private::TESTS.iter().filter(|c| !c.scenario).collect();
    cases.sort_by_key(|c| c.name);
    let trials = cases
        .into_iter()
        .map(|c| libtest_mimic::Trial::ignorable_test(display_name(c.name), move || run_isolated(c)))
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// A scenario process: the registered function `name` as the root of a
/// tree, exactly as `#[furrow::main]` runs a program (Ctrl-C handling
/// included). Exit status 0 on `Ok`, 1 on `Err`.
fn run_scenario(name: &str) -> i32 {
    // SAFETY: nothing else runs yet (no threads).
    unsafe { std::env::remove_var(SCENARIO_ENV) };
    let Some(case) = __private::TESTS.iter().find(|c| c.name.ends_with(name) && c.scenario) else {
        eprintln!("no scenario named {name}");
        return 2;
    };
    let result = match case.run {
        __private::Body::Async(run) => furrow::block_on_root(run()),
        __private::Body::Sync(run) => run(),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("scenario {name} failed: {e}");
            1
        }
    }
}

/// A command that starts the scenario `name` (a function registered with
/// `#[furrow_testing::test(scenario)]`) as a separate root process, using
/// this test's socket directory. Its stdout is piped.
///
/// ```no_run
/// use tokio::io::{AsyncBufReadExt, BufReader};
///
/// /// Another program of the system: prints its pid, then serves.
/// #[furrow_testing::test(scenario)]
/// async fn scenario_service() -> anyhow::Result<()> {
///     println!("pid {}", std::process::id());
///     std::future::pending::<anyhow::Result<()>>().await
/// }
///
/// #[furrow_testing::test]
/// async fn finds_a_separately_started_program() -> anyhow::Result<()> {
///     let mut service = furrow_testing::scenario("scenario_service").spawn()?;
///     let out = service.stdout.take().expect("stdout is piped");
///     let first = BufReader::new(out).lines().next_line().await?;
///     println!("started: {first:?}");
///     // … find it through the registry, call it …
///     service.kill().await?; // `kill_on_drop` is set too
///     Ok(())
/// }
/// ```
pub fn scenario(name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(scenario_command(name));
    cmd.kill_on_drop(true);
    cmd
}

/// [`scenario`] for sync tests: the same command as a
/// `std::process::Command` (stdin null, stdout piped). Wait for the child
/// yourself: a `std` child is not killed when dropped.
pub fn scenario_command(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = Command::new(exe);
    cmd.env(SCENARIO_ENV, name).env(furrow::SOCKET_DIR_ENV, socket_dir()).stdin(Stdio::null()).stdout(Stdio::piped());
    cmd
}

/// Like [`scenario`], but run through a wrapper command: `prefix` is the
/// program and its leading arguments, the scenario's executable is appended
/// (e.g. `["ip", "netns", "exec", "ns1"]` runs it in a network namespace).
/// The wrapper must `exec` the program, so its pid is the scenario's.
///
/// ```no_run
/// # fn demo() -> std::io::Result<()> {
/// // The scenario `scenario_far_host` in the network namespace `ns1`.
/// let child = furrow_testing::scenario_via(&["ip", "netns", "exec", "ns1"], "scenario_far_host").spawn()?;
/// # let _ = child; Ok(()) }
/// ```
pub fn scenario_via(prefix: &[&str], name: &str) -> tokio::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let (program, args) = prefix.split_first().map(|(p, a)| (*p, a)).unwrap_or(("env", &[]));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg(exe)
        .env(SCENARIO_ENV, name)
        .env(furrow::SOCKET_DIR_ENV, socket_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Remove the socket files in this test's socket directory that nobody
/// listens on any more, as the next root started there would (its stale
/// sweep): for tests that SIGKILL an actor, which cannot remove its own.
/// Returns how many were removed.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let mut service = furrow_testing::scenario("scenario_service").spawn()?;
/// // … later: SIGKILL that separate root; nobody removes its socket file.
/// service.kill().await?;
/// assert!(furrow_testing::sweep_stale_sockets() >= 1);
/// # Ok(()) }
/// ```
pub fn sweep_stale_sockets() -> usize {
    leak::sweep_stale_sockets_in(socket_dir())
}

/// Wait until none of `pids` is alive any more, reaping those that were
/// orphaned to this (subreaper) process. A process that dies while this
/// runs is reaped too: a zombie whose parent is this process is reaped,
/// never skipped. `Err` lists the ones still there
/// after `within`.
///
/// ```no_run
/// use std::time::Duration;
/// # fn demo(root_pid: i32, tree: Vec<u32>) -> Result<(), String> {
/// // SIGKILL a tree's root: every descendant must end by itself.
/// unsafe { libc::kill(root_pid, libc::SIGKILL) };
/// furrow_testing::wait_gone(&tree, Duration::from_secs(2))?;
/// # Ok(()) }
/// ```
pub fn wait_gone(pids: &[u32], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let mut left = Vec::new();
        let me = std::process::id() as i32;
        for &pid in pids {
            let Some(p) = process(pid as i32) else {
                continue; // gone
            };
            if p.is_zombie() {
                if p.ppid == me {
                    // Our (adopted) zombie: reap it; it returns at once.
                    sys::reap(pid as i32);
                }
                // A zombie of someone else's is no longer running; its
                // parent reaps it (or we will, once it is adopted).
                continue;
            }
            left.push(pid);
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("still running after {within:?}: {left:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Exit status of a test process that skipped itself ([`skip`]): the one
/// automake gives a skipped test.
const SKIP_EXIT: i32 = 77;

/// The line, on the test process's stderr, that says why it skipped.
const SKIP_MARK: &str = "furrow-testing: skipped: ";

/// End the running test as *ignored*, saying why: the harness prints it
/// as `ignored (reason)` and counts it as ignored, never as passed. For a
/// test that cannot run on this machine (it needs root, `sshd`, network
/// namespaces). Call it before the test starts anything (it ends the test
/// process at once, without its leak checks).
///
/// Under `CI=true` a skip is a failure: CI is where such tests must run.
///
/// ```no_run
/// #[furrow_testing::test]
/// async fn needs_root() -> anyhow::Result<()> {
///     // SAFETY: geteuid has no preconditions.
///     if unsafe { libc::geteuid() } != 0 {
///         furrow_testing::skip("needs root: it creates network namespaces");
///     }
///     Ok(())
/// }
/// ```
pub fn skip(reason: impl std::fmt::Display) -> ! {
    use std::io::Write;
    let reason = reason.to_string().replace('\n', " ");
    let _ = std::io::stdout().flush();
    eprintln!("{SKIP_MARK}{reason}");
    let _ = std::io::stderr().flush();
    std::process::exit(SKIP_EXIT)
}

/// Whether this run is CI's (`CI=true`), where nothing may skip.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Parent side: run test `name` in a fresh process of this binary.
fn run_isolated(case: &__private::TestCase) -> Result<libtest_mimic::Completion, libtest_mimic::Failed> {
    let name = case.name;
    let env: Vec<(String, String)> = case.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let run = run_process((ONE_TEST_ENV, name), &env, test_timeout())?;
    match run.status {
        Some(st) if st.success() => {
            if std::env::var_os(SHOW_OUTPUT_ENV).is_some() && !run.stdout.is_empty() {
                println!("--- {} stdout ---\n{}", display_name(name), run.stdout);
            }
            Ok(libtest_mimic::Completion::Completed)
        }
        Some(st) if st.code() == Some(SKIP_EXIT) => {
            let reason = run
                .stderr
                .lines()
                .find_map(|l| l.strip_prefix(SKIP_MARK))
                .unwrap_or("exit status 77, no reason given")
                .to_owned();
            if under_ci() {
                return Err(format!(
                    "skipped under CI=true, where it must run: {reason}\n--- stdout ---\n{}--- stderr ---\n{}",
                    run.stdout, run.stderr
                )
                .into());
            }
            Ok(libtest_mimic::Completion::ignored_with(reason))
        }
        Some(st) => {
            Err(format!("test process ended with {st}\n--- stdout ---\n{}--- stderr ---\n{}", run.stdout, run.stderr)
                .into())
        }
        None => Err(format!(
            "test hung: killed after {:?} (each actor of its tree was asked for its dump first: see \
             `SIGUSR1: dump of` in its stderr)\n--- stdout ---\n{}--- stderr ---\n{}",
            run.elapsed, run.stdout, run.stderr
        )
        .into()),
    }
}

/// `FURROW_TEST_TIMEOUT`, or 120 s.
fn test_timeout() -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

/// What one isolated process did.
struct ProcessRun {
    /// Exit status; `None` when it was killed for running past its timeout.
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Run this binary again with `select` (an environment variable naming what
/// to run) and `env`, in a process group of its own, with its own socket
/// directory and secret (removed afterwards, even if it had to be killed);
/// kill the whole group after `timeout`.
fn run_process(select: (&str, &str), env: &[(String, String)], timeout: Duration) -> Result<ProcessRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    // The parent owns the test's socket directory, so it is removed even
    // when the test process had to be killed.
    let dir = leak::make_socket_dir().map_err(|e| format!("cannot create the test's socket directory: {e}"))?;
    // The test's own secret (TCP authentication), beside its socket
    // directory: never the user's real one, and removed with it.
    let secret = dir.with_extension("secret");
    struct RemoveDir(std::path::PathBuf, std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let _dir = RemoveDir(dir.clone(), secret.clone());
    let mut cmd = Command::new(exe);
    cmd.env(select.0, select.1)
        .env(DIR_ENV, &dir)
        .env(furrow::SECRET_FILE_ENV, &secret)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Registered, so a Ctrl-C to the harness ends it too (`stop`).
    let mut child = stop::spawn_registered(&mut cmd, dir.clone(), secret.clone())
        .map_err(|e| format!("cannot start the test process: {e}"))?;
    // Drain both pipes on threads so a chatty test cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > timeout => {
                // A hang report first: every actor of the tree writes its
                // dump (what each dialog waits for) to the stderr we
                // capture, then the whole group is killed.
                let tree = ask_for_dumps(child.id() as i32, HANG_DUMP_WAIT);
                // The process group we created.
                sys::kill_group(child.id() as i32, rustix::process::Signal::KILL);
                // The root's children lead process groups of their own:
                // killed by pid, as found a moment ago (ending only what
                // this test started).
                for pid in tree {
                    sys::kill(pid, rustix::process::Signal::KILL);
                }
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                stop::unregister(child.id());
                return Err(format!("waiting for the test process: {e}"));
            }
        }
    };
    stop::unregister(child.id());
    let elapsed = start.elapsed();
    // A process that outlived the test process (it should not: the leak
    // check fails the test first) would hold the pipes open: end the group.
    // The process group we created; harmless if empty.
    sys::kill_group(child.id() as i32, rustix::process::Signal::KILL);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(ProcessRun { status, stdout, stderr, elapsed })
}

/// How long a hung test's actors get to write their dumps.
const HANG_DUMP_WAIT: Duration = Duration::from_secs(1);

/// Send SIGUSR1 to `root` and every process below it, so each furrow actor
/// among them writes its dump (`furrow::dump`) to its stderr, and give
/// them `wait` to do so. A process that is not a furrow actor dies of it
/// (SIGUSR1's default action): only for a tree about to be killed anyway.
///
/// The harness does this for a test that runs past its timeout, and the
/// chaos runner for a run past its bound; a test may call it itself, e.g.
/// when its own deadline passes, before it cancels the tree.
///
/// ```no_run
/// # async fn demo(work: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
/// if tokio::time::timeout(std::time::Duration::from_secs(5), work).await.is_err() {
///     // What was everyone waiting for?
///     let _ = furrow_testing::ask_for_dumps(std::process::id() as i32, std::time::Duration::from_millis(500));
///     anyhow::bail!("deadline passed");
/// }
/// # Ok(()) }
/// ```
///
/// Returns the pids it signalled below `root` (not `root` itself).
pub fn ask_for_dumps(root: i32, wait: Duration) -> Vec<i32> {
    let below: Vec<i32> = leak::descendants(root).into_iter().filter(|d| d.state != 'Z').map(|d| d.pid).collect();
    for &pid in std::iter::once(&root).chain(&below) {
        // A pid just read from /proc below `root` (a pid reused since is
        // the only risk, as for any kill by pid; the window is this loop).
        sys::kill(pid, rustix::process::Signal::USR1);
    }
    std::thread::sleep(wait);
    below
}

/// Child side: run one test, then the leak checks. Returns the exit code.
fn run_one(name: &str) -> i32 {
    stop::die_with_harness();
    // SAFETY: nothing else runs yet (no threads); removing our own variable
    // keeps it out of the environment of the actors this test spawns.
    unsafe { std::env::remove_var(ONE_TEST_ENV) };
    let Some(case) = __private::TESTS.iter().find(|c| c.name == name) else {
        eprintln!("no test named {name}");
        return 2;
    };
    match case.run {
        __private::Body::Async(run) => run_as_test_root(name, run()),
        __private::Body::Sync(run) => run_sync_test(name, run),
    }
}

/// The configuration of a test's root actor: named `test-root`, in the
/// test's own socket directory (and so with its own registrar). A sync test
/// starts its `furrow::blocking::Runtime` with it.
///
/// ```no_run
/// /// A sync test: no runtime around it; it starts its own root.
/// #[furrow_testing::test]
/// fn sync_code_drives_a_tree() -> anyhow::Result<()> {
///     let rt = furrow::blocking::Runtime::new(furrow_testing::root_config())?;
///     rt.open_nursery(|n| {
///         let _p = n.start_actor("worker")?;
///         furrow::Ok(())
///     })?;
///     Ok(())
/// }
/// ```
pub fn root_config() -> furrow::Config {
    furrow::Config::new("test-root").socket_dir(socket_dir())
}

/// The parts of a test process shared by async and sync tests: become a
/// subreaper, find the socket directory. `Err` is the exit code.
fn prepare_test_process() -> Result<PathBuf, i32> {
    let dir = std::env::var_os(DIR_ENV).map(PathBuf::from);
    // SAFETY: nothing else runs yet (no threads).
    unsafe { std::env::remove_var(DIR_ENV) };
    if let Err(e) = leak::become_subreaper() {
        eprintln!("cannot become a child subreaper: {e}");
        return Err(2);
    }
    let dir = match dir.map(Ok).unwrap_or_else(leak::make_socket_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create the test's socket directory: {e}");
            return Err(2);
        }
    };
    let _ = SOCKET_DIR.set(dir.clone());
    Ok(dir)
}

/// Warm up what tokio opens once per process and never closes (the signal
/// pipe used to reap children and to hear signals), so it is not mistaken
/// for a leak.
fn warm_up_tokio(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child());
    });
}

/// The leak check and the exit code of a finished test.
fn finish_test(
    name: &str,
    dir: &Path,
    fds_before: &std::collections::BTreeMap<i32, String>,
    outcome: Result<(), String>,
) -> i32 {
    let report = leak::check(dir, fds_before);
    let mut code = 0;
    if let Err(msg) = outcome {
        eprintln!("{msg}");
        code = 1;
    }
    if !report.is_clean() {
        eprintln!("leak check failed after {name}:\n{report}");
        code = 1;
    }
    let _ = std::fs::remove_dir_all(dir);
    code
}

/// A sync test: run `body` on this thread, which is not inside any runtime,
/// then check for leaks (with the runtime it started shut down by then).
fn run_sync_test(name: &str, body: fn() -> Result<(), String>) -> i32 {
    let dir = match prepare_test_process() {
        Ok(d) => d,
        Err(code) => return code,
    };
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => warm_up_tokio(&rt),
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return 2;
        }
    }
    let fds_before = leak::open_fds();
    let outcome = body().map_err(|msg| format!("test failed: {msg}"));
    finish_test(name, &dir, &fds_before, outcome)
}

/// In a process started by [`run_process`]: become a subreaper, run `body`
/// as the root actor `test-root` (registrar of the test's socket
/// directory), then check for leaks. Returns the exit code: 0 when `body`
/// is `Ok` and nothing leaked.
fn run_as_test_root(name: &str, body: futures::future::BoxFuture<'static, Result<(), String>>) -> i32 {
    let dir = match prepare_test_process() {
        Ok(d) => d,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return 2;
        }
    };
    warm_up_tokio(&rt);
    // The test root logs like any furrow program (RUST_LOG), so a failing
    // test's stderr shows both sides.
    furrow::__private::init_logging();
    let fds_before = leak::open_fds();
    let result = rt.block_on(furrow::run_root(root_config(), body));
    let outcome = match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(format!("test failed: {msg}")),
        Err(e) => Err(format!("could not start the root actor: {e:?}")),
    };
    // Checked before the runtime shuts down, as before: the runtime's own
    // fds were open before the test too.
    let code = finish_test(name, &dir, &fds_before, outcome);
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}
