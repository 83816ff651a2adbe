//! Flags (each with an environment variable) and their validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::elector::Timings;
use plumbing::cli::{LogFormat, parse_duration};

/// Holds a coordination.k8s.io/v1 Lease and serves leadership to the local controller.
#[derive(Clone, Debug, Parser)]
#[command(name = "leader-sidecar", version, about)]
pub struct Args {
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", visible_alias = "leader-election-id")]
    pub lease_name: String,

    /// Namespace of the Lease [default: $POD_NAMESPACE, the in-cluster namespace, the
    /// kubeconfig context's namespace, `default`].
    #[arg(
        long,
        env = "LEASE_NAMESPACE",
        visible_alias = "leader-election-namespace"
    )]
    pub lease_namespace: Option<String>,

    /// Identity written as the Lease holder [default: <hostname>_<random>].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Kubeconfig file [default: in-cluster configuration or ~/.kube/config].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// How long standbys wait after the last change they saw before taking the Lease.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// The leader stops being leader this long after it sent its last successful renew.
    #[arg(long, env = "RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// Interval between renews, and base of the retry backoff.
    #[arg(long, env = "RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Longest grant handed to the local controller in one answer.
    #[arg(long, env = "GRANT", default_value = "2s", value_parser = parse_duration)]
    pub grant: Duration,

    /// After a yield, do not acquire again for this long unless the Lease is still free
    /// [default: the lease duration].
    #[arg(long, env = "YIELD_BACKOFF", value_parser = parse_duration)]
    pub yield_backoff: Option<Duration>,

    /// Step down and release when no local client has read /leader or held /leader/watch for
    /// this long; 0 disables the check.
    #[arg(long, env = "CONSUMER_TIMEOUT", default_value = "0s", value_parser = parse_duration)]
    pub consumer_timeout: Duration,

    /// Timeout of each Kubernetes API request [default: half the renew deadline].
    #[arg(long, env = "API_TIMEOUT", value_parser = parse_duration)]
    pub api_timeout: Option<Duration>,

    /// Address of the leader API (keep it on loopback: it is for the local controller).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:4040")]
    pub listen: SocketAddr,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "ADMIN_LISTEN",
        default_value = "0.0.0.0:4041",
        visible_alias = "metrics-bind-address",
        visible_alias = "health-probe-bind-address"
    )]
    pub admin_listen: SocketAddr,

    /// Most connections open at once on each port. At the limit a new connection closes the
    /// oldest one that has not sent a request yet (lowered to fit the open-file limit).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Label key to set on our own Pod: `<key>=leader` while leading, `<key>=standby`
    /// otherwise; empty: off. A convenience for `kubectl -l` and Services, not a fence (see
    /// docs/operations.md). Needs get and patch on pods, and the Pod's name and namespace.
    #[arg(long, env = "POD_ROLE_LABEL", default_value = "")]
    pub pod_role_label: String,

    /// Our Pod's name, for --pod-role-label (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Our Pod's namespace, for --pod-role-label [default: the Lease's default namespace].
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

/// `--pod-role-label`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRoleLabel {
    pub key: String,
    pub pod: String,
    /// `None`: the namespace the Lease defaults to.
    pub namespace: Option<String>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub identity: String,
    pub kubeconfig: Option<PathBuf>,
    pub timings: Timings,
    pub grant: Duration,
    pub consumer_timeout: Option<Duration>,
    pub api_timeout: Duration,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_connections: usize,
    pub log_format: LogFormat,
    pub pod_role_label: Option<PodRoleLabel>,
}

impl Args {
    /// Checks the flags against each other; the error is one line for the user.
    pub fn validate(self) -> Result<Settings, String> {
        let Args {
            lease_duration: ld,
            renew_deadline: rd,
            retry_period: rp,
            ..
        } = self;
        if self.lease_name.is_empty() {
            return Err("--lease-name must not be empty".into());
        }
        if rp.is_zero() {
            return Err("--retry-period must be positive".into());
        }
        if ld <= rd {
            return Err(format!(
                "--lease-duration ({}) must be greater than --renew-deadline ({})",
                show(ld),
                show(rd)
            ));
        }
        if rd.as_secs_f64() <= 1.2 * rp.as_secs_f64() {
            return Err(format!(
                "--renew-deadline ({}) must be greater than 1.2 x --retry-period ({})",
                show(rd),
                show(rp)
            ));
        }
        if self.grant.is_zero() {
            return Err("--grant must be positive".into());
        }
        let api_timeout = self.api_timeout.unwrap_or(rd / 2);
        if api_timeout.is_zero() || api_timeout >= rd {
            return Err(format!(
                "--api-timeout ({}) must be positive and less than --renew-deadline ({})",
                show(api_timeout),
                show(rd)
            ));
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        let pod_role_label = if self.pod_role_label.is_empty() {
            None
        } else {
            crate::pod_label::validate_label_key(&self.pod_role_label)?;
            let Some(pod) = self.pod_name.filter(|p| !p.is_empty()) else {
                return Err(
                    "--pod-role-label needs the Pod's name: --pod-name or POD_NAME (the downward \
                     API's metadata.name)"
                        .into(),
                );
            };
            Some(PodRoleLabel {
                key: self.pod_role_label,
                pod,
                namespace: self.pod_namespace.filter(|n| !n.is_empty()),
            })
        };
        let identity = match self.identity.filter(|i| !i.is_empty()) {
            Some(i) => i,
            None => default_identity(),
        };
        Ok(Settings {
            lease_name: self.lease_name,
            lease_namespace: self.lease_namespace.filter(|n| !n.is_empty()),
            identity,
            kubeconfig: self.kubeconfig.filter(|p| !p.as_os_str().is_empty()),
            timings: Timings {
                lease_duration: ld,
                renew_deadline: rd,
                retry_period: rp,
                yield_backoff: self.yield_backoff.unwrap_or(ld),
                max_jitter: (rp / 10).min(Duration::from_millis(100)),
            },
            grant: self.grant,
            consumer_timeout: Some(self.consumer_timeout).filter(|t| !t.is_zero()),
            api_timeout,
            listen: self.listen,
            admin_listen: self.admin_listen,
            max_connections: self.max_connections,
            log_format: self.log_format,
            pod_role_label,
        })
    }
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `<hostname>_<random>`, like client-go examples, so that two processes on one host differ.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "leader-sidecar".to_owned());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// The in-cluster service account namespace file.
pub const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The Lease namespace: the flag, else `POD_NAMESPACE`, else the in-cluster namespace file, else
/// the kubeconfig context's namespace (`kube_default`, which is `default` when unset).
pub fn lease_namespace(flag: Option<&str>, kube_default: &str) -> String {
    if let Some(ns) = flag {
        return ns.to_owned();
    }
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.is_empty()
    {
        return ns;
    }
    if let Ok(ns) = std::fs::read_to_string(IN_CLUSTER_NAMESPACE) {
        let ns = ns.trim();
        if !ns.is_empty() {
            return ns.to_owned();
        }
    }
    kube_default.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["leader-sidecar", "--lease-name", "l"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults_are_valid() {
        let s = args(&[]).expect("defaults");
        assert_eq!(s.timings.lease_duration, Duration::from_secs(15));
        assert_eq!(s.timings.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.timings.retry_period, Duration::from_secs(2));
        assert_eq!(s.timings.yield_backoff, Duration::from_secs(15));
        assert_eq!(s.grant, Duration::from_secs(2));
        assert_eq!(s.api_timeout, Duration::from_secs(5));
        assert_eq!(s.consumer_timeout, None);
        assert_eq!(s.listen.to_string(), "127.0.0.1:4040");
        assert_eq!(s.admin_listen.to_string(), "0.0.0.0:4041");
    }

    #[test]
    fn timing_order_is_enforced() {
        let e = args(&["--lease-duration", "10s"]).unwrap_err();
        assert!(
            e.contains("--lease-duration (10s) must be greater than --renew-deadline (10s)"),
            "{e}"
        );
        let e = args(&["--renew-deadline", "2400ms"]).unwrap_err();
        assert!(e.contains("1.2 x --retry-period"), "{e}");
        assert!(args(&["--renew-deadline", "2500ms"]).is_ok());
        let e = args(&["--api-timeout", "10s"]).unwrap_err();
        assert!(e.contains("--api-timeout"), "{e}");
        let e = args(&["--grant", "0s"]).unwrap_err();
        assert!(e.contains("--grant"), "{e}");
    }

    #[test]
    fn seed_aliases_are_accepted() {
        let s = Args::try_parse_from([
            "leader-sidecar",
            "--leader-election-id",
            "x",
            "--leader-election-namespace",
            "ns",
            "--metrics-bind-address",
            "127.0.0.1:9000",
        ])
        .expect("aliases")
        .validate()
        .expect("valid");
        assert_eq!(s.lease_name, "x");
        assert_eq!(s.lease_namespace.as_deref(), Some("ns"));
        assert_eq!(s.admin_listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn human_durations_and_bad_values() {
        let s = args(&[
            "--lease-duration",
            "1m",
            "--renew-deadline",
            "30s",
            "--consumer-timeout",
            "5s",
        ])
        .expect("valid");
        assert_eq!(s.timings.lease_duration, Duration::from_secs(60));
        assert_eq!(s.consumer_timeout, Some(Duration::from_secs(5)));
        assert!(
            args(&["--lease-duration", "fifteen"])
                .unwrap_err()
                .contains("invalid duration")
        );
        assert!(args(&["--listen", "nowhere"]).is_err());
    }

    #[test]
    fn the_pod_role_label_needs_a_valid_key_and_the_pod_name() {
        assert_eq!(args(&[]).expect("defaults").pod_role_label, None);
        let s = args(&[
            "--pod-role-label",
            "newresource.com/role",
            "--pod-name",
            "p",
            "--pod-namespace",
            "ns",
        ])
        .expect("valid");
        assert_eq!(
            s.pod_role_label,
            Some(PodRoleLabel {
                key: "newresource.com/role".into(),
                pod: "p".into(),
                namespace: Some("ns".into()),
            })
        );
        let e = args(&["--pod-role-label", "Bad Key", "--pod-name", "p"]).unwrap_err();
        assert!(e.contains("is not a label key"), "{e}");
        let e = args(&["--pod-role-label", "role", "--pod-name", ""]).unwrap_err();
        assert!(e.contains("needs the Pod's name"), "{e}");
    }

    #[test]
    fn identity_defaults_to_host_and_random_suffix() {
        let a = default_identity();
        let b = default_identity();
        assert_ne!(a, b);
        assert!(a.contains('_'));
    }
}
