//! A small kustomize renderer, so the end-to-end suites can apply `deploy/` (and its overlays)
//! to the in-memory API server without depending on the machine's `kubectl kustomize`.
//!
//! Why not run kubectl: CI's kubectl may be Debian's 1.20, whose bundled kustomize (v2.0.3)
//! cannot read our kustomizations (`patches`, `replicas`, …). So we render in Rust, and
//! `tests/tests/kustomize.rs` proves the output equal — document for document, in order — to
//! every modern `kubectl kustomize` it finds (kustomize v5).
//!
//! Supported kustomization fields, with kustomize v5's semantics:
//!
//! - `apiVersion: kustomize.config.k8s.io/v1beta1`, `kind: Kustomization` (both optional);
//! - `resources`: YAML files (multi-document; `…List` kinds expanded) and directories holding a
//!   kustomization, relative to the kustomization. Files must lie in or below the
//!   kustomization's directory, as kustomize's default load restrictor requires;
//! - `patches`, each with `path` or inline `patch` and an optional `target`
//!   (`group`, `version`, `kind`, `name`, `namespace`; names are matched as kustomize's regular
//!   expressions, of which literal characters and `.` are supported). A strategic merge patch
//!   without a target applies to the resource with its own apiVersion/kind/name/namespace;
//!   JSON6902 patches (a list of operations) need a target;
//! - `namespace`: `metadata.namespace` of namespaced objects, the name of a v1 `Namespace`,
//!   `subjects` named `default` of (Cluster)RoleBindings, APIService and CRD conversion webhook
//!   services, and — at the end of the build, as kustomize's name-reference fix-up does — the
//!   namespace of ServiceAccount subjects and webhook services that refer to objects whose
//!   namespace a transformer changed;
//! - `replicas` (`name`, `count`) for Deployments, StatefulSets, ReplicaSets and
//!   ReplicationControllers;
//! - `images` (`name`, `newName`, `newTag`, `digest`) on every `containers`/`initContainers`
//!   list.
//!
//! Within one kustomization the transformers run in kustomize's order (patches, namespace,
//! replicas, images) after its resources are built; the output is sorted in kustomize's
//! default "legacy" order. Values are typed as kustomize types them, which is not quite how
//! serde_yaml does (an unquoted `0644` is 420, `1.0` is written `1`; see `resolve_scalars`).
//! Any other field is an error naming the field and the file: a kustomization this renderer
//! cannot reproduce must never render silently differently.
//!
//! Strategic merge patches reuse the in-memory server's implementation
//! ([`crate::apiserver::strategic`]) with the OpenAPI definitions the server publishes, so only
//! kinds the server serves can be patched that way. kustomize's merge (kyaml) differs from the
//! API server's in a few places, which are bridged here before the patch is applied: merged
//! lists put the patch's elements first (expressed as `$setElementOrder` directives), and
//! `null`s inside newly added subtrees are dropped. Where kyaml's result cannot be reproduced
//! (lists kyaml keys by two fields, such as `ports` with `protocol`, when both sides have
//! elements; the `$retainKeys`/`$setElementOrder`/`$deleteFromPrimitiveList` directives, which
//! kyaml keeps as fields; strategic merge of kinds the server does not serve) the renderer
//! fails with an error that says so.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::apiserver::openapi::{builtin_catalog, builtin_definition_name};
use crate::apiserver::registry::{Schema, builtin_types};
use crate::apiserver::strategic::{self, Schemas, patch_strategy};

/// The names kustomize accepts for a kustomization file, in its order of preference.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Renders the kustomization in `dir` as `kubectl kustomize dir` does: the objects, in output
/// order.
pub fn render(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut stack = Vec::new();
    let mut resources = build(dir, &mut stack)?;
    fix_back_references(&mut resources)?;
    let mut objects: Vec<(ResId, Value)> = resources
        .into_iter()
        .map(|r| (r.cur_id(), finish(r.object)))
        .collect();
    objects.sort_by(|(a, _), (b, _)| legacy_order(a, b));
    Ok(objects.into_iter().map(|(_, object)| object).collect())
}

/// Multi-document YAML (`---` between documents) of `objects`, as
/// [`crate::manifests::create_all`] reads it.
pub fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(object).context("serializing a rendered object")?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Resource identity

/// Group, version and kind of an object, from its `apiVersion` and `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

impl Gvk {
    fn of(object: &Value) -> Gvk {
        let api_version = str_at(object, &["apiVersion"]).unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: str_at(object, &["kind"]).unwrap_or_default().to_string(),
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether kustomize knows the kind to be cluster-scoped (kyaml's precomputed table from
    /// its built-in Kubernetes 1.21 schema); kinds it does not know count as namespaced.
    fn cluster_scoped(&self) -> bool {
        let api_version = self.api_version();
        CLUSTER_SCOPED
            .iter()
            .any(|(v, k)| *v == api_version && *k == self.kind)
    }

    /// Whether the selector (empty fields match anything) selects this GVK.
    fn selected_by(&self, group: &str, version: &str, kind: &str) -> bool {
        (group.is_empty() || group == self.group)
            && (version.is_empty() || version == self.version)
            && (kind.is_empty() || kind == self.kind)
    }

    /// kustomize's legacy sort key for a GVK: `group_version_kind` with `~G`/`~V`/`~K` for
    /// empty fields.
    fn sort_string(&self) -> String {
        let or = |s: &str, empty: &str| {
            if s.is_empty() {
                empty.to_string()
            } else {
                s.to_string()
            }
        };
        format!(
            "{}_{}_{}",
            or(&self.group, "~G"),
            or(&self.version, "~V"),
            or(&self.kind, "~K")
        )
    }
}

impl fmt::Display for Gvk {
    /// kustomize's `Kind.version.group` notation, e.g. `Deployment.v1.apps`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or = |s: &'_ str, empty: &'static str| if s.is_empty() { empty } else { s }.to_string();
        write!(
            f,
            "{}.{}.{}",
            or(&self.kind, "[noKind]"),
            or(&self.version, "[noVer]"),
            or(&self.group, "[noGrp]")
        )
    }
}

/// `(apiVersion, kind)` of the kinds kustomize treats as cluster-scoped.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("apiregistration.k8s.io/v1beta1", "APIService"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
    (
        "flowcontrol.apiserver.k8s.io/v1beta1",
        "PriorityLevelConfiguration",
    ),
    ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1beta1", "IngressClass"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("node.k8s.io/v1beta1", "RuntimeClass"),
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1beta1", "ClusterRoleBinding"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"),
    ("storage.k8s.io/v1", "CSIDriver"),
    ("storage.k8s.io/v1", "CSINode"),
    ("storage.k8s.io/v1", "StorageClass"),
    ("storage.k8s.io/v1", "VolumeAttachment"),
    ("storage.k8s.io/v1beta1", "CSIDriver"),
    ("storage.k8s.io/v1beta1", "CSINode"),
    ("storage.k8s.io/v1beta1", "StorageClass"),
    ("storage.k8s.io/v1beta1", "VolumeAttachment"),
    ("v1", "ComponentStatus"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "NodeProxyOptions"),
    ("v1", "PersistentVolume"),
];

/// kustomize's resource id: GVK, name and namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ResId {
    gvk: Gvk,
    name: String,
    namespace: String,
}

impl ResId {
    fn of(object: &Value) -> ResId {
        ResId {
            gvk: Gvk::of(object),
            name: str_at(object, &["metadata", "name"])
                .unwrap_or_default()
                .to_string(),
            namespace: str_at(object, &["metadata", "namespace"])
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The namespace as kustomize compares it: a marker for cluster-scoped kinds, `default`
    /// for none.
    fn effective_namespace(&self) -> &str {
        if self.gvk.cluster_scoped() {
            "_non_namespaceable_"
        } else if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }

    /// kustomize's `ResId.Equals`: same GVK and name, same effective namespace.
    fn same_as(&self, other: &ResId) -> bool {
        self.gvk == other.gvk
            && self.name == other.name
            && self.effective_namespace() == other.effective_namespace()
    }
}

impl fmt::Display for ResId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or = |s: &'_ str, empty: &'static str| if s.is_empty() { empty } else { s }.to_string();
        write!(
            f,
            "{}/{}.{}",
            self.gvk,
            or(&self.name, "[noName]"),
            or(&self.namespace, "[noNs]")
        )
    }
}

/// One object being built, with the ids it had before transformers changed it (kustomize
/// records them for the namespace transformer and JSON6902 patches).
#[derive(Clone, Debug)]
struct Resource {
    object: Value,
    previous: Vec<ResId>,
}

impl Resource {
    fn cur_id(&self) -> ResId {
        ResId::of(&self.object)
    }

    /// The id the object was loaded with (kustomize's `OrgId`).
    fn org_id(&self) -> ResId {
        self.previous
            .first()
            .cloned()
            .unwrap_or_else(|| self.cur_id())
    }

    fn store_previous_id(&mut self) {
        let id = self.cur_id();
        self.previous.push(id);
    }

    /// Whether the current or any recorded id satisfies `matches`.
    fn any_id(&self, matches: impl Fn(&ResId) -> bool) -> bool {
        matches(&self.cur_id()) || self.previous.iter().any(matches)
    }
}

// ---------------------------------------------------------------------------------------------
// The kustomization file

#[derive(Debug)]
struct Kustomization {
    file: PathBuf,
    resources: Vec<String>,
    patches: Vec<PatchSpec>,
    namespace: Option<String>,
    replicas: Vec<(String, i64)>,
    images: Vec<ImageSpec>,
}

#[derive(Debug)]
enum PatchSource {
    Path(String),
    Inline(String),
}

#[derive(Debug)]
struct PatchSpec {
    source: PatchSource,
    target: Option<Selector>,
}

#[derive(Debug, Default)]
struct Selector {
    group: String,
    version: String,
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Debug)]
struct ImageSpec {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
    digest: Option<String>,
}

/// The kustomization file in `dir`, or an error if there is none or more than one.
fn kustomization_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let found: Vec<PathBuf> = KUSTOMIZATION_FILES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no kustomization file ({}) in {}",
            KUSTOMIZATION_FILES.join(", "),
            dir.display()
        ),
        _ => bail!("more than one kustomization file in {}", dir.display()),
    }
}

/// Fails on any key of `map` outside `allowed`; `what` names the map in the message.
fn only_fields(
    map: &Map<String, Value>,
    allowed: &[&str],
    what: &str,
    file: &Path,
) -> anyhow::Result<()> {
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            bail!(
                "{}: unsupported field `{what}{key}` (this renderer supports {})",
                file.display(),
                allowed.join(", ")
            );
        }
    }
    Ok(())
}

fn string_field(
    map: &Map<String, Value>,
    key: &str,
    what: &str,
    file: &Path,
) -> anyhow::Result<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!(
            "{}: `{what}{key}` must be a string, not {other}",
            file.display()
        ),
    }
}

fn list_field<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    file: &Path,
) -> anyhow::Result<&'a [Value]> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => bail!("{}: `{key}` must be a list, not {other}", file.display()),
    }
}

fn object_entry<'a>(
    value: &'a Value,
    what: &str,
    file: &Path,
) -> anyhow::Result<&'a Map<String, Value>> {
    value.as_object().ok_or_else(|| {
        anyhow!(
            "{}: `{what}` entries must be maps, not {value}",
            file.display()
        )
    })
}

fn read_kustomization(dir: &Path) -> anyhow::Result<Kustomization> {
    let file = kustomization_file(dir)?;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let value: Value = match serde_yaml::from_str::<Option<Value>>(&text)
        .with_context(|| format!("parsing {}", file.display()))?
    {
        Some(v) => v,
        None => json!({}),
    };
    let Value::Object(map) = value else {
        bail!("{}: a kustomization must be a map", file.display());
    };
    only_fields(
        &map,
        &[
            "apiVersion",
            "kind",
            "resources",
            "patches",
            "namespace",
            "replicas",
            "images",
        ],
        "",
        &file,
    )?;
    if let Some(v) = string_field(&map, "apiVersion", "", &file)?
        && v != "kustomize.config.k8s.io/v1beta1"
    {
        bail!(
            "{}: unsupported apiVersion `{v}` (expected kustomize.config.k8s.io/v1beta1)",
            file.display()
        );
    }
    if let Some(v) = string_field(&map, "kind", "", &file)?
        && v != "Kustomization"
    {
        bail!(
            "{}: unsupported kind `{v}` (expected Kustomization)",
            file.display()
        );
    }

    let mut resources = Vec::new();
    for entry in list_field(&map, "resources", &file)? {
        match entry {
            Value::String(s) => resources.push(s.clone()),
            other => bail!(
                "{}: `resources` entries must be strings, not {other}",
                file.display()
            ),
        }
    }

    let mut patches = Vec::new();
    for entry in list_field(&map, "patches", &file)? {
        let entry = object_entry(entry, "patches", &file)?;
        only_fields(entry, &["path", "patch", "target"], "patches[].", &file)?;
        let source = match (
            string_field(entry, "path", "patches[].", &file)?,
            string_field(entry, "patch", "patches[].", &file)?,
        ) {
            (Some(path), None) => PatchSource::Path(path),
            (None, Some(patch)) => PatchSource::Inline(patch),
            (Some(_), Some(_)) => bail!(
                "{}: a `patches` entry has both `path` and `patch`",
                file.display()
            ),
            (None, None) => bail!(
                "{}: a `patches` entry needs `path` or `patch`",
                file.display()
            ),
        };
        let target = match entry.get("target") {
            None | Some(Value::Null) => None,
            Some(t) => {
                let t = object_entry(t, "patches[].target", &file)?;
                let what = "patches[].target.";
                only_fields(
                    t,
                    &["group", "version", "kind", "name", "namespace"],
                    what,
                    &file,
                )?;
                let field = |key: &str| -> anyhow::Result<String> {
                    Ok(string_field(t, key, what, &file)?.unwrap_or_default())
                };
                let selector = Selector {
                    group: field("group")?,
                    version: field("version")?,
                    kind: field("kind")?,
                    name: field("name")?,
                    namespace: field("namespace")?,
                };
                check_pattern(&selector.name, "patches[].target.name", &file)?;
                check_pattern(&selector.namespace, "patches[].target.namespace", &file)?;
                Some(selector)
            }
        };
        patches.push(PatchSpec { source, target });
    }

    let namespace = string_field(&map, "namespace", "", &file)?.filter(|ns| !ns.is_empty());

    let mut replicas = Vec::new();
    for entry in list_field(&map, "replicas", &file)? {
        let entry = object_entry(entry, "replicas", &file)?;
        only_fields(entry, &["name", "count"], "replicas[].", &file)?;
        let name = string_field(entry, "name", "replicas[].", &file)?
            .ok_or_else(|| anyhow!("{}: a `replicas` entry needs a `name`", file.display()))?;
        // kustomize reads a missing count as 0.
        let count = match entry.get("count") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                anyhow!(
                    "{}: `replicas[].count` must be an integer, not {v}",
                    file.display()
                )
            })?,
        };
        replicas.push((name, count));
    }

    let mut images = Vec::new();
    for entry in list_field(&map, "images", &file)? {
        let entry = object_entry(entry, "images", &file)?;
        let what = "images[].";
        only_fields(entry, &["name", "newName", "newTag", "digest"], what, &file)?;
        let name = string_field(entry, "name", what, &file)?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("{}: an `images` entry needs a `name`", file.display()))?;
        check_pattern(&name, "images[].name", &file)?;
        let non_empty = |key: &str| -> anyhow::Result<Option<String>> {
            Ok(string_field(entry, key, what, &file)?.filter(|s| !s.is_empty()))
        };
        images.push(ImageSpec {
            name,
            new_name: non_empty("newName")?,
            new_tag: non_empty("newTag")?,
            digest: non_empty("digest")?,
        });
    }

    Ok(Kustomization {
        file,
        resources,
        patches,
        namespace,
        replicas,
        images,
    })
}

// ---------------------------------------------------------------------------------------------
// Names as kustomize's regular expressions

/// kustomize matches target names and namespaces, and image names, as regular expressions.
/// Kubernetes names need only literal characters and `.` (which, as in a regular expression,
/// matches any character); anything else is refused rather than matched differently.
fn check_pattern(pattern: &str, what: &str, file: &Path) -> anyhow::Result<()> {
    match pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@".contains(*c)))
    {
        Some(c) => bail!(
            "{}: `{what}` `{pattern}`: regular expression syntax (`{c}`) is not supported",
            file.display()
        ),
        None => Ok(()),
    }
}

/// Whether `text` matches `pattern` entirely, with `.` matching any one character.
fn pattern_matches(pattern: &str, text: &str) -> bool {
    pattern.chars().count() == text.chars().count()
        && pattern
            .chars()
            .zip(text.chars())
            .all(|(p, t)| p == '.' || p == t)
}

// ---------------------------------------------------------------------------------------------
// Building

/// Builds the kustomization in `dir` (resources, then its transformers), without the final
/// sort. `stack` holds the directories being built, to refuse cycles.
fn build(dir: &Path, stack: &mut Vec<PathBuf>) -> anyhow::Result<Vec<Resource>> {
    let root = dir
        .canonicalize()
        .with_context(|| format!("kustomization directory {}", dir.display()))?;
    if stack.contains(&root) {
        bail!(
            "kustomization cycle: {} includes itself (through {})",
            root.display(),
            stack
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        );
    }
    stack.push(root.clone());
    let result = build_kustomization(&root, stack);
    stack.pop();
    result
}

fn build_kustomization(root: &Path, stack: &mut Vec<PathBuf>) -> anyhow::Result<Vec<Resource>> {
    let k = read_kustomization(root)?;
    let mut resources: Vec<Resource> = Vec::new();
    for entry in &k.resources {
        for resource in load_entry(root, &k.file, entry, stack)? {
            let id = resource.cur_id();
            if resources.iter().any(|r| r.cur_id().same_as(&id)) {
                bail!(
                    "{}: resource `{entry}`: may not add resource with an already registered id: {id}",
                    k.file.display()
                );
            }
            resources.push(resource);
        }
    }
    for patch in &k.patches {
        apply_patch(&mut resources, patch, root, &k.file)?;
    }
    if let Some(namespace) = &k.namespace {
        apply_namespace(&mut resources, namespace)
            .with_context(|| format!("{}: namespace `{namespace}`", k.file.display()))?;
    }
    for (name, count) in &k.replicas {
        apply_replicas(&mut resources, name, *count)
            .with_context(|| format!("{}: replicas of `{name}`", k.file.display()))?;
    }
    for image in &k.images {
        for resource in &mut resources {
            apply_image(&mut resource.object, image)
                .with_context(|| format!("{}: image `{}`", k.file.display(), image.name))?;
        }
    }
    Ok(resources)
}

/// `path` (relative to the kustomization root), refused unless it is in or below the root,
/// as kustomize's default load restrictor requires.
fn restricted_file(root: &Path, file: &Path, what: &str, path: &str) -> anyhow::Result<PathBuf> {
    let joined = root.join(path);
    let canonical = joined.canonicalize().with_context(|| {
        format!(
            "{}: {what} `{path}`: {} does not exist",
            file.display(),
            joined.display()
        )
    })?;
    if !canonical.starts_with(root) {
        bail!(
            "{}: {what} `{path}`: {} is not in or below {} (kustomize's load restrictor)",
            file.display(),
            canonical.display(),
            root.display()
        );
    }
    Ok(canonical)
}

/// The resources of one `resources` entry: a directory's kustomization or a file's documents.
fn load_entry(
    root: &Path,
    file: &Path,
    entry: &str,
    stack: &mut Vec<PathBuf>,
) -> anyhow::Result<Vec<Resource>> {
    if entry.contains("://") || entry.starts_with("git@") {
        bail!(
            "{}: resource `{entry}`: remote resources are not supported",
            file.display()
        );
    }
    let path = root.join(entry);
    if path.is_dir() {
        return build(&path, stack).with_context(|| {
            format!(
                "{}: resource `{entry}` ({})",
                file.display(),
                path.display()
            )
        });
    }
    let path = restricted_file(root, file, "resource", entry)?;
    if !path.is_file() {
        bail!(
            "{}: resource `{entry}`: {} is neither a file nor a directory",
            file.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let objects = parse_resources(&text)
        .with_context(|| format!("{}: resource `{entry}`", file.display()))?;
    Ok(objects
        .into_iter()
        .map(|object| Resource {
            object,
            previous: Vec::new(),
        })
        .collect())
}

/// The YAML documents of `text`, in order, without empty ones, with plain scalars typed as
/// kustomize types them (see [`resolve_scalars`]).
fn yaml_documents(text: &str, dialect: Dialect) -> anyhow::Result<Vec<Value>> {
    let mut documents = raw_yaml_documents(text)?;
    resolve_scalars(&mut documents, text, dialect)?;
    Ok(documents)
}

/// The YAML documents of `text` as serde_yaml reads them.
fn raw_yaml_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document).context("parsing YAML")?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The objects of a resource file: documents in order, `…List` kinds expanded, empty
/// documents skipped; each needs a `kind` and a `metadata.name`.
fn parse_resources(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in yaml_documents(text, Dialect::Kyaml)? {
        if document.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        let items = match (str_at(&document, &["kind"]), document.get("items")) {
            (Some(kind), Some(Value::Array(items))) if kind.ends_with("List") => items.clone(),
            _ => vec![document],
        };
        for object in items {
            check_object(&object)?;
            objects.push(object);
        }
    }
    Ok(objects)
}

fn check_object(object: &Value) -> anyhow::Result<()> {
    if !object.is_object() {
        bail!("a document is not a Kubernetes object: {object}");
    }
    if str_at(object, &["kind"]).is_none_or(str::is_empty) {
        bail!("missing kind in {object}");
    }
    if str_at(object, &["metadata", "name"]).is_none_or(str::is_empty) {
        bail!("missing metadata.name in {object}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scalars as kustomize types them

/// How kustomize reads a YAML text: resources and strategic merge patches through kyaml
/// (go-yaml v3, whose values then go through JSON), JSON6902 patches written in YAML through
/// a YAML 1.1 conversion to JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Kyaml,
    Yaml11,
}

/// Retypes the strings serde_yaml left as strings but kustomize reads as other values when
/// they are plain (unquoted) scalars: `0755` (493), `1_000`, `0X1F`, `09`; with kyaml, dates
/// and times (RFC 3339 timestamps); in YAML 1.1, `yes`/`no`/`on`/`off`/`y`/`n`.
///
/// serde_yaml does not say whether a string was quoted, so the source text decides: a string
/// that never appears quoted in it was plain; one quoted as often as it occurs was quoted;
/// anything else is an error rather than a guess.
fn resolve_scalars(documents: &mut [Value], text: &str, dialect: Dialect) -> anyhow::Result<()> {
    fn count(value: &Value, dialect: Dialect, counts: &mut BTreeMap<String, usize>) {
        match value {
            Value::String(s) if plain_reading(s, dialect).is_some() => {
                *counts.entry(s.clone()).or_default() += 1;
            }
            Value::Array(items) => items.iter().for_each(|v| count(v, dialect, counts)),
            Value::Object(map) => map.values().for_each(|v| count(v, dialect, counts)),
            _ => {}
        }
    }
    fn replace(value: &mut Value, plain: &BTreeMap<String, Value>) {
        match value {
            Value::String(s) if plain.contains_key(s.as_str()) => {
                if let Some(v) = plain.get(s.as_str()) {
                    *value = v.clone();
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| replace(v, plain)),
            Value::Object(map) => map.values_mut().for_each(|v| replace(v, plain)),
            _ => {}
        }
    }
    let mut counts = BTreeMap::new();
    documents
        .iter()
        .for_each(|d| count(d, dialect, &mut counts));
    let mut plain = BTreeMap::new();
    for (s, occurrences) in counts {
        let quoted =
            text.matches(&format!("\"{s}\"")).count() + text.matches(&format!("'{s}'")).count();
        if quoted == 0 {
            if let Some(v) = plain_reading(&s, dialect) {
                plain.insert(s, v);
            }
        } else if quoted < occurrences {
            bail!(
                "`{s}` occurs both quoted and unquoted, which kustomize reads differently \
                 (as {}); quote all of them or none",
                plain_reading(&s, dialect).unwrap_or_default()
            );
        }
    }
    if !plain.is_empty() {
        documents.iter_mut().for_each(|d| replace(d, &plain));
    }
    Ok(())
}

/// What kustomize reads a plain scalar `s` as, if that differs from the string serde_yaml
/// made of it.
fn plain_reading(s: &str, dialect: Dialect) -> Option<Value> {
    // Only strings serde_yaml itself keeps as strings when plain.
    if !matches!(serde_yaml::from_str::<Value>(s), Ok(Value::String(ref t)) if t == s) {
        return None;
    }
    if dialect == Dialect::Yaml11 {
        match s {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(json!(true)),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(json!(false)),
            _ => {}
        }
    }
    let first = s.chars().next()?;
    if !(first.is_ascii_digit() || first == '-' || first == '+') {
        return None;
    }
    if dialect == Dialect::Kyaml
        && let Some(timestamp) = yaml_timestamp(s)
    {
        return Some(Value::String(timestamp));
    }
    let digits = s.replace('_', "");
    if let Some(n) = go_parse_int(&digits) {
        return Some(n);
    }
    if is_yaml_float(&digits) {
        return digits
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number);
    }
    None
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint`): sign, then `0x`/`0X`, `0b`/`0B`,
/// `0o`/`0O`, a leading `0` (octal) or decimal digits.
fn go_parse_int(s: &str) -> Option<Value> {
    let (negative, unsigned) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let value = i64::try_from(magnitude)
            .ok()
            .map(|m| -m)
            .or((magnitude == 1 << 63).then_some(i64::MIN))?;
        Some(json!(value))
    } else {
        Some(json!(magnitude))
    }
}

/// go-yaml's float syntax: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && fraction.chars().all(|c| c.is_ascii_digit()),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// go-yaml v3's timestamps (`2006-1-2`, `2006-1-2T15:4:5.999999999Z07:00` with `T` or `t`,
/// `2006-1-2 15:4:5.999999999`) as kustomize writes them: RFC 3339 with nanoseconds.
fn yaml_timestamp(s: &str) -> Option<String> {
    fn number(s: &str, min: usize, max: usize) -> Option<(u32, &str)> {
        let n = s.chars().take_while(char::is_ascii_digit).count().min(max);
        if n < min {
            return None;
        }
        Some((s[..n].parse().ok()?, &s[n..]))
    }
    if s.bytes().take_while(u8::is_ascii_digit).count() != 4 || s.as_bytes().get(4) != Some(&b'-') {
        return None;
    }
    let (year, rest) = number(s, 4, 4)?;
    let (month, rest) = number(rest.strip_prefix('-')?, 1, 2)?;
    let (day, rest) = number(rest.strip_prefix('-')?, 1, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > days[month as usize - 1] {
        return None;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    if rest.is_empty() {
        return Some(format!("{date}T00:00:00Z"));
    }
    let (zoned, rest) = match rest.as_bytes()[0] {
        b'T' | b't' => (true, &rest[1..]),
        b' ' => (false, &rest[1..]),
        _ => return None,
    };
    let (hour, rest) = number(rest, 1, 2)?;
    let (minute, rest) = number(rest.strip_prefix(':')?, 1, 2)?;
    let (second, mut rest) = number(rest.strip_prefix(':')?, 1, 2)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut fraction = String::new();
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.chars().take_while(char::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        fraction = r[..n].trim_end_matches('0').to_string();
        rest = &r[n..];
    }
    let zone = if !zoned {
        (rest.is_empty()).then(|| "Z".to_string())?
    } else if rest == "Z" {
        "Z".to_string()
    } else {
        let sign = rest.chars().next().filter(|c| *c == '+' || *c == '-')?;
        let (hh, r) = number(&rest[1..], 2, 2)?;
        let (mm, r) = number(r.strip_prefix(':')?, 2, 2)?;
        if !r.is_empty() || hh > 23 || mm > 59 {
            return None;
        }
        if hh == 0 && mm == 0 {
            "Z".to_string()
        } else {
            format!("{sign}{hh:02}:{mm:02}")
        }
    };
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    Some(format!(
        "{date}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    ))
}

// ---------------------------------------------------------------------------------------------
// Patches

enum ParsedPatch {
    Strategic(Vec<Value>),
    Json(json_patch::Patch),
}

/// A patch's text as kustomize reads it: a list of operations is a JSON6902 patch, maps are
/// strategic merge patches (one per document).
fn parse_patch(text: &str) -> anyhow::Result<ParsedPatch> {
    let mut documents = raw_yaml_documents(text)?;
    match documents.as_slice() {
        [] => bail!("the patch is empty"),
        [Value::Array(_)] => {
            // JSON text is taken as is; YAML goes through a YAML 1.1 conversion to JSON.
            if !text.starts_with('[') {
                resolve_scalars(&mut documents, text, Dialect::Yaml11)?;
            }
            let ops: json_patch::Patch = serde_json::from_value(documents[0].clone())
                .context("parsing JSON6902 operations")?;
            Ok(ParsedPatch::Json(ops))
        }
        _ => {
            resolve_scalars(&mut documents, text, Dialect::Kyaml)?;
            for document in &documents {
                if !document.is_object() {
                    bail!("unable to parse a strategic merge or JSON6902 patch from {document}");
                }
                check_object(document)?;
            }
            Ok(ParsedPatch::Strategic(documents))
        }
    }
}

fn apply_patch(
    resources: &mut Vec<Resource>,
    spec: &PatchSpec,
    root: &Path,
    file: &Path,
) -> anyhow::Result<()> {
    let (text, origin) = match &spec.source {
        PatchSource::Inline(text) => (text.clone(), format!("{}: inline patch", file.display())),
        PatchSource::Path(path) => {
            let full = restricted_file(root, file, "patch", path)?;
            let text = std::fs::read_to_string(&full)
                .with_context(|| format!("reading {}", full.display()))?;
            (text, format!("{}: patch `{path}`", file.display()))
        }
    };
    let parsed = parse_patch(&text).with_context(|| origin.clone())?;
    match (parsed, &spec.target) {
        (ParsedPatch::Strategic(documents), None) => {
            for document in documents {
                let id = ResId::of(&document);
                let matches: Vec<usize> = (0..resources.len())
                    .filter(|&i| resources[i].any_id(|r| r.same_as(&id)))
                    .collect();
                let index = match matches.as_slice() {
                    [one] => *one,
                    [] => bail!("{origin}: no resource matches the strategic merge patch of {id}"),
                    _ => {
                        bail!("{origin}: several resources match the strategic merge patch of {id}")
                    }
                };
                let keep = apply_strategic(&mut resources[index], &document)
                    .with_context(|| format!("{origin}: patching {id}"))?;
                if !keep {
                    resources.remove(index);
                }
            }
        }
        (ParsedPatch::Strategic(documents), Some(selector)) => {
            let selected: HashSet<ResId> = select(resources, selector)
                .into_iter()
                .map(|i| resources[i].cur_id())
                .collect();
            for document in documents {
                let mut kept = Vec::with_capacity(resources.len());
                for mut resource in std::mem::take(resources) {
                    let id = resource.cur_id();
                    if selected.contains(&id)
                        && !apply_strategic(&mut resource, &document)
                            .with_context(|| format!("{origin}: patching {id}"))?
                    {
                        continue;
                    }
                    kept.push(resource);
                }
                *resources = kept;
            }
        }
        (ParsedPatch::Json(_), None) => {
            bail!("{origin}: a JSON6902 patch needs a `target`")
        }
        (ParsedPatch::Json(ops), Some(selector)) => {
            for index in select(resources, selector) {
                let resource = &mut resources[index];
                let id = resource.cur_id();
                resource.store_previous_id();
                json_patch::patch(&mut resource.object, &ops)
                    .map_err(|e| anyhow!("{origin}: patching {id}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Indices of the resources `selector` selects, as kustomize's `Select`: names and namespaces
/// match the original or the current id.
fn select(resources: &[Resource], selector: &Selector) -> Vec<usize> {
    (0..resources.len())
        .filter(|&i| {
            let resource = &resources[i];
            let (cur, org) = (resource.cur_id(), resource.org_id());
            let namespace_ok = selector.namespace.is_empty()
                || pattern_matches(&selector.namespace, org.effective_namespace())
                || pattern_matches(&selector.namespace, cur.effective_namespace());
            let name_ok = selector.name.is_empty()
                || pattern_matches(&selector.name, &org.name)
                || pattern_matches(&selector.name, &cur.name);
            namespace_ok
                && name_ok
                && cur
                    .gvk
                    .selected_by(&selector.group, &selector.version, &selector.kind)
        })
        .collect()
}

/// The OpenAPI definition the in-memory server uses for objects of `gvk`, if it serves them.
fn definition_of(gvk: &Gvk) -> Option<String> {
    let api_version = gvk.api_version();
    builtin_types().into_iter().find_map(|t| match t.schema {
        Schema::BuiltIn(kind) if t.api_version() == api_version && t.kind == gvk.kind => {
            Some(builtin_definition_name(kind))
        }
        _ => None,
    })
}

/// Applies one strategic merge patch document to `resource`, keeping its apiVersion, kind,
/// name and namespace, as kustomize does. Returns false if the patch deleted the object
/// (`$patch: delete`).
fn apply_strategic(resource: &mut Resource, patch: &Value) -> anyhow::Result<bool> {
    let gvk = Gvk::of(&resource.object);
    let Some(definition) = definition_of(&gvk) else {
        bail!(
            "strategic merge patches of {} {} are not supported (the in-memory server has no \
             schema for it); use a JSON6902 patch",
            gvk.api_version(),
            gvk.kind
        );
    };
    let (Value::Object(original), Value::Object(patch)) = (&resource.object, patch) else {
        bail!("a strategic merge patch and its target must be maps");
    };
    let schemas = Schemas {
        definitions: builtin_catalog(),
    };
    let prepared = prepare_map(
        &schemas,
        schemas.definitions.get(&definition),
        original,
        patch,
        "",
    )?;
    let merged = strategic::apply(
        &resource.object,
        &Value::Object(prepared),
        schemas.definitions,
        &definition,
    )
    .map_err(|e| anyhow!("{e}"))?;
    if merged.as_object().is_none_or(Map::is_empty) {
        return Ok(false);
    }
    let before = resource.object.clone();
    resource.object = merged;
    for path in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata", "name"],
        &["metadata", "namespace"],
    ] {
        restore(&mut resource.object, &before, path);
    }
    Ok(true)
}

/// Sets `path` in `object` to its value in `from`, or removes it if `from` has none.
fn restore(object: &mut Value, from: &Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let value = parents
        .iter()
        .try_fold(from, |v, key| v.get(key))
        .and_then(|v| v.get(last))
        .cloned();
    match value {
        Some(value) => {
            if let Some(Value::Object(map)) = object_at_mut(object, parents, true) {
                map.insert(last.to_string(), value);
            }
        }
        None => {
            if let Some(Value::Object(map)) = object_at_mut(object, parents, false) {
                map.remove(*last);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bridging kustomize's strategic merge (kyaml) and the API server's

/// Lists kyaml merges on two keys (`x-kubernetes-list-map-keys` in its schema): field, merge
/// key, second key. When an element on either side has the second key, kyaml reorders and
/// drops elements in ways not reproduced here; without it, it merges as on the merge key.
const MULTI_KEY_LISTS: &[(&str, &str, &str)] = &[
    ("ports", "containerPort", "protocol"),
    ("ports", "port", "protocol"),
    (
        "topologySpreadConstraints",
        "topologyKey",
        "whenUnsatisfiable",
    ),
];

/// `value` without `null` map entries, at any depth: what kyaml keeps of a subtree the
/// original does not have.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Rewrites a strategic merge patch of the map `original` so that [`strategic::apply`]
/// produces what kustomize produces: merged lists get `$setElementOrder` (the patch's
/// elements first, then the others in their order), new subtrees lose their `null`s, and the
/// cases kustomize handles differently are refused.
fn prepare_map(
    schemas: &Schemas<'_>,
    schema: Option<&Value>,
    original: &Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for (key, value) in patch {
        let here = format!("{path}.{key}");
        if key == "$patch" {
            match value.as_str() {
                Some("replace" | "delete" | "merge") => {
                    out.insert(key.clone(), value.clone());
                    continue;
                }
                _ => bail!("{here}: unknown patch directive {value}"),
            }
        }
        if key.starts_with('$') {
            bail!(
                "{here}: kustomize does not interpret this directive (it would keep it as a \
                 field); not supported"
            );
        }
        let property = schemas.property(schema, key);
        let prepared = match (original.get(key), value) {
            (_, Value::Null) => Value::Null,
            (Some(Value::Object(o)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                    without_nulls(value)
                } else {
                    Value::Object(prepare_map(schemas, property, o, p, &here)?)
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let (list, order) = prepare_list(schemas, property, o, p, key, &here)?;
                if let Some(order) = order {
                    out.insert(format!("$setElementOrder/{key}"), Value::Array(order));
                }
                Value::Array(list)
            }
            (_, other) => without_nulls(other),
        };
        out.insert(key.clone(), prepared);
    }
    Ok(out)
}

/// The list part of [`prepare_map`]: the prepared elements and, for a merged list that both
/// sides have, the element order kustomize produces.
fn prepare_list(
    schemas: &Schemas<'_>,
    property: Option<&Value>,
    original: &[Value],
    patch: &[Value],
    field: &str,
    path: &str,
) -> anyhow::Result<(Vec<Value>, Option<Vec<Value>>)> {
    let (merge, merge_key) = patch_strategy(property);
    let merge_key = merge_key.as_deref();
    if !merge {
        // Replaced as a whole, by kustomize and by the server alike.
        return Ok((patch.to_vec(), None));
    }
    let is_replace = |v: &Value| v.get("$patch").and_then(Value::as_str) == Some("replace");
    if patch.iter().any(is_replace) {
        if patch
            .iter()
            .any(|v| is_replace(v) && v.as_object().is_some_and(|m| m.len() > 1))
        {
            bail!(
                "{path}: `$patch: replace` inside a list element with other fields is not supported"
            );
        }
        return Ok((patch.to_vec(), None));
    }
    let both = !original.is_empty() && !patch.is_empty();
    let Some(key) = merge_key else {
        // A merged list of scalars (finalizers): a union with the patch's values first.
        if let Some(item) = patch.iter().find(|v| v.is_object() || v.is_array()) {
            bail!("{path}: expected a list of scalars, got {item}");
        }
        let mut order: Vec<Value> = Vec::new();
        for value in patch {
            if !order.contains(value) {
                order.push(value.clone());
            }
        }
        return Ok((patch.to_vec(), both.then_some(order)));
    };
    if both
        && let Some((_, _, second)) = MULTI_KEY_LISTS
            .iter()
            .find(|(f, k, _)| *f == field && *k == key)
        && original
            .iter()
            .chain(patch)
            .any(|e| e.get(second).is_some())
    {
        bail!(
            "{path}: kustomize merges this list on `{key}` and `{second}`, in an order this \
             renderer does not reproduce; patch it with a JSON6902 patch, or leave `{second}` \
             out of both sides"
        );
    }
    let item_schema = schemas.items(property);
    let mut list = Vec::with_capacity(patch.len());
    let mut order: Vec<Value> = Vec::new();
    for element in patch {
        let Some(map) = element.as_object() else {
            bail!("{path}: elements must be maps (merged on `{key}`), got {element}");
        };
        let Some(key_value) = map.get(key) else {
            bail!("{path}: an element has no `{key}` (the merge key): {element}");
        };
        if map.get("$patch").and_then(Value::as_str) == Some("delete") {
            list.push(element.clone());
            continue;
        }
        let matching = original
            .iter()
            .find(|o| o.get(key) == Some(key_value))
            .and_then(Value::as_object);
        list.push(match matching {
            Some(o) => Value::Object(prepare_map(
                schemas,
                item_schema,
                o,
                map,
                &format!("{path}[{key}={key_value}]"),
            )?),
            None => without_nulls(element),
        });
        let entry = json!({ key: key_value });
        if order.contains(&entry) {
            bail!("{path}: two elements have `{key}` {key_value}");
        }
        order.push(entry);
    }
    Ok((list, both.then_some(order)))
}

// ---------------------------------------------------------------------------------------------
// namespace, replicas, images

/// kustomize's namespace transformer for one kustomization's resources.
fn apply_namespace(resources: &mut [Resource], namespace: &str) -> anyhow::Result<()> {
    for i in 0..resources.len() {
        let resource = &mut resources[i];
        resource.store_previous_id();
        let gvk = Gvk::of(&resource.object);
        let object = &mut resource.object;
        if !gvk.cluster_scoped() {
            set_str(object, &["metadata", "namespace"], namespace)?;
        }
        if gvk.api_version() == "v1" && gvk.kind == "Namespace" {
            set_str(object, &["metadata", "name"], namespace)?;
        }
        if gvk.kind == "RoleBinding" || gvk.kind == "ClusterRoleBinding" {
            // Only subjects named `default` (whatever their kind), as kustomize does; the
            // others follow their ServiceAccount in `fix_back_references`.
            if let Some(Value::Array(subjects)) = object.get_mut("subjects") {
                for subject in subjects.iter_mut() {
                    if let Some(map) = subject.as_object_mut()
                        && map.get("name").and_then(Value::as_str) == Some("default")
                    {
                        map.insert("namespace".to_string(), json!(namespace));
                    }
                }
            }
        }
        if gvk.group == "apiregistration.k8s.io" && gvk.kind == "APIService" {
            set_str(object, &["spec", "service", "namespace"], namespace)?;
        }
        if gvk.group == "apiextensions.k8s.io" && gvk.kind == "CustomResourceDefinition" {
            let path = ["spec", "conversion", "webhook", "clientConfig", "service"];
            if let Some(Value::Object(service)) = object_at_mut(object, &path, false)
                && service.contains_key("namespace")
            {
                service.insert("namespace".to_string(), json!(namespace));
            }
        }
        let id = resources[i].cur_id();
        let same = resources.iter().filter(|r| r.cur_id().same_as(&id)).count();
        if same != 1 {
            bail!("namespace transformation produces ID conflict: {id}");
        }
    }
    Ok(())
}

/// kustomize's replica count transformer: `spec.replicas` of the workloads named `name`.
fn apply_replicas(resources: &mut [Resource], name: &str, count: i64) -> anyhow::Result<()> {
    const KINDS: [&str; 4] = [
        "Deployment",
        "ReplicationController",
        "ReplicaSet",
        "StatefulSet",
    ];
    let mut found = false;
    for resource in resources.iter_mut() {
        if resource.any_id(|id| id.name == name && KINDS.contains(&id.gvk.kind.as_str())) {
            found = true;
            match object_at_mut(&mut resource.object, &["spec"], true) {
                Some(Value::Object(spec)) => {
                    spec.insert("replicas".to_string(), json!(count));
                }
                _ => bail!("{}: `spec` is not a map", resource.cur_id()),
            }
        }
    }
    if !found {
        bail!("no Deployment, ReplicationController, ReplicaSet or StatefulSet is named `{name}`");
    }
    Ok(())
}

/// kustomize's image transformer on one object: every `image` of an element of a
/// `containers` or `initContainers` list, at any depth (CRDs excepted).
fn apply_image(object: &mut Value, image: &ImageSpec) -> anyhow::Result<()> {
    if str_at(object, &["kind"]) == Some("CustomResourceDefinition") {
        return Ok(());
    }
    fn walk(node: &mut Value, image: &ImageSpec) -> anyhow::Result<()> {
        match node {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    walk(value, image)?;
                    if key == "containers" || key == "initContainers" {
                        let Value::Array(containers) = value else {
                            continue;
                        };
                        for container in containers {
                            match container.get_mut("image") {
                                None | Some(Value::Null) => {}
                                Some(Value::String(current)) => {
                                    if let Some(updated) = update_image(current, image) {
                                        *current = updated;
                                    }
                                }
                                Some(other @ (Value::Bool(_) | Value::Number(_))) => {
                                    if let Some(updated) = update_image(&other.to_string(), image) {
                                        *other = Value::String(updated);
                                    }
                                }
                                Some(other) => bail!("`image` must be a scalar, not {other}"),
                            }
                        }
                    }
                }
                Ok(())
            }
            Value::Array(items) => items.iter_mut().try_for_each(|v| walk(v, image)),
            _ => Ok(()),
        }
    }
    walk(object, image)
}

/// The new value of image reference `current`, if `image` applies to it.
fn update_image(current: &str, image: &ImageSpec) -> Option<String> {
    if !image_matches(current, &image.name) {
        return None;
    }
    let (mut name, mut tag, mut digest) = split_image(current);
    if let Some(new_name) = &image.new_name {
        name = new_name.clone();
    }
    // A new tag or digest replaces both the old tag and digest.
    match (&image.new_tag, &image.digest) {
        (Some(t), Some(d)) => (tag, digest) = (t.clone(), d.clone()),
        (Some(t), None) => (tag, digest) = (t.clone(), String::new()),
        (None, Some(d)) => (tag, digest) = (String::new(), d.clone()),
        (None, None) => {}
    }
    if !tag.is_empty() {
        name = format!("{name}:{tag}");
    }
    if !digest.is_empty() {
        name = format!("{name}@{digest}");
    }
    Some(name)
}

/// kustomize's `IsImageMatched`: `reference` is `name`, optionally followed by `:tag` and
/// `@sha256:digest`.
fn image_matches(reference: &str, name: &str) -> bool {
    let length = name.chars().count();
    let prefix: String = reference.chars().take(length).collect();
    if !pattern_matches(name, &prefix) {
        return false;
    }
    let tag_char = |c: char| c.is_ascii_alphanumeric() || "_.{}-".contains(c);
    let mut rest = &reference[prefix.len()..];
    if let Some(r) = rest.strip_prefix(':') {
        rest = r.trim_start_matches(tag_char);
    }
    if let Some(r) = rest.strip_prefix("@sha256:") {
        rest = r.trim_start_matches(tag_char);
    }
    rest.is_empty()
}

/// kustomize's `image.Split`: name, tag and digest of an image reference (a `:` before the
/// first `/` belongs to the registry's port).
fn split_image(reference: &str) -> (String, String, String) {
    let offset = match reference.find('/') {
        Some(i) if i > 0 => i,
        _ => 0,
    };
    let search = &reference[offset..];
    let at = search.find('@').map(|i| i + offset);
    let colon = search.find(':').map(|i| i + offset);
    match (colon, at) {
        (None, None) => (reference.to_string(), String::new(), String::new()),
        (Some(c), Some(a)) if c < a => (
            reference[..c].to_string(),
            reference[c + 1..a].to_string(),
            reference[a + 1..].to_string(),
        ),
        (_, Some(a)) => (
            reference[..a].to_string(),
            String::new(),
            reference[a + 1..].to_string(),
        ),
        (Some(c), None) => (
            reference[..c].to_string(),
            reference[c + 1..].to_string(),
            String::new(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Name references

/// The references kustomize's name-reference fix-up can change without renames: maps with
/// `name` and `namespace` that point at another object. (Referrer group, referrer kind,
/// path, kind referred to; the referred-to object is `v1`.)
const MAP_REFERENCES: &[(&str, &str, &[&str], &str)] = &[
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        &["subjects"],
        "ServiceAccount",
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        &["subjects"],
        "ServiceAccount",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        &["webhooks", "clientConfig", "service"],
        "Service",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        &["webhooks", "clientConfig", "service"],
        "Service",
    ),
    (
        "",
        "Node",
        &["spec", "configSource", "configMap"],
        "ConfigMap",
    ),
];

/// kustomize's final name-reference fix-up, for the references in [`MAP_REFERENCES`]: a
/// reference to an object a transformer moved gets that object's namespace.
fn fix_back_references(resources: &mut [Resource]) -> anyhow::Result<()> {
    for i in 0..resources.len() {
        let org_gvk = resources[i].org_id().gvk;
        let mut object = resources[i].object.clone();
        let mut changed = false;
        for (group, kind, path, target) in MAP_REFERENCES {
            if !org_gvk.selected_by(group, "", kind) {
                continue;
            }
            let referrer = &resources[i];
            let candidates = candidates_for(resources, referrer)?;
            visit_path(&mut object, path, &mut |node| {
                changed |= fix_reference(node, resources, referrer, &candidates, target)?;
                Ok(())
            })
            .with_context(|| format!("updating `{}` of {}", path.join("/"), referrer.cur_id()))?;
        }
        if changed {
            resources[i].object = object;
        }
    }
    Ok(())
}

/// Calls `f` on every node at `path`, descending into lists on the way (as kustomize's field
/// specs do).
fn visit_path(
    node: &mut Value,
    path: &[&str],
    f: &mut dyn FnMut(&mut Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match node {
        Value::Null => Ok(()),
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|item| visit_path(item, path, f)),
        _ if path.is_empty() => f(node),
        Value::Object(map) => match map.get_mut(path[0]) {
            Some(child) => visit_path(child, &path[1..], f),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The objects `referrer` may refer to (kustomize's `SubsetThatCouldBeReferencedByResource`).
fn candidates_for(resources: &[Resource], referrer: &Resource) -> anyhow::Result<Vec<usize>> {
    let referrer_id = referrer.cur_id();
    if referrer_id.gvk.cluster_scoped() {
        return Ok((0..resources.len()).collect());
    }
    let mut subject_namespaces = HashSet::new();
    if referrer_id.gvk.kind == "RoleBinding"
        && let Some(Value::Array(subjects)) = referrer.object.get("subjects")
    {
        for subject in subjects {
            if let (Some(namespace), Some(kind)) = (subject.get("namespace"), subject.get("kind"))
                && kind.as_str() == Some("ServiceAccount")
            {
                let namespace = namespace.as_str().ok_or_else(|| {
                    anyhow!("{referrer_id}: a subject's namespace is not a string")
                })?;
                subject_namespaces.insert(namespace.to_string());
            }
        }
    }
    Ok((0..resources.len())
        .filter(|&i| {
            let id = resources[i].cur_id();
            id.gvk.cluster_scoped()
                || id.effective_namespace() == referrer_id.effective_namespace()
                || subject_namespaces.contains(&id.namespace)
        })
        .collect())
}

/// kustomize's `setMapping` for one reference map; returns whether it changed.
fn fix_reference(
    node: &mut Value,
    resources: &[Resource],
    referrer: &Resource,
    candidates: &[usize],
    target_kind: &str,
) -> anyhow::Result<bool> {
    let Value::Object(map) = node else {
        return Ok(false);
    };
    let Some(name) = map.get("name").map(scalar_string) else {
        bail!("no `name` field in {}", Value::Object(map.clone()));
    };
    let mut candidates: Vec<usize> = match map.get("namespace").map(scalar_string) {
        None => candidates.to_vec(),
        Some(namespace) => {
            let by_original: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| {
                    let id = resources[i].org_id();
                    !id.gvk.cluster_scoped() && id.effective_namespace() == namespace
                })
                .collect();
            if by_original.is_empty() {
                candidates
                    .iter()
                    .copied()
                    .filter(|&i| {
                        let id = resources[i].cur_id();
                        !id.gvk.cluster_scoped() && id.effective_namespace() == namespace
                    })
                    .collect()
            } else {
                by_original
            }
        }
    };
    // Only objects a transformer recorded previous ids for are considered, by those ids.
    candidates.retain(|&i| {
        let previous = &resources[i].previous;
        previous.iter().any(|id| id.name == name)
            && previous
                .iter()
                .any(|id| id.gvk.selected_by("", "v1", target_kind))
    });
    let referrer_id = referrer.cur_id();
    if !referrer_id.gvk.cluster_scoped() {
        candidates.retain(|&i| {
            let id = resources[i].cur_id();
            id.gvk.cluster_scoped()
                || id.gvk.kind == "ServiceAccount"
                || id.effective_namespace() == referrer_id.effective_namespace()
        });
    }
    let referral = match candidates.as_slice() {
        [] => return Ok(false),
        [one] => resources[*one].cur_id(),
        [first, rest @ ..] => {
            let first = resources[*first].cur_id();
            if rest.iter().all(|&i| {
                let id = resources[i].cur_id();
                id.name == first.name && id.namespace == first.namespace
            }) {
                first
            } else {
                bail!(
                    "found multiple possible referrals: {}",
                    candidates
                        .iter()
                        .map(|&i| resources[i].cur_id().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    };
    if referral.name == name && referral.namespace.is_empty() {
        return Ok(false);
    }
    let before = map.clone();
    map.insert("name".to_string(), json!(referral.name));
    if !referral.namespace.is_empty() {
        map.insert("namespace".to_string(), json!(referral.namespace));
    }
    Ok(*map != before)
}

// ---------------------------------------------------------------------------------------------
// Output

/// What kustomize leaves of an object at the end: no empty or null `metadata.annotations`
/// (it stores its own bookkeeping there and removes the map when nothing else remains).
fn finish(mut object: Value) -> Value {
    integral_floats_as_integers(&mut object);
    if let Some(Value::Object(metadata)) = object.get_mut("metadata")
        && metadata
            .get("annotations")
            .is_some_and(|a| a.is_null() || a.as_object().is_some_and(Map::is_empty))
    {
        metadata.remove("annotations");
    }
    object
}

/// kustomize writes numbers as Go's JSON encoder does: `1.0` and `1e3` as `1` and `1000`.
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 1e21
            {
                if f >= 0.0 && f < u64::MAX as f64 {
                    *value = json!(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *value = json!(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// kustomize's default order of kinds: these first, in this order…
const ORDER_FIRST: [&str; 22] = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];

/// …these last, and every other kind in between.
const ORDER_LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn kind_rank(kind: &str) -> i64 {
    if let Some(i) = ORDER_FIRST.iter().position(|k| *k == kind) {
        return i as i64 - ORDER_FIRST.len() as i64;
    }
    if let Some(i) = ORDER_LAST.iter().position(|k| *k == kind) {
        return i as i64 + 1;
    }
    0
}

/// kustomize's `legacy` sort (`SortOrderTransformer`): by kind rank, then GVK, then namespace
/// and name.
fn legacy_order(a: &ResId, b: &ResId) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if a.gvk != b.gvk {
        let less = |x: &Gvk, y: &Gvk| -> bool {
            let (rx, ry) = (kind_rank(&x.kind), kind_rank(&y.kind));
            if rx != ry {
                return rx < ry;
            }
            if x.kind == "Namespace"
                && y.kind == "Namespace"
                && (x.group.is_empty() || y.group.is_empty())
            {
                return x.sort_string() > y.sort_string();
            }
            x.sort_string() < y.sort_string()
        };
        return if less(&a.gvk, &b.gvk) {
            Ordering::Less
        } else if less(&b.gvk, &a.gvk) {
            Ordering::Greater
        } else {
            Ordering::Equal
        };
    }
    let key = |id: &ResId| {
        let namespace = if id.namespace.is_empty() {
            "~X"
        } else {
            &id.namespace
        };
        let name = if id.name.is_empty() { "~N" } else { &id.name };
        format!("{}|{namespace}|{name}", id.gvk)
    };
    key(a).cmp(&key(b))
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// A scalar's text as kustomize sees it (strings without quotes).
fn scalar_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The value at `path`; with `create`, missing (or null) maps on the way are created.
fn object_at_mut<'a>(value: &'a mut Value, path: &[&str], create: bool) -> Option<&'a mut Value> {
    let mut current = value;
    for key in path {
        if create && current.is_null() {
            *current = json!({});
        }
        let map = current.as_object_mut()?;
        if create && !map.contains_key(*key) {
            map.insert(key.to_string(), Value::Null);
        }
        current = map.get_mut(*key)?;
    }
    if create && current.is_null() {
        *current = json!({});
    }
    Some(current)
}

/// Sets the string at `path`, creating the maps on the way.
fn set_str(object: &mut Value, path: &[&str], value: &str) -> anyhow::Result<()> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    match object_at_mut(object, parents, true) {
        Some(Value::Object(map)) => {
            map.insert(last.to_string(), json!(value));
            Ok(())
        }
        _ => bail!("`{}` is not a map in {object}", parents.join(".")),
    }
}
