//! The opt-in pod role label (`--pod-role-label=<key>`): the sidecar labels its own Pod
//! `<key>=leader` while it grants leadership and `<key>=standby` otherwise, so that
//! `kubectl get pods -l <key>=leader`, `kubectl logs -l <key>=leader` and a Service selecting
//! the label find the leader.
//!
//! # A label is not a fence
//!
//! Nothing here is part of the safety argument (the grant book is, see [`crate::leadership`]).
//! The label trails leadership in both directions:
//!
//! - **`leader` is written only after the sidecar has acquired** (it grants), and **`standby`
//!   as soon as it stops granting**: on a revocation (yield, consumer gone, SIGTERM), when a
//!   step-down publishes a new tenure, or when the tenure's own deadline passes, whichever comes
//!   first. Both writes are best effort: a failed write is retried every retry period, and
//!   an idle sidecar reads its Pod again every lease duration, so a label somebody else
//!   changed or removed is put back.
//! - **A deposed leader that cannot reach the API server cannot remove its own label.** So a
//!   new leader, right after acquiring and before labelling itself, relabels its predecessor's
//!   Pod (the holder it last saw in the Lease, when that names a Pod of the namespace carrying
//!   `<key>=leader`) `standby`. Every write carries the resourceVersion it read as a
//!   precondition, so a late `leader` write of the predecessor, still in flight, fails with
//!   409 instead of undoing the correction.
//!
//! Two Pods can therefore both say `leader` from the new leader's acquisition until its
//! `standby` write of the predecessor lands: at most one read and one write, each bounded by
//! `--api-timeout`, when the API server answers (and retried every retry period when it does
//! not). Before that, the old leader stopped granting at its renew deadline, so traffic routed
//! by the label in that window reaches a controller that is not active. On top of that come
//! the delays outside the sidecar: the endpoints controller and every node's proxy must see the
//! change before a Service routes by it. Use the label to find the leader, not to fence it.
//!
//! The state machine ([`PodLabels`]) is pure; [`run`] drives it with the API at the edge.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leadership::Leadership;
use crate::lease_api::ApiFailure;
use crate::metrics::Metrics;

/// The label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// The next label write to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelWrite {
    /// Relabel the predecessor's Pod `standby`, if it still says `leader`.
    Demote { pod: String },
    /// Make our own Pod say `role`.
    Own { role: Role },
}

/// What the labeller knows: the role we want our Pod to show, what it shows as far as we know,
/// and the predecessor still to demote. Pure: no I/O, no clock.
#[derive(Clone, Debug)]
pub struct PodLabels {
    own: String,
    wanted: Role,
    /// The value last read or written on our Pod; `None` until the first read.
    shown: Option<Option<String>>,
    /// The last holder seen in the Lease that was not us.
    last_other_holder: Option<String>,
    /// Set when we become leader: the Pod to relabel `standby` first.
    demote: Option<String>,
}

impl PodLabels {
    pub fn new(own_pod: impl Into<String>) -> Self {
        Self {
            own: own_pod.into(),
            wanted: Role::Standby,
            shown: None,
            last_other_holder: None,
            demote: None,
        }
    }

    /// A holder seen in the Lease (the elector's published view).
    pub fn saw_holder(&mut self, holder: Option<&str>) {
        if let Some(h) = holder.filter(|h| !h.is_empty() && *h != self.own) {
            self.last_other_holder = Some(h.to_owned());
        }
    }

    /// The role from the grant book: `Leader` while we grant. Becoming leader schedules the
    /// predecessor's demotion; losing it cancels a demotion not yet done (the next leader
    /// demotes, and our predecessor is no business of a standby).
    pub fn set_role(&mut self, role: Role) {
        if role == self.wanted {
            return;
        }
        self.wanted = role;
        self.demote = match role {
            Role::Leader => self.last_other_holder.clone(),
            Role::Standby => None,
        };
    }

    pub fn wanted(&self) -> Role {
        self.wanted
    }

    /// The next write, or `None` when the labels are as wanted. The predecessor goes first, so
    /// that we never add a second `leader` label ourselves.
    pub fn next(&self) -> Option<LabelWrite> {
        if let Some(pod) = &self.demote {
            return Some(LabelWrite::Demote { pod: pod.clone() });
        }
        let want = self.wanted.as_str();
        (self.shown.as_ref().and_then(|v| v.as_deref()) != Some(want))
            .then_some(LabelWrite::Own { role: self.wanted })
    }

    /// A write finished (`Demote`: the Pod is gone, not labelled `leader`, or relabelled;
    /// `Own`: our Pod shows `role`). A result for a role we no longer want only updates what
    /// the Pod shows.
    pub fn done(&mut self, write: &LabelWrite) {
        match write {
            LabelWrite::Demote { pod } => {
                if self.demote.as_ref() == Some(pod) {
                    self.demote = None;
                }
            }
            LabelWrite::Own { role } => self.shown = Some(Some(role.as_str().to_owned())),
        }
    }

    /// A write failed or was refused: what our Pod shows is unknown again.
    pub fn failed(&mut self, write: &LabelWrite) {
        if matches!(write, LabelWrite::Own { .. }) {
            self.forget();
        }
    }

    /// What our Pod shows is unknown (time to read it again: somebody may have changed it).
    pub fn forget(&mut self) {
        self.shown = None;
    }
}

/// Where the labeller writes.
pub struct PodLabeller {
    pub pods: Api<Pod>,
    pub key: String,
    pub own_pod: String,
    pub timeout: Duration,
    pub retry_period: Duration,
    /// How often an idle labeller reads its Pod again, so that a label somebody else changed
    /// or removed is put back (the lease duration).
    pub resync: Duration,
    pub metrics: Metrics,
}

/// How a label write ended.
enum Written {
    Done,
    /// 409: the Pod changed between our read and write; read again at once.
    Conflict,
    /// The verb that failed, and why.
    Failed(&'static str, ApiFailure),
}

impl PodLabeller {
    /// Runs until `stop` is set, then makes one last attempt to show `standby` (one read and
    /// one write, each bounded by the API timeout) and returns.
    pub async fn run(self, leadership: Arc<Leadership>, mut stop: watch::Receiver<bool>) {
        let mut labels = PodLabels::new(&self.own_pod);
        let mut view = leadership.subscribe();
        let mut resync_at = Instant::now() + self.resync;
        loop {
            if Instant::now() >= resync_at {
                labels.forget();
            }
            let now = Instant::now();
            labels.saw_holder(view.borrow_and_update().holder.as_deref());
            let stopping = *stop.borrow();
            labels.set_role(if !stopping && leadership.is_granting(now) {
                Role::Leader
            } else {
                Role::Standby
            });
            let next = labels.next();
            if stopping && next.is_none() {
                return;
            }
            let mut retry_at = None;
            if let Some(write) = next {
                if matches!(write, LabelWrite::Own { .. }) {
                    resync_at = Instant::now() + self.resync;
                }
                match self.write(&write).await {
                    Written::Done => labels.done(&write),
                    Written::Conflict => labels.failed(&write),
                    Written::Failed(verb, f) => {
                        labels.failed(&write);
                        tracing::warn!(
                            pod = %self.target(&write),
                            verb,
                            code = f.label(),
                            error = %f,
                            "could not set the pod's role label; retrying"
                        );
                        if stopping {
                            return;
                        }
                        retry_at = Some(Instant::now() + self.retry_period);
                    }
                }
                if retry_at.is_none() {
                    continue;
                }
            }
            // Wake on a change of tenure or holder, on the tenure's end (we stop granting by
            // the clock alone), on a retry, for the resync, or on shutdown.
            let wake = [leadership.grant_ends(Instant::now()), retry_at]
                .into_iter()
                .flatten()
                .fold(resync_at, Instant::min);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                changed = view.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stop.changed() => {}
            }
        }
    }

    fn target<'a>(&'a self, write: &'a LabelWrite) -> &'a str {
        match write {
            LabelWrite::Demote { pod } => pod,
            LabelWrite::Own { .. } => &self.own_pod,
        }
    }

    /// Reads the Pod, and writes the label with the Pod's resourceVersion as precondition if it
    /// differs. A demotion writes only over `leader`.
    async fn write(&self, write: &LabelWrite) -> Written {
        let (pod, value) = match write {
            LabelWrite::Demote { pod } => (pod.as_str(), Role::Standby.as_str()),
            LabelWrite::Own { role } => (self.own_pod.as_str(), role.as_str()),
        };
        let current = match tokio::time::timeout(self.timeout, self.pods.get_opt(pod)).await {
            Err(_) => return self.failed("get", ApiFailure::timeout(self.timeout)),
            Ok(Err(e)) => return self.failed("get", e.into()),
            Ok(Ok(None)) => {
                self.metrics.api_request("pods", "get", "404");
                return match write {
                    LabelWrite::Demote { .. } => Written::Done,
                    LabelWrite::Own { .. } => Written::Failed(
                        "get",
                        ApiFailure {
                            code: Some(404),
                            timed_out: false,
                            message: format!("pod {pod} not found (is POD_NAME our pod's name?)"),
                        },
                    ),
                };
            }
            Ok(Ok(Some(p))) => p,
        };
        self.metrics.api_request("pods", "get", "200");
        let shown = current
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(&self.key))
            .map(String::as_str);
        let needed = match write {
            LabelWrite::Demote { .. } => shown == Some(Role::Leader.as_str()),
            LabelWrite::Own { .. } => shown != Some(value),
        };
        if !needed {
            return Written::Done;
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "labels": { &self.key: value },
            }
        });
        let sent = tokio::time::timeout(
            self.timeout,
            self.pods
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        match sent {
            Err(_) => self.failed("patch", ApiFailure::timeout(self.timeout)),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                self.metrics.api_request("pods", "patch", "409");
                Written::Conflict
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 404 && pod != self.own_pod => {
                self.metrics.api_request("pods", "patch", "404");
                Written::Done
            }
            Ok(Err(e)) => self.failed("patch", e.into()),
            Ok(Ok(_)) => {
                self.metrics.api_request("pods", "patch", "200");
                tracing::info!(pod, label = %self.key, value, "labelled pod");
                Written::Done
            }
        }
    }

    fn failed(&self, verb: &'static str, f: ApiFailure) -> Written {
        self.metrics.api_request("pods", verb, &f.label());
        Written::Failed(verb, f)
    }
}

/// Whether `key` is a valid label key: an optional DNS-subdomain prefix and `/`, then a name of
/// at most 63 characters (alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.');
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "--pod-role-label {key:?} is not a label key (an optional DNS subdomain and '/', \
             then at most 63 characters: alphanumerics, '-', '_' or '.', starting and ending \
             with an alphanumeric)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(role: Role) -> Option<LabelWrite> {
        Some(LabelWrite::Own { role })
    }

    #[test]
    fn a_new_pod_reads_then_shows_standby() {
        let labels = PodLabels::new("pod-a");
        assert_eq!(labels.next(), own(Role::Standby));
    }

    #[test]
    fn leader_is_shown_only_once_leading_and_after_the_predecessor_is_demoted() {
        let mut labels = PodLabels::new("pod-b");
        labels.saw_holder(Some("pod-a"));
        labels.done(&LabelWrite::Own {
            role: Role::Standby,
        });
        assert_eq!(
            labels.next(),
            None,
            "a standby showing standby has nothing to do"
        );

        labels.set_role(Role::Leader);
        let demote = LabelWrite::Demote {
            pod: "pod-a".into(),
        };
        assert_eq!(labels.next(), Some(demote.clone()));
        labels.failed(&demote);
        assert_eq!(
            labels.next(),
            Some(demote.clone()),
            "a failed demotion is retried before we label ourselves"
        );
        labels.done(&demote);
        assert_eq!(labels.next(), own(Role::Leader));
        labels.done(&LabelWrite::Own { role: Role::Leader });
        assert_eq!(labels.next(), None);
    }

    #[test]
    fn stepping_down_shows_standby_and_forgets_the_demotion() {
        let mut labels = PodLabels::new("pod-b");
        labels.saw_holder(Some("pod-a"));
        labels.set_role(Role::Leader);
        labels.set_role(Role::Standby);
        assert_eq!(labels.next(), own(Role::Standby));
    }

    #[test]
    fn our_own_holder_record_is_never_a_predecessor() {
        let mut labels = PodLabels::new("pod-b");
        labels.saw_holder(Some("pod-b"));
        labels.saw_holder(Some(""));
        labels.saw_holder(None);
        labels.set_role(Role::Leader);
        assert_eq!(labels.next(), own(Role::Leader));
    }

    #[test]
    fn a_resync_reads_our_pod_again() {
        let mut labels = PodLabels::new("pod-a");
        labels.done(&LabelWrite::Own {
            role: Role::Standby,
        });
        assert_eq!(labels.next(), None);
        labels.forget();
        assert_eq!(labels.next(), own(Role::Standby));
    }

    #[test]
    fn a_refused_write_of_our_own_label_reads_again() {
        let mut labels = PodLabels::new("pod-a");
        labels.done(&LabelWrite::Own {
            role: Role::Standby,
        });
        labels.set_role(Role::Leader);
        labels.failed(&LabelWrite::Own { role: Role::Leader });
        assert_eq!(labels.next(), own(Role::Leader));
    }

    #[test]
    fn label_keys_are_checked() {
        for good in ["role", "newresource.com/role", "a.b-c/x_y.z", "x"] {
            assert_eq!(validate_label_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/role",
            "Role.com/x",
            "a/-x",
            "a/",
            &"x".repeat(64),
            "a b",
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad:?}");
        }
    }
}
