//! Applies multi-document YAML manifests (the files in `deploy/`) through the API, as
//! `kubectl create -f` does: each document's kind is resolved by discovery.

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize;

/// Creates every object of `yaml` in order; returns `kind/name` of each.
pub async fn create_all(client: &kube::Client, yaml: &str) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value)?;
        let types = obj
            .types
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("a document without apiVersion/kind"))?;
        let gvk = GroupVersionKind::try_from(types)?;
        let (resource, caps) = pinned_kind(client, &gvk).await?;
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &obj).await?;
        created.push(format!("{}/{name}", gvk.kind));
    }
    Ok(created)
}
