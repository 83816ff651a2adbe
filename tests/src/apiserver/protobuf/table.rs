//! The shape of the descriptor table in `descriptors.rs` (generated from k8s-pb's source by
//! `generate.rs`): per protobuf message, its fields' tags, JSON names and types.

/// One protobuf message: its k8s-pb module path and Rust name (e.g.
/// `api.core.v1.Pod`, `apimachinery.pkg.apis.meta.v1.ObjectMeta`) and its fields by tag.
#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    pub fields: &'static [Field],
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// The field's name in the JSON encoding (`clusterIP`, `$ref`, `x-kubernetes-…`); empty
    /// for a message embedded inline (`json:",inline"`), whose fields are the parent's in JSON.
    pub json: &'static str,
    pub ty: Ty,
    pub label: Label,
}

/// A field's (or a map value's) type. Kubernetes' protobuf uses only these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    String,
    Int32,
    Int64,
    Bool,
    Bytes,
    Double,
    /// Another message, by table name.
    Message(&'static str),
}

/// Whether a field holds one value, a list, or a `map<string, V>` (V in [`Field::ty`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    Single,
    Repeated,
    Map,
}

/// A message by table name (the table is sorted by name).
pub fn message(name: &str) -> Option<&'static Message> {
    let table = super::descriptors::MESSAGES;
    table
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &table[i])
}

impl Message {
    pub fn field_by_tag(&self, tag: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.tag == tag)
    }

    pub fn field_by_json(&self, json: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.json == json)
    }
}
