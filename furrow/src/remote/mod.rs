//! Remote functions: registration, typed handles, arguments and failures.
//!
//! `#[furrow::remote]` on an `async fn` does three things:
//!
//! 1. registers the function at link time under its *wire name*, its full
//!    module path plus its name (`my_crate::math::add`), or the name given
//!    with `#[furrow::remote(name = "...")]`; every actor of the binary can
//!    therefore serve it;
//! 2. replaces the function item by a [`RemoteFn`] constant of the same
//!    name, the *typed handle* callers pass to [`Portal::run`](crate::Portal::run):
//!    the argument tuple and the return type are checked at compile time
//!    on the calling side;
//! 3. keeps the function callable locally: the handle dereferences to a
//!    function pointer, so `add(1, 2).await` still works.
//!
//! Arguments travel as a map keyed by parameter name (`kwargs`). The
//! callee decodes them into the parameter types; a missing, extra or
//! mistyped argument is refused with a `MsgTypeError` naming it.
//!
//! Since they are decoded from the wire, arguments are owned: a reference
//! (`&str`), a type that borrows (`Cow<'a, str>`), `impl Trait` or a
//! lifetime parameter is refused at compile time with a message that says
//! what to take instead (`String`, `PathBuf`, `furrow::Bytes`, …):
//!
//! ```compile_fail
//! #[furrow::remote]
//! async fn greet(name: &str) -> String { format!("hello {name}") }
//! // error: arguments of a remote function are decoded from the wire and
//! // owned by the function: take `String` instead of a reference
//! ```
//!
//! ```compile_fail
//! #[furrow::remote]
//! async fn count(items: impl IntoIterator<Item = u8>) -> usize { items.into_iter().count() }
//! // error: … `impl Trait` names no type to decode; use a concrete type
//! ```
//!
//! ```
//! use std::borrow::Cow;
//! // Owned, or borrowing for `'static` only (which decodes as owned): fine.
//! #[furrow::remote]
//! async fn greet(name: String, title: Option<Cow<'static, str>>) -> String {
//!     format!("hello {}{name}", title.map(|t| t + " ").unwrap_or_default())
//! }
//! ```
//!
//! A function returning `Result<T, E>` (any type spelled `Result`, such as
//! `furrow::Result<T>` or `anyhow::Result<T>`) is *fallible*: `Ok(v)`
//! returns `v` to the caller, and `Err(e)` becomes a
//! [`RemoteActorError`](crate::RemoteActorError) at the caller with `E`'s
//! type name, message and source chain, and `e` itself when `E` is
//! `Serialize` (recover it with `downcast`). Any other return type is
//! returned as is.

pub(crate) mod failure;
mod handle;
mod registry;

pub use failure::Failure;
pub use handle::{Args, ContextFn, Remote, RemoteFn};
pub(crate) use handle::{ns_func, split_name};
pub use registry::{Handler, REMOTES, Registration};
pub(crate) use registry::{check_registry, lookup};
