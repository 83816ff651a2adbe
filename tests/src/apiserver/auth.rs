//! Authentication (bearer tokens) and RBAC authorization.
//!
//! Authorization reads the real `rbac.authorization.k8s.io/v1` objects stored in the server, so
//! the Role/ClusterRole/bindings in `deploy/` are exercised exactly as written — including
//! `resourceNames`, subresources (`leases/status`), and the rule that a list or watch with
//! `fieldSelector=metadata.name=X` is authorized as a request for the name `X`.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::{Value, json};

use super::fields::{str_at, strings_at};
use super::status::ApiError;
use super::store::Store;
use super::tokenrequest::BoundTokens;

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".to_string(),
            groups: vec!["system:unauthenticated".to_string()],
        }
    }

    /// A cluster administrator (member of `system:masters`, which RBAC never restricts).
    pub fn admin() -> Self {
        UserInfo {
            name: "admin".to_string(),
            groups: vec![
                "system:masters".to_string(),
                "system:authenticated".to_string(),
            ],
        }
    }

    /// The identity of a service account's token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }

    pub fn user(name: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".to_string());
        UserInfo {
            name: name.to_string(),
            groups,
        }
    }

    fn is_authenticated(&self) -> bool {
        self.groups.iter().any(|g| g == "system:authenticated")
    }
}

/// Bearer-token authentication: tokens registered up front ([`Authenticator::add_token`]),
/// then the bound service-account tokens issued by the TokenRequest API.
#[derive(Default)]
pub struct Authenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
    pub bound: BoundTokens,
}

impl Authenticator {
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), user);
    }

    /// Resolves the `Authorization` header: no header is anonymous; an unknown token, or a
    /// bound token that expired or whose ServiceAccount is gone, is 401.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        store: &Store,
    ) -> Result<UserInfo, ApiError> {
        let Some(header) = authorization else {
            return Ok(UserInfo::anonymous());
        };
        let token = super::http::bearer_token(Some(header));
        if token.is_empty() {
            return Err(ApiError::unauthorized());
        }
        let registered = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        match registered {
            Some(user) => Ok(user),
            None => self
                .bound
                .authenticate(store, token)
                .unwrap_or_else(|| Err(ApiError::unauthorized())),
        }
    }
}

/// What a request asks to do, in RBAC's terms (apiserver's `RequestInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: Option<String>,
        namespace: Option<String>,
        name: Option<String>,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_namespace: Option<&str>) -> bool {
    let kind = str_at(subject, "kind");
    let name = str_at(subject, "name");
    match kind {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .or(binding_namespace)
                .unwrap_or_default();
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, request: &Request) -> bool {
    let has = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
    match request {
        Request::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let verbs = strings_at(rule, "verbs");
            let groups = strings_at(rule, "apiGroups");
            let resources = strings_at(rule, "resources");
            let names = strings_at(rule, "resourceNames");
            let combined = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.clone(),
            };
            let resource_ok = resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || subresource
                        .as_ref()
                        .is_some_and(|sub| *r == format!("*/{sub}"))
            });
            let name_ok =
                names.is_empty() || name.as_ref().is_some_and(|n| names.iter().any(|x| x == n));
            has(&verbs, verb) && has(&groups, group) && resource_ok && name_ok
        }
        Request::NonResource { verb, path } => {
            let verbs = strings_at(rule, "verbs");
            let urls = strings_at(rule, "nonResourceURLs");
            has(&verbs, verb)
                && urls.iter().any(|u| {
                    u == "*"
                        || u == path
                        || u.strip_suffix('*')
                            .is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

/// The rules of the role a binding references, as visible from `binding_namespace`.
fn role_rules(store: &Store, role_ref: &Value, binding_namespace: Option<&str>) -> Vec<Value> {
    let kind = str_at(role_ref, "kind");
    let name = str_at(role_ref, "name");
    let (plural, namespace) = match kind {
        "ClusterRole" => ("clusterroles", None),
        "Role" => ("roles", binding_namespace),
        _ => return Vec::new(),
    };
    store
        .all("rbac.authorization.k8s.io", plural)
        .into_iter()
        .find(|r| {
            r.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && r.pointer("/metadata/namespace").and_then(Value::as_str) == namespace
        })
        .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// The rules of the bootstrap roles every cluster binds without stored RBAC objects, as far as
/// this server models them: `system:public-info-viewer` (everybody), `system:discovery` and
/// `system:basic-user` (authenticated users: their own access reviews).
pub fn default_rules(user: &UserInfo) -> Vec<Value> {
    let mut rules = vec![json!({
        "verbs": ["get"],
        "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
    })];
    if user.is_authenticated() {
        rules.push(json!({
            "verbs": ["get"],
            "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"],
        }));
        rules.push(json!({
            "verbs": ["create"],
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        }));
    }
    rules
}

/// Every rule that applies to `user` in `namespace`: `*` for `system:masters` (the real
/// server's privileged-group authorizer), the bootstrap rules, then the rules of the
/// ClusterRoleBindings and of the namespace's RoleBindings naming the user, in store order
/// (what a `SelfSubjectRulesReview` lists).
pub fn rules_for(store: &Store, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    if user.groups.iter().any(|g| g == "system:masters") {
        rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    rules.extend(default_rules(user));
    rules.extend(bound_rules(store, user, Some(namespace)));
    rules
}

/// The rules of the ClusterRoleBindings naming `user`, then, with a namespace, of that
/// namespace's RoleBindings naming it, in store order.
fn bound_rules(store: &Store, user: &UserInfo, namespace: Option<&str>) -> Vec<Value> {
    let mut rules = Vec::new();
    for binding in store.all("rbac.authorization.k8s.io", "clusterrolebindings") {
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if subjects.is_some_and(|s| s.iter().any(|s| subject_matches(s, user, None)))
            && let Some(role_ref) = binding.get("roleRef")
        {
            rules.extend(role_rules(store, role_ref, None));
        }
    }
    let Some(namespace) = namespace else {
        return rules;
    };
    for binding in store.all("rbac.authorization.k8s.io", "rolebindings") {
        if binding
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            != Some(namespace)
        {
            continue;
        }
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if subjects.is_some_and(|s| s.iter().any(|s| subject_matches(s, user, Some(namespace))))
            && let Some(role_ref) = binding.get("roleRef")
        {
            rules.extend(role_rules(store, role_ref, Some(namespace)));
        }
    }
    rules
}

/// Decides a request with RBAC over the stored objects and the bootstrap rules.
pub fn rbac_allows(store: &Store, user: &UserInfo, request: &Request) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    if default_rules(user).iter().any(|r| rule_allows(r, request)) {
        return true;
    }
    // Namespaced requests are also allowed by the namespace's RoleBindings; cluster-scoped and
    // non-resource ones only by ClusterRoleBindings.
    let namespace = match request {
        Request::Resource { namespace, .. } => namespace.as_deref(),
        Request::NonResource { .. } => None,
    };
    bound_rules(store, user, namespace)
        .iter()
        .any(|r| rule_allows(r, request))
}

/// The 403 Status the real authorizer returns.
pub fn forbidden(user: &UserInfo, request: &Request) -> ApiError {
    match request {
        Request::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let subject = match name {
                Some(n) => format!("{qualified} \"{n}\""),
                None => qualified,
            };
            let full_resource = match subresource {
                Some(s) => format!("{resource}/{s}"),
                None => resource.clone(),
            };
            let scope = match namespace {
                Some(ns) => format!("in the namespace \"{ns}\""),
                None => "at the cluster scope".to_string(),
            };
            ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{full_resource}\" in API group \"{group}\" {scope}",
                    user.name
                ),
            )
            .with_details(json!({
                "name": name.clone().unwrap_or_default(),
                "group": group,
                "kind": resource,
            }))
        }
        Request::NonResource { verb, path } => ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            ),
        )
        .with_details(json!({})),
    }
}
