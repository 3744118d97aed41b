//! Chaos: seeded faults for finding the bugs that only show under a rare
//! interleaving, and replaying them. Compiled only with the `chaos`
//! feature (`off.rs` stands in without it).
//!
//! Two kinds of fault, both configured by one string, from
//! [`Config::chaos`](crate::Config::chaos) or the environment variable
//! [`CHAOS_ENV`] (`FURROW_CHAOS`). Every actor of the tree gets the same
//! string (children inherit it), so one value describes the whole run:
//!
//! - **the chaos transport** ([`transport`]): every channel's reads and
//!   writes are cut into random pieces (down to one byte), some frames are
//!   delayed, and every connection can be made to fail after its N-th frame;
//! - **process faults** ([`fault`]): one named actor kills (`SIGKILL`) or
//!   freezes (`SIGSTOP`) itself at a chosen step of a dialog.
//!
//! ```text
//! FURROW_CHAOS=seed=42                      random pieces of 1..=64 bytes
//! FURROW_CHAOS=seed=42;frag=1               every read and write one byte
//! FURROW_CHAOS=seed=42;delay=50;delay_ms=3  5 % of frames wait up to 3 ms before they are written
//! FURROW_CHAOS=seed=42;drop=100             each connection fails at its 100th frame written
//! FURROW_CHAOS=seed=42;fault=kill:worker:yield:7
//!                                           `worker` SIGKILLs itself when sending its 7th Yield
//! ```
//!
//! Keys are separated by `;` (or `,`). Without `fault`, no process fault;
//! `frag=0` turns the fragmenting off (a process fault alone).
//!
//! Reproducibility: within one process the same seed gives the same pieces
//! and delays in the same order, and a process fault fires at exactly the
//! same step. Across processes the interleaving is the scheduler's, so a
//! failing seed is replayed by running it again (and again), not byte for
//! byte. The scenario runner (`furrow-testing`'s `chaos` module) turns one
//! seed into a whole configuration and prints the command that replays it.

pub(crate) mod fault;
pub(crate) mod transport;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Environment variable that turns chaos on for every actor started from
/// that environment: `seed=N` (required) and any of `frag=N`, `delay=‰`,
/// `delay_ms=N`, `drop=N`, `fault=ACTION:ACTOR:STEP[:N]`, separated by `;`
/// or `,` (see the design doc's "Chaos" section).
///
/// Only with the `chaos` feature: without it, the variable is not read (a
/// program built without it cannot be made to fault from its
/// environment). The program under test must be built with it, e.g.
/// `cargo build --features furrow-actors/chaos` (the dependency's name in
/// the program's manifest).
///
/// ```no_run
/// // Run a program's whole tree with 1..=3-byte reads and writes, and its
/// // `worker` killed the 5th time it is about to send a stream item.
/// let status = std::process::Command::new("target/debug/my-app")
///     .env(furrow::CHAOS_ENV, "seed=42;frag=3;fault=kill:worker:yield:5")
///     .status()?;
/// # let _ = status;
/// # Ok::<(), std::io::Error>(())
/// ```
pub const CHAOS_ENV: &str = "FURROW_CHAOS";

/// What chaos does in this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChaosConfig {
    /// Seed of every generator.
    pub(crate) seed: u64,
    /// Largest piece per read or write (pieces are 1..=frag bytes); 0: no
    /// fragmenting.
    pub(crate) frag: usize,
    /// Per mille of frames delayed before they are written.
    pub(crate) delay_per_mille: u32,
    /// Longest delay.
    pub(crate) delay_max: Duration,
    /// Fail the connection when this many frames have been written.
    pub(crate) drop_at_frame: Option<u64>,
    /// A process fault.
    pub(crate) fault: Option<fault::Fault>,
}

impl ChaosConfig {
    /// Parse `seed=N[;frag=N][;delay=PER_MILLE][;delay_ms=N][;drop=N][;fault=…]`
    /// (`,` separates too); a bare number is the seed.
    pub(crate) fn parse(s: &str) -> Result<ChaosConfig, String> {
        let mut c = ChaosConfig {
            seed: 0,
            frag: 64,
            delay_per_mille: 0,
            delay_max: Duration::from_millis(2),
            drop_at_frame: None,
            fault: None,
        };
        let mut seeded = false;
        for part in s.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or(("seed", part));
            let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{CHAOS_ENV}: {k}={v}: {e}"));
            match k {
                "seed" => {
                    c.seed = num(v)?;
                    seeded = true;
                }
                "frag" => c.frag = usize::try_from(num(v)?).unwrap_or(usize::MAX),
                "delay" => c.delay_per_mille = u32::try_from(num(v)?.min(1000)).unwrap_or(1000),
                "delay_ms" => c.delay_max = Duration::from_millis(num(v)?),
                "drop" => c.drop_at_frame = Some(num(v)?),
                "fault" => c.fault = Some(fault::Fault::parse(v).map_err(|e| format!("{CHAOS_ENV}: fault={v}: {e}"))?),
                other => {
                    return Err(format!(
                        "{CHAOS_ENV}: unknown key {other:?} (seed, frag, delay, delay_ms, drop, fault)"
                    ));
                }
            }
        }
        if !seeded {
            return Err(format!("{CHAOS_ENV}: no seed (e.g. {CHAOS_ENV}=seed=42)"));
        }
        Ok(c)
    }

    /// Whether connections are wrapped at all.
    pub(crate) fn wraps_connections(&self) -> bool {
        self.frag > 0 || self.delay_per_mille > 0 || self.drop_at_frame.is_some()
    }
}

/// This process's chaos configuration: set once, by [`install`] or else
/// from [`CHAOS_ENV`] on first use.
static CONFIG: OnceLock<Option<(String, ChaosConfig)>> = OnceLock::new();

/// The configuration in force, if any. A malformed [`CHAOS_ENV`] is
/// reported once and ignored (a root started with a malformed
/// [`Config::chaos`](crate::Config::chaos) fails instead, see [`install`]).
pub(crate) fn config() -> Option<&'static ChaosConfig> {
    CONFIG.get_or_init(from_env).as_ref().map(|(_, c)| c)
}

/// The configuration string in force, to hand to children.
pub(crate) fn spec() -> Option<&'static str> {
    CONFIG.get_or_init(from_env).as_ref().map(|(s, _)| s.as_str())
}

fn from_env() -> Option<(String, ChaosConfig)> {
    let v = std::env::var(CHAOS_ENV).ok()?;
    match ChaosConfig::parse(&v) {
        Ok(c) => {
            tracing::info!("chaos on: {c:?}");
            Some((v, c))
        }
        Err(e) => {
            eprintln!("furrow: {e}; chaos off");
            None
        }
    }
}

/// Install `spec` as this process's configuration (from
/// [`Config::chaos`](crate::Config::chaos)). Fails on a malformed `spec`,
/// or when a different configuration is already in force (one process, one
/// chaos configuration: connections already made used the old one).
pub(crate) fn install(spec: &str) -> Result<(), String> {
    let parsed = ChaosConfig::parse(spec)?;
    let now = CONFIG.get_or_init(|| {
        tracing::info!("chaos on: {parsed:?}");
        Some((spec.to_owned(), parsed.clone()))
    });
    match now {
        Some((_, c)) if *c == parsed => Ok(()),
        Some((s, _)) => Err(format!("chaos is already configured in this process as {s:?}")),
        None => Err(format!("chaos was already found off in this process ({CHAOS_ENV} unset or malformed)")),
    }
}

/// A small, fast, seedable generator (SplitMix64): chaos needs
/// reproducibility, not cryptographic quality.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `1..=max` (`max` ≥ 1).
    pub(crate) fn piece(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max.max(1) as u64) as usize
    }
}

/// The seed of the next connection of this process.
fn connection_seed(base: u64, label: &str) -> u64 {
    static ORDINAL: AtomicU64 = AtomicU64::new(0);
    let n = ORDINAL.fetch_add(1, Ordering::Relaxed);
    let mut h = base ^ 0xF0_22_0E_5C_4A_05;
    for b in label.bytes().chain(n.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use fault::{Action, Fault, Step};

    #[test]
    fn config_parses_and_refuses_nonsense() {
        let c = ChaosConfig::parse("seed=7,frag=1,delay=50,delay_ms=3,drop=10").unwrap();
        assert_eq!(
            c,
            ChaosConfig {
                seed: 7,
                frag: 1,
                delay_per_mille: 50,
                delay_max: Duration::from_millis(3),
                drop_at_frame: Some(10),
                fault: None,
            }
        );
        assert_eq!(ChaosConfig::parse("42").unwrap().seed, 42);
        assert_eq!(ChaosConfig::parse("seed=7;frag=1;delay=50;delay_ms=3;drop=10").unwrap(), c);
        assert!(ChaosConfig::parse("frag=3").unwrap_err().contains("no seed"));
        assert!(ChaosConfig::parse("seed=1,bogus=2").unwrap_err().contains("unknown key"));
        assert!(ChaosConfig::parse("seed=x").is_err());
        let f = ChaosConfig::parse("seed=3;frag=0;fault=stop:leaf-2:cancel:4").unwrap();
        assert!(!f.wraps_connections());
        assert_eq!(f.fault, Some(Fault { action: Action::Stop, actor: "leaf-2".into(), step: Step::Cancel, nth: 4 }));
        assert!(ChaosConfig::parse("seed=3;fault=kill:x:nowhere").unwrap_err().contains("nowhere"));
    }

    #[test]
    fn the_same_seed_gives_the_same_pieces() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..100).map(|_| r.piece(64)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert!(draw(3).iter().all(|&p| (1..=64).contains(&p)));
    }
}
