//! HTTP abuse of a running sidecar's leader API, for the fault suite: malformed requests
//! ([`garbage`]), many connections that never send a byte ([`IdleFlood`]) and a
//! `/leader/watch` reader that stops reading ([`StalledWatcher`]). Each takes the leader API
//! address (`Sidecar::api`).
//!
//! What the sidecar must do under this abuse (`plumbing::server::Slots`): answer garbage
//! with a 4xx or a closed connection, never a 2xx or 5xx; let idle connections make room for
//! new ones at the connection cap; keep serving every other client, and keep renewing.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::web;

/// Upper bound on waiting for the server to answer or close one garbage connection. The
/// sidecar closes a connection whose request head is incomplete after 10 s at most, so this is
/// only hit when it holds a connection it should have closed.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Upper bound on one TCP connect of a flood (the kernel retries a dropped SYN for longer).
const CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Connections a flood opens concurrently.
const FLOOD_BATCH: usize = 256;

/// Descriptors a flood leaves for the rest of the test process (API server, sidecar pipes,
/// other clients).
const FD_HEADROOM: u64 = 512;

/// Socket receive buffer of a [`StalledWatcher`]: small, so the sidecar's sends back up fast.
const STALLED_RECV_BUFFER: u32 = 4096;

/// One malformed request, sent on a connection of its own.
#[derive(Clone, Debug)]
pub struct GarbageCase {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    /// Shut down our sending side after the bytes (the request is cut short on purpose).
    pub then_close: bool,
}

/// What came back on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP response with this status code.
    Status(u16),
    /// The server closed (or reset) the connection without an HTTP response.
    Closed,
}

impl Answer {
    /// Garbage may be refused (4xx) or dropped, never accepted (2xx) nor crash anything (5xx);
    /// anything else (1xx, 3xx) is unexpected too.
    pub fn acceptable(&self) -> bool {
        match self {
            Answer::Status(code) => (400..500).contains(code),
            Answer::Closed => true,
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(code) => write!(f, "{code}"),
            Answer::Closed => f.write_str("closed"),
        }
    }
}

/// Every garbage case and valid-but-wrong request with its answer, in the order sent.
#[derive(Clone, Debug, Default)]
pub struct GarbageReport {
    pub answers: Vec<(String, Answer)>,
}

impl fmt::Display for GarbageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, answer)) in self.answers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {answer}")?;
        }
        Ok(())
    }
}

/// Deterministic bytes (xorshift64), so that a failure can be replayed.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect()
}

/// A TLS 1.2/1.3 ClientHello record for `localhost`, as a client that mistakes the port for
/// HTTPS sends first.
fn tls_client_hello() -> Vec<u8> {
    let host = b"localhost";
    let mut sni = Vec::new();
    let list_len = host.len() + 3;
    sni.extend_from_slice(&[0x00, 0x00]); // extension: server_name
    sni.extend_from_slice(&u16::try_from(list_len + 2).unwrap_or(0).to_be_bytes());
    sni.extend_from_slice(&u16::try_from(list_len).unwrap_or(0).to_be_bytes());
    sni.push(0x00); // host_name
    sni.extend_from_slice(&u16::try_from(host.len()).unwrap_or(0).to_be_bytes());
    sni.extend_from_slice(host);

    let mut hello = vec![0x03, 0x03]; // client_version TLS 1.2
    hello.extend_from_slice(&pseudo_random(32, 0x7115)); // random
    hello.push(0x00); // no session id
    hello.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // two cipher suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    hello.extend_from_slice(&u16::try_from(sni.len()).unwrap_or(0).to_be_bytes());
    hello.extend_from_slice(&sni);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(hello.len()).unwrap_or(0).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap_or(0).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The malformed requests [`garbage`] sends.
pub fn garbage_cases() -> Vec<GarbageCase> {
    let mut random = pseudo_random(512, 0x5eed_1ead_e5c0_ffee);
    // Not a token character, so the very first byte is already not HTTP: an answer comes at
    // once instead of after the header timeout.
    random[0] = 0x00;
    let mut big_header = b"GET /leader HTTP/1.1\r\nhost: sidecar\r\nx-big: ".to_vec();
    big_header.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big_header.extend_from_slice(b"\r\n\r\n");
    let case = |name, bytes: &[u8], then_close| GarbageCase {
        name,
        bytes: bytes.to_vec(),
        then_close,
    };
    vec![
        case("random bytes", &random, false),
        case(
            "request line without HTTP version",
            b"GET /leader\r\nhost: sidecar\r\n\r\n",
            false,
        ),
        case(
            "header line without colon",
            b"GET /leader HTTP/1.1\r\nhost: sidecar\r\nthis line has no colon\r\n\r\n",
            false,
        ),
        case("64 KiB header", &big_header, false),
        case(
            "HTTP/9.9",
            b"GET /leader HTTP/9.9\r\nhost: sidecar\r\n\r\n",
            false,
        ),
        case(
            "truncated request, then close",
            b"GET /leader HTTP/1.1\r\nhost: sidecar\r\nx-cut: ",
            true,
        ),
        case(
            "content-length 99999999 to /leader/yield, short body, then close",
            b"POST /leader/yield HTTP/1.1\r\nhost: sidecar\r\ncontent-length: 99999999\r\n\r\nshort",
            true,
        ),
        case("TLS ClientHello", &tls_client_hello(), false),
        case(
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            false,
        ),
    ]
}

/// Reads what `raw` holds: a status line, or nothing at all.
fn classify(raw: &[u8]) -> anyhow::Result<Answer> {
    if raw.is_empty() {
        return Ok(Answer::Closed);
    }
    let reply = web::parse(raw).with_context(|| {
        format!(
            "neither an HTTP response nor nothing: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })?;
    Ok(Answer::Status(reply.status))
}

/// Sends one case and waits for the answer or the close.
async fn send_case(addr: SocketAddr, case: &GarbageCase) -> anyhow::Result<Answer> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("{}: cannot connect to {addr}", case.name))?;
    // The server may answer and close before it has read everything (the 64 KiB header): a
    // failed write is part of the abuse, the answer is what counts.
    let _ = stream.write_all(&case.bytes).await;
    if case.then_close {
        let _ = stream.shutdown().await;
    }
    let mut raw = Vec::new();
    match tokio::time::timeout(ANSWER_WAIT, stream.read_to_end(&mut raw)).await {
        // A reset after (or instead of) an answer: whatever arrived before it counts.
        Ok(Ok(_)) | Ok(Err(_)) => {}
        Err(_) => anyhow::bail!(
            "{}: the server neither answered nor closed the connection within {ANSWER_WAIT:?}",
            case.name
        ),
    }
    classify(&raw).with_context(|| case.name.to_owned())
}

/// Sends every [`garbage_cases`] item on its own connection, then two valid requests that are
/// wrong for the API (`DELETE /leader`, `GET /nope`). Fails when a garbage case gets anything
/// but a 4xx or a closed connection, or a wrong request gets anything but a 4xx with a JSON
/// `error`. The report lists every answer.
pub async fn garbage(addr: SocketAddr) -> anyhow::Result<GarbageReport> {
    let mut report = GarbageReport::default();
    for case in garbage_cases() {
        let answer = send_case(addr, &case).await?;
        report.answers.push((case.name.to_owned(), answer));
    }
    if let Some((name, answer)) = report.answers.iter().find(|(_, a)| !a.acceptable()) {
        anyhow::bail!("garbage {name:?} got {answer}, not a 4xx or a close ({report})");
    }
    for (method, path, expected) in [("DELETE", "/leader", 405), ("GET", "/nope", 404)] {
        let name = format!("{method} {path}");
        let reply = web::request(addr, method, path, b"")
            .await
            .with_context(|| name.clone())?;
        report
            .answers
            .push((name.clone(), Answer::Status(reply.status)));
        anyhow::ensure!(
            reply.status == expected,
            "{name} got {}, expected {expected} ({report})",
            reply.status
        );
        let body: serde_json::Value = reply.json().with_context(|| name.clone())?;
        anyhow::ensure!(body["error"].is_string(), "{name}: no JSON error in {body}");
    }
    Ok(report)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let (soft, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)
            .with_context(|| format!("setrlimit(RLIMIT_NOFILE) to the hard limit {hard}"))?;
    }
    Ok(hard.max(soft))
}

/// Connections that never send a byte, held open until dropped.
pub struct IdleFlood {
    /// Connections the server has not closed (as far as we have looked).
    open: Vec<std::net::TcpStream>,
    opened: usize,
    closed: usize,
    failed: usize,
}

impl IdleFlood {
    /// Opens `n` connections to `addr`, [`FLOOD_BATCH`] at a time, and returns once every
    /// connect has finished. Connects the server refuses or resets (or that take longer than
    /// [`CONNECT_WAIT`]) are counted in [`IdleFlood::failed`]; any other error (e.g. this
    /// process out of descriptors or ports) fails. Raises this process's open-file limit first.
    pub async fn open(addr: SocketAddr, n: usize) -> anyhow::Result<IdleFlood> {
        raise_nofile_limit()?;
        let hard = nofile_hard()?;
        let needed = u64::try_from(n)
            .unwrap_or(u64::MAX)
            .saturating_add(FD_HEADROOM);
        anyhow::ensure!(
            hard >= needed,
            "an idle flood of {n} connections needs an open-file hard limit of at least {needed} \
             ({n} + {FD_HEADROOM} for the rest of the test); it is {hard} (raise it with \
             `ulimit -Hn` or the container's nofile limit)"
        );
        let mut flood = IdleFlood {
            open: Vec::with_capacity(n),
            opened: 0,
            closed: 0,
            failed: 0,
        };
        let mut left = n;
        while left > 0 {
            let batch = left.min(FLOOD_BATCH);
            left -= batch;
            let connects =
                (0..batch).map(|_| tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(addr)));
            for result in futures::future::join_all(connects).await {
                match result {
                    Ok(Ok(stream)) => {
                        // Off the reactor: 10 000 registrations would only cost, and
                        // `closed_by_server` reads the (non-blocking) sockets directly.
                        flood.open.push(stream.into_std().context("deregistering")?);
                        flood.opened += 1;
                    }
                    Ok(Err(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionRefused
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        flood.failed += 1;
                    }
                    Ok(Err(e)) => {
                        return Err(e).with_context(|| {
                            format!("flood connect {} of {n} to {addr}", flood.opened + 1)
                        });
                    }
                    Err(_) => flood.failed += 1,
                }
            }
        }
        Ok(flood)
    }

    /// Connections established (the server may have closed some since).
    pub fn len(&self) -> usize {
        self.opened
    }

    pub fn is_empty(&self) -> bool {
        self.opened == 0
    }

    /// Connects that failed (refused, reset or timed out).
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// How many established connections the server has closed or reset so far. Looks without
    /// waiting (a non-blocking read on each socket still open), and closes those on our side.
    pub async fn closed_by_server(&mut self) -> usize {
        let mut buf = [0u8; 512];
        let before = self.open.len();
        self.open.retain_mut(|stream| {
            loop {
                match stream.read(&mut buf) {
                    // Nothing is expected; anything sent (an error page) is skipped.
                    Ok(n) if n > 0 => continue,
                    Ok(_) => return false,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
        });
        self.closed += before - self.open.len();
        self.closed
    }
}

fn nofile_hard() -> anyhow::Result<u64> {
    let (_, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    Ok(hard)
}

/// A `GET /leader/watch` client that read the response head and then never reads again, with a
/// small receive buffer so that the sidecar's sends back up at once. Closed on drop.
pub struct StalledWatcher {
    _stream: TcpStream,
    /// The response head as received (status line and headers).
    pub head: String,
}

impl StalledWatcher {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Before connecting, so that the window offered in the handshake is small too.
        socket
            .set_recv_buffer_size(STALLED_RECV_BUFFER)
            .context("SO_RCVBUF")?;
        let mut stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let request = format!(
            "GET /leader/watch HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        // One byte at a time, so that nothing of the body is taken off the socket.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(ANSWER_WAIT, stream.read(&mut byte))
                .await
                .context("no response head to GET /leader/watch")??;
            anyhow::ensure!(
                n == 1,
                "GET /leader/watch closed before the end of the head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
            anyhow::ensure!(head.len() <= 16 * 1024, "response head over 16 KiB");
        }
        let head = String::from_utf8(head).context("response head is not UTF-8")?;
        let status = head.split(' ').nth(1).unwrap_or_default();
        anyhow::ensure!(
            status == "200",
            "GET /leader/watch answered {:?}",
            head.lines().next().unwrap_or_default()
        );
        Ok(StalledWatcher {
            _stream: stream,
            head,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode, header};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::{Frame, Incoming};
    use plumbing::server::{Body, Slots, error, serve_with, text};
    use tokio::net::TcpListener;

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn case(name: &str) -> GarbageCase {
        garbage_cases()
            .into_iter()
            .find(|c| c.name.contains(name))
            .unwrap_or_else(|| panic!("no case {name}"))
    }

    #[test]
    fn the_garbage_is_what_it_says() {
        let cases = garbage_cases();
        assert!(cases.len() >= 8);
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "names are unique");
        assert!(cases.iter().all(|c| !c.bytes.is_empty()));

        let random = case("random");
        assert_eq!(random.bytes.len(), 512);
        assert_eq!(random.bytes[0], 0, "not a token character");
        assert_eq!(random.bytes, case("random").bytes, "deterministic");

        let no_version = case("without HTTP version").bytes;
        let line = no_version.split(|b| *b == b'\r').next().unwrap_or_default();
        assert_eq!(
            line.split(|b| *b == b' ').count(),
            2,
            "method and path only"
        );

        let no_colon = String::from_utf8(case("without colon").bytes).expect("text");
        assert!(no_colon.starts_with("GET /leader HTTP/1.1\r\n"));
        assert!(
            no_colon
                .split("\r\n")
                .skip(1)
                .any(|l| !l.is_empty() && !l.contains(':'))
        );

        let big = case("64 KiB").bytes;
        assert!(big.len() > 64 * 1024 && big.ends_with(b"\r\n\r\n"));

        assert!(case("9.9").bytes.starts_with(b"GET /leader HTTP/9.9\r\n"));

        let cut = case("truncated");
        assert!(cut.then_close);
        assert!(!cut.bytes.windows(4).any(|w| w == b"\r\n\r\n"));

        let long = case("content-length");
        assert!(long.then_close);
        let text = String::from_utf8(long.bytes).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
        assert!(head.starts_with("POST /leader/yield HTTP/1.1"));
        assert!(head.contains("content-length: 99999999"));
        assert!(body.len() < 99_999_999 && !body.is_empty());

        let tls = case("TLS").bytes;
        assert_eq!(&tls[..3], &[0x16, 0x03, 0x01], "handshake record");
        assert_eq!(
            usize::from(u16::from_be_bytes([tls[3], tls[4]])),
            tls.len() - 5,
            "record length"
        );
        assert_eq!(tls[5], 0x01, "ClientHello");
        assert!(tls.windows(9).any(|w| w == b"localhost"));
    }

    #[test]
    fn answers_are_classified_and_judged() {
        let reply = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(classify(reply).expect("parsed"), Answer::Status(400));
        assert_eq!(classify(b"").expect("empty"), Answer::Closed);
        assert!(classify(b"\x15\x03\x03").is_err(), "not HTTP");
        assert!(Answer::Closed.acceptable());
        assert!(Answer::Status(404).acceptable());
        assert!(Answer::Status(431).acceptable());
        for code in [101, 200, 204, 302, 500, 503] {
            assert!(!Answer::Status(code).acceptable(), "{code}");
        }
        let report = GarbageReport {
            answers: vec![
                ("a".into(), Answer::Status(400)),
                ("b".into(), Answer::Closed),
            ],
        };
        assert_eq!(report.to_string(), "a: 400, b: closed");
    }

    /// The sidecar's connection loop with a handler shaped like the leader API: `/leader`
    /// takes GET only, `/leader/yield` refuses bodies over 1 KiB, `/leader/watch` streams
    /// forever, anything else is 404.
    async fn fake_api(max: usize) -> (SocketAddr, Arc<Slots>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let slots = Slots::new(max);
        let handler = |req: Request<Incoming>| async move {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match (req.method().clone(), req.uri().path()) {
                (_, _) if declared.is_some_and(|n| n > 1024) => {
                    error(StatusCode::PAYLOAD_TOO_LARGE, "too large")
                }
                (Method::GET, "/leader") => text(StatusCode::OK, "application/json", "{}".into()),
                (_, "/leader") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
                (Method::GET, "/leader/watch") => {
                    let events = futures::stream::repeat_with(|| {
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                            b"event: leader\ndata: {\"is_leader\":true}\n\n",
                        )))
                    });
                    let body: Body = BodyExt::boxed_unsync(StreamBody::new(events));
                    Response::new(body)
                }
                _ => error(StatusCode::NOT_FOUND, "no such path"),
            }
        };
        tokio::spawn(serve_with(listener, slots.clone(), None, handler));
        (addr, slots)
    }

    async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn garbage_against_the_connection_loop() {
        let (addr, _slots) = fake_api(64).await;
        let report = garbage(addr).await.expect("garbage is refused");
        eprintln!("{report}");
        let answer = |name: &str| {
            report
                .answers
                .iter()
                .find(|(n, _)| n.contains(name))
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| panic!("no answer for {name}: {report}"))
        };
        assert_eq!(answer("random"), Answer::Status(400), "{report}");
        assert_eq!(answer("9.9"), Answer::Status(400), "{report}");
        assert_eq!(answer("truncated"), Answer::Closed, "{report}");
        assert_eq!(answer("content-length"), Answer::Status(413), "{report}");
        assert_eq!(answer("DELETE /leader"), Answer::Status(405), "{report}");
        assert_eq!(report.answers.len(), garbage_cases().len() + 2);
    }

    #[tokio::test]
    async fn garbage_fails_on_a_server_that_accepts_anything() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let handler =
            |_req: Request<Incoming>| async { text(StatusCode::OK, "text/plain", "ok".into()) };
        tokio::spawn(plumbing::server::serve(listener, 64, None, handler));
        let err = garbage(addr)
            .await
            .expect_err("200 for a POST with a huge body");
        assert!(err.to_string().contains("not a 4xx"), "{err:#}");
    }

    #[tokio::test]
    async fn an_idle_flood_sees_the_server_close_what_it_cannot_hold() {
        const MAX: usize = 4;
        const N: usize = 40;
        let (addr, slots) = fake_api(MAX).await;
        let mut flood = IdleFlood::open(addr, N).await.expect("flood");
        assert_eq!((flood.len(), flood.failed()), (N, 0));
        wait_until("the server to accept the whole flood", async || {
            slots.admitted() == N as u64
        })
        .await;
        // The server holds at most MAX of them; every other one was evicted.
        wait_until("the evicted connections to be seen closed", async || {
            flood.closed_by_server().await == N - MAX
        })
        .await;
        assert_eq!(slots.unproven(), MAX);
        // A request still gets through, and evicts one more.
        let reply = web::get(addr, "/leader").await.expect("GET /leader");
        assert_eq!(reply.status, 200);
        wait_until("one more eviction", async || {
            flood.closed_by_server().await == N - MAX + 1
        })
        .await;
        drop(flood);
        wait_until("every slot to be free", async || slots.open() == 0).await;
    }

    #[tokio::test]
    async fn a_stalled_watcher_holds_its_stream_without_reading() {
        let (addr, slots) = fake_api(8).await;
        let watcher = StalledWatcher::open(addr).await.expect("watcher");
        assert!(watcher.head.starts_with("HTTP/1.1 200"), "{}", watcher.head);
        // Others are still served while its stream is backed up.
        assert_eq!(web::get(addr, "/leader").await.expect("GET").status, 200);
        assert_eq!(
            (slots.open(), slots.unproven()),
            (1, 0),
            "the stream is proven"
        );
        drop(watcher);
        wait_until("the stream to close", async || slots.open() == 0).await;
    }
}
