//! Pods of real processes (a `leader-sidecar` and a `newresource-controller` each) against the
//! in-memory API server, or the real cluster (see `testkit::cluster`): only the leader's
//! controller writes status, a killed sidecar's controller stops and the other takes over, a
//! SIGTERM hands over through the yield, and the logged active windows never overlap.
//!
//! Waits are conditions with generous upper bounds, never fixed sleeps; durations are measured
//! by the demo and the bench, not asserted here.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use newresource_controller::crd::NewResource;
use testkit::cluster::TestCluster;
use testkit::controller::{
    ActiveWindow, ControllerProcess, ControllerSpec, WINDOW_ENDED, WINDOW_STARTED,
    check_no_overlap, check_writes_inside_windows, status_writes,
};
use testkit::newresources;
use testkit::pod::{Pod, PodSpec};
use testkit::sidecar::{FAST_TIMINGS, LONG_LEASE_TIMINGS, SidecarSpec};

const WAIT: Duration = Duration::from_secs(60);

/// Starts pods whose sidecars compete for `lease` and whose controllers watch only this test's
/// namespace. Each process gets its own API user (`<pod>-sidecar`, `<pod>-controller`).
async fn start_pods(
    cluster: &TestCluster,
    lease: &str,
    names: &[&str],
    sidecar_args: &[&str],
) -> anyhow::Result<Vec<Pod>> {
    let mut pods = Vec::new();
    for name in names {
        let (sidecar_kc, _) = cluster.client_kubeconfig(&format!("{name}-sidecar"))?;
        let (controller_kc, _) = cluster.client_kubeconfig(&format!("{name}-controller"))?;
        let spec = PodSpec {
            name: (*name).to_owned(),
            sidecar: SidecarSpec::new(&sidecar_kc, cluster.namespace(), lease, name)
                .args(sidecar_args.iter().copied()),
            controller_kubeconfig: controller_kc,
            controller_args: vec!["--namespace".into(), cluster.namespace().into()],
        };
        pods.push(Pod::start(spec).await?);
    }
    Ok(pods)
}

/// Waits until one of `pods` has logged its `n`-th window start; returns its index.
async fn nth_window_started(pods: &[&Pod], n: &[usize]) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for (i, pod) in pods.iter().enumerate() {
            if pod.controller.logs_with(WINDOW_STARTED).len() >= n[i] {
                return Ok(i);
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no controller became active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_objects(api: &Api<NewResource>, prefix: &str, n: usize) -> anyhow::Result<()> {
    newresources::create(api, &newresources::names(prefix, 0..n)).await
}

/// Waits until every object `<prefix>-00..` is ready for its current generation.
async fn wait_ready(api: &Api<NewResource>, prefix: &str, n: usize) -> anyhow::Result<()> {
    newresources::wait_ready(api, &newresources::names(prefix, 0..n), WAIT)
        .await
        .map(drop)
}

/// Waits until a probe answers `code`.
async fn wait_probe(c: &ControllerProcess, path: &str, code: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = c.probe(path).await?;
        if got == code {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} {path}: {got}, expected {code}",
            c.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_killed_leader_fails_over() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    newresources::install_crd(&cluster.client()).await?;
    let mut pods = start_pods(&cluster, "nr", &["pod-a", "pod-b"], &FAST_TIMINGS).await?;
    let leader = nth_window_started(&[&pods[0], &pods[1]], &[1, 1]).await?;
    let standby = 1 - leader;
    let api: Api<NewResource> = Api::namespaced(cluster.client(), cluster.namespace());

    create_objects(&api, "first", 50).await?;
    wait_ready(&api, "first", 50).await?;

    // Only the leader's controller wrote; the standby is ready, idle and reports 0.
    if let Some(server) = cluster.in_memory() {
        let audit = server.audit();
        let writers: std::collections::BTreeSet<&str> = status_writes(&audit)
            .iter()
            .map(|r| r.user.as_str())
            .collect();
        let expected = format!("{}-controller", pods[leader].name);
        assert_eq!(writers, [expected.as_str()].into());
    }
    let leader_metrics = pods[leader].controller.metrics_text().await?;
    let standby_metrics = pods[standby].controller.metrics_text().await?;
    let success = r#"controller_reconcile_total{controller="newresource",result="success"}"#;
    assert!(metric(&leader_metrics, success).unwrap_or(0.0) >= 50.0);
    assert_eq!(metric(&standby_metrics, success), Some(0.0));
    assert_eq!(
        metric(
            &leader_metrics,
            r#"controller_leader{controller="newresource"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &standby_metrics,
            r#"controller_leader{controller="newresource"}"#
        ),
        Some(0.0)
    );
    for pod in &pods {
        assert_eq!(
            pod.controller.probe("/readyz").await?,
            200,
            "{} ready",
            pod.name
        );
        assert_eq!(pod.controller.probe("/healthz").await?, 200);
    }
    assert!(pods[leader].controller.logs_with("Starting workers").len() == 1);
    assert!(
        pods[standby]
            .controller
            .logs_with("Starting workers")
            .is_empty()
    );

    // Kill -9 the leading sidecar: its controller loses the stream and stops at once; the
    // standby's sidecar takes the Lease once it expires, and its controller takes over.
    pods[leader].sidecar.signal(libc::SIGKILL)?;
    pods[leader].controller.wait_log(WINDOW_ENDED, WAIT).await?;
    pods[leader]
        .controller
        .wait_log("Stopping workers", WAIT)
        .await?;
    create_objects(&api, "second", 10).await?;
    pods[standby]
        .controller
        .wait_log(WINDOW_STARTED, WAIT)
        .await?;
    wait_ready(&api, "second", 10).await?;

    // The kubelet restarts the dead sidecar: it follows, and so does its controller.
    pods[leader].restart_sidecar().await?;
    let status = pods[leader]
        .sidecar
        .wait_status(WAIT, |s| {
            s.holder.as_deref() == Some(pods[standby].name.as_str())
        })
        .await?;
    assert!(!status.is_leader);
    // Its controller reconnects (it retries every poll interval) and is ready again.
    wait_probe(&pods[leader].controller, "/readyz", 200).await?;

    let windows = [
        (
            format!("{}-controller", pods[0].name),
            pods[0].controller.windows()?,
        ),
        (
            format!("{}-controller", pods[1].name),
            pods[1].controller.windows()?,
        ),
    ];
    let named: Vec<(&str, Vec<ActiveWindow>)> = windows
        .iter()
        .map(|(n, w)| (n.as_str(), w.clone()))
        .collect();
    check_no_overlap(&named)?;
    assert_eq!(named[leader].1.len(), 1, "{named:?}");
    assert_eq!(named[standby].1.len(), 1, "{named:?}");
    assert!(
        named[standby].1[0].term > named[leader].1[0].term,
        "the new window has a higher term: {named:?}"
    );
    if let Some(server) = cluster.in_memory() {
        let n = check_writes_inside_windows(&server.audit(), &named)?;
        assert!(n >= 60, "{n} status writes");
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_hands_over_through_the_yield() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    newresources::install_crd(&cluster.client()).await?;
    // A 60 s lease: a takeover within the wait below can only come from the release.
    let mut pods = start_pods(&cluster, "nr", &["pod-a", "pod-b"], &LONG_LEASE_TIMINGS).await?;
    let leader = nth_window_started(&[&pods[0], &pods[1]], &[1, 1]).await?;
    let standby = 1 - leader;
    let api: Api<NewResource> = Api::namespaced(cluster.client(), cluster.namespace());
    create_objects(&api, "before", 5).await?;
    wait_ready(&api, "before", 5).await?;

    // The kubelet sends SIGTERM to both containers of the pod at once.
    pods[leader].controller.signal(libc::SIGTERM)?;
    pods[leader].sidecar.signal(libc::SIGTERM)?;
    pods[standby]
        .controller
        .wait_log(WINDOW_STARTED, Duration::from_secs(30))
        .await?;
    let controller_exit = pods[leader].controller.wait_exit(WAIT).await?;
    let sidecar_exit = pods[leader].sidecar.wait_exit(WAIT).await?;
    assert!(controller_exit.success(), "controller: {controller_exit}");
    assert!(sidecar_exit.success(), "sidecar: {sidecar_exit}");
    pods[leader]
        .controller
        .wait_log("Stopping workers", WAIT)
        .await?;
    pods[leader]
        .controller
        .wait_log("newresource-controller stopped", WAIT)
        .await?;

    create_objects(&api, "after", 5).await?;
    wait_ready(&api, "after", 5).await?;

    let named: Vec<(&str, Vec<ActiveWindow>)> = vec![
        ("pod-a-controller", pods[0].controller.windows()?),
        ("pod-b-controller", pods[1].controller.windows()?),
    ];
    check_no_overlap(&named)?;
    assert!(named[leader].1.iter().all(|w| w.end.is_some()), "{named:?}");
    if let Some(server) = cluster.in_memory() {
        check_writes_inside_windows(&server.audit(), &named)?;
    }
    Ok(())
}

#[tokio::test]
async fn without_leader_election_it_reconciles_alone_and_writes_only_changes() -> anyhow::Result<()>
{
    let cluster = TestCluster::start().await?;
    newresources::install_crd(&cluster.client()).await?;
    let (kubeconfig, _) = cluster.client_kubeconfig("solo-controller")?;
    let controller = ControllerProcess::spawn(
        ControllerSpec::new("solo", &kubeconfig, None).args(["--namespace", cluster.namespace()]),
    )
    .await?;
    let api: Api<NewResource> = Api::namespaced(cluster.client(), cluster.namespace());
    create_objects(&api, "solo", 3).await?;
    wait_ready(&api, "solo", 3).await?;

    // A spec change bumps the generation; the status follows it.
    api.patch(
        "solo-01",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"foo": "changed"}})),
    )
    .await?;
    wait_ready(&api, "solo", 3).await?;
    let changed = api.get("solo-01").await?;
    assert_eq!(changed.metadata.generation, Some(2));

    let windows = controller.windows()?;
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].term, None);
    assert_eq!(controller.probe("/readyz").await?, 200);
    if let Some(server) = cluster.in_memory() {
        // Three objects, one of them at two generations: four writes, none while unchanged.
        let audit = server.audit();
        let writes = status_writes(&audit);
        assert_eq!(writes.len(), 4, "{writes:#?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_controller_without_its_sidecar_is_not_ready_and_never_active() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    newresources::install_crd(&cluster.client()).await?;
    let (kubeconfig, _) = cluster.client_kubeconfig("orphan-controller")?;
    // A port nobody listens on: bound and released by the OS for us.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let controller = ControllerProcess::spawn(
        ControllerSpec::new("orphan", &kubeconfig, Some(closed)).args([
            "--namespace",
            cluster.namespace(),
            "--leader-poll-interval",
            "100ms",
        ]),
    )
    .await?;
    controller
        .wait_log("connected to the Kubernetes API", WAIT)
        .await?;
    assert_eq!(controller.probe("/readyz").await?, 503);
    assert_eq!(controller.probe("/healthz").await?, 200);
    assert!(controller.logs_with(WINDOW_STARTED).is_empty());
    Ok(())
}
