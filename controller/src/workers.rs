//! Active windows: the kube-runtime controller runs only while the gate is open.
//!
//! When a grant arrives a window opens: `active window started` (with the term) is logged
//! before anything else, then a fresh kube-runtime `Controller` starts, which lists every
//! `NewResource` and so reconciles all of them once (the full resync after a pause). When the
//! grant is revoked, runs out or changes term, the controller future is dropped at once, which
//! cancels every reconcile and request in flight; only then is `active window ended` logged.
//! So the logged window contains every write this process sent in it, and the end-to-end
//! suites prove non-overlap from the logs.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{self, Config as ControllerConfig, Controller};
use kube::runtime::watcher;

use crate::CONTROLLER_NAME;
use crate::crd::NewResource;
use crate::gate::LeadershipGate;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};

/// How the workers run.
#[derive(Clone)]
pub struct Workers {
    pub client: kube::Client,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub concurrency: u16,
    pub gate: LeadershipGate,
    pub metrics: Metrics,
}

impl Workers {
    fn api(&self) -> Api<NewResource> {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Opens and closes active windows as the gate says, until `shutdown` resolves; a window
    /// open at shutdown is closed (workers stopped) before this returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut gate = self.gate.clone();
        tokio::pin!(shutdown);
        loop {
            let grant = tokio::select! {
                g = gate.opened() => g,
                () = &mut shutdown => return,
            };
            let term = grant.term;
            tracing::info!(term, "active window started");
            self.metrics.set_leader(true);
            tracing::info!(controller = CONTROLLER_NAME, "Starting Controller");
            tracing::info!(
                controller = CONTROLLER_NAME,
                worker_count = self.concurrency,
                "Starting workers"
            );
            let ctx = Arc::new(Context::new(
                self.client.clone(),
                self.gate.clone(),
                self.metrics.clone(),
            ));
            let controller = Controller::new(self.api(), watcher::Config::default())
                .with_config(ControllerConfig::default().concurrency(self.concurrency))
                .run(reconcile::reconcile, reconcile::error_policy, ctx)
                .for_each(|result| async move {
                    match result {
                        // Watch failures (403, API outages) are what an operator must see;
                        // the watcher retries them with backoff.
                        Err(controller::Error::QueueError(e)) => {
                            tracing::warn!(error = %e, "watching newresources failed")
                        }
                        // Reconcile failures are logged by the error policy.
                        Err(e) => tracing::debug!(error = %e, "controller event"),
                        Ok(_) => {}
                    }
                });
            let reason = tokio::select! {
                reason = gate.closed(term) => reason.as_str(),
                () = controller => "controller stopped",
                () = &mut shutdown => "shutdown",
            };
            // Leaving the select dropped the controller: no reconcile or write is in flight now.
            tracing::info!(controller = CONTROLLER_NAME, reason, "Stopping workers");
            self.metrics.set_leader(false);
            tracing::info!(term, reason, "active window ended");
            if reason == "shutdown" {
                return;
            }
        }
    }
}
