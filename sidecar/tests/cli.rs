//! The binary's command line: bad flags exit with status 2 and one line saying why.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_leader-sidecar");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("LEASE_NAME")
        .env_remove("POD_NAME")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run leader-sidecar");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_flags_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "--lease-name"),
        (
            &["--lease-name", "l", "--lease-duration", "10s"],
            "--lease-duration (10s) must be greater than --renew-deadline (10s)",
        ),
        (
            &["--lease-name", "l", "--retry-period", "9s"],
            "1.2 x --retry-period",
        ),
        (
            &["--lease-name", "l", "--lease-duration", "soon"],
            "invalid duration",
        ),
        (&["--lease-name", "l", "--listen", "localhost"], "--listen"),
        (&["--lease-name", "l", "--grant", "0s"], "--grant"),
        (&["--lease-name", "l", "--no-such-flag"], "--no-such-flag"),
    ];
    for (args, needle) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(stderr.starts_with("leader-sidecar: error:"), "{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} should mention {needle:?}"
        );
    }
}

#[test]
fn help_lists_the_seed_aliases_and_environment() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "leader-election-id",
        "leader-election-namespace",
        "metrics-bind-address",
        "health-probe-bind-address",
        "env: LEASE_DURATION",
        "env: POD_NAME",
        "env: CONSUMER_TIMEOUT",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn a_missing_kubeconfig_is_a_clear_runtime_error() {
    let out = Command::new(BIN)
        .args([
            "--lease-name",
            "l",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
