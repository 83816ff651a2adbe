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
//!    (1 s warm-up, 10 s measured). Targets ≥ 125k req/s and p99 ≤ 1 ms. If `wrk` is on `PATH`
//!    it runs too (`wrk -t1 -c64 -d10s --latency`, pinned to CPU 1) and its summary is included.
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
//!
//! `--quick` shortens everything (2 crash runs with a 3 s lease, 3 handovers, 3 s of load,
//! 10 s windows, 2 startups); `--smoke` is for CI (`tests/tests/bench_smoke.rs`: one run of
//! each, 1 s of load, 5 s windows, 50 NewResources; about 30 s in a debug build) and gives no
//! verdicts. `--only crash,load,...` runs a subset. Verdicts are strict: a failover target must
//! hold for every run (the max), not only the median.
//!
//! The bench locates `leader-sidecar` and `newresource-controller` next to its own executable
//! (`target/lto/`, or `target/debug/` in a test run), or at `$LEADER_SIDECAR_BIN` and
//! `$NEWRESOURCE_CONTROLLER_BIN`.

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
    rate_window: Duration,
    /// NewResources the controllers' part creates.
    objects: usize,
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
                rate_window: Duration::from_secs(5),
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
                rate_window: Duration::from_secs(10),
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
                rate_window: Duration::from_secs(60),
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
    let args: Args = cli::parse_or_exit();
    testkit::bins::run_tool("bench", async {
        run(args).await.map(|()| ExitCode::SUCCESS)
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let wants = |p: Part| args.only.is_empty() || args.only.contains(&p);
    let bin = binary("leader-sidecar")?;
    let controller_bin = if wants(Part::Controller) {
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
/// the process helpers that start it would panic, and a release build aborts on panic.
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

    async fn load(&mut self, connections: usize) -> anyhow::Result<()> {
        let pct = |p: Option<f64>| p.map_or("?".to_owned(), |p| format!("{p:.0}%"));
        let sc = self.spawn("load", "load-a", &[]).await?;
        poll(&sc, WAIT, |s| s.is_leader).await?;
        let pid = sc.pid().context("the sidecar exited")?;
        let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        let (sidecar_pinning, generator_cpu) = if two_cpus {
            (load::pin_process(pid, 0).await?, Some(1))
        } else {
            ("not pinned (fewer than 2 CPUs)".to_owned(), None)
        };
        let allowed = load::cpus_allowed(pid).unwrap_or_default();
        let (warmup, measure) = (self.plan.warmup, self.plan.measure);
        eprintln!("load: {connections} connections, {measure:?} after {warmup:?} of warm-up");
        let r = load::run(pid, sc.api, connections, warmup, measure, generator_cpu).await?;
        let still = sc.status().await?;
        anyhow::ensure!(still.is_leader, "the sidecar lost leadership under load");
        self.record_rss("after /leader load", &[&sc]);
        let wrk = load::wrk(sc.api, connections, measure, generator_cpu).await?;
        if wrk.is_some() {
            self.record_rss("after wrk", &[&sc]);
        }
        self.rows.push(Row {
            metric: format!(
                "/leader throughput ({connections} keep-alive connections, {}s)",
                measure.as_secs_f64()
            ),
            measured: format!(
                "{:.0} req/s ({} errors; CPU: sidecar {}, generator {})",
                r.rps,
                r.errors,
                pct(r.sidecar_cpu_pct),
                pct(r.generator_cpu_pct)
            ),
            target: "≥ 125000 req/s".into(),
            met: Some(r.rps >= 125_000.0 && r.errors == 0),
        });
        self.rows.push(Row {
            metric: "/leader latency p50 / p99 / max".into(),
            measured: format!(
                "{:.0} µs / {:.0} µs / {:.2} ms",
                r.p50_us,
                r.p99_us,
                r.max_us / 1000.0
            ),
            target: "p99 ≤ 1 ms".into(),
            met: Some(r.p99_us <= 1000.0),
        });
        let mut detail = r.json();
        detail["sidecar_pinning"] = json!(sidecar_pinning);
        detail["sidecar_cpus_allowed"] = json!(allowed);
        detail["warmup_s"] = json!(warmup.as_secs_f64());
        detail["wrk"] = json!(wrk.as_deref().unwrap_or("not installed"));
        self.details.insert("leader_load".into(), detail);
        self.notes.push(format!(
            "/leader load: sidecar pinned with {sidecar_pinning}, Cpus_allowed_list of its \
             threads: {}; generator pinned with {}. CPU use in the measured window: sidecar {}, \
             generator {} of one core; the one near 100% is the bottleneck. In a closed loop of \
             {connections} connections, mean latency = connections / throughput (Little's law): \
             {:.0} µs measured.",
            allowed.join(", "),
            r.pinned,
            pct(r.sidecar_cpu_pct),
            pct(r.generator_cpu_pct),
            r.mean_us,
        ));
        if let Some(w) = wrk {
            self.notes.push(format!("wrk: {}", w.replace('\n', " / ")));
        } else {
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
        let mut pods = Vec::new();
        for name in ["pod-a", "pod-b"] {
            let (sidecar_kc, _) = self.cluster.client_kubeconfig(&sidecar_user(name))?;
            let (controller_kc, _) = self.cluster.client_kubeconfig(&controller_user(name))?;
            let spec = PodSpec {
                name: name.to_owned(),
                sidecar: SidecarSpec::new(&sidecar_kc, &ns, lease, name)
                    .args(flags.iter().cloned()),
                controller_kubeconfig: controller_kc,
                controller_args: vec!["--namespace".into(), ns.clone()],
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
