//! Prometheus metrics of the controller, measured around `reconcile` (as kube-rs'
//! controller-rs does) and around the active windows.

use std::sync::Arc;

use plumbing::metrics::{encode, register};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::CONTROLLER_NAME;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiErrorLabels {
    controller: String,
    resource: String,
    verb: String,
    code: String,
}

/// The `code` label of a failed Kubernetes request (the same labelling as the sidecar's).
pub use plumbing::kubernetes::error_code as api_error_code;

/// How one reconcile ended, for `controller_reconcile_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error,
    NotFound,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::NotFound => "not_found",
        }
    }
}

/// Cheap to clone; all clones update the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    leader: Family<ControllerLabel, Gauge>,
    windows: Family<ControllerLabel, Counter>,
    api_errors: Family<ApiErrorLabels, Counter>,
}

fn label() -> ControllerLabel {
    ControllerLabel {
        controller: CONTROLLER_NAME.to_owned(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = register(
            &mut registry,
            "controller_reconcile",
            "Reconciles by result (success, error, not_found)",
            Family::<ResultLabels, Counter>::default(),
        );
        let errors = register(
            &mut registry,
            "controller_reconcile_errors",
            "Failed reconciles by error type",
            Family::<ErrorLabels, Counter>::default(),
        );
        let duration = register(
            &mut registry,
            "controller_reconcile_duration_seconds",
            "Duration of reconciles, successful or not",
            Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
        );
        let leader = register(
            &mut registry,
            "controller_leader",
            "1 while this controller's workers run under a grant from the sidecar, else 0",
            Family::<ControllerLabel, Gauge>::default(),
        );
        let windows = register(
            &mut registry,
            "controller_active_windows",
            "Active windows started (times this controller became the active one)",
            Family::<ControllerLabel, Counter>::default(),
        );
        let api_errors = register(
            &mut registry,
            "controller_api_errors",
            "Failed Kubernetes API requests by resource, verb and code (HTTP status, timeout or transport)",
            Family::<ApiErrorLabels, Counter>::default(),
        );
        let m = Self {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                errors,
                duration,
                leader,
                windows,
                api_errors,
            }),
        };
        // Export the series at zero from the start, so dashboards and alerts see them.
        m.set_leader(false);
        let _ = m.inner.windows.get_or_create(&label());
        let _ = m.inner.duration.get_or_create(&label());
        for outcome in [Outcome::Success, Outcome::Error, Outcome::NotFound] {
            let _ = m.inner.reconciles.get_or_create(&ResultLabels {
                controller: CONTROLLER_NAME.to_owned(),
                result: outcome.as_str().to_owned(),
            });
        }
        m
    }

    /// Records one reconcile that started at `started`.
    pub fn reconciled(&self, started: Instant, outcome: Outcome, error_type: Option<&str>) {
        self.inner
            .duration
            .get_or_create(&label())
            .observe(started.elapsed().as_secs_f64());
        self.inner
            .reconciles
            .get_or_create(&ResultLabels {
                controller: CONTROLLER_NAME.to_owned(),
                result: outcome.as_str().to_owned(),
            })
            .inc();
        if let Some(error_type) = error_type {
            self.inner
                .errors
                .get_or_create(&ErrorLabels {
                    controller: CONTROLLER_NAME.to_owned(),
                    error_type: error_type.to_owned(),
                })
                .inc();
        }
    }

    /// Counts one failed Kubernetes request; `code` as from [`api_error_code`].
    pub fn api_error(&self, resource: &str, verb: &str, code: &str) {
        self.inner
            .api_errors
            .get_or_create(&ApiErrorLabels {
                controller: CONTROLLER_NAME.to_owned(),
                resource: resource.to_owned(),
                verb: verb.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn set_leader(&self, active: bool) {
        self.inner
            .leader
            .get_or_create(&label())
            .set(i64::from(active));
        if active {
            self.inner.windows.get_or_create(&label()).inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        encode(&self.inner.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_contracted_names() {
        let m = Metrics::new();
        m.reconciled(Instant::now(), Outcome::Error, Some("conflict"));
        m.set_leader(true);
        let text = m.encode();
        for needle in [
            r#"controller_reconcile_total{controller="newresource",result="error"} 1"#,
            r#"controller_reconcile_total{controller="newresource",result="success"} 0"#,
            r#"controller_reconcile_errors_total{controller="newresource",error_type="conflict"} 1"#,
            r#"controller_reconcile_duration_seconds_count{controller="newresource"} 1"#,
            r#"controller_leader{controller="newresource"} 1"#,
            r#"controller_active_windows_total{controller="newresource"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn counts_failed_api_requests_by_resource_verb_and_code() {
        let m = Metrics::new();
        assert!(
            !m.encode().contains("controller_api_errors_total{"),
            "no series before a failure"
        );
        m.api_error("newresources", "list", "403");
        m.api_error("newresources", "list", "403");
        m.api_error("newresources", "watch", "transport");
        m.api_error("newresources/status", "update", "403");
        m.api_error("newresources/status", "update", "timeout");
        let text = m.encode();
        for needle in [
            "# TYPE controller_api_errors counter",
            r#"controller_api_errors_total{controller="newresource",resource="newresources",verb="list",code="403"} 2"#,
            r#"controller_api_errors_total{controller="newresource",resource="newresources",verb="watch",code="transport"} 1"#,
            r#"controller_api_errors_total{controller="newresource",resource="newresources/status",verb="update",code="403"} 1"#,
            r#"controller_api_errors_total{controller="newresource",resource="newresources/status",verb="update",code="timeout"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn api_error_codes() {
        let forbidden = kube::Error::Api(
            kube::core::Status::failure(
                r#"newresources.apps.newresource.com is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "newresources""#,
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        );
        assert_eq!(api_error_code(&forbidden), "403");
        assert!(
            forbidden
                .to_string()
                .contains(r#"cannot list resource "newresources""#),
            "the log line carries the server's message: {forbidden}"
        );
        let timed_out = kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read timed out",
        ));
        assert_eq!(api_error_code(&timed_out), "timeout");
        let reset = kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        ));
        assert_eq!(api_error_code(&reset), "transport");
    }
}
