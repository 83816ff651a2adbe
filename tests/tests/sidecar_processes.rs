//! Real `leader-sidecar` processes against the in-memory API server (or the real cluster, see
//! `testkit::cluster`): election among several pods, crash, SIGTERM handover, partition, and
//! the HTTP contract on the wire.
//!
//! Timings are short (3 s lease) so that expiry-based scenarios finish quickly; waits are
//! conditions with generous upper bounds, never fixed sleeps. Durations are measured by the
//! bench (`cargo run --release -p tests --bin bench`), not asserted here, except where an
//! ordering is the point (a leader must say "not leader" before anybody else can take over).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use leader_client::contract::{LeaderStatus, YieldResponse};
use testkit::cluster::TestCluster;
use testkit::sidecar::{Sidecar, SidecarSpec, message, timestamp};
use testkit::web;

const FAST: [&str; 6] = testkit::sidecar::FAST_TIMINGS;
const WAIT: Duration = Duration::from_secs(30);

async fn start(
    cluster: &TestCluster,
    lease: &str,
    ids: &[&str],
    extra: &[&str],
) -> anyhow::Result<Vec<Sidecar>> {
    let mut out = Vec::new();
    for id in ids {
        let (kubeconfig, _) = cluster.client_kubeconfig(id)?;
        let spec = SidecarSpec::new(&kubeconfig, cluster.namespace(), lease, id)
            .args(FAST)
            .args(extra.iter().copied());
        out.push(Sidecar::spawn(spec).await?);
    }
    Ok(out)
}

/// Waits until exactly one sidecar grants leadership and every other one names it as holder.
async fn one_leader(sidecars: &[&Sidecar]) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut statuses = Vec::new();
        for s in sidecars {
            statuses.push(s.status().await.ok());
        }
        let leaders: Vec<usize> = statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.is_leader))
            .map(|(i, _)| i)
            .collect();
        assert!(leaders.len() <= 1, "two leaders at once: {statuses:?}");
        if let [l] = leaders[..] {
            let name = &sidecars[l].identity;
            if statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| s.holder.as_ref() == Some(name)))
            {
                return Ok(l);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no single leader: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exactly_one_of_three_leads_and_all_agree() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let sidecars = start(&cluster, "three", &["pod-a", "pod-b", "pod-c"], &[]).await?;
    let refs: Vec<&Sidecar> = sidecars.iter().collect();
    let leader = one_leader(&refs).await?;
    // Through several renew periods, never two leaders, always the same one.
    for _ in 0..40 {
        assert_eq!(one_leader(&refs).await?, leader);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = sidecars[leader].status().await?;
    assert!(s.valid_for_ms > 0 && s.valid_for_ms <= 2000, "{s:?}");
    assert_eq!(s.term, Some(0), "first tenure on a new lease");
    assert_eq!(s.lease, format!("{}/three", cluster.namespace()));

    // The Lease looks like one client-go wrote.
    let lease = Api::<Lease>::namespaced(cluster.client(), cluster.namespace())
        .get("three")
        .await?;
    let spec = lease.spec.expect("spec");
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(sidecars[leader].identity.as_str())
    );
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    assert_eq!(spec.lease_transitions, Some(0));

    // Logs a user of the seed recognises, and an Event on the Lease.
    for s in &sidecars {
        s.wait_log(
            &format!(
                "attempting to acquire leader lease {}/three...",
                cluster.namespace()
            ),
            WAIT,
        )
        .await?;
        s.wait_log(
            &format!("new leader observed: {}", sidecars[leader].identity),
            WAIT,
        )
        .await?;
    }
    sidecars[leader]
        .wait_log(
            &format!("successfully acquired lease {}/three", cluster.namespace()),
            WAIT,
        )
        .await?;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client(), cluster.namespace());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events.list(&Default::default()).await?;
        if let Some(e) = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some("LeaderElection"))
        {
            assert_eq!(
                e.regarding.as_ref().and_then(|r| r.name.as_deref()),
                Some("three")
            );
            assert!(
                e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains(&format!("{} became leader", sidecars[leader].identity))
            );
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no LeaderElection event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Standbys watch instead of polling: while the leader renews three times, every Lease
    // request comes from the leader.
    if let Some(server) = cluster.in_memory() {
        let before = server.audit().len();
        let leader_name = sidecars[leader].identity.clone();
        let deadline = tokio::time::Instant::now() + WAIT;
        let lease_requests = loop {
            let requests: Vec<(String, String)> = server.audit()[before..]
                .iter()
                .filter(|r| r.resource == "leases")
                .map(|r| (r.user.clone(), r.verb.clone()))
                .collect();
            let renews = requests
                .iter()
                .filter(|(u, v)| *u == leader_name && v == "update")
                .count();
            if renews >= 3 {
                break requests;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the leader did not renew: {requests:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for (user, verb) in &lease_requests {
            assert_eq!(user, &leader_name, "a standby made a request: {verb}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn kill_9_of_the_leader_hands_over_after_the_lease_expires() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut sidecars = start(&cluster, "crash", &["pod-a", "pod-b"], &[]).await?;
    let refs: Vec<&Sidecar> = sidecars.iter().collect();
    let leader = one_leader(&refs).await?;
    let standby = 1 - leader;
    let old_term = sidecars[standby].status().await?.term;
    sidecars[leader].signal(libc::SIGKILL)?;
    sidecars[leader].wait_exit(WAIT).await?;
    let s = sidecars[standby].wait_status(WAIT, |s| s.is_leader).await?;
    assert!(
        s.term > old_term,
        "the term grows: {old_term:?} -> {:?}",
        s.term
    );
    assert!(sidecars[standby].logs_with("lost lease").is_empty());
    Ok(())
}

#[tokio::test]
async fn sigterm_releases_so_a_standby_takes_over_without_waiting_for_expiry() -> anyhow::Result<()>
{
    let cluster = TestCluster::start().await?;
    // A one-minute lease: a takeover within it can only come from the release.
    let slow = [
        "--lease-duration",
        "60s",
        "--renew-deadline",
        "40s",
        "--retry-period",
        "2s",
    ];
    let mut sidecars = Vec::new();
    for id in ["pod-a", "pod-b"] {
        let (kubeconfig, _) = cluster.client_kubeconfig(id)?;
        let spec = SidecarSpec::new(&kubeconfig, cluster.namespace(), "term", id).args(slow);
        sidecars.push(Sidecar::spawn(spec).await?);
    }
    let refs: Vec<&Sidecar> = sidecars.iter().collect();
    let leader = one_leader(&refs).await?;
    let standby = 1 - leader;
    // one_leader() read the leader's /leader, so a grant of up to 2 s is outstanding: the
    // local "controller" (this test) yields, as a real one does on SIGTERM.
    sidecars[leader].signal(libc::SIGTERM)?;
    // Signals arrive asynchronously: yield once the sidecar has handled it.
    sidecars[leader]
        .wait_log("shutting down: stopped granting", WAIT)
        .await?;
    let reply = web::request(sidecars[leader].api, "POST", "/leader/yield", b"").await?;
    assert_eq!(reply.status, 200);
    let yielded: YieldResponse = reply.json()?;
    assert!(!yielded.was_leader, "SIGTERM already stopped the grants");
    let status = sidecars[leader].wait_exit(WAIT).await?;
    assert!(status.success(), "exit 0 after releasing: {status:?}");
    sidecars[standby]
        .wait_status(Duration::from_secs(20), |s| s.is_leader)
        .await?;

    let old = &sidecars[leader];
    let released = old.wait_log("released lease", WAIT).await?;
    let stopped_granting = old
        .wait_log("shutting down: stopped granting", WAIT)
        .await?;
    let acquired = sidecars[standby]
        .wait_log("successfully acquired lease", WAIT)
        .await?;
    assert!(timestamp(&stopped_granting) <= timestamp(&released));
    assert!(
        timestamp(&released) <= timestamp(&acquired),
        "acquired before the release"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_without_a_yield_waits_for_the_outstanding_grant() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut sidecars = start(&cluster, "grant", &["pod-a"], &["--grant", "1500ms"]).await?;
    let s = sidecars[0].wait_status(WAIT, |s| s.is_leader).await?;
    let granted_at = tokio::time::Instant::now();
    assert!(s.valid_for_ms > 0);
    sidecars[0].signal(libc::SIGTERM)?;
    // Once the signal is handled, no new grant is handed out.
    sidecars[0]
        .wait_log("shutting down: stopped granting", WAIT)
        .await?;
    let after = sidecars[0].status().await?;
    assert!(!after.is_leader && after.valid_for_ms == 0, "{after:?}");
    sidecars[0].wait_exit(WAIT).await?;
    // The release came only after the grant had run out on this process's clock; the lower
    // bound is the property (never release under an outstanding grant).
    assert!(granted_at.elapsed() >= Duration::from_millis(s.valid_for_ms));
    let lease = Api::<Lease>::namespaced(cluster.client(), cluster.namespace())
        .get("grant")
        .await?;
    let spec = lease.spec.expect("spec");
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(""),
        "released in client-go's format"
    );
    assert_eq!(spec.lease_duration_seconds, Some(1));
    Ok(())
}

#[tokio::test]
async fn a_partitioned_leader_says_not_leader_before_anybody_takes_over() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let Some(server) = cluster.in_memory() else {
        eprintln!("skipped: fault injection needs the in-memory API server");
        return Ok(());
    };
    let mut tokens = Vec::new();
    let mut sidecars = Vec::new();
    for id in ["pod-a", "pod-b"] {
        let (kubeconfig, token) = cluster.client_kubeconfig(id)?;
        tokens.push(token.expect("in-memory token"));
        let spec = SidecarSpec::new(&kubeconfig, cluster.namespace(), "part", id).args(FAST);
        sidecars.push(Sidecar::spawn(spec).await?);
    }
    let refs: Vec<&Sidecar> = sidecars.iter().collect();
    let leader = one_leader(&refs).await?;
    let standby = 1 - leader;
    let rule = server.faults().partition_token(&tokens[leader]);
    let took_over = sidecars[standby].wait_status(WAIT, |s| s.is_leader).await?;
    assert!(took_over.is_leader);
    let lost = sidecars[leader].wait_log("lost lease", WAIT).await?;
    assert_eq!(lost["fields"]["reason"], "renew deadline exceeded");
    let acquired = sidecars[standby]
        .wait_log("successfully acquired lease", WAIT)
        .await?;
    assert!(
        timestamp(&lost) < timestamp(&acquired),
        "the partitioned leader stepped down at {:?}, after the takeover at {:?}",
        timestamp(&lost),
        timestamp(&acquired)
    );
    assert!(!sidecars[leader].status().await?.is_leader);
    // Healthy despite the outage; the API errors are counted.
    let health = web::get(sidecars[leader].admin, "/healthz").await?;
    assert_eq!(health.status, 200);
    // Partition healed: the old leader follows the new one.
    server.faults().remove(rule);
    let s = sidecars[leader]
        .wait_status(WAIT, |s| {
            s.holder.as_deref() == Some(sidecars[standby].identity.as_str())
        })
        .await?;
    assert!(!s.is_leader);
    assert_eq!(one_leader(&refs).await?, standby);
    let _ = &mut sidecars;
    Ok(())
}

#[tokio::test]
async fn the_http_contract_on_the_wire() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let sidecars = start(&cluster, "wire", &["pod-a"], &["--grant", "1s"]).await?;
    let sc = &sidecars[0];
    sc.wait_status(WAIT, |s| s.is_leader).await?;

    let r = web::get(sc.api, "/leader").await?;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: serde_json::Value = r.json()?;
    for field in [
        "is_leader",
        "identity",
        "holder",
        "lease",
        "term",
        "valid_for_ms",
        "observed_at",
        "renewed_at",
    ] {
        assert!(body.get(field).is_some(), "missing {field}: {body}");
    }
    let s: LeaderStatus = r.json()?;
    assert!(s.valid_for_ms <= 1000, "capped by --grant: {s:?}");

    // Legacy contrib leader-elector contract.
    let legacy: serde_json::Value = web::get(sc.api, "/").await?.json()?;
    assert_eq!(legacy, serde_json::json!({ "name": "pod-a" }));

    // Misuse gets JSON errors.
    let r = web::get(sc.api, "/nope").await?;
    assert_eq!(r.status, 404);
    assert!(r.json::<serde_json::Value>()?["error"].is_string());
    let r = web::request(sc.api, "DELETE", "/leader", b"").await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = web::get(sc.api, "/leader/yield").await?;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = web::request(sc.api, "POST", "/leader/yield", &vec![b'x'; 4096]).await?;
    assert_eq!(r.status, 413);
    let r = web::request(sc.api, "HEAD", "/leader", b"").await?;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // Garbage on the socket closes that connection and nothing else.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(sc.api).await?;
        raw.write_all(b"\x00\x01garbage\r\n\r\n").await?;
        let mut buf = Vec::new();
        let _ = raw.read_to_end(&mut buf).await;
    }
    assert!(sc.status().await?.is_leader);

    // The stream: an event at once, re-grants while leader, and is_leader:false on yield.
    let mut stream = web::EventStream::open(sc.api, "/leader/watch").await?;
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "text/event-stream")
    );
    let first = stream.next().await?.expect("first event");
    assert_eq!(first.event, "leader");
    let first: LeaderStatus = serde_json::from_str(&first.data)?;
    assert!(first.is_leader);
    let second: LeaderStatus = serde_json::from_str(&stream.next().await?.expect("re-grant").data)?;
    assert!(second.is_leader && second.valid_for_ms > 0);
    let r = web::request(sc.api, "POST", "/leader/yield", b"").await?;
    let y: YieldResponse = r.json()?;
    assert!(y.was_leader);
    assert_eq!(y.backoff_ms, 3000, "defaults to the lease duration");
    loop {
        let e: LeaderStatus = serde_json::from_str(&stream.next().await?.expect("event").data)?;
        if !e.is_leader {
            assert_eq!(e.valid_for_ms, 0);
            break;
        }
    }
    sc.wait_log("released lease", WAIT).await?;
    // Nobody else is there: after the yield backoff it takes the free lease again.
    let again = sc.wait_status(WAIT, |s| s.is_leader).await?;
    assert_eq!(again.term, Some(1), "a new tenure has a new term");
    Ok(())
}

#[tokio::test]
async fn probes_and_metrics() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let sidecars = start(&cluster, "probes", &["pod-a", "pod-b"], &[]).await?;
    let refs: Vec<&Sidecar> = sidecars.iter().collect();
    let leader = one_leader(&refs).await?;
    for s in &sidecars {
        assert_eq!(web::get(s.admin, "/healthz").await?.status, 200);
        assert_eq!(
            web::get(s.admin, "/readyz").await?.status,
            200,
            "standbys are ready too"
        );
    }
    let _watch = web::EventStream::open(sidecars[leader].api, "/leader/watch").await?;
    let text = sidecars[leader].metrics().await?;
    for needle in [
        "leader_election_master_status{name=\"probes\"} 1",
        "leader_sidecar_transitions_total{event=\"acquired\"",
        "leader_sidecar_renew_duration_seconds_bucket",
        "leader_sidecar_api_requests_total{resource=\"leases\",verb=\"create\",code=\"201\"}",
        "leader_sidecar_http_requests_total{path=\"/leader\",code=\"200\"}",
        "leader_sidecar_watchers 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let standby = sidecars[1 - leader].metrics().await?;
    assert!(
        standby.contains("leader_election_master_status{name=\"probes\"} 0"),
        "{standby}"
    );
    assert!(message(&sidecars[0].logs()[0]).contains("leader-sidecar starting"));
    Ok(())
}
