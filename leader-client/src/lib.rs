//! Follow a `leader-sidecar` from a Rust controller: the HTTP contract of `docs/leader-api.md`
//! as types, and the client side of its rules.
//!
//! - [`contract`]: the bodies the sidecar serves, defined once for the sidecar, this crate and
//!   the test suites;
//! - [`gate`]: the [`LeadershipGate`] that work asks before acting, its pure state machine
//!   [`gate::GateState`] and the safety argument;
//! - [`follow()`]: keeps the gate in step with the sidecar ([`SidecarClient`], or any
//!   [`LeaderSource`]);
//! - [`LeadershipGate::run_while_granted`]: runs a future only while leadership is granted and
//!   drops it when the grant ends, logging the windows with their terms.
//!
//! Nothing here depends on a Kubernetes client: the gate guards whatever the work does.

pub mod client;
pub mod contract;
pub mod follow;
pub mod gate;
pub mod windows;

pub use client::SidecarClient;
pub use follow::{LeaderSource, SourceError, follow};
pub use gate::{Closed, GatePublisher, Grant, LeadershipGate};
pub use windows::WindowEnd;
