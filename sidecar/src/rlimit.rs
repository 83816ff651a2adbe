//! The open-file limit (`RLIMIT_NOFILE`) and the connections it allows.
//!
//! Every connection is a file descriptor. Containers usually start with a soft limit of 1024
//! and a much higher hard limit, so, like Go's runtime (package `syscall` since Go 1.19), the
//! sidecar raises its soft limit to the hard one at startup. `--max-connections` (per port) is
//! then lowered, with a warning, to what the limit leaves for connections: past it, `accept`
//! fails with `EMFILE`, which would refuse the controller exactly like a full connection table
//! does, without the eviction of idle connections that `http::Slots` does at the cap.

use std::io;

/// Descriptors kept for everything but served connections: stdio, the two listeners, the two
/// runtimes' epoll and wake-up descriptors, the Kubernetes client's connections and TLS files,
/// and connections evicted at the cap whose task has not closed them yet (a few per port).
pub const RESERVED_FDS: u64 = 128;

/// Ports served with `--max-connections` each: the leader API and the admin port.
pub const PORTS: u64 = 2;

/// Soft and hard `RLIMIT_NOFILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
}

/// The outcome of [`raise_nofile`].
#[derive(Debug)]
pub struct Raised {
    /// The limits now in force.
    pub limits: NoFile,
    /// The soft limit before.
    pub before: u64,
    /// Why the soft limit could not be raised to the hard one.
    pub error: Option<io::Error>,
}

/// The current limits.
pub fn nofile() -> io::Result<NoFile> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok(NoFile { soft, hard })
}

/// Raises the soft limit to the hard one. Fails only when the limits cannot be read; a refused
/// raise is reported in [`Raised::error`] with the limits left in force.
pub fn raise_nofile() -> io::Result<Raised> {
    let before = nofile()?;
    if before.soft >= before.hard {
        return Ok(Raised {
            limits: before,
            before: before.soft,
            error: None,
        });
    }
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::NOFILE, before.hard, before.hard) {
        return Ok(Raised {
            limits: before,
            before: before.soft,
            error: Some(e),
        });
    }
    Ok(Raised {
        limits: nofile()?,
        before: before.soft,
        error: None,
    })
}

/// The most connections per port that a soft limit of `soft` open files leaves room for
/// (at least one, so that a tiny limit degrades the service instead of disabling it).
pub fn connections_allowed(soft: u64) -> usize {
    let per_port = soft.saturating_sub(RESERVED_FDS) / PORTS;
    usize::try_from(per_port).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_in_the_limit() {
        assert_eq!(connections_allowed(1024), 448);
        assert_eq!(connections_allowed(1_048_576), 524_224);
        assert_eq!(connections_allowed(10), 1);
        let huge = usize::try_from((u64::MAX - RESERVED_FDS) / PORTS).unwrap_or(usize::MAX);
        assert_eq!(connections_allowed(u64::MAX), huge);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let raised = raise_nofile().expect("getrlimit");
        assert!(raised.limits.soft >= raised.before);
        if raised.error.is_none() {
            assert_eq!(raised.limits.soft, raised.limits.hard);
        }
        assert_eq!(nofile().expect("getrlimit"), raised.limits);
    }
}
