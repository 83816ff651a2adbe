//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`) for the built-in types:
//! request bodies, responses when the client's `Accept` prefers it, and watch streams.
//!
//! One generic converter ([`codec`]) maps JSON to protobuf and back, driven by a table of
//! message descriptors ([`descriptors`], generated from the k8s-pb crate's source). Custom
//! resources have no protobuf form: as on a real server, a protobuf body for one is 415 and an
//! `Accept` that allows nothing but protobuf is 406.

pub mod codec;
#[rustfmt::skip]
pub mod descriptors;
#[cfg(test)]
mod generate;
pub mod table;
#[cfg(test)]
mod tests;

use serde_json::Value;

use super::status::ApiError;

/// The media type of the encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The `Content-Type` of a protobuf watch stream.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// The answer's encoding, chosen from `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiated {
    Json,
    Protobuf,
    /// The client accepts only protobuf, which this resource does not have (406).
    NotAcceptable,
}

/// One `Accept` clause: media type, its parameters' names, and its quality.
struct Clause<'a> {
    media: &'a str,
    has_as: bool,
    q: f32,
}

fn clauses(accept: &str) -> Vec<Clause<'_>> {
    let mut out: Vec<Clause<'_>> = accept
        .split(',')
        .filter_map(|clause| {
            let mut parts = clause.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?;
            let (mut q, mut has_as) = (1.0f32, false);
            for param in parts {
                match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("q", v)) => q = v.parse().unwrap_or(0.0),
                    Some(("as", _)) => has_as = true,
                    _ => {}
                }
            }
            Some(Clause { media, has_as, q })
        })
        .collect();
    // Most preferred first; equal qualities keep the header's order.
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

/// Picks the answer's encoding as the real server's negotiation does: the client's most
/// preferred clause that names a served media type (`application/json`,
/// `application/yaml`, and for built-in types protobuf). Clauses asking for another
/// representation (`;as=Table`) are left to the JSON path, which serves them.
pub fn negotiate(accept: Option<&str>, protobuf_served: bool) -> Negotiated {
    let Some(accept) = accept else {
        return Negotiated::Json;
    };
    let clauses = clauses(accept);
    for clause in clauses.iter().filter(|c| c.q > 0.0) {
        if clause.has_as {
            return Negotiated::Json;
        }
        match clause.media {
            "*/*" | "application/*" | "application/json" | "application/yaml" => {
                return Negotiated::Json;
            }
            MEDIA_TYPE if protobuf_served => return Negotiated::Protobuf,
            _ => {}
        }
    }
    let only_protobuf = !clauses.is_empty() && clauses.iter().all(|c| c.media == MEDIA_TYPE);
    if only_protobuf {
        Negotiated::NotAcceptable
    } else {
        Negotiated::Json
    }
}

/// 406 as the real server words it, listing what this resource can be answered in.
pub fn not_acceptable(protobuf_served: bool) -> ApiError {
    let types = if protobuf_served {
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    } else {
        "application/json, application/yaml"
    };
    ApiError::new(
        406,
        "NotAcceptable",
        format!("only the following media types are accepted: {types}"),
    )
}

/// A protobuf request body as JSON; malformed input is 400.
pub fn decode_body(body: &[u8]) -> Result<Value, ApiError> {
    codec::decode_object(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or malformed: {e}"
        ))
    })
}

/// A JSON answer (object, list or Status, with `apiVersion` and `kind`) in protobuf.
pub fn encode(value: &Value) -> Result<Vec<u8>, codec::Error> {
    codec::encode_object(value)
}

/// One protobuf watch frame: a 4-byte big-endian length, then a `meta.v1.WatchEvent` whose
/// `object.raw` is the object's protobuf encoding (magic and envelope included).
pub fn watch_frame(event: &str, object: &Value) -> Result<Vec<u8>, codec::Error> {
    let raw = codec::encode_object(object)?;
    let mut raw_extension = Vec::new();
    codec::put_len(&mut raw_extension, 1, &raw);
    let mut message = Vec::new();
    codec::put_len(&mut message, 1, event.as_bytes());
    codec::put_len(&mut message, 2, &raw_extension);
    let len = u32::try_from(message.len()).map_err(|_| codec::Error("event too large".into()))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend(message);
    Ok(frame)
}

/// A watch event's type and object, and what follows it in the stream.
pub type WatchFrame<'a> = (String, Value, &'a [u8]);

/// Splits one frame off a protobuf watch stream: the event's type and object, and the rest of
/// the stream. `None` when `stream` does not hold a whole frame yet.
pub fn split_watch_frame(stream: &[u8]) -> Option<Result<WatchFrame<'_>, codec::Error>> {
    let len = u32::from_be_bytes(stream.get(..4)?.try_into().ok()?) as usize;
    let message = stream.get(4..4 + len)?;
    let rest = &stream[4 + len..];
    Some(codec::decode_watch_event(message).map(|(event, object)| (event, object, rest)))
}
