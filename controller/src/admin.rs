//! Probes: `/healthz` and `/readyz` on `--health-probe-bind-address` (and `/metrics` on
//! `--metrics-bind-address`), answered by `plumbing::probes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leader_client::LeadershipGate;
use plumbing::probes::Probes;
use tokio::time::Instant;

/// Connections served at once on each admin port.
pub const MAX_CONNECTIONS: usize = 64;

/// What the probes report on.
#[derive(Clone)]
pub struct ControllerProbes {
    pub gate: LeadershipGate,
    /// Whether readiness depends on the sidecar (`--leader-elect`).
    pub needs_sidecar: bool,
    /// The last API check succeeded.
    pub api_ok: Arc<AtomicBool>,
    /// `/healthz` fails when the gate's follower has not run for this long.
    pub wedged_after: Duration,
}

impl Probes for ControllerProbes {
    /// Live unless the leadership follower is wedged (without leader election there is none).
    fn healthy(&self, now: Instant) -> Result<(), String> {
        match self.gate.follower_idle(now) {
            Some(idle) if idle >= self.wedged_after => Err(format!(
                "the leadership follower has not run for {}ms",
                idle.as_millis()
            )),
            _ => Ok(()),
        }
    }

    /// Ready when connected to the sidecar and the API (a standby is ready too).
    fn ready(&self) -> Result<(), String> {
        if self.needs_sidecar && !self.gate.reachable() {
            return Err("the leader sidecar is not reachable".into());
        }
        if !self.api_ok.load(Ordering::Relaxed) {
            return Err(
                "the Kubernetes API is not reachable (or newresources cannot be listed)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use leader_client::gate::GateView;

    use super::*;

    fn probes(gate: LeadershipGate, api_ok: bool) -> ControllerProbes {
        ControllerProbes {
            gate,
            needs_sidecar: true,
            api_ok: Arc::new(AtomicBool::new(api_ok)),
            wedged_after: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wedged_follower_fails_liveness_and_an_unreachable_sidecar_readiness() {
        let (publisher, gate) = LeadershipGate::new();
        let p = probes(gate, true);
        assert_eq!(p.ready(), Err("the leader sidecar is not reachable".into()));
        publisher.publish(GateView {
            grant: None,
            reachable: true,
        });
        assert_eq!(p.ready(), Ok(()));
        publisher.beat(Instant::now());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(p.healthy(Instant::now()), Ok(()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            p.healthy(Instant::now()),
            Err("the leadership follower has not run for 10000ms".into())
        );

        let without_leader_election = probes(LeadershipGate::always_open(), false);
        assert_eq!(without_leader_election.healthy(Instant::now()), Ok(()));
        assert!(without_leader_election.ready().is_err());
    }
}
