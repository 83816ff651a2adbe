//! `docs/leader-api.openapi.yaml` against the sidecar: every answer a real `leader-sidecar`
//! gives here must be documented there (status for that path and method, media type, headers,
//! body schema), and every answer documented there must be provoked here, except the few listed
//! in [`NOT_PROVOKED`]. The schemas must also name exactly the fields `contract.rs` writes, so
//! the document cannot drift from the code.
//!
//! Waits are conditions with generous upper bounds; nothing here depends on timing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leader_client::contract::{ErrorBody, LeaderStatus, LegacyLeader, YieldResponse, paths};
use serde_json::{Value, json};
use testkit::cluster::TestCluster;
use testkit::sidecar::{FAST_TIMINGS, Sidecar, SidecarSpec};
use testkit::web::{self, EventStream, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

/// The methods an OpenAPI 3.1 path item can document; the document lists every one of them on
/// every path, so that a wrong method is documented too.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where the document lists the answers that belong to no operation (unknown paths, requests
/// the HTTP layer rejects).
const UNMATCHED: &str = "x-unmatched-requests";
/// The "method" under which those are recorded: they do not depend on it.
const ANY_METHOD: &str = "*";

/// Documented answers this test cannot provoke deterministically, as (path, method, status).
const NOT_PROVOKED: &[(&str, &str, u16)] = &[
    // `POST /leader/yield` answers 503 only once the elector's command channel is closed, i.e.
    // after the runner has returned at the end of a completed shutdown and before the process
    // exits: no reachable state holds the process in that window (while a SIGTERM is pending,
    // the runner is still there and a yield gets 200).
    ("/leader/yield", "post", 503),
];

fn workspace_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// The OpenAPI document as JSON.
fn document() -> Value {
    let path = workspace_file("docs/leader-api.openapi.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Follows a local `$ref` (`#/...`) chain to the object it names.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are used: {reference}"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {reference}"));
    }
    value
}

/// A JSON Schema 2020-12 validator for `schema`, a schema of the document (or a `$ref` to one):
/// wrapped so that its `#/components/...` references resolve, with `format` asserted.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let wrapper = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": doc["components"],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&wrapper)
        .unwrap_or_else(|e| panic!("invalid schema {schema}: {e}"))
}

/// Validates `instance` against `schema`, listing every violation.
fn validate(doc: &Value, schema: &Value, instance: &Value, what: &str) -> anyhow::Result<()> {
    let validator = validator(doc, schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {:?})", e.instance_path().to_string()))
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "{what}: {instance} does not match {schema}: {errors:#?}"
    );
    Ok(())
}

fn component_schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Every (path, method, status) the document lists; answers to unmatched requests under
/// ([`UNMATCHED`], [`ANY_METHOD`], status).
fn documented(doc: &Value) -> BTreeSet<(String, String, u16)> {
    let mut out = BTreeSet::new();
    let status = |code: &String| code.parse::<u16>().expect("numeric status codes only");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            for code in item[method]["responses"].as_object().into_iter().flatten() {
                out.insert((path.clone(), method.to_owned(), status(code.0)));
            }
        }
    }
    for code in doc[UNMATCHED]["responses"]
        .as_object()
        .expect("unmatched responses")
        .keys()
    {
        out.insert((UNMATCHED.to_owned(), ANY_METHOD.to_owned(), status(code)));
    }
    out
}

/// Checks answers against the document and records which documented answers were seen.
struct Checker {
    doc: Value,
    seen: BTreeSet<(String, String, u16)>,
}

impl Checker {
    fn new() -> Self {
        Self {
            doc: document(),
            seen: BTreeSet::new(),
        }
    }

    /// Checks one answer to `method path`: its status is documented for that operation (or,
    /// for a path the document does not list, among the unmatched answers), its
    /// `Content-Type` is the documented media type (none when none is documented), every
    /// required header is there and matches its schema, and the body matches the media type's
    /// schema (`HEAD` answers have no body). `body` is `None` for a stream whose events the
    /// caller reads; the media type object is returned for that.
    fn check(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<Value> {
        let doc = &self.doc;
        let what = format!("{method} {path} -> {status}");
        let method = method.to_ascii_lowercase();
        let route = path.split('?').next().unwrap_or(path);
        let (key, method_key, responses) = match doc["paths"].get(route) {
            Some(item) => {
                let operation = item.get(&method).ok_or_else(|| {
                    anyhow::anyhow!("{what}: the document has no {method} on {route}")
                })?;
                (route, method.as_str(), &operation["responses"])
            }
            None => (UNMATCHED, ANY_METHOD, &doc[UNMATCHED]["responses"]),
        };
        let response = responses
            .get(status.to_string())
            .map(|r| resolve(doc, r))
            .ok_or_else(|| anyhow::anyhow!("{what}: status not documented for {key} {method}"))?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };

        let media = match response.get("content").and_then(Value::as_object) {
            Some(content) => {
                anyhow::ensure!(content.len() == 1, "{what}: one media type per answer");
                let (media_type, media) = content.iter().next().expect("one");
                anyhow::ensure!(
                    header("content-type") == Some(media_type.as_str()),
                    "{what}: Content-Type {:?}, documented {media_type}",
                    header("content-type")
                );
                Some((media_type.as_str(), media))
            }
            None => {
                anyhow::ensure!(
                    header("content-type").is_none(),
                    "{what}: undocumented Content-Type {:?}",
                    header("content-type")
                );
                None
            }
        };

        for (name, spec) in response
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let spec = resolve(doc, spec);
            match header(name) {
                Some(value) => {
                    if let Some(schema) = spec.get("schema") {
                        validate(doc, schema, &json!(value), &format!("{what}: {name}"))?;
                    }
                }
                None => anyhow::ensure!(
                    spec["required"] != json!(true),
                    "{what}: required header {name} missing from {headers:?}"
                ),
            }
        }

        match body {
            Some(body) if method == "head" || media.is_none() => anyhow::ensure!(
                body.is_empty(),
                "{what}: a body where none is documented: {:?}",
                String::from_utf8_lossy(body)
            ),
            Some(body) => {
                let (media_type, media) = media.expect("checked above");
                anyhow::ensure!(
                    media_type == "application/json",
                    "{what}: complete bodies are JSON here"
                );
                let value: Value = serde_json::from_slice(body).map_err(|e| {
                    anyhow::anyhow!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(body))
                })?;
                let schema = media
                    .get("schema")
                    .ok_or_else(|| anyhow::anyhow!("{what}: no schema documented"))?;
                validate(doc, schema, &value, &what)?;
            }
            None => {}
        }
        self.seen
            .insert((key.to_owned(), method_key.to_owned(), status));
        Ok(media.map(|(_, m)| m.clone()).unwrap_or(Value::Null))
    }

    /// Checks a complete answer (see [`Checker::check`]).
    fn reply(&mut self, method: &str, path: &str, reply: &Reply) -> anyhow::Result<()> {
        self.check(
            method,
            path,
            reply.status,
            &reply.headers,
            Some(&reply.body),
        )
        .map(drop)
    }

    /// Sends `method path` (empty body), checks the answer and returns it.
    async fn send(&mut self, addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<Reply> {
        let reply = web::request(addr, method, path, b"").await?;
        self.reply(method, path, &reply)?;
        Ok(reply)
    }

    /// `GET /leader/watch`: checks the head of the stream and returns the stream and the
    /// documented media type (for [`Checker::event`]).
    async fn watch(&mut self, addr: SocketAddr) -> anyhow::Result<(EventStream, Value)> {
        let stream = EventStream::open(addr, paths::WATCH).await?;
        anyhow::ensure!(stream.status == 200, "watch: {}", stream.status);
        let media = self.check("GET", paths::WATCH, stream.status, &stream.headers, None)?;
        Ok((stream, media))
    }

    /// Reads the next event and checks it against the documented framing and data schema.
    async fn event(&self, stream: &mut EventStream, media: &Value) -> anyhow::Result<LeaderStatus> {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("no event within {WAIT:?}"))??
            .ok_or_else(|| anyhow::anyhow!("the stream closed"))?;
        anyhow::ensure!(
            Some(event.event.as_str()) == media["x-event-name"].as_str(),
            "event name {:?}, documented {}",
            event.event,
            media["x-event-name"]
        );
        let data: Value = serde_json::from_str(&event.data)?;
        validate(&self.doc, &media["x-event-data"], &data, "watch event")?;
        Ok(serde_json::from_value(data)?)
    }
}

/// Sends `raw` in one write and reads the answer to the end. The server may close with bytes
/// of ours unread, which resets the connection after its answer; what arrived counts.
async fn raw_request(addr: SocketAddr, raw: &[u8]) -> anyhow::Result<Reply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(raw).await?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    web::parse(&answer)
}

/// `method path` with `extra` header lines and a body, as raw bytes.
fn raw(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}\r\n")
            .into_bytes();
    out.extend_from_slice(body);
    out
}

async fn start(cluster: &TestCluster, lease: &str, id: &str) -> anyhow::Result<Sidecar> {
    let (kubeconfig, _) = cluster.client_kubeconfig(id)?;
    Sidecar::spawn(SidecarSpec::new(&kubeconfig, cluster.namespace(), lease, id).args(FAST_TIMINGS))
        .await
}

#[tokio::test]
async fn real_answers_match_the_openapi_document() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    // A leader, then a follower that has seen it: the roles are settled before any check.
    let leader = start(&cluster, "schema", "pod-a").await?;
    leader.wait_status(WAIT, |s| s.is_leader).await?;
    let follower = start(&cluster, "schema", "pod-b").await?;
    follower
        .wait_status(WAIT, |s| {
            !s.is_leader && s.holder.as_deref() == Some("pod-a")
        })
        .await?;
    let mut c = Checker::new();

    // GET /leader: a grant on the leader, none on the follower.
    let r = c.send(leader.api, "GET", paths::LEADER).await?;
    let s: LeaderStatus = r.json()?;
    assert!(s.is_leader && s.holder.as_deref() == Some("pod-a"), "{s:?}");
    let r = c.send(follower.api, "GET", paths::LEADER).await?;
    let s: LeaderStatus = r.json()?;
    assert!(!s.is_leader && s.valid_for_ms == 0, "{s:?}");
    assert_eq!(s.holder.as_deref(), Some("pod-a"));

    // GET /: the leader names itself, the follower names the leader.
    for sc in [&leader, &follower] {
        let r = c.send(sc.api, "GET", paths::LEGACY).await?;
        assert_eq!(r.json::<LegacyLeader>()?.name, "pod-a");
    }

    // HEAD on every path that serves it: headers of GET, no body.
    for sc in [&leader, &follower] {
        for path in [paths::LEADER, paths::WATCH, paths::LEGACY] {
            let r = c.send(sc.api, "HEAD", path).await?;
            assert_eq!(r.status, 200, "HEAD {path}");
        }
    }

    // The stream: the first event at once, then a re-grant while leader; the follower's first
    // event is no grant. Every event's data is checked against the schema.
    let (mut stream, media) = c.watch(leader.api).await?;
    let first = c.event(&mut stream, &media).await?;
    assert!(first.is_leader, "{first:?}");
    let regrant = c.event(&mut stream, &media).await?;
    assert!(regrant.is_leader && regrant.valid_for_ms > 0, "{regrant:?}");
    let (mut follower_stream, follower_media) = c.watch(follower.api).await?;
    let e = c.event(&mut follower_stream, &follower_media).await?;
    assert!(
        !e.is_leader && e.holder.as_deref() == Some("pod-a"),
        "{e:?}"
    );

    // Every wrong method on every path (the document lists all eight on each path).
    let doc = c.doc.clone();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let documented = &item[method]["responses"];
            if documented.get("405").is_some() {
                let r = c.send(leader.api, &method.to_uppercase(), path).await?;
                assert_eq!(r.status, 405, "{method} {path}");
            }
        }
    }

    // Bodies: over 1 KiB is refused, an unreadable one too, wherever a body is read. Each
    // request goes out in one write and is read by the server in full.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let documented = &item[method]["responses"];
            let method = method.to_uppercase();
            if documented.get("413").is_some() {
                let big = raw(
                    leader.api,
                    &method,
                    path,
                    "content-length: 2048\r\n",
                    &[b'x'; 2048],
                );
                let r = raw_request(leader.api, &big).await?;
                c.reply(&method, path, &r)?;
                assert_eq!(r.status, 413, "{method} {path} with 2 KiB");
            }
            if documented.get("400").is_some() {
                // A chunk size that is not hexadecimal.
                let bad = raw(
                    leader.api,
                    &method,
                    path,
                    "transfer-encoding: chunked\r\n",
                    b"zz\r\n",
                );
                let r = raw_request(leader.api, &bad).await?;
                c.reply(&method, path, &r)?;
                assert_eq!(r.status, 400, "{method} {path} with a broken chunked body");
            }
        }
    }

    // Unknown paths, with any method: the shared 404.
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/leader/"),
        ("HEAD", "/leader/watch/x"),
        ("DELETE", "/yield"),
    ] {
        let r = c.send(leader.api, method, path).await?;
        assert_eq!(r.status, 404, "{method} {path}");
    }
    // The HTTP layer: bytes that are not HTTP, and a head that reaches 16 KiB without ending
    // (exactly 16 KiB, all of which the server reads before answering).
    let r = raw_request(leader.api, b"\x00\x01garbage\r\n\r\n").await?;
    c.reply("GET", "/<not http>", &r)?;
    assert_eq!(r.status, 400);
    let mut head = format!("GET {} HTTP/1.1\r\nx-filler: ", paths::LEADER).into_bytes();
    head.resize(16 * 1024, b'a');
    let r = raw_request(leader.api, &head).await?;
    c.reply("GET", "/<16 KiB head>", &r)?;
    assert_eq!(r.status, 431);

    // Both sidecars still answer as before.
    assert!(leader.status().await?.is_leader);

    // POST /leader/yield: the follower first (it was not leader), then the leader, whose
    // stream then reports the loss.
    let r = c.send(follower.api, "POST", paths::YIELD).await?;
    assert!(!r.json::<YieldResponse>()?.was_leader);
    let r = c.send(leader.api, "POST", paths::YIELD).await?;
    let y: YieldResponse = r.json()?;
    assert!(y.was_leader && y.backoff_ms == 3000, "{y:?}");
    loop {
        let e = c.event(&mut stream, &media).await?;
        if !e.is_leader {
            break;
        }
    }
    leader.wait_log("released lease", WAIT).await?;

    // The other way round: every documented answer was provoked, but for the listed ones.
    let documented = documented(&c.doc);
    let exceptions: BTreeSet<(String, String, u16)> = NOT_PROVOKED
        .iter()
        .map(|(p, m, s)| ((*p).to_owned(), (*m).to_owned(), *s))
        .collect();
    let stale: Vec<_> = exceptions.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "exceptions not in the document: {stale:?}"
    );
    let provoked_anyway: Vec<_> = exceptions.intersection(&c.seen).collect();
    assert!(
        provoked_anyway.is_empty(),
        "listed as not provokable, yet seen: {provoked_anyway:?}"
    );
    let missing: Vec<_> = documented
        .difference(&c.seen)
        .filter(|t| !exceptions.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never provoked: {missing:#?}"
    );
    Ok(())
}

/// The `required` and `properties` of each schema are exactly the fields serde writes for the
/// matching type of `contract.rs`, and what it writes validates.
#[test]
fn schemas_name_exactly_the_fields_contract_rs_writes() -> anyhow::Result<()> {
    let doc = document();
    let leader = LeaderStatus {
        is_leader: true,
        identity: "pod-a".to_owned(),
        holder: Some("pod-a".to_owned()),
        lease: "ns/lease".to_owned(),
        term: Some(4),
        valid_for_ms: 2000,
        observed_at: Some("2026-11-24T12:17:16.368221125Z".to_owned()),
        renewed_at: Some("2026-11-24T12:17:16.364656Z".to_owned()),
    };
    let unknown = LeaderStatus {
        is_leader: false,
        identity: "pod-b".to_owned(),
        holder: None,
        lease: "ns/lease".to_owned(),
        term: None,
        valid_for_ms: 0,
        observed_at: None,
        renewed_at: None,
    };
    let cases = [
        ("LeaderStatus", serde_json::to_value(&leader)?),
        ("LeaderStatus", serde_json::to_value(&unknown)?),
        (
            "LeaderStatus",
            serde_json::to_value(LeaderStatus::<&str> {
                is_leader: false,
                identity: "pod-b",
                holder: Some("pod-a"),
                lease: "ns/lease",
                term: Some(4),
                valid_for_ms: 0,
                observed_at: Some("2026-11-24T12:17:16Z"),
                renewed_at: Some("2026-11-24T12:17:16Z"),
            })?,
        ),
        (
            "LegacyLeader",
            serde_json::to_value(LegacyLeader {
                name: String::new(),
            })?,
        ),
        (
            "YieldResponse",
            serde_json::to_value(YieldResponse {
                was_leader: true,
                backoff_ms: 15_000,
            })?,
        ),
        (
            "Error",
            serde_json::to_value(ErrorBody {
                error: "no such path: /x".to_owned(),
            })?,
        ),
    ];
    for (name, value) in &cases {
        let schema = &doc["components"]["schemas"][name];
        let written: BTreeSet<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no required"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let properties: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no properties"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(required, written, "{name}: required vs contract.rs");
        assert_eq!(properties, written, "{name}: properties vs contract.rs");
        assert_eq!(schema["additionalProperties"], json!(false), "{name}");
        validate(&doc, &component_schema(name), value, name)?;
    }

    // The schema holds the rules that bind fields together, and the types' limits.
    let schema = component_schema("LeaderStatus");
    let mut bad = serde_json::to_value(&leader)?;
    bad["valid_for_ms"] = json!(0);
    assert!(validate(&doc, &schema, &bad, "leader without time").is_err());
    let mut bad = serde_json::to_value(&unknown)?;
    bad["valid_for_ms"] = json!(5);
    assert!(validate(&doc, &schema, &bad, "time without leader").is_err());
    let mut bad = serde_json::to_value(&leader)?;
    bad["term"] = json!(i64::from(i32::MAX) + 1);
    assert!(validate(&doc, &schema, &bad, "term past int32").is_err());
    let mut bad = serde_json::to_value(&leader)?;
    bad["observed_at"] = json!("yesterday");
    assert!(validate(&doc, &schema, &bad, "not a date-time").is_err());
    let mut bad = serde_json::to_value(&leader)?;
    bad["extra"] = json!(1);
    assert!(validate(&doc, &schema, &bad, "an unknown field").is_err());
    Ok(())
}

/// The document's frame: OpenAPI 3.1.0, this sidecar's version, the paths and event name of
/// `contract::paths`, every method on every path, resolvable references and valid schemas.
#[test]
fn the_document_describes_this_sidecar() {
    let doc = document();
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let manifest = std::fs::read_to_string(workspace_file("sidecar/Cargo.toml")).expect("manifest");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("sidecar version");
    assert_eq!(doc["info"]["version"], json!(version), "info.version");

    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let served = BTreeSet::from([paths::LEADER, paths::WATCH, paths::YIELD, paths::LEGACY]);
    assert_eq!(documented, served);
    assert_eq!(
        doc["paths"][paths::WATCH]["get"]["responses"]["200"]["content"]["text/event-stream"]["x-event-name"],
        json!(paths::EVENT)
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            assert!(
                item.get(method).is_some(),
                "{method} {path} is not documented"
            );
        }
    }

    // Every reference resolves; every schema compiles as JSON Schema 2020-12.
    fn walk(doc: &Value, v: &Value) {
        match v {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(doc, v);
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    walk(&doc, &doc);
    for name in doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        validator(&doc, &component_schema(name));
    }
}
