//! Objects tests create: the NewResource CRD (as the controller will define it, issue #4)
//! and helpers to address its custom resources dynamically.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use serde_json::{Value, json};

/// The `newresources.apps.newresource.com` CRD: namespaced, `v1alpha1`, status subresource,
/// `spec.foo: string`, `status.ready: bool`, `status.observedGeneration`.
pub fn newresource_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "newresources.apps.newresource.com"},
        "spec": {
            "group": "apps.newresource.com",
            "names": {
                "kind": "NewResource",
                "plural": "newresources",
                "singular": "newresource",
                "shortNames": ["nr"],
                "categories": ["all"]
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Foo", "type": "string", "jsonPath": ".spec.foo"},
                    {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {"foo": {"type": "string"}}},
                        "status": {"type": "object", "properties": {
                            "ready": {"type": "boolean"},
                            "observedGeneration": {"type": "integer", "format": "int64"}
                        }}
                    }
                }}
            }]
        }
    })
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
