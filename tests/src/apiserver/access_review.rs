//! `SelfSubjectAccessReview` and `SelfSubjectRulesReview` (`authorization.k8s.io/v1`): what
//! `kubectl auth can-i` and `auth can-i --list` ask. Create-only, cluster-scoped virtual
//! resources, answered for the requesting user from the authorization this server enforces:
//! with `--rbac`, the stored RBAC objects plus the bootstrap rules (`system:masters` may do
//! everything, as the real privileged-group authorizer decides); without it everything is
//! allowed, as `--authorization-mode=AlwaysAllow` answers.
//!
//! As the real registry does (`pkg/registry/authorization/selfsubject*review/rest.go`): an
//! access review needs exactly one of `resourceAttributes` and `nonResourceAttributes` (422
//! otherwise); a rules review needs `spec.namespace` (400 "no namespace on request"); the
//! answer is the request with `status` filled in, 201.

use serde_json::{Value, json};

use super::auth::{self, Request, UserInfo};
use super::status::{ApiError, FieldError};
use super::store::Store;

pub const GROUP: &str = "authorization.k8s.io";
pub const VERSION: &str = "v1";
const ACCESS: &str = "selfsubjectaccessreviews";
const RULES: &str = "selfsubjectrulesreviews";

/// Whether `group/version/plural` is one of the reviews.
pub fn serves(group: &str, version: &str, plural: &str) -> bool {
    group == GROUP && version == VERSION && matches!(plural, ACCESS | RULES)
}

/// The `/apis/authorization.k8s.io/v1` resources, as the real server lists the two.
pub fn discovery_resources() -> Vec<Value> {
    [
        (ACCESS, "selfsubjectaccessreview", "SelfSubjectAccessReview"),
        (RULES, "selfsubjectrulesreview", "SelfSubjectRulesReview"),
    ]
    .into_iter()
    .map(|(name, singular, kind)| {
        json!({
            "name": name,
            "singularName": singular,
            "namespaced": false,
            "kind": kind,
            "verbs": ["create"],
        })
    })
    .collect()
}

fn string_at(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Answers a review `body` (JSON) for `user`; `rbac` says whether RBAC is enforced.
pub fn review(
    store: &Store,
    rbac: bool,
    user: &UserInfo,
    plural: &str,
    mut body: Value,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the object provided is unrecognized or malformed",
        ));
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = if plural == ACCESS {
        access(store, rbac, user, &spec)?
    } else {
        rules(store, rbac, user, &spec)?
    };
    if body.get("metadata").is_none_or(Value::is_null) {
        body["metadata"] = json!({});
    }
    body["status"] = status;
    Ok(body)
}

fn access(store: &Store, rbac: bool, user: &UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let request = match (resource, non_resource) {
        (Some(r), None) => Request::Resource {
            verb: string_at(r, "verb"),
            group: string_at(r, "group"),
            resource: string_at(r, "resource"),
            subresource: non_empty(string_at(r, "subresource")),
            namespace: non_empty(string_at(r, "namespace")),
            name: non_empty(string_at(r, "name")),
        },
        (None, Some(n)) => Request::NonResource {
            verb: string_at(n, "verb"),
            path: string_at(n, "path"),
        },
        (both, _) => {
            let cause = if both.is_some() {
                FieldError::invalid(
                    "spec.nonResourceAttributes",
                    non_resource.unwrap_or(&Value::Null),
                    "cannot be specified in combination with resourceAttributes",
                )
            } else {
                FieldError::invalid(
                    "spec.resourceAttributes",
                    &Value::Null,
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )
            };
            return Err(ApiError::invalid_kind(
                GROUP,
                "SelfSubjectAccessReview",
                "",
                vec![cause],
            ));
        }
    };
    let allowed = !rbac || auth::rbac_allows(store, user, &request);
    Ok(json!({"allowed": allowed}))
}

fn rules(store: &Store, rbac: bool, user: &UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let namespace = string_at(spec, "namespace");
    if namespace.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let policy_rules = if rbac {
        auth::rules_for(store, user, &namespace)
    } else {
        vec![
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
        ]
    };
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in policy_rules {
        let list = |key: &str| rule.get(key).cloned().filter(|v| !v.is_null());
        let verbs = list("verbs").unwrap_or_else(|| json!([]));
        if let Some(urls) = list("nonResourceURLs") {
            non_resource_rules.push(json!({"verbs": verbs, "nonResourceURLs": urls}));
            continue;
        }
        let mut out = json!({"verbs": verbs});
        for key in ["apiGroups", "resources", "resourceNames"] {
            if let Some(v) = list(key) {
                out[key] = v;
            }
        }
        resource_rules.push(out);
    }
    Ok(json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    }))
}
