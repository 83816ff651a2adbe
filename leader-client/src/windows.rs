//! Work that runs only while leadership is granted: [`LeadershipGate::run_while_granted`].
//!
//! An *active window* is the time between a grant arriving and the gate closing for that
//! grant's term. The work of a window is one future; when the window ends, the future is
//! dropped, which cancels everything it was doing (every `.await` in it stops where it is),
//! and only then is `active window ended` logged. So the window in the logs contains every
//! request the work sent in it, which is what the end-to-end suites judge non-overlap by.
//! Dropping is the one cancellation Rust guarantees, whether the work cooperates or not.
//!
//! Dropping cannot take back a request already handed to the socket; that is the residual risk
//! the gate's safety argument discusses (writes carry a `resourceVersion`). Work that writes
//! should also ask [`LeadershipGate::current`] just before each write.

use std::future::Future;
use std::time::Duration;

use crate::gate::{Closed, Grant, LeadershipGate};

/// How long after its work returned on its own a window may open again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Why an active window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowEnd {
    /// The gate closed: revoked, expired, or a new term.
    Closed(Closed),
    /// The work future returned on its own.
    WorkEnded,
    /// The shutdown future resolved.
    Shutdown,
}

impl WindowEnd {
    /// The `reason` field of the `active window ended` log line.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowEnd::Closed(c) => c.as_str(),
            WindowEnd::WorkEnded => "work ended",
            WindowEnd::Shutdown => "shutdown",
        }
    }
}

impl LeadershipGate {
    /// Runs `work(grant)` in every active window until `shutdown` resolves.
    ///
    /// For each grant: logs `active window started` (with `term`), polls `work(grant)` until
    /// the gate closes for that term (or the work returns, or `shutdown` resolves), drops it,
    /// calls `ended(&grant, why)` (for metrics or a log line of the caller's own, while no work
    /// runs) and logs `active window ended` (with `term` and `reason`). A window open at
    /// shutdown is closed the same way before this returns; after it returns nothing of `work`
    /// runs any more, so the caller can yield leadership to the sidecar at once. Work that
    /// returns on its own is started again after [`RESTART_DELAY`] while the grant stands.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use futures::FutureExt;
    /// use leader_client::{LeadershipGate, SidecarClient, follow};
    ///
    /// # async fn controller() -> Result<(), String> {
    /// let sidecar = SidecarClient::new("http://127.0.0.1:4040")?;
    /// let (publisher, gate) = LeadershipGate::new();
    /// tokio::spawn(follow(sidecar.clone(), Duration::from_secs(1), publisher));
    ///
    /// let shutdown = tokio::signal::ctrl_c().map(|_| ());
    /// gate.run_while_granted(
    ///     shutdown,
    ///     |grant| {
    ///         let gate = gate.clone();
    ///         async move {
    ///             // A full resync: list everything and reconcile it, then follow changes.
    ///             loop {
    ///                 // ... compute a write ...
    ///                 if gate.current().is_none() {
    ///                     break; // the grant ended: never write without one
    ///                 }
    ///                 // ... send it ...
    /// #               tokio::time::sleep(Duration::from_secs(1)).await;
    ///             }
    ///             let _ = grant.term;
    ///         }
    ///     },
    ///     |grant, why| eprintln!("term {:?} ended: {}", grant.term, why.as_str()),
    /// )
    /// .await;
    ///
    /// // Our work has stopped: let another pod lead now rather than when our grant runs out.
    /// sidecar.yield_leadership().await.map_err(|e| e.to_string())?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_while_granted<W, Fut>(
        &self,
        shutdown: impl Future<Output = ()>,
        mut work: W,
        mut ended: impl FnMut(&Grant, WindowEnd),
    ) where
        W: FnMut(Grant) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut gate = self.clone();
        tokio::pin!(shutdown);
        loop {
            let grant = tokio::select! {
                g = gate.opened() => g,
                () = &mut shutdown => return,
            };
            let term = grant.term;
            tracing::info!(term, "active window started");
            let why = {
                let work = work(grant);
                tokio::select! {
                    closed = gate.closed(term) => WindowEnd::Closed(closed),
                    () = work => WindowEnd::WorkEnded,
                    () = &mut shutdown => WindowEnd::Shutdown,
                }
                // Leaving this block drops the work future: nothing of it runs from here on.
            };
            ended(&grant, why);
            tracing::info!(term, reason = why.as_str(), "active window ended");
            match why {
                WindowEnd::Shutdown => return,
                // Start the work again while the grant stands (a leader must not sit idle),
                // but not in a hot loop if it keeps returning at once.
                WindowEnd::WorkEnded => tokio::select! {
                    () = tokio::time::sleep(RESTART_DELAY) => {}
                    () = &mut shutdown => return,
                },
                WindowEnd::Closed(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::{oneshot, watch};
    use tokio::time::Instant;

    use super::*;
    use crate::gate::{GateView, Grant};

    /// Upper bound for a wait on the paused clock; reaching it means the test failed.
    const LIMIT: Duration = Duration::from_secs(60);

    fn grant(term: i32, valid_for: Duration) -> GateView {
        let now = Instant::now();
        GateView {
            grant: Some(Grant {
                term: Some(term),
                sent_at: now,
                until: now + valid_for,
            }),
            reachable: true,
        }
    }

    /// What the work and the callback saw, in order, and how many lines so far (to wait on).
    #[derive(Default)]
    struct Lines {
        lines: Mutex<Vec<String>>,
        count: watch::Sender<usize>,
    }

    type Journal = Arc<Lines>;

    fn note(journal: &Journal, line: String) {
        let mut lines = journal.lines.lock().expect("journal");
        lines.push(line);
        journal.count.send_replace(lines.len());
    }

    /// Waits until the journal has `n` lines (the paused clock runs on meanwhile, so a grant
    /// can run out); fails the test after [`LIMIT`].
    async fn wait_lines(journal: &Journal, n: usize) {
        let mut count = journal.count.subscribe();
        tokio::time::timeout(LIMIT, count.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} journal lines: {:?}", journal.lines.lock()))
            .expect("the journal is alive");
    }

    /// Work that notes when it starts and when it is dropped (cancelled).
    fn work(
        journal: &Journal,
    ) -> impl FnMut(Grant) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        let journal = journal.clone();
        move |grant| {
            let journal = journal.clone();
            Box::pin(async move {
                struct Dropped(Journal, Option<i32>);
                impl Drop for Dropped {
                    fn drop(&mut self) {
                        note(&self.0, format!("work {:?} dropped", self.1));
                    }
                }
                let _guard = Dropped(journal.clone(), grant.term);
                note(&journal, format!("work {:?} started", grant.term));
                std::future::pending::<()>().await;
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_only_inside_windows_and_is_dropped_before_the_end_is_reported() {
        let (publisher, gate) = LeadershipGate::new();
        let journal: Journal = Arc::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = {
            let journal = journal.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run_while_granted(
                    async {
                        let _ = stopped.await;
                    },
                    work(&journal),
                    |g, why| note(&journal, format!("ended {:?} {}", g.term, why.as_str())),
                )
                .await;
            })
        };
        publisher.publish(grant(3, Duration::from_secs(2)));
        wait_lines(&journal, 1).await;
        // Revoked by the sidecar.
        publisher.publish(GateView::default());
        wait_lines(&journal, 3).await;
        // A new term replaces the grant directly.
        publisher.publish(grant(4, Duration::from_secs(10)));
        wait_lines(&journal, 4).await;
        publisher.publish(grant(5, Duration::from_secs(2)));
        wait_lines(&journal, 7).await;
        // Runs out: nobody renews it.
        wait_lines(&journal, 9).await;
        publisher.publish(grant(6, Duration::from_secs(10)));
        wait_lines(&journal, 10).await;
        stop.send(()).expect("runner alive");
        tokio::time::timeout(LIMIT, runner)
            .await
            .expect("the runner returned")
            .expect("no panic");

        let seen = journal.lines.lock().expect("journal").clone();
        assert_eq!(
            seen,
            [
                "work Some(3) started",
                "work Some(3) dropped",
                "ended Some(3) revoked",
                "work Some(4) started",
                "work Some(4) dropped",
                "ended Some(4) new term",
                "work Some(5) started",
                "work Some(5) dropped",
                "ended Some(5) expired",
                "work Some(6) started",
                "work Some(6) dropped",
                "ended Some(6) shutdown",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_returns_ends_its_window_and_waits_for_the_next_grant() {
        let (publisher, gate) = LeadershipGate::new();
        let windows = Arc::new(Mutex::new(Vec::new()));
        publisher.publish(grant(1, Duration::from_secs(5)));
        let seen = windows.clone();
        let shutdown = tokio::time::sleep(Duration::from_secs(20));
        tokio::time::timeout(
            LIMIT,
            gate.run_while_granted(
                shutdown,
                |_| async {},
                move |g, why| seen.lock().expect("windows").push((g.term, why)),
            ),
        )
        .await
        .expect("returned at shutdown");
        // The work returned at once, but the grant stood for 5 s: it was started again once a
        // second (at 0, 1, 2, 3 and 4 s), and not after the grant ran out.
        let windows = windows.lock().expect("windows");
        assert_eq!(windows.len(), 5, "{windows:?}");
        assert!(
            windows
                .iter()
                .all(|w| *w == (Some(1), WindowEnd::WorkEnded)),
            "{windows:?}"
        );
    }
}
