//! Fault injection: the failures later suites need to prove the elector safe — slow API,
//! error bursts, hanging requests, dropped watches, and a partition that cuts off one client
//! while everyone else is served.
//!
//! Rules are matched against each request after authentication (so a rule can name the
//! user a token maps to) and before anything is read or written. Open watch streams re-check
//! the rules whenever they change: a partitioned client's watch goes silent (as a cut network
//! would leave it) and is closed once the partition heals. A [`FaultAction::HoldWatch`] rule
//! affects only watch streams: they stay open but deliver nothing (events are held, in order,
//! not dropped, and no bookmark or timeout ends the stream), as a black-holed connection does;
//! when the rule is removed the held events are delivered and the stream goes on.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Which requests a rule applies to; every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultMatch {
    /// Authenticated user name, e.g. `system:serviceaccount:ns:name` (every pod of a
    /// Deployment shares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The exact bearer token: one client, even among pods sharing a service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A substring of the `User-Agent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// The resource plural, e.g. `leases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// What happens to a matching request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Serve it, but only after this many milliseconds.
    LatencyMs(u64),
    /// Answer with this HTTP status (500, 503, 429, …) and a Status body; `retry_after`
    /// seconds become a `Retry-After` header.
    Error {
        code: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Never answer; when the rule is removed the connection is closed without a response.
    Hang,
    /// Hold the request until the rule is removed, then serve it: an API server that stalls
    /// (a slow etcd, a full queue) and recovers, answering everything queued at once.
    Stall,
    /// Only for watch streams (open ones and new ones): keep the connection open but deliver
    /// nothing (no event, no bookmark, no end at the watch's timeout) while the rule is in
    /// force; events are held in order and delivered once it is removed. Other requests are
    /// served as if the rule did not exist.
    HoldWatch,
}

/// A rule as submitted: `times` limits how many requests it affects (unset = until removed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default, rename = "match")]
    pub matcher: FaultMatch,
    pub action: FaultAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

/// A rule in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
}

/// The facts about a request that rules match on.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts<'a> {
    pub user: &'a str,
    /// The bearer token presented (empty if none).
    pub token: &'a str,
    pub user_agent: &'a str,
    pub verb: &'a str,
    pub resource: &'a str,
}

impl FaultMatch {
    fn matches(&self, r: &RequestFacts<'_>) -> bool {
        self.user.as_deref().is_none_or(|u| u == r.user)
            && self.token.as_deref().is_none_or(|t| t == r.token)
            && self
                .user_agent
                .as_deref()
                .is_none_or(|ua| r.user_agent.contains(ua))
            && self.verb.as_deref().is_none_or(|v| v == r.verb)
            && self.resource.as_deref().is_none_or(|res| res == r.resource)
    }
}

/// What the server must do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Serve,
    Delay(Duration),
    Fail {
        code: u16,
        retry_after: Option<u64>,
    },
    /// Hang until the rule with this id is gone.
    Hang(u64),
    /// Wait until the rule with this id is gone, then serve.
    Stall(u64),
}

#[derive(Default)]
struct Rules {
    next_id: u64,
    rules: Vec<FaultRule>,
}

/// The fault registry shared by the server and its controllers (tests, the control endpoint).
pub struct Faults {
    rules: Mutex<Rules>,
    /// Bumped on every rule change, so hanging requests and watches re-check.
    changed: watch::Sender<u64>,
    /// Bumped to close every open watch.
    drop_watches: watch::Sender<u64>,
    /// How many requests are hanging right now (tests wait for a request to be held).
    hung: watch::Sender<usize>,
    /// The users whose requests are held right now, one entry per request.
    held_users: Mutex<Vec<String>>,
    /// Watch events held back by [`FaultAction::HoldWatch`] rules so far (a running total).
    held_events: watch::Sender<usize>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rules: Mutex::new(Rules::default()),
            changed: watch::channel(0).0,
            drop_watches: watch::channel(0).0,
            hung: watch::channel(0).0,
            held_users: Mutex::new(Vec::new()),
            held_events: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule and returns its id.
    pub fn add(&self, spec: FaultSpec) -> u64 {
        let id = {
            let mut rules = self.rules();
            rules.next_id += 1;
            let id = rules.next_id;
            rules.rules.push(FaultRule { id, spec });
            id
        };
        self.changed.send_modify(|g| *g += 1);
        id
    }

    /// Removes a rule; returns whether it existed.
    pub fn remove(&self, id: u64) -> bool {
        let removed = {
            let mut rules = self.rules();
            let before = rules.rules.len();
            rules.rules.retain(|r| r.id != id);
            rules.rules.len() != before
        };
        self.changed.send_modify(|g| *g += 1);
        removed
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules().rules.clear();
        self.changed.send_modify(|g| *g += 1);
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules().rules.clone()
    }

    /// Closes every open watch stream (clients see the stream end and must re-watch).
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// Cuts one client off: every request (and open watch) made with `token` hangs until the
    /// returned rule is removed, while everyone else is served.
    pub fn partition_token(&self, token: &str) -> u64 {
        self.add(FaultSpec {
            matcher: FaultMatch {
                token: Some(token.to_string()),
                ..FaultMatch::default()
            },
            action: FaultAction::Hang,
            times: None,
        })
    }

    /// Holds back the events of every watch stream made with `token` (open ones and new ones):
    /// they stay open and silent until the returned rule is removed, then deliver everything
    /// held, in order. Every other request of that client is served.
    pub fn hold_watches(&self, token: &str) -> u64 {
        self.add(FaultSpec {
            matcher: FaultMatch {
                token: Some(token.to_string()),
                verb: Some("watch".into()),
                ..FaultMatch::default()
            },
            action: FaultAction::HoldWatch,
            times: None,
        })
    }

    /// Decides a request, consuming one use of a counted rule. The first matching rule wins;
    /// [`FaultAction::HoldWatch`] rules are not for requests (see [`Faults::holding_watch`]).
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        let mut rules = self.rules();
        let Some(index) = rules
            .rules
            .iter()
            .position(|r| r.spec.action != FaultAction::HoldWatch && r.spec.matcher.matches(facts))
        else {
            return Decision::Serve;
        };
        let rule = rules.rules[index].clone();
        if let Some(times) = rule.spec.times {
            if times <= 1 {
                rules.rules.remove(index);
            } else {
                rules.rules[index].spec.times = Some(times - 1);
            }
        }
        match rule.spec.action {
            FaultAction::LatencyMs(ms) => Decision::Delay(Duration::from_millis(ms)),
            FaultAction::Error { code, retry_after } => Decision::Fail { code, retry_after },
            FaultAction::Hang => Decision::Hang(rule.id),
            FaultAction::Stall => Decision::Stall(rule.id),
            FaultAction::HoldWatch => Decision::Serve,
        }
    }

    /// Whether a [`FaultAction::HoldWatch`] rule currently matches this watch (does not
    /// consume counted rules). Returns the rule id.
    pub fn holding_watch(&self, facts: &RequestFacts<'_>) -> Option<u64> {
        self.rules()
            .rules
            .iter()
            .find(|r| r.spec.action == FaultAction::HoldWatch && r.spec.matcher.matches(facts))
            .map(|r| r.id)
    }

    /// Counts one watch event held back by a [`FaultAction::HoldWatch`] rule.
    pub fn event_held(&self) {
        self.held_events.send_modify(|n| *n += 1);
    }

    /// Resolves once at least `n` watch events have been held back in total.
    pub async fn wait_held_events(&self, n: usize) {
        let mut held = self.held_events.subscribe();
        let _ = held.wait_for(|count| *count >= n).await;
    }

    /// Whether a hang rule currently matches this client (used by open watches; does not
    /// consume counted rules). Returns the rule id.
    pub fn hanging(&self, facts: &RequestFacts<'_>) -> Option<u64> {
        self.rules()
            .rules
            .iter()
            .find(|r| r.spec.action == FaultAction::Hang && r.spec.matcher.matches(facts))
            .map(|r| r.id)
    }

    fn exists(&self, id: u64) -> bool {
        self.rules().rules.iter().any(|r| r.id == id)
    }

    /// Waits until rule `id` is removed.
    pub async fn until_removed(&self, id: u64) {
        let mut changed = self.changed.subscribe();
        while self.exists(id) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Holds a request (or watch) until rule `id` is removed, counting it as hung meanwhile.
    pub async fn hold(&self, id: u64) {
        struct Held<'a>(&'a watch::Sender<usize>);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        self.hung.send_modify(|n| *n += 1);
        let _held = Held(&self.hung);
        self.until_removed(id).await;
    }

    /// Holds a request of `user` until rule `id` is removed, like [`Faults::hold`], and lists
    /// the user in [`Faults::held_users`] meanwhile.
    pub async fn hold_request(&self, id: u64, user: &str) {
        struct Listed<'a>(&'a Mutex<Vec<String>>, &'a str);
        impl Drop for Listed<'_> {
            fn drop(&mut self) {
                let mut users = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = users.iter().position(|u| u == self.1) {
                    users.swap_remove(i);
                }
            }
        }
        self.held_users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(user.to_owned());
        let _listed = Listed(&self.held_users, user);
        self.hold(id).await;
    }

    /// The users whose requests (not watches) are held right now, one entry per request.
    pub fn held_users(&self) -> Vec<String> {
        self.held_users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once at least `n` requests are being held by hang rules.
    pub async fn wait_hung(&self, n: usize) {
        let mut hung = self.hung.subscribe();
        let _ = hung.wait_for(|count| *count >= n).await;
    }

    /// A receiver that changes whenever rules change.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A receiver that changes whenever watches must be dropped.
    pub fn subscribe_drops(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(user: &'a str, verb: &'a str) -> RequestFacts<'a> {
        RequestFacts {
            user,
            token: user,
            user_agent: "test/1.0",
            verb,
            resource: "leases",
        }
    }

    #[test]
    fn counted_rules_expire_and_first_match_wins() {
        let f = Faults::default();
        f.add(FaultSpec {
            matcher: FaultMatch {
                verb: Some("update".into()),
                ..Default::default()
            },
            action: FaultAction::Error {
                code: 503,
                retry_after: Some(1),
            },
            times: Some(2),
        });
        assert_eq!(f.decide(&facts("a", "get")), Decision::Serve);
        let fail = Decision::Fail {
            code: 503,
            retry_after: Some(1),
        };
        assert_eq!(f.decide(&facts("a", "update")), fail);
        assert_eq!(f.decide(&facts("b", "update")), fail);
        assert_eq!(f.decide(&facts("a", "update")), Decision::Serve);
    }

    #[test]
    fn partition_matches_only_that_user() {
        let f = Faults::default();
        let id = f.partition_token("alice");
        assert_eq!(f.decide(&facts("alice", "get")), Decision::Hang(id));
        assert_eq!(f.decide(&facts("bob", "get")), Decision::Serve);
        assert_eq!(f.hanging(&facts("alice", "watch")), Some(id));
        assert!(f.remove(id));
        assert_eq!(f.hanging(&facts("alice", "watch")), None);
    }

    #[test]
    fn hold_watch_rules_leave_requests_alone() {
        let f = Faults::default();
        let id = f.hold_watches("alice");
        assert_eq!(f.decide(&facts("alice", "get")), Decision::Serve);
        assert_eq!(f.decide(&facts("alice", "watch")), Decision::Serve);
        assert_eq!(f.hanging(&facts("alice", "watch")), None);
        assert_eq!(f.holding_watch(&facts("alice", "watch")), Some(id));
        assert_eq!(f.holding_watch(&facts("bob", "watch")), None);
        let spec: FaultSpec = serde_json::from_str(r#"{"action":"hold_watch"}"#).unwrap();
        assert_eq!(spec.action, FaultAction::HoldWatch);
        assert!(f.remove(id));
        assert_eq!(f.holding_watch(&facts("alice", "watch")), None);
    }

    #[test]
    fn spec_json_shape() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"match":{"user_agent":"leader-sidecar"},"action":{"error":{"code":429,"retry_after":2}},"times":3}"#,
        )
        .unwrap();
        assert_eq!(spec.times, Some(3));
        assert!(serde_json::from_str::<FaultSpec>(r#"{"action":"hang","bogus":1}"#).is_err());
        let hang: FaultSpec = serde_json::from_str(r#"{"action":"hang"}"#).unwrap();
        assert_eq!(hang.action, FaultAction::Hang);
    }
}
