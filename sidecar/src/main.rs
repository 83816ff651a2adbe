//! `leader-sidecar`: holds a `coordination.k8s.io/v1` Lease and serves leadership to the local
//! controller on `127.0.0.1:4040`, with probes and metrics on `0.0.0.0:4041`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use leader_sidecar::config::{Args, Settings, lease_namespace};
use leader_sidecar::elector::{Command, Elector};
use leader_sidecar::http::{self, Api, SidecarProbes};
use leader_sidecar::leadership::Leadership;
use leader_sidecar::lease_api::LeaseApi;
use leader_sidecar::metrics::Metrics;
use leader_sidecar::pod_label::PodLabeller;
use leader_sidecar::rlimit;
use leader_sidecar::runner::{self, Runner, StandbyWatch};
use plumbing::heartbeat::Heartbeat;
use plumbing::probes::AdminPort;
use plumbing::{cli, server};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit();
    let settings = args.validate().unwrap_or_else(|e| cli::exit_usage(&e));
    cli::init_tracing(settings.log_format);
    // The elector, its Kubernetes client and the signal handling run on this thread; the HTTP
    // servers get a thread of their own (`spawn_http`), so that no amount of HTTP load can
    // delay a renew, and the whole process stays at two threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    cli::run_main(runtime, run(settings))
}

/// Listen backlog: connections the kernel completes and queues until we accept them. Std's 128
/// overflows when a local process opens connections in bursts faster than the accept loop
/// takes them; the kernel then drops SYNs, and a controller connecting at that moment waits
/// for its SYN retransmit (1 s, then 3 s), longer than a grant. The kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: i32 = 4096;

fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<std::net::TcpListener> {
    let listen = || -> std::io::Result<std::net::TcpListener> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // As std does: a restarted sidecar can bind while old connections are in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    listen().with_context(|| format!("cannot listen on {addr} ({flag})"))
}

/// Serves the leader API and the admin port on a thread and runtime of their own. Everything
/// that can fail happens here, before the thread starts, so that a failure takes the normal
/// path out of `run` (nothing is held yet); the thread itself only serves, forever.
fn spawn_http(
    api_listener: std::net::TcpListener,
    api: Api,
    admin_listener: std::net::TcpListener,
    admin: AdminPort,
    max_connections: usize,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    // The listeners must be registered with the runtime that serves them.
    let (api_listener, admin_listener) = {
        let _in_http_runtime = runtime.enter();
        (
            TcpListener::from_std(api_listener).context("cannot serve --listen")?,
            TcpListener::from_std(admin_listener).context("cannot serve --admin-listen")?,
        )
    };
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let api_server = server::serve(
                    api_listener,
                    max_connections,
                    http::api_send_buffer(),
                    move |req| api.clone().handle(req),
                );
                let admin_server =
                    server::serve(admin_listener, max_connections, None, move |req| {
                        admin.clone().handle(req)
                    });
                tokio::join!(api_server, admin_server);
            });
        })
        .context("cannot start the HTTP thread")?;
    Ok(())
}

async fn kube_config(settings: &Settings) -> anyhow::Result<kube::Config> {
    let mut config = plumbing::kubernetes::config(settings.kubeconfig.as_deref()).await?;
    // Our own timeouts bound every request so that it fits in the renew deadline; kube's
    // automatic retries of 429/503/504 would stretch a renew past it.
    config.default_retry = false;
    config.connect_timeout = Some(settings.api_timeout);
    config.read_timeout = None;
    Ok(config)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let config = kube_config(&settings).await?;
    let namespace = lease_namespace(
        settings.lease_namespace.as_deref(),
        &config.default_namespace,
    );
    let pod_namespace = settings
        .pod_role_label
        .as_ref()
        .and_then(|l| l.namespace.clone())
        .unwrap_or_else(|| lease_namespace(None, &config.default_namespace));
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    let lease_ref = format!("{namespace}/{}", settings.lease_name);

    // Every connection is a file descriptor: raise the soft limit to the hard one (as Go's
    // runtime does) and keep --max-connections within it, so that accept never fails with
    // EMFILE (see leader_sidecar::rlimit). Warnings come after the startup line, which tools
    // expect first.
    let raised = rlimit::raise_nofile();
    let requested = settings.max_connections;
    let max_connections = match &raised {
        Ok(r) => requested.min(rlimit::connections_allowed(r.limits.soft)),
        Err(_) => requested,
    };
    let api_listener = bind(settings.listen, "--listen")?;
    let admin_listener = bind(settings.admin_listen, "--admin-listen")?;
    tracing::info!(
        identity = %settings.identity,
        lease = %lease_ref,
        listen = %api_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        max_connections,
        open_files_limit = raised.as_ref().ok().map(|r| r.limits.soft),
        "leader-sidecar starting"
    );
    match &raised {
        Err(e) => tracing::warn!(
            error = %e,
            "cannot read the open-file limit (RLIMIT_NOFILE); --max-connections is not checked against it"
        ),
        Ok(r) => {
            if let Some(e) = &r.error {
                tracing::warn!(
                    error = %e,
                    soft = r.limits.soft,
                    hard = r.limits.hard,
                    "cannot raise the open-file limit (RLIMIT_NOFILE) to its hard limit"
                );
            }
            if max_connections < requested {
                tracing::warn!(
                    requested,
                    max_connections,
                    open_files_limit = r.limits.soft,
                    reserved = rlimit::RESERVED_FDS,
                    "--max-connections lowered to what the open-file limit allows per port"
                );
            }
        }
    }

    let metrics = Metrics::new(&settings.lease_name, settings.timings.renew_deadline);
    let leadership = Arc::new(Leadership::new(
        settings.identity.clone(),
        lease_ref.clone(),
        settings.grant,
        settings.consumer_timeout,
    ));
    let heartbeat = Arc::new(Heartbeat::default());
    let (commands_tx, commands) = mpsc::channel(16);
    let timings = settings.timings.clone();

    let api = Api {
        leadership: leadership.clone(),
        metrics: metrics.clone(),
        commands: commands_tx.clone(),
        yield_backoff: timings.yield_backoff,
    };
    let admin = AdminPort {
        probes: Some(Arc::new(SidecarProbes {
            leadership: leadership.clone(),
            heartbeat: heartbeat.clone(),
            wedged_after: timings.lease_duration * 2,
        })),
        metrics: Some({
            let (leadership, metrics) = (leadership.clone(), metrics.clone());
            Arc::new(move || http::metrics_text(&leadership, &metrics))
        }),
    };
    spawn_http(api_listener, api, admin_listener, admin, max_connections)?;

    let leases = LeaseApi::new(
        client.clone(),
        &namespace,
        &settings.lease_name,
        settings.api_timeout,
        metrics.clone(),
    );
    let watch = StandbyWatch::start(leases.clone(), timings.retry_period);

    // The opt-in role label on our own Pod; told to stop (and show `standby`) after the Lease
    // is released.
    let (labeller_stop, labeller_stopped) = tokio::sync::watch::channel(false);
    let labeller = settings.pod_role_label.as_ref().map(|label| {
        tracing::info!(pod = %label.pod, namespace = %pod_namespace, key = %label.key, "labelling our pod with its role");
        let labeller = PodLabeller {
            pods: kube::Api::namespaced(client.clone(), &pod_namespace),
            key: label.key.clone(),
            own_pod: label.pod.clone(),
            timeout: settings.api_timeout,
            retry_period: timings.retry_period,
            resync: timings.lease_duration,
            metrics: metrics.clone(),
        };
        tokio::spawn(labeller.run(leadership.clone(), labeller_stopped))
    });

    let signal_leadership = leadership.clone();
    tokio::spawn(async move {
        cli::shutdown_signal().await;
        // Stop granting before anything else; the elector then waits for the outstanding
        // grants (or a yield) and releases.
        signal_leadership.revoke(true, Instant::now());
        tracing::info!("shutting down: stopped granting leadership");
        let _ = commands_tx.send(Command::Shutdown).await;
    });

    let runner = Runner {
        elector: Elector::new(
            settings.identity.clone(),
            namespace,
            settings.lease_name.clone(),
            timings,
            rand::random(),
        ),
        leases,
        leadership,
        metrics,
        recorder: Some(runner::recorder(client, &settings.identity)),
        lease_ref,
        heartbeat,
        watch,
        commands,
    };
    runner.run().await;
    if let Some(task) = labeller {
        let _ = labeller_stop.send(true);
        // One last best-effort `standby` write, bounded by two requests.
        let _ = tokio::time::timeout(settings.api_timeout * 2, task).await;
    }
    tracing::info!("leader-sidecar stopped");
    Ok(())
}
