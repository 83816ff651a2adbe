//! Server-side printing: `meta.k8s.io/v1` Tables (what `kubectl get` asks for with
//! `Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) and `PartialObjectMetadata`.

use serde_json::{Value, json};

use super::registry::ResourceType;

/// The response representation a client negotiated through `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    Object,
    Table,
    Metadata,
}

impl Representation {
    /// Picks the first representation of the Accept list this server can produce.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Representation::Object;
        };
        for media in accept.split(',') {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            let param = |k: &str| {
                params
                    .iter()
                    .find_map(|p| p.strip_prefix(&format!("{k}=")))
                    .unwrap_or_default()
            };
            let media_type = params.first().copied().unwrap_or_default();
            if media_type != "application/json" && media_type != "*/*" {
                continue;
            }
            match param("as") {
                "Table"
                    if param("g") == "meta.k8s.io" && matches!(param("v"), "v1" | "v1beta1") =>
                {
                    return Representation::Table;
                }
                "PartialObjectMetadata" | "PartialObjectMetadataList"
                    if param("g") == "meta.k8s.io" =>
                {
                    return Representation::Metadata;
                }
                "" => return Representation::Object,
                _ => continue,
            }
        }
        Representation::Object
    }
}

/// Evaluates the simple JSONPaths printer columns use (`.spec.foo`, `.status.conditions[0].type`).
pub fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for segment in path.trim_start_matches('.').split('.') {
        if segment.is_empty() {
            continue;
        }
        let (field, index) = match segment.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        if !field.is_empty() {
            current = current.get(field)?;
        }
        if let Some(i) = index {
            current = current.get(i)?;
        }
    }
    Some(current)
}

/// kubectl's `duration.HumanDuration`: `45s`, `5m10s`, `3h`, `2d5h`, `400d`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 * 2 {
        return format!("{s}s");
    }
    let minutes = s / 60;
    if minutes < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rem}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = s / 3600;
    if hours < 8 {
        let rem = minutes % 60;
        return if rem == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rem}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let rem = hours % 24;
        let days = hours / 24;
        return if rem == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{rem}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    format!("{}y", hours / 24 / 365)
}

fn age(timestamp: Option<&Value>) -> Value {
    let parsed = timestamp
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match parsed {
        Some(t) => {
            let secs = jiff::Timestamp::now().as_second() - t.as_second();
            json!(human_duration(secs))
        }
        None => json!("<unknown>"),
    }
}

/// A cell value. Custom resources' `date` columns are rendered as ages by the real server
/// (apiextensions' table convertor); built-in `date` columns carry the RFC 3339 time.
fn cell(custom: bool, column_type: &str, value: Option<&Value>) -> Value {
    match (column_type, value) {
        ("date", v) if custom => age(v),
        (_, None) | (_, Some(Value::Null)) => json!(null),
        (_, Some(v)) => v.clone(),
    }
}

/// The metadata-only view of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A Table of `objects` with the type's printer columns, between Name and Age as kubectl
/// shows them.
pub fn table(rt: &ResourceType, objects: &[Value], resource_version: &str) -> Value {
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in &rt.printer_columns {
        columns.push(json!({
            "name": c.name, "type": c.type_, "format": "", "priority": c.priority,
            "description": c.description,
        }));
    }
    let has_age = rt
        .printer_columns
        .iter()
        .any(|c| c.name == "Age" || c.json_path == ".metadata.creationTimestamp");
    if !has_age {
        columns.push(json!({
            "name": "Age", "type": "date", "format": "", "priority": 0,
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for c in &rt.printer_columns {
                cells.push(cell(rt.is_custom(), &c.type_, json_path(o, &c.json_path)));
            }
            if !has_age {
                cells.push(age(o.pointer("/metadata/creationTimestamp")));
            }
            json!({"cells": cells, "object": partial_metadata(o)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_matches_kubectl() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            Representation::from_accept(Some(kubectl)),
            Representation::Table
        );
        assert_eq!(
            Representation::from_accept(Some("application/json")),
            Representation::Object
        );
        assert_eq!(
            Representation::from_accept(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            )),
            Representation::Metadata
        );
        assert_eq!(Representation::from_accept(None), Representation::Object);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(130), "2m10s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(3600 * 24 * 3), "3d");
    }

    #[test]
    fn json_paths() {
        let o = json!({"spec": {"foo": "bar"}, "status": {"c": [{"t": "x"}]}});
        assert_eq!(json_path(&o, ".spec.foo"), Some(&json!("bar")));
        assert_eq!(json_path(&o, ".status.c[0].t"), Some(&json!("x")));
        assert_eq!(json_path(&o, ".status.ready"), None);
    }
}
