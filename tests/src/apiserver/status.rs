//! `meta/v1 Status` errors, shaped as the real API server writes them: every failure reaches
//! the client as a Status with `reason`, `code`, `message` and, where the server knows them,
//! `details` (name, group, kind, causes).

use serde_json::{Value, json};

use super::registry::ResourceType;

/// An API error that becomes a `Status` response.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and some 5xx).
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `details` naming one object of a type, as the real server fills it.
fn details(rt: &ResourceType, name: &str) -> Value {
    json!({ "name": name, "group": rt.group, "kind": rt.plural })
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", rt.qualified_plural(), name),
        )
        .with_details(details(rt, name))
    }

    /// The namespace of a namespaced write does not exist (the NamespaceLifecycle admission).
    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_details(json!({ "name": namespace, "kind": "namespaces" }))
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", rt.qualified_plural(), name),
        )
        .with_details(details(rt, name))
    }

    /// The optimistic-concurrency failure: the write named a resourceVersion (or uid) that is
    /// no longer current.
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                rt.qualified_plural(),
                name,
                why
            ),
        )
        .with_details(details(rt, name))
    }

    pub fn modified(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A PUT without `metadata.resourceVersion` to a type whose strategy forbids
    /// unconditional updates. The real store names the *resource* where the kind belongs.
    pub fn resource_version_required(rt: &ResourceType, name: &str) -> Self {
        // Go renders the int64 zero with %#v.
        let message = "Invalid value: 0x0: must be specified for an update";
        Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{}\" is invalid: metadata.resourceVersion: {}",
                rt.qualified_plural(),
                name,
                message
            ),
        )
        .with_details(json!({
            "name": name,
            "group": rt.group,
            "kind": rt.plural,
            "causes": [{
                "reason": "FieldValueInvalid",
                "message": message,
                "field": "metadata.resourceVersion",
            }],
        }))
    }

    /// 422 with one cause per field error, message as `Kind.group "name" is invalid: ...`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<FieldError>) -> Self {
        Self::invalid_kind(&rt.group, &rt.kind, name, causes)
    }

    /// [`ApiError::invalid`] for a kind that is not a served resource type (the request
    /// objects of subresources, such as `TokenRequest.authentication.k8s.io`).
    pub fn invalid_kind(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let summary = causes.iter().map(FieldError::to_string).collect::<Vec<_>>();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let causes_json = causes
            .iter()
            .map(|c| {
                json!({
                    "reason": c.kind.reason(),
                    "message": c.message_without_field(),
                    "field": c.field,
                })
            })
            .collect::<Vec<_>>();
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes_json,
        }))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            // Built-in types also take application/vnd.kubernetes.protobuf (see
            // `protobuf`), which the real server lists here too; this message names the types
            // every resource, custom ones included, accepts.
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type})"
            ),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// A too-old resourceVersion for watch (or an expired continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The Status object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // Errors the server does not classify (plain Go errors) carry no reason at all.
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        let mut details = self.details.clone();
        if let Some(secs) = self.retry_after {
            let d = details.get_or_insert_with(|| json!({}));
            d["retryAfterSeconds"] = json!(secs);
        }
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

/// The kinds of field errors the real validation reports (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    Required,
    Forbidden,
    TooLong,
    NotSupported,
}

impl FieldErrorKind {
    fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
        }
    }

    fn label(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::NotSupported => "Unsupported value",
        }
    }
}

/// One field error (`field.Error`): `spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    /// The offending value, rendered as the real server does (strings quoted).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(render_value(value)),
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let allowed = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(render_value(value)),
            detail: format!("supported values: {allowed}"),
        }
    }

    fn message_without_field(&self) -> String {
        match &self.value {
            Some(v) if !self.detail.is_empty() => {
                format!("{}: {}: {}", self.kind.label(), v, self.detail)
            }
            Some(v) => format!("{}: {}", self.kind.label(), v),
            None if !self.detail.is_empty() => format!("{}: {}", self.kind.label(), self.detail),
            None => self.kind.label().to_string(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message_without_field())
    }
}

fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}
