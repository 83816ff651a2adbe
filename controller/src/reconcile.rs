//! One reconcile of a `NewResource`: mark it ready for its current generation, through the
//! status subresource, only under a grant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::crd::{NewResource, NewResourceStatus};
use crate::metrics::{Metrics, Outcome, api_error_code};
use leader_client::LeadershipGate;

/// The `resource` label of status writes in `controller_api_errors_total`. A 404 (the object
/// is gone: success) and a 409 (a conflict, retried; `controller_reconcile_errors_total`
/// counts it as `conflict`) are expected answers and not counted there.
const STATUS_RESOURCE: &str = "newresources/status";
/// The `resource` label of the re-read after a 409 (see [`after_conflict`]).
const MAIN_RESOURCE: &str = "newresources";

/// Why a reconcile failed; each is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gate closed before the write could be sent.
    #[error("not leader: the status write was not sent")]
    NotLeader,
    /// The grant ran out while the write was in flight; it was abandoned.
    #[error("the grant ran out during the status write")]
    GrantExpired,
    /// Someone changed the object since we read it (the write's resourceVersion precondition).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("API error {code}: {message}")]
    Api { code: u16, message: String },
    #[error("request failed: {0}")]
    Request(String),
    #[error("object has no namespace or name")]
    Unaddressable,
}

impl Error {
    /// The `error_type` label of `controller_reconcile_errors_total`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::NotLeader => "not_leader",
            Error::GrantExpired => "grant_expired",
            Error::Conflict(_) => "conflict",
            Error::Api { code: 403, .. } => "forbidden",
            Error::Api { code: 429, .. } => "throttled",
            Error::Api { code, .. } if *code >= 500 => "server",
            Error::Api { .. } => "api",
            Error::Request(_) => "transport",
            Error::Unaddressable => "invalid_object",
        }
    }
}

/// Shared by every reconcile of one active window.
pub struct Context {
    pub client: kube::Client,
    pub gate: LeadershipGate,
    pub metrics: Metrics,
    backoff: Backoff,
}

impl Context {
    pub fn new(client: kube::Client, gate: LeadershipGate, metrics: Metrics) -> Self {
        Self {
            client,
            gate,
            metrics,
            backoff: Backoff::default(),
        }
    }
}

/// The status a `NewResource` should have.
pub fn desired_status(obj: &NewResource) -> NewResourceStatus {
    NewResourceStatus {
        ready: true,
        observed_generation: obj.meta().generation,
    }
}

/// Reconciles one object and records metrics around it.
pub async fn reconcile(obj: Arc<NewResource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = apply_status(&obj, &ctx).await;
    match &result {
        Ok(written) => {
            ctx.backoff.reset(&ObjectRef::from_obj(&*obj));
            let outcome = if *written == Written::Gone {
                Outcome::NotFound
            } else {
                Outcome::Success
            };
            ctx.metrics.reconciled(started, outcome, None);
        }
        Err(e) => ctx
            .metrics
            .reconciled(started, Outcome::Error, Some(e.error_type())),
    }
    // A successful status write changes the object; the watch brings it back, and that
    // reconcile finds nothing to do. No periodic resync: every active window starts with one.
    result.map(|_| Action::await_change())
}

/// Retries a failed object with per-object exponential backoff.
pub fn error_policy(obj: Arc<NewResource>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next(&ObjectRef::from_obj(&*obj));
    tracing::warn!(
        object = %ObjectRef::from_obj(&*obj),
        error_type = error.error_type(),
        error = %error,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    Action::requeue(delay)
}

#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// The status was already right; nothing was sent.
    Unchanged,
    Updated,
    /// The object was deleted; nothing left to do.
    Gone,
}

async fn apply_status(obj: &NewResource, ctx: &Context) -> Result<Written, Error> {
    let desired = desired_status(obj);
    if obj.status.as_ref() == Some(&desired) {
        return Ok(Written::Unchanged);
    }
    let (Some(namespace), name) = (obj.namespace(), obj.name_any()) else {
        return Err(Error::Unaddressable);
    };
    if name.is_empty() {
        return Err(Error::Unaddressable);
    }
    let mut updated = obj.clone();
    updated.status = Some(desired);
    // The object as read carries its resourceVersion: the update is a compare-and-swap, so a
    // write based on an old read (ours or a deposed leader's) fails with 409 instead of
    // overwriting a newer state.
    updated.metadata.managed_fields = None;
    let api: Api<NewResource> = Api::namespaced(ctx.client.clone(), &namespace);

    // The last check before the write leaves this process; the write is abandoned if the grant
    // runs out before it is answered.
    let grant = ctx.gate.current().ok_or(Error::NotLeader)?;
    let params = PostParams::default();
    let write = api.replace_status(&name, &params, &updated);
    match within_grant(grant.until, write).await {
        None => Err(Error::GrantExpired),
        Some(Ok(_)) => {
            tracing::info!(object = %format!("{namespace}/{name}"), term = grant.term, "status ready");
            Ok(Written::Updated)
        }
        Some(Err(kube::Error::Api(status))) => match status.code {
            404 => Ok(Written::Gone),
            409 => after_conflict(&api, obj, &name, status.message, ctx).await,
            code => {
                ctx.metrics
                    .api_error(STATUS_RESOURCE, "update", &code.to_string());
                Err(Error::Api {
                    code,
                    message: status.message,
                })
            }
        },
        Some(Err(e)) => {
            ctx.metrics
                .api_error(STATUS_RESOURCE, "update", &api_error_code(&e));
            Err(Error::Request(e.to_string()))
        }
    }
}

/// A 409 on the status write means one of two things. The object changed since we read it (a
/// real conflict, retried). Or it is gone: the body carries the object's UID, which the API
/// server checks as a precondition *before* it looks for the object, so a write to a deleted
/// object, or to a new object that took its name, is a 409, not a 404. One re-read tells them
/// apart: no object, or one with another UID, means ours is gone and there is nothing left to
/// do (a new object under the name gets its own reconcile from the watch).
///
/// The re-read is a list by name rather than a get, so the controller needs no verb beyond the
/// `list` it already has. If it fails, the conflict stands and is retried with backoff.
async fn after_conflict(
    api: &Api<NewResource>,
    obj: &NewResource,
    name: &str,
    message: String,
    ctx: &Context,
) -> Result<Written, Error> {
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    match api.list(&params).await {
        Ok(list) => {
            let ours = list
                .items
                .iter()
                .any(|current| current.metadata.uid == obj.metadata.uid);
            if ours {
                Err(Error::Conflict(message))
            } else {
                Ok(Written::Gone)
            }
        }
        Err(e) => {
            ctx.metrics
                .api_error(MAIN_RESOURCE, "list", &api_error_code(&e));
            Err(Error::Conflict(message))
        }
    }
}

/// Runs `write` only while the grant lasts: the clock is read before *every* poll, so a
/// process that was stopped (SIGSTOP, a VM pause) between the gate check and the send does not
/// go on to send after its grant; and the write is abandoned when the grant ends (`None`).
///
/// What this cannot stop: bytes the HTTP client had already handed to its connection before a
/// freeze may leave after the grant. The resourceVersion precondition covers that case: if
/// another controller has written the object since, the late write fails with 409.
async fn within_grant<F: std::future::Future>(until: Instant, write: F) -> Option<F::Output> {
    let mut write = std::pin::pin!(write);
    let guarded = std::future::poll_fn(move |cx| {
        if Instant::now() >= until {
            return std::task::Poll::Ready(None);
        }
        write.as_mut().poll(cx).map(Some)
    });
    tokio::time::timeout_at(until, guarded).await.ok().flatten()
}

/// Per-object exponential backoff: 200 ms, doubling, at most a minute; reset on success.
#[derive(Default)]
struct Backoff {
    failures: Mutex<HashMap<ObjectRef<NewResource>, u32>>,
}

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Backoff {
    fn next(&self, key: &ObjectRef<NewResource>) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        let delay = BACKOFF_BASE
            .saturating_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .min(BACKOFF_MAX);
        *n = n.saturating_add(1);
        delay
    }

    fn reset(&self, key: &ObjectRef<NewResource>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let b = Backoff::default();
        let key = ObjectRef::<NewResource>::new("a").within("ns");
        let other = ObjectRef::<NewResource>::new("b").within("ns");
        let delays: Vec<u128> = (0..12).map(|_| b.next(&key).as_millis()).collect();
        assert_eq!(
            delays,
            [
                200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000, 60000
            ]
        );
        assert_eq!(b.next(&other), BACKOFF_BASE, "backoff is per object");
        b.reset(&key);
        assert_eq!(b.next(&key), BACKOFF_BASE);
        for _ in 0..100 {
            b.next(&key);
        }
        assert_eq!(b.next(&key), BACKOFF_MAX, "no overflow after many failures");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_never_polled_after_the_grant() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let polls = AtomicUsize::new(0);
        let counting = || {
            std::future::poll_fn(|_| {
                polls.fetch_add(1, Ordering::SeqCst);
                std::task::Poll::Ready("sent")
            })
        };
        let until = Instant::now() + Duration::from_secs(2);
        assert_eq!(within_grant(until, counting()).await, Some("sent"));
        assert_eq!(polls.load(Ordering::SeqCst), 1);

        // The process "froze" past the grant between the gate check and the send.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(within_grant(until, counting()).await, None);
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "not polled after the grant"
        );

        // A write still pending when the grant ends is abandoned at the grant's end.
        let until = Instant::now() + Duration::from_secs(2);
        let start = Instant::now();
        assert_eq!(
            within_grant(until, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[test]
    fn a_forbidden_status_write_is_its_own_error_type() {
        let message = r#"newresources.apps.newresource.com "x" is forbidden: User "system:serviceaccount:ns:sa" cannot update resource "newresources/status""#;
        let e = Error::Api {
            code: 403,
            message: message.to_owned(),
        };
        assert_eq!(e.error_type(), "forbidden");
        assert_eq!(e.to_string(), format!("API error 403: {message}"));
        let conflict = Error::Conflict("changed".into());
        assert_eq!(conflict.error_type(), "conflict");
        let server = Error::Api {
            code: 503,
            message: "unavailable".into(),
        };
        assert_eq!(server.error_type(), "server");
    }

    #[test]
    fn desired_status_follows_the_generation() {
        let mut obj = NewResource::new("x", crate::crd::NewResourceSpec::default());
        obj.metadata.generation = Some(4);
        assert_eq!(
            desired_status(&obj),
            NewResourceStatus {
                ready: true,
                observed_generation: Some(4)
            }
        );
    }
}
