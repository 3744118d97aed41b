//! The chaos scenario runner: run scenarios under many seeds, each seed
//! turned into one chaos configuration (transport faults and a process
//! fault, see furrow's `FURROW_CHAOS`), and check the invariants after
//! every run.
//!
//! A scenario is an async function that runs a tree from the test root and
//! checks what only it can know: results exact, nothing delivered twice,
//! nothing lost on the graceful path. It returns the tree's [`Outcome`]
//! (completed, or the error the tree ended with) or an invariant violation.
//! The runner checks the rest, from outside the process:
//!
//! - the run ends within its bound (a hang is killed and reported);
//! - no process, fd or socket file is left (the harness's leak check);
//! - an error is only allowed when a fault was injected, and it must name
//!   the fault: the faulty actor, or the dropped connection, or (for a
//!   frozen actor) the scenario's deadline, or (on a link slowed to pieces
//!   of at most 3 bytes with delayed frames) a bounded wait that timed out;
//! - a run whose fault never fired must complete.
//!
//! A failing run prints its seed, its configuration and the one command
//! that replays it. At the end, a summary per scenario.
//!
//! furrow's `chaos` feature, which compiles the faults in, is turned on by
//! this crate's dependency on furrow: a test target that uses the runner
//! needs no flag, and the program's own (non-test) build stays without it.
//!
//! A chaos target is a `harness = false` test target whose `main` is
//! [`main`] (its actors are the test binary itself, re-executed):
//!
//! ```toml
//! [[test]]
//! name = "chaos"
//! path = "tests/chaos/main.rs"
//! harness = false
//! ```
//!
//! ```no_run
//! // tests/chaos/main.rs
//! use furrow_testing::chaos::{Outcome, Run, Scenario, Target};
//!
//! #[furrow::remote]
//! async fn double(x: u64) -> u64 { x * 2 }
//!
//! /// Ten calls, each answer checked; an error is the tree's outcome.
//! async fn doubling(run: Run) -> Result<Outcome, String> {
//!     let r = furrow::open_nursery(async |n| {
//!         let p = n.start_actor("worker").await?;
//!         for x in 0..10u64 {
//!             let got = p.run(double, (x,)).await?;
//!             if got != 2 * x {
//!                 anyhow::bail!("VIOLATION: double({x}) = {got}");
//!             }
//!         }
//!         Ok(())
//!     });
//!     match tokio::time::timeout(run.deadline, r).await {
//!         Ok(Ok(())) => Ok(Outcome::Completed),
//!         Ok(Err(e)) if format!("{e:#}").contains("VIOLATION") => Err(format!("{e:#}")),
//!         Ok(Err(e)) => Ok(Outcome::Failed(format!("{e:#}"))),
//!         Err(_) => Ok(Outcome::Failed(furrow_testing::chaos::DEADLINE.into())),
//!     }
//! }
//!
//! static SCENARIOS: &[Scenario] = &[Scenario {
//!     name: "doubling",
//!     // A process fault may hit `worker` at its 1st..=10th `Start` or `Return`.
//!     targets: &[Target { actor: "worker", steps: &[("start", 10), ("return", 10)] }],
//!     run: |r| Box::pin(doubling(r)),
//! }];
//!
//! fn main() {
//!     furrow_testing::chaos::main(SCENARIOS)
//! }
//! ```
//!
//! Which seeds: `FURROW_CHAOS_SEEDS` (`17`, `0..1000`, `3,9,12`), default
//! `0..16`. The usual test arguments apply to the `scenario/seed` trial
//! names (a filter, `--exact`, `--test-threads`).

use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Selects the one run a re-executed process performs: `scenario/seed`.
const RUN_ENV: &str = "FURROW_CHAOS_RUN";
/// Which seeds to run: one (`17`), a range (`0..1000`) or a list
/// (`3,9,12`); default `0..16`.
///
/// ```no_run
/// // Replay three seeds of the chaos target.
/// let status = std::process::Command::new("cargo")
///     .args(["test", "-p", "furrow-actors", "--test", "chaos"])
///     .env(furrow_testing::chaos::SEEDS_ENV, "3,9,12")
///     .status()?;
/// # let _ = status;
/// # Ok::<(), std::io::Error>(())
/// ```
pub const SEEDS_ENV: &str = "FURROW_CHAOS_SEEDS";
/// The line a run prints on stdout to report its outcome.
const OUTCOME_PREFIX: &str = "chaos outcome: ";
/// What a faulty actor prints to stderr when its fault fires (furrow's
/// `chaos::fault`).
const FIRED_MARK: &str = "furrow chaos: fault fired";

/// How a tree ended.
///
/// ```
/// use furrow_testing::chaos::Outcome;
/// fn outcome_of(r: furrow::Result<()>) -> Outcome {
///     match r {
///         Ok(()) => Outcome::Completed,
///         Err(e) => Outcome::Failed(e.to_string()), // the runner checks it names the fault
///     }
/// }
/// assert_eq!(outcome_of(Ok(())), Outcome::Completed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did all its work, and the scenario checked the results exactly.
    Completed,
    /// It ended with this error (its `Display`, with its causes).
    Failed(String),
}

/// One seed's setting, given to the scenario.
///
/// ```
/// use furrow_testing::chaos::{Outcome, Run};
/// async fn storm(mut run: Run) -> Result<Outcome, String> {
///     // How many calls this seed makes: reproducible from the seed.
///     let calls = run.rng.range(60, 300);
///     let work = async { /* … `calls` calls, each answer checked … */ furrow::Ok(calls) };
///     match tokio::time::timeout(run.deadline, work).await {
///         Ok(Ok(_)) => Ok(Outcome::Completed),
///         Ok(Err(e)) => Ok(Outcome::Failed(e.to_string())),
///         Err(_) => Ok(Outcome::Failed(format!("seed {}: {}", run.seed, furrow_testing::chaos::DEADLINE))),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Run {
    /// The seed.
    pub seed: u64,
    /// A generator for the scenario's own choices (sizes, counts), seeded
    /// by the seed.
    pub rng: Rng,
    /// How long the scenario's work may take before it gives up (a frozen
    /// actor is only ended this way); an error it returns for that must
    /// contain [`DEADLINE`].
    pub deadline: Duration,
}

/// The word a scenario's error must contain when its deadline passed.
///
/// ```
/// use furrow_testing::chaos::{DEADLINE, Outcome};
/// let gave_up = Outcome::Failed(format!("{DEADLINE} passed with 3 calls unanswered"));
/// # let _ = gave_up;
/// ```
pub const DEADLINE: &str = "deadline";

/// One scenario (see the module documentation for a whole target).
///
/// ```
/// use furrow_testing::chaos::{Outcome, Run, Scenario, Target};
///
/// async fn churn(_run: Run) -> Result<Outcome, String> {
///     Ok(Outcome::Completed)
/// }
///
/// static SCENARIOS: &[Scenario] = &[Scenario {
///     name: "churn",
///     targets: &[Target { actor: "service", steps: &[("start", 3), ("teardown", 1)] }],
///     run: |r| Box::pin(churn(r)),
/// }];
/// # let _ = SCENARIOS;
/// ```
#[derive(Debug)]
pub struct Scenario {
    /// Its name (trial names are `name/seed`).
    pub name: &'static str,
    /// The actors a process fault may hit, with the steps that make sense
    /// for each and the largest N to draw (see furrow's `fault=`).
    pub targets: &'static [Target],
    /// Runs the tree and checks its results.
    pub run: fn(Run) -> BoxFuture<'static, Result<Outcome, String>>,
}

/// An actor a process fault may hit.
///
/// ```
/// use furrow_testing::chaos::Target;
/// // `relay` may be killed or frozen at its 1st..=20th stream item, or
/// // when its teardown begins.
/// const RELAY: Target = Target { actor: "relay", steps: &[("yield", 20), ("teardown", 1)] };
/// # let _ = RELAY;
/// ```
#[derive(Debug)]
pub struct Target {
    /// The actor's name.
    pub actor: &'static str,
    /// Steps (`start`, `started`, `yield`, `return`, `cancel`, `teardown`)
    /// with the largest N for each.
    pub steps: &'static [(&'static str, u64)],
}

/// A small seedable generator (SplitMix64): the same seed gives the same
/// sequence, so a failing run is replayed by its seed.
///
/// ```
/// use furrow_testing::chaos::Rng;
/// let mut a = Rng::new(42);
/// let mut b = Rng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let n = a.range(1, 6); // a die
/// assert!((1..=6).contains(&n));
/// let slow = a.chance(250); // one time in four
/// let size = *a.pick(&[1usize, 64, 4096]);
/// # let _ = (slow, size);
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len().max(1) as u64) as usize]
    }
}

/// What one seed injects.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    /// The `FURROW_CHAOS` value.
    chaos: String,
    /// The process fault: (kill or stop, actor, step, N).
    fault: Option<(&'static str, &'static str, &'static str, u64)>,
    /// Every connection fails after this many frames.
    drop: Option<u64>,
    /// Pieces of at most 3 bytes *and* delayed frames: a link this slow
    /// can outlast furrow's own bounded waits (the 500 ms cancel
    /// acknowledgement with a full stream window ahead of it), so a
    /// timeout is then an error that names the injected fault.
    slow_link: bool,
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
}

impl Plan {
    /// Turn a seed into a configuration. Deterministic: the replay command
    /// only needs the seed.
    fn of(sc: &Scenario, seed: u64) -> Plan {
        let mut rng = Rng::new(seed ^ name_hash(sc.name));
        let frag = *rng.pick(&[0u64, 0, 1, 3, 9, 64]);
        let (delay, delay_ms) = if rng.chance(400) { (rng.range(10, 150), rng.range(1, 5)) } else { (0, 0) };
        // Two runs in three get a process fault; one in ten every
        // connection dropped at some frame.
        let fault = (rng.chance(667) && !sc.targets.is_empty()).then(|| {
            let t = rng.pick(sc.targets);
            let &(step, max_n) = rng.pick(t.steps);
            let action = if rng.chance(200) { "stop" } else { "kill" };
            (action, t.actor, step, rng.range(1, max_n.max(1)))
        });
        let drop = rng.chance(100).then(|| rng.range(10, 400));
        let mut chaos = format!("seed={seed};frag={frag}");
        if delay > 0 {
            let _ = write!(chaos, ";delay={delay};delay_ms={delay_ms}");
        }
        if let Some(n) = drop {
            let _ = write!(chaos, ";drop={n}");
        }
        if let Some((a, actor, step, n)) = fault {
            let _ = write!(chaos, ";fault={a}:{actor}:{step}:{n}");
        }
        Plan { chaos, fault, drop, slow_link: (1..=3).contains(&frag) && delay > 0 }
    }
}

/// Per-scenario tallies for the summary.
#[derive(Debug, Default, Clone)]
struct Tally {
    runs: u64,
    completed: u64,
    failed_as_expected: u64,
    fired: u64,
    violations: u64,
    slowest: Duration,
    total: Duration,
}

static TALLIES: Mutex<BTreeMap<&'static str, Tally>> = Mutex::new(BTreeMap::new());

/// The seeds to run, from [`SEEDS_ENV`].
fn seeds() -> Result<Vec<u64>, String> {
    let Ok(spec) = std::env::var(SEEDS_ENV) else { return Ok((0..16).collect()) };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{SEEDS_ENV}={spec}: {s:?}: {e}"));
        match part.split_once("..") {
            Some((a, b)) => out.extend(num(a)?..num(b)?),
            None => out.push(num(part)?),
        }
    }
    Ok(out)
}

/// The bound on one whole run (hangs are killed at twice this).
const RUN_BOUND: Duration = Duration::from_secs(20);

/// The runner's `main`: child mode first, then one run (when re-executed
/// for it), or else every selected `scenario/seed`, each in its own
/// process, then the summary.
///
/// ```no_run
/// # use furrow_testing::chaos::Scenario;
/// # static SCENARIOS: &[Scenario] = &[];
/// // tests/chaos/main.rs (a `harness = false` test target)
/// fn main() {
///     furrow_testing::chaos::main(SCENARIOS)
/// }
/// ```
pub fn main(scenarios: &'static [Scenario]) -> ! {
    furrow::enter_child_if_spawned();
    if let Ok(sel) = std::env::var(RUN_ENV) {
        std::process::exit(run_here(scenarios, &sel));
    }
    let seeds = match seeds() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    for sc in scenarios {
        for &seed in &seeds {
            trials.push(libtest_mimic::Trial::test(format!("{}/{seed}", sc.name), move || run_checked(sc, seed)));
        }
    }
    // A Ctrl-C or SIGTERM to the runner ends the runs in progress too.
    crate::stop::watch_signals();
    let started = std::time::Instant::now();
    let conclusion = libtest_mimic::run(&args, trials);
    print_summary(started.elapsed());
    conclusion.exit()
}

fn print_summary(elapsed: Duration) {
    let tallies = TALLIES.lock().unwrap_or_else(|p| p.into_inner());
    if tallies.is_empty() {
        return;
    }
    println!("chaos summary ({} s in all):", elapsed.as_secs());
    println!(
        "  {:<22} {:>6} {:>10} {:>14} {:>11} {:>10} {:>9} {:>9}",
        "scenario", "runs", "completed", "failed (named)", "fault fired", "violations", "mean", "slowest"
    );
    for (name, t) in tallies.iter() {
        let mean = t.total.checked_div(t.runs.max(1) as u32).unwrap_or_default();
        println!(
            "  {:<22} {:>6} {:>10} {:>14} {:>11} {:>10} {:>7}ms {:>7}ms",
            name,
            t.runs,
            t.completed,
            t.failed_as_expected,
            t.fired,
            t.violations,
            mean.as_millis(),
            t.slowest.as_millis()
        );
    }
}

/// Parent side: run `sc` under `seed` in a fresh process and check the
/// invariants that need an outside view.
fn run_checked(sc: &'static Scenario, seed: u64) -> Result<(), libtest_mimic::Failed> {
    let plan = Plan::of(sc, seed);
    let sel = format!("{}/{seed}", sc.name);
    let env = vec![(furrow::CHAOS_ENV.to_owned(), plan.chaos.clone())];
    let run = crate::run_process((RUN_ENV, &sel), &env, RUN_BOUND * 2)?;
    let fired = run.stderr.contains(FIRED_MARK);
    let outcome =
        run.stdout.lines().find_map(|l| l.strip_prefix(OUTCOME_PREFIX)).map(|o| match o.strip_prefix("failed: ") {
            Some(e) => Outcome::Failed(e.to_owned()),
            None => Outcome::Completed,
        });
    let verdict = judge(&plan, &run, fired, outcome.as_ref());
    {
        let mut tallies = TALLIES.lock().unwrap_or_else(|p| p.into_inner());
        let t = tallies.entry(sc.name).or_default();
        t.runs += 1;
        t.fired += u64::from(fired);
        t.total += run.elapsed;
        t.slowest = t.slowest.max(run.elapsed);
        match (&verdict, &outcome) {
            (Err(_), _) => t.violations += 1,
            (Ok(()), Some(Outcome::Completed)) => t.completed += 1,
            (Ok(()), _) => t.failed_as_expected += 1,
        }
    }
    verdict.map_err(|why| {
        let exe = std::env::current_exe().ok().and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        let target = exe.as_deref().and_then(|f| f.rsplit_once('-')).map(|(t, _)| t).unwrap_or("chaos");
        // Cargo runs a test binary with its package's name in the
        // environment: the replay names the user's package, not furrow's.
        let package = std::env::var("CARGO_PKG_NAME").map(|p| format!("-p {p} ")).unwrap_or_default();
        format!(
            "invariant violated: {why}\n  seed {seed}, FURROW_CHAOS={}\n  replay: {SEEDS_ENV}={seed} cargo test {package}--test {target} -- {}/{seed} --exact\n--- stdout ---\n{}--- stderr ---\n{}",
            plan.chaos, sc.name, run.stdout, run.stderr
        )
        .into()
    })
}

/// The outside invariants (see the module documentation).
fn judge(plan: &Plan, run: &crate::ProcessRun, fired: bool, outcome: Option<&Outcome>) -> Result<(), String> {
    let Some(status) = run.status else {
        return Err(format!(
            "hung: killed after {:?} (its actors were asked for their dumps first: see `SIGUSR1: dump of` in \
             its stderr)",
            run.elapsed
        ));
    };
    if !status.success() {
        return Err(format!("the run process ended with {status} (a violation or a leak: see its stderr)"));
    }
    if run.elapsed > RUN_BOUND {
        return Err(format!("took {:?}, more than the bound of {RUN_BOUND:?}", run.elapsed));
    }
    let Some(outcome) = outcome else { return Err("no outcome reported".into()) };
    let Outcome::Failed(err) = outcome else { return Ok(()) };
    // An error needs a cause we injected, and must name it.
    let names_fault = plan.fault.as_ref().is_some_and(|&(action, actor, _, _)| {
        fired && (err.contains(actor) || (action == "stop" && err.contains(DEADLINE)))
    });
    let names_drop = plan.drop.is_some() && (err.contains("closed") || err.contains("dropped") || err.contains("lost"));
    let names_slowness = plan.slow_link && err.contains("timed out");
    if names_fault || names_drop || names_slowness {
        return Ok(());
    }
    Err(match (&plan.fault, fired, plan.drop) {
        (None, _, None) if plan.slow_link => format!("the tree failed, not with a timeout of the slow link: {err}"),
        (None, _, None) => format!("the tree failed with no fault injected: {err}"),
        (Some(_), false, None) => format!("the tree failed, but the fault never fired: {err}"),
        _ => format!("the error does not name the fault: {err}"),
    })
}

/// Child side: run one `scenario/seed` as the test root, report its
/// outcome on stdout, then the leak checks. Returns the exit code.
fn run_here(scenarios: &'static [Scenario], sel: &str) -> i32 {
    crate::stop::die_with_harness();
    // SAFETY: nothing else runs yet (no threads).
    unsafe { std::env::remove_var(RUN_ENV) };
    let Some((name, seed)) = sel.rsplit_once('/') else { return 2 };
    let (Some(sc), Ok(seed)) = (scenarios.iter().find(|s| s.name == name), seed.parse::<u64>()) else {
        eprintln!("no chaos run {sel}");
        return 2;
    };
    let run = Run { seed, rng: Rng::new(seed.rotate_left(17) ^ name_hash(name)), deadline: Duration::from_secs(6) };
    let fut = (sc.run)(run);
    crate::run_as_test_root(
        sel,
        Box::pin(async move {
            let outcome = fut.await?;
            match outcome {
                Outcome::Completed => println!("{OUTCOME_PREFIX}completed"),
                Outcome::Failed(e) => println!("{OUTCOME_PREFIX}failed: {}", e.replace('\n', " | ")),
            }
            Ok(())
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing(_: Run) -> BoxFuture<'static, Result<Outcome, String>> {
        Box::pin(async { Ok(Outcome::Completed) })
    }

    static SC: Scenario =
        Scenario { name: "s", targets: &[Target { actor: "w", steps: &[("yield", 50), ("start", 3)] }], run: nothing };

    #[test]
    fn a_seed_always_gives_the_same_plan() {
        for seed in 0..200 {
            assert_eq!(Plan::of(&SC, seed), Plan::of(&SC, seed));
        }
        let plans: Vec<Plan> = (0..300).map(|s| Plan::of(&SC, s)).collect();
        let faults = plans.iter().filter(|p| p.fault.is_some()).count();
        assert!((150..250).contains(&faults), "{faults} faults in 300 plans");
        assert!(plans.iter().any(|p| p.fault.is_some_and(|f| f.0 == "stop")));
        assert!(plans.iter().any(|p| p.drop.is_some()));
        assert!(plans.iter().all(|p| p.chaos.starts_with("seed=")));
    }
}
