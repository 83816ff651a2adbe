//! Flags (each with an environment variable) and their validation.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use plumbing::cli::{LogFormat, parse_duration};

/// Reconciles NewResource objects (apps.newresource.com/v1alpha1) while the leader sidecar in the
/// same pod grants leadership.
#[derive(Clone, Debug, Parser)]
#[command(name = "newresource-controller", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Kubeconfig file [default: in-cluster configuration or ~/.kube/config].
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Reconcile only this namespace [default: all namespaces].
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Follow the sidecar's leadership; `--leader-elect=false` reconciles always (one replica,
    /// development).
    #[arg(
        long,
        env = "LEADER_ELECT",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set,
    )]
    pub leader_elect: bool,

    /// Base URL of the sidecar's leader API.
    #[arg(long, env = "LEADER_URL", default_value = "http://127.0.0.1:4040")]
    pub leader_url: String,

    /// How often to poll GET /leader while the /leader/watch stream is unavailable.
    #[arg(long, env = "LEADER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub leader_poll_interval: Duration,

    /// Objects reconciled at the same time.
    #[arg(
        long,
        env = "MAX_CONCURRENT_RECONCILES",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_concurrent_reconciles: u16,

    /// Address of /metrics (`:8080` means every interface; `0` disables).
    #[arg(long, env = "METRICS_BIND_ADDRESS", default_value = ":8080", value_parser = parse_bind_address)]
    pub metrics_bind_address: BindAddress,

    /// Address of /healthz and /readyz (`:8081` means every interface; `0` disables).
    #[arg(
        long,
        env = "HEALTH_PROBE_BIND_ADDRESS",
        default_value = ":8081",
        value_parser = parse_bind_address
    )]
    pub health_probe_bind_address: BindAddress,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Print the NewResource CustomResourceDefinition as YAML and exit.
    Crd,
}

/// A listen address, or `None` when disabled with `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

/// Parses controller-runtime style addresses: `:8080`, `127.0.0.1:8080`, `[::1]:8080`, `0`.
pub fn parse_bind_address(s: &str) -> Result<BindAddress, String> {
    if s == "0" {
        return Ok(BindAddress(None));
    }
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid address {s:?}: bad port"))?;
        return Ok(BindAddress(Some(SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            port,
        )))));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid address {s:?}: bad port"))?;
        return Ok(BindAddress(Some(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            port,
        )))));
    }
    s.parse()
        .map(|a| BindAddress(Some(a)))
        .map_err(|_| format!("invalid address {s:?}: expected :PORT, HOST:PORT or 0"))
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    /// `None` with `--leader-elect=false`.
    pub leader_url: Option<String>,
    pub leader_poll_interval: Duration,
    pub max_concurrent_reconciles: u16,
    pub metrics_bind_address: Option<SocketAddr>,
    pub health_probe_bind_address: Option<SocketAddr>,
    pub log_format: LogFormat,
}

impl Args {
    /// Checks the flags against each other; the error is one line for the user.
    pub fn validate(self) -> Result<Settings, String> {
        if self.leader_poll_interval.is_zero() {
            return Err("--leader-poll-interval must be positive".into());
        }
        let leader_url = if self.leader_elect {
            leader_client::SidecarClient::new(&self.leader_url)
                .map_err(|e| format!("--leader-url: {e}"))?;
            Some(self.leader_url)
        } else {
            None
        };
        if let (Some(m), Some(h)) = (
            self.metrics_bind_address.0,
            self.health_probe_bind_address.0,
        ) && m == h
            && m.port() != 0
        {
            return Err(format!(
                "--metrics-bind-address and --health-probe-bind-address are both {m}"
            ));
        }
        Ok(Settings {
            kubeconfig: self.kubeconfig.filter(|p| !p.as_os_str().is_empty()),
            namespace: self.namespace.filter(|n| !n.is_empty()),
            leader_url,
            leader_poll_interval: self.leader_poll_interval,
            max_concurrent_reconciles: self.max_concurrent_reconciles,
            metrics_bind_address: self.metrics_bind_address.0,
            health_probe_bind_address: self.health_probe_bind_address.0,
            log_format: self.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["newresource-controller"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults_follow_the_seed() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.leader_url.as_deref(), Some("http://127.0.0.1:4040"));
        assert_eq!(s.leader_poll_interval, Duration::from_secs(1));
        assert_eq!(s.max_concurrent_reconciles, 1);
        assert_eq!(
            s.metrics_bind_address,
            Some("0.0.0.0:8080".parse().unwrap())
        );
        assert_eq!(
            s.health_probe_bind_address,
            Some("0.0.0.0:8081".parse().unwrap())
        );
        assert_eq!(s.namespace, None);
    }

    #[test]
    fn leader_elect_takes_the_seed_forms() {
        assert!(parse(&["--leader-elect"]).unwrap().leader_url.is_some());
        assert!(
            parse(&["--leader-elect=true"])
                .unwrap()
                .leader_url
                .is_some()
        );
        let off = parse(&["--leader-elect=false"]).unwrap();
        assert_eq!(off.leader_url, None);
        assert!(parse(&["--leader-elect=maybe"]).is_err());
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind_address("0").unwrap(), BindAddress(None));
        assert_eq!(
            parse_bind_address(":9090").unwrap().0,
            Some("0.0.0.0:9090".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("localhost:9090").unwrap().0,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert_eq!(
            parse_bind_address("[::1]:9090").unwrap().0,
            Some("[::1]:9090".parse().unwrap())
        );
        assert!(parse_bind_address(":http").is_err());
        assert!(parse_bind_address("nowhere").is_err());
    }

    #[test]
    fn rejects_contradictions_in_one_line() {
        for (args, needle) in [
            (&["--leader-poll-interval", "0s"][..], "positive"),
            (
                &["--leader-url", "https://127.0.0.1:4040"][..],
                "http://host:port",
            ),
            (
                &["--leader-url", "http://127.0.0.1:4040/leader"][..],
                "without a path",
            ),
            (
                &[
                    "--metrics-bind-address",
                    ":9000",
                    "--health-probe-bind-address",
                    ":9000",
                ][..],
                "both",
            ),
            (&["--max-concurrent-reconciles", "0"][..], "0"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        // A bad URL does not matter when leader election is off.
        assert!(parse(&["--leader-elect=false", "--leader-url", "nonsense"]).is_ok());
    }
}
