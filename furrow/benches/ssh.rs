//! Spawn to serving over ssh: cold (a new ssh connection per spawn) and
//! through a `ControlMaster` connection reused, beside a local spawn,
//! measured in the same run.
//!
//! ```text
//! cargo bench -p furrow-actors --bench ssh          # 30 spawns of each kind
//! cargo bench -p furrow-actors --bench ssh -- 100   # more
//! ```
//!
//! The far host is the tests' fixture (`furrow_testing::ssh::SshHost`): a
//! real sshd in a network namespace of its own, reached over a veth pair,
//! ed25519 keys. So it needs root and sshd; without them it says why and
//! measures nothing. Each sample is `start_actor_with` until it returns
//! (the child serves), then the child is cancelled and its exit awaited
//! before the next. One pass, unpinned: ssh and sshd are separate
//! processes doing crypto, and pinning them to one CPU measures
//! something no user runs.
//!
//! - **local**: `start_actor` on this host (fork, exec, UDS handshake).
//! - **ssh, cold**: `ControlMaster no`: each spawn is a new ssh
//!   connection (TCP, key exchange, user authentication, a session), the
//!   remote shell, then the child's exec and its TCP handshake back.
//! - **ssh, ControlMaster reused**: `ControlMaster auto`, `ControlPersist`:
//!   the first spawn (not counted) opens the master connection, every
//!   other one is a new session on it. The master is closed at the end
//!   (`ssh -O exit`).
//! - **`ssh host true`**, cold and through the master: what ssh and the
//!   far login shell cost alone (the far user's shell start-up files run:
//!   bash reads `~/.bashrc` for a command over ssh), the floor under the
//!   two above.

mod support;

use furrow::SpawnOptions;
use furrow_testing::ssh::SshHost;
use std::time::{Duration, Instant};

async fn spawns(n: usize, opts: impl Fn() -> SpawnOptions) -> furrow::Result<Vec<Duration>> {
    furrow::open_nursery(async |nursery| {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let p = nursery.start_actor_with(format!("w{i}"), opts()).await?;
            out.push(t.elapsed());
            // Ended before the next: one far child at a time.
            p.cancel_actor().await?;
        }
        Ok(out)
    })
    .await
}

fn main() {
    furrow::enter_child_if_spawned();
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(30).max(2);
    let far = match SshHost::start() {
        Ok(h) => h,
        Err(why) => {
            println!("ssh bench: skipped, measured nothing: {why}");
            return;
        }
    };
    let cfg_file = far.ssh_config();
    let control = cfg_file.with_file_name("cm-%C");
    let mux_args = || {
        [
            "-o".to_owned(),
            "ControlMaster=auto".to_owned(),
            "-o".to_owned(),
            format!("ControlPath={}", control.display()),
            "-o".to_owned(),
            "ControlPersist=60".to_owned(),
        ]
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cfg = furrow::Config::new("ssh-bench").bind([far.bind_addr()]);
    let figures = rt.block_on(furrow::run_root(cfg, async {
        let local = spawns(n, SpawnOptions::new).await?;
        let cold = spawns(n, || SpawnOptions::new().launcher(far.launcher())).await?;
        // The first opens the master connection: not counted.
        let mux = || SpawnOptions::new().launcher(far.launcher().args(mux_args()));
        let mut reused = spawns(n + 1, mux).await?;
        reused.remove(0);
        Ok((local, cold, reused))
    }));
    // ssh alone, for the floor: cold, then through a master (opened by
    // the first, not counted, and closed below).
    let ssh_true = |extra: &[String]| {
        let t = Instant::now();
        let st = std::process::Command::new("ssh")
            .arg("-F")
            .arg(&cfg_file)
            .args(extra)
            .args(["-T", "-p", "22"])
            .arg(far.destination().trim_end_matches(":22"))
            .arg("true")
            .stdin(std::process::Stdio::null())
            .status();
        // A failure is said, not counted, and the master still closed.
        match st {
            Ok(s) if s.success() => Some(t.elapsed()),
            other => {
                eprintln!("ssh true failed: {other:?}");
                None
            }
        }
    };
    let mut true_cold: Vec<Duration> = (0..n).filter_map(|_| ssh_true(&[])).collect();
    let mut true_mux: Vec<Duration> = (0..=n).filter_map(|_| ssh_true(&mux_args())).skip(1).collect();
    // The master outlives its sessions (ControlPersist): closed here,
    // whatever happened above.
    let _ = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&cfg_file)
        .args(mux_args())
        .args(["-O", "exit", "-p", "22"])
        .arg(far.destination().trim_end_matches(":22"))
        .stderr(std::process::Stdio::null())
        .status();
    let (mut local, mut cold, mut reused) = match figures {
        Ok(Ok(f)) => f,
        Ok(Err(e)) | Err(e) => {
            eprintln!("ssh bench failed: {e}");
            std::process::exit(1);
        }
    };
    println!("ssh bench (unpinned; far host: sshd in a network namespace, over a veth pair):");
    println!("  {:<36} {:>11} {:>11} {:>11}", "spawn to serving", "median", "p99", "slowest");
    support::show_latencies("local (start_actor)", &mut local);
    support::show_latencies("over ssh, cold", &mut cold);
    support::show_latencies("over ssh, ControlMaster reused", &mut reused);
    if true_cold.is_empty() || true_mux.is_empty() {
        eprintln!("ssh bench: `ssh host true` failed");
        std::process::exit(1);
    }
    support::show_latencies("`ssh host true`, cold", &mut true_cold);
    support::show_latencies("`ssh host true`, ControlMaster", &mut true_mux);
}
