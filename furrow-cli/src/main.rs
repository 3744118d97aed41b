//! `furrow`: look at a running furrow system from the command line.
//!
//! ```text
//! furrow ls [--full] [--json]    every registered actor, one line each
//! furrow tree [--full]           the same actors, each under its parent
//! furrow tree --watch [--interval SECS] [--count N] [--stuck-after SECS] [--dump ACTOR]
//!                                the tree, redrawn live with each actor's
//!                                uptime, open contexts and traffic rates,
//!                                actors with a long-waiting dialog marked
//! furrow dump [ACTOR…] [--json]  what each actor's dialogs, children and
//!                                channels are doing now (who waits on whom)
//! ```
//!
//! The command joins the system's registrar as an unlisted root actor
//! ([`Discovery::Join`], `listed(false)`): it never becomes the registrar
//! and never appears in what it shows. The registry address is found as
//! every furrow program finds it (`--registry`, else `$FURROW_REGISTRY`,
//! else `uds://<socket dir>/registry.sock`). With no registrar there, it
//! says so on one line and exits with status 1.
//!
//! This crate only glues: the listing comes from [`furrow::list_actors`],
//! the stats from [`furrow::Portal::stats`], the dumps from
//! [`furrow::Portal::dump`]; the presentation is in [`render`], the live
//! view's loop in [`watch`], the choice of actors to dump in [`dump`].

mod dump;
mod render;
mod watch;

use clap::{Parser, Subcommand};
use furrow::{Addr, Config, Discovery, Error};
use render::UuidWidth;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Look at a running furrow system: which actors are registered, where
/// they listen, and who started whom.
#[derive(Debug, Parser)]
#[command(name = "furrow", version)]
struct Cli {
    /// Registry address(es) of the system [default: $FURROW_REGISTRY, else
    /// uds://DIR/registry.sock, DIR being the socket directory]
    ///
    /// For example uds:///run/user/1000/furrow/registry.sock or tcp://10.0.0.1:7700. Repeatable,
    /// or comma separated: the first address where a registrar answers is used.
    #[arg(long, global = true, value_name = "ADDR", value_delimiter = ',')]
    registry: Vec<Addr>,

    /// Socket directory [default: $FURROW_SOCKET_DIR, else $XDG_RUNTIME_DIR/furrow, else
    /// /tmp/furrow-UID]
    ///
    /// Where the default registry socket is, and where this command's own socket lives while it
    /// runs.
    #[arg(long, global = true, value_name = "DIR")]
    socket_dir: Option<PathBuf>,

    /// File holding the system's shared secret, for a TCP registry [default:
    /// $FURROW_SECRET_FILE, else ~/.config/furrow/secret]
    #[arg(long, global = true, value_name = "PATH")]
    secret_file: Option<PathBuf>,

    /// Give up after this many seconds (joining the registrar and listing).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,

    /// What to show.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// List every registered actor
    ///
    /// One line per actor, newest registration first: name, uuid, pid, parent, whether it is
    /// the registrar, and the addresses it listens on.
    Ls {
        /// Show whole uuids (default: their first 8 hex digits).
        #[arg(long)]
        full: bool,
        /// Print the listing as JSON instead (an array of furrow::ActorInfo; whole uuids).
        #[arg(long, conflicts_with = "full")]
        json: bool,
    },
    /// Show the registered actors as a tree
    ///
    /// Each actor under the one that started it, siblings in start order; an actor whose
    /// parent is not registered starts a tree of its own. A child its parent's supervisor has
    /// restarted N times shows `↻N` after its name (asked of the parents).
    Tree {
        /// Show whole uuids (default: their first 8 hex digits).
        #[arg(long)]
        full: bool,
        /// Redraw the tree every interval, with each actor's uptime, open contexts (both sides)
        /// and messages and bytes per second in and out, until Ctrl-C
        ///
        /// On a terminal the view is redrawn in place; otherwise each frame follows the last,
        /// after a blank line. An actor listed but not answering shows as gone.
        #[arg(long)]
        watch: bool,
        /// Seconds between frames (with --watch).
        #[arg(long, value_name = "SECS", default_value_t = 1.0, requires = "watch")]
        interval: f64,
        /// Stop after this many frames (with --watch).
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
        /// Mark an actor (WAITING column) when one of its dialogs has waited this many seconds
        /// or longer for its peer or for credit (with --watch).
        #[arg(long, value_name = "SECS", default_value_t = 5.0, requires = "watch")]
        stuck_after: f64,
        /// Show this actor's dump under the tree in every frame: a name, pid or uuid prefix
        /// (with --watch).
        #[arg(long, value_name = "ACTOR", requires = "watch")]
        dump: Option<String>,
    },
    /// Show what actors are doing: each open dialog with its state, children, channels
    ///
    /// For each chosen actor (every registered one by default): every call and context in
    /// flight on either side, with its function, peer, age, where its protocol is, what this
    /// side waits for and since when, stream credit and unread values, and any cancel asked; its
    /// children; its channels with the bytes they have queued. Both ends of a dialog show the
    /// same cid. An actor that does not answer is reported, not skipped.
    Dump {
        /// Actors to dump: names, pids or uuid prefixes (at least 4 hex digits)
        actors: Vec<String>,
        /// Print the dumps as JSON instead (an array of furrow::dump::ActorDump).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Never spawned as an actor, but a binary linking furrow must not run
    // its `main` if it ever is.
    furrow::enter_child_if_spawned();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furrow: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(&cli));
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // `furrow ls | head`: the reader went away; not our failure.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("furrow: cannot write the output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(message) => {
            eprintln!("furrow: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Join the system, fetch the listing, render it. `Err` is the one-line
/// message for stderr.
async fn run(cli: &Cli) -> Result<String, String> {
    let mut config = Config::new("furrow-cli").discovery(Discovery::Join).listed(false);
    if let Some(dir) = &cli.socket_dir {
        config = config.socket_dir(dir);
    }
    if !cli.registry.is_empty() {
        config = config.registry(cli.registry.iter().cloned());
    }
    if let Some(file) = &cli.secret_file {
        config = config.secret_file(file);
    }
    let registry = config.resolved_registry().map_err(|e| e.to_string())?;
    let at = registry.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let within = Duration::try_from_secs_f64(cli.timeout).map_err(|e| format!("--timeout {}: {e}", cli.timeout))?;
    match &cli.command {
        &Command::Tree { watch: true, full, interval, count, stuck_after, ref dump } => {
            let interval = Duration::try_from_secs_f64(interval)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--interval {interval}: not a positive number of seconds"))?;
            let stuck_after = Duration::try_from_secs_f64(stuck_after)
                .map_err(|e| format!("--stuck-after {stuck_after}: not a number of seconds: {e}"))?;
            let w = watch::Watch { interval, count, width: width(full), within, stuck_after, dump: dump.clone() };
            watch_in(config, &at, within, w).await.map(|()| String::new())
        }
        Command::Dump { actors: selectors, json } => {
            let (selectors, json, at_inner) = (selectors.clone(), *json, at.clone());
            let work = async move {
                let actors = furrow::list_actors().await.map_err(|e| joining_error(e, &at_inner))?;
                let chosen = dump::select(&actors, &selectors)?;
                let dumps = dump::dump_all(&chosen, within).await;
                if !json {
                    return Ok(dump::text(&dumps));
                }
                // Only the answers: an actor that did not answer is said on
                // stderr, and fails the command.
                let answered: Vec<_> = dumps.iter().filter_map(|d| d.as_ref().ok()).collect();
                let text = render::json(&answered).map_err(|e| format!("cannot encode JSON: {e}"))?;
                let silent: Vec<&String> = dumps.iter().filter_map(|d| d.as_ref().err()).collect();
                if silent.is_empty() {
                    Ok(text)
                } else {
                    print!("{text}");
                    Err(silent.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\nfurrow: "))
                }
            };
            // Joining, listing and the dumps (each bounded by `within`).
            in_system(config, &at, within * 2, work).await
        }
        &Command::Ls { full, json } => {
            let actors = list(config, &at, within).await?;
            if json {
                render::json(&actors).map_err(|e| format!("cannot encode JSON: {e}"))
            } else {
                Ok(render::table(&actors, width(full)))
            }
        }
        &Command::Tree { full, .. } => {
            let (at_inner, tree_width) = (at.clone(), width(full));
            let work = async move {
                let actors = furrow::list_actors().await.map_err(|e| joining_error(e, &at_inner))?;
                let restarts = restarts_in(&actors, within).await;
                Ok(render::tree(&actors, tree_width, &restarts))
            };
            // Joining and listing, then the parents' stats (each bounded
            // by `within`).
            in_system(config, &at, within * 2, work).await
        }
    }
}

/// Run `work` in this command's root actor, joined to the system at `at`,
/// all of it within `bound`. `Err` is the one-line message for stderr.
async fn in_system<T, F>(config: Config, at: &str, bound: Duration, work: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    match tokio::time::timeout(bound, furrow::run_root(config, work)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(joining_error(e, at)),
        Err(_) => Err(format!("no answer from the furrow system at {at} within {bound:?}")),
    }
}

/// Each restarted child's count, asked of every listed actor that has a
/// listed child (all at once, each bounded by `within`). A parent that
/// does not answer costs its children their mark, not the tree.
async fn restarts_in(actors: &[furrow::ActorInfo], within: Duration) -> std::collections::HashMap<uuid::Uuid, u32> {
    let parents: std::collections::HashSet<uuid::Uuid> =
        actors.iter().filter_map(|a| a.parent.as_ref().map(|p| p.uuid)).collect();
    let asked: Vec<furrow::ActorInfo> = actors.iter().filter(|a| parents.contains(&a.aid.uuid)).cloned().collect();
    // The watch's own sampling: every one asked at once, each bounded.
    let samples = watch::sample_all(&asked, within).await;
    let by_parent = samples
        .iter()
        .filter_map(|(u, s)| match s {
            render::Sample::Live(s) => Some((*u, s)),
            render::Sample::Gone => None,
        })
        .collect();
    render::restart_counts(actors, &by_parent)
}

/// Join the system and list its actors, within `within`.
async fn list(config: Config, at: &str, within: Duration) -> Result<Vec<furrow::ActorInfo>, String> {
    in_system(config, at, within, async { furrow::list_actors().await.map_err(|e| joining_error(e, at)) }).await
}

/// The one-line message for a failure to join the system at `at` (or to
/// list it).
fn joining_error(e: Error, at: &str) -> String {
    match e {
        Error::Registry { reason, .. } => {
            format!("no furrow system at {at}: {reason} (is a furrow program running? see --registry and --socket-dir)")
        }
        e @ Error::Auth { .. } => format!("cannot join the furrow system at {at}: {e}"),
        e => format!("cannot list the actors of the furrow system at {at}: {e}"),
    }
}

/// `tree --watch`: join within `within` (as the one-shot commands do), then
/// watch for as long as it takes.
async fn watch_in(config: Config, at: &str, within: Duration, w: watch::Watch) -> Result<(), String> {
    let (joined, mut joined_rx) = tokio::sync::oneshot::channel::<()>();
    let watching = furrow::run_root(config, async move {
        let _ = joined.send(());
        watch::run(w).await
    });
    tokio::pin!(watching);
    // Cancel safe: `watching` is borrowed, so the branch that loses drops
    // nothing; the oneshot receiver is polled by reference.
    tokio::select! {
        r = &mut watching => return r.map_err(|e| joining_error(e, at))?,
        r = tokio::time::timeout(within, &mut joined_rx) => {
            if r.is_err() {
                return Err(format!("no answer from the furrow system at {at} within {within:?}"));
            }
        }
    }
    watching.await.map_err(|e| joining_error(e, at))?
}

fn width(full: bool) -> UuidWidth {
    if full { UuidWidth::Full } else { UuidWidth::Short }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn registry_addresses_repeat_or_split_on_commas() {
        let cli = Cli::parse_from([
            "furrow",
            "--registry",
            "uds:///tmp/a.sock,tcp://10.0.0.1:7700",
            "--registry",
            "uds:///tmp/b.sock",
            "ls",
        ]);
        let got: Vec<String> = cli.registry.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["uds:///tmp/a.sock", "tcp://10.0.0.1:7700", "uds:///tmp/b.sock"]);
        // Global options may follow the subcommand too.
        let cli = Cli::parse_from(["furrow", "tree", "--socket-dir", "/tmp/d", "--registry", "uds:///tmp/c.sock"]);
        assert_eq!(cli.socket_dir.as_deref(), Some(std::path::Path::new("/tmp/d")));
        assert_eq!(cli.registry.len(), 1);
        assert!(Cli::try_parse_from(["furrow", "--registry", "http://x", "ls"]).is_err());
        assert!(Cli::try_parse_from(["furrow", "ls", "--json", "--full"]).is_err());
    }
}
