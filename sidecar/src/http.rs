//! The leader API for the local controller (`--listen`), served by `plumbing`'s bounded server
//! (connection slots, idle timeouts); the admin port is `plumbing::probes` with [`SidecarProbes`].
//!
//! Every leadership answer is computed from memory at the moment it is produced (no API call
//! per request), through [`Leadership::grant`], which cannot hand out a grant past the tenure.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use leader_client::contract::{LeaderStatus, LegacyLeader, YieldResponse, paths};
use plumbing::heartbeat::Heartbeat;
use plumbing::probes::Probes;
use plumbing::server::{Body, empty, error, json, json_bytes};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::elector::Command;
use crate::leadership::Leadership;
use crate::metrics::Metrics;

/// Largest request body accepted (`/leader/yield` needs none).
const MAX_BODY: usize = 1024;
/// Keep-alive event for followers' streams, so that dead connections are noticed.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);
/// Socket send buffer of leader API connections. Small, so that a stream reader that stops
/// reading finds few stale events queued when it resumes.
const API_SEND_BUFFER: usize = 8 * 1024;

/// Send buffer size for leader API connections.
pub fn api_send_buffer() -> Option<usize> {
    Some(API_SEND_BUFFER)
}

/// State of the leader API.
#[derive(Clone)]
pub struct Api {
    pub leadership: Arc<Leadership>,
    pub metrics: Metrics,
    pub commands: mpsc::Sender<Command>,
    pub yield_backoff: Duration,
}

impl Api {
    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        let label = match req.uri().path() {
            paths::LEADER => paths::LEADER,
            paths::WATCH => paths::WATCH,
            paths::YIELD => paths::YIELD,
            paths::LEGACY => paths::LEGACY,
            _ => "other",
        };
        let response = self.route(req).await;
        self.metrics.http_request(label, response.status().as_u16());
        response
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let route = match req.uri().path() {
            paths::LEADER => Route::Leader,
            paths::WATCH => Route::Watch,
            paths::YIELD => Route::Yield,
            paths::LEGACY => Route::Legacy,
            other => return error(StatusCode::NOT_FOUND, &format!("no such path: {other}")),
        };
        let allowed = if route == Route::Yield {
            "POST"
        } else {
            "GET, HEAD"
        };
        let method = req.method().clone();
        if !allowed.split(", ").any(|m| m == method.as_str()) {
            let msg = format!("{method} is not allowed here; use {allowed}");
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &msg);
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            return r;
        }
        if !req.body().is_end_stream()
            && let Err(r) = read_small_body(req).await
        {
            return r;
        }
        let now = Instant::now();
        let mut r = match route {
            Route::Leader => json_bytes(StatusCode::OK, status_json(&self.leadership, now)),
            Route::Watch => self.watch(now),
            Route::Legacy => json(StatusCode::OK, &self.legacy(now)),
            Route::Yield => self.yield_now(now).await,
        };
        if method == Method::HEAD {
            *r.body_mut() = empty();
        }
        r
    }

    /// `GET /`: an old client acts when `name` is its own name, so we show ourselves only
    /// while a grant stands behind it, never a stale holder.
    fn legacy(&self, now: Instant) -> LegacyLeader {
        let name = if self.leadership.grant(now).is_some() {
            self.leadership.identity().to_owned()
        } else {
            let view = self.leadership.view_ref();
            match view.holder.as_deref() {
                Some(h) if h != self.leadership.identity() => h.to_owned(),
                _ => String::new(),
            }
        };
        LegacyLeader { name }
    }

    async fn yield_now(&self, now: Instant) -> Response<Body> {
        let was_leader = self.leadership.is_granting(now);
        // Stop granting before anything else; the elector releases when it gets the command.
        self.leadership.revoke(false, now);
        if self.commands.send(Command::Yield).await.is_err() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the elector has stopped");
        }
        tracing::info!(was_leader, "local controller yielded");
        let backoff_ms = u64::try_from(self.yield_backoff.as_millis()).unwrap_or(u64::MAX);
        json(
            StatusCode::OK,
            &YieldResponse {
                was_leader,
                backoff_ms,
            },
        )
    }

    fn watch(&self, now: Instant) -> Response<Body> {
        struct Stream {
            leadership: Arc<Leadership>,
            rx: tokio::sync::watch::Receiver<crate::leadership::LeaseView>,
            _guard: crate::leadership::WatcherGuard,
            first: bool,
        }
        let state = Stream {
            leadership: self.leadership.clone(),
            rx: self.leadership.subscribe(),
            _guard: self.leadership.watcher(now),
            first: true,
        };
        // Each event is produced when hyper asks for the next chunk, i.e. when the socket can
        // take it, so a slow reader only ever gets fresh grants and never queues stale ones.
        let events = futures::stream::unfold(state, |mut st| async move {
            if !st.first {
                let now = Instant::now();
                let wait = if st.leadership.is_granting(now) {
                    st.leadership.max_grant() / 2
                } else {
                    STREAM_KEEPALIVE
                };
                tokio::select! {
                    changed = st.rx.changed() => if changed.is_err() { return None },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            st.first = false;
            st.rx.borrow_and_update();
            let data = status_json(&st.leadership, Instant::now());
            let mut chunk = Vec::with_capacity(data.len() + 24);
            chunk.extend_from_slice(b"event: ");
            chunk.extend_from_slice(paths::EVENT.as_bytes());
            chunk.extend_from_slice(b"\ndata: ");
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\n\n");
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), st))
        });
        let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(events.boxed())));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        r
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Leader,
    Watch,
    Yield,
    Legacy,
}

/// The leadership answer at `now` as JSON, issuing a grant when we are leader.
pub fn status_json(leadership: &Leadership, now: Instant) -> Vec<u8> {
    let grant = leadership.grant(now);
    let valid_for_ms = grant.map_or(0, |g| {
        u64::try_from(g.valid_for.as_millis()).unwrap_or(u64::MAX)
    });
    // A grant shorter than a millisecond is no grant.
    let is_leader = valid_for_ms > 0;
    let view = leadership.view_ref();
    let status = LeaderStatus::<&str> {
        is_leader,
        identity: leadership.identity(),
        holder: if is_leader {
            Some(leadership.identity())
        } else {
            view.holder.as_deref()
        },
        lease: leadership.lease(),
        term: grant.map(|g| g.term).or(view.observed_term),
        valid_for_ms,
        observed_at: view.observed_at.as_deref(),
        renewed_at: view.renewed_at.as_deref(),
    };
    serde_json::to_vec(&status).unwrap_or_default()
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
async fn read_small_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request bodies are limited to {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "could not read the request body",
        )),
    }
}

/// What the admin port's probes report on.
pub struct SidecarProbes {
    pub leadership: Arc<Leadership>,
    pub heartbeat: Arc<Heartbeat>,
    /// `/healthz` fails when the election loop has not turned for this long.
    pub wedged_after: Duration,
}

impl Probes for SidecarProbes {
    fn healthy(&self, now: Instant) -> Result<(), String> {
        let age = self.heartbeat.age(now);
        if age < self.wedged_after {
            Ok(())
        } else {
            Err(format!(
                "election loop has not run for {}ms",
                age.as_millis()
            ))
        }
    }

    fn ready(&self) -> Result<(), String> {
        if self.leadership.view().observed {
            Ok(())
        } else {
            Err("the lease has not been observed yet".into())
        }
    }
}

/// The `/metrics` text, with the gauges that are read rather than kept brought up to date.
pub fn metrics_text(leadership: &Leadership, metrics: &Metrics) -> String {
    metrics.set_watchers(leadership.watchers());
    metrics.set_leader(leadership.is_granting(Instant::now()));
    metrics.encode()
}
