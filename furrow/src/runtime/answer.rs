//! Answering: the `Error` messages this actor raises or relays, and the
//! one answer every dialog gets (`Return`, `Error`, `CancelAck`, a
//! refusal), never lost to its size.

use super::Actor;
use crate::ipc::Channel;
use crate::remote::Failure;
use crate::{Error, ErrorKind};
use furrow_proto::{Cid, ErrorMsg, Msg, PayloadParts};
use std::sync::Arc;

/// How much of an error's message is kept when the whole error is over
/// the frame limit (see [`Actor::reply`]).
const TRUNCATED_MESSAGE: usize = 1024;

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Actor {
    /// An `Error` message raised here (or relayed through here): see
    /// [`Failure::into_msg`].
    pub(crate) fn error_msg(&self, cid: Option<Cid>, f: Failure) -> Msg {
        ErrorMsg { cid, ..f.into_msg(&self.aid) }.into()
    }

    pub(super) fn refuse(&self, chan: &Arc<Channel>, cid: Cid, kind: ErrorKind, message: String) {
        tracing::debug!(chan = ?chan, cid, "refusing Start: {message}");
        // The message may quote what the peer sent (a function name of any
        // length): `reply` cuts it down rather than lose the refusal.
        self.reply(chan, self.error_msg(Some(cid), Failure::runtime(kind, message)), "the refusal of a request");
    }

    /// Send the one answer a dialog gets (`Return`, `Error`, `CancelAck`),
    /// never losing it to its size: the caller waits for nothing else.
    /// `what` says what the answer is, for the error that replaces it
    /// ("the result of `f`").
    ///
    /// An answer over the frame limit is replaced by the first of these
    /// that fits: for a `Return` or `CancelAck`, an `Error` of kind
    /// `FrameTooLarge` naming `what`, the size and the limit; for an
    /// `Error`, the same error cut down (message cut to 1 KiB and marked,
    /// trace, value and nested errors dropped; its kind, origin and
    /// canceller kept); and last a minimal `FrameTooLarge` error of this
    /// actor's own (no text from the peer or the function), which fits in
    /// any limit furrow can run with. Nothing was queued when the encoding
    /// failed, so the dialog still expects its outcome and the replacement
    /// passes its state machine. (Before, the encoding error was dropped
    /// with a debug line and the caller waited forever: issue 14.)
    ///
    /// Any other failure (the channel closed, the dialog over already)
    /// means the answer has nowhere to go: logged at debug, as before.
    pub(super) fn reply(&self, chan: &Channel, msg: Msg, what: &str) {
        self.reply_with(chan, msg, None, what)
    }

    /// [`reply`](Self::reply) whose answer `msg` carries `pld` (in parts,
    /// written from them) in place of its own empty payload. The answers
    /// that replace one over the limit are messages of their own.
    pub(super) fn reply_with(&self, chan: &Channel, msg: Msg, pld: Option<&PayloadParts>, what: &str) {
        let cid = msg.cid();
        // The size of the real answer: what every replacement reports.
        let mut too_large: Option<(usize, usize)> = None;
        let mut next = Some(msg);
        let mut pld = pld;
        let mut tries = 0;
        while let Some(msg) = next.take() {
            let sent = match pld.take() {
                Some(p) => chan.send_with_parts(&msg, p),
                None => chan.send(&msg),
            };
            match sent {
                Ok(()) => {
                    if let Some((len, max)) = too_large {
                        tracing::warn!(chan = ?chan, cid, len, max, "{what} was over the frame limit: sent an error instead");
                    }
                    return;
                }
                Err(Error::FrameTooLarge { len, max, .. }) => {
                    let (len, max) = *too_large.get_or_insert((len, max));
                    tries += 1;
                    next = self.smaller_answer(msg, cid, what, (len, max), tries);
                }
                Err(e) => {
                    tracing::debug!(chan = ?chan, cid, "{what} not delivered: {e}");
                    return;
                }
            }
        }
        tracing::error!(
            chan = ?chan,
            cid,
            "{what} was over the frame limit and not even a minimal error fits in it ({:?}): the peer gets no answer",
            too_large
        );
    }

    /// What to send in place of `msg`, which is over the frame limit
    /// (`len` bytes against `max`): see [`reply`](Self::reply). `tries`
    /// counts the answers refused so far (1 for the real one).
    fn smaller_answer(
        &self,
        msg: Msg,
        cid: Option<Cid>,
        what: &str,
        (len, max): (usize, usize),
        tries: u32,
    ) -> Option<Msg> {
        let too_large = |what: &str| Error::FrameTooLarge { what: what.to_owned(), len, max }.to_string();
        match (tries, msg.into_error()) {
            // A too large error: the same one, cut down.
            (1, Ok(e)) => {
                let message = format!(
                    "{}… [cut: {}]",
                    cut(&e.message, TRUNCATED_MESSAGE),
                    too_large(&format!("the whole error ({what})"))
                );
                Some(
                    ErrorMsg {
                        // Only a kind from elsewhere can be long (a type name).
                        boxed_type_str: ErrorKind::from(cut(e.boxed_type_str.as_str(), TRUNCATED_MESSAGE)),
                        message,
                        tb_str: String::new(),
                        pld: None,
                        errors: Vec::new(),
                        ..e
                    }
                    .into(),
                )
            }
            // A too large `Return` or `CancelAck`: an error saying so.
            (1, Err(_)) => Some(self.error_msg(cid, Failure::runtime(ErrorKind::FrameTooLarge, too_large(what)))),
            // Even that did not fit (it quotes the peer, or the limit is
            // tiny): this actor's own error, with nothing of the peer's.
            (2, _) => Some(
                ErrorMsg {
                    cid,
                    ..ErrorMsg::new(self.aid.clone(), ErrorKind::FrameTooLarge, too_large(cut(what, 256)))
                }
                .into(),
            ),
            _ => None,
        }
    }
}
