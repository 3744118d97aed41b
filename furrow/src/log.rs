//! Logging setup for root and child actors.
//!
//! Every line an actor logs starts with the actor's name and pid, so the
//! interleaved output of a tree on one terminal says who said what.

use std::fmt;
use std::sync::OnceLock;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static LABEL: OnceLock<String> = OnceLock::new();

/// Name this process's log lines after its actor (first call wins).
pub(crate) fn set_actor(aid: &furrow_proto::Aid) {
    let _ = LABEL.set(format!("{}@{}", aid.name, aid.pid));
}

/// Prefixes each event with the actor label.
struct ActorPrefix(Format<Full>);

impl<S, N> FormatEvent<S, N> for ActorPrefix
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if let Some(label) = LABEL.get() {
            write!(writer, "[{label}] ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// Install a `tracing` subscriber writing to stderr, filtered by `filter`
/// or else `RUST_LOG` (children inherit the parent's environment, so
/// `RUST_LOG` reaches the whole tree), defaulting to `warn`. Does nothing if
/// the program installed its own subscriber.
pub(crate) fn init(filter: Option<&str>) {
    let directive =
        filter.map(str::to_owned).or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        // Colours only for a terminal: not in files or pipes. (Set before
        // the event format, which keeps it.)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(DefaultFields::new())
        .event_format(ActorPrefix(Format::default()))
        .with_env_filter(EnvFilter::new(directive))
        .with_writer(std::io::stderr)
        .try_init();
}
