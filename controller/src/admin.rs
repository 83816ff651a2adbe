//! Probes and metrics: `/metrics` on `--metrics-bind-address`, `/healthz` and `/readyz` on
//! `--health-probe-bind-address`, served by the sidecar's small HTTP loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use leader_sidecar::http::{Body, error, text};
use leader_sidecar::runner::Heartbeat;
use tokio::time::Instant;

use crate::gate::LeadershipGate;
use crate::metrics::Metrics;

/// Connections served at once on each admin port.
pub const MAX_CONNECTIONS: usize = 64;

/// What the probes report on.
#[derive(Clone)]
pub struct Probes {
    pub gate: LeadershipGate,
    /// Whether readiness depends on the sidecar (`--leader-elect`).
    pub needs_sidecar: bool,
    /// The last API check succeeded.
    pub api_ok: Arc<AtomicBool>,
    /// Beaten by the gate follower; `None` without leader election.
    pub heartbeat: Option<Arc<Heartbeat>>,
    /// `/healthz` fails when the follower has not run for this long.
    pub wedged_after: Duration,
}

impl Probes {
    /// `Ok` when live, else the reason.
    pub fn healthy(&self, now: Instant) -> Result<(), String> {
        match &self.heartbeat {
            Some(h) if h.age(now) >= self.wedged_after => Err(format!(
                "the leadership follower has not run for {}ms",
                h.age(now).as_millis()
            )),
            _ => Ok(()),
        }
    }

    /// `Ok` when connected to the sidecar and the API (a standby is ready too).
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.needs_sidecar && !self.gate.reachable() {
            return Err("the leader sidecar is not reachable");
        }
        if !self.api_ok.load(Ordering::Relaxed) {
            return Err("the Kubernetes API is not reachable (or newresources cannot be listed)");
        }
        Ok(())
    }

    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        if let Some(r) = only_get(&req) {
            return r;
        }
        match req.uri().path() {
            "/healthz" => match self.healthy(Instant::now()) {
                Ok(()) => ok(),
                Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, &why),
            },
            "/readyz" => match self.ready() {
                Ok(()) => ok(),
                Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            other => error(StatusCode::NOT_FOUND, &format!("no such path: {other}")),
        }
    }
}

/// Serves `/metrics`.
pub async fn handle_metrics(metrics: Metrics, req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = only_get(&req) {
        return r;
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        other => error(StatusCode::NOT_FOUND, &format!("no such path: {other}")),
    }
}

fn only_get(req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET and HEAD are served here",
    );
    r.headers_mut().insert(
        http::header::ALLOW,
        http::HeaderValue::from_static("GET, HEAD"),
    );
    Some(r)
}

fn ok() -> Response<Body> {
    text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
}
