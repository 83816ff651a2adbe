//! HTTP abuse of a real leader's API (`testkit::abuse`): garbage requests, a `/leader/watch`
//! reader that stops reading and 10 000 connections that never send a byte, all held at once.
//! Meanwhile a new client is answered, the controller's stream opened before the abuse keeps
//! delivering, the leader keeps renewing in the same term, the standby keeps following, and
//! both processes live.
//!
//! Waits are conditions with upper bounds for a hung test, never fixed sleeps; nothing is timed.

use std::time::Duration;

use leader_client::contract::LeaderStatus;
use testkit::abuse::{self, IdleFlood, StalledWatcher};
use testkit::cluster::TestCluster;
use testkit::sidecar::{FAST_TIMINGS, Sidecar, SidecarSpec};
use testkit::web;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
const FLOOD: usize = 10_000;

/// Waits until exactly one sidecar grants leadership and the others name it as holder.
async fn one_leader(sidecars: &[Sidecar]) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut statuses = Vec::new();
        for s in sidecars {
            statuses.push(s.status().await.ok());
        }
        let leaders: Vec<usize> = (0..sidecars.len())
            .filter(|&i| statuses[i].as_ref().is_some_and(|s| s.is_leader))
            .collect();
        if let [l] = leaders[..]
            && statuses.iter().all(|s| {
                s.as_ref()
                    .is_some_and(|s| s.holder.as_deref() == Some(&sidecars[l].identity))
            })
        {
            return Ok(l);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no single leader: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /leader` on a new connection, as a controller starting up would send it.
///
/// Retried only when the connection is closed without a single byte of answer, which is what
/// an eviction looks like: at the connection cap the sidecar closes the oldest connection that
/// has not sent a request yet, and a new connection is that until its request is read. It would
/// take `--max-connections` connections accepted after ours, before ours is read, for ours to be
/// the one closed; the flood is fully connected before this runs (and the kernel hands
/// connections to `accept` in order), so it should not happen here, but it is the one way a
/// fresh connection can lose its race against a flood that is still arriving. Any answer, and
/// any other failure, counts as is.
async fn fresh_get_leader(addr: std::net::SocketAddr) -> anyhow::Result<web::Reply> {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET /leader HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        let written = stream.write_all(request.as_bytes()).await;
        let mut raw = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .map_err(|_| anyhow::anyhow!("GET /leader: no answer within {WAIT:?}"))?;
        if raw.is_empty() {
            eprintln!(
                "GET /leader attempt {attempt}: closed without an answer (write: {written:?}, \
                 read: {read:?}); retrying"
            );
            continue;
        }
        return web::parse(&raw);
    }
    anyhow::bail!("GET /leader: closed without an answer {ATTEMPTS} times")
}

fn renewed_at(s: &LeaderStatus) -> anyhow::Result<jiff::Timestamp> {
    let at = s
        .renewed_at
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("no renewed_at in {s:?}"))?;
    Ok(at.parse()?)
}

#[tokio::test]
async fn http_abuse_leaves_the_elector_and_other_clients_unaffected() -> anyhow::Result<()> {
    // Before the sidecars start, so that they inherit the raised limit (they raise their own
    // soft limit to the hard one anyway).
    let nofile = abuse::raise_nofile_limit()?;
    let cluster = TestCluster::start().await?;
    let mut sidecars = Vec::new();
    for id in ["pod-a", "pod-b"] {
        let (kubeconfig, _) = cluster.client_kubeconfig(id)?;
        let spec =
            SidecarSpec::new(&kubeconfig, cluster.namespace(), "abuse", id).args(FAST_TIMINGS);
        sidecars.push(Sidecar::spawn(spec).await?);
    }
    let leader = one_leader(&sidecars).await?;
    let standby = 1 - leader;
    let api = sidecars[leader].api;
    let leader_name = sidecars[leader].identity.clone();
    let before = sidecars[leader].status().await?;
    assert!(before.is_leader);

    // The controller's stream, opened before the abuse.
    let mut watch = web::EventStream::open(api, "/leader/watch").await?;
    assert_eq!(watch.status, 200);
    let first = watch
        .next()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the stream closed at once"))?;
    let first: LeaderStatus = serde_json::from_str(&first.data)?;
    assert!(first.is_leader, "{first:?}");

    let report = abuse::garbage(api).await?;
    eprintln!("garbage: {report}");
    let stalled = StalledWatcher::open(api).await?;
    let flood_started_ms = jiff::Timestamp::now().as_millisecond();
    let mut flood = IdleFlood::open(api, FLOOD).await?;
    eprintln!(
        "idle flood: {} connected, {} connects failed (open-file limit {nofile})",
        flood.len(),
        flood.failed()
    );
    anyhow::ensure!(!flood.is_empty(), "no flood connection was established");

    // With everything held: a new client is answered, and told the same leader and term.
    let reply = fresh_get_leader(api).await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    let fresh: LeaderStatus = reply.json()?;
    assert!(fresh.is_leader && fresh.valid_for_ms > 0, "{fresh:?}");
    assert_eq!(fresh.term, before.term, "{fresh:?}");

    // The stream opened before the flood delivers an event from a renew after this answer.
    let fresh_renewal = renewed_at(&fresh)?;
    tokio::time::timeout(WAIT, async {
        loop {
            let event = watch
                .next()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the watch stream was closed during the abuse"))?;
            let status: LeaderStatus = serde_json::from_str(&event.data)?;
            assert!(status.is_leader, "{status:?}");
            if renewed_at(&status)? > fresh_renewal {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the watch stream delivered no fresh event in {WAIT:?}"))??;

    // The leader keeps renewing (three more renews since the flood started), in the same term.
    if let Some(server) = cluster.in_memory() {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let renews = server
                .audit()
                .iter()
                .filter(|r| {
                    r.resource == "leases"
                        && r.verb == "update"
                        && r.user == leader_name
                        && r.code == 200
                        && r.at_ms >= flood_started_ms
                })
                .count();
            if renews >= 3 {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {renews} renews by {leader_name} since the flood started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let after = sidecars[leader].status().await?;
    assert!(after.is_leader, "{after:?}");
    assert_eq!(after.term, before.term, "no new tenure: {after:?}");

    // The standby still follows the same leader.
    let follower = sidecars[standby].status().await?;
    assert!(!follower.is_leader, "{follower:?}");
    assert_eq!(follower.holder.as_deref(), Some(leader_name.as_str()));
    assert_eq!(follower.term, before.term);

    // The sidecar closed the flood connections it could not hold (at most --max-connections,
    // 1024, stay open), seen from our side.
    let closed = flood.closed_by_server().await;
    eprintln!("idle flood: {closed} closed by the leader so far");

    for s in &mut sidecars {
        assert!(s.try_exit()?.is_none(), "{} exited", s.identity);
    }
    drop((stalled, flood, watch));
    Ok(())
}
