//! The follower against a scripted sidecar, on tokio's paused clock: stream promotions,
//! renewals, stream loss with poll fallback, an unreachable and a hung sidecar.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::contract::LeaderStatus;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::gate::{Closed, LeadershipGate};

const POLL: Duration = Duration::from_secs(1);
/// Upper bound for a wait on the paused clock; reaching it means the test failed.
const LIMIT: Duration = Duration::from_secs(120);

fn status(is_leader: bool, term: i32) -> LeaderStatus {
    LeaderStatus {
        is_leader,
        identity: "pod-a".into(),
        holder: Some(if is_leader { "pod-a" } else { "pod-b" }.into()),
        lease: "ns/lease".into(),
        term: Some(term),
        valid_for_ms: if is_leader { 2000 } else { 0 },
        observed_at: None,
        renewed_at: None,
    }
}

/// How the fake answers `GET /leader`.
#[derive(Clone)]
enum Answer {
    Status(LeaderStatus),
    Refuse,
    Hang,
}

#[derive(Default)]
struct Script {
    answer: Option<Answer>,
    gets: Vec<Instant>,
    stream_available: bool,
    stream: Option<UnboundedSender<Result<LeaderStatus, SourceError>>>,
}

#[derive(Clone)]
struct FakeSidecar {
    script: Arc<Mutex<Script>>,
    /// Counts opened streams.
    streams: watch::Sender<usize>,
}

impl FakeSidecar {
    fn new(answer: Answer, stream_available: bool) -> Self {
        Self {
            script: Arc::new(Mutex::new(Script {
                answer: Some(answer),
                stream_available,
                ..Script::default()
            })),
            streams: watch::channel(0).0,
        }
    }

    fn answer(&self, a: Answer) {
        self.script.lock().unwrap().answer = Some(a);
    }

    /// Pushes an event on the open stream.
    fn push(&self, s: LeaderStatus) {
        let script = self.script.lock().unwrap();
        let tx = script.stream.as_ref().expect("a stream is open");
        tx.unbounded_send(Ok(s)).unwrap();
    }

    /// Closes the open stream; new ones open only if `reopen`.
    fn close_stream(&self, reopen: bool) {
        let mut script = self.script.lock().unwrap();
        script.stream = None;
        script.stream_available = reopen;
    }

    fn gets_since(&self, t: Instant) -> usize {
        self.script
            .lock()
            .unwrap()
            .gets
            .iter()
            .filter(|g| **g >= t)
            .count()
    }

    async fn wait_streams(&self, n: usize) {
        let mut rx = self.streams.subscribe();
        tokio::time::timeout(LIMIT, rx.wait_for(|c| *c >= n))
            .await
            .expect("stream opened")
            .unwrap();
    }
}

impl LeaderSource for FakeSidecar {
    async fn get(&self) -> Result<LeaderStatus, SourceError> {
        let answer = {
            let mut s = self.script.lock().unwrap();
            s.gets.push(Instant::now());
            s.answer.clone()
        };
        match answer {
            Some(Answer::Status(st)) => Ok(st),
            Some(Answer::Refuse) | None => Err(SourceError::Unreachable("refused".into())),
            Some(Answer::Hang) => std::future::pending().await,
        }
    }

    async fn watch(&self) -> Result<Events, SourceError> {
        let rx = {
            let mut s = self.script.lock().unwrap();
            if !s.stream_available {
                return Err(SourceError::Unreachable("refused".into()));
            }
            let (tx, rx) = unbounded();
            s.stream = Some(tx);
            rx
        };
        self.streams.send_modify(|c| *c += 1);
        Ok(rx.boxed())
    }
}

fn start(fake: &FakeSidecar) -> LeadershipGate {
    let (publisher, gate) = LeadershipGate::new();
    tokio::spawn(follow(fake.clone(), POLL, publisher));
    gate
}

async fn opened(gate: &mut LeadershipGate) -> crate::gate::Grant {
    tokio::time::timeout(LIMIT, gate.opened())
        .await
        .expect("the gate opened")
}

#[tokio::test(start_paused = true)]
async fn a_stream_promotion_is_confirmed_by_get_and_renewed_until_revoked() {
    let fake = FakeSidecar::new(Answer::Status(status(false, 1)), true);
    let mut gate = start(&fake);
    fake.wait_streams(1).await;
    fake.push(status(false, 1));

    // The sidecar becomes leader; the stream says so and a GET confirms.
    fake.answer(Answer::Status(status(true, 2)));
    fake.push(status(true, 2));
    let grant = opened(&mut gate).await;
    assert_eq!(grant.term, Some(2));

    // Renewed by GETs on the grant's schedule: still open ten seconds later, without any
    // further stream events, at one request per half grant.
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(gate.current().is_some());
    let gets = fake.gets_since(t);
    assert!(
        (9..=11).contains(&gets),
        "{gets} renewals in 10 s with 2 s grants"
    );

    // Revoked by the stream at once, before the grant would run out.
    fake.answer(Answer::Status(status(false, 2)));
    let closing = {
        let mut gate = gate.clone();
        tokio::spawn(async move { gate.closed(Some(2)).await })
    };
    let before = Instant::now();
    fake.push(status(false, 3));
    assert_eq!(closing.await.unwrap(), Closed::Revoked);
    assert_eq!(Instant::now(), before, "no time passed");
}

#[tokio::test(start_paused = true)]
async fn a_standby_with_a_healthy_stream_does_not_poll() {
    let fake = FakeSidecar::new(Answer::Status(status(false, 1)), true);
    let gate = start(&fake);
    fake.wait_streams(1).await;
    fake.push(status(false, 1));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(fake.gets_since(t), 0);
    assert_eq!(gate.current(), None);
    assert!(gate.reachable());
}

#[tokio::test(start_paused = true)]
async fn stream_loss_closes_at_once_then_polling_takes_over() {
    let fake = FakeSidecar::new(Answer::Status(status(true, 5)), true);
    let mut gate = start(&fake);
    fake.wait_streams(1).await;
    fake.push(status(true, 5));
    opened(&mut gate).await;

    let closing = {
        let mut gate = gate.clone();
        tokio::spawn(async move { gate.closed(Some(5)).await })
    };
    fake.close_stream(false);
    assert_eq!(closing.await.unwrap(), Closed::Revoked);

    // No stream: the poll fallback grants again, and keeps polling every interval.
    let g = opened(&mut gate).await;
    assert_eq!(g.term, Some(5));
    fake.answer(Answer::Status(status(false, 6)));
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(gate.current(), None);
    let gets = fake.gets_since(t);
    assert!((9..=12).contains(&gets), "{gets} polls in 10 s at 1 s");

    // The stream comes back and the sidecar leads again: promoted through the stream.
    fake.close_stream(true);
    fake.wait_streams(2).await;
    fake.answer(Answer::Status(status(true, 7)));
    fake.push(status(true, 7));
    assert_eq!(opened(&mut gate).await.term, Some(7));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_sidecar_closes_the_gate_and_marks_it_unreachable() {
    let fake = FakeSidecar::new(Answer::Status(status(true, 1)), false);
    let mut gate = start(&fake);
    opened(&mut gate).await;
    assert!(gate.reachable());
    fake.answer(Answer::Refuse);
    let reason = tokio::time::timeout(LIMIT, gate.closed(Some(1)))
        .await
        .unwrap();
    // The renewal half-way through the grant fails: revoked before the grant would run out.
    assert_eq!(reason, Closed::Revoked);
    assert!(!gate.reachable());
}

#[tokio::test(start_paused = true)]
async fn a_hung_sidecar_never_extends_the_grant() {
    let fake = FakeSidecar::new(Answer::Status(status(true, 1)), true);
    let mut gate = start(&fake);
    fake.wait_streams(1).await;
    fake.push(status(true, 1));
    let grant = opened(&mut gate).await;
    // Frozen sidecar: GETs hang, the stream stays open but silent.
    fake.answer(Answer::Hang);
    tokio::time::timeout(LIMIT, gate.closed(Some(1)))
        .await
        .unwrap();
    assert!(
        Instant::now() <= grant.until,
        "closed {:?} after the grant ended",
        Instant::now() - grant.until
    );
    assert_eq!(gate.current(), None);
}
