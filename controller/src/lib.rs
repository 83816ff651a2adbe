//! `newresource-controller`: reconciles `NewResource` objects, but only while the leader sidecar
//! in the same pod grants leadership. The library holds the pieces, so that the end-to-end suites
//! and the demo share the CRD type and the binary stays a thin `main`:
//!
//! - [`crd`]: the `NewResource` type, the one definition of the CRD;
//! - [`workers`]: runs the kube-runtime controller only while `leader_client`'s gate is open
//!   (the gate, its follower and its safety argument are that crate's); [`reconcile`]: what one
//!   reconcile does, checking the grant before every write;
//! - [`config`], [`metrics`], [`admin`] (probes and metrics).

pub mod admin;
pub mod config;
pub mod crd;
pub mod metrics;
pub mod reconcile;
pub mod workers;

/// The name this controller reports in metrics and logs.
pub const CONTROLLER_NAME: &str = "newresource";
