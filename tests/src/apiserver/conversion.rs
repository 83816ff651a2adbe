//! Types served under two API groups but stored once, as in the real server: core `v1`
//! Events and `events.k8s.io/v1` Events are the same objects. An Event written through one
//! group is read through the other with its fields renamed (the real server's conversion,
//! `pkg/apis/events/v1/conversion.go`), so `kubectl describe` — which reads core Events —
//! shows Events that kube-runtime's recorder wrote through `events.k8s.io/v1`.

use serde_json::Value;

use super::registry::{BuiltInKind, ResourceType, Schema};

/// Field names in `events.k8s.io/v1` and, for the same field, in core `v1`.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_v1(rt: &ResourceType) -> bool {
    matches!(rt.schema, Schema::BuiltIn(BuiltInKind::EventsV1Event))
}

/// Where a type's objects are stored: (group, plural) of the storage type.
pub fn storage_key(rt: &ResourceType) -> (String, String) {
    if is_events_v1(rt) {
        (String::new(), "events".to_string())
    } else {
        (rt.group.clone(), rt.plural.clone())
    }
}

fn rename(object: &mut Value, from: &str, to: &str) {
    if let Some(map) = object.as_object_mut()
        && let Some(v) = map.remove(from)
    {
        map.insert(to.to_string(), v);
    }
}

/// A stored object as clients of `rt` see it (apiVersion and kind are set by the caller).
pub fn from_storage(rt: &ResourceType, mut object: Value) -> Value {
    if is_events_v1(rt) {
        for (v1, core) in EVENT_FIELDS {
            rename(&mut object, core, v1);
        }
    }
    object
}

/// An object written through `rt` in its stored form.
pub fn to_storage(rt: &ResourceType, mut object: Value) -> Value {
    if is_events_v1(rt) {
        for (v1, core) in EVENT_FIELDS {
            rename(&mut object, v1, core);
        }
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".to_string(), Value::String("v1".to_string()));
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::builtin_types;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_groups() {
        let types = builtin_types();
        let v1 = types
            .iter()
            .find(|t| t.group == "events.k8s.io")
            .expect("events.k8s.io type");
        let written =
            json!({"regarding": {"name": "l"}, "note": "hi", "reason": "R", "deprecatedCount": 2});
        let stored = to_storage(v1, written.clone());
        assert_eq!(stored["involvedObject"], json!({"name": "l"}));
        assert_eq!(stored["message"], json!("hi"));
        assert_eq!(stored["count"], json!(2));
        let mut back = from_storage(v1, stored);
        back.as_object_mut().map(|m| m.remove("apiVersion"));
        assert_eq!(back, written);
    }
}
