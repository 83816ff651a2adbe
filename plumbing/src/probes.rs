//! The admin port: `/healthz`, `/readyz` and `/metrics`, answered the same way by every binary
//! (GET and HEAD only, `ok` or a JSON error saying why, OpenMetrics text).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::server::{Body, error, text};

/// What a binary reports on its probes.
pub trait Probes: Send + Sync + 'static {
    /// `Ok` while live (the process does not need a restart), else why not.
    fn healthy(&self, now: Instant) -> Result<(), String>;
    /// `Ok` while ready to do its job, else why not.
    fn ready(&self) -> Result<(), String>;
}

/// Produces the `/metrics` text (refreshing gauges that are read rather than kept first).
pub type MetricsText = Arc<dyn Fn() -> String + Send + Sync>;

/// One admin port: the probes, the metrics, or both.
#[derive(Clone, Default)]
pub struct AdminPort {
    pub probes: Option<Arc<dyn Probes>>,
    pub metrics: Option<MetricsText>,
}

impl AdminPort {
    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        self.answer(req.method(), req.uri().path())
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served here",
            );
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        let verdict = match (path, &self.probes, &self.metrics) {
            ("/healthz", Some(p), _) => p.healthy(Instant::now()),
            ("/readyz", Some(p), _) => p.ready(),
            ("/metrics", _, Some(m)) => {
                return text(StatusCode::OK, crate::metrics::CONTENT_TYPE, m());
            }
            (other, _, _) => {
                return error(StatusCode::NOT_FOUND, &format!("no such path: {other}"));
            }
        };
        match verdict {
            Ok(()) => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    struct Fixed {
        live: bool,
        ready: bool,
    }

    impl Probes for Fixed {
        fn healthy(&self, _now: Instant) -> Result<(), String> {
            if self.live {
                Ok(())
            } else {
                Err("wedged".into())
            }
        }
        fn ready(&self) -> Result<(), String> {
            if self.ready {
                Ok(())
            } else {
                Err("not yet".into())
            }
        }
    }

    async fn body(r: Response<Body>) -> (u16, String) {
        let code = r.status().as_u16();
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn probes_and_metrics_answer_as_documented() {
        let both = AdminPort {
            probes: Some(Arc::new(Fixed {
                live: true,
                ready: false,
            })),
            metrics: Some(Arc::new(|| "# EOF\n".to_owned())),
        };
        let get = |p: &AdminPort, path: &str| p.answer(&Method::GET, path);
        assert_eq!(body(get(&both, "/healthz")).await, (200, "ok\n".into()));
        assert_eq!(
            body(get(&both, "/readyz")).await,
            (503, r#"{"error":"not yet"}"#.into())
        );
        let metrics = get(&both, "/metrics");
        assert_eq!(
            metrics.headers()[http::header::CONTENT_TYPE],
            crate::metrics::CONTENT_TYPE
        );
        assert_eq!(body(metrics).await, (200, "# EOF\n".into()));
        assert_eq!(
            body(get(&both, "/nope")).await,
            (404, r#"{"error":"no such path: /nope"}"#.into())
        );
        let post = both.answer(&Method::POST, "/healthz");
        assert_eq!(post.headers()[http::header::ALLOW], "GET, HEAD");
        assert_eq!(post.status(), 405);

        // A port without probes does not answer them, and the other way round.
        let metrics_only = AdminPort {
            probes: None,
            ..both.clone()
        };
        assert_eq!(get(&metrics_only, "/healthz").status(), 404);
        let probes_only = AdminPort {
            probes: Some(Arc::new(Fixed {
                live: false,
                ready: true,
            })),
            metrics: None,
        };
        assert_eq!(get(&probes_only, "/metrics").status(), 404);
        assert_eq!(
            body(get(&probes_only, "/healthz")).await,
            (503, r#"{"error":"wedged"}"#.into())
        );
    }
}
