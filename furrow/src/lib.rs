//! # furrow: structured concurrency for OS processes
//!
//! A program opens a *nursery*, starts *actors* in it (each one a real OS
//! process running its own tokio runtime), and calls functions in them.
//! Nothing outlives the scope that started it: when a nursery ends, every
//! actor it started has been ended and reaped; an error or panic in an
//! actor comes back to the caller as a [`RemoteActorError`] naming where it
//! happened.
//!
//! ```no_run
//! /// Runs in whichever actor it is called in.
//! #[furrow::remote]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[furrow::main]
//! async fn main() -> furrow::Result<()> {
//!     furrow::open_nursery(async |n| {
//!         let p = n.start_actor("adder").await?;   // a real child process
//!         assert_eq!(p.run(add, (1, 2)).await?, 3); // a call across processes
//!         Ok(())
//!     })                                            // the child is ended and reaped here
//!     .await
//! }
//! ```
//!
//! ## Words
//!
//! - **actor**: one OS process with one furrow runtime, identified by an
//!   [`Aid`] (name, uuid, pid).
//! - **nursery** ([`ActorNursery`]): a scope owning child actors.
//! - **portal** ([`Portal`]): a handle on a connected peer actor.
//! - **remote function**: an `async fn` marked [`#[furrow::remote]`](remote),
//!   callable in any actor of the same binary through its typed handle.
//! - **channel**: one connection to one peer, shared by all calls to it.
//!
//! ## How a child process starts
//!
//! A child actor is the *same executable* started again in child mode.
//! `#[furrow::main]` checks for child mode before anything else runs, so
//! your `main` body only ever runs in the root. Tests that spawn actors
//! need a `harness = false` test target whose `main` does the same (see
//! the `furrow-testing` crate).
//!
//! ## Panics
//!
//! A panic in a remote function is caught and reported to the caller; the
//! actor keeps serving. That requires `panic = "unwind"` (Rust's default);
//! with `panic = "abort"` the actor dies and callers see
//! [`Error::TransportClosed`].
//!
//! ## Features
//!
//! - `chaos` (off by default): seeded fault injection for testing a tree
//!   (the `FURROW_CHAOS` variable, `Config::chaos`). Without it the
//!   fault hooks compile to nothing and the chaos variables are ignored.
//!   `furrow-testing` turns it on in the builds that use it (tests,
//!   through dev-dependencies), never in a program's own build.
//! - `taskdump`: dumps carry each tokio task's backtrace (needs
//!   `--cfg tokio_unstable`).
//! - `tokio-console`: serve tokio-console from each root (needs
//!   `--cfg tokio_unstable`).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blocking;
// Without the feature, `chaos` is a stub whose hooks are empty
// `#[inline(always)]` functions: the call sites stay as they are and
// compile to nothing.
#[cfg(feature = "chaos")]
mod chaos;
#[cfg(not(feature = "chaos"))]
#[path = "chaos/off.rs"]
mod chaos;
mod config;
mod connect;
mod context;
mod dialog;
mod discovery;
pub mod dump;
mod error;
mod ipc;
mod log;
mod nursery;
pub mod pool;
mod portal;
mod remote;
mod runtime;
mod spawn;
mod stats;
pub mod supervise;
mod sync;

#[cfg(feature = "chaos")]
#[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
pub use chaos::CHAOS_ENV;
pub use config::{Config, Discovery, MAX_ACTOR_NAME_LEN, REGISTRY_ENV, SOCKET_DIR_ENV};
pub use connect::{connect, local_addrs, local_aid};
pub use context::{CancelReason, Context, MsgStream, Outcome, OutcomeInfo, Side, StreamOptions, Subscriber, role};
pub use discovery::{
    ActorInfo, Lookup, connect_actor, find_actor, find_all_actors, list_actors, query_actors, wait_for_actor,
};
pub use dump::{ActorDump, local_dump};
pub use error::ok::Ok;
pub use error::{Error, OtherError, RemoteActorError, Result};
pub use furrow_macros::{context, main, remote};
pub use furrow_proto::{Addr, Aid, Bytes, ErrorKind};
pub use ipc::auth::SECRET_FILE_ENV;
pub use nursery::{ActorNursery, ChildReport, Ending, NurseryReport, RunHandle, open_nursery, open_nursery_report};
pub use portal::Portal;
pub use remote::{Args, ContextFn, Remote, RemoteFn};
pub use runtime::entry::{block_on_root, enter_child_if_spawned, run_root};
pub use spawn::{Launcher, Lifecycle, Output, SpawnOptions};
pub use stats::{ActorStats, ChannelStats, SupervisedStats, local_stats};

/// The README's example, compiled as a doc test so it cannot rot (in the
/// repository: the published package has no README beside it; see
/// `build.rs`).
#[cfg(all(doctest, furrow_repo_docs))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// This crate's own README (in the package too), compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;

/// The user guide's examples (`docs/guide.md`), compiled as doc tests (in
/// the repository, as above).
#[cfg(all(doctest, furrow_repo_docs))]
#[doc = include_str!("../../docs/guide.md")]
struct GuideDoctests;

/// The wire protocol crate, re-exported.
pub use furrow_proto as proto;

/// Used by the code `furrow-macros` generates, and by `furrow-testing`.
/// Not a public API: hidden, and free to change with any release.
#[doc(hidden)]
pub mod __private {
    /// Install furrow's log subscriber. Only `furrow-testing` needs it (its
    /// roots run under libtest's `main`, not `#[furrow::main]`, which
    /// installs it itself); a user's root never calls it, so it lives here
    /// rather than in the API.
    pub fn init_logging() {
        crate::log::init(None, true);
    }
    pub use crate::remote::failure::{ViaDisplay, ViaError, ViaFurrow, ViaReport, ViaSerdeError, Wrap};
    pub use crate::remote::{Failure, Handler, REMOTES, Registration};
    /// What `#[furrow::main(config = …)]` expands to. Not in the API: the
    /// attribute says the same in one line (docs/guide.md, "Starting a
    /// root").
    pub use crate::runtime::entry::block_on_root_with;
    pub use furrow_proto::{FuncType, Payload, PayloadParts};
    pub use futures::future::BoxFuture;
    pub use linkme;
    pub use serde;

    /// Decode a `kwargs` payload into the generated argument struct. A nil
    /// payload counts as an empty map (a call with no arguments).
    // The error path is cold; a boxed `Failure` would cost an allocation on
    // every error for no gain.
    #[allow(clippy::result_large_err)]
    pub fn decode_kwargs<T: serde::de::DeserializeOwned>(kwargs: &Payload, func: &str) -> Result<T, Failure> {
        let empty;
        let kwargs = if kwargs.0.as_ref() == [0xc0] {
            empty = Payload(bytes::Bytes::from_static(&[0x80]));
            &empty
        } else {
            kwargs
        };
        kwargs.decode().map_err(|e| {
            let message = match e {
                furrow_proto::PayloadError::Decode { path, reason, .. } => {
                    let reason = reason.replace("struct __Args", "a map of named arguments");
                    if path.is_empty() || path == "." {
                        format!("bad arguments for `{func}`: {reason}")
                    } else {
                        format!("bad arguments for `{func}`: field `{path}`: {reason}")
                    }
                }
                other => format!("bad arguments for `{func}`: {other}"),
            };
            Failure::runtime(crate::ErrorKind::MsgTypeError, message)
        })
    }

    /// Encode a return value (a large `furrow::Bytes` in it lent, not
    /// copied: see `PayloadParts`).
    #[allow(clippy::result_large_err)]
    pub fn encode_output<T: serde::Serialize>(v: &T, func: &str) -> Result<furrow_proto::PayloadParts, Failure> {
        furrow_proto::PayloadParts::encode(v).map_err(|e| {
            Failure::runtime(crate::ErrorKind::MsgTypeError, format!("cannot encode the result of `{func}`: {e}"))
        })
    }
}
