//! Prometheus metrics served on the admin port.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use plumbing::metrics::{encode, register};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    /// `leases` or `events`.
    resource: String,
    verb: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    event: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    path: String,
    code: String,
}

/// Cheap to clone; all clones update the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    lease_name: String,
    master_status: Family<NameLabel, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    renew_seconds: Histogram,
    api_requests: Family<ApiLabels, Counter>,
    api_errors: Family<ApiLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    /// Handles of the common `(path, code)` series, so that counting a request on the hot
    /// path neither allocates nor hashes.
    http_hot: Vec<(&'static str, u16, Counter)>,
    watchers: Gauge,
}

/// Paths and codes of the leader API whose counters are resolved up front.
const HOT_PATHS: [&str; 5] = ["/leader", "/leader/watch", "/leader/yield", "/", "other"];
const HOT_CODES: [u16; 5] = [200, 404, 405, 413, 503];

impl Metrics {
    /// `renew_deadline` is exported as `leader_sidecar_renew_deadline_seconds`, so that alerts
    /// compare the renew latency with each pod's own deadline (deploy/monitoring).
    pub fn new(lease_name: &str, renew_deadline: Duration) -> Self {
        let mut registry = Registry::default();
        let master_status = register(
            &mut registry,
            "leader_election_master_status",
            "1 while this pod is leader of the named lease, else 0 (client-go's name)",
            Family::<NameLabel, Gauge>::default(),
        );
        let transitions = register(
            &mut registry,
            "leader_sidecar_transitions",
            "Leadership changes of this pod: event acquired or lost, with the reason for losses",
            Family::<TransitionLabels, Counter>::default(),
        );
        let renew_seconds = register(
            &mut registry,
            "leader_sidecar_renew_duration_seconds",
            "Duration of lease renew requests, successful or not",
            Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        );
        let api_requests = register(
            &mut registry,
            "leader_sidecar_api_requests",
            "Requests to the Kubernetes API, by resource (leases, events), verb and status code (or timeout, transport)",
            Family::<ApiLabels, Counter>::default(),
        );
        let api_errors = register(
            &mut registry,
            "leader_sidecar_api_errors",
            "Failed Kubernetes API requests (lease conflicts excluded), by resource (leases, events), verb and code (or timeout, transport)",
            Family::<ApiLabels, Counter>::default(),
        );
        let http_requests = register(
            &mut registry,
            "leader_sidecar_http_requests",
            "Requests served on the leader API, by path and status code",
            Family::<HttpLabels, Counter>::default(),
        );
        let watchers = register(
            &mut registry,
            "leader_sidecar_watchers",
            "Open /leader/watch streams",
            Gauge::default(),
        );
        // Set once here; the registry holds the only handle it needs.
        let renew_deadline_gauge = Gauge::<f64, AtomicU64>::default();
        renew_deadline_gauge.set(renew_deadline.as_secs_f64());
        registry.register(
            "leader_sidecar_renew_deadline_seconds",
            "The configured --renew-deadline: the leader steps down this long after its last successful renew",
            renew_deadline_gauge,
        );
        let mut http_hot = Vec::new();
        for path in HOT_PATHS {
            for code in HOT_CODES {
                let labels = HttpLabels {
                    path: path.to_owned(),
                    code: code.to_string(),
                };
                let counter = http_requests.get_or_create(&labels).clone();
                http_hot.push((path, code, counter));
            }
        }
        let m = Self {
            inner: Arc::new(Inner {
                registry,
                lease_name: lease_name.to_owned(),
                master_status,
                transitions,
                renew_seconds,
                api_requests,
                api_errors,
                http_requests,
                http_hot,
                watchers,
            }),
        };
        m.set_leader(false);
        m
    }

    pub fn set_leader(&self, leader: bool) {
        let name = NameLabel {
            name: self.inner.lease_name.clone(),
        };
        self.inner
            .master_status
            .get_or_create(&name)
            .set(i64::from(leader));
    }

    pub fn transition(&self, event: &str, reason: &str) {
        let labels = TransitionLabels {
            event: event.to_owned(),
            reason: reason.to_owned(),
        };
        self.inner.transitions.get_or_create(&labels).inc();
    }

    pub fn renew_duration(&self, seconds: f64) {
        self.inner.renew_seconds.observe(seconds);
    }

    /// Counts a request to the Kubernetes API about `resource` (`leases`, `events` or `pods`).
    /// `code` is the HTTP status, `timeout` or `transport`. Every code but 2xx also counts as
    /// an error, except the expected answers of Leases and Pods: 409 (a lost compare-and-swap)
    /// and 404 on a get (no Lease yet; a predecessor's Pod already gone).
    pub fn api_request(&self, resource: &str, verb: &str, code: &str) {
        let labels = ApiLabels {
            resource: resource.to_owned(),
            verb: verb.to_owned(),
            code: code.to_owned(),
        };
        self.inner.api_requests.get_or_create(&labels).inc();
        let expected = code.starts_with('2')
            || ((resource == "leases" || resource == "pods")
                && (code == "409" || (verb == "get" && code == "404")));
        if !expected {
            self.inner.api_errors.get_or_create(&labels).inc();
        }
    }

    /// Counts an error reported on a request already counted as answered: an error event
    /// inside an open watch, or a watch stream that broke or fell silent.
    pub fn api_error(&self, resource: &str, verb: &str, code: &str) {
        let labels = ApiLabels {
            resource: resource.to_owned(),
            verb: verb.to_owned(),
            code: code.to_owned(),
        };
        self.inner.api_errors.get_or_create(&labels).inc();
    }

    pub fn http_request(&self, path: &str, code: u16) {
        if let Some((_, _, counter)) = self
            .inner
            .http_hot
            .iter()
            .find(|(p, c, _)| *c == code && *p == path)
        {
            counter.inc();
            return;
        }
        let labels = HttpLabels {
            path: path.to_owned(),
            code: code.to_string(),
        };
        self.inner.http_requests.get_or_create(&labels).inc();
    }

    pub fn set_watchers(&self, n: usize) {
        self.inner
            .watchers
            .set(i64::try_from(n).unwrap_or(i64::MAX));
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
    fn api_series_carry_the_resource() {
        let m = Metrics::new("lease", Duration::from_secs(10));
        m.api_request("leases", "create", "201");
        m.api_request("leases", "get", "404");
        m.api_request("leases", "update", "409");
        m.api_request("leases", "list", "403");
        m.api_request("leases", "watch", "timeout");
        m.api_error("leases", "watch", "500");
        m.api_request("events", "create", "201");
        m.api_request("events", "create", "403");
        m.api_request("events", "create", "transport");
        let text = m.encode();
        for needle in [
            r#"leader_sidecar_api_requests_total{resource="leases",verb="create",code="201"} 1"#,
            r#"leader_sidecar_api_requests_total{resource="leases",verb="get",code="404"} 1"#,
            r#"leader_sidecar_api_requests_total{resource="leases",verb="list",code="403"} 1"#,
            r#"leader_sidecar_api_errors_total{resource="leases",verb="list",code="403"} 1"#,
            r#"leader_sidecar_api_errors_total{resource="leases",verb="watch",code="timeout"} 1"#,
            r#"leader_sidecar_api_errors_total{resource="leases",verb="watch",code="500"} 1"#,
            r#"leader_sidecar_api_requests_total{resource="events",verb="create",code="201"} 1"#,
            r#"leader_sidecar_api_requests_total{resource="events",verb="create",code="403"} 1"#,
            r#"leader_sidecar_api_errors_total{resource="events",verb="create",code="403"} 1"#,
            r#"leader_sidecar_api_errors_total{resource="events",verb="create",code="transport"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        for absent in [
            r#"leader_sidecar_api_errors_total{resource="leases",verb="create",code="201"}"#,
            r#"leader_sidecar_api_errors_total{resource="leases",verb="get",code="404"}"#,
            r#"leader_sidecar_api_errors_total{resource="leases",verb="update",code="409"}"#,
            r#"leader_sidecar_api_errors_total{resource="events",verb="create",code="201"}"#,
            r#"leader_sidecar_api_requests_total{resource="leases",verb="watch",code="500"}"#,
        ] {
            assert!(!text.contains(absent), "{absent} unexpected in\n{text}");
        }
    }

    #[test]
    fn exports_the_configured_renew_deadline() {
        let text = Metrics::new("lease", Duration::from_millis(2500)).encode();
        for needle in [
            "# TYPE leader_sidecar_renew_deadline_seconds gauge",
            "\nleader_sidecar_renew_deadline_seconds 2.5\n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
    }
}
