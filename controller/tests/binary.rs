//! The CRD in `deploy/` is the one the Rust type generates.

use std::process::Command;

#[test]
fn deploy_holds_the_generated_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_newresource-controller"))
        .arg("crd")
        .output()
        .expect("run newresource-controller crd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/crd.yaml");
    let committed = std::fs::read_to_string(path).expect("read deploy/base/crd.yaml");
    assert!(
        committed == generated,
        "deploy/base/crd.yaml is stale; regenerate it with\n  \
         cargo run -p newresource-controller -- crd > deploy/base/crd.yaml"
    );
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["--leader-poll-interval", "soon"][..],
        &["--leader-url", "ftp://x"][..],
        &["--max-concurrent-reconciles", "0"][..],
        &["--no-such-flag"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_newresource-controller"))
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run newresource-controller");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("newresource-controller: "), "{stderr}");
    }
}

#[test]
fn help_names_the_seed_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_newresource-controller"))
        .arg("--help")
        .output()
        .expect("run newresource-controller --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--leader-elect",
        "--leader-url",
        "--leader-poll-interval",
        "--metrics-bind-address",
        "--health-probe-bind-address",
        "--max-concurrent-reconciles",
        "--namespace",
        "[env: LEADER_URL=]",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
