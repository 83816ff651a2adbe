//! A "pod" on one machine: a `leader-sidecar` and a `newresource-controller` process that talk
//! over the sidecar's leader API, as the two containers of the Deployment do.

use std::path::PathBuf;

use crate::controller::{ControllerProcess, ControllerSpec};
use crate::sidecar::{Sidecar, SidecarSpec};

/// How to start a pod.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    /// The sidecar's kubeconfig.
    pub sidecar: SidecarSpec,
    /// The controller's kubeconfig and extra flags (its `--leader-url` is set to the sidecar).
    pub controller_kubeconfig: PathBuf,
    pub controller_args: Vec<String>,
}

/// A running pod. Either container may be stopped and restarted, as the kubelet would.
pub struct Pod {
    pub name: String,
    pub sidecar: Sidecar,
    pub controller: ControllerProcess,
    spec: PodSpec,
}

impl Pod {
    /// Starts the sidecar, then the controller pointed at it.
    pub async fn start(spec: PodSpec) -> anyhow::Result<Self> {
        let sidecar = Sidecar::spawn(spec.sidecar.clone()).await?;
        let controller = ControllerProcess::spawn(
            ControllerSpec::new(
                &format!("{}/controller", spec.name),
                &spec.controller_kubeconfig,
                Some(sidecar.api),
            )
            .args(spec.controller_args.clone()),
        )
        .await?;
        Ok(Self {
            name: spec.name.clone(),
            sidecar,
            controller,
            spec,
        })
    }

    /// Starts a new sidecar process on the same leader API port (after the old one died), as
    /// the kubelet restarts a crashed container.
    pub async fn restart_sidecar(&mut self) -> anyhow::Result<()> {
        let mut spec = self.spec.sidecar.clone();
        spec.listen = Some(self.sidecar.api);
        self.sidecar = Sidecar::spawn(spec).await?;
        Ok(())
    }
}
