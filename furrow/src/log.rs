//! Logging setup for root and child actors.

use tracing_subscriber::EnvFilter;

/// Install a `tracing` subscriber writing to stderr, filtered by `filter`
/// or else `RUST_LOG` (children inherit the parent's environment, so
/// `RUST_LOG` reaches the whole tree), defaulting to `warn`. Does nothing if
/// the program installed its own subscriber.
pub(crate) fn init(filter: Option<&str>) {
    let directive =
        filter.map(str::to_owned).or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "warn".to_owned());
    let _ =
        tracing_subscriber::fmt().with_env_filter(EnvFilter::new(directive)).with_writer(std::io::stderr).try_init();
}
