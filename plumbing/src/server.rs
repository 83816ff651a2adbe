//! The bounded HTTP/1.1 server every port of the workspace runs on: one small connection loop
//! with bounded connections (where idle connections make room for new ones, see [`Slots`]),
//! bounded header sizes and idle timeouts, and the few response helpers the handlers share.
//! Errors are JSON [`ErrorBody`] answers, as `docs/leader-api.md` specifies for every port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use leader_client::contract::ErrorBody;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The body type of every response served here.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Headers larger than this close the connection.
const MAX_HEADER_BUF: usize = 16 * 1024;
/// Idle keep-alive connections and slow headers are dropped after this (see [`Slots`], and the
/// test `idle_timeout_is_hypers_header_read_timeout`, which pins how hyper applies it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the process exits, at most `max_connections` at once (see
/// [`Slots`] for what happens at the cap).
pub async fn serve<H, F>(
    listener: TcpListener,
    max_connections: usize,
    send_buffer: Option<usize>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, Slots::new(max_connections), send_buffer, handler).await;
}

/// [`serve`] with slots the caller can observe (tests count the open connections).
pub async fn serve_with<H, F>(
    listener: TcpListener,
    slots: Arc<Slots>,
    send_buffer: Option<usize>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((slot, evicted)) = slots.admit() else {
            tracing::debug!(
                "connection limit reached and every connection is in use; closing a new connection"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(size) = send_buffer {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size);
        }
        let handler = handler.clone();
        tokio::spawn(async move {
            let eviction = slot.eviction.clone();
            let service_slot = slot.clone();
            let service = service_fn(move |req| {
                service_slot.prove();
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .max_buf_size(MAX_HEADER_BUF)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                // Eviction first: once told, the connection goes even if bytes are waiting.
                biased;
                () = eviction.notified() => {
                    tracing::debug!("closed a connection that sent no request, to make room for a new one");
                }
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            // The connection future (and the service's reference) is gone; this frees the slot.
            drop(slot);
        });
        if evicted {
            // Let the evicted connection's task run and close its socket before accepting
            // more, so that a flood does not pile up evicted-but-open sockets (file descriptors).
            tokio::task::yield_now().await;
        }
    }
}

/// The connection slots of one listener.
///
/// At most `max` connections are served at once. A connection is *unproven* from its accept
/// until its first request reaches the service function, and *proven* from then on. When all
/// slots are taken, a new connection is still accepted if some connection is unproven: the
/// oldest unproven connection is closed (its hyper connection future is dropped, which closes
/// the socket) and the new one takes its slot. Only when every slot belongs to a proven
/// connection is the new connection closed at once.
///
/// Why: any local process can connect to 127.0.0.1:4040. Without eviction, a process that opens
/// `max` sockets and never writes to them would lock the controller out until the idle timeout
/// (and could start over at once), and the controller reads "unreachable" as "not leader" and
/// pauses. With eviction, such sockets only ever displace each other: a controller's new
/// connection sends its request at once and becomes proven long before `max` further
/// connections have been accepted behind it (the oldest unproven one goes first). Proven
/// connections are never evicted, so an open `/leader/watch` stream (or a keep-alive
/// connection) of the controller is never cut by a flood. What eviction does not cover: a
/// process that sends real requests on `max` connections is served like any client; each idle
/// keep-alive connection is still closed after `IDLE_TIMEOUT` (10 s).
///
/// The idle timeout is hyper's `header_read_timeout`: a connection that sends nothing, an idle
/// keep-alive connection between requests and a client dripping its head a byte at a time are
/// all closed after [`IDLE_TIMEOUT`], without an answer, while a streamed response is not cut.
/// That is hyper's behaviour rather than ours, so `idle_timeout_is_hypers_header_read_timeout`
/// pins it: it fails if a hyper upgrade changes it. The timeout bounds how long one idle socket
/// holds a slot, but not a flood that reopens sockets faster than that, hence the eviction.
///
/// Invariant (checked under one mutex): `open - evicted <= max`, where `open` counts the
/// connections whose task still holds its socket and `evicted` those of them already told to
/// close. Each admitted connection is one `Slot`; dropping it (when the connection task ends,
/// for any reason, including a panic or the runtime shutting down) gives the slot back, so
/// `open` returns to 0 when every connection is gone. Each accept costs O(log n).
pub struct Slots {
    max: usize,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    open: usize,
    evicted: usize,
    next_id: u64,
    /// Unproven connections by accept order (ids only grow), each with its eviction signal.
    unproven: BTreeMap<u64, Arc<Notify>>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            state: Mutex::new(SlotState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // The state stays consistent across a panic (each change is a few plain assignments).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections whose socket is still open (evicted ones until they have closed).
    pub fn open(&self) -> usize {
        self.state().open
    }

    /// Connections that have not sent a request yet and were not evicted.
    pub fn unproven(&self) -> usize {
        self.state().unproven.len()
    }

    /// Connections admitted so far (evicting ones included, closed-at-the-cap ones not).
    pub fn admitted(&self) -> u64 {
        self.state().next_id
    }

    /// A slot for a new connection, evicting the oldest unproven connection at the cap
    /// (`true` then), or `None` when every slot is held by a proven connection.
    fn admit(self: &Arc<Self>) -> Option<(Arc<Slot>, bool)> {
        let mut state = self.state();
        let mut evicted = false;
        if state.open - state.evicted >= self.max {
            let (_, eviction) = state.unproven.pop_first()?;
            // Stores a permit if the task is not waiting yet, so the signal cannot be lost.
            eviction.notify_one();
            state.evicted += 1;
            evicted = true;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.open += 1;
        let eviction = Arc::new(Notify::new());
        state.unproven.insert(id, eviction.clone());
        let slot = Slot {
            slots: self.clone(),
            id,
            proven: AtomicBool::new(false),
            eviction,
        };
        Some((Arc::new(slot), evicted))
    }
}

/// One admitted connection; dropping it frees the slot.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Set (under the slots' lock) only when the connection left `unproven` by sending a request.
    proven: AtomicBool,
    eviction: Arc<Notify>,
}

impl Slot {
    /// Marks the connection proven: it can no longer be evicted. A connection already evicted
    /// stays evicted (it is about to close).
    fn prove(&self) {
        if self.proven.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.slots.state();
        if state.unproven.remove(&self.id).is_some() {
            self.proven.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.state();
        state.open -= 1;
        let was_unproven = state.unproven.remove(&self.id).is_some();
        if !was_unproven && !self.proven.load(Ordering::Relaxed) {
            // Neither waiting nor proven: it was evicted.
            state.evicted -= 1;
        }
    }
}

/// A JSON answer, not cached.
pub fn json<T: Serialize>(code: StatusCode, body: &T) -> Response<Body> {
    json_bytes(code, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON answer from bytes already serialised.
pub fn json_bytes(code: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// A JSON [`ErrorBody`] answer.
pub fn error(code: StatusCode, message: &str) -> Response<Body> {
    json(
        code,
        &ErrorBody {
            error: message.to_owned(),
        },
    )
}

/// A plain answer with the given content type.
pub fn text(code: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// An empty body (for `HEAD`).
pub fn empty() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use futures::FutureExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;

    /// Upper bound for a hung test, never a synchronisation.
    const WAIT: Duration = Duration::from_secs(10);

    /// Senders of the open `/stream` responses, in the order they were opened.
    type Streams = mpsc::UnboundedReceiver<mpsc::UnboundedSender<Bytes>>;

    /// A server on port 0: `/stream` answers with a body the test feeds (after a first chunk
    /// `first`), any other path answers `ok`.
    async fn start(max: usize) -> (SocketAddr, Arc<Slots>, Streams) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let slots = Slots::new(max);
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let handler = move |req: Request<Incoming>| {
            let streams_tx = streams_tx.clone();
            async move {
                if req.uri().path() != "/stream" {
                    return text(StatusCode::OK, "text/plain", "ok\n".into());
                }
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                let _ = tx.send(Bytes::from_static(b"first\n"));
                let _ = streams_tx.send(tx);
                let body = futures::stream::unfold(rx, |mut rx| async move {
                    let chunk = rx.recv().await?;
                    Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
                });
                Response::new(BodyExt::boxed_unsync(StreamBody::new(body)))
            }
        };
        tokio::spawn(serve_with(listener, slots.clone(), None, handler));
        (addr, slots, streams)
    }

    /// Polls `cond` until it holds; fails the test after [`WAIT`].
    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Opens a connection that sends nothing, once the server has admitted it and any
    /// connection it evicted has closed (so that accept order is connect order).
    async fn idle(addr: SocketAddr, slots: &Slots, max: usize) -> TcpStream {
        let before = slots.admitted();
        let open = (slots.open() + 1).min(max);
        let stream = TcpStream::connect(addr).await.expect("connect");
        wait_until("the server to admit an idle connection", || {
            slots.admitted() == before + 1 && slots.open() == open
        })
        .await;
        stream
    }

    /// Reads until `needle` has arrived.
    async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(needle.len()).any(|w| w == needle) {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("read timed out")
                .expect("read");
            assert!(n > 0, "closed before {needle:?}: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// Asserts that the server closed the connection without sending anything.
    async fn assert_closed_silently(stream: &mut TcpStream) {
        let mut got = Vec::new();
        match tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await {
            Ok(Ok(_)) | Ok(Err(_)) => assert!(got.is_empty(), "answered: {got:?}"),
            Err(_) => panic!("the connection was not closed"),
        }
    }

    async fn open_stream(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /stream HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        let head = read_until(&mut s, b"first").await;
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
        s
    }

    #[test]
    fn slots_evict_the_oldest_unproven_connection_and_count_exactly() {
        let slots = Slots::new(2);
        let (a, evicted) = slots.admit().expect("free slot");
        assert!(!evicted);
        let (b, _) = slots.admit().expect("free slot");
        a.prove();
        assert_eq!((slots.open(), slots.unproven()), (2, 1));

        // At the cap: b (the only unproven one) makes room, and is told so.
        let (c, evicted) = slots.admit().expect("b makes room");
        assert!(evicted);
        assert!(b.eviction.notified().now_or_never().is_some());
        assert_eq!((slots.open(), slots.unproven()), (3, 1));
        // Still at the cap (b has not closed yet but no longer counts): c goes next.
        let (d, evicted) = slots.admit().expect("c makes room");
        assert!(evicted);
        // A request that arrives after the eviction does not save c.
        c.prove();
        assert!(!c.proven.load(Ordering::Relaxed));
        d.prove();
        // a and d are proven: a new connection is refused.
        assert!(slots.admit().is_none());
        assert_eq!(slots.open(), 4);

        drop((b, c));
        assert_eq!(slots.open(), 2);
        assert!(
            slots.admit().is_none(),
            "evicted slots are not given back twice"
        );
        drop(a);
        let (e, evicted) = slots.admit().expect("a's slot is free");
        assert!(!evicted);
        drop((d, e));
        let state = slots.state();
        assert_eq!((state.open, state.evicted, state.unproven.len()), (0, 0, 0));
    }

    #[tokio::test]
    async fn idle_connections_make_room_for_a_request() {
        const MAX: usize = 4;
        let (addr, slots, _streams) = start(MAX).await;
        let mut idle_conns = Vec::new();
        for _ in 0..MAX {
            idle_conns.push(idle(addr, &slots, MAX).await);
        }
        assert_eq!((slots.open(), slots.unproven()), (MAX, MAX));

        // A fifth connection with a request is answered; the oldest idle one made room.
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /leader HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, client.read_to_end(&mut answer))
            .await
            .expect("answer timed out")
            .expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with(b"ok\n"), "{answer:?}");
        assert_closed_silently(&mut idle_conns[0]).await;
        wait_until("the answered connection to close", || {
            slots.open() == MAX - 1
        })
        .await;
        assert_eq!(
            slots.unproven(),
            MAX - 1,
            "the younger idle connections stay"
        );

        drop(idle_conns);
        drop(client);
        wait_until("every slot to be free", || slots.open() == 0).await;
        assert_eq!(slots.unproven(), 0);
    }

    #[tokio::test]
    async fn a_flood_of_idle_connections_never_evicts_a_proven_one() {
        const MAX: usize = 4;
        const FLOOD: usize = 20;
        let (addr, slots, mut streams) = start(MAX).await;
        let mut watcher = open_stream(addr).await;
        let feed = streams.recv().await.expect("stream sender");
        assert_eq!((slots.open(), slots.unproven()), (1, 0));

        let mut flood = Vec::new();
        for _ in 0..FLOOD {
            flood.push(idle(addr, &slots, MAX).await);
        }
        // The stream still delivers.
        feed.send(Bytes::from_static(b"after the flood\n"))
            .expect("the response body is still open");
        read_until(&mut watcher, b"after the flood").await;
        // Only the newest idle connections are left.
        assert_eq!((slots.open(), slots.unproven()), (MAX, MAX - 1));
        for conn in &mut flood[..FLOOD - (MAX - 1)] {
            assert_closed_silently(conn).await;
        }

        // Once every slot is proven (three more streams evict the remaining idle ones), a new
        // connection is closed at once, as nothing can make room for it.
        let mut more = Vec::new();
        for _ in 1..MAX {
            more.push(open_stream(addr).await);
        }
        for conn in &mut flood[FLOOD - (MAX - 1)..] {
            assert_closed_silently(conn).await;
        }
        wait_until("the evicted connections to close", || slots.open() == MAX).await;
        assert_eq!(slots.unproven(), 0);
        let mut refused = TcpStream::connect(addr).await.expect("connect");
        assert_closed_silently(&mut refused).await;
        feed.send(Bytes::from_static(b"still here\n"))
            .expect("the response body is still open");
        read_until(&mut watcher, b"still here").await;

        // Clients going away free every slot.
        drop((watcher, more, flood, refused));
        wait_until("every slot to be free", || slots.open() == 0).await;
        assert_eq!(slots.unproven(), 0);
        assert_eq!(slots.state().evicted, 0);
    }

    /// Reads until the server closes the connection; returns what arrived and when it closed.
    async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return (got, Instant::now()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Pins the hyper behaviour that [`Slots`] relies on, on tokio's paused clock (hyper's
    /// timer is tokio's): `header_read_timeout` is armed before the first byte, re-armed after
    /// every response, not pushed back by partial bytes, silent (no 408), and not applied while
    /// a response streams. If a hyper upgrade changes any of it, this fails.
    #[tokio::test(start_paused = true)]
    async fn idle_timeout_is_hypers_header_read_timeout() {
        let (addr, slots, mut streams) = start(8).await;
        let slack = Duration::from_millis(100);
        let closed_at_timeout = |what: &str, from: Instant, at: Instant| {
            let after = at - from;
            assert!(
                after >= IDLE_TIMEOUT && after < IDLE_TIMEOUT + slack,
                "{what}: closed after {after:?}, expected {IDLE_TIMEOUT:?}"
            );
        };

        // A connection that never sends a byte.
        let from = Instant::now();
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let (got, at) = until_closed(&mut silent).await;
        assert!(got.is_empty(), "a silent connection got an answer: {got:?}");
        closed_at_timeout("silent connection", from, at);

        // An idle keep-alive connection, timed from its last response.
        let mut keep = TcpStream::connect(addr).await.expect("connect");
        keep.write_all(b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        read_until(&mut keep, b"ok\n").await;
        let from = Instant::now();
        let (got, at) = until_closed(&mut keep).await;
        assert!(got.is_empty(), "an idle connection got more: {got:?}");
        closed_at_timeout("idle keep-alive connection", from, at);

        // A head dripped a byte a second is cut at the deadline of its first byte.
        let mut drip = TcpStream::connect(addr).await.expect("connect");
        let from = Instant::now();
        let head = b"GET /x HTTP/1.1\r\nhost: test\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut sent = 0;
        let mut buf = [0u8; 64];
        let at = loop {
            if sent < head.len() && drip.write_all(&head[sent..=sent]).await.is_ok() {
                sent += 1;
            }
            match tokio::time::timeout(Duration::from_secs(1), drip.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break Instant::now(),
                Ok(Ok(n)) => panic!("the dripping client got an answer: {:?}", &buf[..n]),
                Err(_) => assert!(sent < head.len(), "the whole head went through"),
            }
        };
        closed_at_timeout("dripping client", from, at);

        // A streamed response outlives the timeout many times over.
        let mut watcher = open_stream(addr).await;
        let feed = streams.recv().await.expect("stream sender");
        tokio::time::sleep(IDLE_TIMEOUT * 3).await;
        feed.send(Bytes::from_static(b"still streaming\n"))
            .expect("the response body is still open");
        read_until(&mut watcher, b"still streaming").await;

        drop((silent, keep, drip, watcher));
        wait_until("every slot to be free", || slots.open() == 0).await;
    }
}
