//! What every binary of the workspace needs around its own logic, written once:
//!
//! - [`cli`]: flags with human durations, exit status 2 with a one-line reason for bad flags,
//!   the log format, the async `main` and shutdown signals;
//! - [`kubernetes`]: the Kubernetes client configuration (kubeconfig files or in-cluster) and how a
//!   failed request is labelled in metrics;
//! - [`server`]: the bounded HTTP/1.1 server (connection slots, idle timeouts) and its response
//!   helpers; [`probes`]: the admin port (`/healthz`, `/readyz`, `/metrics`);
//! - [`heartbeat`]: liveness of a loop, for `/healthz`; [`metrics`]: registry setup.
//!
//! The leadership contract itself is not here: it is `leader-client`'s.

pub mod cli;
pub mod heartbeat;
pub mod kubernetes;
pub mod metrics;
pub mod probes;
pub mod server;
