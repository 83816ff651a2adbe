//! The TokenRequest API — `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`, what
//! `kubectl create token` and the kubelet call — and the bound service-account tokens it issues.
//!
//! Behaviour follows kube-apiserver 1.33 (the version this server reports):
//! - the request (`pkg/registry/core/serviceaccount/storage/token.go`): the body's
//!   `metadata.name` must match the URL (422), the ServiceAccount must exist (404), then
//!   static validation (`pkg/apis/authentication/validation`: `spec.expirationSeconds` at
//!   least 600 and at most 2^32, 422 `Invalid` naming the object `""`), then the bound object
//!   (`Secret`, `Pod`, `Node`; anything else 400, a `uid` that does not match 409);
//!   `expirationSeconds` defaults to 3600 and `audiences` to the API server's audiences; the
//!   answer is the request with `metadata.name/namespace/creationTimestamp` and
//!   `status.token/expirationTimestamp` filled in, `spec.boundObjectRef` written even when null;
//! - the token (`pkg/serviceaccount/claims.go`, `staging/.../token/jwt`): it authenticates as
//!   `system:serviceaccount:NS:NAME` only while its audiences include the API server's, until
//!   `exp` plus go-jose's one-minute leeway, and while the ServiceAccount (and a bound Secret)
//!   still exists with the uid recorded at issue time and was not marked deleted more than a
//!   minute ago. Every other outcome is a plain 401, as on a real server.
//!
//! Tokens are JWT-shaped (header, the real claims, a random third part) but not signed: the
//! server recognises its tokens by lookup, so nothing else can mint one. Checking a token costs
//! a map lookup plus a ServiceAccount read, done when a request presents it; there is no
//! background task. Time comes from a [`Clock`] that tests can move forward.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::auth::UserInfo;
use super::registry::ResourceType;
use super::status::{ApiError, FieldError};
use super::store::Store;

/// The audience of tokens meant for this API server (its `--api-audiences`, which default to
/// `--service-account-issuer`); kind and kubeadm clusters use this value.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The `iss` claim.
pub const ISSUER: &str = API_AUDIENCE;
/// `spec.expirationSeconds` when the request has none (`SetDefaults_TokenRequestSpec`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 60 * 60;
/// The shortest lifetime validation accepts (`MinTokenAgeSec`).
pub const MIN_EXPIRATION_SECONDS: i64 = 10 * 60;
/// The longest lifetime validation accepts.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// go-jose's `DefaultLeeway`: a token still works this long after `exp`, and an object
/// marked deleted less than this long ago still counts.
pub const LEEWAY_SECONDS: i64 = 60;

const GROUP: &str = "authentication.k8s.io";
const KIND: &str = "TokenRequest";
const API_VERSION: &str = "authentication.k8s.io/v1";

/// Whether `rt` has the `token` subresource (core v1 serviceaccounts).
pub fn serves(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.version == "v1" && rt.plural == "serviceaccounts"
}

/// The `/api/v1` discovery entry of the subresource, as the real server lists it.
pub fn discovery_entry() -> Value {
    json!({
        "name": "serviceaccounts/token",
        "singularName": "",
        "namespaced": true,
        "group": GROUP,
        "version": "v1",
        "kind": KIND,
        "verbs": ["create"],
    })
}

/// The server's notion of "now" for tokens: wall time plus an offset that only moves forward.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let wall = Timestamp::now();
        wall.checked_add(SignedDuration::from_millis(
            self.offset_ms.load(Ordering::Relaxed),
        ))
        .unwrap_or(wall)
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// A `name`/`uid` reference inside the token's `kubernetes.io` claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// What the server remembers about an issued token: its claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundToken {
    pub namespace: String,
    pub service_account: ObjectRef,
    /// The Secret the token is bound to (`spec.boundObjectRef` of kind Secret).
    pub secret: Option<ObjectRef>,
    pub audiences: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires: i64,
}

impl BoundToken {
    pub fn user(&self) -> UserInfo {
        UserInfo::service_account(&self.namespace, &self.service_account.name)
    }
}

fn timestamp_at(object: &Value, pointer: &str) -> Option<Timestamp> {
    object.pointer(pointer)?.as_str()?.parse().ok()
}

fn uid_of(object: &Value) -> &str {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether `token` authenticates at `now`, as the real service-account token authenticator
/// decides. `lookup(plural, name)` reads an object of the token's namespace (`serviceaccounts`,
/// `secrets`). The error says why not, for logs; clients only ever see 401.
pub fn validate(
    token: &BoundToken,
    now: Timestamp,
    lookup: impl Fn(&str, &str) -> Option<Value>,
) -> Result<(), String> {
    if !token.audiences.iter().any(|a| a == API_AUDIENCE) {
        return Err(format!(
            "token audiences {:?} is invalid for the target audiences [\"{API_AUDIENCE}\"]",
            token.audiences
        ));
    }
    if now.as_second() > token.expires + LEEWAY_SECONDS
        || (now.as_second() == token.expires + LEEWAY_SECONDS && now.subsec_nanosecond() > 0)
    {
        return Err("service account token has expired".to_string());
    }
    let deleted_before = now - SignedDuration::from_secs(LEEWAY_SECONDS);
    let namespace = &token.namespace;
    let sa = &token.service_account;
    let Some(account) = lookup("serviceaccounts", &sa.name) else {
        return Err(format!("serviceaccounts \"{}\" not found", sa.name));
    };
    if uid_of(&account) != sa.uid {
        return Err(format!(
            "service account UID ({}) does not match claim ({})",
            uid_of(&account),
            sa.uid
        ));
    }
    if timestamp_at(&account, "/metadata/deletionTimestamp").is_some_and(|t| t < deleted_before) {
        return Err(format!(
            "service account {namespace}/{} has been deleted",
            sa.name
        ));
    }
    if let Some(secret_ref) = &token.secret {
        let Some(secret) = lookup("secrets", &secret_ref.name) else {
            return Err("service account token has been invalidated".to_string());
        };
        if uid_of(&secret) != secret_ref.uid {
            return Err(format!(
                "secret UID ({}) does not match service account secret ref claim ({})",
                uid_of(&secret),
                secret_ref.uid
            ));
        }
        if timestamp_at(&secret, "/metadata/deletionTimestamp").is_some_and(|t| t < deleted_before)
        {
            return Err("service account token has been invalidated".to_string());
        }
    }
    Ok(())
}

/// The bound tokens issued so far, and the clock they are judged by.
#[derive(Debug, Default)]
pub struct BoundTokens {
    clock: Clock,
    tokens: RwLock<HashMap<String, BoundToken>>,
}

/// Reads objects of one namespace from the store, for [`validate`].
fn namespace_lookup<'a>(
    store: &'a Store,
    namespace: &'a str,
) -> impl Fn(&str, &str) -> Option<Value> + 'a {
    move |plural, name| {
        let rt = store.lookup("", "v1", plural)?;
        store.get(&rt, Some(namespace), name).ok()
    }
}

impl BoundTokens {
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The claims of an issued token, if `token` is one (valid or not).
    pub fn claims(&self, token: &str) -> Option<BoundToken> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// `None` if `token` was not issued here; otherwise who it authenticates as, or 401. A
    /// rejected token is forgotten: nothing that rejects it (expiry, a deleted or recreated
    /// ServiceAccount) can be undone.
    pub fn authenticate(&self, store: &Store, token: &str) -> Option<Result<UserInfo, ApiError>> {
        let claims = self.claims(token)?;
        match validate(
            &claims,
            self.clock.now(),
            namespace_lookup(store, &claims.namespace),
        ) {
            Ok(()) => Some(Ok(claims.user())),
            Err(reason) => {
                tracing::debug!(%reason, user = %claims.user().name, "bound service-account token rejected");
                self.tokens
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(token);
                Some(Err(ApiError::unauthorized()))
            }
        }
    }

    /// Handles `create` on `serviceaccounts/{name}/token` in `namespace` with the decoded
    /// request body; returns the TokenRequest to answer with (201).
    pub fn create(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let mut request = decode(body, namespace)?;
        // The NamespaceLifecycle admission plugin runs before the registry.
        let namespaces = store
            .lookup("", "v1", "namespaces")
            .ok_or_else(|| ApiError::internal("namespaces is not served"))?;
        if store.get(&namespaces, None, namespace).is_err() {
            return Err(ApiError::namespace_not_found(namespace));
        }
        if let Some(body_name) = request
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            && body_name != name
        {
            return Err(invalid(
                name,
                vec![FieldError::invalid(
                    "metadata.name",
                    &json!(body_name),
                    "must match the service account name if specified",
                )],
            ));
        }
        let accounts = store
            .lookup("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::internal("serviceaccounts is not served"))?;
        let account = store.get(&accounts, Some(namespace), name)?;

        let spec = &mut request["spec"];
        if spec["audiences"].as_array().is_none_or(Vec::is_empty) {
            spec["audiences"] = json!([API_AUDIENCE]);
        }
        let now = self.clock.now();
        let now_seconds = now.as_second();
        request["metadata"]["name"] = json!(name);
        request["metadata"]["namespace"] = json!(namespace);
        request["metadata"]["creationTimestamp"] = json!(format_time(now_seconds));

        let expiration = request["spec"]["expirationSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let errors = validate_spec(expiration);
        if !errors.is_empty() {
            return Err(invalid("", errors));
        }
        let secret = match request["spec"].get("boundObjectRef") {
            Some(reference) if reference.is_object() => bound_secret(store, namespace, reference)?,
            _ => None,
        };

        let audiences: Vec<String> = request["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let claims = BoundToken {
            namespace: namespace.to_string(),
            service_account: ObjectRef {
                name: name.to_string(),
                uid: uid_of(&account).to_string(),
            },
            secret,
            audiences,
            expires: now_seconds + expiration,
        };
        let token = jwt(&claims, now_seconds);
        {
            let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
            tokens.retain(|_, t| now_seconds <= t.expires + LEEWAY_SECONDS);
            tokens.insert(token.clone(), claims);
        }
        if request["spec"].get("boundObjectRef").is_none() {
            // A pointer without omitempty in k8s.io/api: the real server writes null.
            request["spec"]["boundObjectRef"] = Value::Null;
        }
        request["status"] = json!({
            "token": token,
            "expirationTimestamp": format_time(now_seconds + expiration),
        });
        Ok(request)
    }
}

fn format_time(unix_seconds: i64) -> String {
    Timestamp::from_second(unix_seconds)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `TokenRequest.authentication.k8s.io "name" is invalid: ...`
fn invalid(name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::invalid_kind(GROUP, KIND, name, causes)
}

/// `ValidateTokenRequest`'s checks of `spec.expirationSeconds`.
pub fn validate_spec(expiration_seconds: i64) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if expiration_seconds < MIN_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(expiration_seconds),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration_seconds > MAX_EXPIRATION_SECONDS {
        errors.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(expiration_seconds),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    errors
}

/// What the create handler does before the registry sees the body: check apiVersion, kind and
/// namespace, decode into the typed object (wrong JSON types are 400, unknown fields go),
/// apply defaults, wipe the system fields of `metadata` and drop any `status`.
fn decode(body: Value, namespace: &str) -> Result<Value, ApiError> {
    let mut body = body;
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "{KIND} in version \"v1\" cannot be handled as a {KIND}: expected a JSON object"
        )));
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != API_VERSION => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({API_VERSION})"
            )));
        }
        _ => body["apiVersion"] = json!(API_VERSION),
    }
    match body.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != KIND => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({KIND})"
            )));
        }
        _ => body["kind"] = json!(KIND),
    }
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    match body
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        Some(n) if n != namespace => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => body["metadata"]["namespace"] = json!(namespace),
    }
    if !body.get("spec").is_some_and(Value::is_object) {
        body["spec"] = json!({});
    }
    let spec = &mut body["spec"];
    if spec.get("audiences").is_none_or(Value::is_null) {
        spec["audiences"] = json!([]);
    }
    if spec.get("expirationSeconds").is_none_or(Value::is_null) {
        spec["expirationSeconds"] = json!(DEFAULT_EXPIRATION_SECONDS);
    }
    if let Some(m) = body.as_object_mut() {
        m.remove("status");
    }
    let typed: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(body)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{KIND} in version \"v1\" cannot be handled as a {KIND}: {e}"
            ))
        })?;
    let mut request = serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))?;
    // rest.WipeObjectMetaSystemFields, for subresources that do not preserve them.
    if let Some(meta) = request.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in [
            "creationTimestamp",
            "uid",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(field);
        }
    }
    Ok(request)
}

/// Resolves `spec.boundObjectRef`: a Secret of the namespace (Pods and Nodes are never found
/// here), checked against the reference's uid.
fn bound_secret(
    store: &Store,
    namespace: &str,
    reference: &Value,
) -> Result<Option<ObjectRef>, ApiError> {
    let field = |key: &str| {
        reference
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (kind, name, wanted_uid) = (field("kind"), field("name"), field("uid"));
    let (group, version) = match field("apiVersion").split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", field("apiVersion")),
    };
    let plural = match (group, kind) {
        ("", "Secret") => "secrets",
        ("", "Pod") => "pods",
        ("", "Node") => "nodes",
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("Name parameter required."));
    }
    let not_found = || {
        ApiError::new(404, "NotFound", format!("{plural} \"{name}\" not found"))
            .with_details(json!({"name": name, "kind": plural}))
    };
    // Pod-bound tokens (the kubelet's) are not modelled: their claims and their end with the
    // Pod are not implemented, so a Pod reference is refused as if the Pod did not exist.
    let Some(rt) = store
        .lookup("", "v1", plural)
        .filter(|_| plural == "secrets")
    else {
        return Err(not_found());
    };
    let object = store
        .get(&rt, Some(namespace), name)
        .map_err(|_| not_found())?;
    let uid = uid_of(&object);
    if !wanted_uid.is_empty() && wanted_uid != uid {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({wanted_uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        )
        .with_details(json!({"name": name, "group": "", "kind": kind})));
    }
    Ok(Some(ObjectRef {
        name: name.to_string(),
        uid: uid.to_string(),
    }))
}

/// base64url without padding (RFC 4648 §5), as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        let sextets = chunk.len() + 1;
        for i in 0..sextets {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT-shaped token carrying the claims the real issuer writes, with a random third part
/// in place of a signature.
fn jwt(claims: &BoundToken, issued_at: i64) -> String {
    let mut kubernetes = json!({
        "namespace": claims.namespace,
        "serviceaccount": {"name": claims.service_account.name, "uid": claims.service_account.uid},
    });
    if let Some(secret) = &claims.secret {
        kubernetes["secret"] = json!({"name": secret.name, "uid": secret.uid});
    }
    let payload = json!({
        "aud": claims.audiences,
        "exp": claims.expires,
        "iat": issued_at,
        "iss": ISSUER,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": kubernetes,
        "nbf": issued_at,
        "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account.name),
    });
    let header = json!({"alg": "none", "kid": "inmem-apiserver", "typ": "JWT"});
    let random: [u8; 32] = rand::random();
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(payload.to_string().as_bytes()),
        base64url(&random)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BoundToken {
        BoundToken {
            namespace: "ns".into(),
            service_account: ObjectRef {
                name: "sa".into(),
                uid: "uid-1".into(),
            },
            secret: None,
            audiences: vec![API_AUDIENCE.into()],
            expires: 1_000_000,
        }
    }

    fn account(uid: &str) -> Value {
        json!({"metadata": {"name": "sa", "namespace": "ns", "uid": uid}})
    }

    fn at(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp::new(seconds, nanos).expect("a valid timestamp")
    }

    #[test]
    fn expiry_allows_go_jose_leeway_of_one_minute() {
        let lookup =
            |plural: &str, _: &str| (plural == "serviceaccounts").then(|| account("uid-1"));
        let t = token();
        assert_eq!(validate(&t, at(t.expires - 1, 0), lookup), Ok(()));
        assert_eq!(validate(&t, at(t.expires + 30, 0), lookup), Ok(()));
        assert_eq!(validate(&t, at(t.expires + 60, 0), lookup), Ok(()));
        assert_eq!(
            validate(&t, at(t.expires + 60, 1), lookup),
            Err("service account token has expired".to_string())
        );
        assert!(validate(&t, at(t.expires + 3600, 0), lookup).is_err());
    }

    #[test]
    fn a_deleted_or_recreated_service_account_revokes_the_token() {
        let t = token();
        let now = at(t.expires - 100, 0);
        assert_eq!(
            validate(&t, now, |_: &str, _: &str| None),
            Err("serviceaccounts \"sa\" not found".to_string())
        );
        assert_eq!(
            validate(&t, now, |_: &str, _: &str| Some(account("uid-2"))),
            Err("service account UID (uid-2) does not match claim (uid-1)".to_string())
        );
        // Marked deleted (held by a finalizer): still good within the leeway, not after.
        let deleting = |seconds_ago: i64| {
            let mut sa = account("uid-1");
            sa["metadata"]["deletionTimestamp"] = json!(format_time(now.as_second() - seconds_ago));
            sa
        };
        assert_eq!(
            validate(&t, now, |_: &str, _: &str| Some(deleting(30))),
            Ok(())
        );
        assert_eq!(
            validate(&t, now, |_: &str, _: &str| Some(deleting(61))),
            Err("service account ns/sa has been deleted".to_string())
        );
    }

    #[test]
    fn tokens_for_other_audiences_do_not_authenticate_here() {
        let mut t = token();
        t.audiences = vec!["vault".into()];
        let err = validate(&t, at(t.expires - 100, 0), |_: &str, _: &str| {
            Some(account("uid-1"))
        })
        .unwrap_err();
        assert!(err.contains("is invalid for the target audiences"), "{err}");
    }

    #[test]
    fn a_secret_bound_token_dies_with_its_secret() {
        let mut t = token();
        t.secret = Some(ObjectRef {
            name: "s".into(),
            uid: "secret-uid".into(),
        });
        let now = at(t.expires - 100, 0);
        let with_secret = |secret_uid: Option<&'static str>| {
            move |plural: &str, _: &str| match plural {
                "serviceaccounts" => Some(account("uid-1")),
                _ => secret_uid.map(|u| json!({"metadata": {"name": "s", "uid": u}})),
            }
        };
        assert_eq!(validate(&t, now, with_secret(Some("secret-uid"))), Ok(()));
        assert!(validate(&t, now, with_secret(Some("other"))).is_err());
        assert_eq!(
            validate(&t, now, with_secret(None)),
            Err("service account token has been invalidated".to_string())
        );
    }

    #[test]
    fn expiration_bounds_are_the_real_validation() {
        assert!(validate_spec(600).is_empty());
        assert!(validate_spec(MAX_EXPIRATION_SECONDS).is_empty());
        let short = validate_spec(599);
        assert_eq!(
            short[0].to_string(),
            "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        );
        let err = invalid("", short);
        assert_eq!(
            (err.code, err.reason, err.message.as_str()),
            (
                422,
                "Invalid",
                "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
            )
        );
        assert_eq!(
            validate_spec(MAX_EXPIRATION_SECONDS + 1)[0].to_string(),
            "spec.expirationSeconds: Invalid value: 4294967297: may not specify a duration larger than 2^32 seconds"
        );
    }

    #[test]
    fn decoding_defaults_and_wipes_like_the_create_handler() {
        let decoded = decode(
            json!({"metadata": {"uid": "x", "labels": {"a": "b"}}}),
            "ns",
        )
        .expect("decodes");
        assert_eq!(decoded["apiVersion"], json!(API_VERSION));
        assert_eq!(decoded["kind"], json!(KIND));
        assert_eq!(
            decoded["spec"]["expirationSeconds"],
            json!(DEFAULT_EXPIRATION_SECONDS)
        );
        assert_eq!(decoded["metadata"]["namespace"], json!("ns"));
        assert_eq!(decoded["metadata"]["labels"], json!({"a": "b"}));
        assert!(decoded.pointer("/metadata/uid").is_none());

        let wrong_type = decode(json!({"spec": {"expirationSeconds": "600"}}), "ns").unwrap_err();
        assert_eq!(wrong_type.code, 400);
        let wrong_kind = decode(json!({"kind": "ServiceAccount"}), "ns").unwrap_err();
        assert_eq!(
            wrong_kind.message,
            "the kind in the data (ServiceAccount) does not match the expected kind (TokenRequest)"
        );
        let wrong_ns = decode(json!({"metadata": {"namespace": "other"}}), "ns").unwrap_err();
        assert_eq!(wrong_ns.code, 400);
    }

    #[test]
    fn tokens_are_jwt_shaped_with_the_real_claims() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");

        let t = token();
        let jwt = jwt(&t, t.expires - 3600);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode_part = |s: &str| -> Value {
            const ALPHABET: &str =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bits: Vec<u32> = s
                .chars()
                .map(|c| ALPHABET.find(c).expect("base64url") as u32)
                .collect();
            let mut bytes = Vec::new();
            for chunk in bits.chunks(4) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (b << (18 - 6 * i)));
                for i in 0..chunk.len() - 1 {
                    bytes.push((n >> (16 - 8 * i)) as u8);
                }
            }
            serde_json::from_slice(&bytes).expect("JSON")
        };
        let claims = decode_part(parts[1]);
        assert_eq!(claims["sub"], json!("system:serviceaccount:ns:sa"));
        assert_eq!(claims["aud"], json!([API_AUDIENCE]));
        assert_eq!(claims["exp"], json!(t.expires));
        assert_eq!(
            claims["kubernetes.io"]["serviceaccount"],
            json!({"name": "sa", "uid": "uid-1"})
        );
        assert_eq!(decode_part(parts[0])["alg"], json!("none"));
    }

    #[test]
    fn the_clock_only_moves_forward_when_told() {
        let clock = Clock::default();
        let before = clock.now();
        clock.advance(Duration::from_secs(7200));
        let after = clock.now();
        assert!(after.as_second() - before.as_second() >= 7200);
    }
}
