//! The converter against k8s-pb's own prost types, and against malformed input.

use prost::Message as _;
use serde_json::{Value, json};

use super::codec::{self, decode_object, encode_object};
use super::{Negotiated, negotiate};

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p", "namespace": "ns", "labels": {"a": "b"},
            "creationTimestamp": "2026-01-02T03:04:05Z",
        },
        "spec": {
            "containers": [{
                "name": "c", "image": "i", "args": ["x", ""],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
            }],
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": -1},
        },
    })
}

/// The raw object inside the envelope.
fn raw(body: &[u8]) -> Vec<u8> {
    codec::decode_unknown(body).expect("envelope").2.to_vec()
}

#[test]
fn k8s_pb_reads_what_we_write_and_we_read_what_it_writes() {
    use k8s_pb::api::core::v1 as core;
    let original = pod();
    let bytes = encode_object(&original).expect("encodes");
    let decoded = core::Pod::decode(raw(&bytes).as_slice()).expect("k8s-pb decodes it");
    let spec = decoded.spec.clone().expect("spec");
    let container = &spec.containers[0];
    assert_eq!(container.ports[0].container_port, Some(80));
    assert_eq!(
        container.resources.as_ref().expect("resources").limits["memory"]
            .string
            .as_deref(),
        Some("1Gi")
    );
    let port = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.handler.as_ref())
        .and_then(|h| h.http_get.as_ref())
        .and_then(|g| g.port.as_ref())
        .expect("port");
    assert_eq!(
        (port.r#type, port.str_val.as_deref()),
        (Some(1), Some("http"))
    );
    assert_eq!(spec.termination_grace_period_seconds, Some(0));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.security_context.and_then(|s| s.run_as_user), Some(-1));
    assert_eq!(
        decoded
            .metadata
            .as_ref()
            .and_then(|m| m.creation_timestamp.as_ref())
            .and_then(|t| t.seconds),
        Some(1_767_323_045)
    );
    // And back: k8s-pb's encoding decodes to the original JSON.
    let again = codec::encode_unknown("v1", "Pod", &decoded.encode_to_vec());
    assert_eq!(decode_object(&again).expect("decodes"), original);
}

#[test]
fn service_field_names_come_from_the_json_schema() {
    use k8s_pb::api::core::v1 as core;
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
                 "ports": [{"port": 80, "targetPort": 8080}]},
    });
    let bytes = encode_object(&service).expect("encodes");
    let decoded = core::Service::decode(raw(&bytes).as_slice()).expect("decodes");
    let spec = decoded.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(
        spec.ports[0].target_port.as_ref().and_then(|p| p.int_val),
        Some(8080)
    );
    assert_eq!(decode_object(&bytes).expect("decodes"), service);
}

#[test]
fn a_token_request_from_k8s_pb_decodes_like_json() {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    let request = authn::TokenRequest {
        metadata: Some(meta::ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(String::new()),
            ..Default::default()
        }),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec!["a".into()],
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: Some("Secret".into()),
                api_version: Some("v1".into()),
                name: Some("s".into()),
                u_id: Some(String::new()),
            }),
            expiration_seconds: Some(900),
        }),
        status: None,
    };
    let body = codec::encode_unknown(
        "authentication.k8s.io/v1",
        "TokenRequest",
        &request.encode_to_vec(),
    );
    assert_eq!(
        decode_object(&body).expect("decodes"),
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"namespace": "ns"},
            "spec": {
                "audiences": ["a"],
                "expirationSeconds": 900,
                "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"},
            },
        })
    );
}

#[test]
fn special_json_forms_round_trip() {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "xs.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "xs", "kind": "X"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "list": {"type": "array", "items": {"type": "string"}},
                    "tuple": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
                    "free": {"type": "object", "additionalProperties": false},
                    "typed": {"type": "object", "additionalProperties": {"type": "string"}},
                    "dep": {"type": "object", "dependencies": {"a": ["b"], "c": {"required": ["d"]}}},
                    "e": {"type": "string", "enum": ["x", 1, null], "default": {"k": [1]}},
                    "$refd": {"$ref": "#/x"},
                    "blank": {"type": "string", "default": ""},
                },
            }}}],
        },
    });
    let bytes = encode_object(&crd).expect("encodes");
    assert_eq!(decode_object(&bytes).expect("decodes"), crd);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "managedFields": [{"fieldsV1": {"f:spec": {}}, "time": "2026-01-01T00:00:00Z"}]},
        "spec": {"renewTime": "2026-01-01T00:00:00.123456Z", "leaseDurationSeconds": 15},
    });
    let bytes = encode_object(&lease).expect("encodes");
    assert_eq!(decode_object(&bytes).expect("decodes"), lease);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"k": "AAEC/w=="}, "type": "Opaque"});
    let bytes = encode_object(&secret).expect("encodes");
    assert_eq!(decode_object(&bytes).expect("decodes"), secret);
}

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    let good = encode_object(&pod()).expect("encodes");
    for len in 0..good.len() {
        // Truncation may land on a field boundary and still decode; it must never panic.
        let _ = decode_object(&good[..len]);
    }
    assert!(decode_object(b"{}").is_err());
    assert!(decode_object(b"k8s\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut body = b"k8s\0".to_vec();
        for _ in 0..(seed % 64) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push(seed as u8);
        }
        let _ = decode_object(&body);
        // Garbage inside a well-formed envelope.
        let _ = decode_object(&codec::encode_unknown("v1", "Pod", &body[4..]));
    }
    // A schema nested deeper than any object is refused (a 3 MiB body could otherwise nest
    // deep enough to exhaust the stack).
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..200 {
        let mut outer = Vec::new();
        codec::put_len(&mut outer, 24, &{
            let mut or_array = Vec::new();
            codec::put_len(&mut or_array, 1, &nested);
            or_array
        });
        nested = outer;
    }
    let body = codec::encode_unknown("apiextensions.k8s.io/v1", "CustomResourceDefinition", &{
        // spec (2) → versions (7) → schema (4) → openAPIV3Schema (1) → nested items.
        let mut schema = Vec::new();
        codec::put_len(&mut schema, 1, &nested);
        let mut version = Vec::new();
        codec::put_len(&mut version, 4, &schema);
        let mut spec = Vec::new();
        codec::put_len(&mut spec, 7, &version);
        let mut crd = Vec::new();
        codec::put_len(&mut crd, 2, &spec);
        crd
    });
    let e = decode_object(&body).expect_err("too deep");
    assert!(e.0.contains("nested too deeply"), "{e}");
    // Wrong JSON types are errors when encoding too.
    assert!(
        encode_object(&json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": 1}}))
            .is_err()
    );
    assert!(encode_object(&json!({"apiVersion": "x/v1", "kind": "Pod"})).is_err());
}

#[test]
fn negotiation_follows_the_accept_header() {
    let pb = "application/vnd.kubernetes.protobuf";
    assert_eq!(negotiate(None, true), Negotiated::Json);
    assert_eq!(negotiate(Some(pb), true), Negotiated::Protobuf);
    assert_eq!(negotiate(Some(pb), false), Negotiated::NotAcceptable);
    let both = "application/vnd.kubernetes.protobuf,application/json";
    assert_eq!(negotiate(Some(both), true), Negotiated::Protobuf);
    assert_eq!(negotiate(Some(both), false), Negotiated::Json);
    let json_first = "application/json, application/vnd.kubernetes.protobuf";
    assert_eq!(negotiate(Some(json_first), true), Negotiated::Json);
    let weighted = "application/json;q=0.5, application/vnd.kubernetes.protobuf";
    assert_eq!(negotiate(Some(weighted), true), Negotiated::Protobuf);
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    assert_eq!(negotiate(Some(table), true), Negotiated::Json);
    assert_eq!(negotiate(Some("*/*"), true), Negotiated::Json);
}

/// Go writes every non-pointer field, zero or not, and its JSON leaves zeros out where the field
/// is `omitempty`; the protobuf does not say which fields are pointers. So a zero number or
/// `false` on the wire is kept (it may be a pointer field's meaningful 0, such as `replicas`),
/// and an empty string is dropped (pointer strings are rare). A documented difference: an
/// object created from protobuf by kubectl shows `paused: false`, `stdin: false`, … where a
/// real server shows nothing.
#[test]
fn go_zero_values_are_kept_and_empty_strings_dropped() {
    use k8s_pb::api::apps::v1 as apps;
    let deployment = apps::Deployment {
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            paused: Some(false),
            revision_history_limit: Some(0),
            ..Default::default()
        }),
        metadata: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("d".into()),
            generate_name: Some(String::new()),
            ..Default::default()
        }),
        status: None,
    };
    let body = codec::encode_unknown("apps/v1", "Deployment", &deployment.encode_to_vec());
    assert_eq!(
        decode_object(&body).expect("decodes"),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 0, "paused": false, "revisionHistoryLimit": 0},
        })
    );
}
