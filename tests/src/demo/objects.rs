//! The NewResources the demo creates, and waiting for the controller to mark them ready.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, ListParams, PostParams};
use newresource_controller::crd::{NewResource, NewResourceSpec};
use tokio::time::Instant;

/// How often the demo lists the objects while waiting for them to be ready.
const POLL: Duration = Duration::from_millis(100);

/// `nr-01`, `nr-02`, ... for the numbers in `numbers`.
pub fn names(numbers: std::ops::RangeInclusive<u32>) -> Vec<String> {
    numbers.map(|i| format!("nr-{i:02}")).collect()
}

/// `nr-11..nr-15`, for messages.
pub fn range_label(names: &[String]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [first, .., last] => format!("{first}..{last}"),
    }
}

/// Creates one NewResource per name.
pub async fn create(api: &Api<NewResource>, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let object = NewResource::new(
            name,
            NewResourceSpec {
                foo: format!("demo {name}"),
            },
        );
        api.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create NewResource {name}"))?;
    }
    Ok(())
}

/// Lists the objects every [`POLL`] until all of `names` have `status.ready == true`; returns
/// the time it took. Fails after `timeout`, naming the objects still not ready.
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
        let ready: HashSet<String> = list
            .items
            .into_iter()
            .filter(|o| o.status.as_ref().is_some_and(|s| s.ready))
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
