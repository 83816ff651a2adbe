//! Reading fields of untyped objects: the server keeps objects as JSON, and a missing or
//! mistyped field reads as empty rather than failing the request.

use serde_json::Value;

/// The string at `key`, or `""`.
pub fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The strings in the array at `key` (non-strings skipped), or none.
pub fn strings_at(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
