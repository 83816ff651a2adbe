//! `bench`: measures `leader-sidecar` against the in-memory API server (started in this
//! process) with real sidecar and `newresource-controller` processes, and writes
//! `<out>/REPORT.md`, `<out>/report.json` and `<out>/failover.svg`.
//!
//! ```sh
//! cargo build --profile lto -p leader-sidecar -p newresource-controller -p tests --bins
//! cargo run --profile lto -p tests --bin bench -- [--quick | --smoke] [--runs N] [--out bench]
//! ```
//!
//! What it measures (every sidecar has a kubeconfig and token of its own):
//!
//! 1. **Crash failover**: two sidecars with the default timings (15 s lease, 10 s renew
//!    deadline, 2 s retry period; `--quick` and `--smoke`: 3 s / 2 s / 500 ms). Once the standby
//!    names the leader, wait one retry period plus a random part of another (so the kill lands
//!    at a random point of the renew cycle), SIGKILL the leader, and poll the standby's
//!    `GET /leader` every 5 ms until it says `is_leader: true`. The audit log of the API server
//!    also gives the time from the killed leader's last successful renew to the standby's
//!    takeover write. Expected: kill→leader = lease duration − (time since the last renew) plus
//!    the overhead; target ≤ lease duration + 0.5 s.
//!    **With the standby's watch stalled** (`--only stalled-watch`): the same, but once the pair
//!    is set up the in-memory server holds back every watch event of the standby (its watch
//!    stays open and silent, as over a black-holed connection), from before the kill until
//!    the end of the run. The standby learns of renewals only from its own reads (it reads when
//!    the holder looks silent for one and a half retry periods, then every half retry period
//!    once a read shows a renewal its watch never delivered). Target: kill→leader ≤ lease
//!    duration + retry period, every run.
//! 2. **Graceful handover**: two sidecars; the bench plays the leader's controller: it reads the
//!    leader's `/leader` (holding a grant), then sends SIGTERM and at once `POST /leader/yield`,
//!    as a controller does when it shuts down, and polls the standby every 5 ms. Target ≤ 0.5 s.
//! 3. **`/leader` throughput and latency**: one leading sidecar pinned to CPU 0 (`taskset`, or
//!    `sched_setaffinity` on each of its threads); the in-repo load generator on a thread pinned
//!    to CPU 1 keeps 64 keep-alive HTTP/1.1 connections busy with back-to-back `GET /leader`
//!    (1 s warm-up, 10 s measured). Targets ≥ 125k req/s and p99 ≤ 1 ms (the median round).
//!    **Baseline**: a bare hyper 1.x server (`tests/src/bench/baseline.rs`: the same hyper and
//!    tokio, one current-thread runtime as the sidecar's HTTP thread, in a process of its own,
//!    pinned to the same CPU 0) answering the sidecar's own `/leader` body with the same
//!    headers, loaded the same way. The load runs in rounds (3; `--smoke`: 1), each the sidecar
//!    and the baseline back to back (alternating which goes first), and `/leader` is reported
//!    as the ratio of the two throughputs of each round (target: median ≥ 0.9): on a shared,
//!    noisy machine a ratio measured within one round is steadier than absolute figures. If
//!    `wrk` is on `PATH` each round also runs `wrk -t1 -c64 -d10s --latency` (pinned to CPU 1)
//!    against both, giving a second ratio. Also reported: each server's CPU time per request
//!    (from `/proc/<pid>/stat`), which depends less than throughput on what else runs on CPU 0.
//!    Where the difference goes (perf on a symbolized sidecar, strace -c): both servers make
//!    one `recvfrom` and one `writev` per request, and about three quarters of the sidecar's
//!    CPU is the kernel's TCP path; its extra user time (about 1 µs of about 10 µs per
//!    request) is the status JSON (serde_json, about 2.5% of samples), the header-read timeout
//!    (a tokio timer armed and dropped per request, about 1.5%), the handler glue and a few
//!    more allocations.
//! 4. **Peak RSS**: `VmHWM` of every sidecar, read after the load and before each failover
//!    kill or handover, at the end of each request-rate window, and in part 7. Target ≤ 9 MiB.
//! 5. **Lease API requests per minute**, 1 leader with 1, 3 and 10 standbys at default timings:
//!    Lease requests in the server's audit log over a 60 s window, per verb and per role. A
//!    watch counts once, when the server answers it (opens the stream). Target ≤ 35/min.
//! 6. **Startup to leader**: spawn one sidecar on a fresh Lease; time until `/leader` says
//!    `is_leader` (also: until it logged its startup line).
//! 7. **Controllers: peak RSS and one failover as a timeline** (`--only controller`, alias
//!    `failover-timeline`): two pods, each a sidecar (crash-failover timings) and a
//!    `newresource-controller` pointed at it, with the NewResource CRD installed. Once one
//!    controller is active, create 200 NewResources and wait until all are ready; read both
//!    controllers' `VmHWM` (leading and standby) and the sidecars'. Then, at a random point of
//!    the renew cycle, SIGKILL the leading sidecar and wait until the other controller logs
//!    `active window started` and has reconciled all objects again; read `VmHWM` again. The
//!    controllers' logged active windows become a `testkit::timeline::Timeline`, one lane per
//!    pod, with marks at the kill, the killed leader's last renew and the standby's takeover
//!    write (from the audit log), and a span "failover" from the kill to the new window:
//!    `<out>/failover.svg`, shown in REPORT.md, its figures in `details.failover_timeline`.
//!    Controller peak RSS has no target. Any overlap of the two controllers' windows, or a
//!    status write outside its writer's window, fails the bench (the SVG is still written).
//! 8. **Takeover with 10 000 NewResources** (`--only takeover`; `--quick`: 2 000, `--smoke`:
//!    50): the objects are created once; each run (3; `--quick`, `--smoke`: 1) starts two fresh
//!    pods (crash-failover timings), waits until the first leader's controller has visited
//!    every object and all are ready, SIGKILLs its sidecar at a random point of the renew
//!    cycle and, while no one leads (after the old controller logged the end of its window),
//!    bumps the spec, so the generation, of every object. "Every object reconciled by the new
//!    leader" is then observable and means work done: a successful status write by the new
//!    leader's controller (its own API user in the audit log) for every object, and every
//!    object's `status.observedGeneration` equal to its new generation at the end. Reported:
//!    kill → the new controller's window opens (its log line), window open → the last object's
//!    first status write (audit time), and the new leader's `VmHWM`. Each window starts a
//!    fresh kube-runtime `Controller`, so a cold LIST: the share of window open → first status
//!    write (the LIST and the store's initial sync; reconciles wait for the whole LIST) in
//!    window open → all reconciled is reported, with a watcher's initial LIST of all objects
//!    timed alone from the bench (5 times). **Decision on a warm reflector store** kept across
//!    windows (kube-runtime's reflector running while standby; writes still fenced by the
//!    grant; its store possibly stale at window open, so the window must still visit every
//!    object): it could only remove that cold start, and would pay if that share were above
//!    20%. Measured on 2026-12-03 (bench/REPORT.md, 10 000 objects, 3 runs): window open →
//!    first status write 362 ms median (257–462 ms), 6.3% (5.7–10.4%) of window open → all
//!    reconciled (4.48 s; 4.43–5.70 s), itself behind 14.1 s of kill → window open. So it is
//!    not implemented. Even with nothing to change (window open → all 10 000 visited without
//!    a write: 1.0–1.4 s, polled, where a LIST like the takeover windows' 0.26–0.46 s would be
//!    a larger share) it would save a few hundred ms of a 15 s takeover, and it would cost
//!    every standby the store: the leader's VmHWM with 10 000 objects is 22 MiB against
//!    8.7 MiB for a standby without one.
//!
//! `--quick` shortens everything (2 crash runs with a 3 s lease, 3 handovers, 3 rounds of 3 s
//! of load, 10 s windows, 2 startups, one takeover with 2 000 NewResources); `--smoke` is for
//! CI (`tests/tests/bench_smoke.rs`: one run of each, one round of 1 s of load, 5 s windows,
//! 50 NewResources; about 40 s in a debug build) and gives no verdicts.
//! `--only crash,load,...` runs a subset. Verdicts are strict: a failover target must hold for
//! every run (the max), not only the median.
//!
//! The bench locates `leader-sidecar` and `newresource-controller` next to its own executable
//! (`target/lto/`, or `target/debug/` in a test run), or at `$LEADER_SIDECAR_BIN` and
//! `$NEWRESOURCE_CONTROLLER_BIN`.

#[path = "../bench/baseline.rs"]
mod baseline;
#[path = "../bench/load.rs"]
mod load;
#[path = "../bench/report.rs"]
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use jiff::Timestamp;
use kube::api::Api;
use leader_client::contract::{LeaderStatus, YieldResponse};
use newresource_controller::crd::NewResource;
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::apiserver::audit::AuditRecord;
use testkit::cli;
use testkit::cluster::TestCluster;
use testkit::controller::{
    ActiveWindow, WINDOW_ENDED, WINDOW_STARTED, check_writes_inside_windows,
};
use testkit::newresources;
use testkit::pod::{Pod, PodSpec};
use testkit::process::timestamp;
use testkit::sidecar::{Sidecar, SidecarSpec};
use testkit::timeline::{Lane, Mark, Span, Timeline, ms_since};
use testkit::web;
use tokio::time::Instant;

use report::{Row, Summary, round1, show_ms};

/// Benchmarks leader-sidecar: failover, handover, /leader throughput, RSS, Lease request rate.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Args {
    /// Shorter run: 3 s lease for crash runs, fewer runs, 3 s of load, 10 s rate windows.
    #[arg(long, env = "BENCH_QUICK", conflicts_with = "smoke")]
    quick: bool,
    /// For CI: one run of each part, 1 s of load, 5 s rate windows, no verdicts.
    #[arg(long, env = "BENCH_SMOKE")]
    smoke: bool,
    /// Runs of each failover, handover and startup measurement [default: 10, 10, 5;
    /// --quick: 2, 3, 2; --smoke: 1].
    #[arg(long, env = "BENCH_RUNS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: Option<u32>,
    /// Keep-alive connections of the /leader load.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Run only these parts (comma-separated) [default: all].
    #[arg(long, env = "BENCH_ONLY", value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Directory for REPORT.md and report.json.
    #[arg(long, env = "BENCH_OUT", default_value = "bench")]
    out: PathBuf,
    /// Internal: serve this body as the bare hyper baseline of the /leader load (the bench
    /// starts itself so); prints the address and runs until killed.
    #[arg(long = "serve-baseline", hide = true)]
    serve_baseline: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Crash,
    /// Crash failover with the standby's Lease watch stalled (events held, connection open).
    StalledWatch,
    Handover,
    Load,
    Rate,
    Startup,
    /// Two pods with controllers: controller peak RSS and the failover timeline SVG.
    #[value(alias = "failover-timeline")]
    Controller,
    /// Takeover with many NewResources: kill → window open → all reconciled, cold LIST share.
    Takeover,
}

/// Run counts and durations of one mode.
struct Plan {
    mode: &'static str,
    judged: bool,
    crash_runs: u32,
    handover_runs: u32,
    startup_runs: u32,
    /// Timing flags of the crash runs; empty: the sidecar's defaults.
    crash_flags: Vec<String>,
    crash_lease: Duration,
    crash_retry: Duration,
    warmup: Duration,
    measure: Duration,
    /// Rounds of the /leader load, each the sidecar and the baseline back to back.
    load_rounds: u32,
    rate_window: Duration,
    /// NewResources the controllers' part creates.
    objects: usize,
    /// NewResources and runs of the takeover part.
    takeover_objects: usize,
    takeover_runs: u32,
}

impl Plan {
    fn of(args: &Args) -> Self {
        let fast: Vec<String> = testkit::sidecar::FAST_TIMINGS.map(String::from).into();
        let mut plan = if args.smoke {
            Plan {
                mode: "smoke",
                judged: false,
                crash_runs: 1,
                handover_runs: 1,
                startup_runs: 1,
                crash_flags: fast,
                crash_lease: Duration::from_secs(3),
                crash_retry: Duration::from_millis(500),
                warmup: Duration::from_millis(250),
                measure: Duration::from_secs(1),
                load_rounds: 1,
                rate_window: Duration::from_secs(5),
                takeover_objects: 50,
                takeover_runs: 1,
                objects: 50,
            }
        } else if args.quick {
            Plan {
                mode: "quick",
                judged: true,
                crash_runs: 2,
                handover_runs: 3,
                startup_runs: 2,
                crash_flags: fast,
                crash_lease: Duration::from_secs(3),
                crash_retry: Duration::from_millis(500),
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(3),
                load_rounds: 3,
                rate_window: Duration::from_secs(10),
                takeover_objects: 2_000,
                takeover_runs: 1,
                objects: 200,
            }
        } else {
            Plan {
                mode: "full",
                judged: true,
                crash_runs: 10,
                handover_runs: 10,
                startup_runs: 5,
                crash_flags: Vec::new(),
                crash_lease: Duration::from_secs(15),
                crash_retry: Duration::from_secs(2),
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(10),
                load_rounds: 5,
                rate_window: Duration::from_secs(60),
                takeover_objects: 10_000,
                takeover_runs: 3,
                objects: 200,
            }
        };
        if let Some(n) = args.runs {
            (plan.crash_runs, plan.handover_runs, plan.startup_runs) = (n, n, n);
        }
        plan
    }
}

/// Upper bound of any wait for a condition (a hung run fails instead of hanging).
const WAIT: Duration = Duration::from_secs(60);
/// Poll interval of `/leader` while timing a takeover.
const POLL: Duration = Duration::from_millis(5);
/// Standby counts of the request-rate measurement.
const STANDBYS: [usize; 3] = [1, 3, 10];
const RSS_TARGET_KB: u64 = 9 * 1024;
const RATE_TARGET: f64 = 35.0;

struct Bench {
    cluster: TestCluster,
    plan: Plan,
    rows: Vec<Row>,
    details: serde_json::Map<String, Value>,
    notes: Vec<String>,
    /// Peak RSS readings: (phase, identity, kB).
    rss: Vec<(String, String, u64)>,
    /// Peak RSS readings of the controllers.
    controller_rss: Vec<ControllerRss>,
    /// Sections of REPORT.md after the results (the failover timeline).
    sections: Vec<report::Section>,
    /// Where the report and its figure go.
    out: PathBuf,
    /// Each sidecar's bearer token, by identity (fault rules match on it).
    tokens: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

/// One `VmHWM` reading of a controller.
struct ControllerRss {
    phase: &'static str,
    process: String,
    /// When read: `leading`, `standby` (has not led yet) or `deposed` (led before).
    role: &'static str,
    kb: u64,
}

fn main() -> ExitCode {
    let mut args: Args = cli::parse_or_exit();
    if let Some(body) = args.serve_baseline.take() {
        return match baseline::serve(body.into_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("baseline server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    testkit::bins::run_tool("bench", async {
        run(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let wants = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let bin = binary("leader-sidecar")?;
    let controller_bin = if wants(Part::Controller) || wants(Part::Takeover) {
        format!(
            ", controller {}",
            binary("newresource-controller")?.display()
        )
    } else {
        String::new()
    };
    let plan = Plan::of(&args);
    let info = report::RunInfo::collect(plan.mode);
    eprintln!(
        "bench ({} mode), sidecar {}{controller_bin}",
        plan.mode,
        bin.display()
    );
    let cluster = TestCluster::start().await?;
    anyhow::ensure!(
        cluster.in_memory().is_some(),
        "the bench needs the in-memory API server; unset E2E_USE_KUBECONFIG"
    );
    let mut bench = Bench {
        cluster,
        plan,
        rows: Vec::new(),
        details: serde_json::Map::new(),
        notes: Vec::new(),
        rss: Vec::new(),
        controller_rss: Vec::new(),
        sections: Vec::new(),
        out: args.out.clone(),
        tokens: Default::default(),
    };
    if wants(Part::Crash) {
        bench.crash(false).await.context("crash failover")?;
    }
    if wants(Part::StalledWatch) {
        bench
            .crash(true)
            .await
            .context("crash failover with the standby's watch stalled")?;
    }
    if wants(Part::Handover) {
        bench.handover().await.context("graceful handover")?;
    }
    if wants(Part::Load) {
        bench
            .load(args.connections as usize)
            .await
            .context("/leader load")?;
    }
    if wants(Part::Rate) {
        bench.rate().await.context("lease request rate")?;
    }
    if wants(Part::Startup) {
        bench.startup().await.context("startup to leader")?;
    }
    if wants(Part::Controller) {
        bench
            .controller()
            .await
            .context("controllers: peak RSS and failover timeline")?;
    }
    if wants(Part::Takeover) {
        bench
            .takeover()
            .await
            .context("takeover with many NewResources")?;
    }
    bench.rss_row();
    bench.controller_rss_row();

    let judged = bench.plan.judged;
    println!("\n{}", report::table_text(&bench.rows, judged));
    for n in &bench.notes {
        println!("note: {n}");
    }
    report::write(
        &args.out,
        &info,
        &bench.rows,
        judged,
        &bench.details,
        &bench.notes,
        &bench.sections,
    )?;
    println!(
        "\nwrote {} and {}",
        args.out.join("REPORT.md").display(),
        args.out.join("report.json").display()
    );
    Ok(())
}

/// The path of workspace binary `name` (see [`testkit::bins::try_binary`]), which must exist:
/// the process helpers that start it would panic, and an `lto` build aborts on panic.
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = testkit::bins::try_binary(name)?;
    anyhow::ensure!(path.is_file(), "{name}: {} is not a file", path.display());
    Ok(path)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Polls `/leader` every [`POLL`] until `pred` holds.
async fn poll(
    sc: &Sidecar,
    timeout: Duration,
    pred: impl Fn(&LeaderStatus) -> bool,
) -> anyhow::Result<LeaderStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = sc.status().await
            && pred(&s)
        {
            return Ok(s);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: condition not met within {timeout:?}",
            sc.identity
        );
        tokio::time::sleep(POLL).await;
    }
}

fn holder_is(s: &LeaderStatus, id: &str) -> bool {
    s.holder.as_deref() == Some(id)
}

impl Bench {
    fn server(&self) -> anyhow::Result<&ApiServer> {
        self.cluster
            .in_memory()
            .context("the in-memory API server is gone")
    }

    async fn spawn(&self, lease: &str, id: &str, flags: &[String]) -> anyhow::Result<Sidecar> {
        let (kubeconfig, token) = self.cluster.client_kubeconfig(id)?;
        if let Some(token) = token {
            self.tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_owned(), token);
        }
        let spec = SidecarSpec::new(&kubeconfig, self.cluster.namespace(), lease, id)
            .args(flags.iter().cloned());
        Sidecar::spawn(spec)
            .await
            .with_context(|| format!("starting sidecar {id}"))
    }

    /// Two sidecars on `lease`; returns (leader, standby) once the standby names the leader.
    async fn pair(&self, lease: &str, flags: &[String]) -> anyhow::Result<(Sidecar, Sidecar)> {
        let a = self.spawn(lease, &format!("{lease}-a"), flags).await?;
        let b = self.spawn(lease, &format!("{lease}-b"), flags).await?;
        let seen = poll(&b, WAIT, |s| {
            s.holder.as_deref().is_some_and(|h| !h.is_empty())
        })
        .await?;
        let (leader, standby) = if holder_is(&seen, &b.identity) {
            (b, a)
        } else {
            (a, b)
        };
        let id = leader.identity.clone();
        poll(&standby, WAIT, |s| !s.is_leader && holder_is(s, &id)).await?;
        Ok((leader, standby))
    }

    fn record_rss(&mut self, phase: &str, sidecars: &[&Sidecar]) {
        for sc in sidecars {
            if let Some(kb) = sc.pid().and_then(|p| load::peak_rss_kb(p).ok()) {
                self.rss.push((phase.to_owned(), sc.identity.clone(), kb));
            }
        }
    }

    /// Successful Lease writes (create/update) on `lease` by `user`, in server order.
    fn writes(&self, lease: &str, user: &str) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(self
            .server()?
            .audit()
            .into_iter()
            .filter(|r| {
                r.resource == "leases"
                    && r.name.as_deref() == Some(lease)
                    && r.user == user
                    && matches!(r.verb.as_str(), "create" | "update")
                    && (200..300).contains(&r.code)
            })
            .collect())
    }

    /// Crash failover; `stalled`: with the standby's watch stalled from before the kill.
    async fn crash(&mut self, stalled: bool) -> anyhow::Result<()> {
        let (lease_d, retry) = (self.plan.crash_lease, self.plan.crash_retry);
        let flags = self.plan.crash_flags.clone();
        let mut runs = Vec::new();
        let (mut took, mut renew_to, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
        let (name, what) = if stalled {
            ("stalled", "crash failover, standby's watch stalled")
        } else {
            ("crash", "crash failover")
        };
        for i in 0..self.plan.crash_runs {
            let lease = format!("{name}-{i}");
            let (mut leader, standby) = self.pair(&lease, &flags).await?;
            let hold = if stalled {
                let token = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&standby.identity)
                    .cloned()
                    .context("the standby has no token of its own")?;
                Some(self.server()?.faults().hold_watches(&token))
            } else {
                None
            };
            // Past the first renew, then a random point of the renew cycle.
            let retry_ms = u64::try_from(retry.as_millis())?;
            tokio::time::sleep(retry + Duration::from_millis(rand::random_range(0..retry_ms)))
                .await;
            self.record_rss("crash failover", &[&leader, &standby]);
            let kill_ms = now_ms();
            let t0 = Instant::now();
            leader.signal(libc::SIGKILL)?;
            poll(&standby, lease_d * 3 + WAIT, |s| s.is_leader).await?;
            let elapsed = ms(t0.elapsed());
            if let Some(rule) = hold {
                self.server()?.faults().remove(rule);
            }
            leader.wait_exit(WAIT).await?;
            self.record_rss("crash failover", &[&standby]);
            let last_renew = self
                .writes(&lease, &leader.identity)?
                .into_iter()
                .rfind(|r| r.at_ms <= kill_ms);
            let takeover = self
                .writes(&lease, &standby.identity)?
                .into_iter()
                .find(|r| r.at_ms >= kill_ms);
            let (since_renew, renew_takeover) = match (&last_renew, &takeover) {
                (Some(r), Some(t)) => (Some(kill_ms - r.at_ms), Some(t.at_ms - r.at_ms)),
                _ => (None, None),
            };
            took.push(elapsed);
            if let Some(rt) = renew_takeover {
                renew_to.push(rt as f64);
            }
            if let Some(sr) = since_renew {
                overhead.push(elapsed - (ms(lease_d) - sr as f64));
            }
            eprintln!(
                "{name} {}/{}: kill→leader {}, last renew→takeover {}",
                i + 1,
                self.plan.crash_runs,
                show_ms(elapsed),
                renew_takeover.map_or("?".into(), |v| show_ms(v as f64)),
            );
            runs.push(json!({
                "kill_to_leader_ms": round1(elapsed),
                "kill_after_last_renew_ms": since_renew,
                "last_renew_to_takeover_ms": renew_takeover,
            }));
        }
        let (target, target_text) = if stalled {
            let t = ms(lease_d) + ms(retry);
            let text = format!(
                "≤ {} (lease {} + retry period {}), every run",
                show_ms(t),
                show_ms(ms(lease_d)),
                show_ms(ms(retry))
            );
            (t, text)
        } else {
            let t = ms(lease_d) + 500.0;
            (
                t,
                format!(
                    "≤ {} (lease {} + 0.5 s), every run",
                    show_ms(t),
                    show_ms(ms(lease_d))
                ),
            )
        };
        let n = took.len();
        if let Some(s) = Summary::of(&took) {
            self.rows.push(Row {
                metric: format!("{what}, SIGKILL → standby is_leader (median / p90 / max, n={n})"),
                measured: s.show_ms(),
                target: target_text,
                met: Some(s.max <= target),
            });
        }
        if let Some(s) = Summary::of(&renew_to) {
            self.rows.push(Row {
                metric: format!(
                    "{what}, leader's last renew → standby's takeover write (median / p90 / max, n={})",
                    s.n
                ),
                measured: s.show_ms(),
                target: format!("≤ {}, every run", show_ms(target)),
                met: Some(s.max <= target),
            });
        }
        let summary = |v: &[f64]| Summary::of(v).map_or(Value::Null, |s| s.json());
        self.details.insert(
            if stalled { "crash_failover_stalled_watch" } else { "crash_failover" }.into(),
            json!({
                "timings": if flags.is_empty() { json!("defaults: --lease-duration 15s --renew-deadline 10s --retry-period 2s") } else { json!(flags.join(" ")) },
                "kill_to_leader_ms": summary(&took),
                "last_renew_to_takeover_ms": summary(&renew_to),
                "overhead_beyond_lease_ms": summary(&overhead),
                "runs": runs,
            }),
        );
        if stalled {
            return Ok(());
        }
        self.notes.push(format!(
            "Crash failover: the kill lands at a random point of the renew cycle, so kill→leader is about \
             lease duration − (time since the last renew) + overhead; `overhead_beyond_lease_ms` in the details \
             is that overhead (median {}), from the API server's audit timestamps of the last renew.",
            Summary::of(&overhead).map_or("?".into(), |s| show_ms(s.median))
        ));
        Ok(())
    }

    async fn handover(&mut self) -> anyhow::Result<()> {
        let mut runs = Vec::new();
        let (mut took, mut release_to) = (Vec::new(), Vec::new());
        for i in 0..self.plan.handover_runs {
            let lease = format!("handover-{i}");
            let (mut leader, standby) = self.pair(&lease, &[]).await?;
            // The controller next to the leader holds a grant, as a working controller does.
            poll(&leader, WAIT, |s| s.is_leader).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.record_rss("graceful handover", &[&leader, &standby]);
            let term_ms = now_ms();
            let t0 = Instant::now();
            leader.signal(libc::SIGTERM)?;
            let reply = web::request(leader.api, "POST", "/leader/yield", b"").await?;
            anyhow::ensure!(reply.status == 200, "yield: HTTP {}", reply.status);
            let _: YieldResponse = reply.json()?;
            poll(&standby, WAIT, |s| s.is_leader).await?;
            let elapsed = ms(t0.elapsed());
            let exit = leader.wait_exit(WAIT).await?;
            let release = self
                .writes(&lease, &leader.identity)?
                .into_iter()
                .find(|r| r.at_ms >= term_ms);
            let takeover = self
                .writes(&lease, &standby.identity)?
                .into_iter()
                .find(|r| r.at_ms >= term_ms);
            let release_takeover = match (&release, &takeover) {
                (Some(r), Some(t)) => Some(t.at_ms - r.at_ms),
                _ => None,
            };
            if let Some(v) = release_takeover {
                release_to.push(v as f64);
            }
            took.push(elapsed);
            eprintln!(
                "handover {}/{}: SIGTERM→leader {}",
                i + 1,
                self.plan.handover_runs,
                show_ms(elapsed)
            );
            runs.push(json!({
                "sigterm_to_leader_ms": round1(elapsed),
                "release_to_takeover_ms": release_takeover,
                "old_leader_exit": exit.code(),
            }));
        }
        if let Some(s) = Summary::of(&took) {
            self.rows.push(Row {
                metric: format!("graceful handover, SIGTERM + yield → standby is_leader (median / p90 / max, n={})", s.n),
                measured: s.show_ms(),
                target: "≤ 500.0 ms, every run".into(),
                met: Some(s.max <= 500.0),
            });
        }
        let summary = |v: &[f64]| Summary::of(v).map_or(Value::Null, |s| s.json());
        self.details.insert(
            "graceful_handover".into(),
            json!({
                "timings": "defaults",
                "sigterm_to_leader_ms": summary(&took),
                "release_to_takeover_ms": summary(&release_to),
                "runs": runs,
            }),
        );
        Ok(())
    }

    /// `/leader` load, in rounds: each round loads the sidecar and then the bare hyper baseline
    /// (odd rounds the other way round), both pinned to CPU 0, with the same generator and
    /// settings; the ratio of each round's two throughputs is the figure judged (≥ 0.9), as
    /// both halves of a round share the machine's state. With `wrk` installed, each round also
    /// runs wrk against both.
    async fn load(&mut self, connections: usize) -> anyhow::Result<()> {
        let pct = |p: Option<f64>| p.map_or("?".to_owned(), |p| format!("{p:.0}%"));
        let sc = self.spawn("load", "load-a", &[]).await?;
        poll(&sc, WAIT, |s| s.is_leader).await?;
        let pid = sc.pid().context("the sidecar exited")?;
        // The baseline answers the sidecar's own /leader body (its size and shape).
        let sample = web::get(sc.api, "/leader").await?;
        anyhow::ensure!(sample.status == 200, "/leader: HTTP {}", sample.status);
        let base = baseline::Baseline::spawn(&sample.body).await?;
        let base_pid = base.pid().context("the baseline server exited")?;
        let base_sample = web::get(base.addr, "/leader").await?;
        let header_names = |r: &web::Reply| -> Vec<String> {
            let mut v: Vec<String> = r
                .headers
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase())
                .filter(|n| n != "connection")
                .collect();
            v.sort();
            v
        };
        let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        let (sidecar_pinning, generator_cpu) = if two_cpus {
            load::pin_process(base_pid, 0).await?;
            (load::pin_process(pid, 0).await?, Some(1))
        } else {
            ("not pinned (fewer than 2 CPUs)".to_owned(), None)
        };
        let allowed = load::cpus_allowed(pid).unwrap_or_default();
        let base_allowed = load::cpus_allowed(base_pid).unwrap_or_default();
        let (warmup, measure, rounds) =
            (self.plan.warmup, self.plan.measure, self.plan.load_rounds);
        eprintln!(
            "load: {connections} connections, {measure:?} after {warmup:?} of warm-up, {rounds} \
             round(s) of sidecar and baseline"
        );
        let use_wrk = load::which("wrk").is_some();
        let (mut side, mut bare) = (Vec::new(), Vec::new());
        let (mut wrk_side, mut wrk_bare) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for is_base in order {
                let (p, addr) = if is_base {
                    (base_pid, base.addr)
                } else {
                    (pid, sc.api)
                };
                let r = load::run(p, addr, connections, warmup, measure, generator_cpu).await?;
                eprintln!(
                    "load round {}/{rounds}: {} {:.0} req/s, p99 {:.0} µs",
                    round + 1,
                    if is_base { "baseline" } else { "sidecar " },
                    r.rps,
                    r.p99_us
                );
                if is_base { bare.push(r) } else { side.push(r) }
            }
            if use_wrk {
                for is_base in order {
                    let addr = if is_base { base.addr } else { sc.api };
                    let out = load::wrk(addr, connections, measure, generator_cpu)
                        .await?
                        .context("wrk vanished")?;
                    let rps = load::wrk_rps(&out);
                    eprintln!(
                        "wrk round {}/{rounds}: {} {}",
                        round + 1,
                        if is_base { "baseline" } else { "sidecar " },
                        rps.map_or("?".into(), |r| format!("{r:.0} req/s"))
                    );
                    if is_base {
                        wrk_bare.push((rps, out))
                    } else {
                        wrk_side.push((rps, out))
                    }
                }
            }
        }
        let still = sc.status().await?;
        anyhow::ensure!(still.is_leader, "the sidecar lost leadership under load");
        self.record_rss("after /leader load", &[&sc]);
        drop(base);

        let rps = |v: &[load::LoadResult]| v.iter().map(|r| r.rps).collect::<Vec<_>>();
        let ratios: Vec<f64> = side.iter().zip(&bare).map(|(s, b)| s.rps / b.rps).collect();
        let (s_sum, b_sum, q) = (
            Summary::of(&rps(&side)).context("no sidecar round")?,
            Summary::of(&rps(&bare)).context("no baseline round")?,
            Summary::of(&ratios).context("no round")?,
        );
        // The round whose sidecar throughput is the median one gives the latencies shown.
        let median_round = |v: &[load::LoadResult]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[a].rps.total_cmp(&v[b].rps));
            idx[idx.len() / 2]
        };
        let r = &side[median_round(&side)];
        let b = &bare[median_round(&bare)];
        let errors: u64 = side.iter().map(|r| r.errors).sum();
        let spread = |s: &Summary, unit: &str, digits: usize| {
            format!(
                "median {:.*}{unit}, min–max {:.*}–{:.*}{unit}, n={}",
                digits, s.median, digits, s.min, digits, s.max, s.n
            )
        };
        self.rows.push(Row {
            metric: format!(
                "/leader throughput ({connections} keep-alive connections, {}s, in-repo generator)",
                measure.as_secs_f64()
            ),
            measured: format!(
                "{:.0} req/s ({}; {errors} errors; CPU: sidecar {}, generator {})",
                s_sum.median,
                spread(&s_sum, " req/s", 0),
                pct(r.sidecar_cpu_pct),
                pct(r.generator_cpu_pct)
            ),
            target: "≥ 125000 req/s".into(),
            met: Some(s_sum.median >= 125_000.0 && errors == 0),
        });
        self.rows.push(Row {
            metric: "/leader latency p50 / p99 / max (the median round)".into(),
            measured: format!(
                "{:.0} µs / {:.0} µs / {:.2} ms",
                r.p50_us,
                r.p99_us,
                r.max_us / 1000.0
            ),
            target: "p99 ≤ 1 ms".into(),
            met: Some(r.p99_us <= 1000.0),
        });
        self.rows.push(Row {
            metric: format!(
                "bare hyper baseline, same load ({} B constant body, same headers; see notes)",
                sample.body.len()
            ),
            measured: format!(
                "{:.0} req/s ({}; CPU: server {}, generator {}); p50 / p99 {:.0} µs / {:.0} µs",
                b_sum.median,
                spread(&b_sum, " req/s", 0),
                pct(b.sidecar_cpu_pct),
                pct(b.generator_cpu_pct),
                b.p50_us,
                b.p99_us
            ),
            target: "— (reference)".into(),
            met: None,
        });
        // Server CPU time per answered request: unlike throughput, it does not depend on how
        // much of CPU 0 other processes of a shared machine take.
        let cpu_us = |r: &load::LoadResult| {
            r.sidecar_cpu_pct
                .filter(|_| r.requests > 0)
                .map(|p| p / 100.0 * r.seconds * 1e6 / r.requests as f64)
        };
        let side_cpu: Vec<f64> = side.iter().filter_map(cpu_us).collect();
        let bare_cpu: Vec<f64> = bare.iter().filter_map(cpu_us).collect();
        let cpu_ratios: Vec<f64> = side
            .iter()
            .zip(&bare)
            .filter_map(|(s, b)| Some(cpu_us(b)? / cpu_us(s)?))
            .collect();
        if let (Some(sc_), Some(bc), Some(cq)) = (
            Summary::of(&side_cpu),
            Summary::of(&bare_cpu),
            Summary::of(&cpu_ratios),
        ) {
            self.rows.push(Row {
                metric: "server CPU time per request, /leader / baseline (per round: baseline ÷ \
                         sidecar, i.e. relative efficiency)"
                    .into(),
                measured: format!(
                    "{:.2} µs / {:.2} µs; ratio {:.3} ({})",
                    sc_.median,
                    bc.median,
                    cq.median,
                    spread(&cq, "", 3)
                ),
                target: "— (≥ 0.9 would match the throughput target on an idle core)".into(),
                met: None,
            });
            self.details.insert(
                "leader_load_cpu_per_request_us".into(),
                json!({
                    "sidecar_rounds": side_cpu.iter().map(|&x| (x * 100.0).round() / 100.0).collect::<Vec<_>>(),
                    "baseline_rounds": bare_cpu.iter().map(|&x| (x * 100.0).round() / 100.0).collect::<Vec<_>>(),
                    "baseline_over_sidecar_rounds": cpu_ratios.iter().map(|&x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                }),
            );
        }
        self.rows.push(Row {
            metric: "/leader ÷ baseline throughput, in-repo generator (per round, sidecar and \
                     baseline back to back)"
                .into(),
            measured: format!("{:.3} ({})", q.median, spread(&q, "", 3)),
            target: "≥ 0.9 (median)".into(),
            met: Some(q.median >= 0.9),
        });
        let wrk_ratios: Vec<f64> = wrk_side
            .iter()
            .zip(&wrk_bare)
            .filter_map(|((s, _), (b, _))| Some(s.as_ref()? / b.as_ref()?))
            .collect();
        let wrk_rps =
            |v: &[(Option<f64>, String)]| v.iter().filter_map(|(r, _)| *r).collect::<Vec<_>>();
        let (ws, wb, wq) = (
            Summary::of(&wrk_rps(&wrk_side)),
            Summary::of(&wrk_rps(&wrk_bare)),
            Summary::of(&wrk_ratios),
        );
        if let (Some(ws), Some(wb), Some(wq)) = (&ws, &wb, &wq) {
            self.rows.push(Row {
                metric: format!(
                    "/leader ÷ baseline throughput, wrk -t1 -c{connections} (per round)"
                ),
                measured: format!(
                    "{:.3} ({}); sidecar {:.0} req/s ({}), baseline {:.0} req/s ({})",
                    wq.median,
                    spread(wq, "", 3),
                    ws.median,
                    spread(ws, " req/s", 0),
                    wb.median,
                    spread(wb, " req/s", 0)
                ),
                target: "≥ 0.9 (median)".into(),
                met: Some(wq.median >= 0.9),
            });
        }
        let mut detail = r.json();
        detail["rounds"] = json!(rounds);
        detail["requests_per_second_rounds"] =
            json!(rps(&side).into_iter().map(round1).collect::<Vec<_>>());
        detail["sidecar_pinning"] = json!(sidecar_pinning);
        detail["sidecar_cpus_allowed"] = json!(allowed);
        detail["warmup_s"] = json!(warmup.as_secs_f64());
        detail["response_body_bytes"] = json!(sample.body.len());
        detail["response_headers"] = json!(header_names(&sample));
        let mut bdetail = b.json();
        bdetail["requests_per_second_rounds"] =
            json!(rps(&bare).into_iter().map(round1).collect::<Vec<_>>());
        bdetail["cpus_allowed"] = json!(base_allowed);
        bdetail["response_body_bytes"] = json!(base_sample.body.len());
        bdetail["response_headers"] = json!(header_names(&base_sample));
        detail["baseline"] = bdetail;
        detail["ratio_to_baseline"] = json!({
            "per_round": ratios.iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            "median": (q.median * 1000.0).round() / 1000.0,
            "wrk_per_round": wrk_ratios.iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        });
        detail["wrk"] = if use_wrk {
            json!({
                "sidecar_rps_rounds": wrk_rps(&wrk_side),
                "baseline_rps_rounds": wrk_rps(&wrk_bare),
                "sidecar_last": wrk_side.last().map(|(_, o)| o.clone()),
                "baseline_last": wrk_bare.last().map(|(_, o)| o.clone()),
            })
        } else {
            json!("not installed")
        };
        self.details.insert("leader_load".into(), detail);
        self.notes.push(format!(
            "/leader load: sidecar pinned with {sidecar_pinning}, Cpus_allowed_list of its \
             threads: {}; generator pinned with {}. CPU use in the measured window (median \
             round): sidecar {}, generator {} of one core; the one near 100% is the bottleneck. \
             In a closed loop of {connections} connections, mean latency = connections / \
             throughput (Little's law): {:.0} µs measured.",
            allowed.join(", "),
            r.pinned,
            pct(r.sidecar_cpu_pct),
            pct(r.generator_cpu_pct),
            r.mean_us,
        ));
        self.notes.push(format!(
            "/leader baseline: a bare hyper 1.x HTTP/1.1 server (the workspace's hyper, \
             hyper-util and tokio; one current-thread runtime, as the sidecar's HTTP thread; \
             TCP_NODELAY) in its own process (the bench binary run with `{}`), pinned to the \
             same CPU (Cpus_allowed_list {}), answering every request with the sidecar's own \
             /leader body ({} B) and the same headers ({} vs the sidecar's {}). It leaves out \
             what the sidecar adds: connection slots, the header-read timer, the 8 KiB send \
             buffer, routing, the grant and its JSON, the request metric. Each round runs the \
             sidecar and the baseline back to back (alternating which goes first), so their \
             ratio is measured under the same machine load.",
            baseline::FLAG,
            base_allowed.join(", "),
            sample.body.len(),
            header_names(&base_sample).join(", "),
            header_names(&sample).join(", "),
        ));
        if !use_wrk {
            self.notes
                .push("wrk is not installed; only the in-repo generator ran.".into());
        }
        Ok(())
    }

    async fn rate(&mut self) -> anyhow::Result<()> {
        let window = self.plan.rate_window;
        let mut detail = serde_json::Map::new();
        for n in STANDBYS {
            let lease = format!("rate-{n}");
            let mut sidecars = Vec::new();
            for k in 0..=n {
                sidecars.push(self.spawn(&lease, &format!("{lease}-{k}"), &[]).await?);
            }
            let refs: Vec<&Sidecar> = sidecars.iter().collect();
            let leader = one_leader(&refs).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprintln!("rate: 1 leader + {n} standbys, {window:?} window");
            let start = now_ms();
            tokio::time::sleep(window).await;
            let end = now_ms();
            self.record_rss("lease request rate", &refs);
            let ids: Vec<&str> = sidecars.iter().map(|s| s.identity.as_str()).collect();
            let records: Vec<AuditRecord> = self
                .server()?
                .audit()
                .into_iter()
                .filter(|r| {
                    r.resource == "leases"
                        && ids.contains(&r.user.as_str())
                        && (start..end).contains(&r.at_ms)
                })
                .collect();
            let per_min = |count: usize| count as f64 * 60_000.0 / (end - start) as f64;
            let mut verbs = std::collections::BTreeMap::<String, usize>::new();
            for r in &records {
                *verbs.entry(r.verb.clone()).or_default() += 1;
            }
            let by_leader = records.iter().filter(|r| r.user == leader).count();
            let total = per_min(records.len());
            let verbs_text: Vec<String> = verbs
                .iter()
                .map(|(v, c)| format!("{v} {:.1}", per_min(*c)))
                .collect();
            self.rows.push(Row {
                metric: format!("Lease API requests/min, 1 leader + {n} standby(s)"),
                measured: format!("{total:.1} ({})", verbs_text.join(", ")),
                target: format!("≤ {RATE_TARGET:.0}/min"),
                met: Some(total <= RATE_TARGET),
            });
            detail.insert(
                format!("standbys_{n}"),
                json!({
                    "window_ms": end - start,
                    "requests": records.len(),
                    "per_minute": round1(total),
                    "per_minute_by_verb": verbs.iter().map(|(v, c)| (v.clone(), json!(round1(per_min(*c))))).collect::<serde_json::Map<_, _>>(),
                    "per_minute_leader": round1(per_min(by_leader)),
                    "per_minute_standbys": round1(per_min(records.len() - by_leader)),
                }),
            );
        }
        detail.insert("timings".into(), json!("defaults"));
        self.details
            .insert("lease_requests".into(), Value::Object(detail));
        Ok(())
    }

    async fn startup(&mut self) -> anyhow::Result<()> {
        let (mut took, mut started) = (Vec::new(), Vec::new());
        for i in 0..self.plan.startup_runs {
            let t0 = Instant::now();
            let sc = self
                .spawn(&format!("startup-{i}"), &format!("startup-{i}"), &[])
                .await?;
            started.push(ms(t0.elapsed()));
            poll(&sc, WAIT, |s| s.is_leader).await?;
            took.push(ms(t0.elapsed()));
            self.record_rss("startup", &[&sc]);
        }
        if let Some(s) = Summary::of(&took) {
            self.rows.push(Row {
                metric: format!(
                    "startup → is_leader on a fresh Lease (median / p90 / max, n={})",
                    s.n
                ),
                measured: s.show_ms(),
                target: "— (no target)".into(),
                met: None,
            });
        }
        let summary = |v: &[f64]| Summary::of(v).map_or(Value::Null, |s| s.json());
        self.details.insert(
            "startup".into(),
            json!({
                "spawn_to_is_leader_ms": summary(&took),
                "spawn_to_startup_log_ms": summary(&started),
                "runs_ms": took.iter().map(|&t| round1(t)).collect::<Vec<_>>(),
            }),
        );
        Ok(())
    }

    /// Starts two pods on `lease` in `ns`, each a sidecar and a `newresource-controller` with
    /// API users of their own, and returns them with the index of the one that leads.
    async fn start_pod_pair(
        &self,
        ns: &str,
        lease: &str,
        names: &[&str; 2],
        flags: &[String],
    ) -> anyhow::Result<(Vec<Pod>, usize)> {
        let mut pods = Vec::new();
        for &name in names {
            let (sidecar_kc, _) = self.cluster.client_kubeconfig(&sidecar_user(name))?;
            let (controller_kc, _) = self.cluster.client_kubeconfig(&controller_user(name))?;
            let spec = PodSpec {
                name: name.to_owned(),
                sidecar: SidecarSpec::new(&sidecar_kc, ns, lease, name).args(flags.iter().cloned()),
                controller_kubeconfig: controller_kc,
                controller_args: vec!["--namespace".into(), ns.to_owned()],
            };
            pods.push(
                Pod::start(spec)
                    .await
                    .with_context(|| format!("starting {name}"))?,
            );
        }
        let leader = one_leader(&[&pods[0].sidecar, &pods[1].sidecar]).await?;
        let l = pods
            .iter()
            .position(|p| p.sidecar.identity == leader)
            .context("the leader is none of the pods")?;
        Ok((pods, l))
    }

    /// Two pods, each a sidecar and a `newresource-controller` pointed at it, on one Lease:
    /// the leader's controller reconciles `plan.objects` NewResources, both controllers'
    /// `VmHWM` is read (leading and standby), then the leading sidecar is SIGKILLed and the
    /// active windows of both controllers around the failover become `failover.svg`.
    async fn controller(&mut self) -> anyhow::Result<()> {
        let (lease_d, retry) = (self.plan.crash_lease, self.plan.crash_retry);
        let flags = self.plan.crash_flags.clone();
        let count = self.plan.objects;
        let client = self.cluster.client();
        let ns = self.cluster.namespace().to_owned();
        newresources::install_crd(&client).await?;
        let lease = "controller-failover";
        // Time 0 of the timeline.
        let t0 = Timestamp::now();
        let (mut pods, l) = self
            .start_pod_pair(&ns, lease, &["pod-a", "pod-b"], &flags)
            .await?;
        let s = 1 - l;
        let (l_name, s_name) = (pods[l].name.clone(), pods[s].name.clone());
        pods[l].controller.wait_log(WINDOW_STARTED, WAIT).await?;
        anyhow::ensure!(
            pods[s].controller.logs_with(WINDOW_STARTED).is_empty(),
            "{s_name}'s controller is active next to the leader {l_name}"
        );

        // Work for the leader's controller.
        let api: Api<NewResource> = Api::namespaced(client, &ns);
        let names = newresources::names("nr", 0..count);
        let created = Instant::now();
        newresources::create(&api, &names).await?;
        newresources::wait_ready(&api, &names, WAIT).await?;
        let ready_ms = ms(created.elapsed());
        let ready_at = Timestamp::now();
        eprintln!(
            "controllers: {count} NewResources ready after {} ({l_name} leads)",
            show_ms(ready_ms)
        );
        let phase = "reconciled, before the failover";
        self.record_controller_rss(phase, &pods[l], "leading")?;
        self.record_controller_rss(phase, &pods[s], "standby")?;
        self.record_rss("controllers' run", &[&pods[l].sidecar, &pods[s].sidecar]);

        // One crash failover, the kill at a random point of the renew cycle.
        let retry_ms = u64::try_from(retry.as_millis())?;
        tokio::time::sleep(retry + Duration::from_millis(rand::random_range(0..retry_ms))).await;
        let starts = pods[s].controller.logs_with(WINDOW_STARTED).len();
        let kill_at = Timestamp::now();
        pods[l].sidecar.signal(libc::SIGKILL)?;
        let started = pods[s]
            .controller
            .wait_logs(WINDOW_STARTED, starts + 1, lease_d * 3 + WAIT)
            .await
            .with_context(|| format!("{s_name}'s controller did not take over"))?;
        let active_at = started
            .get(starts)
            .and_then(timestamp)
            .context("no timestamp on the new window's log line")?;
        // It stops as soon as it loses its sidecar; if it never does, the timeline shows its
        // window still open, overlapping the new one, and the check below fails the bench.
        let ended_at = pods[l]
            .controller
            .wait_log(WINDOW_ENDED, WAIT)
            .await
            .ok()
            .and_then(|line| timestamp(&line));
        pods[l].sidecar.wait_exit(WAIT).await?;
        // Every window starts with a full reconcile; wait for the new leader's.
        wait_reconciled(&pods[s], count).await?;
        let resynced_at = Timestamp::now();
        let phase = "after the failover";
        self.record_controller_rss(phase, &pods[s], "leading")?;
        // Its peak is from when it led: not a standby's figure.
        self.record_controller_rss(phase, &pods[l], "deposed")?;
        self.record_rss("controllers' run", &[&pods[s].sidecar]);

        // The timeline, from the controllers' logs and the API server's audit log.
        let kill_ms = kill_at.as_millisecond();
        let last_renew = self
            .writes(lease, &sidecar_user(&l_name))?
            .into_iter()
            .rfind(|r| r.at_ms <= kill_ms);
        let takeover = self
            .writes(lease, &sidecar_user(&s_name))?
            .into_iter()
            .find(|r| r.at_ms >= kill_ms);
        let mut windows = Vec::new();
        for p in &pods {
            let w = p
                .controller
                .windows()
                .with_context(|| format!("{}'s active windows", p.name))?;
            windows.push((controller_user(&p.name), w));
        }
        let mut marks = vec![
            Mark {
                at_ms: ms_since(t0, ready_at),
                label: format!("{count} NewResources ready"),
                lane: Some(l),
            },
            Mark {
                at_ms: ms_since(t0, kill_at),
                label: format!("kill -9 {l_name} sidecar"),
                lane: Some(l),
            },
        ];
        if let Some(r) = &last_renew {
            marks.push(Mark {
                at_ms: audit_ms(t0, r.at_ms),
                label: "last renew".into(),
                lane: Some(l),
            });
        }
        if let Some(w) = &takeover {
            marks.push(Mark {
                at_ms: audit_ms(t0, w.at_ms),
                label: format!("takeover write ({s_name} sidecar)"),
                lane: Some(s),
            });
        }
        marks.push(Mark {
            at_ms: ms_since(t0, resynced_at),
            label: format!("all {count} reconciled again"),
            lane: Some(s),
        });
        marks.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        let timings = if flags.is_empty() {
            "defaults: --lease-duration 15s --renew-deadline 10s --retry-period 2s".to_owned()
        } else {
            flags.join(" ")
        };
        let timeline = Timeline {
            title: format!(
                "one crash failover: kill -9 of the leading sidecar ({} lease), {count} NewResources",
                show_ms(ms(lease_d))
            ),
            lanes: pods
                .iter()
                .zip(&windows)
                .map(|(p, (_, w))| Lane::from_active_windows(&p.name, w, t0))
                .collect(),
            marks,
            spans: vec![Span {
                from_ms: ms_since(t0, kill_at),
                to_ms: ms_since(t0, active_at),
                label: "failover".into(),
            }],
        };
        let timeline = rounded(timeline);
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let svg = self.out.join(FAILOVER_SVG);
        std::fs::write(&svg, timeline.to_svg())
            .with_context(|| format!("cannot write {}", svg.display()))?;
        eprintln!("controllers: timeline\n{}", timeline.to_text().trim_end());
        let overlaps = timeline.overlaps();
        if let Some(&(a, b, from, to)) = overlaps.first() {
            anyhow::bail!(
                "active windows overlap: {} and {} from {} to {} (ms since the start; see {})",
                timeline.lanes[a].name,
                timeline.lanes[b].name,
                round1(from),
                round1(to),
                svg.display()
            );
        }
        let named: Vec<(&str, Vec<ActiveWindow>)> = windows
            .iter()
            .map(|(who, w)| (who.as_str(), w.clone()))
            .collect();
        let checked = check_writes_inside_windows(&self.server()?.audit(), &named)
            .context("a status write outside its writer's active window")?;

        let failover = ms_since(kill_at, active_at);
        let stopped = ended_at
            .map(|e| ms_since(kill_at, e))
            .context("the old controller's window has no end")?;
        let takeover_ms = takeover.as_ref().map(|w| audit_ms(kill_at, w.at_ms));
        eprintln!(
            "controllers: kill -9 → {s_name}'s controller active {}; {l_name}'s stopped after {}",
            show_ms(failover),
            show_ms(stopped)
        );
        self.rows.push(Row {
            metric: format!(
                "failover timeline (2 pods of sidecar + controller, kill -9 of the leading \
                 sidecar, {} lease)",
                show_ms(ms(lease_d))
            ),
            measured: format!(
                "[{FAILOVER_SVG}]({FAILOVER_SVG}): kill → other controller active {}, old \
                 controller stopped after {}; no overlap",
                show_ms(failover),
                show_ms(stopped)
            ),
            target: "— (an overlap fails the bench)".into(),
            met: None,
        });
        self.sections.push(report::Section {
            title: "Failover timeline".into(),
            markdown: format!(
                "![one failover]({FAILOVER_SVG})\n\n\
                 Two pods, each a `leader-sidecar` and a `newresource-controller` pointed at it, \
                 on one Lease ({timings}). {l_name}'s controller reconciled {count} NewResources \
                 ({} until all were ready); then its sidecar got SIGKILL. Its controller lost the \
                 sidecar's stream and stopped after {}; {s_name}'s sidecar took the Lease when it \
                 expired, and its controller was active {} after the kill. Lanes are the \
                 controllers' logged active windows; they must never overlap.",
                show_ms(ready_ms),
                show_ms(stopped),
                show_ms(failover),
            ),
        });
        self.details.insert(
            "failover_timeline".into(),
            json!({
                "svg": FAILOVER_SVG,
                "timings": timings,
                "objects": count,
                "objects_ready_ms": round1(ready_ms),
                "kill_to_active_ms": round1(failover),
                "kill_to_old_window_end_ms": round1(stopped),
                "kill_to_takeover_write_ms": takeover_ms.map(round1),
                "takeover_write_to_active_ms": takeover_ms.map(|t| round1(failover - t)),
                "last_renew_to_takeover_write_ms": match (&last_renew, &takeover) {
                    (Some(r), Some(t)) => Some(t.at_ms - r.at_ms),
                    _ => None,
                },
                "status_writes_checked": checked,
                "overlaps": overlaps.len(),
                "started_at": t0.to_string(),
                "timeline": timeline,
            }),
        );
        Ok(())
    }

    /// Takeover with many NewResources (`plan.takeover_objects`, 10 000 in a full run): two
    /// fresh pods per run on the objects created once; once the first leader's controller has
    /// visited every object, SIGKILL its sidecar at a random point of the renew cycle; while
    /// no one leads, bump the spec of every object (so its generation), so the new leader has
    /// real work on each: "reconciled by the new leader" means a successful status write by
    /// the new leader's controller (its own API user in the audit log) for every object, and
    /// at the end every object's `status.observedGeneration` equals its bumped generation.
    ///
    /// Figures per run: kill → new window open (the controller's `active window started`
    /// line); window open → all reconciled (the audit time of the last object's first status
    /// write); inside that, the cold start of the window's fresh kube-runtime `Controller`:
    /// window open → its last LIST page answered, and → its first status write (reconciles
    /// wait for the store to be ready, i.e. for the whole LIST); and the new leader's `VmHWM`.
    /// Also, apart from any controller: a watcher's initial LIST of all objects from the bench
    /// (the same client library, pages and typed decoding as the controller's), repeated.
    async fn takeover(&mut self) -> anyhow::Result<()> {
        use futures::{StreamExt, TryStreamExt};
        let (lease_d, retry) = (self.plan.crash_lease, self.plan.crash_retry);
        let flags = self.plan.crash_flags.clone();
        let (count, runs) = (self.plan.takeover_objects, self.plan.takeover_runs);
        let client = self.cluster.client();
        let ns = self.cluster.namespace().to_owned();
        newresources::install_crd(&client).await?;
        let api: Api<NewResource> = Api::namespaced(client.clone(), &ns);
        let names: Vec<String> = (0..count)
            .map(|i| format!("{TAKEOVER_PREFIX}{i:05}"))
            .collect();
        let created = Instant::now();
        futures::stream::iter(names.iter().map(|name| {
            let api = api.clone();
            async move {
                let object = NewResource::new(
                    name,
                    newresource_controller::crd::NewResourceSpec {
                        foo: format!("value of {name}"),
                    },
                );
                api.create(&kube::api::PostParams::default(), &object)
                    .await
                    .with_context(|| format!("cannot create NewResource {name}"))
            }
        }))
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
        eprintln!(
            "takeover: {count} NewResources created in {}",
            show_ms(ms(created.elapsed()))
        );

        // A watcher's initial LIST of all of them, as a controller's window starts with.
        let mut lists = Vec::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            let stream =
                kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default());
            futures::pin_mut!(stream);
            let mut seen = 0usize;
            loop {
                match stream.try_next().await? {
                    Some(kube::runtime::watcher::Event::InitApply(_)) => seen += 1,
                    Some(kube::runtime::watcher::Event::InitDone) => break,
                    Some(_) => {}
                    None => anyhow::bail!("the watcher ended before its initial list was done"),
                }
            }
            anyhow::ensure!(
                seen >= count,
                "the initial list had {seen} of {count} objects"
            );
            lists.push(ms(t0.elapsed()));
        }
        let list_sum = Summary::of(&lists).context("no list timed")?;
        // Other parts' NewResources in the namespace are visited too.
        let total = api
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .len();
        eprintln!(
            "takeover: watcher initial LIST of {count}: {}",
            list_sum.show_ms()
        );

        let server = self.server()?;
        let mut results = Vec::new();
        for i in 0..runs {
            let lease = format!("takeover-{i}");
            let pod_names = [format!("tk{i}-a"), format!("tk{i}-b")];
            let (pods, l) = self
                .start_pod_pair(&ns, &lease, &[&pod_names[0], &pod_names[1]], &flags)
                .await?;
            let s = 1 - l;
            let (l_user, s_user) = (
                controller_user(&pods[l].name),
                controller_user(&pods[s].name),
            );
            // The first leader has visited every object and all are ready.
            let first_open = pods[l].controller.wait_log(WINDOW_STARTED, WAIT).await?;
            wait_reconciled(&pods[l], total).await?;
            // From the second run on the objects are ready already: the first leader's window
            // is a cold LIST plus a no-op visit of each object (no write), which is the case
            // where a cold LIST weighs most. Polled (50 ms), so an upper bound.
            let noop_resync = (i > 0)
                .then(|| timestamp(&first_open))
                .flatten()
                .map(|t| ms_since(t, Timestamp::now()));
            wait_all_ready(&api, count, i as i64 + 1).await?;
            let standby_kb = load::peak_rss_kb(
                pods[s]
                    .controller
                    .pid()
                    .context("standby controller exited")?,
            )?;
            let leading_kb = load::peak_rss_kb(
                pods[l]
                    .controller
                    .pid()
                    .context("leading controller exited")?,
            )?;

            let retry_ms = u64::try_from(retry.as_millis())?;
            tokio::time::sleep(retry + Duration::from_millis(rand::random_range(0..retry_ms)))
                .await;
            let starts = pods[s].controller.logs_with(WINDOW_STARTED).len();
            let kill_at = Timestamp::now();
            pods[l].sidecar.signal(libc::SIGKILL)?;
            // The old controller stops at once; only then is no one working on the objects.
            pods[l].controller.wait_log(WINDOW_ENDED, WAIT).await?;
            let bump_from = Timestamp::now();
            let generation = i + 2;
            futures::stream::iter(names.iter().map(|name| {
                let api = api.clone();
                async move {
                    let patch = json!({"spec": {"foo": format!("value of {name}, #{generation}")}});
                    api.patch(
                        name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await
                    .with_context(|| format!("cannot bump NewResource {name}"))
                }
            }))
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
            let bumped_at = Timestamp::now();
            let started = pods[s]
                .controller
                .wait_logs(WINDOW_STARTED, starts + 1, lease_d * 3 + WAIT)
                .await
                .with_context(|| format!("{}'s controller did not take over", pods[s].name))?;
            let open_at = started
                .get(starts)
                .and_then(timestamp)
                .context("no timestamp on the new window's log line")?;
            // Every object's first status write by the new leader.
            let deadline = Instant::now() + WAIT * 5;
            let firsts = loop {
                let writes = server.audit_where(|r| {
                    r.user == s_user
                        && r.resource == "newresources"
                        && r.subresource.as_deref() == Some("status")
                        && matches!(r.verb.as_str(), "update" | "patch")
                        && r.code < 300
                });
                let mut firsts = std::collections::BTreeMap::<String, i64>::new();
                for w in writes {
                    if let Some(n) = w.name.filter(|n| n.starts_with(TAKEOVER_PREFIX)) {
                        firsts.entry(n).or_insert(w.at_ms);
                    }
                }
                if firsts.len() >= count {
                    break firsts;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the new leader wrote {} of {count} statuses within {:?}",
                    firsts.len(),
                    WAIT * 5
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let all_ms = firsts.values().copied().max().context("no write")?;
            let first_write_ms = firsts.values().copied().min().context("no write")?;
            wait_all_ready(&api, count, generation as i64).await?;
            let new_kb = load::peak_rss_kb(
                pods[s]
                    .controller
                    .pid()
                    .context("new leader's controller exited")?,
            )?;
            let lists = server.audit_where(|r| {
                r.user == s_user && r.resource == "newresources" && r.verb == "list"
            });
            let list_done_ms = lists
                .iter()
                .map(|r| r.at_ms)
                .filter(|&t| t <= first_write_ms)
                .max();
            // No write of the deposed controller after the new window opened.
            let late = server
                .audit_where(|r| {
                    r.user == l_user
                        && r.resource == "newresources"
                        && r.subresource.as_deref() == Some("status")
                        && r.code < 300
                        && r.at_ms >= open_at.as_millisecond()
                })
                .len();
            anyhow::ensure!(
                late == 0,
                "{late} status writes of the deposed controller after the new window opened"
            );
            let run = TakeoverRun {
                kill_to_open: ms_since(kill_at, open_at),
                open_to_all: audit_ms(open_at, all_ms),
                open_to_list_done: list_done_ms.map(|t| audit_ms(open_at, t)),
                open_to_first_write: audit_ms(open_at, first_write_ms),
                list_pages: lists.len(),
                bump_ms: ms_since(bump_from, bumped_at),
                bump_done_before_open: bumped_at <= open_at,
                new_leader_kb: new_kb,
                noop_resync,
                leading_kb,
                standby_kb,
            };
            eprintln!(
                "takeover {}/{runs}: kill → window open {}, window open → LIST done {}, → first write {}, → all {count} reconciled {}; bump took {}{}; new leader VmHWM {} kB",
                i + 1,
                show_ms(run.kill_to_open),
                run.open_to_list_done.map_or("?".into(), show_ms),
                show_ms(run.open_to_first_write),
                show_ms(run.open_to_all),
                show_ms(run.bump_ms),
                if run.bump_done_before_open {
                    ""
                } else {
                    " (NOT done before the window opened)"
                },
                run.new_leader_kb,
            );
            results.push(run);
            // The next run's pods must be the only controllers.
            drop(pods);
        }
        self.takeover_report(count, &results, &list_sum, &lists)
    }

    fn takeover_report(
        &mut self,
        count: usize,
        runs: &[TakeoverRun],
        list_sum: &Summary,
        lists: &[f64],
    ) -> anyhow::Result<()> {
        let pick = |f: &dyn Fn(&TakeoverRun) -> Option<f64>| {
            runs.iter().filter_map(f).collect::<Vec<f64>>()
        };
        let kill_open = Summary::of(&pick(&|r| Some(r.kill_to_open))).context("no takeover run")?;
        let open_all = Summary::of(&pick(&|r| Some(r.open_to_all))).context("no takeover run")?;
        let open_first =
            Summary::of(&pick(&|r| Some(r.open_to_first_write))).context("no takeover run")?;
        let open_list = Summary::of(&pick(&|r| r.open_to_list_done));
        let share = Summary::of(&pick(&|r| {
            Some(r.open_to_first_write / r.open_to_all * 100.0)
        }))
        .context("no takeover run")?;
        let peak = runs.iter().map(|r| r.new_leader_kb).max().unwrap_or(0);
        let noop = Summary::of(&pick(&|r| r.noop_resync));
        let spread = |s: &Summary| {
            format!(
                "{} (min–max {}–{}, n={})",
                show_ms(s.median),
                show_ms(s.min),
                show_ms(s.max),
                s.n
            )
        };
        let lease = show_ms(ms(self.plan.crash_lease));
        self.rows.push(Row {
            metric: format!(
                "takeover with {count} NewResources (kill -9 of the leading sidecar, {lease} \
                 lease; spec of every object bumped while no one leads): kill → new controller \
                 window open / window open → all {count} reconciled by the new leader"
            ),
            measured: format!("{} / {}", spread(&kill_open), spread(&open_all)),
            target: "— (no target)".into(),
            met: None,
        });
        self.rows.push(Row {
            metric: format!(
                "takeover: cold start of the new window's Controller with {count} objects: \
                 window open → LIST done / → first status write (share of window open → all \
                 reconciled); a watcher's initial LIST of {count} alone"
            ),
            measured: format!(
                "{} / {} ({:.1}%, min–max {:.1}–{:.1}%); {}",
                open_list.as_ref().map_or("?".into(), spread),
                spread(&open_first),
                share.median,
                share.min,
                share.max,
                spread(list_sum),
            ),
            target: format!("— (> {WARM_STORE_THRESHOLD_PCT}% would call for a warm store)"),
            met: None,
        });
        self.rows.push(Row {
            metric: format!(
                "takeover: new leader controller peak RSS (VmHWM, {count} NewResources)"
            ),
            measured: format!(
                "{:.2} MiB ({peak} kB, max of {} runs; as standby before: {} kB)",
                peak as f64 / 1024.0,
                runs.len(),
                runs.iter().map(|r| r.standby_kb).max().unwrap_or(0),
            ),
            target: "— (no target)".into(),
            met: None,
        });
        let summary = |v: Vec<f64>| Summary::of(&v).map_or(Value::Null, |s| s.json());
        self.details.insert(
            "takeover".into(),
            json!({
                "objects": count,
                "lease": lease,
                "kill_to_window_open_ms": kill_open.json(),
                "window_open_to_all_reconciled_ms": open_all.json(),
                "window_open_to_list_done_ms": open_list.map_or(Value::Null, |s| s.json()),
                "window_open_to_first_status_write_ms": open_first.json(),
                "cold_start_share_percent": summary(pick(&|r| Some(round1(r.open_to_first_write / r.open_to_all * 100.0)))),
                "watcher_initial_list_ms": list_sum.json(),
                "watcher_initial_list_runs_ms": lists.iter().map(|&t| round1(t)).collect::<Vec<_>>(),
                "new_leader_peak_rss_kb": peak,
                "noop_resync_ms": noop.as_ref().map_or(Value::Null, |s| s.json()),
                "runs": runs.iter().map(|r| json!({
                    "kill_to_window_open_ms": round1(r.kill_to_open),
                    "window_open_to_list_done_ms": r.open_to_list_done.map(round1),
                    "window_open_to_first_status_write_ms": round1(r.open_to_first_write),
                    "window_open_to_all_reconciled_ms": round1(r.open_to_all),
                    "list_requests": r.list_pages,
                    "bump_ms": round1(r.bump_ms),
                    "bump_done_before_window_open": r.bump_done_before_open,
                    "new_leader_peak_rss_kb": r.new_leader_kb,
                    "first_leader_window_open_to_all_visited_no_writes_ms": r.noop_resync.map(round1),
                    "first_leader_peak_rss_kb": r.leading_kb,
                    "standby_peak_rss_kb": r.standby_kb,
                })).collect::<Vec<_>>(),
            }),
        );
        let noop_text = noop.as_ref().map_or("— (one run only)".into(), |s| {
            format!(
                "{} (min–max {}–{}, n={})",
                show_ms(s.median),
                show_ms(s.min),
                show_ms(s.max),
                s.n
            )
        });
        let decision = if share.max > WARM_STORE_THRESHOLD_PCT {
            format!(
                "above {WARM_STORE_THRESHOLD_PCT}% in some run: a warm store kept across windows \
                 would pay"
            )
        } else {
            format!(
                "at most {WARM_STORE_THRESHOLD_PCT}% in every run, so a warm store would not pay \
                 and is not implemented: each window keeps its fresh Controller and cold LIST"
            )
        };
        self.notes.push(format!(
            "Takeover with {count} NewResources: each controller window starts a fresh \
             kube-runtime Controller, whose reconciles wait for its complete (cold) LIST. That \
             cold start, window open → first status write, is {:.1}% (min–max {:.1}–{:.1}%) of \
             window open → all reconciled, in absolute terms {} (a watcher's initial LIST of \
             {count} alone: {}). With nothing to change (a first leader's window in runs after \
             the first: every object already ready), window open → all {count} visited took \
             {noop_text} (polled every 50 ms). A warm reflector store kept across windows would \
             save at most the LIST (its store may be stale at window open, so the window would \
             still have to visit every object, and the grant would still fence every write). \
             Decision: the cold start is {decision}.",
            share.median,
            share.min,
            share.max,
            show_ms(open_first.median),
            show_ms(list_sum.median),
        ));
        if runs.iter().any(|r| !r.bump_done_before_open) {
            self.notes.push(
                "Takeover: in some run the spec bump of all objects was still running when the \
                 new window opened (see details.takeover.runs); window open → all reconciled \
                 then includes waiting for the bump."
                    .into(),
            );
        }
        Ok(())
    }

    fn record_controller_rss(
        &mut self,
        phase: &'static str,
        pod: &Pod,
        role: &'static str,
    ) -> anyhow::Result<()> {
        let pid = pod
            .controller
            .pid()
            .with_context(|| format!("{}'s controller exited", pod.name))?;
        let kb = load::peak_rss_kb(pid)?;
        self.controller_rss.push(ControllerRss {
            phase,
            process: pod.controller.name.clone(),
            role,
            kb,
        });
        Ok(())
    }

    fn controller_rss_row(&mut self) {
        // A deposed controller's peak is from when it led.
        let max_of = |led: bool| {
            self.controller_rss
                .iter()
                .filter(|r| (r.role != "standby") == led)
                .max_by_key(|r| r.kb)
        };
        let (Some(leading), Some(standby)) = (max_of(true), max_of(false)) else {
            return;
        };
        let mib = |kb: u64| kb as f64 / 1024.0;
        let objects = self.plan.objects;
        self.rows.push(Row {
            metric: format!(
                "controller peak RSS (VmHWM; leading with {objects} NewResources / standby)"
            ),
            measured: format!(
                "{:.2} MiB ({} kB; {} {}, {}) / {:.2} MiB ({} kB)",
                mib(leading.kb),
                leading.kb,
                leading.process,
                leading.role,
                leading.phase,
                mib(standby.kb),
                standby.kb
            ),
            target: "— (no target)".into(),
            met: None,
        });
        let detail = json!({
            "objects": objects,
            "peak_rss_kb": leading.kb.max(standby.kb),
            "peak_rss_kb_leading": leading.kb,
            "peak_rss_kb_standby": standby.kb,
            "readings": self.controller_rss.iter().map(|r| json!({
                "phase": r.phase, "process": r.process, "role": r.role, "kb": r.kb,
            })).collect::<Vec<_>>(),
        });
        self.details.insert("controller_peak_rss".into(), detail);
    }

    fn rss_row(&mut self) {
        let Some((phase, id, max)) = self.rss.iter().max_by_key(|r| r.2).cloned() else {
            return;
        };
        self.rows.push(Row {
            metric: format!(
                "sidecar peak RSS (VmHWM, max of {} readings)",
                self.rss.len()
            ),
            measured: format!("{:.2} MiB ({max} kB; {id}, {phase})", max as f64 / 1024.0),
            target: format!("≤ 9 MiB ({RSS_TARGET_KB} kB)"),
            met: Some(max <= RSS_TARGET_KB),
        });
        let mut by_phase = serde_json::Map::new();
        for (phase, _, kb) in &self.rss {
            let entry = by_phase.entry(phase.clone()).or_insert(json!(0));
            if entry.as_u64().is_some_and(|v| v < *kb) {
                *entry = json!(kb);
            }
        }
        self.details
            .insert("peak_rss_kb_by_phase".into(), Value::Object(by_phase));
    }
}

/// Waits until exactly one sidecar is leader and all name it; returns its identity.
async fn one_leader(sidecars: &[&Sidecar]) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut statuses = Vec::new();
        for s in sidecars {
            statuses.push(s.status().await.ok());
        }
        let leaders: Vec<&LeaderStatus> =
            statuses.iter().flatten().filter(|s| s.is_leader).collect();
        if let [l] = leaders[..]
            && statuses
                .iter()
                .all(|s| s.as_ref().is_some_and(|s| holder_is(s, &l.identity)))
        {
            return Ok(l.identity.clone());
        }
        anyhow::ensure!(Instant::now() < deadline, "no single leader: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The figure of the controllers' part, next to REPORT.md.
const FAILOVER_SVG: &str = "failover.svg";

/// The API users of a pod's two processes (their audit records name them).
fn sidecar_user(pod: &str) -> String {
    format!("{pod}-sidecar")
}

fn controller_user(pod: &str) -> String {
    format!("{pod}-controller")
}

/// `t` with every time to 0.1 ms, for a readable JSON.
fn rounded(mut t: Timeline) -> Timeline {
    for w in t.lanes.iter_mut().flat_map(|l| &mut l.windows) {
        w.start_ms = round1(w.start_ms);
        w.end_ms = w.end_ms.map(round1);
    }
    for m in &mut t.marks {
        m.at_ms = round1(m.at_ms);
    }
    for s in &mut t.spans {
        (s.from_ms, s.to_ms) = (round1(s.from_ms), round1(s.to_ms));
    }
    t
}

/// Milliseconds from `t0` to an audit record's `at_ms` (milliseconds since the epoch).
fn audit_ms(t0: Timestamp, at_ms: i64) -> f64 {
    (i128::from(at_ms) * 1_000_000 - t0.as_nanosecond()) as f64 / 1e6
}

/// A cold start above this share (percent) of window open → all reconciled would make a warm
/// reflector store kept across active windows worth its complexity.
const WARM_STORE_THRESHOLD_PCT: f64 = 20.0;

/// Names of the takeover part's NewResources (`tk-00000`, ...).
const TAKEOVER_PREFIX: &str = "tk-";

/// One takeover run of [`Bench::takeover`]; times in milliseconds.
struct TakeoverRun {
    kill_to_open: f64,
    open_to_all: f64,
    open_to_list_done: Option<f64>,
    open_to_first_write: f64,
    /// LIST requests of the new leader's controller (pages of its initial list).
    list_pages: usize,
    bump_ms: f64,
    bump_done_before_open: bool,
    new_leader_kb: u64,
    /// Runs after the first: the first leader's window open → all objects visited (no writes
    /// needed), polled.
    noop_resync: Option<f64>,
    leading_kb: u64,
    standby_kb: u64,
}

/// Waits until all `count` takeover NewResources are ready at generation `generation` (listing every
/// 250 ms: a LIST of thousands of objects is not free on a 2-CPU machine).
async fn wait_all_ready(
    api: &Api<NewResource>,
    count: usize,
    generation: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT * 5;
    loop {
        let list = api.list(&kube::api::ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|o| {
                o.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(TAKEOVER_PREFIX))
                    && o.metadata.generation == Some(generation)
                    && o.status
                        .as_ref()
                        .is_some_and(|s| s.ready && s.observed_generation == Some(generation))
            })
            .count();
        if ready >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{ready} of {count} NewResources ready at generation {generation} within {:?}",
            WAIT * 5
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `pod`'s controller has counted `n` successful reconciles.
async fn wait_reconciled(pod: &Pod, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let done = pod.controller.metrics_text().await.map_or(0.0, |text| {
            testkit::prom::sum(
                &text,
                "controller_reconcile_total",
                &[("result", "success")],
            )
        });
        if done >= n as f64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}'s controller reconciled {done} of {n} within {WAIT:?}",
            pod.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
