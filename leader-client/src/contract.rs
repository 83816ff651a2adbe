//! The HTTP contract between the sidecar and the local controller: the one definition of the
//! bodies served on `--listen`. `docs/leader-api.md` describes the rules around them.

use serde::{Deserialize, Serialize};

/// Body of `GET /leader`, and the `data` of every `/leader/watch` event.
///
/// `is_leader: true` is a *grant*: it authorises the caller to act as leader for `valid_for_ms`
/// milliseconds, counted on the caller's monotonic clock from the moment *before it sent the
/// request* (for the stream: from when it read the event). Without a fresh grant by then the
/// caller must stop.
///
/// Clients read it as `LeaderStatus` (owned strings); the sidecar writes it from borrowed ones
/// (`LeaderStatus<&str>`), so that answering allocates nothing but the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderStatus<S = String> {
    /// Whether this pod is leader and grants leadership to the caller right now.
    pub is_leader: bool,
    /// This sidecar's identity (the value it writes as `holderIdentity`).
    pub identity: S,
    /// The holder recorded in the Lease as last observed; `null` when free, absent or unknown.
    pub holder: Option<S>,
    /// `<namespace>/<name>` of the Lease.
    pub lease: S,
    /// Leader: the term of our tenure (the `leaseTransitions` we wrote when we acquired).
    /// Follower: `leaseTransitions` as last observed. Grows with every new tenure.
    pub term: Option<i32>,
    /// How long this grant is valid; 0 when `is_leader` is false.
    pub valid_for_ms: u64,
    /// When this sidecar last read or received the Lease (RFC 3339, this node's wall clock).
    pub observed_at: Option<S>,
    /// `renewTime` of the Lease as last observed (RFC 3339, written by the holder's wall clock).
    pub renewed_at: Option<S>,
}

/// Body of `GET /`, for clients of the old kubernetes/contrib `leader-elector`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyLeader {
    /// The current holder, `""` when none.
    pub name: String,
}

/// Body of `POST /leader/yield`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YieldResponse {
    /// Whether this sidecar was leader when the yield arrived.
    pub was_leader: bool,
    /// The sidecar will not try to acquire the Lease again for this long (unless still free).
    pub backoff_ms: u64,
}

/// Body of every 4xx/5xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Paths and the event name, shared by the server, the controller and the tests.
pub mod paths {
    pub const LEADER: &str = "/leader";
    pub const WATCH: &str = "/leader/watch";
    pub const YIELD: &str = "/leader/yield";
    pub const LEGACY: &str = "/";
    /// SSE `event:` name of leadership events.
    pub const EVENT: &str = "leader";
}
