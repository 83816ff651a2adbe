//! `newresource-controller`: reconciles `NewResource` objects while the sidecar grants
//! leadership; probes and metrics on their own ports.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, ListParams};
use leader_client::{LeadershipGate, SidecarClient, follow};
use newresource_controller::admin::{self, ControllerProbes};
use newresource_controller::config::{Args, Command, Settings};
use newresource_controller::crd::{NewResource, crd_yaml};
use newresource_controller::metrics::{Metrics, api_error_code};
use newresource_controller::workers::Workers;
use plumbing::probes::AdminPort;
use plumbing::{cli, server};
use tokio::net::TcpListener;

/// How long the yield on shutdown may take before we exit anyway (the sidecar then releases
/// after our last grant runs out).
const YIELD_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the API connection is checked for `/readyz`.
const API_CHECK_EVERY: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit();
    if let Some(Command::Crd) = args.command {
        return match crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("newresource-controller: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = args.validate().unwrap_or_else(|e| cli::exit_usage(&e));
    cli::init_tracing(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    cli::run_main(runtime, run(settings))
}

async fn bind(addr: Option<SocketAddr>, flag: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({flag})"))?;
    Ok(Some(listener))
}

fn local_addr(listener: &Option<TcpListener>) -> String {
    listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "disabled".to_owned(), |a| a.to_string())
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let config = plumbing::kubernetes::config(settings.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config).context("cannot build the Kubernetes client")?;
    let metrics_listener = bind(settings.metrics_bind_address, "--metrics-bind-address").await?;
    let health_listener = bind(
        settings.health_probe_bind_address,
        "--health-probe-bind-address",
    )
    .await?;
    tracing::info!(
        leader_url = settings.leader_url.as_deref().unwrap_or("none (--leader-elect=false)"),
        namespace = settings.namespace.as_deref().unwrap_or("all"),
        metrics = %local_addr(&metrics_listener),
        health = %local_addr(&health_listener),
        "newresource-controller starting"
    );

    let metrics = Metrics::new();
    let (gate, sidecar) = match &settings.leader_url {
        Some(url) => {
            let sidecar = SidecarClient::new(url)
                .and_then(|s| s.with_user_agent("newresource-controller"))
                .map_err(anyhow::Error::msg)?;
            let (publisher, gate) = LeadershipGate::new();
            tokio::spawn(follow(
                sidecar.clone(),
                settings.leader_poll_interval,
                publisher,
            ));
            (gate, Some(sidecar))
        }
        None => (LeadershipGate::always_open(), None),
    };
    let api: Api<NewResource> = match &settings.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let api_ok = Arc::new(AtomicBool::new(false));
    tokio::spawn(check_api(api, api_ok.clone(), metrics.clone()));

    let probes = AdminPort {
        probes: Some(Arc::new(ControllerProbes {
            gate: gate.clone(),
            needs_sidecar: sidecar.is_some(),
            api_ok,
            wedged_after: (settings.leader_poll_interval * 10).max(Duration::from_secs(10)),
        })),
        metrics: None,
    };
    if let Some(listener) = health_listener {
        tokio::spawn(server::serve(
            listener,
            admin::MAX_CONNECTIONS,
            None,
            move |req| probes.clone().handle(req),
        ));
    }
    if let Some(listener) = metrics_listener {
        let metrics = metrics.clone();
        let port = AdminPort {
            probes: None,
            metrics: Some(Arc::new(move || metrics.encode())),
        };
        tokio::spawn(server::serve(
            listener,
            admin::MAX_CONNECTIONS,
            None,
            move |req| port.clone().handle(req),
        ));
    }

    let workers = Workers {
        client,
        namespace: settings.namespace.clone(),
        concurrency: settings.max_concurrent_reconciles,
        gate,
        metrics,
    };
    workers.run(cli::shutdown_signal()).await;

    // Workers have stopped: let the sidecar hand over now rather than when our grant runs out.
    if let Some(sidecar) = sidecar {
        match tokio::time::timeout(YIELD_TIMEOUT, sidecar.yield_leadership()).await {
            Ok(Ok(answer)) => tracing::info!(
                was_leader = answer.was_leader,
                backoff_ms = answer.backoff_ms,
                "yielded leadership"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not yield leadership"),
            Err(_) => tracing::warn!("could not yield leadership: the sidecar did not answer"),
        }
    }
    tracing::info!("newresource-controller stopped");
    Ok(())
}

/// Keeps `api_ok` current for `/readyz`: a one-item list of NewResources, which needs the
/// same permission the workers need first. Every failure counts in
/// `controller_api_errors_total{resource="newresources",verb="list"}`; the log says when the
/// outcome changes (connected, or a failure with a different code), not at every check.
async fn check_api(api: Api<NewResource>, ok: Arc<AtomicBool>, metrics: Metrics) {
    let mut was: Option<String> = None;
    loop {
        let result = tokio::time::timeout(
            API_CHECK_EVERY,
            api.list_metadata(&ListParams::default().limit(1)),
        )
        .await;
        let code = match &result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(api_error_code(e)),
            Err(_) => Some("timeout".to_owned()),
        };
        ok.store(code.is_none(), Ordering::Relaxed);
        if let Some(code) = &code {
            metrics.api_error("newresources", "list", code);
        }
        let state = code.clone().unwrap_or_else(|| "ok".to_owned());
        if was.as_deref() != Some(state.as_str()) {
            let code = code.as_deref().unwrap_or("");
            match result {
                Ok(Ok(_)) => tracing::info!("connected to the Kubernetes API"),
                Ok(Err(e)) => tracing::error!(
                    resource = "newresources",
                    verb = "list",
                    code,
                    error = %e,
                    "cannot list newresources"
                ),
                Err(_) => tracing::error!(
                    resource = "newresources",
                    verb = "list",
                    code,
                    "the Kubernetes API did not answer a list of newresources"
                ),
            }
            was = Some(state);
        }
        tokio::time::sleep(API_CHECK_EVERY).await;
    }
}
