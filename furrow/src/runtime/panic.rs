//! Panics in remote functions, reported as errors.
//!
//! A panic inside a remote function is caught at the task boundary
//! (`catch_unwind`), so the actor keeps serving and the caller receives a
//! `RemoteActorError` of kind `ErrorKind::Panic`. This needs
//! `panic = "unwind"` (the default); with `panic = "abort"` the actor
//! process dies and the caller sees `TransportClosed` instead.

use crate::remote::Failure;
use std::any::Any;
use std::cell::RefCell;

thread_local! {
    /// Where the last panic on this thread happened, and its backtrace
    /// (captured when `RUST_BACKTRACE` asks for it).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install a panic hook that records the location (and backtrace) of each
/// panic for the error report, then runs the previous hook.
pub(crate) fn install_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut trace = match info.location() {
                Some(l) => format!("panicked at {}:{}:{}\n", l.file(), l.line(), l.column()),
                None => String::new(),
            };
            let bt = std::backtrace::Backtrace::capture();
            if bt.status() == std::backtrace::BacktraceStatus::Captured {
                trace.push_str(&bt.to_string());
            }
            // try_with: the thread may be exiting; try_borrow_mut: never
            // panic inside the panic hook.
            let _ = LAST_PANIC.try_with(|c| {
                if let Ok(mut slot) = c.try_borrow_mut() {
                    *slot = Some(trace);
                }
            });
            prev(info);
        }));
    });
}

/// The failure reported for a caught panic.
pub(crate) fn failure(payload: Box<dyn Any + Send>) -> Failure {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    };
    let trace = LAST_PANIC.try_with(|c| c.try_borrow_mut().ok().and_then(|mut s| s.take())).ok().flatten();
    Failure { trace: trace.unwrap_or_default(), ..Failure::runtime(crate::ErrorKind::Panic, message) }
}
