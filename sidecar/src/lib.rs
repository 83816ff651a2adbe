//! `leader-sidecar`: holds a `coordination.k8s.io/v1` Lease and serves leadership to the local
//! controller over HTTP. The library holds the pieces, so that the test suites and the
//! simulator drive the same state machines as the binary:
//!
//! - [`elector`]: the pure state machine and its safety argument;
//! - [`leadership`]: grants handed to the local controller, bounded by the tenure;
//! - [`runner`]: drives the elector against the API server ([`lease_api`]);
//! - [`http`]: the leader API and the admin port's probes; the bodies they serve are
//!   `leader_client::contract`'s, the server is `plumbing::server`;
//! - [`pod_label`]: the opt-in `leader`/`standby` label on the sidecar's own Pod;
//! - [`config`], [`metrics`], [`rlimit`] (the open-file limit).

pub mod config;
pub mod elector;
pub mod http;
pub mod leadership;
pub mod lease_api;
pub mod metrics;
pub mod pod_label;
pub mod rlimit;
pub mod runner;
