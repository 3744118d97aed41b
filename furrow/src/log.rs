//! Logging setup for root and child actors, and the spans that say who is
//! speaking.
//!
//! Every line an actor logs starts with the actor's name and pid, so the
//! interleaved output of a tree on one terminal says who said what.
//!
//! **Spans.** Each process has one `actor` span (fields `name`, `uuid`,
//! `pid`, and `host` for an actor started through a launcher, level ERROR
//! so that any enabled event carries it); every task the
//! runtime spawns (accept loops, channel readers and writers, discovery,
//! served calls and contexts) is instrumented with it, and so is the root's
//! own future (`run_root`, `#[furrow::main]`) and a child's actor loop.
//! Each dialog runs under a `context` span (contexts) or a `call` span
//! (plain calls), level INFO, fields `cid`, `func`, `peer` and `side`
//! (`opener` or `callee`), a child of the actor span: `RUST_LOG=info` (or
//! `furrow=info`) shows them; at the default `warn` they cost nothing per
//! call (a disabled span is not created).
//!
//! Tasks *your* code spawns with `tokio::spawn` carry no span unless you
//! instrument them (`tracing::Instrument`), as anywhere with tracing.

use std::fmt;
use std::sync::OnceLock;
use tracing::{Event, Span, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static LABEL: OnceLock<String> = OnceLock::new();
static ACTOR_SPAN: OnceLock<Span> = OnceLock::new();
/// Set for an actor started through a launcher (ssh, a command prefix):
/// its host, said in every line it logs.
static HOST: OnceLock<String> = OnceLock::new();

/// Say this process's host in its log lines: the label becomes `name@pid
/// on host`, and the actor span gets a `host` field. For an actor started
/// through a launcher, whose lines may be read far from its host (relayed
/// over ssh to its parent's terminal, or collected); a local child is on
/// its parent's host by construction, and a root's host is where it was
/// started, so theirs say none. Call before [`set_actor`].
pub(crate) fn say_host(host: &str) {
    let _ = HOST.set(host.to_owned());
}

/// Name this process's log lines after its actor (first call wins), and
/// fill in the actor span's name and uuid (and host, see [`say_host`]).
pub(crate) fn set_actor(aid: &furrow_proto::Aid) {
    let label = match HOST.get() {
        Some(h) => format!("{}@{} on {h}", aid.name, aid.pid),
        None => format!("{}@{}", aid.name, aid.pid),
    };
    if LABEL.set(label).is_ok() {
        let span = actor_span();
        span.record("name", aid.name.as_str());
        span.record("uuid", tracing::field::display(aid.uuid));
        if let Some(h) = HOST.get() {
            span.record("host", h.as_str());
        }
    }
}

/// This process's `actor` span. Created on first use, which must come after
/// [`init`] (a span created before a subscriber exists is disabled for
/// good); its name and uuid are recorded by [`set_actor`].
pub(crate) fn actor_span() -> Span {
    ACTOR_SPAN
        .get_or_init(|| {
            tracing::error_span!(
                target: "furrow",
                parent: None,
                "actor",
                name = tracing::field::Empty,
                uuid = tracing::field::Empty,
                pid = std::process::id(),
                host = tracing::field::Empty
            )
        })
        .clone()
}

/// The span a dialog runs under: `context` or `call`, a child of the actor
/// span; the actor span itself when dialog spans are disabled (so events
/// inside still name the actor).
pub(crate) fn dialog_span(context: bool, cid: Option<u64>, func: &str, peer: &furrow_proto::Aid, side: &str) -> Span {
    let actor = actor_span();
    // `cid: None` declares the field without a value (the opener records
    // it once the dialog is allocated).
    let span = if context {
        tracing::info_span!(target: "furrow", parent: &actor, "context", cid, func, peer = %peer, side)
    } else {
        tracing::info_span!(target: "furrow", parent: &actor, "call", cid, func, peer = %peer, side)
    };
    if span.is_disabled() { actor } else { span }
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
///
/// `root`: this process is the root of its tree. With the `tokio-console`
/// feature, only a root serves tokio-console (see [`console`]).
pub(crate) fn init(filter: Option<&str>, root: bool) {
    let directive =
        filter.map(str::to_owned).or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "warn".to_owned());
    console::install(EnvFilter::new(directive), root);
}

/// The stderr layer: `[name@pid]`, then tracing's full format.
fn fmt_layer<S>() -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        // Colours only for a terminal: not in files or pipes. (Set before
        // the event format, which keeps it.)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(DefaultFields::new())
        .event_format(ActorPrefix(Format::default()))
        .with_writer(std::io::stderr)
}

/// The optional tokio-console layer.
///
/// *Decision:* only a root serves it (on `TOKIO_CONSOLE_BIND`, default
/// `127.0.0.1:6669`): children of one tree would all try the same port, and
/// a port per child would have to be found before anyone could connect.
/// Watch a child's tasks by running it as the root of a test program, or
/// use `furrow tree --watch` for the whole tree.
mod console {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    /// Install the stderr layer (filtered by `filter`) and, with the
    /// feature and in a root, the console layer beside it (unfiltered by
    /// `RUST_LOG`: it needs tokio's own trace-level spans).
    pub(super) fn install(filter: EnvFilter, root: bool) {
        let registry = tracing_subscriber::registry();
        #[cfg(feature = "tokio-console")]
        if root {
            let _ = registry.with(console_subscriber::spawn()).with(super::fmt_layer().with_filter(filter)).try_init();
            return;
        }
        let _ = root;
        let _ = registry.with(super::fmt_layer().with_filter(filter)).try_init();
    }
}

/// At most one log line per interval for a condition that peers can make
/// recur at will (connections refused before they authenticated, a full
/// file-descriptor table): the first occurrence is logged, and the next
/// line an interval later says how many were held back in between. A flood
/// of bad connections then costs a few lines, not one per connection.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: std::time::Duration,
    state: std::sync::Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last: Option<std::time::Instant>,
    held: u64,
}

impl Throttle {
    pub(crate) fn new(every: std::time::Duration) -> Throttle {
        Throttle { every, state: std::sync::Mutex::new(ThrottleState::default()) }
    }

    /// `Some(note)` when a line may be logged now, `note` saying how many
    /// were held back since the last one (empty when none); `None` when
    /// this one is held back.
    pub(crate) fn admit(&self) -> Option<String> {
        let now = std::time::Instant::now();
        let mut s = crate::sync::lock(&self.state);
        if s.last.is_some_and(|t| now.duration_since(t) < self.every) {
            s.held += 1;
            return None;
        }
        s.last = Some(now);
        let held = std::mem::take(&mut s.held);
        Some(if held == 0 {
            String::new()
        } else {
            format!(" ({held} more like it not logged in the last {:?})", self.every)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_logs_once_per_interval_and_counts_the_rest() {
        let t = Throttle::new(std::time::Duration::from_millis(50));
        assert_eq!(t.admit().as_deref(), Some(""));
        assert!((0..1000).all(|_| t.admit().is_none()));
        std::thread::sleep(std::time::Duration::from_millis(60));
        let note = t.admit().unwrap();
        assert!(note.contains("1000 more like it"), "{note}");
        assert!(t.admit().is_none());
    }
}
