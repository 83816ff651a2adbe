//! Keeps the [`LeadershipGate`](crate::LeadershipGate) in step with the sidecar: holds
//! `/leader/watch` open for prompt revocations and promotions, sends `GET /leader` for grants
//! (see the safety argument in [`gate`](crate::gate)), and polls every poll interval while the
//! stream is unavailable.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::contract::LeaderStatus;
use crate::gate::{GatePublisher, GateState, Ticket};

/// Why talking to the sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the sidecar: {0}")]
    Unreachable(String),
    #[error("the sidecar answered {0}")]
    Status(u16),
    #[error("unexpected answer from the sidecar: {0}")]
    Body(String),
    #[error("the sidecar did not answer within {0:?}")]
    Timeout(Duration),
}

/// A stream of leadership events.
pub type Events = BoxStream<'static, Result<LeaderStatus, SourceError>>;

/// Where leadership comes from: the sidecar over HTTP ([`SidecarClient`](crate::SidecarClient))
/// or, in tests, a fake.
pub trait LeaderSource: Clone + Send + Sync + 'static {
    /// `GET /leader`.
    fn get(&self) -> impl Future<Output = Result<LeaderStatus, SourceError>> + Send;
    /// Opens `GET /leader/watch`.
    fn watch(&self) -> impl Future<Output = Result<Events, SourceError>> + Send;
}

/// What the stream task tells the follower.
enum StreamNews {
    Event(LeaderStatus),
    Lost(String),
}

/// The follower loop wakes at least this often, so that
/// [`LeadershipGate::follower_idle`](crate::LeadershipGate::follower_idle) shows it is alive.
const MAX_IDLE: Duration = Duration::from_secs(1);

type Answer = Pin<Box<dyn Future<Output = Result<LeaderStatus, SourceError>> + Send>>;

/// Runs until the process exits, publishing every change of the gate's view. `poll_interval`
/// paces `GET /leader` while the stream is unavailable, and bounds each request.
pub async fn follow<S: LeaderSource>(source: S, poll_interval: Duration, publisher: GatePublisher) {
    let mut state = GateState::new(poll_interval);
    let (news_tx, mut news) = mpsc::channel(16);
    let stream_task = tokio::spawn(hold_stream(source.clone(), poll_interval, news_tx));
    let _abort_stream = AbortOnDrop(stream_task);
    let mut in_flight: Option<(Ticket, Answer)> = None;
    let mut was_reachable = true;
    loop {
        let now = Instant::now();
        publisher.beat(now);
        publisher.publish(state.view());
        if state.reachable() != was_reachable {
            was_reachable = state.reachable();
            if was_reachable {
                tracing::info!("sidecar reachable");
            }
        }
        let due = state.poll_due(now);
        let expiry = state.grant(now).map(|g| g.until);
        tokio::select! {
            biased;
            Some(n) = news.recv() => match n {
                StreamNews::Event(status) => state.on_stream_event(&status),
                StreamNews::Lost(why) => {
                    if state.stream_up() {
                        tracing::warn!(reason = %why, "leader stream lost; polling until it is back");
                    }
                    state.on_stream_lost();
                }
            },
            answer = async {
                match in_flight.as_mut() {
                    Some((_, fut)) => fut.await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((ticket, _)) = in_flight.take() else { continue };
                match answer {
                    Ok(status) => state.on_answer(ticket, &status),
                    Err(e) => {
                        if state.reachable() {
                            tracing::warn!(error = %e, "leadership request failed: not leader");
                        }
                        was_reachable = false;
                        state.on_poll_failed(ticket);
                    }
                }
            }
            () = sleep_until_some(due) => {
                // The send instant is read before the request exists, so it precedes the send.
                let ticket = state.poll_sent(Instant::now());
                let source = source.clone();
                let timeout = poll_interval;
                in_flight = Some((ticket, Box::pin(async move {
                    tokio::time::timeout(timeout, source.get())
                        .await
                        .unwrap_or(Err(SourceError::Timeout(timeout)))
                })));
            }
            () = sleep_until_some(expiry) => {}
            () = tokio::time::sleep(MAX_IDLE) => {}
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Holds `/leader/watch` open, reconnecting every poll interval after a failure.
async fn hold_stream<S: LeaderSource>(source: S, retry: Duration, news: mpsc::Sender<StreamNews>) {
    loop {
        let why = match source.watch().await {
            Ok(mut events) => loop {
                match events.next().await {
                    Some(Ok(status)) => {
                        if news.send(StreamNews::Event(status)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the sidecar closed the stream".to_owned(),
                }
            },
            Err(e) => e.to_string(),
        };
        if news.send(StreamNews::Lost(why)).await.is_err() {
            return;
        }
        tokio::time::sleep(retry).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
