//! The HTTP face of the server: real REST paths, verbs and status codes, discovery, watch
//! streams, and the `/_inmem/` control endpoints (fault injection and the audit log) that no
//! real server has.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::access_review;
use super::audit::{AuditLog, AuditRecord};
use super::auth::{self, Authenticator, UserInfo};
use super::conversion;
use super::discovery;
use super::faults::{Decision, FaultSpec, Faults, RequestFacts};
use super::openapi;
use super::protobuf::{self, Negotiated};
use super::registry::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{self, Change, EventType, ListOptions, Patch, Store, Subresource, WatchStart};
use super::table::{self, Representation};
use super::tokenrequest;

/// The real server's request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
pub struct State {
    pub store: Store,
    pub auth: Authenticator,
    pub faults: Faults,
    pub audit: AuditLog,
    pub rbac: bool,
    pub bookmark_interval: Duration,
    /// `host:port` clients reach us at (for `/api`'s serverAddressByClientCIDRs).
    pub address: String,
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A response in Kubernetes' protobuf encoding.
fn protobuf_response(code: u16, bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An error `Status` in the encoding `accept` prefers (JSON when negotiation fails, as the
/// real server falls back).
fn negotiated_error(accept: Option<&str>, protobuf_served: bool, err: &ApiError) -> Response<Body> {
    if protobuf::negotiate(accept, protobuf_served) == Negotiated::Protobuf
        && let Ok(bytes) = protobuf::encode(&err.to_status())
    {
        return with_retry_after(
            protobuf_response(err.code, bytes, protobuf::MEDIA_TYPE),
            err,
        );
    }
    error_response(err)
}

fn error_response(err: &ApiError) -> Response<Body> {
    with_retry_after(json_response(err.code, &err.to_status()), err)
}

/// The error's `Retry-After` header (429s and injected faults), if it has one.
fn with_retry_after(mut resp: Response<Body>, err: &ApiError) -> Response<Body> {
    if let Some(secs) = err.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// 404 for a path that names nothing, as the real server's NotFound handler writes it.
fn path_not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    .with_details(json!({}))
}

/// Query parameters, decoded.
#[derive(Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True"))
    }
}

/// A parsed resource path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    /// The deprecated `/watch/` path prefix.
    watch_prefix: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    GroupList,
    Group(String),
    GroupResources(String, String),
    OpenApiV2,
    Control(Vec<String>),
    Resource(ResourcePath),
    NotFound,
}

fn parse_resource(group: &str, version: &str, rest: &[&str]) -> Route {
    let (watch_prefix, rest) = match rest.first() {
        Some(&"watch") => (true, &rest[1..]),
        _ => (false, rest),
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let namespaced = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 || rest.iter().any(|s| s.is_empty()) {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        plural: rest[0].to_string(),
        namespace,
        name: owned(rest.get(1)),
        subresource: owned(rest.get(2)),
        watch_prefix,
    })
}

fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::GroupResources(String::new(), "v1".to_string()),
        ["api", "v1", rest @ ..] => parse_resource("", "v1", rest),
        ["apis"] => Route::GroupList,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupResources(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => parse_resource(g, v, rest),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["_inmem", rest @ ..] => Route::Control(rest.iter().map(|s| s.to_string()).collect()),
        _ => Route::NotFound,
    }
}

/// The bearer token of an `Authorization` header, or `""`.
pub fn bearer_token(authorization: Option<&str>) -> &str {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default()
}

fn rbac_verb(method: &Method, has_name: bool, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), has_name) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        // POST is always `create`, also on a named subresource (`serviceaccounts/x/token`).
        ("POST", _) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

/// The entry point for every request.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let user_agent = header(header::USER_AGENT).unwrap_or_default();
    let accept = header(header::ACCEPT);
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let authorization = header(header::AUTHORIZATION);
    let route = route(&path);

    if let Route::Control(parts) = &route {
        let body = read_body(req).await;
        return Ok(match body {
            Ok(body) => control(&state, &method, parts, &body),
            Err(e) => error_response(&e),
        });
    }

    // Built-in types (and paths that name none) have a protobuf form; custom resources not.
    let protobuf_served = match &route {
        Route::Resource(rp) => !state
            .store
            .lookup(&rp.group, &rp.version, &rp.plural)
            .is_some_and(|rt| rt.is_custom()),
        _ => false,
    };
    let user = match state
        .auth
        .authenticate(authorization.as_deref(), &state.store)
    {
        Ok(u) => u,
        Err(e) => return Ok(negotiated_error(accept.as_deref(), protobuf_served, &e)),
    };

    // What RBAC and the fault rules see of this request.
    let watch = matches!(&route, Route::Resource(rp) if rp.watch_prefix) || query.flag("watch");
    let rbac_request = match &route {
        Route::Resource(rp) => {
            let name_from_selector = query.get("fieldSelector").and_then(|fs| {
                fs.split(',')
                    .find_map(|t| t.trim().strip_prefix("metadata.name="))
                    .map(str::to_string)
            });
            let verb = rbac_verb(&method, rp.name.is_some() && !rp.watch_prefix, watch);
            verb.map(|verb| auth::Request::Resource {
                verb: verb.to_string(),
                group: rp.group.clone(),
                resource: rp.plural.clone(),
                subresource: rp.subresource.clone(),
                namespace: rp.namespace.clone(),
                name: rp.name.clone().or_else(|| {
                    matches!(verb, "list" | "watch")
                        .then_some(name_from_selector)
                        .flatten()
                }),
            })
        }
        _ => Some(auth::Request::NonResource {
            verb: method.as_str().to_lowercase(),
            path: path.clone(),
        }),
    };
    let (verb, resource) = match &rbac_request {
        Some(auth::Request::Resource { verb, resource, .. }) => (verb.clone(), resource.clone()),
        Some(auth::Request::NonResource { verb, .. }) => (verb.clone(), String::new()),
        None => (method.as_str().to_lowercase(), String::new()),
    };
    let mut record = AuditRecord::new(&user.name, &user_agent, &verb, &path);
    if let Route::Resource(rp) = &route {
        record.group = rp.group.clone();
        record.resource = rp.plural.clone();
        record.subresource = rp.subresource.clone();
        record.namespace = rp.namespace.clone();
        record.name = rp.name.clone();
    }

    let token = bearer_token(authorization.as_deref()).to_string();
    let facts = RequestFacts {
        user: &user.name,
        token: &token,
        user_agent: &user_agent,
        verb: &verb,
        resource: &resource,
    };
    match state.faults.decide(&facts) {
        Decision::Serve => {}
        Decision::Delay(d) => tokio::time::sleep(d).await,
        Decision::Fail { code, retry_after } => {
            let reason = match code {
                429 => "TooManyRequests",
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InternalError",
            };
            let mut err = ApiError::new(code, reason, format!("injected fault: HTTP {code}"));
            err.retry_after = retry_after;
            record.code = code;
            state.audit.push(record);
            return Ok(negotiated_error(accept.as_deref(), protobuf_served, &err));
        }
        Decision::Stall(id) => state.faults.hold_request(id, &user.name).await,
        Decision::Hang(id) => {
            state.faults.hold_request(id, &user.name).await;
            // The partition healed: the request is lost, as a cut connection would lose it.
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "fault injection: hung request released",
            ));
        }
    }

    if state.rbac
        && let Some(request) = &rbac_request
        && !auth::rbac_allows(&state.store, &user, request)
    {
        let err = auth::forbidden(&user, request);
        record.code = err.code;
        state.audit.push(record);
        return Ok(negotiated_error(accept.as_deref(), protobuf_served, &err));
    }

    let response = match route {
        Route::Resource(rp) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return Ok(error_response(&e)),
            };
            let ctx = RequestContext {
                state: state.clone(),
                method,
                query,
                accept,
                content_type,
                body,
                user: user.clone(),
                token,
                user_agent,
                watch,
                protobuf_served,
            };
            match resource_request(&ctx, &rp).await {
                Ok(r) => r,
                Err(e) => ctx.error(&e),
            }
        }
        other => non_resource(&state, &method, other, accept.as_deref()),
    };
    record.code = response.status().as_u16();
    state.audit.push(record);
    Ok(response)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("request entity too large or unreadable: {e}"),
        )),
    }
}

fn non_resource(
    state: &State,
    method: &Method,
    route: Route,
    accept: Option<&str>,
) -> Response<Body> {
    if method != Method::GET {
        return error_response(&ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    let types = state.store.types();
    let doc = match route {
        Route::Version => Some(discovery::version()),
        Route::Health => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            return r;
        }
        Route::CoreVersions => Some(discovery::core_versions(&state.address)),
        Route::GroupList => Some(discovery::group_list(&types)),
        Route::Group(g) => discovery::group(&types, &g),
        Route::GroupResources(g, v) => discovery::resource_list(&types, &g, &v),
        Route::OpenApiV2 => {
            let owned: Vec<ResourceType> = types.iter().map(|t| (**t).clone()).collect();
            let doc = openapi::document(&owned);
            if accept.is_some_and(openapi::wants_protobuf) {
                let mut r =
                    Response::new(Full::new(Bytes::from(openapi::to_protobuf(&doc))).boxed());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(openapi::PROTOBUF_CONTENT_TYPE),
                );
                return r;
            }
            Some(doc)
        }
        _ => None,
    };
    match doc {
        Some(doc) => json_response(200, &doc),
        None => error_response(&path_not_found()),
    }
}

/// Handles `/_inmem/...`: `faults` (GET list, POST add, DELETE clear), `faults/<id>` (DELETE),
/// `drop-watches` (POST), `audit` (GET).
fn control(state: &State, method: &Method, parts: &[String], body: &Bytes) -> Response<Body> {
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["faults"]) => json_response(200, &json!(state.faults.list())),
        ("POST", ["faults"]) => match serde_json::from_slice::<FaultSpec>(body) {
            Ok(spec) => {
                let id = state.faults.add(spec);
                json_response(201, &json!({"id": id}))
            }
            Err(e) => error_response(&ApiError::bad_request(format!("invalid fault rule: {e}"))),
        },
        ("DELETE", ["faults"]) => {
            state.faults.clear();
            json_response(200, &json!({"cleared": true}))
        }
        ("DELETE", ["faults", id]) => match id.parse::<u64>() {
            Ok(id) if state.faults.remove(id) => json_response(200, &json!({"removed": id})),
            _ => error_response(&ApiError::new(
                404,
                "NotFound",
                format!("no fault rule {id}"),
            )),
        },
        ("POST", ["drop-watches"]) => {
            state.faults.drop_watches();
            json_response(200, &json!({"dropped": true}))
        }
        ("GET", ["audit"]) => json_response(200, &json!(state.audit.records())),
        _ => error_response(&path_not_found()),
    }
}

struct RequestContext {
    state: Arc<State>,
    method: Method,
    query: Query,
    accept: Option<String>,
    content_type: String,
    body: Bytes,
    user: UserInfo,
    token: String,
    user_agent: String,
    watch: bool,
    /// Whether the resource has a protobuf form (built-in types do, custom resources not).
    protobuf_served: bool,
}

impl RequestContext {
    fn media_type(&self) -> &str {
        self.content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
    }

    /// The request body as JSON, from JSON, YAML or (for built-in types) protobuf.
    fn body(&self) -> Result<Value, ApiError> {
        if self.media_type() != protobuf::MEDIA_TYPE {
            return self.json_body();
        }
        if !self.protobuf_served {
            return Err(ApiError::unsupported_media_type(protobuf::MEDIA_TYPE));
        }
        protobuf::decode_body(&self.body)
    }

    /// The answer's encoding; Tables and metadata-only answers stay JSON.
    fn negotiated(&self) -> Negotiated {
        match self.representation() {
            Representation::Object => {
                protobuf::negotiate(self.accept.as_deref(), self.protobuf_served)
            }
            _ => Negotiated::Json,
        }
    }

    /// An answer in the encoding the client prefers.
    fn respond(&self, code: u16, body: &Value) -> Response<Body> {
        if self.negotiated() == Negotiated::Protobuf
            && let Ok(bytes) = protobuf::encode(body)
        {
            return protobuf_response(code, bytes, protobuf::MEDIA_TYPE);
        }
        json_response(code, body)
    }

    fn error(&self, err: &ApiError) -> Response<Body> {
        negotiated_error(self.accept.as_deref(), self.protobuf_served, err)
    }

    /// The request body as JSON; `application/yaml` bodies are accepted like the real server.
    fn json_body(&self) -> Result<Value, ApiError> {
        let media = self.media_type();
        let malformed = |e: String| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized or malformed: {e}"
            ))
        };
        if media == "application/yaml" {
            return serde_yaml::from_slice(&self.body).map_err(|e| malformed(e.to_string()));
        }
        if !(media.is_empty() || media == "application/json" || media.ends_with("+json")) {
            return Err(ApiError::unsupported_media_type(media));
        }
        serde_json::from_slice(&self.body).map_err(|e| malformed(e.to_string()))
    }

    fn representation(&self) -> Representation {
        Representation::from_accept(self.accept.as_deref())
    }
}

fn list_options(rt: &ResourceType, q: &Query) -> Result<ListOptions, ApiError> {
    Ok(ListOptions {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or_default(), rt)?,
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
    })
}

fn reject_dry_run(query: &Query) -> Result<(), ApiError> {
    if query.get("dryRun").is_some() {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the in-memory API server",
        ));
    }
    Ok(())
}

/// `serviceaccounts/{name}/token`: only `create` (POST) is served, as on a real server.
fn token_request(ctx: &RequestContext, rp: &ResourcePath) -> Result<Response<Body>, ApiError> {
    let (Some(namespace), Some(name)) = (rp.namespace.as_deref(), rp.name.as_deref()) else {
        return Err(path_not_found());
    };
    if ctx.method != Method::POST || ctx.watch {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            ctx.method
        )));
    }
    reject_dry_run(&ctx.query)?;
    // kubectl's typed client (`kubectl create token`) sends protobuf.
    let body = ctx.body()?;
    let state = &ctx.state;
    let created = state
        .auth
        .bound
        .create(&state.store, namespace, name, body)?;
    Ok(ctx.respond(201, &created))
}

/// `selfsubjectaccessreviews` and `selfsubjectrulesreviews`: only `create` (POST), cluster-scoped.
fn access_review(ctx: &RequestContext, rp: &ResourcePath) -> Result<Response<Body>, ApiError> {
    if rp.namespace.is_some() || rp.subresource.is_some() {
        return Err(path_not_found());
    }
    if ctx.method != Method::POST || ctx.watch || rp.name.is_some() {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            ctx.method
        )));
    }
    reject_dry_run(&ctx.query)?;
    let state = &ctx.state;
    let answer =
        access_review::review(&state.store, state.rbac, &ctx.user, &rp.plural, ctx.body()?)?;
    Ok(ctx.respond(201, &answer))
}

async fn resource_request(
    ctx: &RequestContext,
    rp: &ResourcePath,
) -> Result<Response<Body>, ApiError> {
    let state = &ctx.state;
    if ctx.negotiated() == Negotiated::NotAcceptable {
        return Err(protobuf::not_acceptable(ctx.protobuf_served));
    }
    if access_review::serves(&rp.group, &rp.version, &rp.plural) {
        return access_review(ctx, rp);
    }
    let Some(rt) = state.store.lookup(&rp.group, &rp.version, &rp.plural) else {
        return Err(path_not_found());
    };
    if rp.namespace.is_some() && !rt.namespaced {
        return Err(path_not_found());
    }
    if rt.namespaced && rp.namespace.is_none() && rp.name.is_some() {
        return Err(path_not_found());
    }
    let subresource = match rp.subresource.as_deref() {
        None => Subresource::Main,
        Some("status") if rt.status_subresource => Subresource::Status,
        Some("token") if tokenrequest::serves(&rt) => return token_request(ctx, rp),
        Some(_) => return Err(path_not_found()),
    };
    reject_dry_run(&ctx.query)?;
    let ns = rp.namespace.as_deref();
    let name = rp.name.as_deref();
    let method = ctx.method.as_str();

    if (method == "GET" || method == "HEAD") && ctx.watch {
        if subresource != Subresource::Main {
            return Err(ApiError::method_not_allowed(
                "watch is not supported on subresources",
            ));
        }
        return watch(ctx, rt, ns, name);
    }
    match (method, name) {
        ("GET" | "HEAD", Some(name)) => {
            let object = state.store.get(&rt, ns, name)?;
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok(ctx.respond(
                200,
                &match ctx.representation() {
                    Representation::Object => object,
                    Representation::Metadata => table::partial_metadata(&object),
                    Representation::Table => table::table(&rt, &[object], &rv),
                },
            ))
        }
        ("GET" | "HEAD", None) => {
            let options = list_options(&rt, &ctx.query)?;
            let listed = state.store.list(&rt, ns, &options)?;
            let rv = listed.resource_version.to_string();
            let mut metadata = json!({"resourceVersion": rv});
            if let Some(token) = &listed.continue_token {
                metadata["continue"] = json!(token);
            }
            let body = match ctx.representation() {
                Representation::Table => {
                    let mut t = table::table(&rt, &listed.items, &rv);
                    t["metadata"] = metadata;
                    t
                }
                Representation::Metadata => json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                    "items": listed.items.iter().map(table::partial_metadata).collect::<Vec<_>>(),
                }),
                Representation::Object => {
                    // Built-in lists carry no apiVersion/kind on items; custom resources do.
                    let items: Vec<Value> = if rt.is_custom() {
                        listed.items
                    } else {
                        listed
                            .items
                            .into_iter()
                            .map(|mut o| {
                                if let Some(m) = o.as_object_mut() {
                                    m.remove("apiVersion");
                                    m.remove("kind");
                                }
                                o
                            })
                            .collect()
                    };
                    json!({
                        "kind": rt.list_kind,
                        "apiVersion": rt.api_version(),
                        "metadata": metadata,
                        "items": items,
                    })
                }
            };
            Ok(ctx.respond(200, &body))
        }
        ("POST", None) => {
            if subresource != Subresource::Main || (rt.namespaced && ns.is_none()) {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let created = state.store.create(&rt, ns, ctx.body()?)?;
            Ok(ctx.respond(201, &created))
        }
        ("PUT", Some(name)) => {
            let (object, created) = state
                .store
                .update(&rt, ns, name, ctx.body()?, subresource)?;
            Ok(ctx.respond(if created { 201 } else { 200 }, &object))
        }
        ("PATCH", Some(name)) => {
            let patch = match ctx.media_type() {
                "application/merge-patch+json" => Patch::Merge(ctx.json_body()?),
                "application/json-patch+json" => Patch::Json(ctx.json_body()?),
                // The real server refuses strategic merge for custom resources.
                "application/strategic-merge-patch+json" if !rt.is_custom() => {
                    Patch::Strategic(ctx.json_body()?)
                }
                "application/strategic-merge-patch+json" => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                "application/apply-patch+yaml" => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "server-side apply (application/apply-patch+yaml) is not implemented by the in-memory API server",
                    ));
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            };
            let patched = state.store.patch(&rt, ns, name, &patch, subresource)?;
            Ok(ctx.respond(200, &patched))
        }
        ("DELETE", Some(name)) => {
            let body = if ctx.body.is_empty() {
                json!({})
            } else {
                ctx.body()?
            };
            let preconditions = store::preconditions_from_body(&body);
            let deleted = state.store.delete(&rt, ns, name, &preconditions)?;
            let still_there = deleted.pointer("/metadata/deletionTimestamp").is_some()
                && state.store.get(&rt, ns, name).is_ok();
            if rt.return_deleted_object || still_there {
                Ok(ctx.respond(200, &deleted))
            } else {
                Ok(ctx.respond(
                    200,
                    &json!({
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": deleted.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                        },
                    }),
                ))
            }
        }
        ("DELETE", None) => {
            let options = list_options(&rt, &ctx.query)?;
            let deleted = state.store.delete_collection(&rt, ns, &options)?;
            Ok(ctx.respond(
                200,
                &json!({
                    "kind": rt.list_kind,
                    "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": state.store.resource_version().to_string()},
                    "items": deleted,
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// What a watch sends: events that concern its type, namespace and selectors.
struct WatchFilter {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|ns| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                == Some(ns)
        });
        ns_ok && self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event a watcher sees for a change, after selector filtering: an object that stops
    /// matching is DELETED for this watcher, one that starts matching is ADDED.
    fn translate(&self, change: &Change) -> Option<(EventType, Value)> {
        if change.key != conversion::storage_key(&self.rt) {
            return None;
        }
        let object = store::present(&self.rt, change.object.clone());
        let now = self.matches(&object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.matches(&store::present(&self.rt, p.clone())));
        match change.event {
            EventType::Added => now.then_some((EventType::Added, object)),
            EventType::Deleted => before.then_some((EventType::Deleted, object)),
            EventType::Modified => match (before, now) {
                (true, true) => Some((EventType::Modified, object)),
                (false, true) => Some((EventType::Added, object)),
                (true, false) => Some((EventType::Deleted, object)),
                (false, false) => None,
            },
        }
    }
}

fn watch_line(event: &str, object: Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// One watch event: a JSON line, or a length-prefixed protobuf `WatchEvent` frame.
fn watch_event(protobuf: bool, event: &str, object: Value) -> Bytes {
    if !protobuf {
        return watch_line(event, object);
    }
    match protobuf::watch_frame(event, &object) {
        Ok(frame) => Bytes::from(frame),
        Err(e) => {
            let status = ApiError::new(500, "InternalError", e.to_string()).to_status();
            Bytes::from(protobuf::watch_frame("ERROR", &status).unwrap_or_default())
        }
    }
}

fn render(rt: &ResourceType, repr: Representation, object: Value) -> Value {
    match repr {
        Representation::Object => object,
        Representation::Metadata => table::partial_metadata(&object),
        Representation::Table => {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            table::table(rt, &[object], &rv)
        }
    }
}

fn watch(
    ctx: &RequestContext,
    rt: Arc<ResourceType>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let state = ctx.state.clone();
    let mut fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or_default(), &rt)?;
    if let Some(name) = name {
        fields = FieldSelector::parse(&format!("metadata.name={name}"), &rt)?;
    }
    let filter = WatchFilter {
        rt: rt.clone(),
        namespace: namespace.map(str::to_string),
        labels: LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or_default())?,
        fields,
    };
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        // The real server picks a random timeout between its minimum request timeout
        // (30 minutes) and twice that.
        .unwrap_or_else(|| Duration::from_secs(1800 + rand::random_range(0..1800)));
    let from: Option<u64> = match ctx.query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };

    let protobuf = ctx.negotiated() == Negotiated::Protobuf;
    let options = WatchOptions {
        protobuf,
        filter,
        repr: ctx.representation(),
        bookmarks: ctx.query.flag("allowWatchBookmarks"),
        initial_events_end: ctx.query.flag("sendInitialEvents") && from.is_none(),
        timeout,
        user: ctx.user.name.clone(),
        token: ctx.token.clone(),
        user_agent: ctx.user_agent.clone(),
    };
    match state.store.watch(&rt, namespace, from) {
        Ok(start) => Ok(stream_watch(state, options, start)),
        // As the real watch cache does: 200, then one ERROR event with the 410 Status.
        Err(e) if e.code == 410 => {
            let mut r =
                Response::new(Full::new(watch_event(protobuf, "ERROR", e.to_status())).boxed());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, watch_content_type(protobuf));
            Ok(r)
        }
        Err(e) => Err(e),
    }
}

fn watch_content_type(protobuf: bool) -> HeaderValue {
    HeaderValue::from_static(if protobuf {
        protobuf::WATCH_MEDIA_TYPE
    } else {
        "application/json"
    })
}

/// How one watch stream behaves.
struct WatchOptions {
    /// Frames of protobuf `WatchEvent`s instead of JSON lines.
    protobuf: bool,
    filter: WatchFilter,
    repr: Representation,
    bookmarks: bool,
    /// Send the `k8s.io/initial-events-end` bookmark after the initial objects.
    initial_events_end: bool,
    timeout: Duration,
    /// Who is watching (for partition rules).
    user: String,
    token: String,
    user_agent: String,
}

fn stream_watch(state: Arc<State>, options: WatchOptions, start: WatchStart) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let WatchOptions {
        protobuf,
        filter,
        repr,
        bookmarks,
        initial_events_end,
        timeout,
        user,
        token,
        user_agent,
    } = options;
    let WatchStart {
        initial,
        replay,
        mut progress,
        mut live,
    } = start;
    let bookmark_interval = state.bookmark_interval;
    tokio::spawn(async move {
        let rt = filter.rt.clone();
        let bookmark = |rv: u64, end_of_initial: bool| {
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if end_of_initial {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            watch_event(
                protobuf,
                "BOOKMARK",
                json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
            )
        };
        for object in initial.into_iter().filter(|o| filter.matches(o)) {
            if tx
                .send(watch_event(protobuf, "ADDED", render(&rt, repr, object)))
                .await
                .is_err()
            {
                return;
            }
        }
        if initial_events_end && tx.send(bookmark(progress, true)).await.is_err() {
            return;
        }
        for change in replay {
            progress = progress.max(change.resource_version);
            if let Some((event, object)) = filter.translate(&change)
                && tx
                    .send(watch_event(
                        protobuf,
                        event.as_str(),
                        render(&rt, repr, object),
                    ))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_interval);
        ticker.tick().await;
        let mut drops = state.faults.subscribe_drops();
        let mut fault_changes = state.faults.subscribe_changes();
        let facts = |faults: &Faults| {
            let facts = RequestFacts {
                user: &user,
                token: &token,
                user_agent: &user_agent,
                verb: "watch",
                resource: &rt.plural,
            };
            (faults.hanging(&facts), faults.holding_watch(&facts))
        };
        // Events held back by a HoldWatch rule, delivered in order once it is gone.
        let mut held: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        loop {
            let (hanging, holding) = facts(&state.faults);
            if let Some(id) = hanging {
                // Partitioned: go silent, then close once the partition heals.
                tokio::select! {
                    _ = state.faults.hold(id) => {}
                    _ = tx.closed() => {}
                }
                return;
            }
            if holding.is_none() {
                while let Some(line) = held.pop_front() {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                received = live.recv() => match received {
                    Ok(change) => {
                        if change.resource_version <= progress {
                            continue;
                        }
                        progress = change.resource_version;
                        if let Some((event, object)) = filter.translate(&change) {
                            let line = watch_event(protobuf, event.as_str(), render(&rt, repr, object));
                            if holding.is_some() {
                                held.push_back(line);
                                state.faults.event_held();
                            } else if tx.send(line).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Too slow a reader: the real server closes such watchers too.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks && holding.is_none() => {
                    if tx.send(bookmark(progress, false)).await.is_err() {
                        return;
                    }
                }
                // A black-holed stream does not end at its timeout either: the client would
                // never see the end.
                _ = &mut deadline, if holding.is_none() => return,
                _ = drops.changed() => return,
                _ = fault_changes.changed() => continue,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, watch_content_type(protobuf));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_real_paths() {
        let r = |p: &str| route(p);
        assert_eq!(r("/api"), Route::CoreVersions);
        assert_eq!(
            r("/apis/coordination.k8s.io"),
            Route::Group("coordination.k8s.io".into())
        );
        let Route::Resource(rp) = r("/apis/coordination.k8s.io/v1/namespaces/ns1/leases/l1") else {
            panic!("not a resource route");
        };
        assert_eq!(
            (
                rp.namespace.as_deref(),
                rp.plural.as_str(),
                rp.name.as_deref()
            ),
            (Some("ns1"), "leases", Some("l1"))
        );
        let Route::Resource(rp) = r("/api/v1/namespaces/ns1/status") else {
            panic!("not a resource route");
        };
        assert_eq!(
            (
                rp.namespace,
                rp.plural.as_str(),
                rp.name.as_deref(),
                rp.subresource.as_deref()
            ),
            (None, "namespaces", Some("ns1"), Some("status"))
        );
        let Route::Resource(rp) =
            r("/apis/apps.newresource.com/v1alpha1/watch/namespaces/a/newresources")
        else {
            panic!("not a resource route");
        };
        assert!(rp.watch_prefix);
        let Route::Resource(rp) = r("/api/v1/namespaces/ns1/serviceaccounts/sa/token") else {
            panic!("not a resource route");
        };
        assert_eq!(
            (
                rp.namespace.as_deref(),
                rp.plural.as_str(),
                rp.name.as_deref(),
                rp.subresource.as_deref()
            ),
            (Some("ns1"), "serviceaccounts", Some("sa"), Some("token"))
        );
        // POST is `create` for RBAC, on a named subresource too.
        assert_eq!(rbac_verb(&Method::POST, true, false), Some("create"));
        assert_eq!(r("/apis/g/v/namespaces/a/b/c/d/e"), Route::NotFound);
    }
}
