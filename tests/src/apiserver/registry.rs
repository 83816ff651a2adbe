//! The resource types the in-memory API server serves: the built-in ones below, and custom
//! resources added when a `CustomResourceDefinition` is created.
//!
//! Every per-type behaviour the real API server gets from a type's registry strategy
//! (`pkg/registry/...`) is a field here, so the store and the HTTP layer stay generic.

use serde_json::Value;

/// Something to do with the k8s-openapi type of a built-in kind (see [`visit_builtin`]).
pub trait BuiltInVisitor {
    type Output;
    fn visit<T>(self) -> Self::Output
    where
        T: k8s_openapi::schemars::JsonSchema + serde::Serialize + serde::de::DeserializeOwned;
}

/// Runs `visitor` with the Rust type of `kind`: the one place that maps kinds to types.
pub fn visit_builtin<V: BuiltInVisitor>(kind: BuiltInKind, visitor: V) -> V::Output {
    use BuiltInKind as K;
    use k8s_openapi::api::{apps, coordination, core, events, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    match kind {
        K::Namespace => visitor.visit::<core::v1::Namespace>(),
        K::ServiceAccount => visitor.visit::<core::v1::ServiceAccount>(),
        K::ConfigMap => visitor.visit::<core::v1::ConfigMap>(),
        K::Pod => visitor.visit::<core::v1::Pod>(),
        K::Secret => visitor.visit::<core::v1::Secret>(),
        K::Service => visitor.visit::<core::v1::Service>(),
        K::CoreEvent => visitor.visit::<core::v1::Event>(),
        K::EventsV1Event => visitor.visit::<events::v1::Event>(),
        K::Lease => visitor.visit::<coordination::v1::Lease>(),
        K::Deployment => visitor.visit::<apps::v1::Deployment>(),
        K::PodDisruptionBudget => visitor.visit::<policy::v1::PodDisruptionBudget>(),
        K::CustomResourceDefinition => {
            visitor.visit::<apiextensions::v1::CustomResourceDefinition>()
        }
        K::Role => visitor.visit::<rbac::v1::Role>(),
        K::ClusterRole => visitor.visit::<rbac::v1::ClusterRole>(),
        K::RoleBinding => visitor.visit::<rbac::v1::RoleBinding>(),
        K::ClusterRoleBinding => visitor.visit::<rbac::v1::ClusterRoleBinding>(),
    }
}

/// How a type's objects are checked and normalised on write, mirroring the real server's
/// decoding step.
#[derive(Clone, Debug)]
pub enum Schema {
    /// A built-in type: the object is decoded into the k8s-openapi struct and encoded again,
    /// so wrong field types are rejected and unknown fields are dropped, as the real server does.
    BuiltIn(BuiltInKind),
    /// A custom resource: pruned and type-checked against the CRD's structural
    /// `openAPIV3Schema` (the whole `schema.openAPIV3Schema` value of the served version).
    Structural(Value),
}

/// The built-in kinds with a typed round trip (see [`Schema::BuiltIn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltInKind {
    Namespace,
    ServiceAccount,
    ConfigMap,
    Pod,
    Secret,
    Service,
    CoreEvent,
    EventsV1Event,
    Lease,
    Deployment,
    PodDisruptionBudget,
    CustomResourceDefinition,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

/// An additional printer column (`kubectl get` columns), as in a CRD version's
/// `additionalPrinterColumns`.
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// A simple JSONPath such as `.spec.foo`.
    pub json_path: String,
    pub description: String,
    pub priority: i64,
}

/// One served resource type (one group/version/resource).
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    /// The plural resource name used in URLs, e.g. `leases`.
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Whether a `/status` subresource exists. When it does, main-resource writes keep the
    /// stored status and `/status` writes change nothing but status.
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained (set to 1 on create, bumped when anything
    /// outside `metadata` and — with a status subresource — `status` changes).
    pub tracks_generation: bool,
    /// Whether PUT of a missing object creates it (the strategy's `AllowCreateOnUpdate`).
    pub allow_create_on_update: bool,
    /// Whether a PUT without `metadata.resourceVersion` is accepted as an unconditional
    /// update (the strategy's `AllowUnconditionalUpdate`). Leases, CRDs and custom resources
    /// say no: such a PUT is 422 "must be specified for an update".
    pub allow_unconditional_update: bool,
    /// Whether DELETE answers with the deleted object (the store's `ReturnDeletedObject`)
    /// rather than a `Status`; either way an object still held by finalizers is returned.
    pub return_deleted_object: bool,
    /// Whether annotation changes also bump `generation` (apps workloads do).
    pub generation_counts_annotations: bool,
    /// Whether names must be DNS-1123 labels (namespaces) instead of subdomains; RBAC types
    /// only need to be valid path segments.
    pub name_rule: NameRule,
    /// Field selectors beyond `metadata.name` / `metadata.namespace`, as JSON paths without
    /// the leading dot (e.g. `involvedObject.name` for events).
    pub extra_field_selectors: Vec<String>,
    pub printer_columns: Vec<PrinterColumn>,
    pub schema: Schema,
}

/// Which object-name rule the real server applies to a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: at most 253 characters of `[a-z0-9.-]`, alphanumeric at both ends.
    Subdomain,
    /// RFC 1123 label: at most 63 characters of `[a-z0-9-]`, alphanumeric at both ends.
    Label,
    /// RFC 1035 label: an RFC 1123 label that starts with a letter (Services).
    Dns1035Label,
    /// Only "not `.`/`..`, no `/` or `%`" (RBAC objects, whose names contain `:`).
    PathSegment,
}

impl ResourceType {
    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or just `plural` in the core group), as used in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group`, as used in 422 Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether this is a custom resource defined by a CRD.
    pub fn is_custom(&self) -> bool {
        matches!(self.schema, Schema::Structural(_))
    }

    /// Verbs listed in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    status_subresource: bool,
    tracks_generation: bool,
    allow_create_on_update: bool,
    built_in: BuiltInKind,
) -> ResourceType {
    ResourceType {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status_subresource,
        tracks_generation,
        allow_create_on_update,
        allow_unconditional_update: true,
        return_deleted_object: false,
        generation_counts_annotations: false,
        name_rule: NameRule::Subdomain,
        extra_field_selectors: Vec::new(),
        printer_columns: Vec::new(),
        schema: Schema::BuiltIn(built_in),
    }
}

fn column(name: &str, type_: &str, json_path: &str) -> PrinterColumn {
    PrinterColumn {
        name: name.to_string(),
        type_: type_.to_string(),
        json_path: json_path.to_string(),
        description: String::new(),
        priority: 0,
    }
}

/// The built-in types, with the strategy flags of the real registry
/// (`AllowCreateOnUpdate`, status subresource, generation tracking).
pub fn builtin_types() -> Vec<ResourceType> {
    use BuiltInKind as K;
    let mut namespaces = builtin(
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        true,
        false,
        false,
        K::Namespace,
    );
    namespaces.name_rule = NameRule::Label;
    namespaces.return_deleted_object = true;
    namespaces.extra_field_selectors = vec!["status.phase".to_string()];
    namespaces.printer_columns = vec![column("Status", "string", ".status.phase")];

    let mut core_events = builtin(
        "",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
        true,
        K::CoreEvent,
    );
    // Core v1 Event creation skips name validation for backwards compatibility; only the
    // generic path-segment rule applies. events.k8s.io/v1 validates subdomains.
    core_events.name_rule = NameRule::PathSegment;
    core_events.extra_field_selectors = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    core_events.printer_columns = vec![
        column("Type", "string", ".type"),
        column("Reason", "string", ".reason"),
        column("Object", "string", ".involvedObject.name"),
        column("Message", "string", ".message"),
    ];

    let mut events_v1 = builtin(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        &["ev"],
        false,
        false,
        true,
        K::EventsV1Event,
    );
    events_v1.extra_field_selectors = [
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "regarding.fieldPath",
        "source",
        "reason",
        "reportingController",
        "type",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut leases = builtin(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        false,
        false,
        true,
        K::Lease,
    );
    leases.printer_columns = vec![column("Holder", "string", ".spec.holderIdentity")];
    leases.allow_unconditional_update = false;

    let mut crds = builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        true,
        false,
        K::CustomResourceDefinition,
    );
    crds.categories = vec!["api-extensions".to_string()];
    crds.allow_unconditional_update = false;
    crds.return_deleted_object = true;
    crds.printer_columns = vec![column("Created At", "date", ".metadata.creationTimestamp")];

    let mut deployments = builtin(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
        false,
        K::Deployment,
    );
    deployments.categories = vec!["all".to_string()];
    deployments.generation_counts_annotations = true;

    let mut services = builtin(
        "",
        "v1",
        "services",
        "Service",
        true,
        &["svc"],
        true,
        false,
        true,
        K::Service,
    );
    services.name_rule = NameRule::Dns1035Label;
    services.return_deleted_object = true;
    services.extra_field_selectors = vec!["spec.clusterIP".to_string(), "spec.type".to_string()];
    services.categories = vec!["all".to_string()];

    let mut rbac = Vec::new();
    for (plural, kind, namespaced, built_in) in [
        ("roles", "Role", true, K::Role),
        ("clusterroles", "ClusterRole", false, K::ClusterRole),
        ("rolebindings", "RoleBinding", true, K::RoleBinding),
        (
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            K::ClusterRoleBinding,
        ),
    ] {
        let mut t = builtin(
            "rbac.authorization.k8s.io",
            "v1",
            plural,
            kind,
            namespaced,
            &[],
            false,
            false,
            true,
            built_in,
        );
        t.name_rule = NameRule::PathSegment;
        rbac.push(t);
    }

    let mut service_accounts = builtin(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
        false,
        K::ServiceAccount,
    );
    service_accounts.return_deleted_object = true;

    let mut secrets = builtin(
        "",
        "v1",
        "secrets",
        "Secret",
        true,
        &[],
        false,
        false,
        false,
        K::Secret,
    );
    secrets.extra_field_selectors = vec!["type".to_string()];

    // Pods as objects only: nothing schedules or runs them (the tests' kubelet stand-in runs
    // a pod's processes and keeps its object), and no status is written for them.
    let mut pods = builtin(
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["po"],
        true,
        false,
        false,
        K::Pod,
    );
    pods.categories = vec!["all".to_string()];
    pods.extra_field_selectors = vec![
        "spec.nodeName".to_string(),
        "spec.serviceAccountName".to_string(),
        "status.phase".to_string(),
        "status.podIP".to_string(),
    ];

    let mut pdbs = builtin(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        true,
        false,
        K::PodDisruptionBudget,
    );
    // "Status update should only be allowed if version match", and PDB validation never
    // checks the name beyond the generic path-segment rule.
    pdbs.allow_unconditional_update = false;
    pdbs.name_rule = NameRule::PathSegment;

    let mut types = vec![
        namespaces,
        service_accounts,
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            false,
            false,
            false,
            K::ConfigMap,
        ),
        secrets,
        pods,
        services,
        core_events,
        events_v1,
        leases,
        crds,
        deployments,
        pdbs,
    ];
    types.extend(rbac);
    types
}
