//! What every furrow bench shares: the raw baselines' runtime, the
//! pinned second pass, and the table that puts furrow beside the limit.
//!
//! **Two passes, one run.** A bench measures once as a user would see it
//! (the scheduler free to place each process on any CPU), then runs itself
//! again with every process pinned to CPU 0 (`sched_setaffinity`, which
//! its children inherit) and prints that pass too. Unpinned figures on a
//! small VM are what a user gets, and are noisy: a wake-up that crosses
//! CPUs costs what the hypervisor makes it cost. Pinned figures are the
//! CPU cost of the work, stable to a few percent, and what a change to
//! furrow should be judged by. `FURROW_BENCH_PASSES=unpinned` (or
//! `pinned`) runs one pass only. `FURROW_BENCH_RAW=skip` measures furrow
//! alone (for a profiler, whose samples the raw baselines would dilute).

#![allow(dead_code)] // each bench uses part of it

use std::time::Duration;

/// Set in the pinned pass's process: the CPU every process is pinned to.
const PINNED_ENV: &str = "FURROW_BENCH_PINNED";
const PASSES_ENV: &str = "FURROW_BENCH_PASSES";
const RAW_SWITCH_ENV: &str = "FURROW_BENCH_RAW";

/// Whether to measure the raw baselines (`FURROW_BENCH_RAW=skip`: no).
pub(crate) fn raw_wanted() -> bool {
    !matches!(std::env::var(RAW_SWITCH_ENV).as_deref(), Ok("skip"))
}

/// A bench's whole `main`: serve as a child actor or as the raw limit's
/// child when this process is one (`raw_env` set: its value goes to
/// `raw_child`), else run `measure` with the first number on the command
/// line (`cargo bench` passes `--bench` first), or `default`, in each pass.
pub(crate) fn main(raw_env: &str, raw_child: fn(&str), default: usize, measure: fn(usize)) {
    furrow::enter_child_if_spawned();
    if let Ok(spec) = std::env::var(raw_env) {
        raw_child(&spec);
        return;
    }
    let n = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(default);
    if start() {
        measure(n);
    }
    run_pinned_pass();
}

/// Which pass this process runs.
pub(crate) fn pass_name() -> &'static str {
    if std::env::var_os(PINNED_ENV).is_some() { "pinned to CPU 0" } else { "unpinned" }
}

/// Call first in `main` (after `furrow::enter_child_if_spawned`). In the
/// pinned pass's process, pins it (and so everything it starts) to one
/// CPU and returns `false`, that pass runs here. Otherwise returns `true`
/// when the unpinned pass should run here; call [`run_pinned_pass`] after it.
pub(crate) fn start() -> bool {
    if let Ok(cpu) = std::env::var(PINNED_ENV) {
        let cpu: usize = cpu.parse().expect("FURROW_BENCH_PINNED is a CPU number");
        pin_to(cpu);
        return true;
    }
    !matches!(std::env::var(PASSES_ENV).as_deref(), Ok("pinned"))
}

/// Unless told otherwise, run this bench again, with the same arguments,
/// pinned to CPU 0, and let it print its figures.
pub(crate) fn run_pinned_pass() {
    if std::env::var_os(PINNED_ENV).is_some() || matches!(std::env::var(PASSES_ENV).as_deref(), Ok("unpinned")) {
        return;
    }
    println!();
    let exe = std::env::current_exe().expect("the bench's own executable");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "0")
        .status()
        .expect("run the pinned pass");
    assert!(status.success(), "the pinned pass failed: {status}");
}

fn pin_to(cpu: usize) {
    // SAFETY: `set` is a properly initialised cpu_set_t on our stack, and
    // pid 0 means this thread (the only one: called before any runtime).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity: {}", std::io::Error::last_os_error());
    }
}

/// The runtime a raw baseline's side runs on: plain tokio, the best it
/// does for a ping-pong (one thread: no wake-up crosses threads), and
/// outside any furrow root, so furrow's runtime choices cost it nothing.
pub(crate) fn raw_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// Start this bench's executable again as a raw limit's child: `raw_env`
/// set to `spec` (what `main` hands to the bench's `raw_child`), killed if
/// the handle is dropped.
pub(crate) fn start_raw_child(raw_env: &str, spec: String) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().expect("the bench's own executable"))
        .env(raw_env, spec)
        .kill_on_drop(true)
        .spawn()
        .expect("start the raw child")
}

/// A directory of this bench run's own for raw sockets, removed by `Drop`.
pub(crate) struct ScratchDir(pub(crate) std::path::PathBuf);

impl ScratchDir {
    pub(crate) fn new(tag: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!("furrow-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bench scratch dir");
        ScratchDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Rounds a bench alternates raw and furrow for (`FURROW_BENCH_ROUNDS`,
/// default 3), reporting each figure's median. Why: the VM these benches
/// were written on has episodes of seconds in which even a raw Unix socket
/// moves bytes 50 times slower than usual (`python3` and a socketpair
/// show it: 6 GB/s, then 0.1 GB/s for 3 s, then 6 again); a figure taken
/// once can fall into one, and a ratio of two such figures means nothing.
pub(crate) fn rounds() -> usize {
    std::env::var("FURROW_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1)
}

/// The median of `v` (empty: 0).
pub(crate) fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub(crate) fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `v` sorted: its `p` quantile.
pub(crate) fn quantile(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// One row of latencies: `label`, then the median, p99 and slowest of
/// `v` (sorted here) in ms, and how many samples.
pub(crate) fn show_latencies(label: &str, v: &mut [Duration]) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {label:<36} {:>8.2} ms {:>8.2} ms {:>8.2} ms  ({} samples)",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(v[v.len() - 1]),
        v.len()
    );
}

/// The value of line `key` (`VmRSS:`, `Pss:` …) of `/proc/<pid>/<file>`,
/// in KiB: one reader for every such figure.
fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("a /proc file of a live process");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

/// The resident set of process `pid`, in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// The memory only process `pid` holds, in KiB (its private pages,
/// `Private_Clean + Private_Dirty`): what one more such process costs, the
/// pages of the binary and the libraries it shares with its siblings not
/// counted.
pub(crate) fn private_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("/proc/<pid>/smaps_rollup");
    rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// Process `pid`'s proportional set size, in KiB (`Pss` in
/// `smaps_rollup`): its private pages plus its share of every page it
/// shares, each divided by the number of processes mapping it. Summed over
/// a tree, it is the memory the tree holds, with no shared page counted
/// twice.
pub(crate) fn pss_kib(pid: u32) -> u64 {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// One figure: the raw limit beside furrow's.
pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) raw: f64,
    pub(crate) furrow: f64,
    pub(crate) unit: &'static str,
    /// Whether more is better (a rate) or less (a time, a size).
    pub(crate) higher_is_better: bool,
}

impl Row {
    pub(crate) fn time(figure: impl Into<String>, raw: Duration, furrow: Duration) -> Row {
        let (r, f) = (raw.as_secs_f64(), furrow.as_secs_f64());
        let (scale, unit) = if r.max(f) >= 1e-3 { (1e3, "ms") } else { (1e6, "µs") };
        Row { figure: figure.into(), raw: r * scale, furrow: f * scale, unit, higher_is_better: false }
    }

    pub(crate) fn rate(figure: impl Into<String>, raw: f64, furrow: f64, unit: &'static str) -> Row {
        Row { figure: figure.into(), raw, furrow, unit, higher_is_better: true }
    }

    pub(crate) fn size(figure: impl Into<String>, raw_kib: u64, furrow_kib: u64) -> Row {
        Row {
            figure: figure.into(),
            raw: raw_kib as f64 / 1024.0,
            furrow: furrow_kib as f64 / 1024.0,
            unit: "MiB",
            higher_is_better: false,
        }
    }
}

/// Print `rows` under `title`: figure, raw limit, furrow, and how furrow
/// compares (`×` the raw time or size, `%` of the raw rate). Raw figures
/// show as skipped when not measured (see [`raw_wanted`]).
pub(crate) fn print_table(title: &str, rows: &[Row]) {
    println!("{title} ({}):", pass_name());
    println!("  {:<44} {:>17} {:>17} {:>9}", "figure", "raw limit", "furrow", "furrow is");
    for r in rows {
        let raw = if raw_wanted() { r.raw } else { f64::NAN };
        let vs = if raw.is_nan() {
            String::from("-")
        } else if r.higher_is_better {
            format!("{:.1}%", 100.0 * r.furrow / raw)
        } else {
            format!("{:.2}x", r.furrow / raw)
        };
        let num = |v: f64| {
            if v.is_nan() {
                String::from("skipped")
            } else if v >= 1e4 {
                format!("{:.0} {}", v, r.unit)
            } else {
                format!("{:.2} {}", v, r.unit)
            }
        };
        println!("  {:<44} {:>17} {:>17} {:>9}", r.figure, num(raw), num(r.furrow), vs);
    }
}
