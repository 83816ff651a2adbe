//! `newresource-controller`: reconciles `NewResource` objects, but only while the leader sidecar
//! in the same pod grants leadership. The library holds the pieces, so that the end-to-end suites
//! and the demo share the CRD type and the binary stays a thin `main`:
//!
//! - [`crd`]: the `NewResource` type, the one definition of the CRD;
//! - [`gate`]: the [`gate::LeadershipGate`] and its pure state machine, with the safety argument;
//! - [`follow`]: keeps the gate in step with the sidecar's HTTP contract ([`sidecar_client`]);
//! - [`workers`]: starts the kube-runtime controller when a grant arrives and stops it when the
//!   grant ends; [`reconcile`]: what one reconcile does;
//! - [`config`], [`metrics`], [`admin`] (probes and metrics).

pub mod admin;
pub mod config;
pub mod crd;
pub mod follow;
pub mod gate;
pub mod metrics;
pub mod reconcile;
pub mod sidecar_client;
pub mod workers;

/// The name this controller reports in metrics and logs.
pub const CONTROLLER_NAME: &str = "newresource";
