//! Objects tests create: the NewResource CRD (the generated file in `deploy/`, the same one users
//! apply) and helpers to address its custom resources dynamically.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use serde_json::Value;

/// The CRD exactly as `deploy/base/crd.yaml` holds it (generated from the controller's Rust
/// type; `controller/tests/crd.rs` fails if the file is stale).
pub const NEWRESOURCE_CRD_YAML: &str = include_str!("../../deploy/base/crd.yaml");

/// The `newresources.apps.newresource.com` CRD as JSON.
pub fn newresource_crd() -> Value {
    serde_yaml::from_str(NEWRESOURCE_CRD_YAML)
        .unwrap_or_else(|e| panic!("deploy/base/crd.yaml is not valid YAML: {e}"))
}

/// The dynamic API resource for NewResource objects.
pub fn newresource_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.newresource.com", "v1alpha1", "NewResource"),
        "newresources",
    )
}

/// A Lease named `name` held by `holder` for 15 seconds.
pub fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    }
}
