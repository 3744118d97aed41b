use furrow_proto::{Payload, PayloadError};
use serde::de::DeserializeOwned;
use serde::ser::{Serialize, SerializeMap, Serializer};

use std::marker::PhantomData;
use std::ops::Deref;

/// The typed handle of a remote function, made by `#[furrow::remote]`.
///
/// `A` is the argument tuple, `O` what a successful remote call returns,
/// and `L` the local function pointer the handle dereferences to (so the
/// function stays callable in-process).
///
/// ```
/// #[furrow::remote]
/// async fn add(a: i64, b: i64) -> i64 { a + b }
///
/// # async fn demo() {
/// assert_eq!(add.name(), concat!(module_path!(), "::add"));
/// assert_eq!(add.params(), &["a", "b"]);
/// assert_eq!(add(1, 2).await, 3);           // still a local function
/// # }
/// # futures::executor::block_on(demo());
/// ```
pub struct RemoteFn<A, O, L> {
    name: &'static str,
    params: &'static [&'static str],
    local: L,
    _types: PhantomData<fn(A) -> O>,
}

impl<A, O, L: Copy> Clone for RemoteFn<A, O, L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, O, L: Copy> Copy for RemoteFn<A, O, L> {}

impl<A, O, L> std::fmt::Debug for RemoteFn<A, O, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteFn({})", self.name)
    }
}

impl<A, O, L> RemoteFn<A, O, L> {
    #[doc(hidden)]
    pub const fn __new(name: &'static str, params: &'static [&'static str], local: L) -> Self {
        RemoteFn { name, params, local, _types: PhantomData }
    }

    /// The wire name (`module::path::function`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Parameter names, in order (the keys of the `kwargs` map).
    pub fn params(&self) -> &'static [&'static str] {
        self.params
    }
}

/// A remote function, as every method that calls one takes it (`f: F`
/// with `F: Remote`, its arguments as `F::Args`, its result as
/// `F::Output`). It is what `#[furrow::remote]` makes: a [`RemoteFn`],
/// whose third type parameter (the local function it dereferences to) is
/// thereby kept out of those signatures. Sealed: furrow's own handles only.
///
/// A function that takes any remote function and its arguments:
///
/// ```no_run
/// use furrow::Remote;
///
/// #[furrow::remote]
/// async fn add(a: i64, b: i64) -> i64 { a + b }
///
/// /// Runs `f` in `p`, saying which function it ran.
/// async fn logged<F: Remote>(p: &furrow::Portal, f: F, args: F::Args) -> furrow::Result<F::Output> {
///     println!("calling {} in {}", f.name(), p.aid());
///     p.run(f, args).await
/// }
///
/// # async fn demo(p: furrow::Portal) -> furrow::Result<()> {
/// assert_eq!(logged(&p, add, (2, 3)).await?, 5);
/// # Ok(()) }
/// ```
pub trait Remote: Copy + Send + Sync + 'static + sealed::Sealed {
    /// The argument tuple.
    type Args: Args + 'static;
    /// What a successful call returns.
    type Output: DeserializeOwned + Send + 'static;

    /// The wire name (`module::path::function`).
    fn name(&self) -> &'static str;

    /// Parameter names, in order (the keys of the `kwargs` map).
    fn params(&self) -> &'static [&'static str];
}

impl<A, O, L> Remote for RemoteFn<A, O, L>
where
    A: Args + 'static,
    O: DeserializeOwned + Send + 'static,
    L: Copy + Send + Sync + 'static,
{
    type Args = A;
    type Output = O;

    fn name(&self) -> &'static str {
        self.name
    }

    fn params(&self) -> &'static [&'static str] {
        self.params
    }
}

mod sealed {
    pub trait Sealed {}
    impl<A, O, L> Sealed for super::RemoteFn<A, O, L> {}
}

/// A remote function's wire name split into namespace (module path) and
/// function.
pub(crate) fn ns_func<F: Remote>(f: &F) -> (&'static str, &'static str) {
    split_name(f.name())
}

pub(crate) fn split_name(name: &str) -> (&str, &str) {
    name.rsplit_once("::").unwrap_or(("", name))
}

impl<A, O, L> Deref for RemoteFn<A, O, L> {
    type Target = L;
    fn deref(&self) -> &L {
        &self.local
    }
}

/// The typed handle of a context endpoint, made by `#[furrow::context]`:
/// pass it to [`Portal::open_context`](crate::Portal::open_context).
///
/// `A` is the argument tuple (the parameters after the `Context`), `O` the
/// callee's result on success. A context function is not callable
/// locally: it needs a context opened by a peer.
///
/// ```
/// #[furrow::context]
/// async fn follow(ctx: furrow::Context, topic: String, from: u64) -> furrow::Result<()> {
///     ctx.started(&()).await?;
///     # let _ = (topic, from);
///     Ok(())
/// }
///
/// // `follow` is now a `ContextFn<(String, u64), ()>`.
/// assert_eq!(follow.name(), concat!(module_path!(), "::follow"));
/// assert_eq!(follow.params(), &["topic", "from"]);
/// ```
pub struct ContextFn<A, O> {
    name: &'static str,
    params: &'static [&'static str],
    _types: PhantomData<fn(A) -> O>,
}

impl<A, O> Clone for ContextFn<A, O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, O> Copy for ContextFn<A, O> {}

impl<A, O> std::fmt::Debug for ContextFn<A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContextFn({})", self.name)
    }
}

impl<A, O> ContextFn<A, O> {
    #[doc(hidden)]
    pub const fn __new(name: &'static str, params: &'static [&'static str]) -> Self {
        ContextFn { name, params, _types: PhantomData }
    }

    /// The wire name (`module::path::function`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Parameter names after the context, in order.
    pub fn params(&self) -> &'static [&'static str] {
        self.params
    }

    pub(crate) fn ns_func(&self) -> (&'static str, &'static str) {
        split_name(self.name)
    }
}

/// An argument tuple: `()`, `(a,)`, `(a, b)` … up to 12 elements, each
/// `Serialize`. Encoded as a map from parameter name to value.
///
/// Implemented for tuples only; callers pass one to
/// [`Portal::run`](crate::Portal::run), whose handle supplies the names:
///
/// ```
/// use furrow::Args;
///
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Kwargs { a: i64, b: String }
///
/// let kwargs = (1i64, "two").to_kwargs(&["a", "b"]).unwrap();
/// assert_eq!(kwargs.decode::<Kwargs>().unwrap(), Kwargs { a: 1, b: "two".into() });
/// ```
pub trait Args: Send {
    /// Encode as a `kwargs` map with these parameter names.
    fn to_kwargs(&self, names: &[&'static str]) -> Result<Payload, PayloadError>;

    /// [`to_kwargs`](Self::to_kwargs), lending large `furrow::Bytes`
    /// arguments instead of copying them (what a call sends).
    #[doc(hidden)]
    fn to_kwargs_parts(&self, names: &[&'static str]) -> Result<furrow_proto::PayloadParts, PayloadError> {
        self.to_kwargs(names).map(Into::into)
    }
}

macro_rules! tuple_args {
    ($( ($($t:ident . $i:tt),*) ),* $(,)?) => {$(
        impl<$($t: Serialize + Send),*> Args for ($($t,)*) {
            #[allow(unused_variables, unused_mut)]
            fn to_kwargs(&self, names: &[&'static str]) -> Result<Payload, PayloadError> {
                self.to_kwargs_parts(names).map(furrow_proto::PayloadParts::into_payload)
            }

            #[allow(unused_variables, unused_mut)]
            fn to_kwargs_parts(&self, names: &[&'static str]) -> Result<furrow_proto::PayloadParts, PayloadError> {
                #[allow(dead_code)]
                struct Map<'a, $($t),*>(&'a [&'static str], &'a ($($t,)*));
                impl<$($t: Serialize),*> Serialize for Map<'_, $($t),*> {
                    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        let mut map = s.serialize_map(Some(self.0.len()))?;
                        $(
                            let key = self.0.get($i).copied().unwrap_or("?");
                            map.serialize_entry(key, &(self.1).$i)?;
                        )*
                        map.end()
                    }
                }
                furrow_proto::PayloadParts::encode(&Map(names, self))
            }
        }
    )*};
}

tuple_args! {
    (),
    (A0.0),
    (A0.0, A1.1),
    (A0.0, A1.1, A2.2),
    (A0.0, A1.1, A2.2, A3.3),
    (A0.0, A1.1, A2.2, A3.3, A4.4),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5, A6.6),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5, A6.6, A7.7),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5, A6.6, A7.7, A8.8),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5, A6.6, A7.7, A8.8, A9.9),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5, A6.6, A7.7, A8.8, A9.9, A10.10),
    (A0.0, A1.1, A2.2, A3.3, A4.4, A5.5, A6.6, A7.7, A8.8, A9.9, A10.10, A11.11),
}
