//! The Kubernetes client configuration, and how a failed request is labelled.

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The Kubernetes client configuration: the kubeconfig files in `kubeconfig` (a `KUBECONFIG`-style
/// list, merged as kubectl does) when given, else the in-cluster service account (or
/// `~/.kube/config`).
pub async fn config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    let Some(paths) = kubeconfig else {
        return kube::Config::infer()
            .await
            .context("no Kubernetes configuration: not in a cluster, and no kubeconfig");
    };
    let mut merged: Option<Kubeconfig> = None;
    for path in std::env::split_paths(paths) {
        let kc = Kubeconfig::read_from(&path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).context("cannot merge kubeconfig files")?,
        });
    }
    let kc = merged.context("--kubeconfig is empty")?;
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("invalid kubeconfig")
}

/// Whether a request failed by timing out (our own `tokio::time::timeout` or a socket timeout),
/// anywhere in its error chain.
pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if err.is::<tokio::time::error::Elapsed>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The `code` label of a failed Kubernetes request in every binary's metrics: the HTTP status
/// of an API error, else `timeout` or `transport`.
pub fn error_code(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.code.to_string(),
        other if is_timeout(other) => "timeout".to_owned(),
        _ => "transport".to_owned(),
    }
}
