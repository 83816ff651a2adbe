//! The `/leader` load generator, CPU pinning, optional `wrk`, and `/proc` readings.
//!
//! The generator is a current-thread tokio runtime on its own OS thread (pinned to one CPU
//! when asked) driving N keep-alive HTTP/1.1 connections, each sending `GET /leader`
//! back-to-back (one request in flight per connection, no pipelining) and timing every
//! exchange from before the write until the last byte of the body is read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

/// What one load run found.
#[derive(Debug)]
pub struct LoadResult {
    pub connections: usize,
    pub seconds: f64,
    /// 200 answers completed inside the measured window.
    pub requests: u64,
    /// Non-200 answers and broken connections inside the measured window.
    pub errors: u64,
    pub rps: f64,
    /// Latency quantiles in microseconds.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// How the generator thread was pinned.
    pub pinned: String,
    /// CPU used by the sidecar process and by the generator thread during the measured
    /// window, in percent of one CPU (which of the two is the bottleneck).
    pub sidecar_cpu_pct: Option<f64>,
    pub generator_cpu_pct: Option<f64>,
}

impl LoadResult {
    pub fn json(&self) -> Value {
        let r = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "connections": self.connections, "seconds": self.seconds,
            "requests": self.requests, "errors": self.errors,
            "requests_per_second": r(self.rps),
            "latency_us": {
                "p50": r(self.p50_us), "p90": r(self.p90_us), "p99": r(self.p99_us),
                "p99.9": r(self.p999_us), "max": r(self.max_us), "mean": r(self.mean_us),
            },
            "generator_pinning": self.pinned,
            "cpu_percent_of_one_core": {
                "sidecar": self.sidecar_cpu_pct.map(r),
                "generator": self.generator_cpu_pct.map(r),
            },
        })
    }
}

/// Runs the load on a new thread (pinned to `cpu` if given) and waits for it; `pid` is the
/// server's, for its CPU use.
pub async fn run(
    pid: u32,
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<LoadResult> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let _ = tx.send(generate(pid, addr, connections, warmup, measure, cpu));
        })
        .context("cannot start the load thread")?;
    rx.await.context("the load thread died")?
}

struct ConnStats {
    latencies_ns: Vec<u32>,
    ok: u64,
    errors: u64,
}

fn generate(
    pid: u32,
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<LoadResult> {
    let pinned = match cpu {
        Some(cpu) => {
            pin_thread(0, cpu)
                .with_context(|| format!("cannot pin the load thread to CPU {cpu}"))?;
            format!("sched_setaffinity: generator thread on CPU {cpu}")
        }
        None => "not pinned (fewer than 2 CPUs)".to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the load runtime")?;
    runtime.block_on(async move {
        let start = Instant::now();
        let warm_until = start + warmup;
        let end = warm_until + measure;
        // Runs on the generator thread too, so the thread CPU clock is the generator's.
        let sampler = tokio::spawn(async move {
            let sample = || (process_cpu_secs(pid), thread_cpu_secs());
            tokio::time::sleep_until(warm_until.into()).await;
            let (s0, g0) = sample();
            tokio::time::sleep_until(end.into()).await;
            let (s1, g1) = sample();
            let pct =
                |a: Option<f64>, b: Option<f64>| Some((b? - a?) * 100.0 / measure.as_secs_f64());
            (pct(s0, s1), pct(g0, g1))
        });
        let mut tasks = Vec::new();
        for _ in 0..connections {
            tasks.push(tokio::spawn(connection(addr, warm_until, end)));
        }
        let mut all = Vec::new();
        let (mut ok, mut errors) = (0u64, 0u64);
        for t in tasks {
            let s = t.await.context("a load task panicked")??;
            ok += s.ok;
            errors += s.errors;
            all.extend(s.latencies_ns);
        }
        let (sidecar_cpu_pct, generator_cpu_pct) =
            sampler.await.context("the CPU sampler panicked")?;
        anyhow::ensure!(!all.is_empty(), "no request completed");
        all.sort_unstable();
        let q = |p: f64| {
            let i = ((all.len() - 1) as f64 * p).round() as usize;
            f64::from(all[i]) / 1000.0
        };
        let seconds = measure.as_secs_f64();
        let mean_us = all.iter().map(|&n| f64::from(n)).sum::<f64>() / all.len() as f64 / 1000.0;
        Ok(LoadResult {
            connections,
            seconds,
            requests: ok,
            errors,
            rps: ok as f64 / seconds,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: q(1.0),
            mean_us,
            pinned,
            sidecar_cpu_pct,
            generator_cpu_pct,
        })
    })
}

/// User plus system CPU time of process `pid` (all its threads), from `/proc/<pid>/stat`.
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start with field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// CPU time of the calling thread.
fn thread_cpu_secs() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// One keep-alive connection: requests back-to-back until `end`; latencies and counts of the
/// exchanges that completed in `[warm_until, end)`.
async fn connection(
    addr: SocketAddr,
    warm_until: Instant,
    end: Instant,
) -> anyhow::Result<ConnStats> {
    let request = format!("GET /leader HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    let mut stats = ConnStats {
        latencies_ns: Vec::with_capacity(1 << 16),
        ok: 0,
        errors: 0,
    };
    let mut buf = vec![0u8; 4096];
    let mut stream: Option<TcpStream> = None;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            return Ok(stats);
        }
        let s = match stream.as_mut() {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("cannot connect to {addr}"))?;
                s.set_nodelay(true)?;
                stream.insert(s)
            }
        };
        let outcome = exchange(s, request.as_bytes(), &mut buf).await;
        let t1 = Instant::now();
        let counted = t0 >= warm_until && t1 < end;
        match outcome {
            Ok(200) if counted => {
                stats.ok += 1;
                let ns = (t1 - t0).as_nanos();
                stats
                    .latencies_ns
                    .push(u32::try_from(ns).unwrap_or(u32::MAX));
            }
            Ok(200) => {}
            Ok(_) => stats.errors += u64::from(counted),
            Err(_) => {
                stats.errors += u64::from(counted);
                stream = None;
            }
        }
    }
}

/// Writes one request and reads one response; returns its status code.
///
/// Two system calls per exchange: the write, and one read once epoll reports the answer. A
/// plain `read().await` would first try a read that fails with `EAGAIN` (tokio keeps a socket
/// marked readable until a read says otherwise); since the server sends nothing before the
/// next request, the bench clears that mark itself after each complete response.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    stream.write_all(request).await?;
    let mut filled = 0;
    let mut expected: Option<(usize, usize)> = None;
    loop {
        if let Some((_, total)) = expected {
            if total > buf.len() {
                buf.resize(total, 0);
            }
            if filled >= total {
                break;
            }
        } else {
            anyhow::ensure!(filled < buf.len(), "response headers too large");
        }
        stream.readable().await?;
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => anyhow::bail!("connection closed"),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        if expected.is_none()
            && let Some(head_end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = std::str::from_utf8(&buf[..head_end])?;
            let length = head
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .context("no content-length")?;
            expected = Some((head_end, head_end + 4 + length));
        }
    }
    let Some((head_end, total)) = expected else {
        anyhow::bail!("no response");
    };
    anyhow::ensure!(filled == total, "more bytes than one response");
    // Everything the server sent is read: forget the readiness without a failing read.
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
    let status = std::str::from_utf8(&buf[..head_end])?
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    Ok(status)
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
pub fn pin_thread(tid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(rc == 0, "{}", std::io::Error::last_os_error());
    Ok(())
}

/// Pins every thread of process `pid` to `cpu`: `taskset -a -p -c` when installed, else
/// `sched_setaffinity` on each thread in `/proc/<pid>/task`. Returns how it was done.
pub async fn pin_process(pid: u32, cpu: usize) -> anyhow::Result<String> {
    if let Some(taskset) = which("taskset") {
        let out = tokio::process::Command::new(&taskset)
            .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run taskset")?;
        anyhow::ensure!(
            out.status.success(),
            "taskset failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return Ok(format!("taskset -a -p -c {cpu} <pid> (every thread)"));
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).context("cannot list threads")?;
    for task in tasks {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        pin_thread(tid, cpu)?;
    }
    Ok(format!(
        "sched_setaffinity on every thread of the sidecar to CPU {cpu} (no taskset)"
    ))
}

/// `Cpus_allowed_list` of every thread of `pid`, deduplicated (to show the pinning held).
pub fn cpus_allowed(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut lists = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        if let Some(l) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            lists.push(l.trim().to_owned());
        }
    }
    lists.sort();
    lists.dedup();
    Ok(lists)
}

/// `VmHWM` (peak resident set) of `pid`, in kB.
pub fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/<pid>/status")
}

/// An executable named `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `wrk -t1 -c<connections> -d<secs>s --latency`, pinned to `cpu` with taskset when both are
/// there; its output from the `Latency` line on, or `None` when wrk is not installed.
pub async fn wrk(
    addr: SocketAddr,
    connections: usize,
    measure: Duration,
    cpu: Option<usize>,
) -> anyhow::Result<Option<String>> {
    let Some(wrk) = which("wrk") else {
        return Ok(None);
    };
    let mut args: Vec<String> = vec![
        "-t1".into(),
        format!("-c{connections}"),
        format!("-d{}s", measure.as_secs().max(1)),
        "--latency".into(),
        format!("http://{addr}/leader"),
    ];
    let program = match (cpu, which("taskset")) {
        (Some(cpu), Some(taskset)) => {
            args.splice(
                0..0,
                ["-c".to_owned(), cpu.to_string(), wrk.display().to_string()],
            );
            taskset
        }
        _ => wrk,
    };
    let out = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run wrk")?;
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// The `Requests/sec:` figure of wrk's output.
pub fn wrk_rps(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}
