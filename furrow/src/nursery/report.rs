//! What a nursery reports of its children when it returns.

use super::teardown::Ending;
use crate::spawn::Lifecycle;
use furrow_proto::Aid;
use std::fmt;

/// A nursery's result with how each of its children ended (see
/// [`open_nursery_report`](crate::open_nursery_report)).
///
/// ```no_run
/// # async fn demo() -> furrow::Result<()> {
/// let report = furrow::open_nursery_report(async |n| {
///     n.start_actor("cache").await?;
///     Ok(())
/// })
/// .await;
/// assert!(report.children.iter().all(|c| c.ending.as_ref().is_some_and(|e| e.is_graceful())));
/// report.result
/// # }
/// ```
#[derive(Debug)]
pub struct NurseryReport<R, E> {
    /// What [`open_nursery`](crate::open_nursery) would have returned.
    pub result: Result<R, E>,
    /// Every child the nursery began to start, in order of starting.
    pub children: Vec<ChildReport>,
}

/// How one child of a nursery fared, from its start to its end.
///
/// ```
/// use furrow::{ChildReport, Ending, Lifecycle};
/// let never = ChildReport { name: "w".into(), aid: None, lifecycle: vec![Lifecycle::Spawned { pid: 7 }], ending: None };
/// assert!(!never.reached_ready());
/// assert_eq!(never.to_string(), "w: spawned (pid 7)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildReport {
    /// The name it was started with.
    pub name: String,
    /// Its identity, once its start completed (`None`: it never served).
    pub aid: Option<Aid>,
    /// The steps its parent observed, in order, ending with its exit.
    pub lifecycle: Vec<Lifecycle>,
    /// Which step of the teardown ladder ended it (`None` when its start
    /// failed or was abandoned: the start itself killed it).
    pub ending: Option<Ending>,
}

impl ChildReport {
    /// True when the child reached `Ready` (it served).
    pub fn reached_ready(&self) -> bool {
        self.lifecycle.contains(&Lifecycle::Ready)
    }
}

impl fmt::Display for ChildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.aid {
            Some(aid) => write!(f, "{aid}: ")?,
            None => write!(f, "{}: ", self.name)?,
        }
        let steps: Vec<String> = self.lifecycle.iter().map(ToString::to_string).collect();
        f.write_str(&steps.join(" → "))?;
        if let Some(ending) = &self.ending {
            write!(f, "; {ending}")?;
        }
        Ok(())
    }
}
