//! The discrete-event core: the queue of timed events, delivery to processes (held while a
//! process is frozen, dropped when it was restarted), the network between the sidecars and
//! the API server, and the faults.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use k8s_openapi::api::coordination::v1::Lease;
use leader_client::contract::LeaderStatus;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::api::{ApiServer, Op, Reply, WatchConn, WatchItem};
use super::check::Checker;
use super::clock::{Clock, MAX_DRIFT_PPM, MS, Nanos, SEC, secs};
use super::faults::{Fault, FaultKind, Plan, Who};
use super::node::{Controller, Sidecar};
use super::{Settings, Trace};

/// Who an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Sidecar(usize),
    Controller(usize),
    Server,
    World,
}

#[derive(Debug)]
pub enum Ev {
    // To a sidecar.
    ScWake {
        tick: u64,
    },
    ScApi {
        req: u64,
        reply: Reply,
    },
    ScApiTimeout {
        req: u64,
    },
    ScWatchReply {
        req: u64,
        reply: Reply,
    },
    ScWatchTimeout {
        req: u64,
    },
    ScWatchRetry {
        tick: u64,
    },
    ScWatchEvent {
        conn: u64,
        item: WatchItem,
    },
    ScWatchBroken {
        conn: u64,
    },
    ScStreamTick {
        stream: u64,
        tick: u64,
    },
    /// `GET /leader` from a controller arrives.
    ScLeaderGet {
        ctrl: usize,
        ctrl_inc: u32,
        req: u64,
    },
    /// A controller opens `/leader/watch`.
    ScStreamOpen {
        ctrl: usize,
        ctrl_inc: u32,
        stream: u64,
    },
    ScStreamClosed {
        stream: u64,
    },
    // To a controller.
    CtWake {
        tick: u64,
    },
    CtAnswer {
        req: u64,
        status: Option<Box<LeaderStatus>>,
    },
    CtTimeout {
        req: u64,
    },
    CtStreamEvent {
        stream: u64,
        status: Box<LeaderStatus>,
    },
    CtStreamLost {
        stream: u64,
    },
    CtStreamRetry {
        tick: u64,
    },
    CtWork {
        tick: u64,
    },
    // To the API server: a request arrives (`hung`: it was held and is processed now).
    Srv {
        node: usize,
        inc: u32,
        req: u64,
        op: Op,
        watch: bool,
        hung: bool,
    },
    // To the world.
    FaultStart(Fault),
    FaultEnd {
        kind: FaultKind,
        node: usize,
    },
    StormTick,
}

struct Queued {
    at: Nanos,
    seq: u64,
    target: Target,
    /// Only for this incarnation of the target process (dropped after a restart).
    inc: Option<u32>,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // Reversed: the heap pops the earliest first, ties in scheduling order.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The state of one sidecar's connection to the API server.
#[derive(Debug, Default)]
pub struct Link {
    pub partitioned: u32,
    pub slow: u32,
    pub lossy: u32,
    pub watch_stalled: u32,
}

pub struct World {
    pub s: Settings,
    pub now: Nanos,
    seq: u64,
    queue: BinaryHeap<Queued>,
    pub rng: SmallRng,
    pub base: Instant,
    pub server: ApiServer,
    pub links: Vec<Link>,
    pub sidecars: Vec<Sidecar>,
    pub controllers: Vec<Controller>,
    /// Events for frozen processes: sidecars first, then controllers.
    held: Vec<Vec<Queued>>,
    pub check: Checker,
    pub trace: Option<Trace>,
    next_id: u64,
    storms: u32,
    pub faults_end: Nanos,
    pub end: Nanos,
}

/// Prints a trace line when tracing (the message is only formatted then).
macro_rules! tr {
    ($w:expr, $who:expr, $($arg:tt)*) => {
        if $w.trace.is_some() {
            let line = format!("[{}] {:<4} {}", $crate::sim::clock::secs($w.now), $who, format_args!($($arg)*));
            if let Some(t) = $w.trace.as_mut() { t.push(line); }
        }
    };
}
pub(crate) use tr;

impl World {
    pub fn new(seed: u64, s: Settings, trace: bool) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = rng.random_range(3..=5usize);
        let plan = Plan::random(&mut rng, n);
        let base = Instant::now();
        let initial = rng.random_bool(0.5).then(|| {
            // A Lease left behind by a pod that is gone, with some history.
            let mut l = Lease::default();
            l.metadata.name = Some(super::LEASE_NAME.into());
            l.metadata.namespace = Some(super::NAMESPACE.into());
            let spec = l.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some("pod-gone".into());
            spec.lease_duration_seconds = Some(3);
            spec.lease_transitions = Some(rng.random_range(0..5));
            l
        });
        let mut w = World {
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            base,
            server: ApiServer::new(initial),
            links: (0..n).map(|_| Link::default()).collect(),
            sidecars: Vec::with_capacity(n),
            controllers: Vec::with_capacity(n),
            held: (0..2 * n).map(|_| Vec::new()).collect(),
            check: Checker::new(n),
            trace: trace.then(Vec::new),
            next_id: 0,
            storms: 0,
            faults_end: plan.faults_end,
            end: plan.faults_end + s.tail,
            s,
            rng,
        };
        for i in 0..n {
            let sc_clock = Clock {
                ppm: w.rng.random_range(-MAX_DRIFT_PPM..=MAX_DRIFT_PPM),
            };
            let ct_clock = Clock {
                ppm: w.rng.random_range(-MAX_DRIFT_PPM..=MAX_DRIFT_PPM),
            };
            let wall_offset = w.rng.random_range(-3600 * SEC as i64..=3600 * SEC as i64);
            let sc = Sidecar::new(i, sc_clock, wall_offset, w.rng.random(), &w.s);
            w.sidecars.push(sc);
            w.controllers.push(Controller::new(ct_clock, &w.s));
        }
        tr!(
            w,
            "sim",
            "seed {seed}: {n} pods, Lease {}, faults until {} s, run until {} s",
            match &w.server.lease {
                Some(_) => "left by pod-gone",
                None => "absent",
            },
            secs(w.faults_end).trim(),
            secs(w.end).trim()
        );
        for i in 0..n {
            tr!(
                w,
                "sim",
                "pod-{i}: sidecar clock {:+} ppm, wall {:+.3} s; controller clock {:+} ppm",
                w.sidecars[i].clock.ppm,
                w.sidecars[i].wall_offset as f64 / 1e9,
                w.controllers[i].clock.ppm
            );
            // Each process starts as a killed one restarts, within the first 100 ms.
            for kind in [FaultKind::KillSidecar, FaultKind::KillController] {
                let start = w.rng.random_range(0..100 * MS);
                w.at(start, Target::World, None, Ev::FaultEnd { kind, node: i });
            }
        }
        for f in plan.faults {
            w.at(f.start, Target::World, None, Ev::FaultStart(f));
        }
        w
    }

    pub fn n(&self) -> usize {
        self.sidecars.len()
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn at(&mut self, at: Nanos, target: Target, inc: Option<u32>, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at: at.max(self.now),
            seq: self.seq,
            target,
            inc,
            ev,
        });
    }

    /// Runs to the end.
    pub fn run(&mut self) {
        while let Some(q) = self.queue.pop() {
            if q.at > self.end {
                break;
            }
            self.now = q.at;
            self.dispatch(q);
        }
        self.now = self.end;
        for i in 0..self.n() {
            self.sample_sidecar(i);
            self.sample_controller(i);
        }
    }

    fn dispatch(&mut self, q: Queued) {
        match q.target {
            Target::Sidecar(i) => {
                let sc = &self.sidecars[i];
                if q.inc.is_some_and(|inc| !sc.alive || inc != sc.inc) {
                    return;
                }
                if !sc.alive {
                    self.refuse(q.ev);
                } else if sc.frozen > 0 {
                    self.held[i].push(q);
                } else {
                    self.sidecar_event(i, q.ev);
                    self.after_sidecar(i);
                }
            }
            Target::Controller(i) => {
                let ct = &self.controllers[i];
                if q.inc.is_some_and(|inc| !ct.alive || inc != ct.inc) {
                    return;
                }
                if !ct.alive {
                    return;
                }
                if ct.frozen > 0 {
                    let n = self.n();
                    self.held[n + i].push(q);
                } else {
                    self.controller_event(i, q.ev);
                    self.sample_controller(i);
                }
            }
            Target::Server => {
                if let Ev::Srv {
                    node,
                    inc,
                    req,
                    op,
                    watch,
                    hung,
                } = q.ev
                {
                    self.server_request(node, inc, req, op, watch, hung);
                }
            }
            Target::World => self.world_event(q.ev),
        }
    }

    /// A dead sidecar refuses connections.
    fn refuse(&mut self, ev: Ev) {
        match ev {
            Ev::ScLeaderGet {
                ctrl,
                ctrl_inc,
                req,
            } => {
                let at = self.now + self.local_delay();
                let ev = Ev::CtAnswer { req, status: None };
                self.at(at, Target::Controller(ctrl), Some(ctrl_inc), ev);
            }
            Ev::ScStreamOpen {
                ctrl,
                ctrl_inc,
                stream,
            } => {
                let at = self.now + self.local_delay();
                self.at(
                    at,
                    Target::Controller(ctrl),
                    Some(ctrl_inc),
                    Ev::CtStreamLost { stream },
                );
            }
            _ => {}
        }
    }

    /// Sends `held` events of a resumed process, in their original order.
    fn resume(&mut self, slot: usize, target: Target) {
        for q in std::mem::take(&mut self.held[slot]) {
            self.at(self.now, target, q.inc, q.ev);
        }
    }

    // ---- network ----

    /// One way between a controller and its sidecar (loopback).
    pub fn local_delay(&mut self) -> Nanos {
        self.rng.random_range(50_000..=2 * MS)
    }

    /// One way between a sidecar and the API server.
    fn api_delay(&mut self, node: usize) -> Nanos {
        if self.links[node].slow > 0 {
            self.rng.random_range(100 * MS..=1500 * MS)
        } else {
            self.rng.random_range(MS / 2..=10 * MS)
        }
    }

    /// A sidecar sends a request to the API server.
    pub fn send_api(&mut self, node: usize, req: u64, op: Op, watch: bool) {
        let link = &self.links[node];
        let lost = link.partitioned > 0 || (link.lossy > 0 && self.rng.random_bool(0.25));
        if lost {
            tr!(self, format!("sc{node}"), "request {req} lost on the way");
            return;
        }
        let at = self.now + self.api_delay(node);
        let inc = self.sidecars[node].inc;
        let ev = Ev::Srv {
            node,
            inc,
            req,
            op,
            watch,
            hung: false,
        };
        self.at(at, Target::Server, None, ev);
    }

    fn server_request(&mut self, node: usize, inc: u32, req: u64, op: Op, watch: bool, hung: bool) {
        if self.links[node].partitioned > 0 {
            return;
        }
        if self.links[node].lossy > 0 && !hung {
            if self.rng.random_bool(0.1) {
                // Held by the server until the faults stop at the latest.
                let until = (self.now + self.rng.random_range(500 * MS..=4 * SEC))
                    .min(self.faults_end.max(self.now));
                tr!(
                    self,
                    "api",
                    "request {req} of sc{node} hangs until {} s",
                    secs(until).trim()
                );
                let ev = Ev::Srv {
                    node,
                    inc,
                    req,
                    op,
                    watch,
                    hung: true,
                };
                self.at(until, Target::Server, None, ev);
                return;
            }
            if self.rng.random_bool(0.1) {
                self.answer(node, inc, req, Reply::Error, watch);
                return;
            }
        }
        let reply = match op {
            Op::Watch { from } => self.open_watch(node, inc, from),
            op => {
                let (reply, change) = self.server.apply(op);
                if let Some(item) = change {
                    if let Reply::Stored(l) = &reply {
                        tr!(self, "api", "sc{node} wrote {}", describe(l));
                    }
                    self.fan_out(item);
                }
                reply
            }
        };
        let lost = self.links[node].lossy > 0 && self.rng.random_bool(0.25);
        if lost {
            tr!(
                self,
                "api",
                "answer to request {req} of sc{node} lost: {}",
                short(&reply)
            );
            return;
        }
        self.answer(node, inc, req, reply, watch);
    }

    fn answer(&mut self, node: usize, inc: u32, req: u64, reply: Reply, watch: bool) {
        let at = self.now + self.api_delay(node);
        let ev = if watch {
            if let Reply::WatchStarted { conn, .. } = &reply
                && let Some(c) = self.server.watches.get_mut(conn)
            {
                c.last_delivery = c.last_delivery.max(at);
            }
            Ev::ScWatchReply { req, reply }
        } else {
            Ev::ScApi { req, reply }
        };
        self.at(at, Target::Sidecar(node), Some(inc), ev);
    }

    fn open_watch(&mut self, node: usize, inc: u32, from: Option<u64>) -> Reply {
        self.server.watches.retain(|_, c| c.node != node);
        let conn = self.id();
        self.server.watches.insert(
            conn,
            WatchConn {
                node,
                inc,
                held: Vec::new(),
                last_delivery: self.now,
            },
        );
        let (list, replay) = match from {
            None => (Some(self.server.list()), Vec::new()),
            Some(rv) => (None, self.server.since(rv)),
        };
        for item in replay {
            self.deliver(conn, item);
        }
        Reply::WatchStarted { conn, list }
    }

    fn fan_out(&mut self, item: WatchItem) {
        let conns: Vec<u64> = self.server.watches.keys().copied().collect();
        for conn in conns {
            self.deliver(conn, item.clone());
        }
    }

    fn deliver(&mut self, conn: u64, item: WatchItem) {
        let Some(node) = self.server.watches.get(&conn).map(|c| c.node) else {
            return;
        };
        let link = &self.links[node];
        if link.partitioned > 0 || link.watch_stalled > 0 {
            if let Some(c) = self.server.watches.get_mut(&conn) {
                c.held.push(item);
            }
            return;
        }
        let d = self.api_delay(node);
        let Some(c) = self.server.watches.get_mut(&conn) else {
            return;
        };
        c.last_delivery = c.last_delivery.max(self.now + d);
        let (at, inc) = (c.last_delivery, c.inc);
        self.at(
            at,
            Target::Sidecar(node),
            Some(inc),
            Ev::ScWatchEvent { conn, item },
        );
    }

    /// A stalled or partitioned watch comes back: the held events arrive, or the connection
    /// turns out to be broken.
    fn heal_watches(&mut self, node: usize) {
        let link = &self.links[node];
        if link.partitioned > 0 || link.watch_stalled > 0 {
            return;
        }
        let conns: Vec<u64> = self
            .server
            .watches
            .iter()
            .filter(|(_, c)| c.node == node && !c.held.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            if self.rng.random_bool(0.5) {
                let held = self
                    .server
                    .watches
                    .get_mut(&conn)
                    .map(|c| std::mem::take(&mut c.held))
                    .unwrap_or_default();
                tr!(
                    self,
                    "api",
                    "watch of sc{node} resumes with {} held events",
                    held.len()
                );
                for item in held {
                    self.deliver(conn, item);
                }
            } else if let Some(c) = self.server.watches.remove(&conn) {
                tr!(
                    self,
                    "api",
                    "watch of sc{node} breaks ({} events lost)",
                    c.held.len()
                );
                let at = self.now + self.api_delay(node);
                self.at(
                    at,
                    Target::Sidecar(node),
                    Some(c.inc),
                    Ev::ScWatchBroken { conn },
                );
            }
        }
    }

    // ---- faults ----

    fn world_event(&mut self, ev: Ev) {
        match ev {
            Ev::FaultStart(f) => self.fault_start(f),
            Ev::FaultEnd { kind, node } => self.fault_end(kind, node),
            Ev::StormTick if self.storms > 0 => {
                if let Some(item) = self.server.touch() {
                    self.fan_out(item);
                }
                let at = self.now + self.rng.random_range(50 * MS..=250 * MS);
                self.at(at, Target::World, None, Ev::StormTick);
            }
            _ => {}
        }
    }

    fn fault_start(&mut self, f: Fault) {
        let node = match f.who {
            Who::Node(i) => i % self.n(),
            Who::Leader => (0..self.n())
                .find(|&i| self.check.tenures[i].holds_at(self.now))
                .unwrap_or_else(|| self.rng.random_range(0..self.n())),
        };
        let end = (self.now + f.duration).min(self.faults_end);
        tr!(
            self,
            "FLT",
            "{}{}{}",
            f.kind.name(),
            if f.kind.operator() {
                String::new()
            } else {
                format!(" of pod-{node}")
            },
            if f.kind.instant() {
                String::new()
            } else {
                format!(" until {} s", secs(end).trim())
            }
        );
        let link = &mut self.links[node];
        match f.kind {
            FaultKind::Partition => link.partitioned += 1,
            FaultKind::SlowApi => link.slow += 1,
            FaultKind::LossyApi => link.lossy += 1,
            FaultKind::WatchStall => link.watch_stalled += 1,
            FaultKind::FreezeSidecar => self.sidecars[node].frozen += 1,
            FaultKind::FreezeController => self.controllers[node].frozen += 1,
            FaultKind::KillSidecar => self.kill_sidecar(node),
            FaultKind::KillController => self.kill_controller(node),
            FaultKind::StreamLoss => self.stream_loss(node),
            FaultKind::WallStep => {
                let step = self
                    .rng
                    .random_range(-3600 * SEC as i64..=3600 * SEC as i64);
                self.sidecars[node].wall_offset += step;
            }
            FaultKind::DeleteLease => {
                // Deleting a held Lease is safe only towards candidates that know its holder
                // (elector.rs, step 5): the model's operator deletes only then.
                let holder = self
                    .server
                    .lease
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.clone())
                    .filter(|h| !h.is_empty());
                let unaware = holder.as_deref().and_then(|h| {
                    self.sidecars
                        .iter()
                        .position(|sc| sc.alive && !sc.knows_holder(h))
                });
                if let (Some(h), Some(i)) = (&holder, unaware) {
                    tr!(
                        self,
                        "FLT",
                        "operator's delete skipped: pod-{i} does not know holder {h}"
                    );
                } else if let Some(item) = self.server.delete() {
                    if let Some(rv) = item.rv() {
                        self.check.deletions.push(rv);
                    }
                    self.fan_out(item);
                }
            }
            FaultKind::ClearHolder => {
                if let Some(item) = self.server.clear_holder() {
                    self.fan_out(item);
                }
            }
            FaultKind::ConflictStorm => {
                self.storms += 1;
                if self.storms == 1 {
                    self.at(self.now, Target::World, None, Ev::StormTick);
                }
            }
        }
        if !f.kind.instant() {
            let ev = Ev::FaultEnd { kind: f.kind, node };
            self.at(end, Target::World, None, ev);
        }
    }

    fn fault_end(&mut self, kind: FaultKind, node: usize) {
        let dec = |c: &mut u32| *c = c.saturating_sub(1);
        let link = &mut self.links[node];
        match kind {
            FaultKind::Partition => dec(&mut link.partitioned),
            FaultKind::SlowApi => dec(&mut link.slow),
            FaultKind::LossyApi => dec(&mut link.lossy),
            FaultKind::WatchStall => dec(&mut link.watch_stalled),
            FaultKind::FreezeSidecar => {
                let sc = &mut self.sidecars[node];
                dec(&mut sc.frozen);
                if sc.frozen == 0 && sc.alive {
                    self.resume(node, Target::Sidecar(node));
                }
            }
            FaultKind::FreezeController => {
                let ct = &mut self.controllers[node];
                dec(&mut ct.frozen);
                if ct.frozen == 0 && ct.alive {
                    let n = self.n();
                    self.resume(n + node, Target::Controller(node));
                }
            }
            FaultKind::KillSidecar if !self.sidecars[node].alive => {
                self.start_sidecar(node);
            }
            FaultKind::KillController if !self.controllers[node].alive => {
                self.start_controller(node);
            }
            FaultKind::ConflictStorm => dec(&mut self.storms),
            _ => {}
        }
        if matches!(kind, FaultKind::Partition | FaultKind::WatchStall) {
            self.heal_watches(node);
        }
        if kind != FaultKind::KillSidecar && kind != FaultKind::KillController {
            if kind.operator() {
                tr!(self, "FLT", "end of {}", kind.name());
            } else {
                tr!(self, "FLT", "end of {} of pod-{node}", kind.name());
            }
        }
    }

    fn kill_sidecar(&mut self, node: usize) {
        if !self.sidecars[node].alive {
            return;
        }
        self.held[node].clear();
        let streams = self.kill_sidecar_process(node);
        self.server.watches.retain(|_, c| c.node != node);
        for (stream, ctrl, ctrl_inc) in streams {
            let at = self.now + self.local_delay();
            self.at(
                at,
                Target::Controller(ctrl),
                Some(ctrl_inc),
                Ev::CtStreamLost { stream },
            );
        }
        self.sample_sidecar(node);
    }

    fn kill_controller(&mut self, node: usize) {
        if !self.controllers[node].alive {
            return;
        }
        let n = self.n();
        self.held[n + node].clear();
        if let Some(stream) = self.kill_controller_process(node) {
            let at = self.now + self.local_delay();
            self.at(
                at,
                Target::Sidecar(node),
                None,
                Ev::ScStreamClosed { stream },
            );
        }
        self.sample_controller(node);
    }

    fn stream_loss(&mut self, node: usize) {
        let Some(stream) = self.controllers[node].stream else {
            return;
        };
        let inc = self.controllers[node].inc;
        let at = self.now + self.local_delay();
        self.at(
            at,
            Target::Controller(node),
            Some(inc),
            Ev::CtStreamLost { stream },
        );
        self.at(
            at,
            Target::Sidecar(node),
            None,
            Ev::ScStreamClosed { stream },
        );
    }
}

/// `holder pod-1 term 4 rv 17` for traces.
pub fn describe(l: &Lease) -> String {
    let spec = l.spec.clone().unwrap_or_default();
    format!(
        "holder {} ({} s) term {} rv {}",
        spec.holder_identity.as_deref().unwrap_or("-"),
        spec.lease_duration_seconds
            .map_or_else(|| "-".to_owned(), |d| d.to_string()),
        spec.lease_transitions
            .map_or_else(|| "-".to_owned(), |t| t.to_string()),
        l.metadata.resource_version.as_deref().unwrap_or("-")
    )
}

pub fn short(r: &Reply) -> String {
    match r {
        Reply::Found(l) => format!("200 {}", describe(l)),
        Reply::NotFound => "404".into(),
        Reply::Stored(l) => format!("200 stored {}", describe(l)),
        Reply::Conflict => "409".into(),
        Reply::Gone => "404 gone".into(),
        Reply::Error => "error".into(),
        Reply::WatchStarted { conn, .. } => format!("watch {conn} started"),
    }
}
