//! `GET /openapi/v2`: the Swagger 2.0 document of the served types.
//!
//! kubectl uses this document for client-side validation (`kubectl create/apply/replace -f`
//! with validation on, the default), for `kubectl explain`, and for the strategic-merge-patch
//! metadata of `kubectl apply`. kubectl 1.20 asks for it with
//! `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and decodes the body as
//! the gnostic `openapi_v2.Document` protobuf message; kube-openapi's `pkg/util/proto` then
//! turns every definition into a typed model and finds the model of a kind through the
//! `x-kubernetes-group-version-kind` vendor extension. If that parse fails, kubectl refuses to
//! create anything with validation on, so every definition published here stays inside the
//! subset that parser accepts:
//!
//! * a `$ref` carries no `type` and no `properties`, and points into `#/definitions/`;
//! * `type` is a single `string`, `integer`, `number`, `boolean`, `object` or `array`, or absent
//!   (an untyped schema is an arbitrary value);
//! * an `array` has exactly one `items` schema;
//! * an `object` without `properties` is a map of its `additionalProperties` schema (or of
//!   arbitrary values).
//!
//! Built-in types come from k8s-openapi's `JsonSchema` impls (its `schemars` feature), converted
//! to that subset with the few corrections the real server's document has (int-or-string,
//! `Quantity`, `JSON`, which fields are required, patch strategies). Custom resources are
//! converted from the CRD's `openAPIV3Schema` the way apiextensions-apiserver publishes them in
//! v2 (`pkg/controller/openapi/v2.ToStructuralOpenAPIV2` and `builder.buildKubeNative`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta;
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use prost::Message as _;
use serde_json::{Map, Value, json};

use super::fields::str_at;
use super::registry::{BuiltInKind, BuiltInVisitor, ResourceType, Schema, visit_builtin};

/// The protobuf media type kubectl (client-go discovery) asks for in `Accept`. Answer with
/// [`PROTOBUF_CONTENT_TYPE`], not this, as the `Content-Type`.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` to answer a protobuf request with. Not [`PROTOBUF_MEDIA_TYPE`]: `@` is
/// not a token character, so Go's `mime.ParseMediaType` (client-go's response handling) fails
/// on that spelling with "mime: unexpected content after media subtype" and kubectl reports an
/// InternalError. The real server answers with this spelling for both request spellings.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The Kubernetes version whose built-in schemas are published (k8s-openapi's `v1_33`).
const KUBERNETES_VERSION: &str = "v1.33.0";

/// The vendor extension kubectl uses to find the model of a group/version/kind.
const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

const PRESERVE_UNKNOWN_FIELDS: &str = "x-kubernetes-preserve-unknown-fields";
const EMBEDDED_RESOURCE: &str = "x-kubernetes-embedded-resource";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const EXTENSIONS_JSON: &str = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON";
const CORE_EVENT: &str = "io.k8s.api.core.v1.Event";

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DESCRIPTION: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// Builds the OpenAPI v2 document (as the real server's `/openapi/v2` JSON) for the served
/// types: one definition per served kind and per list kind, each with its
/// `x-kubernetes-group-version-kind`, plus every definition they reference. `paths` is empty:
/// neither kube-openapi's model parser nor kubectl's validation reads it.
pub fn document(types: &[ResourceType]) -> Value {
    let catalog = builtin_catalog();
    let mut definitions: BTreeMap<String, Value> = BTreeMap::new();

    for resource in types {
        let name = match &resource.schema {
            Schema::BuiltIn(kind) => {
                let name = builtin_definition_name(*kind);
                if !definitions.contains_key(&name) {
                    // A kind missing from the catalog would be a bug in `generate_builtin`; an
                    // untyped definition keeps the document parseable meanwhile.
                    let schema = catalog.get(&name).cloned().unwrap_or_else(|| json!({}));
                    definitions.insert(name.clone(), schema);
                }
                name
            }
            Schema::Structural(v3) => {
                let name = rest_friendly_name(&resource.group, &resource.version, &resource.kind);
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| custom_resource_schema(v3));
                name
            }
        };
        if let Some(definition) = definitions.get_mut(&name) {
            add_group_version_kind(definition, resource, &resource.kind);
        }

        let list_name = list_definition_name(&name, resource);
        let list = definitions
            .entry(list_name)
            .or_insert_with(|| list_schema(&name, resource));
        add_group_version_kind(list, resource, &resource.list_kind);
    }

    // Pull in everything the published definitions reference, transitively, so kube-openapi
    // finds no dangling `$ref`.
    let mut pending: Vec<String> = Vec::new();
    for definition in definitions.values() {
        collect_refs(definition, &mut pending);
    }
    while let Some(name) = pending.pop() {
        if definitions.contains_key(&name) {
            continue;
        }
        let schema = catalog.get(&name).cloned().unwrap_or_else(|| json!({}));
        collect_refs(&schema, &mut pending);
        definitions.insert(name, schema);
    }

    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": {},
        "definitions": definitions,
    })
}

/// Encodes a document produced by [`document`] as the gnostic `openapi_v2.Document` protobuf
/// kubectl decodes. Covers the schema keywords `document` emits (`$ref`, `type`, `format`,
/// `title`, `description`, `required`, `properties`, `items`, `additionalProperties`, `allOf`,
/// `readOnly`, `default`, `example`, `enum` and `x-` extensions); vendor extension values are
/// carried as YAML text, as gnostic does.
pub fn to_protobuf(doc: &Value) -> Vec<u8> {
    let info = doc.get("info").map(|info| pb::Info {
        title: str_at(info, "title").to_string(),
        version: str_at(info, "version").to_string(),
        description: str_at(info, "description").to_string(),
        vendor_extension: vendor_extensions(info),
    });
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .map(|paths| pb::Paths {
            vendor_extension: vendor_extensions_of(paths),
            path: paths
                .keys()
                .filter(|name| !name.starts_with("x-"))
                .map(|name| pb::NamedPathItem {
                    name: name.clone(),
                    value: Some(pb::PathItem::default()),
                })
                .collect(),
        });
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .map(|definitions| pb::Definitions {
            additional_properties: definitions
                .iter()
                .map(|(name, schema)| pb::NamedSchema {
                    name: name.clone(),
                    value: Some(schema_to_pb(schema)),
                })
                .collect(),
        });
    pb::Document {
        swagger: str_at(doc, "swagger").to_string(),
        info,
        paths,
        definitions,
        vendor_extension: vendor_extensions(doc),
    }
    .encode_to_vec()
}

/// Whether a request's `Accept` header selects the protobuf encoding. Mirrors kube-openapi's
/// handler: media ranges are ranked by `q` and then by specificity, and the best one that
/// either encoding matches wins; JSON is listed first there, so wildcards select JSON.
pub fn wants_protobuf(accept: &str) -> bool {
    // (q, specificity, protobuf?) of the best range seen so far.
    let mut best: Option<(f64, u8, bool)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| param.split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, value)| value.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let (specificity, protobuf) = match media.as_str() {
            PROTOBUF_MEDIA_TYPE | PROTOBUF_CONTENT_TYPE => (2, true),
            "application/json" => (2, false),
            "application/*" => (1, false),
            "*/*" => (0, false),
            _ => continue,
        };
        if best.is_none_or(|(best_q, best_specificity, _)| {
            q > best_q || (q == best_q && specificity > best_specificity)
        }) {
            best = Some((q, specificity, protobuf));
        }
    }
    best.is_some_and(|(_, _, protobuf)| protobuf)
}

// ---------------------------------------------------------------------------------------------
// Built-in types

/// The converted definitions of every built-in kind and everything they reference, computed
/// once: generating and converting them takes milliseconds, and kubectl fetches the document
/// on every invocation.
pub fn builtin_catalog() -> &'static BTreeMap<String, Value> {
    static CATALOG: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    CATALOG.get_or_init(generate_builtin_catalog)
}

fn generate_builtin_catalog() -> BTreeMap<String, Value> {
    // Draft 7 puts subschemas under `#/definitions/`, as Swagger 2.0 does. Its default
    // transforms (e.g. wrapping `$ref` siblings in `allOf`) are dropped: the conversion below
    // does what kube-openapi needs.
    let settings = SchemaSettings::draft07().with(|settings| {
        settings.transforms.clear();
        settings.meta_schema = None;
    });
    let mut generator = SchemaGenerator::new(settings);
    let mut kinds = Vec::new();
    for resource in super::registry::builtin_types() {
        if let Schema::BuiltIn(kind) = resource.schema {
            kinds.push(generate_builtin(kind, &mut generator));
        }
    }
    generator.subschema_for::<meta::v1::ObjectMeta>();
    generator.subschema_for::<meta::v1::ListMeta>();

    let mut catalog: BTreeMap<String, Value> = generator
        .take_definitions(false)
        .into_iter()
        .map(|(name, schema)| {
            let converted = builtin_to_v2(&schema);
            (name, converted)
        })
        .collect();

    // Corrections where k8s-openapi's schemas differ from what the real server publishes.
    if let Some(quantity) = catalog.get_mut(QUANTITY) {
        // k8s-openapi marks Quantity int-or-string; the real document says `type: string`,
        // which kubectl's validation treats as "any scalar" and so accepts `cpu: 1` too.
        *quantity = with_description(json!({"type": "string"}), quantity);
    }
    if let Some(any_json) = catalog.get_mut(EXTENSIONS_JSON) {
        // k8s-openapi says `type: object`; the value of `default`, `enum` and `example` in a
        // CRD schema is any JSON value, and the real document leaves it untyped.
        *any_json = with_description(json!({}), any_json);
    }
    for name in &kinds {
        if let Some(definition) = catalog.get_mut(name) {
            fix_top_level_kind(name, definition);
        }
    }
    for (definition, property, strategy, merge_key) in PATCH_STRATEGIES {
        let Some(schema) = catalog
            .get_mut(*definition)
            .and_then(|definition| definition.get_mut("properties"))
            .and_then(|properties| properties.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        schema.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if let Some(key) = merge_key {
            schema.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
    catalog
}

/// Registers a built-in kind's schema (and everything it references) with the generator and
/// returns its definition name.
fn generate_builtin(kind: BuiltInKind, generator: &mut SchemaGenerator) -> String {
    struct Register<'a>(&'a mut SchemaGenerator);
    impl BuiltInVisitor for Register<'_> {
        type Output = String;
        fn visit<T>(self) -> String
        where
            T: JsonSchema + serde::Serialize + serde::de::DeserializeOwned,
        {
            self.0.subschema_for::<T>();
            T::schema_name().into_owned()
        }
    }
    visit_builtin(kind, Register(generator))
}

/// The definition name of a built-in kind, e.g. `io.k8s.api.coordination.v1.Lease`.
pub fn builtin_definition_name(kind: BuiltInKind) -> String {
    struct Name;
    impl BuiltInVisitor for Name {
        type Output = String;
        fn visit<T>(self) -> String
        where
            T: JsonSchema + serde::Serialize + serde::de::DeserializeOwned,
        {
            T::schema_name().into_owned()
        }
    }
    visit_builtin(kind, Name)
}

/// Converts one k8s-openapi (JSON Schema draft 7) schema to the Swagger 2.0 subset
/// kube-openapi parses into a typed model.
fn builtin_to_v2(schema: &Value) -> Value {
    let Some(source) = schema.as_object() else {
        // `true`/`false` schemas: kube-openapi has no such thing; any value is the safe reading.
        return json!({});
    };
    let mut out = Map::new();
    copy_strings(source, &mut out, &["description"]);

    if let Some(reference) = source.get("$ref").and_then(Value::as_str) {
        // kube-openapi rejects a `$ref` with a `type` or `properties` next to it.
        out.insert("$ref".into(), json!(reference));
        copy_extensions(source, &mut out);
        return Value::Object(out);
    }
    if source.get(INT_OR_STRING) == Some(&Value::Bool(true)) {
        // What the real document publishes for IntOrString; kubectl accepts any scalar there.
        out.insert("type".into(), json!("string"));
        out.insert("format".into(), json!("int-or-string"));
        return Value::Object(out);
    }
    if ["oneOf", "anyOf", "allOf", "not"]
        .iter()
        .any(|keyword| source.contains_key(*keyword))
    {
        // Unions have no typed model in kube-openapi: publish them untyped (arbitrary).
        return Value::Object(out);
    }

    copy_strings(source, &mut out, &["format", "title"]);
    let schema_type = single_type(source.get("type"));
    if let Some(properties) = source.get("properties").and_then(Value::as_object) {
        let converted: Map<String, Value> = properties
            .iter()
            .map(|(name, property)| (name.clone(), builtin_to_v2(property)))
            .collect();
        out.insert("properties".into(), Value::Object(converted));
    }
    match source.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            out.insert("additionalProperties".into(), json!(allowed));
        }
        Some(additional @ Value::Object(_)) => {
            out.insert("additionalProperties".into(), builtin_to_v2(additional));
        }
        _ => {}
    }
    if let Some(items @ Value::Object(_)) = source.get("items") {
        out.insert("items".into(), builtin_to_v2(items));
    }
    copy_required(source, &mut out);
    copy_extensions(source, &mut out);
    set_type(&mut out, schema_type);
    Value::Object(out)
}

/// The one type of a schema, if it has exactly one besides `null`.
fn single_type(schema_type: Option<&Value>) -> Option<String> {
    match schema_type? {
        Value::String(single) => Some(single.clone()),
        Value::Array(types) => {
            let mut non_null = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|name| *name != "null");
            match (non_null.next(), non_null.next()) {
                (Some(single), None) => Some(single.to_string()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Sets `type`, except `array` without an `items` schema, which kube-openapi rejects
/// ("array should have exactly one sub-item"); untyped is what the real server publishes then.
fn set_type(out: &mut Map<String, Value>, schema_type: Option<String>) {
    let Some(schema_type) = schema_type else {
        return;
    };
    if schema_type == "array" && !out.contains_key("items") {
        return;
    }
    if !matches!(
        schema_type.as_str(),
        "string" | "integer" | "number" | "boolean" | "object" | "array"
    ) {
        return;
    }
    out.insert("type".into(), Value::String(schema_type));
}

/// Top-level kinds accept `apiVersion`, `kind` and `metadata`, and require what the real
/// document requires: k8s-openapi marks `metadata` required on every resource (its Rust field
/// is not optional), upstream only on core/v1 Event.
fn fix_top_level_kind(name: &str, definition: &mut Value) {
    let Some(definition) = definition.as_object_mut() else {
        return;
    };
    ensure_type_meta(definition);
    if name != CORE_EVENT {
        let required = definition
            .get("required")
            .and_then(Value::as_array)
            .map(|required| {
                required
                    .iter()
                    .filter(|field| field.as_str() != Some("metadata"))
                    .cloned()
                    .collect::<Vec<_>>()
            });
        match required {
            Some(required) if required.is_empty() => {
                definition.remove("required");
            }
            Some(required) => {
                definition.insert("required".into(), Value::Array(required));
            }
            None => {}
        }
    }
}

/// Adds the `apiVersion`, `kind` and `metadata` properties every top-level kind has.
fn ensure_type_meta(definition: &mut Map<String, Value>) {
    let properties = definition.entry("properties").or_insert_with(|| json!({}));
    if let Some(properties) = properties.as_object_mut() {
        properties
            .entry("apiVersion")
            .or_insert_with(|| json!({"type": "string", "description": API_VERSION_DESCRIPTION}));
        properties
            .entry("kind")
            .or_insert_with(|| json!({"type": "string", "description": KIND_DESCRIPTION}));
        properties.entry("metadata").or_insert_with(
            || json!({"$ref": definition_ref(OBJECT_META), "description": METADATA_DESCRIPTION}),
        );
    }
}

/// `patchStrategy`/`patchMergeKey` struct tags of the built-in types reachable from the served
/// kinds, published as `x-kubernetes-patch-strategy`/`x-kubernetes-patch-merge-key` by the real
/// server (k8s-openapi's schemas do not carry them). `kubectl apply` computes its strategic
/// merge patch from these when the document has the kind, so without them it would replace
/// whole lists (containers, env, ports, ...) instead of merging them by key.
const PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    (OBJECT_META, "finalizers", "merge", None),
    (OBJECT_META, "ownerReferences", "merge", Some("uid")),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

// ---------------------------------------------------------------------------------------------
// Custom resources

/// The v2 definition of a custom resource, from the served version's `openAPIV3Schema`, as
/// apiextensions-apiserver's `buildKubeNative` publishes it for v2.
fn custom_resource_schema(v3: &Value) -> Value {
    let preserve_root = v3.get(PRESERVE_UNKNOWN_FIELDS) == Some(&Value::Bool(true));
    if !v3.is_object() || preserve_root {
        // No schema, or unknown fields kept at the root: an arbitrary object. Not even
        // apiVersion/kind/metadata are declared, since kubectl would then reject every other
        // field as unknown.
        return json!({"type": "object"});
    }
    let mut converted = structural_to_v2(v3);
    add_embedded_properties(&mut converted);
    if let Some(root) = converted.as_object_mut() {
        // `SetProperty` in the real builder: these replace whatever the CRD declared.
        insert_type_meta_properties(root);
    }
    converted
}

/// `ToStructuralOpenAPIV2`: drops what v2 (and kubectl) cannot express. Junctors
/// (`allOf`/`anyOf`/`oneOf`/`not`) and value validations go; a `nullable` node becomes untyped
/// and leaves its parent's `required`; a node keeping unknown fields loses `properties` and
/// `items` (kubectl would otherwise reject the unknown fields); an `array` left without
/// `items` becomes untyped.
fn structural_to_v2(schema: &Value) -> Value {
    let Some(source) = schema.as_object() else {
        return json!({});
    };
    let mut out = Map::new();
    copy_strings(source, &mut out, &["description", "title", "format"]);
    let nullable = source.get("nullable") == Some(&Value::Bool(true));
    let preserve = source.get(PRESERVE_UNKNOWN_FIELDS) == Some(&Value::Bool(true));
    let mut schema_type = source
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    if nullable {
        schema_type = None;
    }

    let keep_children = !nullable && !preserve;
    if keep_children {
        if let Some(properties) = source.get("properties").and_then(Value::as_object) {
            let converted: Map<String, Value> = properties
                .iter()
                .map(|(name, property)| (name.clone(), structural_to_v2(property)))
                .collect();
            out.insert("properties".into(), Value::Object(converted));
        }
        if let Some(items @ Value::Object(_)) = source.get("items") {
            out.insert("items".into(), structural_to_v2(items));
        }
    }
    let mut additional_nullable = false;
    match source.get("additionalProperties") {
        Some(Value::Bool(allowed)) => {
            out.insert("additionalProperties".into(), json!(allowed));
        }
        Some(additional @ Value::Object(_)) => {
            additional_nullable = additional.get("nullable") == Some(&Value::Bool(true));
            out.insert("additionalProperties".into(), structural_to_v2(additional));
        }
        _ => {}
    }

    if let Some(required) = source.get("required").and_then(Value::as_array) {
        let properties = source.get("properties").and_then(Value::as_object);
        let required: Vec<Value> = required
            .iter()
            .filter(|field| {
                let nullable_property = field
                    .as_str()
                    .and_then(|field| properties?.get(field))
                    .is_some_and(|property| property.get("nullable") == Some(&Value::Bool(true)));
                !nullable_property
            })
            .cloned()
            .collect();
        if !required.is_empty() && !additional_nullable {
            out.insert("required".into(), Value::Array(required));
        }
    }
    copy_extensions(source, &mut out);
    set_type(&mut out, schema_type);
    Value::Object(out)
}

/// `addEmbeddedProperties`: an `x-kubernetes-embedded-resource` object gets `apiVersion`,
/// `kind` (both required) and `metadata`, unless it keeps unknown fields (v2 then publishes it
/// open so kubectl does not reject its other fields).
/// Sets the `apiVersion`, `kind` and `metadata` properties of an object schema.
fn insert_type_meta_properties(schema: &mut Map<String, Value>) {
    let properties = schema.entry("properties").or_insert_with(|| json!({}));
    if let Some(properties) = properties.as_object_mut() {
        properties.insert(
            "apiVersion".into(),
            json!({"type": "string", "description": API_VERSION_DESCRIPTION}),
        );
        properties.insert(
            "kind".into(),
            json!({"type": "string", "description": KIND_DESCRIPTION}),
        );
        properties.insert(
            "metadata".into(),
            json!({"$ref": definition_ref(OBJECT_META), "description": METADATA_DESCRIPTION}),
        );
    }
}

fn add_embedded_properties(schema: &mut Value) {
    let Some(node) = schema.as_object_mut() else {
        return;
    };
    if let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) {
        for property in properties.values_mut() {
            add_embedded_properties(property);
        }
    }
    if let Some(items) = node.get_mut("items") {
        add_embedded_properties(items);
    }
    if let Some(additional) = node.get_mut("additionalProperties") {
        add_embedded_properties(additional);
    }
    if node.get(PRESERVE_UNKNOWN_FIELDS) == Some(&Value::Bool(true))
        || node.get(EMBEDDED_RESOURCE) != Some(&Value::Bool(true))
    {
        return;
    }
    insert_type_meta_properties(node);
    let required = node.entry("required").or_insert_with(|| json!([]));
    if let Some(required) = required.as_array_mut() {
        for field in ["kind", "apiVersion"] {
            if !required.iter().any(|existing| existing == field) {
                required.push(json!(field));
            }
        }
    }
}

/// `util.ToRESTFriendlyName("group/version/kind")`: the group's DNS labels reversed, e.g.
/// `stable.example.com/v1/CronTab` -> `com.example.stable.v1.CronTab`.
fn rest_friendly_name(group: &str, version: &str, kind: &str) -> String {
    let group: Cow<'_, str> = if group.contains('.') {
        Cow::Owned(group.split('.').rev().collect::<Vec<_>>().join("."))
    } else {
        Cow::Borrowed(group)
    };
    if group.is_empty() {
        format!("{version}.{kind}")
    } else {
        format!("{group}.{version}.{kind}")
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// The list kind's definition name: the kind's name with the kind replaced by the list kind
/// (`io.k8s.api.coordination.v1.LeaseList`, `com.example.stable.v1.CronTabList`).
fn list_definition_name(item_name: &str, resource: &ResourceType) -> String {
    let prefix = item_name
        .strip_suffix(resource.kind.as_str())
        .unwrap_or(item_name);
    let prefix = if prefix.is_empty() || prefix.ends_with('.') {
        prefix.to_string()
    } else {
        format!("{prefix}.")
    };
    format!("{prefix}{}", resource.list_kind)
}

/// The schema of a list kind, as the real server publishes it for lists.
fn list_schema(item_name: &str, resource: &ResourceType) -> Value {
    json!({
        "description": format!("{} is a list of {}", resource.list_kind, resource.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": API_VERSION_DESCRIPTION},
            "items": {
                "description": format!("List of {}.", resource.plural),
                "type": "array",
                "items": {"$ref": definition_ref(item_name)},
            },
            "kind": {"type": "string", "description": KIND_DESCRIPTION},
            "metadata": {"$ref": definition_ref(LIST_META), "description": LIST_METADATA_DESCRIPTION},
        },
    })
}

/// Appends `{group, version, kind}` to a definition's `x-kubernetes-group-version-kind`.
fn add_group_version_kind(definition: &mut Value, resource: &ResourceType, kind: &str) {
    let Some(definition) = definition.as_object_mut() else {
        return;
    };
    let entry = json!({"group": resource.group, "kind": kind, "version": resource.version});
    let list = definition.entry(GVK_EXTENSION).or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut()
        && !list.contains(&entry)
    {
        list.push(entry);
    }
}

fn definition_ref(name: &str) -> String {
    format!("#/definitions/{name}")
}

/// Collects the definition names of every `$ref` in a schema (not descending into vendor
/// extension values, which are data).
fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        return;
    };
    if let Some(name) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| reference.strip_prefix("#/definitions/"))
    {
        out.push(name.to_string());
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for property in properties.values() {
            collect_refs(property, out);
        }
    }
    for keyword in ["items", "additionalProperties"] {
        match node.get(keyword) {
            Some(Value::Array(schemas)) => schemas.iter().for_each(|s| collect_refs(s, out)),
            Some(schema) => collect_refs(schema, out),
            None => {}
        }
    }
    if let Some(all_of) = node.get("allOf").and_then(Value::as_array) {
        for schema in all_of {
            collect_refs(schema, out);
        }
    }
}

fn with_description(mut schema: Value, from: &Value) -> Value {
    if let (Some(target), Some(description)) = (schema.as_object_mut(), from.get("description")) {
        target.insert("description".into(), description.clone());
    }
    schema
}

fn copy_strings(source: &Map<String, Value>, out: &mut Map<String, Value>, keys: &[&str]) {
    for key in keys {
        if let Some(value @ Value::String(_)) = source.get(*key) {
            out.insert((*key).to_string(), value.clone());
        }
    }
}

fn copy_required(source: &Map<String, Value>, out: &mut Map<String, Value>) {
    if let Some(required) = source.get("required").and_then(Value::as_array) {
        let required: Vec<Value> = required.iter().filter(|v| v.is_string()).cloned().collect();
        if !required.is_empty() {
            out.insert("required".into(), Value::Array(required));
        }
    }
}

/// Copies the `x-kubernetes-*` vendor extensions (list/map types, embedded resources,
/// int-or-string, ...): kube-openapi keeps them as opaque metadata.
fn copy_extensions(source: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in source {
        if key.starts_with("x-kubernetes-") {
            out.insert(key.clone(), value.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf encoding

fn vendor_extensions(value: &Value) -> Vec<pb::NamedAny> {
    value
        .as_object()
        .map(vendor_extensions_of)
        .unwrap_or_default()
}

fn vendor_extensions_of(object: &Map<String, Value>) -> Vec<pb::NamedAny> {
    object
        .iter()
        .filter(|(key, _)| key.starts_with("x-"))
        .map(|(key, value)| pb::NamedAny {
            name: key.clone(),
            value: Some(any(value)),
        })
        .collect()
}

/// gnostic's `Any`: the value as YAML text (kube-openapi unmarshals it with `yaml.v2`).
fn any(value: &Value) -> pb::Any {
    pb::Any {
        value: None,
        yaml: to_yaml(value),
    }
}

fn schema_to_pb(schema: &Value) -> pb::Schema {
    let Some(source) = schema.as_object() else {
        return pb::Schema::default();
    };
    let text = |key: &str| str_at(schema, key).to_string();
    let types = match source.get("type") {
        Some(Value::String(single)) => vec![single.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let items = match source.get("items") {
        Some(Value::Array(schemas)) => Some(pb::ItemsItem {
            schema: schemas.iter().map(schema_to_pb).collect(),
        }),
        Some(single @ Value::Object(_)) => Some(pb::ItemsItem {
            schema: vec![schema_to_pb(single)],
        }),
        _ => None,
    };
    let additional_properties = match source.get("additionalProperties") {
        Some(Value::Bool(allowed)) => Some(pb::AdditionalPropertiesItem {
            oneof: Some(pb::AdditionalPropertiesOneof::Boolean(*allowed)),
        }),
        Some(additional @ Value::Object(_)) => Some(pb::AdditionalPropertiesItem {
            oneof: Some(pb::AdditionalPropertiesOneof::Schema(Box::new(
                schema_to_pb(additional),
            ))),
        }),
        _ => None,
    };
    let properties = source
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| pb::Properties {
            additional_properties: properties
                .iter()
                .map(|(name, property)| pb::NamedSchema {
                    name: name.clone(),
                    value: Some(schema_to_pb(property)),
                })
                .collect(),
        });
    pb::Schema {
        xref: text("$ref"),
        format: text("format"),
        title: text("title"),
        description: text("description"),
        default: source.get("default").map(any).map(Box::new),
        required: source
            .get("required")
            .and_then(Value::as_array)
            .map(|required| {
                required
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        r#enum: source
            .get("enum")
            .and_then(Value::as_array)
            .map(|values| values.iter().map(any).collect())
            .unwrap_or_default(),
        additional_properties: additional_properties.map(Box::new),
        r#type: (!types.is_empty()).then_some(pb::TypeItem { value: types }),
        items,
        all_of: source
            .get("allOf")
            .and_then(Value::as_array)
            .map(|schemas| schemas.iter().map(schema_to_pb).collect())
            .unwrap_or_default(),
        properties,
        read_only: source.get("readOnly") == Some(&Value::Bool(true)),
        example: source.get("example").map(any).map(Box::new),
        vendor_extension: vendor_extensions_of(source),
    }
}

/// Renders a JSON value as the YAML text gnostic stores extension values in. JSON is YAML (flow
/// style) and every JSON string is double-quoted, so `yaml.v2`'s YAML 1.1 rules cannot read
/// `""`, `on` or `1.0` back as anything but strings: `group: ""` must stay a string for kubectl
/// to accept the core group's group-version-kind.
fn to_yaml(value: &Value) -> String {
    format!("{value}\n")
}

/// The subset of gnostic's `openapi_v2` messages (github.com/google/gnostic,
/// `openapiv2/OpenAPIv2.proto`) this server emits, with the field numbers of that file.
/// Fields left out are ones `document` never produces; decoders skip absent fields.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
        #[prost(message, repeated, tag = "16")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(message, repeated, tag = "7")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "1")]
        pub vendor_extension: Vec<NamedAny>,
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }

    /// Operations are not published (see [`super::document`]); only the path's `$ref`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(string, tag = "1")]
        pub xref: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    /// gnostic's `Any`: field 1 is a `google.protobuf.Any` (never set here), field 2 the YAML.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(message, optional, tag = "1")]
        pub value: Option<ProtobufAny>,
        #[prost(string, tag = "2")]
        pub yaml: String,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProtobufAny {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub xref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "3")]
        pub title: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(message, optional, boxed, tag = "5")]
        pub default: Option<Box<Any>>,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, repeated, tag = "20")]
        pub r#enum: Vec<Any>,
        #[prost(message, optional, boxed, tag = "21")]
        pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, repeated, tag = "24")]
        pub all_of: Vec<Schema>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(bool, tag = "27")]
        pub read_only: bool,
        #[prost(message, optional, boxed, tag = "30")]
        pub example: Option<Box<Any>>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(oneof = "AdditionalPropertiesOneof", tags = "1, 2")]
        pub oneof: Option<AdditionalPropertiesOneof>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum AdditionalPropertiesOneof {
        #[prost(message, tag = "1")]
        Schema(Box<Schema>),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;
    use serde_json::{Value, json};

    use super::super::registry::{NameRule, ResourceType, Schema, builtin_types};
    use super::*;

    fn decode(doc: &Value) -> pb::Document {
        pb::Document::decode(to_protobuf(doc).as_slice()).expect("valid protobuf")
    }

    fn definitions(doc: &pb::Document) -> BTreeMap<&str, &pb::Schema> {
        doc.definitions
            .as_ref()
            .expect("definitions")
            .additional_properties
            .iter()
            .map(|named| (named.name.as_str(), named.value.as_ref().expect("schema")))
            .collect()
    }

    fn property<'a>(schema: &'a pb::Schema, name: &str) -> &'a pb::Schema {
        schema
            .properties
            .as_ref()
            .and_then(|p| p.additional_properties.iter().find(|n| n.name == name))
            .and_then(|n| n.value.as_ref())
            .unwrap_or_else(|| panic!("property {name}"))
    }

    fn types(schema: &pb::Schema) -> Vec<&str> {
        schema
            .r#type
            .as_ref()
            .map(|t| t.value.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn extension<'a>(schema: &'a pb::Schema, name: &str) -> Option<&'a str> {
        schema
            .vendor_extension
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_ref())
            .map(|any| any.yaml.as_str())
    }

    fn group_version_kinds(schema: &pb::Schema) -> Value {
        let yaml = extension(schema, GVK_EXTENSION).expect("gvk extension");
        serde_yaml::from_str(yaml).expect("gvk extension is YAML")
    }

    fn custom_type(kind: &str, schema: Value) -> ResourceType {
        ResourceType {
            group: "example.com".into(),
            version: "v1".into(),
            plural: format!("{}s", kind.to_lowercase()),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced: true,
            short_names: Vec::new(),
            categories: Vec::new(),
            status_subresource: true,
            tracks_generation: true,
            allow_create_on_update: false,
            allow_unconditional_update: false,
            return_deleted_object: false,
            generation_counts_annotations: false,
            name_rule: NameRule::Subdomain,
            extra_field_selectors: Vec::new(),
            printer_columns: Vec::new(),
            schema: Schema::Structural(schema),
        }
    }

    fn widget() -> ResourceType {
        custom_type(
            "Widget",
            json!({
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {"foo": {"type": "string"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                },
            }),
        )
    }

    fn all_types() -> Vec<ResourceType> {
        let mut types = builtin_types();
        types.push(widget());
        types
    }

    #[test]
    fn lease_definition_carries_its_group_version_kind_as_yaml() {
        let doc = decode(&document(&builtin_types()));
        let defs = definitions(&doc);
        let lease = defs["io.k8s.api.coordination.v1.Lease"];
        assert_eq!(
            group_version_kinds(lease),
            json!([{"group": "coordination.k8s.io", "kind": "Lease", "version": "v1"}])
        );
        // The core group must stay the string "" under YAML 1.1 (yaml.v2), or kubectl skips it.
        let config_map = defs["io.k8s.api.core.v1.ConfigMap"];
        let yaml = extension(config_map, GVK_EXTENSION).expect("gvk");
        assert!(yaml.contains(r#""group":"""#), "{yaml}");
        assert_eq!(
            group_version_kinds(config_map),
            json!([{"group": "", "kind": "ConfigMap", "version": "v1"}])
        );
        let lists = defs["io.k8s.api.coordination.v1.LeaseList"];
        assert_eq!(
            group_version_kinds(lists),
            json!([{"group": "coordination.k8s.io", "kind": "LeaseList", "version": "v1"}])
        );
        assert_eq!(doc.swagger, "2.0");
        assert_eq!(
            doc.info.as_ref().map(|i| i.title.as_str()),
            Some("Kubernetes")
        );
    }

    #[test]
    fn references_survive_encoding() {
        let doc = decode(&document(&builtin_types()));
        let defs = definitions(&doc);
        let lease = defs["io.k8s.api.coordination.v1.Lease"];
        let spec = property(lease, "spec");
        assert_eq!(
            spec.xref,
            "#/definitions/io.k8s.api.coordination.v1.LeaseSpec"
        );
        assert!(spec.r#type.is_none() && spec.properties.is_none());
        assert_eq!(
            property(lease, "metadata").xref,
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        let lease_spec = defs["io.k8s.api.coordination.v1.LeaseSpec"];
        assert_eq!(
            types(property(lease_spec, "leaseDurationSeconds")),
            ["integer"]
        );
        assert_eq!(types(property(lease_spec, "holderIdentity")), ["string"]);
        // Maps keep their value schema through the additionalProperties oneof.
        let data = property(defs["io.k8s.api.core.v1.ConfigMap"], "data");
        assert_eq!(types(data), ["object"]);
        match data
            .additional_properties
            .as_ref()
            .and_then(|a| a.oneof.as_ref())
        {
            Some(pb::AdditionalPropertiesOneof::Schema(value)) => {
                assert_eq!(types(value), ["string"]);
            }
            other => panic!("unexpected additionalProperties {other:?}"),
        }
    }

    #[test]
    fn custom_resource_definition_is_published_from_its_v3_schema() {
        // Only the CR: ObjectMeta/ListMeta must still be pulled in for its references.
        let doc = decode(&document(&[widget()]));
        let defs = definitions(&doc);
        let widget = defs["com.example.v1.Widget"];
        assert_eq!(
            group_version_kinds(widget),
            json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
        );
        let spec = property(widget, "spec");
        assert_eq!(types(property(spec, "foo")), ["string"]);
        let status = property(widget, "status");
        assert_eq!(types(property(status, "ready")), ["boolean"]);
        assert_eq!(types(property(widget, "apiVersion")), ["string"]);
        assert_eq!(types(property(widget, "kind")), ["string"]);
        assert_eq!(
            property(widget, "metadata").xref,
            format!("#/definitions/{OBJECT_META}")
        );
        assert!(defs.contains_key(OBJECT_META));
        assert!(defs.contains_key(LIST_META));
        let list = defs["com.example.v1.WidgetList"];
        let items = property(list, "items");
        assert_eq!(types(items), ["array"]);
        assert_eq!(
            items.items.as_ref().map(|i| i.schema[0].xref.as_str()),
            Some("#/definitions/com.example.v1.Widget")
        );
    }

    #[test]
    fn wants_protobuf_follows_the_accept_header() {
        assert!(wants_protobuf(PROTOBUF_MEDIA_TYPE));
        assert!(wants_protobuf(
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        ));
        assert!(wants_protobuf(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, */*"
        ));
        assert!(wants_protobuf(
            "application/json;q=0.5, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(!wants_protobuf("application/json"));
        assert!(!wants_protobuf("*/*"));
        assert!(!wants_protobuf(""));
        assert!(!wants_protobuf(
            "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(!wants_protobuf(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf;q=0, */*"
        ));
    }

    /// The rules of kube-openapi's `pkg/util/proto` parser; breaking any of them makes kubectl
    /// refuse to create anything with validation on.
    fn check_parseable(
        schema: &pb::Schema,
        defs: &BTreeMap<&str, &pb::Schema>,
        path: &str,
        problems: &mut Vec<String>,
    ) {
        if !schema.xref.is_empty() {
            if schema.r#type.is_some() || schema.properties.is_some() {
                problems.push(format!("{path}: $ref with type or properties"));
            }
            match schema.xref.strip_prefix("#/definitions/") {
                Some(name) if defs.contains_key(name) => {}
                _ => problems.push(format!("{path}: dangling {}", schema.xref)),
            }
            return;
        }
        let schema_types = types(schema);
        if schema_types.len() > 1 {
            problems.push(format!("{path}: multiple types"));
        }
        match schema_types.first().copied() {
            None | Some("object" | "string" | "integer" | "number" | "boolean") => {}
            Some("array") => {
                if schema.items.as_ref().map_or(0, |i| i.schema.len()) != 1 {
                    problems.push(format!("{path}: array without exactly one items schema"));
                }
            }
            Some(other) => problems.push(format!("{path}: unknown primitive {other:?}")),
        }
        if let Some(properties) = &schema.properties {
            for named in &properties.additional_properties {
                if let Some(value) = &named.value {
                    check_parseable(value, defs, &format!("{path}.{}", named.name), problems);
                }
            }
        }
        if let Some(items) = &schema.items {
            for item in &items.schema {
                check_parseable(item, defs, &format!("{path}[]"), problems);
            }
        }
        if let Some(pb::AdditionalPropertiesOneof::Schema(value)) = schema
            .additional_properties
            .as_ref()
            .and_then(|a| a.oneof.as_ref())
        {
            check_parseable(value, defs, &format!("{path}{{}}"), problems);
        }
        for named in &schema.vendor_extension {
            let yaml = named.value.as_ref().map(|v| v.yaml.as_str()).unwrap_or("");
            if serde_yaml::from_str::<Value>(yaml).is_err() {
                problems.push(format!("{path}: extension {} is not YAML", named.name));
            }
        }
    }

    #[test]
    fn document_stays_inside_the_kube_openapi_parser_subset() {
        let doc = decode(&document(&all_types()));
        let defs = definitions(&doc);
        let mut problems = Vec::new();
        for (name, schema) in &defs {
            check_parseable(schema, &defs, name, &mut problems);
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn every_builtin_kind_is_published_with_type_meta() {
        let types = builtin_types();
        let doc = decode(&document(&types));
        let defs = definitions(&doc);
        for resource in &types {
            let Schema::BuiltIn(kind) = resource.schema else {
                continue;
            };
            let name = builtin_definition_name(kind);
            let schema = defs
                .get(name.as_str())
                .unwrap_or_else(|| panic!("no definition {name}"));
            let gvks = group_version_kinds(schema);
            assert!(
                gvks.as_array().is_some_and(|list| list.contains(&json!({
                    "group": resource.group, "kind": resource.kind, "version": resource.version
                }))),
                "{name}: {gvks}"
            );
            for field in ["apiVersion", "kind", "metadata"] {
                property(schema, field);
            }
            let requires_metadata = schema.required.iter().any(|r| r == "metadata");
            assert_eq!(requires_metadata, name == CORE_EVENT, "{name}");
        }
    }

    #[test]
    fn special_types_match_the_real_document() {
        let doc = document(&builtin_types());
        let defs = &doc["definitions"];
        assert_eq!(
            defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"],
            "string"
        );
        assert_eq!(
            defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
        assert_eq!(defs[QUANTITY]["type"], "string");
        assert!(defs[QUANTITY].get("format").is_none());
        for time in ["Time", "MicroTime"] {
            let schema = &defs[format!("io.k8s.apimachinery.pkg.apis.meta.v1.{time}")];
            assert_eq!(schema["type"], "string");
            assert_eq!(schema["format"], "date-time");
        }
        let untyped = [
            EXTENSIONS_JSON,
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
        ];
        for name in untyped {
            assert!(defs[name].get("type").is_none(), "{name}: {}", defs[name]);
            assert!(defs[name].get("oneOf").is_none(), "{name}");
        }
        assert_eq!(
            defs["io.k8s.api.core.v1.Secret"]["properties"]["data"]["additionalProperties"]["format"],
            "byte"
        );
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    }

    #[test]
    fn custom_resource_conversion_follows_the_apiextensions_v2_rules() {
        let v3 = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name", "maybe"],
                    "properties": {
                        "name": {"type": "string", "enum": ["a"], "default": "a"},
                        "maybe": {"type": "object", "nullable": true,
                                  "properties": {"x": {"type": "string"}}},
                        "port": {"x-kubernetes-int-or-string": true,
                                 "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "properties": {"known": {"type": "string"}}},
                        "anything": {"type": "array", "x-kubernetes-preserve-unknown-fields": true,
                                     "items": {"type": "string"}},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                     "properties": {"spec": {"type": "object"}}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        });
        let out = custom_resource_schema(&v3);
        let spec = &out["properties"]["spec"];
        assert_eq!(spec["required"], json!(["name"]));
        assert_eq!(spec["properties"]["name"], json!({"type": "string"}));
        assert_eq!(spec["properties"]["maybe"], json!({}));
        assert_eq!(
            spec["properties"]["port"],
            json!({"x-kubernetes-int-or-string": true})
        );
        assert_eq!(
            spec["properties"]["open"],
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            spec["properties"]["anything"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        let template = &spec["properties"]["template"];
        assert_eq!(template["required"], json!(["kind", "apiVersion"]));
        assert_eq!(
            template["properties"]["metadata"]["$ref"],
            format!("#/definitions/{OBJECT_META}")
        );
        assert_eq!(template["properties"]["spec"]["type"], "object");
        assert_eq!(
            spec["properties"]["labels"]["additionalProperties"],
            json!({"type": "string"})
        );

        // Unknown fields kept at the root: an open object, no properties at all.
        let open_root = custom_resource_schema(&json!({
            "type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"spec": {"type": "object"}},
        }));
        assert_eq!(open_root, json!({"type": "object"}));
    }

    #[test]
    fn extension_yaml_round_trips_awkward_values() {
        let value = json!([
            {"rule": "self.a != 'on'", "message": "a: b\nc", "empty": "", "n": 1.5, "list": []},
            [["nested"]],
            {"map": {"deep": {"yes": "no"}}, "none": null, "flag": false},
        ]);
        let parsed: Value = serde_yaml::from_str(&to_yaml(&value)).expect("YAML");
        assert_eq!(parsed, value);
        let scalar: Value = serde_yaml::from_str(&to_yaml(&json!("1.0"))).expect("YAML");
        assert_eq!(scalar, json!("1.0"));
    }

    /// kube-openapi's `validation` package (what kubectl's client-side validation runs) over
    /// the decoded document: unknown fields and wrong types are errors, untyped schemas accept
    /// anything, `string` accepts any scalar, `integer` any number.
    struct Validator<'a> {
        defs: BTreeMap<&'a str, &'a pb::Schema>,
    }

    impl Validator<'_> {
        fn validate_object(&self, object: &Value) -> Vec<String> {
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let wanted = json!({"group": group, "kind": object["kind"], "version": version});
            let model = self
                .defs
                .values()
                .find(|schema| {
                    extension(schema, GVK_EXTENSION).is_some_and(|_| {
                        group_version_kinds(schema)
                            .as_array()
                            .is_some_and(|list| list.contains(&wanted))
                    })
                })
                .unwrap_or_else(|| panic!("no model for {wanted}"));
            let mut errors = Vec::new();
            self.validate(model, object, "", &mut errors);
            errors
        }

        fn validate(
            &self,
            schema: &pb::Schema,
            value: &Value,
            path: &str,
            errors: &mut Vec<String>,
        ) {
            if let Some(name) = schema.xref.strip_prefix("#/definitions/") {
                return self.validate(self.defs[name], value, path, errors);
            }
            let schema_type = types(schema).first().copied();
            match (schema_type, &schema.properties) {
                (None | Some("object"), Some(properties)) => {
                    let Some(object) = value.as_object() else {
                        return errors.push(format!("{path}: expected map"));
                    };
                    for (key, item) in object {
                        if item.is_null() {
                            continue;
                        }
                        match properties
                            .additional_properties
                            .iter()
                            .find(|p| &p.name == key)
                        {
                            Some(field) => self.validate(
                                field.value.as_ref().expect("schema"),
                                item,
                                &format!("{path}.{key}"),
                                errors,
                            ),
                            None => errors.push(format!("{path}: unknown field {key:?}")),
                        }
                    }
                    for required in &schema.required {
                        if object.get(required).is_none_or(Value::is_null) {
                            errors.push(format!("{path}: missing required field {required:?}"));
                        }
                    }
                }
                (None, None) => {}
                (Some("object"), None) => {
                    let Some(object) = value.as_object() else {
                        return errors.push(format!("{path}: expected map"));
                    };
                    if let Some(pb::AdditionalPropertiesOneof::Schema(sub)) = schema
                        .additional_properties
                        .as_ref()
                        .and_then(|a| a.oneof.as_ref())
                    {
                        for (key, item) in object {
                            self.validate(sub, item, &format!("{path}.{key}"), errors);
                        }
                    }
                }
                (Some("array"), _) => {
                    let Some(items) = value.as_array() else {
                        return errors.push(format!("{path}: expected array"));
                    };
                    let sub = &schema.items.as_ref().expect("items").schema[0];
                    for (index, item) in items.iter().enumerate() {
                        self.validate(sub, item, &format!("{path}[{index}]"), errors);
                    }
                }
                (Some(primitive), _) => {
                    let ok = match primitive {
                        "string" => !value.is_object() && !value.is_array(),
                        "integer" | "number" => value.is_number(),
                        "boolean" => value.is_boolean(),
                        _ => false,
                    };
                    if !ok {
                        errors.push(format!("{path}: invalid type, expected {primitive}"));
                    }
                }
            }
        }
    }

    fn manifest(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).expect("manifest YAML")
    }

    #[test]
    fn validation_rejects_unknown_fields_and_wrong_types() {
        let doc = decode(&document(&all_types()));
        let validator = Validator {
            defs: definitions(&doc),
        };
        let unknown = manifest(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: a}\n\
             spec: {holderIdentity: me, bogusField: 1}\n",
        );
        assert_eq!(
            validator.validate_object(&unknown),
            [r#".spec: unknown field "bogusField""#]
        );
        let wrong_type = manifest(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: a}\n\
             spec: {leaseDurationSeconds: fifteen}\n",
        );
        assert_eq!(
            validator.validate_object(&wrong_type),
            [".spec.leaseDurationSeconds: invalid type, expected integer"]
        );
        let custom = manifest(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n\
             spec: {foo: [1]}\nstatus: {ready: true, other: 1}\n",
        );
        assert_eq!(
            validator.validate_object(&custom),
            [
                ".spec.foo: invalid type, expected string",
                r#".status: unknown field "other""#
            ]
        );
    }

    #[test]
    fn validation_accepts_what_a_real_cluster_accepts() {
        let doc = decode(&document(&all_types()));
        let validator = Validator {
            defs: definitions(&doc),
        };
        let manifests = [
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo, labels: {app: web}}
spec:
  replicas: 2
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, creationTimestamp: null}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
      volumes: [{name: tmp, emptyDir: {sizeLimit: 1Gi}}]
      containers:
      - name: web
        image: nginx
        ports: [{containerPort: 8080, name: http}]
        env: [{name: A, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 1}}
        livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 10}
        readinessProbe: {tcpSocket: {port: 8080}}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
"#,
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Foo, type: string, jsonPath: .spec.foo, priority: 0}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              foo: {type: string, enum: [a, b], default: a}
              port: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
              tags: {type: array, items: {type: string}}
              labels: {type: object, additionalProperties: {type: string}}
"#,
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:demo"}
aggregationRule: {clusterRoleSelectors: [{matchLabels: {x: z}}]}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, update]}
- {nonResourceURLs: [/healthz], verbs: [get]}
"#,
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rb, namespace: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
subjects: [{kind: ServiceAccount, name: sa, namespace: demo}]
"#,
            r#"
apiVersion: v1
kind: Event
metadata: {name: ev, namespace: demo}
involvedObject: {kind: Pod, name: p, namespace: demo}
reason: Started
count: 1
firstTimestamp: "2024-01-01T00:00:00Z"
source: {component: kubelet}
"#,
            r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: ev, namespace: demo}
eventTime: "2024-01-01T00:00:00.000000Z"
reportingController: example.com/ctl
reportingInstance: ctl-1
action: Reconcile
reason: Done
regarding: {kind: Pod, name: p}
series: {count: 2, lastObservedTime: "2024-01-01T00:00:01.000000Z"}
"#,
            r#"
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}, {port: 9090, targetPort: metrics}]
"#,
            r#"
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: pdb}
spec: {maxUnavailable: 50%, selector: {matchLabels: {app: web}}}
"#,
            r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: demo}
spec: {foo: bar}
status: {ready: true}
"#,
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: l}\n",
        ];
        for text in manifests {
            let object = manifest(text);
            assert_eq!(
                validator.validate_object(&object),
                Vec::<String>::new(),
                "{text}"
            );
        }
    }
}
