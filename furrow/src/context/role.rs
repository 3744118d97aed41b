//! Which end of a context a [`Context`](crate::Context) handle is for, as a
//! type: the callee's methods (`started`) and the opener's
//! (`wait_for_result`) exist only on their own end's handle, so calling one
//! on the other end does not compile.
//!
//! ```compile_fail
//! # async fn demo(p: furrow::Portal, f: furrow::ContextFn<(), ()>) -> furrow::Result<()> {
//! p.open_context(f, (), async |ctx, (): ()| {
//!     ctx.started(&()).await // the opener's handle has no `started`
//! })
//! .await
//! # }
//! ```
//!
//! ```compile_fail
//! #[furrow::context]
//! async fn callee(ctx: furrow::Context) -> furrow::Result<()> {
//!     ctx.started(&()).await?;
//!     ctx.wait_for_result::<()>().await?; // the callee's handle has no `wait_for_result`
//!     Ok(())
//! }
//! ```
//!
//! A function that works on either end takes [`Either`]'s handle, which
//! every handle lends (`Context::any`), with the methods both ends share:
//!
//! ```
//! use furrow::Context;
//! use furrow::role::Either;
//!
//! fn tag(ctx: &Context<Either>) -> String {
//!     format!("[{:?} of #{} with {}]", ctx.side(), ctx.cid(), ctx.peer())
//! }
//! ```

/// A role: [`Callee`], [`Opener`] or [`Either`]. Sealed.
pub trait Role: sealed::Sealed + Send + Sync + 'static {}

/// The callee's end: the `#[furrow::context]` function's handle (the
/// default: `Context` is `Context<Callee>`).
#[derive(Debug)]
pub enum Callee {}

/// The opener's end: the handle `open_context`'s body gets.
#[derive(Debug)]
pub enum Opener {}

/// Either end, not known from the type (what a stream's
/// [`context`](crate::MsgStream::context) gives): the methods both ends
/// share.
#[derive(Debug)]
pub enum Either {}

impl Role for Callee {}
impl Role for Opener {}
impl Role for Either {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Callee {}
    impl Sealed for super::Opener {}
    impl Sealed for super::Either {}
}
