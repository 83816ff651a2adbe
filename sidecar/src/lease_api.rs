//! Lease I/O: get, compare-and-swap writes and the standby watch, each request bounded by a
//! timeout. Every outcome is a value; nothing here panics on what the API server returns.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Why a request failed. `code` is the HTTP status, `None` for timeouts and transport errors.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    pub code: Option<u16>,
    pub message: String,
}

impl ApiFailure {
    fn timeout(after: Duration) -> Self {
        Self {
            code: None,
            message: format!("no answer within {after:?}"),
        }
    }

    /// Metric label: the status code, `timeout` or `transport`.
    pub fn label(&self) -> String {
        match self.code {
            Some(c) => c.to_string(),
            None if self.message.starts_with("no answer") => "timeout".into(),
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
                message: s.message.clone(),
            },
            other => Self {
                code: None,
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
                self.metrics.api_request("get", "200");
                ReadOutcome::Found(Box::new(lease))
            }
            Ok(Ok(None)) => {
                self.metrics.api_request("get", "404");
                ReadOutcome::NotFound
            }
        }
    }

    fn failed_read(&self, f: ApiFailure) -> ReadOutcome {
        self.metrics.api_request("get", &f.label());
        ReadOutcome::Failed(f)
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
        self.metrics.api_request(verb, &code);
        outcome
    }
}

/// What the standby watch reports to the elector driver.
#[derive(Debug)]
pub enum Watched {
    Applied(Box<Lease>),
    /// The Lease does not exist as of this resourceVersion.
    Absent {
        resource_version: Option<String>,
    },
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
                        leases.metrics.api_request("list", "200");
                        list
                    }
                    Ok(Err(e)) => {
                        let f = ApiFailure::from(e);
                        leases.metrics.api_request("list", &f.label());
                        tracing::warn!(error = %f, "listing the lease failed; retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    Err(_) => {
                        leases.metrics.api_request("list", "timeout");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                };
                let list_rv = list.metadata.resource_version.clone();
                let msg = match list.items.into_iter().next() {
                    Some(lease) => Watched::Applied(Box::new(lease)),
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
                let f = ApiFailure::from(e);
                leases.metrics.api_request("watch", &f.label());
                tracing::warn!(error = %f, "watching the lease failed; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(_) => {
                leases.metrics.api_request("watch", "timeout");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        leases.metrics.api_request("watch", "200");
        let mut stream = stream.boxed();
        let mut last = rv;
        let silence = Duration::from_secs(u64::from(WATCH_SECONDS) + 30);
        loop {
            let next = match tokio::time::timeout(silence, stream.try_next()).await {
                Err(_) => {
                    tracing::debug!("lease watch silent for {silence:?}; restarting it");
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
                    tracing::warn!(code = e.code, message = %e.message, "lease watch error; restarting");
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
                    tracing::debug!(error = %e, "lease watch stream broke; restarting");
                    tokio::time::sleep(backoff).await;
                    resume = Some(last);
                    break;
                }
            }
        }
    }
}
