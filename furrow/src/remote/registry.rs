use super::failure::Failure;
use furrow_proto::{FuncType, Payload, PayloadParts};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::OnceLock;

/// How a registered function is run.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Handler {
    /// A plain async function: decode `kwargs`, run, encode the result.
    Rpc(fn(Payload) -> BoxFuture<'static, Result<PayloadParts, Failure>>),
    /// A context endpoint: like `Rpc`, with the callee's `Context` first.
    Context(fn(crate::Context, Payload) -> BoxFuture<'static, Result<PayloadParts, Failure>>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handler::Rpc(_) => f.write_str("Handler::Rpc"),
            Handler::Context(_) => f.write_str("Handler::Context"),
        }
    }
}

/// One function registered by `#[furrow::remote]` (generated code; not
/// meant to be written by hand).
#[derive(Debug)]
pub struct Registration {
    /// Wire name: `module::path::function`.
    pub name: &'static str,
    /// Parameter names.
    pub params: &'static [&'static str],
    /// What it is.
    pub kind: FuncType,
    /// How to run it.
    pub handler: Handler,
    /// Where it was defined (for duplicate reports).
    pub file: &'static str,
    /// Line of the definition.
    pub line: u32,
}

/// Every function registered in this binary, collected at link time.
#[linkme::distributed_slice]
pub static REMOTES: [Registration];

struct Registry {
    by_name: HashMap<&'static str, &'static Registration>,
    duplicates: Vec<String>,
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut by_name = HashMap::new();
        let mut duplicates = Vec::new();
        for r in REMOTES.iter() {
            if let Some(prev) = by_name.insert(r.name, r) {
                duplicates.push(format!(
                    "remote function `{}` is registered twice: at {}:{} and at {}:{} \
                     (give one of them #[furrow::remote(name = \"...\")])",
                    r.name, prev.file, prev.line, r.file, r.line
                ));
            }
        }
        Registry { by_name, duplicates }
    })
}

/// Fail if two functions claim the same wire name (checked at actor start).
pub(crate) fn check_registry() -> crate::Result<()> {
    let reg = registry();
    if reg.duplicates.is_empty() { Ok(()) } else { Err(crate::Error::usage(reg.duplicates.join("; "))) }
}

/// The function registered under `name`.
pub(crate) fn lookup(name: &str) -> Option<&'static Registration> {
    registry().by_name.get(name).copied()
}
