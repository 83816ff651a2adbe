//! Generates `descriptors.rs` from k8s-pb's source, and pins the committed file to it.
//!
//! k8s-pb's prost attributes give each field's tag and type; prost renamed the fields to
//! snake_case, so the JSON name comes from k8s-openapi's schema of the same type (property
//! names compared case-insensitively, ignoring `_`, `-` and `$`), or, for types k8s-openapi
//! has no schema for (`runtime.Unknown`, list kinds), from the snake_case name in lowerCamel.
//! A message field whose fields are the parent's JSON properties is an inline embedding (JSON
//! name `""`).
//!
//! Regenerate with `UPDATE_PB_DESCRIPTORS=1 cargo test -p tests --lib protobuf::generate`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::Value;

use crate::apiserver::registry::{self, BuiltInVisitor, Schema};

/// The messages the server converts, and with them everything they reference.
fn roots() -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for rt in registry::builtin_types() {
        let Schema::BuiltIn(_) = rt.schema else {
            continue;
        };
        let package = package_of(&rt.group);
        roots.push(format!("{package}.{}.{}", rt.version, rt.kind));
        roots.push(format!("{package}.{}.{}", rt.version, rt.list_kind));
    }
    for extra in [
        "apimachinery.pkg.apis.meta.v1.Status",
        "apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "apimachinery.pkg.apis.meta.v1.WatchEvent",
        "api.authentication.v1.TokenRequest",
        "api.authorization.v1.SelfSubjectAccessReview",
        "api.authorization.v1.SelfSubjectRulesReview",
    ] {
        roots.push(extra.to_string());
    }
    roots
}

fn package_of(group: &str) -> String {
    match group {
        "" => "api.core".into(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".into(),
        g => format!("api.{}", g.split('.').next().unwrap_or_default()),
    }
}

/// A field as parsed from k8s-pb.
#[derive(Debug)]
struct RawField {
    rust_name: String,
    tag: u32,
    ty: String,
    label: &'static str,
}

fn k8s_pb_source() -> PathBuf {
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    // Offline metadata must not need other platforms' crates: filter to the host.
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc reports its host");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--offline", "--format-version", "1"])
        .args(["--filter-platform", &host])
        .current_dir(manifest_dir)
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "k8s-pb")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("k8s-pb is a dependency of the tests crate");
    Path::new(manifest).parent().expect("crate dir").join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("k8s-pb source dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The innermost type path of a field type (through Option, Vec, Box, BTreeMap's value),
/// resolved against `module` into a table name.
fn message_type(ty: &syn::Type, module: &[String]) -> Option<String> {
    let syn::Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    let ident = last.ident.to_string();
    if matches!(
        ident.as_str(),
        "Option" | "Vec" | "Box" | "BTreeMap" | "HashMap"
    ) {
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        let inner = args
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .next_back()?;
        return message_type(inner, module);
    }
    let mut resolved: Vec<String> = module.to_vec();
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    for segment in &segments[..segments.len() - 1] {
        if segment == "super" {
            resolved.pop();
        } else {
            resolved.push(segment.clone());
        }
    }
    resolved.push(ident);
    Some(resolved.join("."))
}

fn parse_k8s_pb() -> BTreeMap<String, Vec<RawField>> {
    let src = k8s_pb_source();
    let mut files = Vec::new();
    for top in ["api", "apimachinery", "apiextensions_apiserver"] {
        rust_files(&src.join(top), &mut files);
    }
    let mut messages = BTreeMap::new();
    for file in files {
        let module: Vec<String> = file
            .parent()
            .expect("parent")
            .strip_prefix(&src)
            .expect("under src")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let text = std::fs::read_to_string(&file).expect("read k8s-pb source");
        let parsed = syn::parse_file(&text).expect("k8s-pb source parses");
        for item in parsed.items {
            let syn::Item::Struct(item) = item else {
                continue;
            };
            let syn::Fields::Named(named) = &item.fields else {
                continue;
            };
            let mut fields = Vec::new();
            for field in &named.named {
                let Some(attr) = field.attrs.iter().find(|a| a.path().is_ident("prost")) else {
                    continue;
                };
                let metas = attr
                    .parse_args_with(
                        syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                    )
                    .expect("prost attribute parses");
                let (mut tag, mut ty, mut label) = (0u32, String::new(), "Single");
                for meta in metas {
                    let lit = |nv: &syn::MetaNameValue| match &nv.value {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) => s.value(),
                        _ => String::new(),
                    };
                    match &meta {
                        syn::Meta::Path(p) => {
                            let word = p.get_ident().map(|i| i.to_string()).unwrap_or_default();
                            match word.as_str() {
                                "repeated" => label = "Repeated",
                                "optional" | "required" | "boxed" => {}
                                scalar => ty = scalar.to_string(),
                            }
                        }
                        syn::Meta::NameValue(nv) if nv.path.is_ident("tag") => {
                            tag = lit(nv).parse().expect("numeric tag");
                        }
                        syn::Meta::NameValue(nv) if nv.path.is_ident("bytes") => {
                            ty = "bytes".into();
                        }
                        syn::Meta::NameValue(nv)
                            if nv.path.is_ident("btree_map") || nv.path.is_ident("hash_map") =>
                        {
                            label = "Map";
                            let spec = lit(nv);
                            let (key, value) = spec.split_once(',').expect("map key, value");
                            assert_eq!(key.trim(), "string", "only string-keyed maps");
                            ty = value.trim().to_string();
                        }
                        _ => {}
                    }
                }
                if ty == "message" {
                    ty = format!(
                        "message:{}",
                        message_type(&field.ty, &module).expect("message field type")
                    );
                }
                let rust_name = field
                    .ident
                    .as_ref()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                fields.push(RawField {
                    rust_name: rust_name.trim_start_matches("r#").to_string(),
                    tag,
                    ty,
                    label,
                });
            }
            let name = format!("{}.{}", module.join("."), item.ident);
            messages.insert(name, fields);
        }
    }
    messages
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '$' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// k8s-openapi's schemas of everything the roots reference: normalized name → property names.
fn schemas() -> BTreeMap<String, Vec<String>> {
    use k8s_openapi::api::{authentication, authorization};
    use k8s_openapi::apimachinery::pkg::apis::meta;
    let settings = SchemaSettings::draft07().with(|s| {
        s.transforms.clear();
        s.meta_schema = None;
    });
    let mut generator = SchemaGenerator::new(settings);
    struct Register<'a>(&'a mut SchemaGenerator);
    impl BuiltInVisitor for Register<'_> {
        type Output = ();
        fn visit<T>(self)
        where
            T: JsonSchema + serde::Serialize + serde::de::DeserializeOwned,
        {
            self.0.subschema_for::<T>();
        }
    }
    for rt in registry::builtin_types() {
        if let Schema::BuiltIn(kind) = rt.schema {
            registry::visit_builtin(kind, Register(&mut generator));
        }
    }
    generator.subschema_for::<meta::v1::Status>();
    generator.subschema_for::<meta::v1::DeleteOptions>();
    generator.subschema_for::<meta::v1::ListMeta>();
    generator.subschema_for::<authentication::v1::TokenRequest>();
    generator.subschema_for::<authorization::v1::SelfSubjectAccessReview>();
    generator.subschema_for::<authorization::v1::SelfSubjectRulesReview>();
    generator
        .take_definitions(false)
        .into_iter()
        .map(|(name, schema)| {
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            (normalize(name.trim_start_matches("io.k8s.")), properties)
        })
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The generated file's text.
pub fn generate() -> String {
    let messages = parse_k8s_pb();
    let schemas = schemas();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = roots().into();
    while let Some(name) = queue.pop_front() {
        if !wanted.insert(name.clone()) {
            continue;
        }
        let fields = messages
            .get(&name)
            .unwrap_or_else(|| panic!("k8s-pb has no message {name}"));
        for f in fields {
            if let Some(target) = f.ty.strip_prefix("message:") {
                queue.push_back(target.to_string());
            }
        }
    }
    let mut out = String::from(
        "//! @generated by `protobuf/generate.rs` from k8s-pb's source (see there); do not edit.\n\
         //! Per message: tag, JSON name, type and label of each field.\n\n\
         use super::table::{Field as F, Label::*, Message as M, Ty::*};\n\n\
         pub static MESSAGES: &[M] = &[\n",
    );
    for name in &wanted {
        let properties = schemas.get(&normalize(name));
        out.push_str(&format!("    M {{ name: {name:?}, fields: &[\n"));
        let mut fields: Vec<&RawField> = messages[name].iter().collect();
        fields.sort_by_key(|f| f.tag);
        for f in fields {
            let matched = properties
                .and_then(|ps| ps.iter().find(|p| normalize(p) == normalize(&f.rust_name)))
                .cloned();
            // A Go struct embedded with `json:",inline"` (Probe's handler, Volume's source)
            // is a field in protobuf but its fields are the parent's in JSON: its JSON name is
            // empty.
            let inline = matched.is_none()
                && properties.is_some_and(|ps| {
                    f.ty.strip_prefix("message:")
                        .and_then(|target| messages.get(target))
                        .is_some_and(|inner| {
                            inner
                                .iter()
                                .any(|i| ps.iter().any(|p| normalize(p) == normalize(&i.rust_name)))
                        })
                });
            let json = match matched {
                Some(json) => json,
                None if inline => String::new(),
                None => lower_camel(&f.rust_name),
            };
            let ty = match f.ty.as_str() {
                "string" => "String".to_string(),
                "int32" => "Int32".into(),
                "int64" => "Int64".into(),
                "bool" => "Bool".into(),
                "bytes" => "Bytes".into(),
                "double" => "Double".into(),
                other => match other.strip_prefix("message:") {
                    Some(target) => format!("Message({target:?})"),
                    None => panic!("unexpected field type {other} in {name}"),
                },
            };
            out.push_str(&format!(
                "        F {{ tag: {}, json: {json:?}, ty: {ty}, label: {} }},\n",
                f.tag, f.label
            ));
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n");
    out
}

#[test]
fn descriptor_table_matches_k8s_pb() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/apiserver/protobuf/descriptors.rs");
    let fresh = generate();
    if std::env::var_os("UPDATE_PB_DESCRIPTORS").is_some() {
        std::fs::write(&path, &fresh).expect("write descriptors.rs");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} differs from a fresh generation from k8s-pb; regenerate with \
         UPDATE_PB_DESCRIPTORS=1 cargo test -p tests --lib protobuf::generate",
        path.display()
    );
}
