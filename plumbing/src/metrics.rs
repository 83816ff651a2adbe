//! Prometheus registry setup shared by the binaries: registering a metric hands back the
//! handle to update, and the registry is served as OpenMetrics text.

use prometheus_client::registry::{Metric, Registry};

/// `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Registers `metric` under `name` and returns it, so that a metrics struct is built one line
/// per metric: `let renews = register(&mut registry, "…", "…", Histogram::new(…));`.
pub fn register<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn a_registered_metric_is_the_one_encoded() {
        let mut registry = Registry::default();
        let requests: Counter = register(
            &mut registry,
            "requests",
            "Requests served",
            Counter::default(),
        );
        requests.inc();
        let text = encode(&registry);
        assert!(text.contains("# HELP requests Requests served."), "{text}");
        assert!(text.contains("requests_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
