//! Chaos without the `chaos` feature: the fault hooks the library's hot
//! paths call, as empty functions that inline to nothing. Nothing reads
//! `FURROW_CHAOS` or any other chaos variable, and nothing of chaos is in
//! the public API (see `mod.rs` for the real thing, and the design doc's
//! "Chaos" section for why it is a feature).

pub(crate) mod fault {
    /// The steps the hooks name (see the real `fault::Step`). No derives:
    /// nothing looks at a step here.
    pub(crate) enum Step {
        Start,
        Started,
        Yield,
        Return,
        Cancel,
        Teardown,
    }

    /// No fault to arm.
    #[inline(always)]
    pub(crate) fn arm(_actor: &str) {}

    /// No fault to fire.
    #[inline(always)]
    pub(crate) fn at(_step: Step) {}
}
