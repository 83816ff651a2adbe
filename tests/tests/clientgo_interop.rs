//! The client-go elector simulation (`testkit::clientgo`) on its own and next to a real
//! `leader-sidecar` on one Lease: one leader at a time, the Lease written in client-go's
//! format, takeover after a crash, handover through the release, and the renew deadline.
//!
//! Waits are conditions with generous upper bounds, never fixed sleeps; the only timing margins
//! relied on are the election protocol's own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use testkit::clientgo::{ClientGoElector, ClientGoHandle, ClientGoTimings};
use testkit::cluster::TestCluster;
use testkit::controller::{ActiveWindow, check_no_overlap};
use testkit::sidecar::{Sidecar, SidecarSpec, timestamp};
use testkit::web;

const WAIT: Duration = Duration::from_secs(30);
const FAST: ClientGoTimings = ClientGoTimings::FAST;
/// A one-minute lease: a takeover within [`WAIT`] can only come from a release.
const LONG: ClientGoTimings = ClientGoTimings {
    lease_duration: Duration::from_secs(60),
    renew_deadline: Duration::from_secs(40),
    retry_period: Duration::from_millis(500),
};

/// A client of its own for `identity` (its own token in memory, so that faults and the audit
/// log can single it out), and that token.
fn client_for(
    cluster: &TestCluster,
    identity: &str,
) -> anyhow::Result<(kube::Client, Option<String>)> {
    let (_, token) = cluster.client_kubeconfig(identity)?;
    Ok(match (cluster.in_memory(), &token) {
        (Some(server), Some(t)) => (server.client(t), token),
        _ => (cluster.client(), None),
    })
}

fn elector(
    cluster: &TestCluster,
    lease: &str,
    identity: &str,
    timings: ClientGoTimings,
    release_on_cancel: bool,
) -> anyhow::Result<ClientGoElector> {
    let (client, _) = client_for(cluster, identity)?;
    Ok(ClientGoElector::spawn(
        client,
        cluster.namespace(),
        lease,
        identity,
        timings,
        release_on_cancel,
    ))
}

fn leases(cluster: &TestCluster) -> Api<Lease> {
    Api::namespaced(cluster.client(), cluster.namespace())
}

async fn lease_spec(cluster: &TestCluster, name: &str) -> anyhow::Result<LeaseSpec> {
    leases(cluster)
        .get(name)
        .await?
        .spec
        .ok_or_else(|| anyhow::anyhow!("lease {name} has no spec"))
}

/// Waits until exactly one elector leads and every one has observed it as the holder; fails
/// at once if two lead together.
async fn one_leader(electors: &[&ClientGoElector]) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leading: Vec<usize> = (0..electors.len())
            .filter(|&i| electors[i].is_leading())
            .collect();
        anyhow::ensure!(
            leading.len() <= 1,
            "two client-go electors lead: {leading:?}"
        );
        if let [l] = leading[..] {
            let id = electors[l].identity();
            if electors.iter().all(|e| e.leader().as_deref() == Some(id)) {
                return Ok(l);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no single leader within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every version of one Lease, in order, from a watch started before the scenario.
struct LeaseHistory {
    versions: Arc<Mutex<Vec<LeaseSpec>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseHistory {
    async fn start(cluster: &TestCluster, name: &str) -> anyhow::Result<Self> {
        let api = leases(cluster);
        let fields = format!("metadata.name={name}");
        let list = api.list(&ListParams::default().fields(&fields)).await?;
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let versions = Arc::new(Mutex::new(
            list.items
                .into_iter()
                .map(|l| l.spec.unwrap_or_default())
                .collect::<Vec<_>>(),
        ));
        let stream = api
            .watch(&WatchParams::default().fields(&fields).timeout(290), &rv)
            .await?;
        let sink = versions.clone();
        let task = tokio::spawn(async move {
            let mut stream = stream.boxed();
            while let Ok(Some(event)) = stream.try_next().await {
                match event {
                    WatchEvent::Added(l) | WatchEvent::Modified(l) => sink
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(l.spec.unwrap_or_default()),
                    WatchEvent::Bookmark(_) => {}
                    WatchEvent::Deleted(_) | WatchEvent::Error(_) => break,
                }
            }
        });
        Ok(Self { versions, task })
    }

    fn versions(&self) -> Vec<LeaseSpec> {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `pred` holds for the versions seen so far.
    async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&[LeaseSpec]) -> bool,
    ) -> anyhow::Result<Vec<LeaseSpec>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.versions();
            if pred(&v) {
                return Ok(v);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "lease history: no {what} within {WAIT:?}: {v:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LeaseHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn holder(spec: &LeaseSpec) -> &str {
    spec.holder_identity.as_deref().unwrap_or_default()
}

/// `2026-01-02T03:04:05.123456Z`: a MicroTime as client-go writes it.
fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[10] == b'T'
        && b[19] == b'.'
        && b[26] == b'Z'
        && b[20..26].iter().all(u8::is_ascii_digit)
}

/// The Lease's JSON as stored, to check the wire format of the times.
async fn lease_json(cluster: &TestCluster, name: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{name}",
        cluster.namespace()
    );
    let request = http::Request::get(url).body(Vec::new())?;
    Ok(cluster
        .client()
        .request::<serde_json::Value>(request)
        .await?)
}

#[tokio::test]
async fn two_electors_one_leads_and_a_crash_hands_over() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut electors = vec![
        elector(&cluster, "cg", "cg-a", FAST, false)?,
        elector(&cluster, "cg", "cg-b", FAST, false)?,
    ];
    let refs: Vec<&ClientGoElector> = electors.iter().collect();
    let l = one_leader(&refs).await?;
    let history = LeaseHistory::start(&cluster, "cg").await?;
    let leader = electors.remove(l);
    let standby = electors.remove(0);
    let (leader_id, standby_id) = (leader.identity().to_owned(), standby.identity().to_owned());

    // The record client-go writes.
    let first = lease_spec(&cluster, "cg").await?;
    assert_eq!(first.holder_identity.as_deref(), Some(leader_id.as_str()));
    assert_eq!(first.lease_duration_seconds, Some(3));
    assert_eq!(
        first.lease_transitions,
        Some(0),
        "created by the first acquire"
    );
    assert!(first.acquire_time.is_some() && first.renew_time.is_some());
    let json = lease_json(&cluster, "cg").await?;
    for field in ["acquireTime", "renewTime"] {
        let v = json["spec"][field].as_str().unwrap_or_default();
        assert!(is_micro_time(v), "{field} is not a MicroTime: {v:?}");
    }
    // It renews: renewTime moves, holder, acquireTime and transitions stay.
    let renewed = history
        .wait_for("renew", |v| {
            v.iter().any(|s| {
                s.renew_time.as_ref().map(|t| t.0) > first.renew_time.as_ref().map(|t| t.0)
            })
        })
        .await?;
    for spec in &renewed {
        assert_eq!(holder(spec), leader_id);
        assert_eq!(spec.acquire_time, first.acquire_time);
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(3));
    }
    assert!(!standby.is_leading());
    assert_eq!(standby.leader().as_deref(), Some(leader_id.as_str()));

    // kill -9 of the leader: the standby takes over once the record stopped changing for 3 s.
    let leader_windows = leader.crash().await;
    assert_eq!(leader_windows.len(), 1, "{leader_windows:?}");
    assert_eq!(leader_windows[0].term, Some(0));
    assert!(leader_windows[0].end.is_some());
    standby.wait_leading(WAIT).await?;
    let after = lease_spec(&cluster, "cg").await?;
    assert_eq!(after.holder_identity.as_deref(), Some(standby_id.as_str()));
    assert_eq!(
        after.lease_transitions,
        Some(1),
        "a takeover is a transition"
    );
    assert_eq!(after.lease_duration_seconds, Some(3));
    assert!(after.acquire_time.as_ref().map(|t| t.0) > first.acquire_time.as_ref().map(|t| t.0));
    let standby_windows = standby.windows();
    assert_eq!(standby_windows.len(), 1, "{standby_windows:?}");
    assert_eq!(standby_windows[0].term, Some(1));
    // Every version of the Lease names one holder; the transition count only grows.
    let versions = history.versions();
    assert!(
        versions
            .windows(2)
            .all(|w| w[0].lease_transitions <= w[1].lease_transitions),
        "{versions:#?}"
    );
    check_no_overlap(&[
        (leader_id.as_str(), leader_windows),
        (standby_id.as_str(), standby.stop().await),
    ])?;
    Ok(())
}

#[tokio::test]
async fn graceful_stop_releases_in_client_go_format_and_the_standby_takes_over()
-> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut electors = vec![
        elector(&cluster, "handover", "cg-a", LONG, true)?,
        elector(&cluster, "handover", "cg-b", LONG, true)?,
    ];
    let refs: Vec<&ClientGoElector> = electors.iter().collect();
    let l = one_leader(&refs).await?;
    let history = LeaseHistory::start(&cluster, "handover").await?;
    let leader = electors.remove(l);
    let standby = electors.remove(0);
    let (leader_id, standby_id) = (leader.identity().to_owned(), standby.identity().to_owned());
    let before = lease_spec(&cluster, "handover").await?;
    assert_eq!(before.lease_duration_seconds, Some(60));
    let term = before.lease_transitions;

    let leader_windows = leader.stop().await;
    assert_eq!(leader_windows.len(), 1, "{leader_windows:?}");
    assert!(leader_windows[0].end.is_some());
    // Within WAIT, far below the 60 s lease: only the release explains the takeover.
    standby.wait_leading(WAIT).await?;
    let versions = history
        .wait_for("takeover", |v| v.iter().any(|s| holder(s) == standby_id))
        .await?;
    let taken = versions
        .iter()
        .position(|s| holder(s) == standby_id)
        .ok_or_else(|| anyhow::anyhow!("no takeover in {versions:#?}"))?;
    let released = taken
        .checked_sub(1)
        .map(|i| &versions[i])
        .ok_or_else(|| anyhow::anyhow!("nothing before the takeover: {versions:#?}"))?;
    assert_eq!(
        holder(released),
        "",
        "released before the takeover: {versions:#?}"
    );
    assert_eq!(released.lease_duration_seconds, Some(1));
    assert_eq!(
        released.lease_transitions, term,
        "the release keeps the count"
    );
    assert!(released.renew_time.is_some());
    assert_eq!(
        released.renew_time.as_ref().map(|t| t.0),
        released.acquire_time.as_ref().map(|t| t.0)
    );
    let took = &versions[taken];
    assert_eq!(took.lease_transitions, term.map(|t| t + 1));
    assert_eq!(took.lease_duration_seconds, Some(60));
    assert!(versions[..taken - 1].iter().all(|s| holder(s) == leader_id));
    let standby_windows = standby.stop().await;
    assert_eq!(standby_windows[0].term, term.map(i64::from).map(|t| t + 1));
    check_no_overlap(&[
        (leader_id.as_str(), leader_windows),
        (standby_id.as_str(), standby_windows),
    ])?;
    Ok(())
}

/// client-go does not step down when it sees another holder: it keeps its window until a renew
/// poll gives up (the renew deadline), then competes again and takes the lease once the new
/// record has not changed for its duration.
#[tokio::test]
async fn a_lease_taken_by_force_ends_the_window_only_when_renewing_gives_up() -> anyhow::Result<()>
{
    let cluster = TestCluster::start().await?;
    let e = elector(&cluster, "forced", "cg-a", FAST, false)?;
    e.wait_leading(WAIT).await?;
    let api = leases(&cluster);
    let before_write = jiff::Timestamp::now();
    // Written over the renewing elector: a compare-and-swap, retried after a conflict.
    let intruder_term = loop {
        let mut lease = api.get("forced").await?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some("intruder".into());
        spec.lease_transitions = spec.lease_transitions.map(|t| t + 1);
        let term = spec.lease_transitions;
        match api.replace("forced", &PostParams::default(), &lease).await {
            Ok(_) => break term,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    };

    e.wait_not_leading(WAIT).await?;
    let first = e.windows();
    assert_eq!(first.len(), 1, "{first:?}");
    let end = first[0]
        .end
        .ok_or_else(|| anyhow::anyhow!("window still open"))?;
    assert!(
        end > before_write,
        "client-go kept leading after the lease changed hands"
    );
    assert_eq!(e.leader().as_deref(), Some("intruder"));
    // The intruder never renews: its record expires and the elector takes the lease back.
    e.wait_leading(WAIT).await?;
    let windows = e.windows();
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert_eq!(windows[1].term, intruder_term.map(|t| i64::from(t) + 1));
    assert!(windows[1].start > end);
    let spec = lease_spec(&cluster, "forced").await?;
    assert_eq!(spec.holder_identity.as_deref(), Some("cg-a"));
    e.stop().await;
    Ok(())
}

/// A partitioned client-go leader stops leading at its renew deadline, before the standby's
/// takeover. Timings 5 s / 2 s / 500 ms leave client-go's own margin (lease - renew deadline -
/// retry period - 1 s of whole-second change detection) at 1.5 s; see the module docs of
/// `testkit::clientgo` for why 3 s / 2 s / 500 ms would not.
#[tokio::test]
async fn a_partitioned_leader_stops_at_its_renew_deadline() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let Some(server) = cluster.in_memory() else {
        eprintln!("skipped: fault injection needs the in-memory API server");
        return Ok(());
    };
    let timings = ClientGoTimings {
        lease_duration: Duration::from_secs(5),
        ..FAST
    };
    let mut tokens = Vec::new();
    let mut electors = Vec::new();
    for id in ["cg-a", "cg-b"] {
        let (client, token) = client_for(&cluster, id)?;
        tokens.push(token.ok_or_else(|| anyhow::anyhow!("no token"))?);
        electors.push(ClientGoElector::spawn(
            client,
            cluster.namespace(),
            "part",
            id,
            timings,
            false,
        ));
    }
    let refs: Vec<&ClientGoElector> = electors.iter().collect();
    let l = one_leader(&refs).await?;
    let s = 1 - l;
    let rule = server.faults().partition_token(&tokens[l]);
    electors[l].wait_not_leading(WAIT).await?;
    electors[s].wait_leading(WAIT).await?;
    check_no_overlap(&[
        (electors[l].identity(), electors[l].windows()),
        (electors[s].identity(), electors[s].windows()),
    ])?;
    // Healed: the old leader follows the new one.
    server.faults().remove(rule);
    let refs: Vec<&ClientGoElector> = electors.iter().collect();
    assert_eq!(one_leader(&refs).await?, s);
    let spec = lease_spec(&cluster, "part").await?;
    assert_eq!(spec.lease_transitions, Some(1));
    let windows: Vec<(String, Vec<ActiveWindow>)> = {
        let mut out = Vec::new();
        for e in electors {
            let id = e.identity().to_owned();
            out.push((id, e.stop().await));
        }
        out
    };
    let named: Vec<(&str, Vec<ActiveWindow>)> = windows
        .iter()
        .map(|(id, w)| (id.as_str(), w.clone()))
        .collect();
    check_no_overlap(&named)?;
    Ok(())
}

/// Who claims leadership right now, by the sidecar's `/leader` and the simulators' windows.
#[derive(Debug)]
struct Claims {
    sidecar: bool,
    clientgo: Vec<String>,
}

/// Samples the sidecar and every simulator until stopped, and records each sample in which two
/// claim leadership, or one claims it while the Lease (read after the claims) names another.
struct Monitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Monitor {
    fn start(
        cluster: &TestCluster,
        lease: &str,
        sidecar: (std::net::SocketAddr, String),
        sims: Arc<Mutex<Vec<ClientGoHandle>>>,
    ) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let api = leases(cluster);
        let lease = lease.to_owned();
        let task = tokio::spawn(async move {
            let (mut samples, mut violations) = (0, Vec::new());
            while !*stopped.borrow() {
                let sidecar_claims = match web::get(sidecar.0, "/leader").await {
                    Ok(r) if r.status == 200 => r
                        .json::<serde_json::Value>()
                        .is_ok_and(|v| v["is_leader"] == true),
                    _ => false,
                };
                let claims = Claims {
                    sidecar: sidecar_claims,
                    clientgo: sims
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|h| h.is_leading())
                        .map(|h| h.identity().to_owned())
                        .collect(),
                };
                let holder = api
                    .get(&lease)
                    .await
                    .ok()
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity);
                samples += 1;
                let n = usize::from(claims.sidecar) + claims.clientgo.len();
                let claimant = if claims.sidecar {
                    Some(sidecar.1.clone())
                } else {
                    claims.clientgo.first().cloned()
                };
                if n > 1 || (n == 1 && claimant != holder) {
                    violations.push(format!("{claims:?} with the Lease held by {holder:?}"));
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(25)) => {}
                }
            }
            (samples, violations)
        });
        Self { stop, task }
    }

    async fn finish(self) -> anyhow::Result<usize> {
        self.stop.send_replace(true);
        let (samples, violations) = self.task.await?;
        anyhow::ensure!(violations.is_empty(), "{violations:#?}");
        Ok(samples)
    }
}

#[tokio::test]
async fn clientgo_and_the_sidecar_hand_over_to_each_other_after_crashes() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let lease = "mixed";
    // client-go first: it creates the Lease.
    let cg1 = elector(&cluster, lease, "cg-1", FAST, false)?;
    cg1.wait_leading(WAIT).await?;
    let (kubeconfig, _) = cluster.client_kubeconfig("pod-a")?;
    let spec = SidecarSpec::new(&kubeconfig, cluster.namespace(), lease, "pod-a")
        .args(testkit::sidecar::FAST_TIMINGS);
    let mut sidecar = Sidecar::spawn(spec).await?;
    let sims = Arc::new(Mutex::new(vec![cg1.handle()]));
    let monitor = Monitor::start(
        &cluster,
        lease,
        (sidecar.api, sidecar.identity.clone()),
        sims.clone(),
    );
    // The sidecar follows the client-go leader.
    let s = sidecar
        .wait_status(WAIT, |s| s.holder.as_deref() == Some("cg-1"))
        .await?;
    assert!(!s.is_leader, "{s:?}");
    assert!(cg1.is_leading());

    // Direction 1: kill -9 of the client-go leader; the sidecar takes over after expiry.
    let cg1_windows = cg1.crash().await;
    assert_eq!(cg1_windows.len(), 1, "{cg1_windows:?}");
    let took = sidecar.wait_status(WAIT, |s| s.is_leader).await?;
    let cg1_term = cg1_windows[0].term;
    assert!(
        took.term.map(i64::from) > cg1_term,
        "the term grows: {cg1_term:?} -> {:?}",
        took.term
    );
    let spec = lease_spec(&cluster, lease).await?;
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert_eq!(spec.lease_transitions, took.term);
    let acquired = sidecar
        .wait_log(
            &format!(
                "successfully acquired lease {}/{lease}",
                cluster.namespace()
            ),
            WAIT,
        )
        .await?;
    let sidecar_start = timestamp(&acquired).ok_or_else(|| anyhow::anyhow!("no timestamp"))?;

    // Direction 2: a client-go standby follows the sidecar, then takes over after its kill -9.
    let cg2 = elector(&cluster, lease, "cg-2", FAST, false)?;
    sims.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(cg2.handle());
    let deadline = tokio::time::Instant::now() + WAIT;
    while cg2.leader().as_deref() != Some("pod-a") {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "cg-2 never saw pod-a"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While the sidecar renews for longer than the lease duration, cg-2 stays a follower.
    let seen = lease_spec(&cluster, lease)
        .await?
        .renew_time
        .map(|t| t.0 + Duration::from_secs(4));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = lease_spec(&cluster, lease).await?;
        assert!(!cg2.is_leading());
        assert_eq!(now.holder_identity.as_deref(), Some("pod-a"));
        if now.renew_time.as_ref().map(|t| t.0) > seen {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the sidecar did not renew"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sidecar.status().await?.is_leader);
    sidecar.signal(libc::SIGKILL)?;
    sidecar.wait_exit(WAIT).await?;
    let sidecar_end = jiff::Timestamp::now();
    cg2.wait_leading(WAIT).await?;
    let cg2_windows = cg2.windows();
    assert_eq!(cg2_windows.len(), 1, "{cg2_windows:?}");
    assert!(
        cg2_windows[0].term > took.term.map(i64::from),
        "the term grows: {:?} -> {:?}",
        took.term,
        cg2_windows[0].term
    );
    let spec = lease_spec(&cluster, lease).await?;
    assert_eq!(spec.holder_identity.as_deref(), Some("cg-2"));

    let samples = monitor.finish().await?;
    assert!(samples > 0);
    // The sidecar's tenure, from its acquisition log line to its death (an upper bound).
    let sidecar_window = ActiveWindow {
        term: took.term.map(i64::from),
        start: sidecar_start,
        end: Some(sidecar_end),
    };
    check_no_overlap(&[
        ("cg-1", cg1_windows),
        ("pod-a", vec![sidecar_window]),
        ("cg-2", cg2.stop().await),
    ])?;
    Ok(())
}
