//! Lease I/O: get, compare-and-swap writes and the standby watch, each request bounded by a
//! timeout. Every outcome is a value; nothing here panics on what the API server returns.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// The `resource` label of the Lease's requests.
const LEASES: &str = "leases";

/// Why a request failed. `code` is the HTTP status, `None` for timeouts and transport errors.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    pub code: Option<u16>,
    /// No answer in time: our own per-request timeout, or the client's.
    pub timed_out: bool,
    /// The API server's message for status errors (e.g. `leases.coordination.k8s.io "x" is
    /// forbidden: User "system:serviceaccount:ns:sa" cannot get resource "leases" ...`),
    /// else the client's error.
    pub message: String,
}

impl ApiFailure {
    pub fn timeout(after: Duration) -> Self {
        Self {
            code: None,
            timed_out: true,
            message: format!("no answer within {after:?}"),
        }
    }

    /// Metric label: the status code, `timeout` or `transport`.
    pub fn label(&self) -> String {
        match self.code {
            Some(c) => c.to_string(),
            None if self.timed_out => "timeout".into(),
            None => "transport".into(),
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "HTTP {c}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<kube::Error> for ApiFailure {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Self {
                code: Some(s.code),
                timed_out: false,
                message: s.message.clone(),
            },
            other => Self {
                code: None,
                timed_out: plumbing::kubernetes::is_timeout(&other),
                message: other.to_string(),
            },
        }
    }
}

pub enum ReadOutcome {
    Found(Box<Lease>),
    NotFound,
    Failed(ApiFailure),
}

pub enum WriteOutcome {
    Stored(Box<Lease>),
    /// 409: the precondition failed, or somebody created the Lease first.
    Conflict,
    /// 404 on a replace: the Lease was deleted.
    Gone,
    Failed(ApiFailure),
}

/// One Lease, read and written with per-request timeouts.
#[derive(Clone)]
pub struct LeaseApi {
    api: Api<Lease>,
    name: String,
    timeout: Duration,
    metrics: Metrics,
}

impl LeaseApi {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            timeout,
            metrics,
        }
    }

    /// The per-request timeout (`--api-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The timeout for a request that must finish by `deadline` (if any).
    fn timeout_until(&self, deadline: Option<Instant>) -> Duration {
        match deadline {
            Some(d) => self
                .timeout
                .min(d.saturating_duration_since(Instant::now())),
            None => self.timeout,
        }
    }

    pub async fn get(&self) -> ReadOutcome {
        let t = self.timeout;
        match tokio::time::timeout(t, self.api.get_opt(&self.name)).await {
            Err(_) => self.failed_read(ApiFailure::timeout(t)),
            Ok(Err(e)) => self.failed_read(e.into()),
            Ok(Ok(Some(lease))) => {
                self.metrics.api_request(LEASES, "get", "200");
                ReadOutcome::Found(Box::new(lease))
            }
            Ok(Ok(None)) => {
                self.metrics.api_request(LEASES, "get", "404");
                ReadOutcome::NotFound
            }
        }
    }

    fn failed_read(&self, f: ApiFailure) -> ReadOutcome {
        self.metrics.api_request(LEASES, "get", &f.label());
        ReadOutcome::Failed(f)
    }

    /// Counts and logs a failed list of the standby watch, then waits `backoff`.
    async fn list_failed(&self, f: ApiFailure, backoff: Duration) {
        let code = f.label();
        self.metrics.api_request(LEASES, "list", &code);
        tracing::warn!(lease = %self.name, verb = "list", code, error = %f, "listing the lease failed; retrying");
        tokio::time::sleep(backoff).await;
    }

    /// Counts and logs a watch that could not be started, then waits `backoff`.
    async fn watch_failed(&self, f: ApiFailure, backoff: Duration) {
        let code = f.label();
        self.metrics.api_request(LEASES, "watch", &code);
        tracing::warn!(lease = %self.name, verb = "watch", code, error = %f, "watching the lease failed; retrying");
        tokio::time::sleep(backoff).await;
    }

    /// POST (`create`) or PUT. The object's resourceVersion is the precondition of a PUT.
    pub async fn write(
        &self,
        lease: &Lease,
        create: bool,
        deadline: Option<Instant>,
    ) -> WriteOutcome {
        let verb = if create { "create" } else { "update" };
        let t = self.timeout_until(deadline);
        let pp = PostParams::default();
        let result = if create {
            tokio::time::timeout(t, self.api.create(&pp, lease)).await
        } else {
            tokio::time::timeout(t, self.api.replace(&self.name, &pp, lease)).await
        };
        let outcome = match result {
            Err(_) => WriteOutcome::Failed(ApiFailure::timeout(t)),
            Ok(Ok(stored)) => WriteOutcome::Stored(Box::new(stored)),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => WriteOutcome::Conflict,
            Ok(Err(kube::Error::Api(s))) if s.code == 404 && !create => WriteOutcome::Gone,
            Ok(Err(e)) => WriteOutcome::Failed(e.into()),
        };
        let code = match &outcome {
            WriteOutcome::Stored(_) => {
                if create {
                    "201".to_owned()
                } else {
                    "200".to_owned()
                }
            }
            WriteOutcome::Conflict => "409".to_owned(),
            WriteOutcome::Gone => "404".to_owned(),
            WriteOutcome::Failed(f) => f.label(),
        };
        self.metrics.api_request(LEASES, verb, &code);
        outcome
    }
}

/// What the standby watch reports to the elector driver.
#[derive(Debug)]
pub enum Watched {
    /// The list that (re)starts the watch returned the Lease: the state, not news delivered by
    /// the watch, so it does not show that the watch works.
    Listed(Box<Lease>),
    /// A watch event delivered the Lease.
    Applied(Box<Lease>),
    /// The Lease does not exist as of this resourceVersion.
    Absent { resource_version: Option<String> },
}

/// Watches the one Lease (`fieldSelector=metadata.name=<name>`) forever: list to learn the
/// state and a resourceVersion, then watch from there, resuming from the last resourceVersion
/// seen (bookmarks included) and listing again only when the server says it is too old. Errors
/// restart it after `backoff`. A watch that stays silent longer than its own timeout is
/// abandoned and restarted; the elector's expiry timer covers anything missed meanwhile.
pub async fn watch_lease(leases: LeaseApi, backoff: Duration, tx: mpsc::Sender<Watched>) {
    const WATCH_SECONDS: u32 = 290;
    let fields = format!("metadata.name={}", leases.name);
    let mut resume: Option<String> = None;
    loop {
        let rv = match resume.take() {
            Some(rv) => rv,
            None => {
                let lp = ListParams::default().fields(&fields);
                let listed = tokio::time::timeout(leases.timeout, leases.api.list(&lp)).await;
                let list = match listed {
                    Ok(Ok(list)) => {
                        leases.metrics.api_request(LEASES, "list", "200");
                        list
                    }
                    Ok(Err(e)) => {
                        leases.list_failed(ApiFailure::from(e), backoff).await;
                        continue;
                    }
                    Err(_) => {
                        leases
                            .list_failed(ApiFailure::timeout(leases.timeout), backoff)
                            .await;
                        continue;
                    }
                };
                let list_rv = list.metadata.resource_version.clone();
                let msg = match list.items.into_iter().next() {
                    Some(lease) => Watched::Listed(Box::new(lease)),
                    None => Watched::Absent {
                        resource_version: list_rv,
                    },
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
                list.metadata.resource_version.unwrap_or_default()
            }
        };

        let wp = WatchParams::default()
            .fields(&fields)
            .timeout(WATCH_SECONDS);
        let stream = match tokio::time::timeout(leases.timeout, leases.api.watch(&wp, &rv)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                leases.watch_failed(ApiFailure::from(e), backoff).await;
                continue;
            }
            Err(_) => {
                leases
                    .watch_failed(ApiFailure::timeout(leases.timeout), backoff)
                    .await;
                continue;
            }
        };
        leases.metrics.api_request(LEASES, "watch", "200");
        let mut stream = stream.boxed();
        let mut last = rv;
        let silence = Duration::from_secs(u64::from(WATCH_SECONDS) + 30);
        loop {
            let next = match tokio::time::timeout(silence, stream.try_next()).await {
                Err(_) => {
                    // The server should have ended the watch after WATCH_SECONDS.
                    leases.metrics.api_error(LEASES, "watch", "timeout");
                    tracing::warn!(
                        lease = %leases.name,
                        verb = "watch",
                        code = "timeout",
                        "lease watch silent for {silence:?}; restarting it"
                    );
                    resume = Some(last);
                    break;
                }
                Ok(n) => n,
            };
            match next {
                Ok(Some(WatchEvent::Added(lease) | WatchEvent::Modified(lease))) => {
                    last = lease.metadata.resource_version.clone().unwrap_or(last);
                    if tx.send(Watched::Applied(Box::new(lease))).await.is_err() {
                        return;
                    }
                }
                Ok(Some(WatchEvent::Deleted(lease))) => {
                    last = lease.metadata.resource_version.clone().unwrap_or(last);
                    let msg = Watched::Absent {
                        resource_version: Some(last.clone()),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(Some(WatchEvent::Bookmark(b))) => last = b.metadata.resource_version,
                Ok(Some(WatchEvent::Error(e))) if e.code == 410 => {
                    tracing::debug!("lease watch expired (410); listing again");
                    break;
                }
                Ok(Some(WatchEvent::Error(e))) => {
                    let f = ApiFailure {
                        code: Some(e.code),
                        timed_out: false,
                        message: e.message,
                    };
                    let code = f.label();
                    leases.metrics.api_error(LEASES, "watch", &code);
                    tracing::warn!(
                        lease = %leases.name,
                        verb = "watch",
                        code,
                        error = %f,
                        "lease watch error; restarting"
                    );
                    tokio::time::sleep(backoff).await;
                    resume = Some(last);
                    break;
                }
                Ok(None) => {
                    // The server ended the watch (its timeout): resume where we were.
                    resume = Some(last);
                    break;
                }
                Err(e) => {
                    let f = ApiFailure::from(e);
                    let code = f.label();
                    leases.metrics.api_error(LEASES, "watch", &code);
                    tracing::warn!(
                        lease = %leases.name,
                        verb = "watch",
                        code,
                        error = %f,
                        "lease watch stream broke; restarting"
                    );
                    tokio::time::sleep(backoff).await;
                    resume = Some(last);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_servers_message_and_code() {
        let message = r#"leases.coordination.k8s.io "x" is forbidden: User "system:serviceaccount:ns:sa" cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "ns""#;
        let forbidden = kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let f = ApiFailure::from(forbidden);
        assert_eq!(f.label(), "403");
        assert_eq!(f.to_string(), format!("HTTP 403: {message}"));

        assert_eq!(
            ApiFailure::timeout(Duration::from_secs(2)).label(),
            "timeout"
        );
        let timed_out = kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read timed out",
        ));
        assert_eq!(ApiFailure::from(timed_out).label(), "timeout");
        let reset = kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        ));
        let f = ApiFailure::from(reset);
        assert_eq!(f.label(), "transport");
        assert!(f.to_string().contains("connection reset"), "{f}");
    }
}
