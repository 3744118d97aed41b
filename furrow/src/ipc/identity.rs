//! What can be checked of a peer's claimed identity (its `Aid`).
//!
//! An `Aid` is what a peer *says* it is. What the kernel can confirm is
//! checked, at the handshake, on both ends of a connection:
//!
//! - over UDS, the peer's pid (`SO_PEERCRED`) must be the pid in its `Aid`
//!   (the same process seen from our pid namespace: a peer in a nested pid
//!   namespace is matched through `/proc/<pid>/status`'s `NSpid`). The
//!   uid was checked when the connection was accepted
//!   ([`Listener::accept`](super::transport::Listener::accept));
//! - an identity this actor already knows for certain — its own, its
//!   parent's, a child's — must be claimed whole: a peer that presents one
//!   of those uuids with another name or pid is refused.
//!
//! What cannot be checked (see the design notes, "Security"): over TCP the
//! pid is the peer's word; the secret proves the peer belongs to the
//! system, not which actor it is. A name or uuid that nobody here knows is
//! taken as given.

use furrow_proto::Aid;

/// Whether `seen` (a pid from `SO_PEERCRED`, in our pid namespace) is the
/// process that calls itself `claimed` (its own `getpid()`): the same
/// number, or the same process seen from a nested pid namespace.
pub(crate) fn same_process(seen: u32, claimed: u32) -> bool {
    if seen == claimed {
        return true;
    }
    // Only on a mismatch: one read of /proc.
    std::fs::read_to_string(format!("/proc/{seen}/status"))
        .ok()
        .and_then(|s| innermost_pid(&s))
        .is_some_and(|inner| inner == claimed)
}

/// The pid a process has in its own (innermost) pid namespace: the last
/// number of the `NSpid:` line of `/proc/<pid>/status`.
fn innermost_pid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().last()?.parse().ok()
}

/// Check a peer's `Aid` against what the kernel says of the connection
/// (`peer_pid`, UDS only) and against the identities known for certain
/// (`known`: the one with the claimed uuid, if any). The reason when it
/// does not hold, written for the peer's error message.
pub(crate) fn check(claim: &Aid, peer_pid: Option<u32>, known: Option<&Aid>) -> Result<(), String> {
    if let Some(p) = peer_pid
        && !same_process(p, claim.pid)
    {
        return Err(format!(
            "the connection says it is {claim}, but it comes from pid {p} (SO_PEERCRED): \
             an actor's Aid must carry its own pid"
        ));
    }
    match known {
        Some(k) if k != claim => Err(format!(
            "the connection claims the uuid of {k} but says it is {claim} (name {:?}, pid {}): \
             that actor is known here, and it is not this one",
            claim.name, claim.pid
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_pid_is_the_last_of_nspid() {
        let status = "Name:\tx\nTgid:\t4242\nPid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t1\n";
        assert_eq!(innermost_pid(status), Some(1));
        assert_eq!(innermost_pid("NSpid:\t99\n"), Some(99));
        assert_eq!(innermost_pid("Pid:\t99\n"), None);
    }

    #[test]
    fn a_pid_that_is_not_the_peers_is_refused() {
        let me = std::process::id();
        let honest = Aid::new("a", me);
        assert!(check(&honest, Some(me), None).is_ok());
        assert!(check(&honest, None, None).is_ok(), "over TCP the pid is the peer's word");
        // A pid no process has (pid_max is at most 2^22).
        let liar = Aid::new("a", 999_999_999);
        let e = check(&liar, Some(me), None).unwrap_err();
        assert!(e.contains("SO_PEERCRED") && e.contains(&format!("pid {me}")), "{e}");
    }

    #[test]
    fn a_known_identity_must_be_claimed_whole() {
        let parent = Aid::new("parent", 10);
        assert!(check(&parent, None, Some(&parent)).is_ok());
        let same_uuid = Aid { pid: 11, ..parent.clone() };
        let e = check(&same_uuid, None, Some(&parent)).unwrap_err();
        assert!(e.contains("claims the uuid of"), "{e}");
        let renamed = Aid { name: "other".into(), ..parent.clone() };
        assert!(check(&renamed, None, Some(&parent)).is_err());
    }
}
