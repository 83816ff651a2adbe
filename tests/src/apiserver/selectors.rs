//! Label and field selectors, with the grammar and error messages of apimachinery's
//! `labels.Parse` and `fields.ParseSelector`.

use serde_json::Value;

use super::registry::ResourceType;
use super::status::ApiError;

#[derive(Clone, Debug, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Splits on commas that are not inside `( … )`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    name_ok && prefix_ok
}

fn valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl LabelSelector {
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {why} (labelSelector {input:?})"
            ))
        };
        let mut requirements = Vec::new();
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Ok(LabelSelector::default());
        }
        for part in split_top_level(trimmed) {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad(
                    "found ',', expected: !, identifier, or 'end of string'",
                ));
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                LabelRequirement::DoesNotExist(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(open) = part.find('(') {
                let head = part[..open].trim();
                let values = part[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| bad("found end of string, expected: ')'"))?;
                let values: Vec<String> = values
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                let mut words = head.split_whitespace();
                let key = words.next().unwrap_or_default().to_string();
                match words.next() {
                    Some("in") => LabelRequirement::In(key, values),
                    Some("notin") => LabelRequirement::NotIn(key, values),
                    _ => return Err(bad("expected: in, notin")),
                }
            } else {
                LabelRequirement::Exists(part.to_string())
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                LabelRequirement::Equals(k, v) | LabelRequirement::NotEquals(k, v) => {
                    (k, vec![v.as_str()])
                }
                LabelRequirement::In(k, vs) | LabelRequirement::NotIn(k, vs) => {
                    (k, vs.iter().map(String::as_str).collect())
                }
                LabelRequirement::Exists(k) | LabelRequirement::DoesNotExist(k) => (k, vec![]),
            };
            if !valid_label_key(key) {
                return Err(bad(&format!("invalid label key \"{key}\"")));
            }
            if let Some(v) = values.iter().find(|v| !valid_label_value(v)) {
                return Err(bad(&format!("invalid label value: \"{v}\"")));
            }
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector`: `=`, `==` and `!=` terms joined by commas, over the fields the
/// type supports (`metadata.name`, `metadata.namespace` and the type's own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(input: &str, rt: &ResourceType) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            // Cluster-scoped built-ins accept `metadata.namespace` (it is always empty);
            // namespaces and cluster-scoped custom resources do not.
            let namespace_ok = rt.namespaced || (!rt.is_custom() && rt.plural != "namespaces");
            let supported = field == "metadata.name"
                || (field == "metadata.namespace" && namespace_ok)
                || rt.extra_field_selectors.iter().any(|f| f == field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                )));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// The name this selector pins with `metadata.name=...`, if any.
    pub fn pinned_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, eq, _)| *eq && f == "metadata.name")
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms
            .iter()
            .all(|(field, equal, want)| (field_value(object, field) == *want) == *equal)
    }
}

/// The value a field selector compares for `field`: the field at that path, except Events'
/// `source`, which is the source component or else the reporting controller (the real
/// `ToSelectableFields`).
fn field_value(object: &Value, field: &str) -> String {
    let at = |pointer: &str| match object.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    if field == "source" {
        return [
            "/source/component",
            "/deprecatedSource/component",
            "/reportingComponent",
            "/reportingController",
        ]
        .iter()
        .map(|p| at(p))
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    }
    at(&format!("/{}", field.replace('.', "/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}})
    }

    #[test]
    fn label_selector_grammar() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=web,tier=back", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing!=x", true),
            ("missing notin (x)", true),
            ("missing in (x)", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&o), want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_rejects_bad_input() {
        for sel in ["app=web,", "app in web", "app=we b", "-bad=x"] {
            let err = LabelSelector::parse(sel).unwrap_err();
            assert_eq!(err.code, 400, "selector {sel:?}");
        }
    }
}
