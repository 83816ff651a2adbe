//! JSON ⇄ Kubernetes protobuf, one generic converter driven by the descriptor table.
//!
//! Objects travel as the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message
//! (`typeMeta{apiVersion, kind}`, `raw` = the encoded object, `contentEncoding`,
//! `contentType`), as apimachinery's protobuf serializer writes them. Inside, every field is
//! converted by its tag, type and JSON name from the table, except the types whose JSON form
//! is not their message form (see [`decode_special`] and [`encode_special`]).
//!
//! Decoding follows Go's generated unmarshallers: unknown tags are skipped, a repeated scalar
//! may arrive packed or not, the last occurrence of a singular field wins. Empty strings are
//! dropped, because Go writes every non-pointer string field, also empty ones that its JSON
//! encoding (`omitempty`) leaves out. Malformed input is an error, never a panic.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::table::{self, Field, Label, Message, Ty};

/// The prefix of every protobuf-encoded object.
pub const MAGIC: &[u8] = b"k8s\0";
/// Deeper nesting than any Kubernetes object has; stops a crafted body from exhausting the
/// stack.
const MAX_DEPTH: usize = 64;

const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";
const EXT_JSON: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.Json";
const SCHEMA_PROPS: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps";
const OR_ARRAY: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrArray";
const OR_BOOL: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrBool";
const OR_STRING_ARRAY: &str =
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaPropsOrStringArray";

/// Why a body could not be converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

type Result<T> = std::result::Result<T, Error>;

fn err<T>(why: impl Into<String>) -> Result<T> {
    Err(Error(why.into()))
}

/// The table message of an object of `apiVersion`/`kind`, if the protobuf encoding knows it.
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" | "meta.k8s.io"
            if matches!(
                kind,
                "Status" | "DeleteOptions" | "WatchEvent" | "APIResourceList"
            ) =>
        {
            "apimachinery.pkg.apis.meta".to_string()
        }
        "" => "api.core".to_string(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".to_string(),
        g => format!("api.{}", g.split('.').next().unwrap_or_default()),
    };
    table::message(&format!("{package}.{version}.{kind}"))
}

// Reading the wire format

/// One field as found on the wire.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return err("unexpected end of data in a varint");
            };
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return err("unexpected end of data");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field: its tag and value.
    fn field(&mut self) -> Result<(u32, Wire<'a>)> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Error("field tag out of range".into()))?;
        if tag == 0 {
            return err("illegal tag 0");
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| Error("length out of range".into()))?;
                Wire::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            other => return err(format!("unsupported wire type {other}")),
        };
        Ok((tag, wire))
    }
}

/// Every field of a message, in wire order.
fn fields(bytes: &[u8]) -> Result<Vec<(u32, Wire<'_>)>> {
    let mut reader = Reader { buf: bytes };
    let mut out = Vec::new();
    while !reader.buf.is_empty() {
        out.push(reader.field()?);
    }
    Ok(out)
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error("invalid UTF-8 in a string field".into()))
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `runtime.Unknown`: (apiVersion, kind, raw).
pub fn decode_unknown(body: &[u8]) -> Result<(String, String, &[u8])> {
    let Some(envelope) = body.strip_prefix(MAGIC) else {
        return err(format!(
            "provided data does not appear to be a protobuf message, expected prefix {MAGIC:?}"
        ));
    };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (tag, wire) in fields(envelope)? {
        match (tag, wire) {
            (1, Wire::Len(type_meta)) => {
                for (tag, wire) in fields(type_meta)? {
                    match (tag, wire) {
                        (1, Wire::Len(b)) => api_version = utf8(b)?,
                        (2, Wire::Len(b)) => kind = utf8(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(b)) => raw = b,
            (3, Wire::Len(encoding)) if !encoding.is_empty() => {
                return err("content encodings are not supported");
            }
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

/// A protobuf-encoded object (magic, `runtime.Unknown`, object) as JSON, with `apiVersion` and
/// `kind` from the envelope.
pub fn decode_object(body: &[u8]) -> Result<Value> {
    let (api_version, kind, raw) = decode_unknown(body)?;
    let Some(message) = message_for(&api_version, &kind) else {
        return err(format!(
            "no kind \"{kind}\" is registered for version \"{api_version}\""
        ));
    };
    let mut object = decode_message(message, raw, 0)?;
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(api_version));
        map.insert("kind".into(), Value::String(kind));
    }
    Ok(object)
}

/// A `meta.v1.WatchEvent` message: its type and its object (an embedded protobuf object).
pub fn decode_watch_event(message: &[u8]) -> Result<(String, Value)> {
    let (mut event, mut object) = (String::new(), Value::Null);
    for (tag, wire) in fields(message)? {
        match (tag, wire) {
            (1, Wire::Len(b)) => event = utf8(b)?,
            (2, Wire::Len(raw_extension)) => {
                for (tag, wire) in fields(raw_extension)? {
                    if let (1, Wire::Len(raw)) = (tag, wire) {
                        object = decode_object(raw)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((event, object))
}

/// One message as JSON.
pub fn decode_message(message: &Message, bytes: &[u8], depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return err("object nested too deeply");
    }
    if let Some(special) = decode_special(message.name, bytes, depth) {
        return special;
    }
    let mut out = Map::new();
    for (tag, wire) in fields(bytes)? {
        let Some(field) = message.field_by_tag(tag) else {
            continue;
        };
        match field.label {
            Label::Single if field.json.is_empty() => {
                // Inline: the embedded message's fields are this object's.
                if let Value::Object(inner) = decode_value(field.ty, wire, depth)? {
                    out.extend(inner);
                }
            }
            Label::Single => {
                let value = decode_value(field.ty, wire, depth)?;
                // Only string fields: a JSON `""` inside a message (a schema `default`) stays.
                let empty =
                    value.is_null() || (field.ty == Ty::String && value.as_str() == Some(""));
                if empty {
                    out.remove(field.json);
                } else {
                    out.insert(field.json.to_string(), value);
                }
            }
            Label::Repeated => {
                let list = out
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else {
                    return err("repeated field decoded twice");
                };
                match (field.ty, wire) {
                    // A packed list of numbers.
                    (Ty::Int32 | Ty::Int64 | Ty::Bool | Ty::Double, Wire::Len(packed)) => {
                        let mut reader = Reader { buf: packed };
                        while !reader.buf.is_empty() {
                            let wire = if field.ty == Ty::Double {
                                let b = reader.take(8)?;
                                Wire::Fixed64(u64::from_le_bytes(b.try_into().unwrap_or_default()))
                            } else {
                                Wire::Varint(reader.varint()?)
                            };
                            list.push(decode_value(field.ty, wire, depth)?);
                        }
                    }
                    (ty, wire) => list.push(decode_value(ty, wire, depth)?),
                }
            }
            Label::Map => {
                let Wire::Len(entry) = wire else {
                    return err(format!("map field {} is not length-delimited", field.json));
                };
                let (mut key, mut value) = (String::new(), None);
                for (tag, wire) in fields(entry)? {
                    match (tag, wire) {
                        (1, Wire::Len(b)) => key = utf8(b)?,
                        (2, wire) => value = Some(decode_value(field.ty, wire, depth)?),
                        _ => {}
                    }
                }
                let value = match (value, field.ty) {
                    (Some(v), _) => v,
                    (None, Ty::Message(name)) => match table::message(name) {
                        Some(m) => decode_message(m, &[], depth + 1)?,
                        None => Value::Null,
                    },
                    (None, Ty::Int32 | Ty::Int64) => Value::from(0),
                    (None, Ty::Double) => Value::from(0.0),
                    (None, Ty::Bool) => Value::Bool(false),
                    (None, Ty::String | Ty::Bytes) => Value::String(String::new()),
                };
                let map = out
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

fn decode_value(ty: Ty, wire: Wire<'_>, depth: usize) -> Result<Value> {
    Ok(match (ty, wire) {
        (Ty::String, Wire::Len(b)) => Value::String(utf8(b)?),
        (Ty::Bytes, Wire::Len(b)) => Value::String(base64_encode(b)),
        // Negative int32s are sign-extended to 64 bits on the wire.
        (Ty::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Ty::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        (Ty::Double, Wire::Fixed64(v)) => Number::from_f64(f64::from_bits(v))
            .map(Value::Number)
            .ok_or_else(|| Error("a double field is not a finite number".into()))?,
        (Ty::Message(name), Wire::Len(b)) => {
            let Some(message) = table::message(name) else {
                return err(format!("no descriptor for message {name}"));
            };
            decode_message(message, b, depth + 1)?
        }
        (ty, _) => return err(format!("wrong wire type for a {ty:?} field")),
    })
}

/// Fields of a special message by tag, as varints and byte strings.
struct Parts<'a> {
    varints: Vec<(u32, u64)>,
    bytes: Vec<(u32, &'a [u8])>,
}

impl<'a> Parts<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self> {
        let mut parts = Parts {
            varints: Vec::new(),
            bytes: Vec::new(),
        };
        for (tag, wire) in fields(bytes)? {
            match wire {
                Wire::Varint(v) => parts.varints.push((tag, v)),
                Wire::Len(b) => parts.bytes.push((tag, b)),
                Wire::Fixed32 | Wire::Fixed64(_) => {}
            }
        }
        Ok(parts)
    }

    fn varint(&self, tag: u32) -> Option<u64> {
        self.varints
            .iter()
            .rev()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| *v)
    }

    fn last(&self, tag: u32) -> Option<&'a [u8]> {
        self.bytes
            .iter()
            .rev()
            .find(|(t, _)| *t == tag)
            .map(|(_, b)| *b)
    }

    fn all(&self, tag: u32) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.bytes
            .iter()
            .filter(move |(t, _)| *t == tag)
            .map(|(_, b)| *b)
    }
}

fn schema_props(bytes: &[u8], depth: usize) -> Result<Value> {
    match table::message(SCHEMA_PROPS) {
        Some(m) => decode_message(m, bytes, depth + 1),
        None => err("no descriptor for JSONSchemaProps"),
    }
}

fn embedded_json(raw: Option<&[u8]>) -> Result<Value> {
    match raw {
        None | Some([]) => Ok(Value::Null),
        Some(raw) => serde_json::from_slice(raw)
            .map_err(|e| Error(format!("embedded JSON is malformed: {e}"))),
    }
}

/// The JSON form of the types Kubernetes encodes differently in JSON, or `None` for the rest.
/// `JSONSchemaPropsOrArray`/`OrStringArray`: the list in field 2 when it has items (each
/// decoded by `item`), else the schema in field 1, else null.
fn schema_or_list(
    parts: &Parts<'_>,
    depth: usize,
    item: impl Fn(&[u8]) -> Result<Value>,
) -> Result<Value> {
    let list: Vec<&[u8]> = parts.all(2).collect();
    if !list.is_empty() {
        return Ok(Value::Array(
            list.into_iter().map(item).collect::<Result<_>>()?,
        ));
    }
    match parts.last(1) {
        Some(b) => schema_props(b, depth),
        None => Ok(Value::Null),
    }
}

fn decode_special(name: &str, bytes: &[u8], depth: usize) -> Option<Result<Value>> {
    let special = matches!(
        name,
        TIME | MICRO_TIME
            | FIELDS_V1
            | QUANTITY
            | INT_OR_STRING
            | RAW_EXTENSION
            | EXT_JSON
            | OR_ARRAY
            | OR_BOOL
            | OR_STRING_ARRAY
    );
    special.then(|| {
        let parts = Parts::read(bytes)?;
        Ok(match name {
            // An empty message is Go's zero time, which JSON writes as null.
            TIME | MICRO_TIME => {
                let (seconds, nanos) = (parts.varint(1), parts.varint(2));
                if seconds.is_none() && nanos.is_none() {
                    return Ok(Value::Null);
                }
                let seconds = seconds.unwrap_or_default() as i64;
                let nanos = nanos.unwrap_or_default() as i64 as i32;
                Value::String(format_time(seconds, nanos, name == MICRO_TIME)?)
            }
            QUANTITY => match parts.last(1) {
                Some(b) => Value::String(utf8(b)?),
                None => Value::Null,
            },
            INT_OR_STRING => {
                if parts.varint(1) == Some(1) {
                    Value::String(utf8(parts.last(3).unwrap_or_default())?)
                } else {
                    Value::from(parts.varint(2).unwrap_or_default() as i64 as i32)
                }
            }
            FIELDS_V1 | RAW_EXTENSION | EXT_JSON => embedded_json(parts.last(1))?,
            OR_ARRAY => schema_or_list(&parts, depth, |b| schema_props(b, depth))?,
            OR_BOOL => match parts.last(2) {
                Some(b) => schema_props(b, depth)?,
                None => Value::Bool(parts.varint(1).is_some_and(|v| v != 0)),
            },
            OR_STRING_ARRAY => schema_or_list(&parts, depth, |b| utf8(b).map(Value::String))?,
            _ => Value::Null,
        })
    })
}

/// RFC 3339 in UTC: seconds for `Time`, microseconds for `MicroTime`, as Go's JSON writes them.
fn format_time(seconds: i64, nanos: i32, micro: bool) -> Result<String> {
    let ts = jiff::Timestamp::from_second(seconds)
        .map_err(|e| Error(format!("time out of range: {e}")))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(if micro {
        format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000)
    } else {
        format!("{base}Z")
    })
}

// Writing the wire format

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire_type: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire_type));
}

pub fn put_len(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `runtime.Unknown` with the magic prefix around an encoded object.
pub fn encode_unknown(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    put_len(&mut type_meta, 1, api_version.as_bytes());
    put_len(&mut type_meta, 2, kind.as_bytes());
    let mut out = MAGIC.to_vec();
    put_len(&mut out, 1, &type_meta);
    put_len(&mut out, 2, raw);
    put_len(&mut out, 3, b"");
    put_len(&mut out, 4, b"");
    out
}

/// A JSON object with `apiVersion` and `kind` in the protobuf encoding (magic and envelope).
pub fn encode_object(object: &Value) -> Result<Vec<u8>> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(message) = message_for(api_version, kind) else {
        return err(format!(
            "no protobuf encoding for kind \"{kind}\" of version \"{api_version}\""
        ));
    };
    let raw = encode_message(message, object, 0)?;
    Ok(encode_unknown(api_version, kind, &raw))
}

/// One message from its JSON form; keys that are not fields are ignored.
pub fn encode_message(message: &Message, value: &Value, depth: usize) -> Result<Vec<u8>> {
    if depth > MAX_DEPTH {
        return err("object nested too deeply");
    }
    if let Some(special) = encode_special(message.name, value, depth) {
        return special;
    }
    let Some(object) = value.as_object() else {
        return err(format!("expected an object for {}", message.name));
    };
    let mut out = Vec::new();
    for field in message.fields {
        if field.json.is_empty() {
            // Inline: the embedded message is made of this object's keys.
            encode_value(&mut out, field, field.ty, value, depth)?;
            continue;
        }
        let Some(value) = object.get(field.json).filter(|v| !v.is_null()) else {
            continue;
        };
        match field.label {
            Label::Single => encode_value(&mut out, field, field.ty, value, depth)?,
            Label::Repeated => {
                let Some(items) = value.as_array() else {
                    return err(format!("{}: expected an array", field.json));
                };
                for item in items {
                    encode_value(&mut out, field, field.ty, item, depth)?;
                }
            }
            Label::Map => {
                let Some(map) = value.as_object() else {
                    return err(format!("{}: expected an object", field.json));
                };
                for (key, item) in map {
                    let mut entry = Vec::new();
                    put_len(&mut entry, 1, key.as_bytes());
                    if !item.is_null() {
                        let value_field = Field {
                            tag: 2,
                            json: field.json,
                            ty: field.ty,
                            label: Label::Single,
                        };
                        encode_value(&mut entry, &value_field, field.ty, item, depth)?;
                    }
                    put_len(&mut out, field.tag, &entry);
                }
            }
        }
    }
    Ok(out)
}

fn integer(field: &Field, value: &Value) -> Result<i64> {
    if let Some(i) = value.as_i64() {
        return Ok(i);
    }
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.3e18 => Ok(f as i64),
        _ => err(format!("{}: expected an integer, got {value}", field.json)),
    }
}

fn encode_value(
    out: &mut Vec<u8>,
    field: &Field,
    ty: Ty,
    value: &Value,
    depth: usize,
) -> Result<()> {
    let tag = field.tag;
    match ty {
        Ty::String => match value.as_str() {
            Some(s) => put_len(out, tag, s.as_bytes()),
            None => return err(format!("{}: expected a string, got {value}", field.json)),
        },
        Ty::Bytes => {
            let decoded = value
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok());
            match decoded {
                Some(b) => put_len(out, tag, &b),
                None => return err(format!("{}: expected base64 data", field.json)),
            }
        }
        Ty::Int32 | Ty::Int64 => {
            let i = integer(field, value)?;
            if ty == Ty::Int32 && i32::try_from(i).is_err() {
                return err(format!("{}: {i} does not fit in 32 bits", field.json));
            }
            put_key(out, tag, 0);
            put_varint(out, i as u64);
        }
        Ty::Bool => match value.as_bool() {
            Some(b) => {
                put_key(out, tag, 0);
                put_varint(out, u64::from(b));
            }
            None => return err(format!("{}: expected a boolean, got {value}", field.json)),
        },
        Ty::Double => match value.as_f64() {
            Some(f) => {
                put_key(out, tag, 1);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            None => return err(format!("{}: expected a number, got {value}", field.json)),
        },
        Ty::Message(name) => {
            let Some(message) = table::message(name) else {
                return err(format!("no descriptor for message {name}"));
            };
            let bytes = encode_message(message, value, depth + 1)?;
            put_len(out, tag, &bytes);
        }
    }
    Ok(())
}

fn encode_schema_props(out: &mut Vec<u8>, tag: u32, value: &Value, depth: usize) -> Result<()> {
    let Some(message) = table::message(SCHEMA_PROPS) else {
        return err("no descriptor for JSONSchemaProps");
    };
    let bytes = encode_message(message, value, depth + 1)?;
    put_len(out, tag, &bytes);
    Ok(())
}

/// The message form of the types with their own JSON form, or `None` for the rest.
fn encode_special(name: &str, value: &Value, depth: usize) -> Option<Result<Vec<u8>>> {
    let mut out = Vec::new();
    let result = match name {
        TIME | MICRO_TIME => (|| {
            let Some(text) = value.as_str() else {
                return err(format!("expected an RFC 3339 time, got {value}"));
            };
            let ts: jiff::Timestamp = text
                .parse()
                .map_err(|e| Error(format!("invalid time {text:?}: {e}")))?;
            put_key(&mut out, 1, 0);
            put_varint(&mut out, ts.as_second() as u64);
            put_key(&mut out, 2, 0);
            put_varint(&mut out, ts.subsec_nanosecond() as i64 as u64);
            Ok(())
        })(),
        QUANTITY => match value {
            Value::String(s) => {
                put_len(&mut out, 1, s.as_bytes());
                Ok(())
            }
            Value::Number(n) => {
                put_len(&mut out, 1, n.to_string().as_bytes());
                Ok(())
            }
            other => err(format!("expected a quantity, got {other}")),
        },
        INT_OR_STRING => match value {
            Value::String(s) => {
                put_key(&mut out, 1, 0);
                put_varint(&mut out, 1);
                put_len(&mut out, 3, s.as_bytes());
                Ok(())
            }
            Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(i) => {
                    put_key(&mut out, 1, 0);
                    put_varint(&mut out, 0);
                    put_key(&mut out, 2, 0);
                    put_varint(&mut out, i as i64 as u64);
                    Ok(())
                }
                None => err(format!("int-or-string out of range: {n}")),
            },
            other => err(format!("expected an integer or a string, got {other}")),
        },
        FIELDS_V1 | RAW_EXTENSION | EXT_JSON => match serde_json::to_vec(value) {
            Ok(raw) => {
                put_len(&mut out, 1, &raw);
                Ok(())
            }
            Err(e) => err(e.to_string()),
        },
        OR_ARRAY => match value {
            Value::Array(items) => items
                .iter()
                .try_for_each(|item| encode_schema_props(&mut out, 2, item, depth)),
            other => encode_schema_props(&mut out, 1, other, depth),
        },
        OR_BOOL => match value {
            Value::Bool(b) => {
                put_key(&mut out, 1, 0);
                put_varint(&mut out, u64::from(*b));
                Ok(())
            }
            other => {
                put_key(&mut out, 1, 0);
                put_varint(&mut out, 1);
                encode_schema_props(&mut out, 2, other, depth)
            }
        },
        OR_STRING_ARRAY => match value {
            Value::Array(items) => items.iter().try_for_each(|item| match item.as_str() {
                Some(s) => {
                    put_len(&mut out, 2, s.as_bytes());
                    Ok(())
                }
                None => err(format!("expected a string, got {item}")),
            }),
            other => encode_schema_props(&mut out, 1, other, depth),
        },
        _ => return None,
    };
    Some(result.map(|()| out))
}
