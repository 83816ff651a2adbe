//! Active windows: the kube-runtime controller runs only while the gate is open.
//!
//! The windows themselves are `leader_client`'s [`LeadershipGate::run_while_granted`]: when a
//! grant arrives, `active window started` (with the term) is logged before anything else, then
//! a fresh kube-runtime `Controller` starts, which lists every `NewResource` and so reconciles
//! all of them once (the full resync after a pause). When the grant is revoked, runs out or
//! changes term, the controller future is dropped at once, which cancels every reconcile and
//! request in flight; only then is `active window ended` logged. So the logged window contains
//! every write this process sent in it, and the end-to-end suites prove non-overlap from the
//! logs.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{self, Config as ControllerConfig, Controller};
use kube::runtime::watcher;
use leader_client::LeadershipGate;

use crate::CONTROLLER_NAME;
use crate::crd::NewResource;
use crate::metrics::{Metrics, api_error_code};
use crate::reconcile::{self, Context};

/// The `resource` label of the watcher's requests.
const RESOURCE: &str = "newresources";

/// The verb of the request a watcher error comes from, and the `code` label of
/// `controller_api_errors_total` (`None`: no request failed, the answer lacked a
/// resourceVersion).
fn watcher_failure(e: &watcher::Error) -> (&'static str, Option<String>) {
    match e {
        watcher::Error::InitialListFailed(e) => ("list", Some(api_error_code(e))),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            ("watch", Some(api_error_code(e)))
        }
        watcher::Error::WatchError(status) => ("watch", Some(status.code.to_string())),
        watcher::Error::NoResourceVersion => ("list", None),
    }
}

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

    /// Runs the kube-runtime controller in every active window, until `shutdown` resolves; a
    /// window open at shutdown is closed (workers stopped) before this returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let metrics = &self.metrics;
        self.gate
            .run_while_granted(
                shutdown,
                |_grant| self.window(),
                |_grant, why| {
                    // The window's controller future is gone: no reconcile or write is in flight.
                    tracing::info!(
                        controller = CONTROLLER_NAME,
                        reason = why.as_str(),
                        "Stopping workers"
                    );
                    metrics.set_leader(false);
                },
            )
            .await;
    }

    /// One active window: a fresh kube-runtime `Controller`, whose initial list reconciles every
    /// `NewResource` once (the full resync after a pause). It runs until the gate closes, and is
    /// then dropped by [`LeadershipGate::run_while_granted`].
    async fn window(&self) {
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
        let metrics = &self.metrics;
        Controller::new(self.api(), watcher::Config::default())
            .with_config(ControllerConfig::default().concurrency(self.concurrency))
            .run(reconcile::reconcile, reconcile::error_policy, ctx)
            .for_each(|result| async move {
                match result {
                    // Watch failures (403, API outages) are what an operator must see; the
                    // watcher retries them with backoff.
                    Err(controller::Error::QueueError(e)) => {
                        let (verb, code) = watcher_failure(&e);
                        if let Some(code) = &code {
                            metrics.api_error(RESOURCE, verb, code);
                        }
                        tracing::warn!(
                            resource = RESOURCE,
                            verb,
                            code = code.as_deref().unwrap_or(""),
                            error = %e,
                            "watching newresources failed"
                        )
                    }
                    // Reconcile failures are logged by the error policy.
                    Err(e) => tracing::debug!(error = %e, "controller event"),
                    Ok(_) => {}
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(verb: &str) -> kube::Error {
        let message = format!(
            r#"newresources.apps.newresource.com is forbidden: User "system:serviceaccount:ns:sa" cannot {verb} resource "newresources""#
        );
        kube::Error::Api(
            kube::core::Status::failure(&message, "Forbidden")
                .with_code(403)
                .boxed(),
        )
    }

    #[test]
    fn watcher_failures_name_the_request_and_code() {
        let cases = [
            (
                watcher::Error::InitialListFailed(forbidden("list")),
                "list",
                Some("403"),
            ),
            (
                watcher::Error::WatchStartFailed(forbidden("watch")),
                "watch",
                Some("403"),
            ),
            (
                watcher::Error::WatchError(
                    kube::core::Status::failure("too old", "Expired")
                        .with_code(410)
                        .boxed(),
                ),
                "watch",
                Some("410"),
            ),
            (
                watcher::Error::WatchFailed(kube::Error::ReadEvents(std::io::Error::other(
                    "reset",
                ))),
                "watch",
                Some("transport"),
            ),
            (watcher::Error::NoResourceVersion, "list", None),
        ];
        let metrics = Metrics::new();
        for (e, verb, code) in cases {
            let got = watcher_failure(&e);
            assert_eq!((got.0, got.1.as_deref()), (verb, code), "{e}");
            if let Some(code) = got.1 {
                metrics.api_error(RESOURCE, got.0, &code);
            }
        }
        let text = metrics.encode();
        for needle in [
            r#"controller_api_errors_total{controller="newresource",resource="newresources",verb="list",code="403"} 1"#,
            r#"controller_api_errors_total{controller="newresource",resource="newresources",verb="watch",code="403"} 1"#,
            r#"controller_api_errors_total{controller="newresource",resource="newresources",verb="watch",code="410"} 1"#,
            r#"controller_api_errors_total{controller="newresource",resource="newresources",verb="watch",code="transport"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let list = watcher::Error::InitialListFailed(forbidden("list")).to_string();
        assert!(
            list.contains(r#"is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "newresources""#),
            "{list}"
        );
    }
}
