//! `demo`: the local demo, no cluster needed. Two "pods" (a `leader-sidecar` and a
//! `newresource-controller` process each) share one Lease on the in-memory Kubernetes API server
//! started in this process, with the RBAC and CRD of `deploy/base`, and the demo shows what the
//! project promises: one active controller at a time, a crash failover bounded by the lease
//! duration, and a graceful handover in well under a second.
//!
//! ```sh
//! cargo run --profile demo -p tests --bin demo [-- --fast] [--keep-running] [--out FILE.svg]
//! ```
//!
//! 1. builds both binaries (`$CARGO build`, unless `--no-build` or not run by cargo);
//! 2. applies `deploy/base/{namespace,crd,rbac}.yaml`; both pods use one kubeconfig with the
//!    `newresource-system/newresource-controller` service-account token, like real pods;
//! 3. starts `pod-a` (leader API on `127.0.0.1:4040` when free) and `pod-b`;
//! 4. waits for exactly one active controller; 5. creates 10 NewResources and waits for them;
//! 6. `kill -9` the leader's sidecar: the standby takes over when the Lease expires; the killed
//!    sidecar is restarted and must come back as a follower;
//! 7. SIGTERMs the new leader's pod: its controller yields, the other pod takes over at once;
//! 8. prints the timeline of active windows and the figures, writes an SVG and a JSON;
//! 9. with `--keep-running`, restarts the stopped pod and runs until Ctrl-C.

/// `println!` that ignores a closed stdout (`demo | head`): printing must not panic, because a
/// panic in the `lto` profile aborts, and an abort skips the drops that stop the pods'
/// processes.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[path = "../demo/narrate.rs"]
mod narrate;
#[path = "../demo/objects.rs"]
mod objects;
#[path = "../demo/report.rs"]
mod report;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use newresource_controller::crd::NewResource;
use testkit::apiserver::{ApiServer, Config};
use testkit::cli;
use testkit::cluster::TempDir;
use testkit::controller::{WINDOW_STARTED, check_no_overlap};
use testkit::newresources;
use testkit::pod::{Pod, PodSpec};
use testkit::process::timestamp;
use testkit::sidecar::{FAST_TIMINGS, Sidecar, SidecarSpec};
use testkit::timeline::{Mark, Span, Timeline};

use narrate::{Narrator, secs};
use report::{ExitCodes, Figures, PodWindows};

/// The local demo: two pods, one Lease, a crash failover and a graceful handover, on an
/// in-memory Kubernetes API server.
#[derive(Debug, Parser)]
#[command(name = "demo")]
struct Args {
    /// Short election timings (3 s lease, 2 s renew deadline, 500 ms retry period) instead of
    /// the sidecar's defaults (15 s, 10 s, 2 s); for tests.
    #[arg(long, env = "DEMO_FAST", value_parser = clap::builder::FalseyValueParser::new())]
    fast: bool,
    /// Do not run `cargo build` for leader-sidecar and newresource-controller first; use the
    /// binaries next to the demo as they are.
    #[arg(long, env = "DEMO_NO_BUILD", value_parser = clap::builder::FalseyValueParser::new())]
    no_build: bool,
    /// Where to write the timeline SVG; `timeline.json` is written next to it.
    #[arg(long, env = "DEMO_OUT", default_value = "target/demo/timeline.svg")]
    out: PathBuf,
    /// After the demo, restart the stopped pod and keep everything running until Ctrl-C, to
    /// try kubectl and curl against it.
    #[arg(long, env = "DEMO_KEEP_RUNNING", value_parser = clap::builder::FalseyValueParser::new())]
    keep_running: bool,
}

/// The Lease both sidecars compete for, and the service account both pods run as (as in
/// `deploy/base/rbac.yaml`).
const NAMESPACE: &str = "newresource-system";
const LEASE: &str = "newresource-controller";
const SERVICE_ACCOUNT: &str = "newresource-controller";
/// The port the README's `curl localhost:4040/leader` talks to.
const DEMO_PORT: u16 = 4040;
/// The namespace of the demo's NewResources.
const OBJECTS_NAMESPACE: &str = "demo";
/// Upper bound of waits that do not depend on the election timings (a hung demo fails
/// instead of hanging).
const WAIT: Duration = Duration::from_secs(30);

const MANIFESTS: [(&str, &str); 3] = [
    (
        "namespace.yaml",
        include_str!("../../../deploy/base/namespace.yaml"),
    ),
    ("crd.yaml", include_str!("../../../deploy/base/crd.yaml")),
    ("rbac.yaml", include_str!("../../../deploy/base/rbac.yaml")),
];

/// Read access for anonymous users, granted only with `--keep-running`: kubectl (client-go)
/// sends no credentials over plain HTTP (kubernetes/kubectl#744), so against this server it is
/// always `system:anonymous`, which RBAC would otherwise refuse even discovery.
const ANONYMOUS_VIEWER: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: demo-anonymous-viewer
rules:
  - nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]
    verbs: ["get"]
  - apiGroups: ["", "coordination.k8s.io", "apps.newresource.com", "events.k8s.io"]
    resources: ["namespaces", "leases", "newresources", "events"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: demo-anonymous-viewer
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: demo-anonymous-viewer
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:unauthenticated
"#;

/// The election timings the sidecars run with.
struct Timings {
    flags: Vec<String>,
    lease: Duration,
    renew_deadline: Duration,
}

impl Timings {
    fn of(fast: bool) -> Self {
        if fast {
            Timings {
                flags: FAST_TIMINGS.map(String::from).into(),
                lease: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
            }
        } else {
            // The sidecar's defaults, passed as nothing so that the demo shows the real thing.
            Timings {
                flags: Vec::new(),
                lease: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit();
    testkit::bins::run_tool("demo", run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let timings = Timings::of(args.fast);
    say!(
        "leader-sidecar demo: two pods, one Lease, an in-memory Kubernetes API server \
         (lease duration {} s)",
        timings.lease.as_secs()
    );
    let demo = async {
        if !args.no_build {
            build().await?;
        }
        // Time 0 is after the build, which is not part of the story.
        scenario(&args, Narrator::new(), &timings).await
    };
    let mut finished = tokio::select! {
        result = demo => result?,
        // Dropping the scenario drops its pods (and a running cargo), whose processes are
        // killed on drop: an interrupted (or, in a test, timed-out and SIGTERMed) demo leaves
        // no process behind.
        () = cli::shutdown_signal() => anyhow::bail!("interrupted"),
    };
    if args.keep_running {
        finished.keep_running(&timings).await?;
    }
    if finished.problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("demo: {}", finished.problems.join("; "));
    Ok(ExitCode::FAILURE)
}

/// Step 1, first half: `$CARGO build` of the two binaries, with the demo's own profile so that
/// a release demo runs release binaries (and an `lto` one, `lto` binaries). Without `CARGO` (the demo was not started by
/// cargo) there is nothing to build with, and the binaries must already be there.
async fn build() -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let profile = testkit::bins::own_profile().unwrap_or_else(|| "dev".to_owned());
    say!(
        "building leader-sidecar and newresource-controller ...{}",
        if profile == "dev" {
            String::new()
        } else {
            format!(" ({profile})")
        }
    );
    let mut command = tokio::process::Command::new(cargo);
    command
        // `-p tests` too, although only the two binaries are built: cargo unifies dependency
        // features over the packages named, so this resolves exactly as the `cargo run -p tests`
        // that started us did and reuses every dependency it built, instead of building most
        // of them again with other features.
        .args([
            "build",
            "--quiet",
            "-p",
            "tests",
            "-p",
            "leader-sidecar",
            "-p",
            "newresource-controller",
            "--bin",
            "leader-sidecar",
            "--bin",
            "newresource-controller",
        ])
        // The workspace, wherever the demo was started from.
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true);
    command.args(["--profile", &profile]);
    let status = command.status().await.context("cannot run cargo")?;
    anyhow::ensure!(
        status.success(),
        "cargo build -p leader-sidecar -p newresource-controller failed ({status})"
    );
    Ok(())
}

/// Whether `127.0.0.1:port` can be bound right now (a probe; the listener is closed at once).
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}

fn pod_spec(
    name: &str,
    kubeconfig: &std::path::Path,
    listen: Option<SocketAddr>,
    timings: &Timings,
) -> PodSpec {
    let mut sidecar =
        SidecarSpec::new(kubeconfig, NAMESPACE, LEASE, name).args(timings.flags.iter().cloned());
    sidecar.listen = listen;
    PodSpec {
        name: name.to_owned(),
        sidecar,
        controller_kubeconfig: kubeconfig.to_owned(),
        controller_args: Vec::new(),
    }
}

/// Starts a pod; if its fixed leader API port was taken between the probe and the start
/// (another demo, a test), starts it on any free port instead.
async fn start_pod(spec: &PodSpec) -> anyhow::Result<Pod> {
    match Pod::start(spec.clone()).await {
        Ok(pod) => Ok(pod),
        Err(_) if spec.sidecar.listen.is_some() => {
            let mut any_port = spec.clone();
            any_port.sidecar.listen = None;
            Pod::start(any_port)
                .await
                .with_context(|| format!("cannot start {}", spec.name))
        }
        Err(e) => Err(e).with_context(|| format!("cannot start {}", spec.name)),
    }
}

/// `0`, or `signal 9` for a process killed by a signal.
fn exit_text(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

fn term_text(term: Option<i32>) -> String {
    term.map_or_else(|| "?".to_owned(), |t| t.to_string())
}

/// Waits until a controller has logged its first active window; fails if both have (two
/// active controllers is exactly what must never happen).
async fn first_active(pods: &[Pod], timeout: Duration) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let active: Vec<usize> = (0..pods.len())
            .filter(|&i| !pods[i].controller.logs_with(WINDOW_STARTED).is_empty())
            .collect();
        match active[..] {
            [one] => return Ok(one),
            [] => {}
            _ => anyhow::bail!("more than one controller became active"),
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no controller became active within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `pod`'s controller to log its next "active window started" after the `before`
/// it had logged; returns that line's timestamp and term.
async fn next_active(
    pod: &Pod,
    before: usize,
    timeout: Duration,
) -> anyhow::Result<(Timestamp, Option<i64>)> {
    let lines = pod
        .controller
        .wait_logs(WINDOW_STARTED, before + 1, timeout)
        .await?;
    let line = lines
        .get(before)
        .context("the awaited log line is missing")?;
    let at = timestamp(line).with_context(|| format!("no timestamp in {line}"))?;
    Ok((at, line["fields"]["term"].as_i64()))
}

/// Waits until `pod`'s controller is ready (it reaches its sidecar) and holds the sidecar's
/// `/leader/watch` stream again, as after a sidecar restart. Until then the controller polls
/// (every second), and a handover started earlier would measure that poll, not the handover;
/// a rolling update, too, waits for the new pod to be ready before stopping the old one.
async fn reconnected(pod: &Pod, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ready = pod
            .controller
            .probe("/readyz")
            .await
            .is_ok_and(|c| c == 200);
        if ready && watchers(&pod.sidecar).await.is_some_and(|w| w >= 1.0) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not ready with a /leader/watch stream within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sidecar's `leader_sidecar_watchers` gauge (open `/leader/watch` streams).
async fn watchers(sidecar: &Sidecar) -> Option<f64> {
    let text = sidecar.metrics().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("leader_sidecar_watchers "))
        .and_then(|v| v.trim().parse().ok())
}

/// What the scenario leaves behind: the running pods (for `--keep-running`) and anything that
/// went wrong without stopping the demo (an overlap, an unclean exit), which makes it exit 1.
/// Pods come first so that they are stopped before the API server.
struct Finished {
    pods: Vec<Pod>,
    specs: Vec<PodSpec>,
    /// The pod stopped by SIGTERM in step 7.
    stopped: usize,
    problems: Vec<String>,
    narrator: Narrator,
    server: ApiServer,
    _kubeconfig_dir: TempDir,
}

async fn scenario(args: &Args, narrator: Narrator, timings: &Timings) -> anyhow::Result<Finished> {
    let n = &narrator;
    // 1. Binaries.
    let sidecar_bin = testkit::bins::try_binary("leader-sidecar")?;
    let controller_bin = testkit::bins::try_binary("newresource-controller")?;
    n.step(
        1,
        format!(
            "binaries: {} and {}",
            sidecar_bin.display(),
            controller_bin.display()
        ),
    );

    // 2. The API server, deploy/base, and the pods' credentials.
    let server = ApiServer::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await
    .context("cannot start the in-memory API server")?;
    let admin = server.admin_client();
    let mut applied = 0;
    for (file, yaml) in MANIFESTS {
        applied += testkit::manifests::create_all(&admin, yaml)
            .await
            .with_context(|| format!("cannot apply deploy/base/{file}"))?
            .len();
    }
    let token = server.service_account_token(NAMESPACE, SERVICE_ACCOUNT);
    let dir = TempDir::new("newresource-demo").context("cannot create a temporary directory")?;
    let kubeconfig = dir.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, &token)
        .context("cannot write the pods' kubeconfig")?;
    n.step(
        2,
        format!(
            "in-memory API server on {} with RBAC; applied deploy/base/{{namespace,crd,rbac}}.yaml \
             ({applied} objects)",
            server.url()
        ),
    );

    // 3. Two pods, both with the service account's token.
    let fixed = port_is_free(DEMO_PORT).then(|| SocketAddr::from(([127, 0, 0, 1], DEMO_PORT)));
    let specs = vec![
        pod_spec("pod-a", &kubeconfig, fixed, timings),
        pod_spec("pod-b", &kubeconfig, None, timings),
    ];
    let mut pods = Vec::new();
    for spec in &specs {
        pods.push(start_pod(spec).await?);
    }
    n.step(
        3,
        format!(
            "started pod-a (leader API {}) and pod-b (leader API {}), each a leader-sidecar and a \
             newresource-controller, as service account {NAMESPACE}/{SERVICE_ACCOUNT}",
            pods[0].sidecar.api, pods[1].sidecar.api
        ),
    );

    // 4. Exactly one leader.
    let l = first_active(&pods, WAIT).await?;
    let o = 1 - l;
    let (leader, other) = (pods[l].name.clone(), pods[o].name.clone());
    let lead = pods[l]
        .sidecar
        .wait_status(WAIT, |s| s.is_leader)
        .await
        .with_context(|| {
            format!("{leader}'s controller is active but its sidecar is not leader")
        })?;
    let follow = pods[o]
        .sidecar
        .wait_status(WAIT, |s| s.holder.is_some())
        .await
        .with_context(|| format!("{other}'s sidecar never saw the Lease holder"))?;
    anyhow::ensure!(!follow.is_leader, "both sidecars say they are leader");
    n.step(
        4,
        format!(
            "{leader} leads: GET /leader on {leader} says is_leader=true, holder {}, term {}; \
             on {other}: is_leader=false, holder {}",
            lead.holder.as_deref().unwrap_or("-"),
            term_text(lead.term),
            follow.holder.as_deref().unwrap_or("-"),
        ),
    );

    // 5. Work for the leader.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(OBJECTS_NAMESPACE.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .context("cannot create namespace demo")?;
    let objects: Api<NewResource> = Api::namespaced(admin.clone(), OBJECTS_NAMESPACE);
    let first = newresources::names("nr", 1..=10);
    let started = tokio::time::Instant::now();
    newresources::create(&objects, &first).await?;
    newresources::wait_ready(&objects, &first, WAIT).await?;
    n.step(
        5,
        format!(
            "created {} NewResources in namespace {OBJECTS_NAMESPACE} ({}); all ready after {:.2} s",
            first.len(),
            objects::range_label(&first),
            started.elapsed().as_secs_f64()
        ),
    );

    // 6. Crash: kill -9 the leader's sidecar. Nobody can release the Lease now; the standby
    //    takes it once it has seen no renewal for the lease duration.
    let other_starts = pods[o].controller.logs_with(WINDOW_STARTED).len();
    let kill_at = Timestamp::now();
    pods[l]
        .sidecar
        .signal(libc::SIGKILL)
        .with_context(|| format!("cannot kill {leader}'s sidecar"))?;
    n.step(
        6,
        format!(
            "kill -9 {leader}'s sidecar: {other} must wait for the Lease to expire ({} s)",
            timings.lease.as_secs()
        ),
    );
    let during = newresources::names("nr", 11..=15);
    let created = tokio::time::Instant::now();
    newresources::create(&objects, &during).await?;
    n.note(format!(
        "created {} during the failover",
        objects::range_label(&during)
    ));
    let (failover_to, term) = next_active(&pods[o], other_starts, timings.lease + WAIT)
        .await
        .with_context(|| format!("{other} did not take over after the crash"))?;
    let failover_ms = testkit::timeline::ms_since(kill_at, failover_to);
    n.note(format!(
        "{other}'s controller active (term {}) {} after the kill",
        term_text(term.and_then(|t| i32::try_from(t).ok())),
        secs(failover_ms)
    ));
    newresources::wait_ready(&objects, &during, WAIT).await?;
    n.note(format!(
        "{} ready, {:.2} s after they were created",
        objects::range_label(&during),
        created.elapsed().as_secs_f64()
    ));
    // Reap the killed process first, so that its port is free for the new one.
    pods[l]
        .sidecar
        .wait_exit(WAIT)
        .await
        .with_context(|| format!("{leader}'s killed sidecar did not exit"))?;
    pods[l]
        .restart_sidecar()
        .await
        .with_context(|| format!("cannot restart {leader}'s sidecar"))?;
    let restarted_at = Timestamp::now();
    let back = pods[l]
        .sidecar
        .wait_status(WAIT, |s| s.holder.is_some())
        .await
        .with_context(|| format!("{leader}'s restarted sidecar never saw the Lease holder"))?;
    anyhow::ensure!(
        !back.is_leader && back.holder.as_deref() == Some(other.as_str()),
        "{leader}'s restarted sidecar should follow {other}, but says {back:?}"
    );
    n.note(format!(
        "{leader}'s sidecar restarted (as the kubelet would) on {}: is_leader=false, holder {}",
        pods[l].sidecar.api, other
    ));
    reconnected(&pods[l], WAIT)
        .await
        .with_context(|| format!("{leader}'s controller did not reconnect to its sidecar"))?;
    n.note(format!(
        "{leader}'s controller reconnected: ready, holding /leader/watch"
    ));

    // 7. Graceful handover: SIGTERM both containers of the leading pod together, as the kubelet
    //    does; the controller stops its workers, then yields, and the sidecar releases at once.
    let leader_starts = pods[l].controller.logs_with(WINDOW_STARTED).len();
    let sigterm_at = Timestamp::now();
    pods[o].controller.signal(libc::SIGTERM)?;
    pods[o].sidecar.signal(libc::SIGTERM)?;
    n.step(
        7,
        format!("SIGTERM {other}'s controller and sidecar together (like a rolling update)"),
    );
    let (handover_to, term) = next_active(
        &pods[l],
        leader_starts,
        timings.lease + timings.renew_deadline + WAIT,
    )
    .await
    .with_context(|| format!("{leader} did not take over after {other} was stopped"))?;
    let handover_ms = testkit::timeline::ms_since(sigterm_at, handover_to);
    n.note(format!(
        "{leader}'s controller active (term {}) {} after SIGTERM",
        term_text(term.and_then(|t| i32::try_from(t).ok())),
        secs(handover_ms)
    ));
    let mut problems = Vec::new();
    let stopping = &mut pods[o];
    let exit_wait = timings.lease + WAIT;
    let (controller_exit, sidecar_exit) = tokio::join!(
        stopping.controller.wait_exit(exit_wait),
        stopping.sidecar.wait_exit(exit_wait)
    );
    let controller_exit =
        controller_exit.with_context(|| format!("{other}'s controller did not exit"))?;
    let sidecar_exit = sidecar_exit.with_context(|| format!("{other}'s sidecar did not exit"))?;
    n.note(format!(
        "{other} exited: controller {}, sidecar {}",
        exit_text(&controller_exit),
        exit_text(&sidecar_exit)
    ));
    for (what, status) in [("controller", controller_exit), ("sidecar", sidecar_exit)] {
        if !status.success() {
            problems.push(format!(
                "{other}'s {what} exited with {} after SIGTERM (expected 0)",
                exit_text(&status)
            ));
        }
    }
    let after = newresources::names("nr", 16..=18);
    let created = tokio::time::Instant::now();
    newresources::create(&objects, &after).await?;
    newresources::wait_ready(&objects, &after, WAIT).await?;
    n.note(format!(
        "created {}: ready after {:.2} s",
        objects::range_label(&after),
        created.elapsed().as_secs_f64()
    ));

    // 8. The timeline. The stopped pod's controller has exited, but its logs stay with its
    //    process handle, which is still here.
    let windows = pods
        .iter()
        .map(|p| {
            Ok(PodWindows {
                pod: p.name.clone(),
                windows: p
                    .controller
                    .windows()
                    .with_context(|| format!("{}'s active windows", p.name))?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let by_pod: Vec<(&str, Vec<_>)> = windows
        .iter()
        .map(|w| (w.pod.as_str(), w.windows.clone()))
        .collect();
    if let Err(e) = check_no_overlap(&by_pod) {
        problems.push(format!("{e:#}"));
    }
    let timeline = Timeline {
        title: format!(
            "leader-sidecar demo: crash failover and graceful handover ({} s lease)",
            timings.lease.as_secs()
        ),
        lanes: windows.iter().map(|w| report::lane(n, w)).collect(),
        marks: vec![
            Mark {
                at_ms: n.ms(kill_at),
                label: format!("kill -9 {leader} sidecar"),
                lane: Some(l),
            },
            Mark {
                at_ms: n.ms(restarted_at),
                label: "sidecar restarted".to_owned(),
                lane: Some(l),
            },
            Mark {
                at_ms: n.ms(sigterm_at),
                label: format!("SIGTERM {other}"),
                lane: Some(o),
            },
        ],
        spans: vec![
            Span {
                from_ms: n.ms(kill_at),
                to_ms: n.ms(failover_to),
                label: "failover".to_owned(),
            },
            Span {
                from_ms: n.ms(sigterm_at),
                to_ms: n.ms(handover_to),
                label: "handover".to_owned(),
            },
        ],
    };
    let overlap = report::overlaps(&timeline);
    n.step(8, "timeline (seconds since the demo started):");
    say!("{}", timeline.to_text().trim_end());
    say!();
    say!(
        "crash failover (kill -9 → standby active): {}   (lease duration {} s)",
        secs(failover_ms),
        timings.lease.as_secs()
    );
    say!(
        "graceful handover (SIGTERM → standby active): {}",
        secs(handover_ms)
    );
    if overlap.is_empty() {
        say!("active windows overlapping: none");
    } else {
        for o in &overlap {
            say!(
                "active windows overlapping: {} and {} from {:+.3} s to {:+.3} s",
                o.lanes[0],
                o.lanes[1],
                o.from_ms / 1000.0,
                o.to_ms / 1000.0
            );
        }
        problems.push("active windows overlap".to_owned());
    }
    let figures = Figures {
        timeline: &timeline,
        started_at: n.t0,
        lease_duration_ms: timings.lease.as_secs_f64() * 1000.0,
        failover_ms,
        handover_ms,
        overlap,
        exit_codes: ExitCodes {
            controller: controller_exit.code(),
            sidecar: sidecar_exit.code(),
        },
    };
    let json = report::write(&args.out, &figures)?;
    say!("wrote {} and {}", args.out.display(), json.display());

    Ok(Finished {
        narrator,
        pods,
        specs,
        stopped: o,
        problems,
        server,
        _kubeconfig_dir: dir,
    })
}

impl Finished {
    /// Step 9: both pods running again, until Ctrl-C.
    async fn keep_running(&mut self, timings: &Timings) -> anyhow::Result<()> {
        let n = &self.narrator;
        let stopped = &self.specs[self.stopped];
        self.pods[self.stopped] = start_pod(stopped).await?;
        n.step(
            9,
            format!("restarted {}; both pods keep running. Try:", stopped.name),
        );
        testkit::manifests::create_all(&self.server.admin_client(), ANONYMOUS_VIEWER)
            .await
            .context("cannot grant read access for kubectl")?;
        let url = self.server.url();
        say!("  kubectl --server {url} get lease -n {NAMESPACE}");
        say!("  kubectl --server {url} get newresources -A");
        say!("  kubectl --server {url} describe lease -n {NAMESPACE} {LEASE}");
        for pod in &self.pods {
            say!(
                "  curl -s localhost:{}/leader        # {}",
                pod.sidecar.api.port(),
                pod.name
            );
        }
        say!(
            "(kubectl sends no token over plain HTTP, so anonymous users may read here; the \
             admin token, for curl -H 'Authorization: Bearer ...', is {})",
            self.server.admin_token()
        );
        say!("Ctrl-C stops everything.");
        cli::shutdown_signal().await;
        say!();
        n.note("stopping both pods");
        // A Ctrl-C in the terminal reached the children too; signalling one that is already
        // gone fails, which is fine.
        for pod in &self.pods {
            let _ = pod.controller.signal(libc::SIGTERM);
            let _ = pod.sidecar.signal(libc::SIGTERM);
        }
        let wait = timings.lease + WAIT;
        for pod in &mut self.pods {
            let _ = pod.controller.wait_exit(wait).await;
            let _ = pod.sidecar.wait_exit(wait).await;
        }
        n.note("stopped");
        Ok(())
    }
}
