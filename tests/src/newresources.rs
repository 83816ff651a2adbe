//! NewResources for end-to-end suites and the demo: install the CRD, create objects, wait for
//! the controller to mark them ready.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use newresource_controller::crd::{NewResource, NewResourceSpec};
use tokio::time::Instant;

/// How often [`wait_ready`] lists the objects.
const POLL: Duration = Duration::from_millis(50);

/// Creates the CRD of `deploy/base/crd.yaml`; one that already exists (a real cluster) is fine.
pub async fn install_crd(client: &kube::Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = serde_json::from_value(crate::fixtures::newresource_crd())?;
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).context("cannot create the NewResource CRD"),
    }
}

/// `<prefix>-00`, `<prefix>-01`, ... for the numbers given.
pub fn names(prefix: &str, numbers: impl IntoIterator<Item = usize>) -> Vec<String> {
    numbers
        .into_iter()
        .map(|i| format!("{prefix}-{i:02}"))
        .collect()
}

/// Creates one NewResource per name.
pub async fn create(api: &Api<NewResource>, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let object = NewResource::new(
            name,
            NewResourceSpec {
                foo: format!("value of {name}"),
            },
        );
        api.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create NewResource {name}"))?;
    }
    Ok(())
}

/// Waits until every object of `names` is ready for its current generation; returns how long
/// that took. Fails after `timeout` (an upper bound for a hung run), naming the ones missing.
pub async fn wait_ready(
    api: &Api<NewResource>,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let list = api
            .list(&ListParams::default())
            .await
            .context("cannot list NewResources")?;
        let ready: std::collections::HashSet<String> = list
            .items
            .into_iter()
            .filter(|o| {
                o.status
                    .as_ref()
                    .is_some_and(|s| s.ready && s.observed_generation == o.metadata.generation)
            })
            .filter_map(|o| o.metadata.name)
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !ready.contains(n.as_str()))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "NewResources not ready after {timeout:?}: {}",
            missing.join(", ")
        );
        tokio::time::sleep(POLL).await;
    }
}
