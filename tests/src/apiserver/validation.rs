//! What the real server checks before an object is stored: that the body decodes as the
//! type (built-ins through the k8s-openapi structs, custom resources against their CRD's
//! structural schema, with unknown fields pruned), object-name rules, and the type-specific
//! validation we rely on (Lease, CustomResourceDefinition).

use serde_json::{Map, Value};

use super::registry::{BuiltInKind, BuiltInVisitor, NameRule, ResourceType, Schema, visit_builtin};
use super::status::{ApiError, FieldError};

/// Decodes `object` as the type would be decoded by the real server and encodes it again:
/// unknown fields disappear, wrong JSON types are a 400, time fields get their canonical
/// precision (seconds for `Time`, microseconds for `MicroTime`).
pub fn normalize(rt: &ResourceType, object: Value) -> Result<Value, ApiError> {
    match &rt.schema {
        Schema::BuiltIn(kind) => roundtrip_builtin(rt, *kind, object),
        Schema::Structural(schema) => {
            let mut object = object;
            let mut errors = Vec::new();
            if let Value::Object(map) = &mut object {
                for (key, value) in map.iter_mut() {
                    if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if let Some(sub) = property_schema(schema, key) {
                        prune_and_check(sub, value, key, &mut errors);
                    }
                }
                let known: Vec<String> = map
                    .keys()
                    .filter(|k| {
                        matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                            || property_schema(schema, k).is_some()
                            || preserves_unknown(schema)
                    })
                    .cloned()
                    .collect();
                map.retain(|k, _| known.contains(k));
            }
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if errors.is_empty() {
                Ok(object)
            } else {
                Err(ApiError::invalid(rt, &name, errors))
            }
        }
    }
}

/// Decodes into the k8s-openapi type and encodes again.
struct RoundTrip<'a> {
    rt: &'a ResourceType,
    object: Value,
}

impl BuiltInVisitor for RoundTrip<'_> {
    type Output = Result<Value, ApiError>;

    fn visit<T>(self) -> Self::Output
    where
        T: k8s_openapi::schemars::JsonSchema + serde::Serialize + serde::de::DeserializeOwned,
    {
        let rt = self.rt;
        let typed: T = serde_json::from_value(self.object).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}",
                rt.kind, rt.version, rt.kind, e
            ))
        })?;
        serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))
    }
}

fn roundtrip_builtin(
    rt: &ResourceType,
    kind: BuiltInKind,
    object: Value,
) -> Result<Value, ApiError> {
    visit_builtin(kind, RoundTrip { rt, object })
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The schema for `key` of an object schema: a declared property, or `additionalProperties`.
fn property_schema<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    match schema.get("additionalProperties") {
        Some(Value::Object(_)) => schema.get("additionalProperties"),
        Some(Value::Bool(true)) => Some(&Value::Null),
        _ => None,
    }
}

/// Prunes unknown fields (unless `x-kubernetes-preserve-unknown-fields`) and checks types,
/// `required`, `enum`, `nullable` — the structural-schema subset our CRDs use. Errors carry
/// the field path as the real server reports it (`spec.foo`).
fn prune_and_check(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<FieldError>) {
    if schema.is_null() {
        return;
    }
    if value.is_null() {
        if !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            // The real server drops nulls for non-nullable fields during pruning/defaulting
            // only for some cases; a null where a typed value is required is rejected.
            if let Some(t) = schema.get("type").and_then(Value::as_str) {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    format!("{path} in body must be of type {t}: \"null\""),
                ));
            }
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if int_or_string {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body must be of type integer or string"),
            ));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            errors.push(FieldError::invalid(
                path,
                value,
                format!(
                    "{path} in body must be of type {t}: \"{}\"",
                    json_type(value)
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map(str::to_string).unwrap_or(a.to_string()))
            .collect();
        let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
        errors.push(FieldError::not_supported(path, value, &refs));
    }
    match value {
        Value::Object(map) => {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errors.push(FieldError::required(format!("{path}.{r}"), ""));
                    }
                }
            }
            let keep_unknown = preserves_unknown(schema);
            let mut pruned = Map::new();
            for (k, mut v) in std::mem::take(map) {
                match property_schema(schema, &k) {
                    Some(sub) => {
                        prune_and_check(sub, &mut v, &format!("{path}.{k}"), errors);
                        pruned.insert(k, v);
                    }
                    None if keep_unknown => {
                        pruned.insert(k, v);
                    }
                    None => {}
                }
            }
            *map = pruned;
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_and_check(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`: one dot-separated part of a DNS-1123 name.
fn is_dns_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        && part.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// RFC 1123 label: a DNS part of at most 63 characters.
fn is_rfc1123_label(label: &str) -> bool {
    label.len() <= 63 && is_dns_part(label)
}

/// Checks `name` against the type's naming rule, with the real server's messages.
pub fn validate_name(rule: NameRule, name: &str) -> Result<(), FieldError> {
    let value = Value::String(name.to_string());
    let err = |detail: String| Err(FieldError::invalid("metadata.name", &value, detail));
    if name.is_empty() {
        return Err(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    match rule {
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                return err(format!("may not be '{name}'"));
            }
            if let Some(c) = ['/', '%'].into_iter().find(|c| name.contains(*c)) {
                return err(format!("may not contain '{c}'"));
            }
            Ok(())
        }
        NameRule::Dns1035Label => {
            if is_rfc1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()) {
                Ok(())
            } else {
                err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string())
            }
        }
        NameRule::Label => {
            if is_rfc1123_label(name) {
                Ok(())
            } else {
                err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string())
            }
        }
        NameRule::Subdomain => {
            // The real regex caps only the whole name (253), not each part.
            if name.len() <= 253 && name.split('.').all(is_dns_part) {
                Ok(())
            } else {
                err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string())
            }
        }
    }
}

/// Which write a validation is for: some strategies check more on create than on update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
}

/// Type-specific validation (the `Validate` of the real registry strategies we depend on).
pub fn validate_object(rt: &ResourceType, object: &Value, write: Write) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match &rt.schema {
        Schema::BuiltIn(BuiltInKind::CoreEvent) => {
            validate_event(object, false, write, &mut errors)
        }
        Schema::BuiltIn(BuiltInKind::EventsV1Event) => {
            validate_event(object, true, write, &mut errors)
        }
        Schema::BuiltIn(BuiltInKind::Lease) => {
            // k8s.io/kubernetes/pkg/apis/coordination/validation: ValidateLeaseSpec.
            if let Some(d) = object.pointer("/spec/leaseDurationSeconds")
                && d.as_i64().is_some_and(|d| d <= 0)
            {
                errors.push(FieldError::invalid(
                    "spec.leaseDurationSeconds",
                    d,
                    "must be greater than 0",
                ));
            }
            if let Some(t) = object.pointer("/spec/leaseTransitions")
                && t.as_i64().is_some_and(|t| t < 0)
            {
                errors.push(FieldError::invalid(
                    "spec.leaseTransitions",
                    t,
                    "must be greater than or equal to 0",
                ));
            }
        }
        Schema::BuiltIn(BuiltInKind::CustomResourceDefinition) => {
            let group = object
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = object
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name != format!("{plural}.{group}") {
                errors.push(FieldError::invalid(
                    "metadata.name",
                    &Value::String(name.to_string()),
                    "must be spec.names.plural+\".\"+spec.group",
                ));
            }
            let versions = object
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if versions.is_empty() {
                errors.push(FieldError::required(
                    "spec.versions",
                    "must have exactly one version marked as storage version",
                ));
            }
            let storage = versions
                .iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .count();
            if !versions.is_empty() && storage != 1 {
                errors.push(FieldError::invalid(
                    "spec.versions",
                    &Value::Array(versions.clone()),
                    "must have exactly one version marked as storage version",
                ));
            }
            if object
                .pointer("/spec/scope")
                .and_then(Value::as_str)
                .is_none()
            {
                errors.push(FieldError::required("spec.scope", ""));
            }
        }
        _ => {}
    }
    errors
}

/// Limits of `pkg/apis/core/validation/events.go`.
const EVENT_REPORTING_INSTANCE_LIMIT: usize = 128;
const EVENT_ACTION_LIMIT: usize = 128;
const EVENT_REASON_LIMIT: usize = 128;
const EVENT_NOTE_LIMIT: usize = 1024;

/// The Event strategy's validation (`ValidateEventCreate`/`ValidateEventUpdate` of
/// `pkg/apis/core/validation/events.go`). Both groups store the same internal Event, so errors
/// name the core field (`involvedObject.namespace`, `message`) whichever group was written;
/// only the reporting controller is named after the request's group. Every write passes the
/// legacy checks; an `events.k8s.io` create also passes the strict ones. What it leaves out:
/// the strict update's immutable fields.
fn validate_event(object: &Value, events_v1: bool, write: Write, errors: &mut Vec<FieldError>) {
    // A field by its core name, read under the name of the group that was written.
    let field = |core: &str, v1: &str| object.get(if events_v1 { v1 } else { core });
    let text = |core: &str, v1: &str| {
        field(core, v1)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let set = |core: &str, v1: &str| field(core, v1).is_some_and(|v| !v.is_null());
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let involved_namespace = field("involvedObject", "regarding")
        .and_then(|o| o.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            &Value::String(involved_namespace.to_string()),
            "does not match event.namespace",
        )
    };
    let reporting_field = if events_v1 {
        "reportingController"
    } else {
        "reportingComponent"
    };
    if !set("eventTime", "eventTime") {
        // An old-style Event: its namespace and its object's agree ("default" stands for any
        // object without one, for old clients).
        if involved_namespace.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                errors.push(mismatch());
            }
        } else if namespace != involved_namespace {
            errors.push(mismatch());
        }
    } else {
        if involved_namespace.is_empty() && namespace != "default" && namespace != "kube-system" {
            errors.push(mismatch());
        }
        let controller = text("reportingComponent", "reportingController");
        if controller.is_empty() {
            errors.push(FieldError::required(reporting_field, ""));
        }
        // Required, and at most `limit` characters.
        let mut bounded = |field: &str, value: String, limit: usize| {
            if value.is_empty() {
                errors.push(FieldError::required(field, ""));
            }
            if value.len() > limit {
                errors.push(FieldError::invalid(
                    field,
                    &Value::String(String::new()),
                    format!("can have at most {limit} characters"),
                ));
            }
        };
        bounded(
            "reportingInstance",
            text("reportingInstance", "reportingInstance"),
            EVENT_REPORTING_INSTANCE_LIMIT,
        );
        bounded("action", text("action", "action"), EVENT_ACTION_LIMIT);
        bounded("reason", text("reason", "reason"), EVENT_REASON_LIMIT);
        if text("message", "note").len() > EVENT_NOTE_LIMIT {
            errors.push(FieldError::invalid(
                "message",
                &Value::String(String::new()),
                format!("can have at most {EVENT_NOTE_LIMIT} characters"),
            ));
        }
    }
    if !events_v1 || write == Write::Update {
        return;
    }
    // Strict validation: creates through events.k8s.io/v1.
    if let Some(series) = object.get("series").filter(|s| !s.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errors.push(FieldError::invalid(
                "series.count",
                &Value::String(String::new()),
                "should be at least 2",
            ));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            errors.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    if !set("eventTime", "eventTime") {
        errors.push(FieldError::required("eventTime", ""));
    }
    let type_ = text("type", "type");
    if type_ != "Normal" && type_ != "Warning" {
        errors.push(FieldError::invalid(
            "type",
            &Value::String(String::new()),
            format!("has invalid value: {type_}"),
        ));
    }
    for (core, v1) in [
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
    ] {
        if set(core, v1) {
            errors.push(FieldError::invalid(
                core,
                &Value::String(String::new()),
                "needs to be unset",
            ));
        }
    }
    if field("count", "deprecatedCount")
        .and_then(Value::as_i64)
        .is_some_and(|c| c != 0)
    {
        errors.push(FieldError::invalid(
            "count",
            &Value::String(String::new()),
            "needs to be unset",
        ));
    }
    let source = field("source", "deprecatedSource");
    let source_part = |k: &str| {
        source
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if source_part("component") || source_part("host") {
        errors.push(FieldError::invalid(
            "source",
            &Value::String(String::new()),
            "needs to be unset",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_rfc1123() {
        assert!(validate_name(NameRule::Subdomain, "my-lease.v1").is_ok());
        assert!(validate_name(NameRule::Subdomain, "My_Lease").is_err());
        assert!(validate_name(NameRule::Subdomain, &"a".repeat(254)).is_err());
        assert!(validate_name(NameRule::Label, "a.b").is_err());
        assert!(validate_name(NameRule::Label, &"a".repeat(64)).is_err());
        assert!(validate_name(NameRule::PathSegment, "system:leader").is_ok());
        assert!(validate_name(NameRule::PathSegment, "a/b").is_err());
        assert!(validate_name(NameRule::Dns1035Label, "svc-1").is_ok());
        assert!(validate_name(NameRule::Dns1035Label, "1svc").is_err());
        assert!(validate_name(NameRule::Subdomain, "").is_err());
    }

    #[test]
    fn structural_schema_prunes_and_type_checks() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {"foo": {"type": "string"}}},
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            }
        });
        let mut errors = Vec::new();
        let mut v = json!({"spec": {"foo": "x", "extra": 1}});
        prune_and_check(&schema, &mut v, "", &mut errors);
        assert!(errors.is_empty());
        assert_eq!(v, json!({"spec": {"foo": "x"}}));

        let mut v = json!({"ready": "yes"});
        prune_and_check(
            &schema["properties"]["status"],
            &mut v,
            "status",
            &mut errors,
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "status.ready");
    }
}
