//! `inmem-apiserver`: the in-memory Kubernetes API server as a process, for kubectl, the
//! demo, and controllers written in other languages.
//!
//! It prints `listening on http://127.0.0.1:PORT` on stdout once it accepts connections (and
//! writes the port to `--port-file` if given), then serves until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use testkit::apiserver::{ApiServer, Config, UserInfo};
use testkit::cli;

#[derive(Parser, Debug)]
#[command(
    name = "inmem-apiserver",
    version,
    about = "In-memory Kubernetes API server for tests and demos"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "INMEM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the chosen port to this file (written atomically once listening).
    #[arg(long, env = "INMEM_PORT_FILE")]
    port_file: Option<PathBuf>,
    /// Write a kubeconfig for the administrator to this file.
    #[arg(long, env = "INMEM_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
    /// Authorize requests with the RBAC objects stored in the server (otherwise allow all).
    #[arg(long, env = "INMEM_RBAC")]
    rbac: bool,
    /// The administrator's bearer token (member of system:masters). Random if unset.
    #[arg(long, env = "INMEM_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// A user token, as TOKEN=USER or TOKEN=USER:GROUP1,GROUP2. Repeatable.
    #[arg(long = "token", env = "INMEM_TOKENS", value_delimiter = ';', value_parser = parse_user_token)]
    tokens: Vec<(String, UserInfo)>,
    /// A service-account token, as TOKEN=NAMESPACE/NAME. Repeatable.
    #[arg(long = "service-account-token", env = "INMEM_SERVICE_ACCOUNT_TOKENS", value_delimiter = ';', value_parser = parse_sa_token)]
    service_account_tokens: Vec<(String, UserInfo)>,
    /// How many changes the watch history keeps before older resourceVersions get 410.
    #[arg(long, env = "INMEM_HISTORY_LIMIT", default_value_t = 10_000)]
    history_limit: usize,
    /// Interval between BOOKMARK events on watches that allow them.
    #[arg(long, env = "INMEM_BOOKMARK_INTERVAL", default_value = "30s", value_parser = cli::parse_duration)]
    bookmark_interval: Duration,
    /// Log format.
    #[arg(long, env = "INMEM_LOG_FORMAT", default_value = "text")]
    log_format: cli::LogFormat,
}

fn parse_user_token(s: &str) -> Result<(String, UserInfo), String> {
    let (token, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TOKEN=USER[:GROUPS], got {s:?}"))?;
    let (user, groups) = rest.split_once(':').unwrap_or((rest, ""));
    if token.is_empty() || user.is_empty() {
        return Err(format!("expected TOKEN=USER[:GROUPS], got {s:?}"));
    }
    let groups: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
    Ok((token.to_string(), UserInfo::user(user, &groups)))
}

fn parse_sa_token(s: &str) -> Result<(String, UserInfo), String> {
    let parsed = s
        .split_once('=')
        .and_then(|(t, sa)| sa.split_once('/').map(|(ns, name)| (t, ns, name)));
    match parsed {
        Some((t, ns, name)) if !t.is_empty() && !ns.is_empty() && !name.is_empty() => {
            Ok((t.to_string(), UserInfo::service_account(ns, name)))
        }
        _ => Err(format!("expected TOKEN=NAMESPACE/NAME, got {s:?}")),
    }
}

#[tokio::main]
async fn main() {
    let args: Args = cli::parse_or_exit();
    cli::init_tracing(args.log_format);
    if let Err(e) = run(args).await {
        eprintln!("inmem-apiserver: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let server = ApiServer::start(Config {
        listen: args.listen,
        rbac: args.rbac,
        history_limit: args.history_limit,
        bookmark_interval: args.bookmark_interval,
    })
    .await?;
    let admin_token = match &args.admin_token {
        Some(t) => {
            server.add_token(t, UserInfo::admin());
            t.clone()
        }
        None => server.admin_token().to_string(),
    };
    for (token, user) in args.tokens.iter().chain(&args.service_account_tokens) {
        server.add_token(token, user.clone());
    }
    if let Some(path) = &args.kubeconfig_out {
        server.write_kubeconfig(path, &admin_token)?;
    }
    if let Some(path) = &args.port_file {
        // Write then rename, so a reader never sees a half-written port.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, server.addr().port().to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    println!("listening on {}", server.url());
    tracing::info!(url = %server.url(), rbac = args.rbac, "in-memory API server started");
    cli::shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown();
    Ok(())
}
