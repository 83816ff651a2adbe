//! Strategic merge patch (`application/strategic-merge-patch+json`) for built-in types, as
//! apimachinery's `strategicpatch` applies it: maps merge recursively, and lists whose field
//! declares `x-kubernetes-patch-strategy: merge` merge element by element on their
//! `x-kubernetes-patch-merge-key` (containers by `name`, ports by `port`, …) instead of being
//! replaced. `kubectl apply` sends these patches, with the directives handled here: `$patch`
//! (`replace`, `delete`, `merge`), `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`.
//!
//! The patch metadata comes from the same OpenAPI definitions `/openapi/v2` publishes, so
//! kubectl and the server agree on every list's strategy.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Schema context: the definitions to resolve `$ref`s in.
struct Schemas<'a> {
    definitions: &'a BTreeMap<String, Value>,
}

impl<'a> Schemas<'a> {
    fn resolve(&self, schema: Option<&'a Value>) -> Option<&'a Value> {
        let schema = schema?;
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => self.definitions.get(r.trim_start_matches("#/definitions/")),
            None => Some(schema),
        }
    }

    /// The (unresolved) schema of property `key` of an object schema.
    fn property(&self, schema: Option<&'a Value>, key: &str) -> Option<&'a Value> {
        let schema = self.resolve(schema)?;
        schema
            .get("properties")
            .and_then(|p| p.get(key))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
    }
}

/// Applies a strategic merge patch to `original`, whose schema is definition `definition`.
pub fn apply(
    original: &Value,
    patch: &Value,
    definitions: &BTreeMap<String, Value>,
    definition: &str,
) -> Result<Value, String> {
    let schemas = Schemas { definitions };
    let root = definitions.get(definition);
    match (original, patch) {
        (Value::Object(o), Value::Object(p)) => Ok(merge_map(&schemas, root, o, p)?
            .map(Value::Object)
            .unwrap_or(Value::Object(Map::new()))),
        _ => Err("a strategic merge patch must be a JSON object".to_string()),
    }
}

/// A patch value with every directive removed (for values that have no original to merge with).
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|v| v.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn patch_strategy(property: Option<&Value>) -> (bool, Option<String>) {
    let Some(p) = property else {
        return (false, None);
    };
    let strategy = p
        .get("x-kubernetes-patch-strategy")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let merge = strategy.split(',').any(|s| s == "merge");
    let key = p
        .get("x-kubernetes-patch-merge-key")
        .and_then(Value::as_str)
        .map(str::to_string);
    (merge, key)
}

/// Merges a map; `Ok(None)` means the patch deletes it (`$patch: delete`).
fn merge_map(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            return match strip_directives(&Value::Object(patch.clone())) {
                Value::Object(m) => Ok(Some(m)),
                _ => Ok(Some(Map::new())),
            };
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("Unknown patch type: {other}")),
    }
    let mut result = original.clone();
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            result.remove(key);
            continue;
        }
        let property = schemas.property(schema, key);
        let merged = match (result.get(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                merge_map(schemas, property, o, p)?.map(Value::Object)
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let (merge, merge_key) = patch_strategy(property);
                if merge {
                    let items = schemas.resolve(property).and_then(|s| s.get("items"));
                    Some(Value::Array(merge_list(
                        schemas,
                        items,
                        o,
                        p,
                        merge_key.as_deref(),
                    )?))
                } else {
                    Some(strip_directives(value))
                }
            }
            _ => Some(strip_directives(value)),
        };
        match merged {
            Some(v) => {
                result.insert(key.clone(), v);
            }
            None => {
                result.remove(key);
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST)
            && let (Some(Value::Array(list)), Some(remove)) =
                (result.get_mut(field), value.as_array())
        {
            list.retain(|v| !remove.contains(v));
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER)
            && let Some(order) = value.as_array()
        {
            let (_, merge_key) = patch_strategy(schemas.property(schema, field));
            if let Some(Value::Array(list)) = result.get_mut(field) {
                reorder(list, order, merge_key.as_deref());
            }
        }
    }
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        result.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(result))
}

fn merge_list(
    schemas: &Schemas<'_>,
    item_schema: Option<&Value>,
    original: &[Value],
    patch: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, String> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .map(strip_directives)
            .collect());
    }
    let mut result = original.to_vec();
    let Some(merge_key) = merge_key else {
        // A primitive list with the merge strategy (e.g. finalizers): a set union.
        for p in patch {
            if !result.contains(p) {
                result.push(p.clone());
            }
        }
        return Ok(result);
    };
    for p in patch {
        let Some(patch_map) = p.as_object() else {
            return Err(format!(
                "a list merged on {merge_key} needs objects, got {p}"
            ));
        };
        let key = patch_map.get(merge_key);
        let position = key.and_then(|k| result.iter().position(|o| o.get(merge_key) == Some(k)));
        if patch_map.get("$patch").and_then(Value::as_str) == Some("delete") {
            result.retain(|o| o.get(merge_key) != key);
            continue;
        }
        match position {
            Some(i) => match (&result[i], p) {
                (Value::Object(o), Value::Object(pm)) => {
                    match merge_map(schemas, item_schema, o, pm)? {
                        Some(m) => result[i] = Value::Object(m),
                        None => {
                            result.remove(i);
                        }
                    }
                }
                _ => result[i] = strip_directives(p),
            },
            None => result.push(strip_directives(p)),
        }
    }
    Ok(result)
}

/// Orders `list` as `order` lists its elements (by merge key, or by value for primitives);
/// elements not named keep their relative order after the named ones.
fn reorder(list: &mut [Value], order: &[Value], merge_key: Option<&str>) {
    let identity = |v: &Value| -> Value {
        match merge_key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        let id = identity(v);
        order
            .iter()
            .position(|o| identity(o) == id)
            .unwrap_or(order.len())
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::openapi::{builtin_catalog, builtin_definition_name};
    use crate::apiserver::registry::BuiltInKind;
    use serde_json::json;

    fn deployment_patch(original: Value, patch: Value) -> Value {
        let name = builtin_definition_name(BuiltInKind::Deployment);
        apply(&original, &patch, builtin_catalog(), &name).expect("patch applies")
    }

    fn deployment(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name() {
        let original = deployment(json!([
            {"name": "sidecar", "image": "s:1", "args": ["--a"]},
            {"name": "controller", "image": "c:1"}
        ]));
        let patched = deployment_patch(
            original,
            deployment(json!([{"name": "controller", "image": "c:2"}])),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "sidecar", "image": "s:1", "args": ["--a"]},
                {"name": "controller", "image": "c:2"}
            ])
        );
    }

    #[test]
    fn directives_delete_reorder_and_replace() {
        let original = deployment(json!([
            {"name": "a", "image": "a"},
            {"name": "b", "image": "b"},
            {"name": "c", "image": "c"}
        ]));
        let mut patch = deployment(json!([{"name": "b", "$patch": "delete"}]));
        patch["spec"]["template"]["spec"]["$setElementOrder/containers"] =
            json!([{"name": "c"}, {"name": "a"}]);
        let patched = deployment_patch(original.clone(), patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "c", "image": "c"}, {"name": "a", "image": "a"}])
        );

        let replaced = deployment_patch(
            original,
            json!({"spec": {"template": {"spec": {"$patch": "replace", "containers": [{"name": "z"}]}}}}),
        );
        assert_eq!(
            replaced["spec"]["template"]["spec"],
            json!({"containers": [{"name": "z"}]})
        );
    }

    #[test]
    fn retain_keys_and_delete_from_primitive_list() {
        let original = json!({
            "metadata": {"finalizers": ["a", "b", "c"]},
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}
        });
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}
        });
        let patched = deployment_patch(original, patch);
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "c", "d"]));
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn lists_without_merge_strategy_are_replaced_and_nulls_delete() {
        let original = deployment(json!([{"name": "a", "args": ["1", "2"], "image": "x"}]));
        let patched = deployment_patch(
            original,
            deployment(json!([{"name": "a", "args": ["3"], "image": null}])),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "args": ["3"]}])
        );
    }
}
