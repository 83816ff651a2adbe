//! A deterministic, seeded simulator of the whole leader protocol (issue #15): 3–5 pods, each a
//! sidecar and its controller, against a model API server, in virtual time, under faults drawn
//! from the seed. `cargo run -p tests --bin sim -- --seed N` replays one run with its trace;
//! `tests/tests/sim.rs` explores many seeds in CI.
//!
//! # What runs for real
//!
//! The pure state machines of the product, not copies: [`leader_sidecar::elector::Elector`],
//! [`leader_sidecar::leadership::Leadership`] (the grant book), the `/leader` body from
//! [`leader_sidecar::http::status_json`] parsed into `LeaderStatus` as a client parses it, and
//! [`leader_client::gate::GateState`]. `node.rs` drives them the way
//! `sidecar/src/runner.rs` and `leader-client/src/follow.rs` do: one Lease request at a time with
//! its timeout (`--api-timeout` = renew deadline / 2; a renew's timeout is cut at the tenure's
//! end), Lease observations from the standby watch only while the runner waits, the tenure
//! published after each step; `GET /leader` with the send instant read before sending, at most
//! one in flight, timed out after a poll interval; `/leader/watch` events sent as `http.rs`
//! sends them (at once when the tenure, a revocation, the holder or the term changes, else
//! every half grant while granting and every 15 s otherwise), reconnected a poll interval after
//! a loss.
//!
//! # The model
//!
//! - **Time** is discrete-event: a priority queue of timed events, so a run of 26–45 s of virtual
//!   time takes milliseconds. Every process reads its own monotonic clock (`clock.rs`): one
//!   `tokio::time::Instant` taken at the start of a run plus the virtual time scaled by a
//!   constant rate error of at most ±1 % ([`clock::MAX_DRIFT_PPM`]); the real clock is never
//!   read during a run. Sidecars also have a wall clock (random offset of up to an hour, stepped
//!   by faults); wall time only goes into Lease values.
//! - **The API server** (`api.rs`) is a linearizable compare-and-swap store of the one Lease
//!   (resourceVersion preconditions, create → 409 when it exists, 404 on replace of a deleted
//!   Lease), with watches that list first and resume from a resourceVersion. Each sidecar's
//!   link has a delay (0.5–10 ms each way, 0.1–1.5 s when slow) and can lose requests, lose
//!   answers after the commit, hang requests (0.5–4 s, released when the faults stop at the
//!   latest), answer 5xx, be partitioned, or stall its watch silently (events held, connection
//!   open; when it comes back the held events arrive or the connection breaks).
//! - **Faults** (`faults.rs`), 1–10 per run, each on a given pod or on whoever leads when it
//!   starts: the link faults above, SIGSTOP of the sidecar or of the controller (its clock runs
//!   on, it takes no step; timers, answers and stream events queued for it are delivered when it
//!   resumes, in the order they fell due: one of the orders tokio may pick), kill and restart of either process (all state lost, a fresh
//!   `Elector` / `GateState`), loss of the controller's stream, wall-clock steps, an operator who
//!   deletes the Lease or clears `spec.holderIdentity` (merge patch, other fields kept), and 409
//!   storms (another client writing the Lease every 50–250 ms).
//! - **The controller acts** whenever its gate holds a grant valid on its own clock (a frozen
//!   controller counts as acting while its grant lasts); its work is status writes every
//!   100–400 ms and one at the start of each active window, each in flight from its send until
//!   it lands 1–20 ms later (5 %: 20–300 ms).
//!
//! # Invariants (`check.rs`), judged in virtual real time
//!
//! 1. **Safety**: no two controllers act at overlapping times, a status write counting until it
//!    lands.
//! 2. **Terms grow**: every new tenure, by any sidecar, has a term above every earlier one
//!    since the operator last deleted the Lease (a deletion takes the count with it; the
//!    replacement continues from the highest term its creator saw, which `lease-recreated` in
//!    the fault suite checks).
//! 3. **Liveness**: the faults stop at `F0`; from `F = F0 + api_timeout` (by then every request
//!    sent under the faults has its answer or has timed out) some controller is active within
//!    `lease_duration + retry_period + ε` and the same controller stays active to the end of the
//!    run (a 20 s fault-free tail). `ε = max_jitter + poll_interval + 100 ms`: the standby's
//!    random delay, the controller learning of the new tenure by its fallback poll when its stream
//!    is down (an event + `GET` when it is up), and the hops in between; the retry period covers
//!    the standby watch's reconnection after a break. **No stall**: after `F`, a sidecar never
//!    holds a valid tenure for longer than one grant + one poll interval while its controller is
//!    not active.
//!
//! # Not modelled
//!
//! - A candidate that does not know the holder when the operator deletes a held Lease (it
//!   started after the deletion, or the holder acquired between two of its observations): it
//!   cannot wait for a holder it does not know (the case the elector's safety argument, step 5,
//!   leaves to the operator: do not delete a held Lease). So a plan with an operator deletion
//!   has its sidecar kills turned into freezes, and the operator deletes a held Lease only when
//!   every live sidecar knows its holder (else the trace says the delete was skipped).
//! - A suspended VM (or a laptop lid) stops CLOCK_MONOTONIC for every process of the node: a
//!   frozen leader then wakes believing its tenure still runs while the others took over. No
//!   timing-based protocol survives that safely without fencing at the API server, so runs
//!   never stop a clock.
//! - Drift beyond ±1 % and status writes in flight longer than the safety margin
//!   (`lease_duration − renew_deadline`): the protocol cannot guard against those without
//!   fencing either (the gate's documentation says so).
//! - `--consumer-timeout` and yields: `WatcherGuard::drop` reads the real clock, so the model
//!   keeps the consumer timeout off (a consumer is always present).
//! - The informational timestamps of `/leader` (`observed_at`, `renewed_at`) are left out.
//! - Determinism holds for a given platform and lockfile: `SmallRng`'s algorithm may differ on
//!   32-bit targets and between `rand` versions.

pub mod api;
pub mod check;
pub mod clock;
pub mod faults;
pub mod node;
pub mod world;

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leader_sidecar::elector::Timings;

use check::{Bounds, Stats, Violation};
use clock::{MS, Nanos, SEC};

pub const NAMESPACE: &str = "default";
pub const LEASE_NAME: &str = "sim";

/// Trace lines of one run.
pub type Trace = Vec<String>;

/// The protocol's settings in the simulation: the fault suite's fast timings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub timings: Timings,
    /// `--grant`.
    pub grant: Duration,
    /// `--api-timeout` (default: renew deadline / 2).
    pub api_timeout: Duration,
    /// The controller's `--leader-poll-interval`.
    pub poll_interval: Duration,
    /// The fault-free tail of every run.
    pub tail: Nanos,
}

impl Settings {
    /// Lease 3 s, renew deadline 2 s, retry period 500 ms (`testkit::sidecar::FAST_TIMINGS`),
    /// and the sidecar's and the controller's defaults for the rest.
    pub fn fast() -> Self {
        let ms = Duration::from_millis;
        let retry_period = ms(500);
        Settings {
            timings: Timings {
                lease_duration: ms(3000),
                renew_deadline: ms(2000),
                retry_period,
                yield_backoff: ms(3000),
                max_jitter: (retry_period / 10).min(ms(100)),
            },
            grant: ms(2000),
            api_timeout: ms(1000),
            poll_interval: ms(1000),
            tail: 20 * SEC,
        }
    }

    /// `lease_duration + retry_period + ε` (see the module documentation).
    pub fn liveness_bound(&self) -> Nanos {
        let t = &self.timings;
        nanos(t.lease_duration + t.retry_period + t.max_jitter + self.poll_interval) + 100 * MS
    }

    /// One grant and one poll interval.
    pub fn stall_bound(&self) -> Nanos {
        nanos(self.grant + self.poll_interval)
    }
}

fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The outcome of one run.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub pods: usize,
    pub verdict: Result<Stats, Violation>,
    /// Empty unless the run was traced.
    pub trace: Trace,
}

/// Runs one seed.
pub fn run(seed: u64, trace: bool) -> Report {
    let s = Settings::fast();
    let bounds = |faults_end: Nanos, end: Nanos| Bounds {
        faults_end: faults_end + nanos(s.api_timeout),
        end,
        liveness: s.liveness_bound(),
        stall: s.stall_bound(),
    };
    let mut w = world::World::new(seed, s.clone(), trace);
    w.run();
    let verdict = w.check.verdict(bounds(w.faults_end, w.end));
    let mut trace = w.trace.take().unwrap_or_default();
    if !trace.is_empty() {
        trace.push(match &verdict {
            Ok(st) => format!(
                "PASS: {} tenures; one controller active without a break from F + {:.3} s to \
                 the end (F = end of faults + {} ms API timeout)",
                st.tenures,
                st.recovery as f64 / 1e9,
                nanos(s.api_timeout) / MS
            ),
            Err(v) => format!("FAIL: {v}"),
        });
    }
    Report {
        seed,
        pods: w.n(),
        verdict,
        trace,
    }
}

/// How to replay a seed.
pub fn replay_command(seed: u64) -> String {
    format!("cargo run -p tests --bin sim -- --seed {seed}")
}

/// The outcome of many runs.
#[derive(Debug, Default)]
pub struct Summary {
    pub runs: u64,
    /// Failing seeds, in seed order.
    pub failures: Vec<(u64, Violation)>,
    /// The longest time from `F` to a controller active for good, over the passing runs.
    pub max_recovery: Nanos,
}

impl Summary {
    /// How many failures of each kind: `term: 3, overlap: 1`.
    pub fn kinds(&self) -> String {
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for (_, v) in &self.failures {
            match kinds.iter_mut().find(|(k, _)| *k == v.kind()) {
                Some((_, n)) => *n += 1,
                None => kinds.push((v.kind(), 1)),
            }
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        kinds.join(", ")
    }

    /// The first `per_kind` failing seeds of each kind (so that a rare kind is not hidden
    /// behind a common one), each with the command that replays it.
    pub fn examples(&self, per_kind: usize) -> String {
        let mut shown: Vec<&str> = Vec::new();
        let mut out = String::new();
        for (seed, v) in &self.failures {
            if shown.iter().filter(|k| **k == v.kind()).count() >= per_kind {
                continue;
            }
            shown.push(v.kind());
            out.push_str(&format!(
                "seed {seed}: {v}\n  replay: {}\n",
                replay_command(*seed)
            ));
        }
        out
    }
}

/// Runs the seeds of `seeds` on `threads` threads until they are done or `stop()` says so
/// (checked between runs). The result does not depend on the number of threads (except for
/// which seeds ran when stopped early).
pub fn explore(seeds: Range<u64>, threads: usize, stop: &(dyn Fn() -> bool + Sync)) -> Summary {
    let next = AtomicU64::new(seeds.start);
    let total = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut mine = Summary::default();
                loop {
                    if stop() {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let r = run(seed, false);
                    mine.runs += 1;
                    match r.verdict {
                        Ok(st) => mine.max_recovery = mine.max_recovery.max(st.recovery),
                        Err(v) => mine.failures.push((seed, v)),
                    }
                }
                let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                t.runs += mine.runs;
                t.failures.extend(mine.failures);
                t.max_recovery = t.max_recovery.max(mine.max_recovery);
            });
        }
    });
    let mut t = total.into_inner().unwrap_or_else(|p| p.into_inner());
    t.failures.sort_by_key(|(s, _)| *s);
    t
}

/// Threads to explore with: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
