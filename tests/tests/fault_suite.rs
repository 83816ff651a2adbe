//! The fault suite (`testkit::fault_suite`): each fault once, with real `leader-sidecar` and
//! `newresource-controller` processes on the in-memory API server. A run fails on any overlap
//! of active windows, any status write outside its writer's window, a term that does not grow
//! with a takeover, any object left unreconciled, a crashed process, the fault's own claim, or
//! a liveness failure (no controller active soon after the fault heals, a sidecar leading
//! while its controller idles, work created after the heal not done within 5 s).
//!
//! Each test prints its outcome (`cargo test -p tests --test fault_suite -- --nocapture`). For
//! a longer soak, repeat the faults in random order with the `faults` tool:
//! `cargo run -p tests --bin faults -- --soak 30m`.

use testkit::conformance::ControllerCommand;
use testkit::fault_suite::{self, Fault};

async fn survives(fault: Fault) -> anyhow::Result<()> {
    let outcome = fault_suite::run(fault).await?;
    println!("fault suite: {outcome}");
    Ok(())
}

#[tokio::test]
async fn kill_9_of_the_leading_sidecar() -> anyhow::Result<()> {
    survives(Fault::KillLeadingSidecar).await
}

#[tokio::test]
async fn kill_9_of_the_leading_controller_left_down() -> anyhow::Result<()> {
    survives(Fault::KillLeadingController).await
}

#[tokio::test]
async fn leading_sidecar_frozen_past_the_lease() -> anyhow::Result<()> {
    survives(Fault::FrozenSidecar).await
}

#[tokio::test]
async fn api_partition_of_the_leader_only() -> anyhow::Result<()> {
    survives(Fault::ApiPartition).await
}

#[tokio::test]
async fn full_api_outage_longer_than_the_lease() -> anyhow::Result<()> {
    survives(Fault::ApiOutage).await
}

#[tokio::test]
async fn slow_api_beyond_the_request_timeout() -> anyhow::Result<()> {
    survives(Fault::SlowApi).await
}

#[tokio::test]
async fn bursts_of_429_and_503() -> anyhow::Result<()> {
    survives(Fault::ErrorBursts).await
}

#[tokio::test]
async fn ten_candidates_at_once() -> anyhow::Result<()> {
    survives(Fault::CandidateStorm).await
}

#[tokio::test]
async fn one_sidecar_clock_60s_ahead() -> anyhow::Result<()> {
    survives(Fault::ClockAhead).await
}

#[tokio::test]
async fn one_sidecar_clock_60s_behind() -> anyhow::Result<()> {
    survives(Fault::ClockBehind).await
}

#[tokio::test]
async fn malformed_leases_from_another_client() -> anyhow::Result<()> {
    survives(Fault::MalformedLeases).await
}

#[tokio::test]
async fn http_abuse_of_the_leader_api() -> anyhow::Result<()> {
    survives(Fault::HttpAbuse).await
}

#[tokio::test]
async fn rolling_update_one_pod_at_a_time() -> anyhow::Result<()> {
    survives(Fault::RollingUpdate).await
}

#[tokio::test]
async fn a_client_go_elector_on_the_same_lease() -> anyhow::Result<()> {
    survives(Fault::ClientGoInterop).await
}

#[tokio::test]
async fn leading_controller_frozen_past_its_grant() -> anyhow::Result<()> {
    survives(Fault::FrozenController).await
}

/// The same freezes with the Python controller (`examples/python-controller`), which follows
/// the sidecar with its own gate.
#[tokio::test]
async fn leading_python_controller_frozen_past_its_grant() -> anyhow::Result<()> {
    let outcome =
        fault_suite::run_with(Fault::FrozenController, ControllerCommand::python()?).await?;
    println!("fault suite (python): {outcome}");
    Ok(())
}

#[tokio::test]
async fn lease_deleted_while_its_holder_is_cut_off() -> anyhow::Result<()> {
    survives(Fault::LeaseDeletedDuringPartition).await
}

#[tokio::test]
async fn holder_cleared_while_it_is_cut_off() -> anyhow::Result<()> {
    survives(Fault::HolderClearedDuringPartition).await
}

#[tokio::test]
async fn standby_watch_silent_then_kill_9_of_the_leader() -> anyhow::Result<()> {
    survives(Fault::StandbyWatchStalled).await
}

#[tokio::test]
async fn lease_deleted_and_recreated_terms_keep_growing() -> anyhow::Result<()> {
    survives(Fault::LeaseRecreated).await
}

#[tokio::test]
async fn leader_wall_clock_stepped_back_with_a_client_go_standby() -> anyhow::Result<()> {
    survives(Fault::WallClockStepBack).await
}

#[test]
fn every_fault_has_a_test() {
    let source = include_str!("fault_suite.rs");
    for fault in Fault::ALL {
        assert!(
            source.contains(&format!("Fault::{fault:?})")),
            "no test runs {fault:?}"
        );
    }
}
