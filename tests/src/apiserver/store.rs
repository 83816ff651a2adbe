//! The object store: every object of every type, one global `resourceVersion` counter, and a
//! bounded history of changes that watches replay from.
//!
//! Semantics follow the real API server's generic registry (`staging/src/k8s.io/apiserver/
//! pkg/registry/generic/registry/store.go`) and etcd3 storage:
//! - every successful write takes the next value of one global counter as its
//!   `resourceVersion`; a write that changes nothing is a no-op (no new version, no event);
//! - an update that names a `resourceVersion` succeeds only if it is still current, else
//!   409 Conflict — the compare-and-swap our elector relies on;
//! - with a status subresource, main-resource writes keep the stored status and `/status`
//!   writes keep everything but the status; `generation` moves only when the spec changes;
//! - deleting an object with finalizers only marks it (`deletionTimestamp`) until an update
//!   clears them.
//!
//! All of it happens under one mutex, so each write is atomic with respect to the others and
//! watch events are published in `resourceVersion` order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::conversion;
use super::fields::{str_at, strings_at};
use super::registry::{ResourceType, Schema, builtin_types};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::validation;

/// Storage key of a type: its group and plural (all versions of a type share storage).
pub type TypeKey = (String, String);

fn type_key(rt: &ResourceType) -> TypeKey {
    conversion::storage_key(rt)
}

/// What kind of change a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Clone, Debug)]
pub struct Change {
    pub resource_version: u64,
    pub key: TypeKey,
    pub event: EventType,
    /// The object after the change (for deletions: its last state, carrying the deletion's
    /// resourceVersion).
    pub object: Value,
    /// The object before the change, so a selector-filtered watch can tell that an object
    /// stopped (or started) matching.
    pub previous: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// Options of a list call.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The result of a list call.
#[derive(Clone, Debug)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
}

/// A watch registered with the store: what to send first, then the live feed.
pub struct WatchStart {
    /// Current objects to send as ADDED (a watch without a resourceVersion).
    pub initial: Vec<Value>,
    /// Changes after the requested resourceVersion, from the history.
    pub replay: Vec<Arc<Change>>,
    /// The resourceVersion everything before which has been covered by `initial`/`replay`.
    pub progress: u64,
    pub live: broadcast::Receiver<Arc<Change>>,
}

/// Preconditions of a delete (`DeleteOptions.preconditions`).
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

struct Inner {
    resource_version: u64,
    /// Served types by (group, version, plural).
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    objects: HashMap<TypeKey, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Change>>,
    /// The newest resourceVersion no longer in the history: watches from before it get 410.
    compacted: u64,
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    inner: Mutex<Inner>,
    history_limit: usize,
    events: broadcast::Sender<Arc<Change>>,
}

/// Namespaces that exist in every real cluster.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

fn now_time() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn set_meta(object: &mut Value, field: &str, value: Value) {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"][field] = value;
}

fn remove_meta(object: &mut Value, field: &str) {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// The parts of an object that count as "spec" for `generation`: everything outside
/// `metadata` (and outside `status` when the status subresource is on).
fn spec_part(rt: &ResourceType, object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(m) = v.as_object_mut() {
        let annotations = m
            .get("metadata")
            .and_then(|meta| meta.get("annotations"))
            .cloned();
        m.remove("metadata");
        if rt.generation_counts_annotations
            && let Some(a) = annotations
        {
            m.insert("metadata.annotations".to_string(), a);
        }
        m.remove("apiVersion");
        m.remove("kind");
        if rt.status_subresource {
            m.remove("status");
        }
    }
    v
}

/// `object` with the `status` of `source` (none if `source` has none).
fn with_status_of(mut object: Value, source: &Value) -> Value {
    match source.get("status") {
        Some(status) => object["status"] = status.clone(),
        None => {
            if let Some(m) = object.as_object_mut() {
                m.remove("status");
            }
        }
    }
    object
}

/// The (namespace, name) key of an object of `rt` (namespace empty for cluster-scoped types).
fn object_key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> (String, String) {
    let ns = namespace.filter(|_| rt.namespaced).unwrap_or_default();
    (ns.to_string(), name.to_string())
}

fn random_suffix() -> String {
    use rand::Rng;
    // The real server's generateName suffix: 5 characters without vowels or lookalikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Store {
    /// A store with the built-in types and the system namespaces, keeping `history_limit`
    /// changes for watches.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        let mut types = BTreeMap::new();
        for rt in builtin_types() {
            types.insert(
                (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
                Arc::new(rt),
            );
        }
        let store = Store {
            inner: Mutex::new(Inner {
                resource_version: 0,
                types,
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
            }),
            history_limit: history_limit.max(1),
            events,
        };
        for ns in SYSTEM_NAMESPACES {
            let created = store.create(
                &store.namespaces_type(),
                None,
                json!({"metadata": {"name": ns}}),
            );
            debug_assert!(created.is_ok());
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this file; keep serving anyway so
        // one failing test does not cascade through every other request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// All served types, in (group, version, plural) order.
    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        self.lock().types.values().cloned().collect()
    }

    /// The served type for a URL's group, version and plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.lock()
            .types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    fn namespaces_type(&self) -> Arc<ResourceType> {
        self.lookup("", "v1", "namespaces")
            .expect("namespaces is a built-in type")
    }

    /// Objects of a type, for callers inside the server (RBAC, discovery) — no selectors.
    pub fn all(&self, group: &str, plural: &str) -> Vec<Value> {
        let inner = self.lock();
        inner
            .objects
            .get(&(group.to_string(), plural.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let inner = self.lock();
        Self::get_locked(&inner, rt, namespace, name)
            .map(|o| present(rt, o))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    fn get_locked(
        inner: &Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        inner
            .objects
            .get(&type_key(rt))?
            .get(&object_key(rt, namespace, name))
            .cloned()
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let inner = self.lock();
        // A continue token is "<resourceVersion>/<namespace>/<name>" of the last item sent.
        let after = match &options.continue_token {
            Some(token) => {
                let mut parts = token.splitn(3, '/');
                let rv = parts.next().and_then(|p| p.parse::<u64>().ok());
                match (rv, parts.next(), parts.next()) {
                    (Some(rv), Some(ns), Some(name)) => {
                        if rv < inner.compacted {
                            return Err(ApiError::expired(
                                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                            ));
                        }
                        Some((rv, (ns.to_string(), name.to_string())))
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                        ));
                    }
                }
            }
            None => None,
        };
        let list_rv = after.as_ref().map_or(inner.resource_version, |(rv, _)| *rv);
        let mut items = Vec::new();
        let mut continue_token = None;
        if let Some(objects) = inner.objects.get(&type_key(rt)) {
            let range = objects.iter().filter(|(k, _)| match &after {
                Some((_, last)) => *k > last,
                None => true,
            });
            for ((ns, name), object) in range {
                if namespace.is_some_and(|want| want != ns) {
                    continue;
                }
                let object = present(rt, object.clone());
                if !options.labels.matches(&object) || !options.fields.matches(&object) {
                    continue;
                }
                if options.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                    continue_token = Some(format!("{list_rv}/{ns}/{name}"));
                    break;
                }
                items.push(object);
            }
        }
        // A token is only needed if something follows the last item sent.
        if let Some(token) = continue_token.take() {
            let last = items.last().map(|o| {
                (
                    meta_str(o, "namespace").unwrap_or_default().to_string(),
                    meta_str(o, "name").unwrap_or_default().to_string(),
                )
            });
            if let Some((ns, name)) = last {
                continue_token = Some(format!("{list_rv}/{ns}/{name}"));
            } else {
                continue_token = Some(token);
            }
        }
        Ok(ListResult {
            items,
            resource_version: list_rv,
            continue_token,
        })
    }

    /// Registers a watch of a type (in `namespace`, or all) starting after resourceVersion
    /// `from`, or — for `None` — now, with the current objects to be sent as ADDED first.
    /// Errors with 410 Expired if `from` is older than the history kept. The feed is
    /// subscribed under the lock, so no change falls between the snapshot and the feed.
    pub fn watch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let key = type_key(rt);
        let (initial, replay, progress) = match from {
            Some(rv) if rv < inner.compacted => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {} ({})",
                    rv, inner.compacted
                )));
            }
            Some(rv) => {
                let replay = inner
                    .history
                    .iter()
                    .filter(|c| c.resource_version > rv && c.key == key)
                    .cloned()
                    .collect();
                (Vec::new(), replay, rv)
            }
            None => {
                let initial = inner
                    .objects
                    .get(&key)
                    .map(|m| {
                        m.iter()
                            .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                            .map(|(_, o)| present(rt, o.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                (initial, Vec::new(), inner.resource_version)
            }
        };
        Ok(WatchStart {
            initial,
            replay,
            progress,
            live: self.events.subscribe(),
        })
    }

    fn commit(&self, inner: &mut Inner, change: Change) {
        let change = Arc::new(change);
        inner.history.push_back(change.clone());
        while inner.history.len() > self.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.resource_version;
            }
        }
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(change);
    }

    /// Records one change: takes the next resourceVersion for `object`, stores it (or, for
    /// a deletion, leaves it removed), publishes the watch event and applies side effects.
    /// Returns the object as stored.
    fn write(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        key: (String, String),
        event: EventType,
        mut object: Value,
        previous: Option<Value>,
    ) -> Value {
        inner.resource_version += 1;
        let rv = inner.resource_version;
        set_meta(&mut object, "resourceVersion", json!(rv.to_string()));
        if event != EventType::Deleted {
            inner
                .objects
                .entry(type_key(rt))
                .or_default()
                .insert(key, object.clone());
        }
        self.commit(
            inner,
            Change {
                resource_version: rv,
                key: type_key(rt),
                event,
                object: object.clone(),
                previous: previous.clone(),
            },
        );
        let new = (event != EventType::Deleted).then_some(&object);
        self.after_write(inner, rt, previous.as_ref(), new);
        object
    }

    /// Checks and fills the fields every write shares: apiVersion/kind, namespace, name.
    fn prepare_shape(
        rt: &ResourceType,
        namespace: Option<&str>,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: expected a JSON object",
                rt.kind, rt.version, rt.kind
            )));
        }
        match object.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != rt.api_version() => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
            _ => object["apiVersion"] = json!(rt.api_version()),
        }
        match object.get("kind").and_then(Value::as_str) {
            Some(k) if k != rt.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
            _ => object["kind"] = json!(rt.kind),
        }
        if rt.namespaced {
            let ns = namespace.unwrap_or_default();
            match meta_str(object, "namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => set_meta(object, "namespace", json!(ns)),
            }
        } else {
            remove_meta(object, "namespace");
        }
        Ok(())
    }

    fn check_namespace(
        inner: &Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns = namespace.unwrap_or_default();
        let exists = inner
            .objects
            .get(&(String::new(), "namespaces".to_string()))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())));
        if exists {
            Ok(())
        } else {
            Err(ApiError::namespace_not_found(ns))
        }
    }

    /// Runs decoding and type validation; returns the normalised object.
    fn validate(
        rt: &ResourceType,
        object: Value,
        name: &str,
        write: validation::Write,
    ) -> Result<Value, ApiError> {
        let object = validation::normalize(rt, object)?;
        let errors = validation::validate_object(rt, &object, write);
        if errors.is_empty() {
            Ok(object)
        } else {
            Err(ApiError::invalid(rt, name, errors))
        }
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        self.create_locked(&mut inner, rt, namespace, object)
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        Self::prepare_shape(rt, namespace, &mut object)?;
        let mut name = meta_str(&object, "name").unwrap_or_default().to_string();
        if name.is_empty()
            && let Some(prefix) = meta_str(&object, "generateName")
        {
            name = format!("{prefix}{}", random_suffix());
            set_meta(&mut object, "name", json!(name));
        }
        validation::validate_name(rt.name_rule, &name)
            .map_err(|e| ApiError::invalid(rt, &name, vec![e]))?;
        // etcd3's check parses the version: an unparsable one is ignored, a number is refused.
        if meta_str(&object, "resourceVersion")
            .is_some_and(|rv| rv.parse::<u64>().is_ok_and(|v| v > 0))
        {
            // etcd3's store answers this with a plain error: 500 and no reason.
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        Self::check_namespace(inner, rt, namespace)?;
        if Self::get_locked(inner, rt, namespace, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.status_subresource
            && let Some(m) = object.as_object_mut()
        {
            m.remove("status");
        }
        // Server-owned metadata.
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            remove_meta(&mut object, field);
        }
        set_meta(&mut object, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut object, "creationTimestamp", json!(now_time()));
        if rt.tracks_generation {
            set_meta(&mut object, "generation", json!(1));
        }
        default_status_on_create(rt, &mut object);
        let object = conversion::to_storage(
            rt,
            Self::validate(rt, object, &name, validation::Write::Create)?,
        );
        let key = object_key(rt, namespace, &name);
        let object = self.write(inner, rt, key, EventType::Added, object, None);
        Ok(present(rt, object))
    }

    /// PUT: replace an object (or its status), compare-and-swap on `metadata.resourceVersion`
    /// when the body carries one.
    pub fn update(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        object: Value,
        subresource: Subresource,
    ) -> Result<(Value, bool), ApiError> {
        let mut inner = self.lock();
        self.update_locked(&mut inner, rt, namespace, name, object, subresource)
    }

    /// Returns the stored object and whether it was created.
    fn update_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        subresource: Subresource,
    ) -> Result<(Value, bool), ApiError> {
        Self::prepare_shape(rt, namespace, &mut object)?;
        match meta_str(&object, "name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => set_meta(&mut object, "name", json!(name)),
        }
        let requested_rv = meta_str(&object, "resourceVersion")
            .filter(|rv| !rv.is_empty())
            .map(str::to_string);
        let stored = Self::get_locked(inner, rt, namespace, name);
        // The UID in the body is a precondition (the registry's `objInfo.Preconditions()`), and
        // storage checks it before anything else: against the stored object, or against an
        // empty one when there is none (the registry's update reads with `ignoreNotFound`). So
        // a write that names the UID of a deleted object is a 409, not a 404, and so is a write
        // to an object that was deleted and created again under the same name.
        if let Some(uid) = meta_str(&object, "uid").filter(|u| !u.is_empty()) {
            let stored_uid = stored
                .as_ref()
                .and_then(|o| meta_str(o, "uid"))
                .unwrap_or_default();
            if uid != stored_uid {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}"
                    ),
                ));
            }
        }
        // The update is computed in the client's view of the object, then stored.
        let Some(current) = stored.clone().map(|o| present(rt, o)) else {
            if requested_rv.is_none()
                && rt.allow_create_on_update
                && subresource == Subresource::Main
            {
                let created = self.create_locked(inner, rt, namespace, object)?;
                return Ok((created, true));
            }
            return Err(ApiError::not_found(rt, name));
        };
        match &requested_rv {
            None if !rt.allow_unconditional_update => {
                return Err(ApiError::resource_version_required(rt, name));
            }
            Some(rv) if Some(rv.as_str()) != meta_str(&current, "resourceVersion") => {
                return Err(ApiError::modified(rt, name));
            }
            _ => {}
        }
        // With a status subresource, the main resource keeps the stored status and `/status`
        // keeps everything but the status.
        let mut next = match subresource {
            Subresource::Main if rt.status_subresource => with_status_of(object, &current),
            Subresource::Main => object,
            Subresource::Status => with_status_of(current.clone(), &object),
        };
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // The namespace strategy's PrepareForUpdate: spec.finalizers only change
            // through the `finalize` subresource.
            let kept = current.pointer("/spec/finalizers").cloned();
            if let Some(m) = next.as_object_mut() {
                let spec = m.entry("spec").or_insert_with(|| json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    match kept {
                        Some(f) => spec.insert("finalizers".to_string(), f),
                        None => spec.remove("finalizers"),
                    };
                }
            }
        }
        // Server-owned metadata is kept from the stored object.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match current.get("metadata").and_then(|m| m.get(field)) {
                Some(v) => set_meta(&mut next, field, v.clone()),
                None => remove_meta(&mut next, field),
            }
        }
        remove_meta(&mut next, "managedFields");
        set_meta(
            &mut next,
            "resourceVersion",
            current["metadata"]["resourceVersion"].clone(),
        );
        let mut next = Self::validate(rt, next, name, validation::Write::Update)?;
        if rt.tracks_generation && spec_part(rt, &next) != spec_part(rt, &current) {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut next, "generation", json!(generation + 1));
        }
        // A finalised object under deletion goes away with this write.
        let finalizers_empty = next
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if meta_str(&current, "deletionTimestamp").is_some() && finalizers_empty {
            let last = conversion::to_storage(rt, next);
            let deleted = self.remove_locked(inner, rt, namespace, name, Some(last))?;
            return Ok((present(rt, deleted), false));
        }
        if next == current {
            // etcd3's GuaranteedUpdate: identical bytes are not written again.
            return Ok((current, false));
        }
        let next = self.write(
            inner,
            rt,
            object_key(rt, namespace, name),
            EventType::Modified,
            conversion::to_storage(rt, next),
            stored,
        );
        Ok((present(rt, next), false))
    }

    /// PATCH: applies `patch` to the stored object and stores the result through the update
    /// path, so resourceVersion preconditions in the patch are honoured.
    pub fn patch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        subresource: Subresource,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let Some(current) = Self::get_locked(&inner, rt, namespace, name) else {
            return Err(ApiError::not_found(rt, name));
        };
        let mut patched = present(rt, current);
        match patch {
            Patch::Merge(p) => json_patch::merge(&mut patched, p),
            Patch::Strategic(p) => {
                let Schema::BuiltIn(kind) = rt.schema else {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                };
                let definition = super::openapi::builtin_definition_name(kind);
                patched = super::strategic::apply(
                    &patched,
                    p,
                    super::openapi::builtin_catalog(),
                    &definition,
                )
                .map_err(ApiError::bad_request)?;
            }
            Patch::Json(p) => {
                let ops: json_patch::Patch = serde_json::from_value(p.clone())
                    .map_err(|e| ApiError::bad_request(format!("json: {e}")))?;
                json_patch::patch(&mut patched, &ops).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
            }
        }
        self.update_locked(&mut inner, rt, namespace, name, patched, subresource)
            .map(|(o, _)| o)
    }

    /// DELETE: removes the object, or marks it for deletion while finalizers remain.
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        preconditions: &Preconditions,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let Some(current) = Self::get_locked(&inner, rt, namespace, name) else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(uid) = &preconditions.uid
            && Some(uid.as_str()) != meta_str(&current, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    uid,
                    meta_str(&current, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &preconditions.resource_version
            && Some(rv.as_str()) != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    rv,
                    meta_str(&current, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta_str(&current, "deletionTimestamp").is_some() {
                return Ok(present(rt, current));
            }
            let mut next = current.clone();
            set_meta(&mut next, "deletionTimestamp", json!(now_time()));
            set_meta(&mut next, "deletionGracePeriodSeconds", json!(0));
            let key = object_key(rt, namespace, name);
            let next = self.write(
                &mut inner,
                rt,
                key,
                EventType::Modified,
                next,
                Some(current),
            );
            return Ok(present(rt, next));
        }
        let deleted = self.remove_locked(&mut inner, rt, namespace, name, None)?;
        Ok(present(rt, deleted))
    }

    /// Removes an object for good and publishes DELETED. `last` is the state to report
    /// (defaults to the stored one).
    fn remove_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        last: Option<Value>,
    ) -> Result<Value, ApiError> {
        let key = object_key(rt, namespace, name);
        let Some(stored) = inner
            .objects
            .get_mut(&type_key(rt))
            .and_then(|m| m.remove(&key))
        else {
            return Err(ApiError::not_found(rt, name));
        };
        let object = last.unwrap_or_else(|| stored.clone());
        Ok(self.write(inner, rt, key, EventType::Deleted, object, Some(stored)))
    }

    /// Side effects of writes on the type system: a namespace takes its contents with it; a
    /// CRD adds, changes or removes a served type (and its objects).
    fn after_write(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "namespaces") if new.is_none() => {
                let ns = old
                    .and_then(|o| meta_str(o, "name"))
                    .unwrap_or_default()
                    .to_string();
                let types: Vec<Arc<ResourceType>> = inner
                    .types
                    .values()
                    .filter(|t| t.namespaced)
                    .cloned()
                    .collect();
                let mut seen = std::collections::HashSet::new();
                for t in types {
                    if !seen.insert(type_key(&t)) {
                        continue;
                    }
                    let names: Vec<String> = inner
                        .objects
                        .get(&type_key(&t))
                        .map(|m| {
                            m.keys()
                                .filter(|(n, _)| *n == ns)
                                .map(|(_, name)| name.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    for name in names {
                        let _ = self.remove_locked(inner, &t, Some(&ns), &name, None);
                    }
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Some(old) = old {
                    let removed = crd_types(old);
                    for t in &removed {
                        inner
                            .types
                            .remove(&(t.group.clone(), t.version.clone(), t.plural.clone()));
                    }
                    if new.is_none()
                        && let Some(t) = removed.first()
                    {
                        let keys: Vec<(String, String)> = inner
                            .objects
                            .get(&type_key(t))
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        for (ns, name) in keys {
                            let ns = (!ns.is_empty()).then_some(ns);
                            let _ = self.remove_locked(inner, t, ns.as_deref(), &name, None);
                        }
                    }
                }
                if let Some(new) = new {
                    for t in crd_types(new) {
                        inner.types.insert(
                            (t.group.clone(), t.version.clone(), t.plural.clone()),
                            Arc::new(t),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Delete every object of a type matching the options (deletecollection).
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let listed = self.list(rt, namespace, options)?;
        let mut deleted = Vec::new();
        for item in listed.items {
            let ns = meta_str(&item, "namespace").map(str::to_string);
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            match self.delete(rt, ns.as_deref(), &name, &Preconditions::default()) {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// A patch body, by its content type.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 7386 JSON merge patch.
    Merge(Value),
    /// Strategic merge patch (built-in types only).
    Strategic(Value),
    /// RFC 6902 JSON patch.
    Json(Value),
}

/// How an object is sent to clients of a type: with its apiVersion/kind filled in.
pub fn present(rt: &ResourceType, object: Value) -> Value {
    let mut object = conversion::from_storage(rt, object);
    if let Some(m) = object.as_object_mut() {
        m.insert("apiVersion".to_string(), json!(rt.api_version()));
        m.insert("kind".to_string(), json!(rt.kind));
    }
    object
}

/// Status fields the real server (or its controllers, immediately) sets on creation.
fn default_status_on_create(rt: &ResourceType, object: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => object["status"] = json!({"phase": "Active"}),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let now = now_time();
            let names = object.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let stored: Vec<Value> = object
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            // Validation runs after this; a malformed `names` must not panic here.
            let mut accepted = if names.is_object() { names } else { json!({}) };
            if accepted.get("singular").is_none()
                && let Some(kind) = accepted.get("kind").and_then(Value::as_str)
            {
                accepted["singular"] = json!(kind.to_lowercase());
            }
            if accepted.get("listKind").is_none()
                && let Some(kind) = accepted.get("kind").and_then(Value::as_str)
            {
                accepted["listKind"] = json!(format!("{kind}List"));
            }
            object["status"] = json!({
                "acceptedNames": accepted,
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
                     "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": now,
                     "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                ],
            });
        }
        _ => {}
    }
}

/// The served types a CRD object defines: one per `served` version.
pub fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| str_at(v, k).to_string();
    let list = strings_at;
    let kind = s(&names, "kind");
    let mut singular = s(&names, "singular");
    if singular.is_empty() {
        singular = kind.to_lowercase();
    }
    let mut list_kind = s(&names, "listKind");
    if list_kind.is_empty() {
        list_kind = format!("{kind}List");
    }
    let namespaced = spec.get("scope").and_then(Value::as_str) == Some("Namespaced");
    spec.get("versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
                .map(|v| {
                    let schema = v
                        .pointer("/schema/openAPIV3Schema")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
                    let printer_columns = v
                        .get("additionalPrinterColumns")
                        .and_then(Value::as_array)
                        .map(|cols| {
                            cols.iter()
                                .map(|c| super::registry::PrinterColumn {
                                    name: s(c, "name"),
                                    type_: s(c, "type"),
                                    json_path: s(c, "jsonPath"),
                                    description: s(c, "description"),
                                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    ResourceType {
                        group: group.to_string(),
                        version: s(v, "name"),
                        plural: s(&names, "plural"),
                        singular: singular.clone(),
                        kind: kind.clone(),
                        list_kind: list_kind.clone(),
                        namespaced,
                        short_names: list(&names, "shortNames"),
                        categories: list(&names, "categories"),
                        status_subresource: v.pointer("/subresources/status").is_some(),
                        tracks_generation: true,
                        allow_create_on_update: false,
                        allow_unconditional_update: false,
                        return_deleted_object: false,
                        generation_counts_annotations: false,
                        name_rule: super::registry::NameRule::Subdomain,
                        // `selectableFields` of the version (CustomResourceFieldSelectors).
                        extra_field_selectors: v
                            .get("selectableFields")
                            .and_then(Value::as_array)
                            .map(|fields| {
                                fields
                                    .iter()
                                    .map(|f| str_at(f, "jsonPath").trim_start_matches('.').to_string())
                                    .filter(|f| !f.is_empty())
                                    .collect()
                            })
                            .unwrap_or_default(),
                        printer_columns,
                        schema: Schema::Structural(schema),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `DeleteOptions.preconditions` from a DELETE body (empty body = none).
pub fn preconditions_from_body(body: &Value) -> Preconditions {
    let p = body.get("preconditions");
    let field = |k: &str| {
        p.and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Preconditions {
        uid: field("uid"),
        resource_version: field("resourceVersion"),
    }
}
