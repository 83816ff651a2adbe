//! The `inmem-apiserver` binary as a process: flags, port reporting, signals.

use std::path::Path;
use std::process::Stdio;

use testkit::cluster::TempDir;
use testkit::process::ApiServerProcess;

const BIN: &str = env!("CARGO_BIN_EXE_inmem-apiserver");

#[tokio::test]
async fn invalid_flags_exit_2_with_one_line() -> anyhow::Result<()> {
    for args in [
        vec!["--bookmark-interval", "soon"],
        vec!["--listen", "not-an-address"],
        vec!["--service-account-token", "no-namespace"],
        vec!["--no-such-flag"],
    ] {
        let out = tokio::process::Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await?;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("inmem-apiserver: error:"), "{stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn port_file_matches_printed_url_and_sigterm_exits_cleanly() -> anyhow::Result<()> {
    let dir = TempDir::new("inmem-bin")?;
    let port_file = dir.path().join("port");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut server = ApiServerProcess::spawn(
        Path::new(BIN),
        &[
            "--port-file",
            port_file.to_str().unwrap_or_default(),
            "--kubeconfig-out",
            kubeconfig.to_str().unwrap_or_default(),
            "--admin-token",
            "t0ken",
        ],
    )
    .await?;
    let port = std::fs::read_to_string(&port_file)?;
    assert_eq!(server.url, format!("http://127.0.0.1:{port}"));

    // The written kubeconfig works for a kube client.
    let config = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::Client::try_from(config)?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");

    let pid = server.child.id().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let status = server.child.wait().await?;
    assert_eq!(status.code(), Some(0));
    Ok(())
}
