//! The registry's requests as a client writes them by hand: only the
//! fields that have no default (the registrar fills in the rest), so a
//! test using them also checks that the others may be left out.
//! (Shared by the discovery tests and `benches/registry.rs`, which
//! includes this file; not a test module.)

use furrow::proto::Aid;
use furrow::{Addr, Lookup};

/// The namespace of registry requests.
pub const REGISTRY: &str = "furrow::registry";

/// The fields of `ActorInfo` a registration needs.
#[derive(serde::Serialize)]
pub struct Info {
    pub aid: Aid,
    pub addrs: Vec<Addr>,
}

/// `register`'s arguments.
#[derive(serde::Serialize)]
pub struct Register {
    pub info: Info,
}

/// `unregister`'s arguments.
#[derive(serde::Serialize)]
pub struct Unregister {
    pub uuid: uuid::Uuid,
}

/// The arguments of `query` and `wait`.
#[derive(serde::Serialize)]
pub struct Query {
    pub who: Lookup,
}
