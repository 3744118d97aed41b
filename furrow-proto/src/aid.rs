use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// The identity of one actor: its (not necessarily unique) name, its unique
/// uuid and its process id.
///
/// ```
/// let aid = furrow_proto::Aid::new("worker", 1234);
/// assert_eq!(aid.name, "worker");
/// assert!(aid.to_string().starts_with("worker["));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aid {
    /// Human-chosen name; several actors may share it.
    pub name: String,
    /// Unique identity of this actor.
    pub uuid: Uuid,
    /// OS process id.
    pub pid: u32,
}

impl Aid {
    /// A fresh identity with a random uuid.
    pub fn new(name: impl Into<String>, pid: u32) -> Self {
        Aid { name: name.into(), uuid: Uuid::new_v4(), pid }
    }
}

impl fmt::Display for Aid {
    /// `name[uuid-prefix]@pid`, short enough for log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = self.uuid.simple().to_string();
        write!(f, "{}[{}]@{}", self.name, &u[..8], self.pid)
    }
}
