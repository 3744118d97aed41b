//! The runtime's own requests, and their encoding: one place that says what
//! each is called on the wire, what it carries and how it is answered.
//!
//! They travel as ordinary `Start` messages on the [`RUNTIME_NS`]
//! namespace (so they need no message kind of their own, and a tractor
//! peer sees familiar calls). Two are cancellations, answered with a
//! `CancelAck` whose payload says whether there was anything to cancel;
//! `stats` and `dump` are answered like calls (`StartAck`, then `Return`).
//!
//! A [`Session`](crate::session::Session) never refuses a runtime request
//! for its bound on open dialogs: a peer at its bound can still cancel what
//! it started.
//!
//! ```
//! use furrow_proto::request::Request;
//! use furrow_proto::{Aid, Msg};
//!
//! // What an opener sends to cancel its dialog 5 (on a fresh cid, 7).
//! let msg = Request::CancelTask { cid: 5 }.to_start(7, Aid::new("opener", 42));
//! let Msg::Start { ns, func, kwargs, .. } = &msg else { unreachable!() };
//! // What the peer makes of it.
//! assert_eq!(Request::parse(ns, func, kwargs), Some(Ok(Request::CancelTask { cid: 5 })));
//! ```

use crate::{Aid, Cid, ErrorKind, Msg, Payload, RUNTIME_NS};
use serde::{Deserialize, Serialize};

/// One of the runtime's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// End the receiving actor (its nursery's teardown), as its parent or
    /// anyone with a portal may ask. Answered with a `CancelAck` (found:
    /// always true) before anything is torn down.
    CancelActor,
    /// Cancel the task serving dialog `cid`, which the sender opened on
    /// this channel. Answered with a `CancelAck` saying whether the task
    /// was still running.
    CancelTask {
        /// The dialog whose task to cancel.
        cid: Cid,
    },
    /// The actor's counters, answered like a call returning them.
    Stats,
    /// What the actor's dialogs, children and channels are doing now,
    /// answered like a call returning it.
    Dump,
}

/// Why a `Start` on the runtime namespace is not a request this side
/// understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// No such request (a newer peer, or a typo in a hand-made frame).
    Unknown(String),
    /// A known request whose arguments do not decode.
    BadArgs {
        /// The request.
        func: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl RequestError {
    /// The kind of the `Error` that answers it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RequestError::Unknown(_) => ErrorKind::FunctionNotFound,
            RequestError::BadArgs { .. } => ErrorKind::MsgTypeError,
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Unknown(func) => write!(f, "no runtime request `{RUNTIME_NS}::{func}`"),
            RequestError::BadArgs { func, reason } => write!(f, "bad arguments to `{RUNTIME_NS}::{func}`: {reason}"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TaskArgs {
    cid: Cid,
}

impl Request {
    /// Its name on the wire (the `Start`'s `func`).
    pub fn func(&self) -> &'static str {
        match self {
            Request::CancelActor => "cancel_actor",
            Request::CancelTask { .. } => "cancel_task",
            Request::Stats => "stats",
            Request::Dump => "dump",
        }
    }

    /// Its arguments, encoded.
    pub fn kwargs(&self) -> Payload {
        let encoded = match self {
            Request::CancelTask { cid } => Payload::encode(&TaskArgs { cid: *cid }),
            Request::CancelActor | Request::Stats | Request::Dump => Payload::encode(&()),
        };
        // A struct of one integer, or unit: encoding cannot fail.
        encoded.unwrap_or_default()
    }

    /// The `Start` that sends it on dialog `cid`, from `uid`.
    pub fn to_start(&self, cid: Cid, uid: Aid) -> Msg {
        Msg::Start { cid, ns: RUNTIME_NS.to_owned(), func: self.func().to_owned(), kwargs: self.kwargs(), uid }
    }

    /// What a `Start` of `ns::func(kwargs)` asks: `None` when `ns` is not
    /// the runtime's (an ordinary call), else the request or why it is not
    /// one.
    pub fn parse(ns: &str, func: &str, kwargs: &Payload) -> Option<Result<Request, RequestError>> {
        if ns != RUNTIME_NS {
            return None;
        }
        Some(match func {
            "cancel_actor" => Ok(Request::CancelActor),
            "cancel_task" => kwargs
                .decode::<TaskArgs>()
                .map(|a| Request::CancelTask { cid: a.cid })
                .map_err(|e| RequestError::BadArgs { func: "cancel_task", reason: e.to_string() }),
            "stats" => Ok(Request::Stats),
            "dump" => Ok(Request::Dump),
            other => Err(RequestError::Unknown(other.to_owned())),
        })
    }
}

/// The answer to a cancel request on dialog `cid`: whether there was still
/// something to cancel.
pub fn cancel_ack(cid: Cid, found: bool) -> Msg {
    Msg::CancelAck { cid, pld: Payload::encode(&found).unwrap_or_default() }
}

/// What a `CancelAck`'s payload says: whether there was still something to
/// cancel. One that does not decode (another version) counts as found.
pub fn cancel_found(pld: &Payload) -> bool {
    pld.decode::<bool>().unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_parses_back_from_its_start() {
        for r in [Request::CancelActor, Request::CancelTask { cid: 9 }, Request::Stats, Request::Dump] {
            let Msg::Start { ns, func, kwargs, .. } = r.to_start(3, Aid::new("a", 1)) else { panic!("not a Start") };
            assert_eq!(Request::parse(&ns, &func, &kwargs), Some(Ok(r)));
        }
    }

    #[test]
    fn ordinary_calls_unknown_requests_and_bad_arguments_are_told_apart() {
        let unit = Payload::encode(&()).unwrap();
        assert_eq!(Request::parse("mymod", "cancel_task", &unit), None);
        let unknown = Request::parse(RUNTIME_NS, "reboot", &unit).unwrap().unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::FunctionNotFound);
        assert_eq!(unknown.to_string(), "no runtime request `furrow::runtime::reboot`");
        let bad = Request::parse(RUNTIME_NS, "cancel_task", &unit).unwrap().unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::MsgTypeError);
    }

    #[test]
    fn a_cancel_ack_says_whether_something_was_found() {
        for found in [true, false] {
            let Msg::CancelAck { pld, .. } = cancel_ack(1, found) else { panic!("not a CancelAck") };
            assert_eq!(cancel_found(&pld), found);
        }
        assert!(cancel_found(&Payload::encode(&"another version").unwrap()), "undecodable counts as found");
    }
}
