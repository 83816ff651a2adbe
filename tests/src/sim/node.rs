//! One pod: a sidecar (the real [`Elector`] and [`Leadership`], driven the way
//! `sidecar/src/runner.rs` drives them, and `/leader` answers from the real
//! [`status_json`](leader_sidecar::http::status_json)) and its controller (the real
//! [`GateState`], driven the way `leader-client/src/follow.rs` drives it).

use std::collections::VecDeque;
use std::time::Duration;

use leader_client::contract::LeaderStatus;
use leader_client::gate::{GateState, Ticket};
use leader_sidecar::elector::{Change, Elector, Step, Write, WriteKind};
use leader_sidecar::http::status_json;
use leader_sidecar::leadership::{Leadership, LeaseView};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::api::{Op, Reply, WatchItem};
use super::clock::{Clock, MS, Nanos, secs, wall};
use super::world::{Ev, Target, World, short, tr};
use super::{LEASE_NAME, NAMESPACE, Settings};

/// `http.rs`: keep-alive interval of a stream while not granting.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// The Lease request in flight (the runner sends one at a time).
#[derive(Debug)]
pub struct Busy {
    req: u64,
    sent: Instant,
    /// `None`: a read.
    write: Option<Box<Write>>,
}

/// The standby watch (`lease_api::watch_lease`).
#[derive(Debug, Default)]
pub struct WatchClient {
    /// The open connection.
    conn: Option<u64>,
    /// The list or watch request in flight.
    pending: Option<u64>,
    /// Resume after this resourceVersion (`None`: list first).
    last_rv: Option<u64>,
    retry_gen: u64,
}

/// One open `/leader/watch` stream (`http.rs`, `Api::watch`).
#[derive(Debug)]
pub struct StreamOut {
    id: u64,
    ctrl: usize,
    ctrl_inc: u32,
    rx: watch::Receiver<LeaseView>,
    tick_gen: u64,
    last_delivery: Nanos,
}

pub struct Sidecar {
    pub name: String,
    pub clock: Clock,
    pub wall_offset: i64,
    pub alive: bool,
    pub inc: u32,
    pub frozen: u32,
    elector: Elector,
    leadership: Leadership,
    busy: Option<Busy>,
    wake_gen: u64,
    /// The runner's channel from the watch task: read only while the runner waits.
    watched: VecDeque<WatchItem>,
    watch: WatchClient,
    streams: Vec<StreamOut>,
}

impl Sidecar {
    /// Whether this sidecar knows `holder` as the holder of the Lease: it is that holder, or
    /// the record it last observed names it.
    pub fn knows_holder(&self, holder: &str) -> bool {
        self.name == holder
            || self
                .elector
                .observed()
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref())
                == Some(holder)
    }

    pub fn new(i: usize, clock: Clock, wall_offset: i64, seed: u64, s: &Settings) -> Self {
        Self::named(format!("pod-{i}"), clock, wall_offset, seed, s)
    }

    fn named(name: String, clock: Clock, wall_offset: i64, seed: u64, s: &Settings) -> Self {
        Sidecar {
            elector: Elector::new(&name, NAMESPACE, LEASE_NAME, s.timings.clone(), seed),
            leadership: Leadership::new(&name, format!("{NAMESPACE}/{LEASE_NAME}"), s.grant, None),
            name,
            clock,
            wall_offset,
            alive: false,
            inc: 0,
            frozen: 0,
            busy: None,
            wake_gen: 0,
            watched: VecDeque::new(),
            watch: WatchClient::default(),
            streams: Vec::new(),
        }
    }

    /// A new process: all state lost.
    fn restart(&mut self, seed: u64, s: &Settings) {
        let inc = self.inc + 1;
        let name = std::mem::take(&mut self.name);
        *self = Sidecar {
            inc,
            alive: true,
            ..Sidecar::named(name, self.clock, self.wall_offset, seed, s)
        };
    }

    /// Dies; returns its streams `(id, controller, controller incarnation)`.
    fn kill(&mut self) -> Vec<(u64, usize, u32)> {
        self.alive = false;
        self.frozen = 0;
        self.busy = None;
        self.watched.clear();
        self.watch = WatchClient::default();
        self.streams
            .drain(..)
            .map(|s| (s.id, s.ctrl, s.ctrl_inc))
            .collect()
    }
}

pub struct Controller {
    pub clock: Clock,
    pub alive: bool,
    pub inc: u32,
    pub frozen: u32,
    gate: GateState,
    in_flight: Option<(Ticket, u64)>,
    wake_gen: u64,
    /// The stream being held (`None`: waiting to reconnect).
    pub stream: Option<u64>,
    stream_gen: u64,
    work_gen: u64,
}

impl Controller {
    pub fn new(clock: Clock, s: &Settings) -> Self {
        Controller {
            clock,
            alive: false,
            inc: 0,
            frozen: 0,
            gate: GateState::new(s.poll_interval),
            in_flight: None,
            wake_gen: 0,
            stream: None,
            stream_gen: 0,
            work_gen: 0,
        }
    }

    fn kill(&mut self) -> Option<u64> {
        self.alive = false;
        self.frozen = 0;
        self.in_flight = None;
        self.stream.take()
    }
}

fn sc_name(i: usize) -> String {
    format!("sc{i}")
}

fn ct_name(i: usize) -> String {
    format!("ct{i}")
}

/// The `/leader` body at `now`, as a client parses it.
fn leader_status(l: &Leadership, now: Instant) -> Option<Box<LeaderStatus>> {
    serde_json::from_slice(&status_json(l, now)).ok()
}

fn show(s: &LeaderStatus) -> String {
    if s.is_leader {
        format!("leader term {:?} valid {} ms", s.term, s.valid_for_ms)
    } else {
        format!(
            "not leader (holder {}, term {:?})",
            s.holder.as_deref().unwrap_or("-"),
            s.term
        )
    }
}

impl World {
    fn sc_now(&self, i: usize) -> Instant {
        self.sidecars[i].clock.instant(self.base, self.now)
    }

    fn sc_real(&self, i: usize, at: Instant) -> Nanos {
        self.sidecars[i].clock.real_of(self.base, at)
    }

    fn ct_now(&self, i: usize) -> Instant {
        self.controllers[i].clock.instant(self.base, self.now)
    }

    fn ct_real(&self, i: usize, at: Instant) -> Nanos {
        self.controllers[i].clock.real_of(self.base, at)
    }

    fn send_sidecar(&mut self, i: usize, at: Instant, ev: Ev) {
        let (real, inc) = (self.sc_real(i, at), self.sidecars[i].inc);
        self.at(real, Target::Sidecar(i), Some(inc), ev);
    }

    fn send_controller(&mut self, i: usize, at: Instant, ev: Ev) {
        let (real, inc) = (self.ct_real(i, at), self.controllers[i].inc);
        self.at(real, Target::Controller(i), Some(inc), ev);
    }

    // ---- sidecar ----

    pub fn start_sidecar(&mut self, i: usize) {
        let seed = self.rng.random();
        self.sidecars[i].restart(seed, &self.s);
        tr!(
            self,
            sc_name(i),
            "sidecar starts (process {})",
            self.sidecars[i].inc
        );
        self.run_loop(i);
        self.watch_start(i);
        self.after_sidecar(i);
    }

    pub fn kill_sidecar_process(&mut self, i: usize) -> Vec<(u64, usize, u32)> {
        tr!(self, sc_name(i), "sidecar killed");
        self.sidecars[i].kill()
    }

    /// The runner's loop, up to the point where it waits (for an answer or a timer).
    fn run_loop(&mut self, i: usize) {
        loop {
            if self.sidecars[i].busy.is_some() {
                return;
            }
            let now = self.sc_now(i);
            let wall = wall(self.now, self.sidecars[i].wall_offset);
            let sc = &mut self.sidecars[i];
            let local = sc.leadership.local(now);
            let step = sc.elector.next_step(now, wall, local);
            self.publish(i, now);
            let timeout = self.s.api_timeout;
            match step {
                Step::Read => {
                    let req = self.id();
                    tr!(self, sc_name(i), "GET lease (request {req})");
                    self.sidecars[i].busy = Some(Busy {
                        req,
                        sent: now,
                        write: None,
                    });
                    self.send_api(i, req, Op::Get, false);
                    self.send_sidecar(i, now + timeout, Ev::ScApiTimeout { req });
                    return;
                }
                Step::Write(write) => {
                    let req = self.id();
                    let sc = &mut self.sidecars[i];
                    let deadline = match write.kind {
                        WriteKind::Renew => sc.elector.tenure(now).map(|t| t.valid_until),
                        _ => None,
                    };
                    let timeout =
                        deadline.map_or(timeout, |d| timeout.min(d.saturating_duration_since(now)));
                    let op = if write.create {
                        Op::Create(Box::new(write.lease.clone()))
                    } else {
                        Op::Replace(Box::new(write.lease.clone()))
                    };
                    tr!(
                        self,
                        sc_name(i),
                        "{} ({} rv {}, request {req})",
                        write.kind.as_str(),
                        if write.create { "POST" } else { "PUT" },
                        write
                            .lease
                            .metadata
                            .resource_version
                            .as_deref()
                            .unwrap_or("-")
                    );
                    self.sidecars[i].busy = Some(Busy {
                        req,
                        sent: now,
                        write: Some(write),
                    });
                    self.send_api(i, req, op, false);
                    self.send_sidecar(i, now + timeout, Ev::ScApiTimeout { req });
                    return;
                }
                Step::Wait(until) => {
                    if let Some(item) = self.sidecars[i].watched.pop_front() {
                        self.on_watched(i, item);
                        continue;
                    }
                    // The runner wakes at least every retry period.
                    let cap = now + self.s.timings.retry_period;
                    let until = until.map_or(cap, |u| u.min(cap));
                    self.sidecars[i].wake_gen += 1;
                    let tick = self.sidecars[i].wake_gen;
                    self.send_sidecar(i, until, Ev::ScWake { tick });
                    return;
                }
                Step::Done => return,
            }
        }
    }

    /// `Runner::publish`: tenure to the grant book, Lease facts to the streams, changes.
    fn publish(&mut self, i: usize, now: Instant) {
        let sc = &mut self.sidecars[i];
        sc.leadership.publish(&sc.elector, now);
        let mut restart_watch = false;
        for change in sc.elector.take_changes() {
            match change {
                Change::Acquired { term } => {
                    // The resourceVersion of the write that started the tenure (the elector
                    // has just observed what it wrote): orders tenures as the server did.
                    let rv = sc
                        .elector
                        .observed()
                        .and_then(|l| l.metadata.resource_version.as_deref())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    self.check.acquired.push((self.now, i, term, rv));
                    tr!(self, sc_name(i), "ACQUIRED term {term}");
                }
                Change::WatchStale => {
                    tr!(self, sc_name(i), "WatchStale: restarting the watch");
                    restart_watch = true;
                }
                other => tr!(self, sc_name(i), "{other:?}"),
            }
        }
        if restart_watch {
            // `StandbyWatch::restart`: abandon the connection, list and watch again; reports
            // of the old one still queued stay queued.
            let w = &mut self.sidecars[i].watch;
            w.retry_gen += 1;
            w.last_rv = None;
            self.watch_start(i);
        }
    }

    fn complete(&mut self, i: usize, reply: Reply) {
        let Some(busy) = self.sidecars[i].busy.take() else {
            return;
        };
        let now = self.sc_now(i);
        tr!(self, sc_name(i), "request {}: {}", busy.req, short(&reply));
        let e = &mut self.sidecars[i].elector;
        match busy.write {
            None => match reply {
                Reply::Found(l) => e.on_read(Some(&l), now),
                Reply::NotFound => e.on_read(None, now),
                _ => e.on_read_failed(now),
            },
            Some(w) => match reply {
                Reply::Stored(l) => e.on_written(&w, &l, busy.sent, now),
                Reply::Conflict => e.on_conflict(&w),
                Reply::Gone if !w.create => e.on_gone(&w, now),
                _ => e.on_write_failed(&w, busy.sent, now),
            },
        }
        self.run_loop(i);
    }

    fn on_watched(&mut self, i: usize, item: WatchItem) {
        let now = self.sc_now(i);
        match item {
            WatchItem::Applied(l) => {
                tr!(self, sc_name(i), "watch: {}", super::world::describe(&l));
                self.sidecars[i].elector.on_watched(&l, now);
            }
            WatchItem::Listed(l) => {
                tr!(self, sc_name(i), "list: {}", super::world::describe(&l));
                self.sidecars[i].elector.on_listed(&l, now);
            }
            WatchItem::Absent(rv) => {
                tr!(
                    self,
                    sc_name(i),
                    "watch: absent at rv {}",
                    rv.as_deref().unwrap_or("-")
                );
                self.sidecars[i]
                    .elector
                    .on_watched_absent(rv.as_deref(), now);
            }
        }
    }

    fn watch_start(&mut self, i: usize) {
        let req = self.id();
        let w = &mut self.sidecars[i].watch;
        w.pending = Some(req);
        w.conn = None;
        let from = w.last_rv;
        self.send_api(i, req, Op::Watch { from }, true);
        let at = self.sc_now(i) + self.s.api_timeout;
        self.send_sidecar(i, at, Ev::ScWatchTimeout { req });
    }

    /// `watch_lease` waits a retry period after a failure.
    fn watch_retry(&mut self, i: usize) {
        self.sidecars[i].watch.retry_gen += 1;
        let tick = self.sidecars[i].watch.retry_gen;
        let at = self.sc_now(i) + self.s.timings.retry_period;
        self.send_sidecar(i, at, Ev::ScWatchRetry { tick });
    }

    fn watched_item(&mut self, i: usize, item: WatchItem) {
        let sc = &mut self.sidecars[i];
        sc.watch.last_rv = item.rv().or(sc.watch.last_rv);
        sc.watched.push_back(item);
        if sc.busy.is_none() {
            sc.wake_gen += 1;
            self.run_loop(i);
        }
    }

    pub fn sidecar_event(&mut self, i: usize, ev: Ev) {
        match ev {
            Ev::ScWake { tick } if tick == self.sidecars[i].wake_gen => {
                self.run_loop(i);
            }
            Ev::ScApi { req, reply }
                if self.sidecars[i].busy.as_ref().is_some_and(|b| b.req == req) =>
            {
                self.complete(i, reply);
            }
            Ev::ScApiTimeout { req }
                if self.sidecars[i].busy.as_ref().is_some_and(|b| b.req == req) =>
            {
                tr!(self, sc_name(i), "request {req} timed out");
                self.complete(i, Reply::Error);
            }
            Ev::ScWatchReply { req, reply } if self.sidecars[i].watch.pending == Some(req) => {
                self.sidecars[i].watch.pending = None;
                match reply {
                    Reply::WatchStarted { conn, list } => {
                        self.sidecars[i].watch.conn = Some(conn);
                        if let Some(item) = list {
                            self.watched_item(i, item);
                        }
                    }
                    _ => self.watch_retry(i),
                }
            }
            Ev::ScWatchTimeout { req } if self.sidecars[i].watch.pending == Some(req) => {
                self.sidecars[i].watch.pending = None;
                self.watch_retry(i);
            }
            Ev::ScWatchRetry { tick } if tick == self.sidecars[i].watch.retry_gen => {
                self.watch_start(i);
            }
            Ev::ScWatchEvent { conn, item } if self.sidecars[i].watch.conn == Some(conn) => {
                self.watched_item(i, item);
            }
            Ev::ScWatchBroken { conn } if self.sidecars[i].watch.conn == Some(conn) => {
                self.sidecars[i].watch.conn = None;
                self.watch_retry(i);
            }
            Ev::ScStreamTick { stream, tick } => {
                if let Some(k) = self.sidecars[i]
                    .streams
                    .iter()
                    .position(|s| s.id == stream && s.tick_gen == tick)
                {
                    self.emit(i, k);
                }
            }
            Ev::ScLeaderGet {
                ctrl,
                ctrl_inc,
                req,
            } => {
                let now = self.sc_now(i);
                let status = leader_status(&self.sidecars[i].leadership, now);
                let at = self.now + self.local_delay();
                let ev = Ev::CtAnswer { req, status };
                self.at(at, Target::Controller(ctrl), Some(ctrl_inc), ev);
            }
            Ev::ScStreamOpen {
                ctrl,
                ctrl_inc,
                stream,
            } => {
                let rx = self.sidecars[i].leadership.subscribe();
                self.sidecars[i].streams.push(StreamOut {
                    id: stream,
                    ctrl,
                    ctrl_inc,
                    rx,
                    tick_gen: 0,
                    last_delivery: self.now,
                });
                let k = self.sidecars[i].streams.len() - 1;
                self.emit(i, k);
            }
            Ev::ScStreamClosed { stream } => self.sidecars[i].streams.retain(|s| s.id != stream),
            _ => {}
        }
    }

    /// One stream event, produced as `http.rs` produces it, and the wait for the next one.
    fn emit(&mut self, i: usize, k: usize) {
        let now = self.sc_now(i);
        let grant = self.s.grant;
        let sc = &mut self.sidecars[i];
        sc.streams[k].rx.borrow_and_update();
        let status = leader_status(&sc.leadership, now);
        let wait = if sc.leadership.is_granting(now) {
            grant / 2
        } else {
            STREAM_KEEPALIVE
        };
        sc.streams[k].tick_gen += 1;
        let (id, tick) = (sc.streams[k].id, sc.streams[k].tick_gen);
        self.send_sidecar(i, now + wait, Ev::ScStreamTick { stream: id, tick });
        let d = self.local_delay();
        let so = &mut self.sidecars[i].streams[k];
        so.last_delivery = so.last_delivery.max(self.now + d);
        let (at, ctrl, inc) = (so.last_delivery, so.ctrl, so.ctrl_inc);
        let ev = match status {
            Some(status) => Ev::CtStreamEvent { stream: id, status },
            None => Ev::CtStreamLost { stream: id },
        };
        self.at(at, Target::Controller(ctrl), Some(inc), ev);
    }

    /// After every step of a sidecar: streams whose view changed send at once.
    pub fn after_sidecar(&mut self, i: usize) {
        for k in 0..self.sidecars[i].streams.len() {
            if self.sidecars[i].streams[k]
                .rx
                .has_changed()
                .unwrap_or(false)
            {
                self.emit(i, k);
            }
        }
        self.sample_sidecar(i);
    }

    pub fn sample_sidecar(&mut self, i: usize) {
        let sc = &self.sidecars[i];
        let until = if sc.alive {
            let now = self.sc_now(i);
            sc.elector
                .tenure(now)
                .map(|t| (t.term, self.sc_real(i, t.valid_until)))
        } else {
            None
        };
        match self.check.tenures[i].sample(self.now, until.map(|u| u.1)) {
            Some(true) => tr!(
                self,
                sc_name(i),
                "holds a tenure (term {})",
                until.map_or(0, |u| u.0)
            ),
            Some(false) => tr!(self, sc_name(i), "tenure over"),
            None => {}
        }
    }

    // ---- controller ----

    pub fn start_controller(&mut self, i: usize) {
        let ct = &mut self.controllers[i];
        *ct = Controller {
            inc: ct.inc + 1,
            alive: true,
            ..Controller::new(ct.clock, &self.s)
        };
        tr!(
            self,
            ct_name(i),
            "controller starts (process {})",
            self.controllers[i].inc
        );
        self.open_stream(i);
        self.follow(i);
        self.schedule_work(i);
        self.sample_controller(i);
    }

    pub fn kill_controller_process(&mut self, i: usize) -> Option<u64> {
        tr!(self, ct_name(i), "controller killed");
        self.controllers[i].kill()
    }

    /// One turn of `follow()`: send `GET /leader` when due, else sleep until it is due or the
    /// grant runs out.
    fn follow(&mut self, i: usize) {
        let now = self.ct_now(i);
        let ct = &mut self.controllers[i];
        ct.wake_gen += 1;
        let due = ct.gate.poll_due(now);
        if due.is_some_and(|d| d <= now) {
            let ticket = ct.gate.poll_sent(now);
            let inc = ct.inc;
            let req = self.id();
            self.controllers[i].in_flight = Some((ticket, req));
            let at = self.now + self.local_delay();
            let ev = Ev::ScLeaderGet {
                ctrl: i,
                ctrl_inc: inc,
                req,
            };
            self.at(at, Target::Sidecar(i), None, ev);
            let timeout = now + self.s.poll_interval;
            self.send_controller(i, timeout, Ev::CtTimeout { req });
            return;
        }
        let expiry = ct.gate.grant(now).map(|g| g.until);
        let wake = match (due, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wake {
            let tick = ct.wake_gen;
            self.send_controller(i, at, Ev::CtWake { tick });
        }
    }

    fn open_stream(&mut self, i: usize) {
        let id = self.id();
        self.controllers[i].stream = Some(id);
        let inc = self.controllers[i].inc;
        let at = self.now + self.local_delay();
        let ev = Ev::ScStreamOpen {
            ctrl: i,
            ctrl_inc: inc,
            stream: id,
        };
        self.at(at, Target::Sidecar(i), None, ev);
    }

    fn schedule_work(&mut self, i: usize) {
        self.controllers[i].work_gen += 1;
        let tick = self.controllers[i].work_gen;
        let at = self.ct_now(i) + Duration::from_nanos(self.rng.random_range(100 * MS..=400 * MS));
        self.send_controller(i, at, Ev::CtWork { tick });
    }

    /// A status write, in flight from now until it lands (at most 300 ms later, within the
    /// safety margin).
    fn status_write(&mut self, i: usize) {
        let d = if self.rng.random_bool(0.05) {
            self.rng.random_range(20 * MS..=300 * MS)
        } else {
            self.rng.random_range(MS..=20 * MS)
        };
        self.check.writes[i].push((self.now, self.now + d));
    }

    pub fn controller_event(&mut self, i: usize, ev: Ev) {
        let now = self.ct_now(i);
        let in_flight =
            |w: &World, req: u64| w.controllers[i].in_flight.is_some_and(|(_, r)| r == req);
        match ev {
            Ev::CtWake { tick } if tick == self.controllers[i].wake_gen => {
                self.follow(i);
            }
            Ev::CtAnswer { req, status } => {
                if !in_flight(self, req) {
                    return;
                }
                let Some((ticket, _)) = self.controllers[i].in_flight.take() else {
                    return;
                };
                let gate = &mut self.controllers[i].gate;
                match &status {
                    Some(s) => gate.on_answer(ticket, s),
                    None => gate.on_poll_failed(ticket),
                }
                tr!(
                    self,
                    ct_name(i),
                    "GET /leader: {}",
                    status.as_deref().map_or_else(|| "refused".to_owned(), show)
                );
                self.follow(i);
            }
            Ev::CtTimeout { req } => {
                if !in_flight(self, req) {
                    return;
                }
                if let Some((ticket, _)) = self.controllers[i].in_flight.take() {
                    self.controllers[i].gate.on_poll_failed(ticket);
                }
                tr!(self, ct_name(i), "GET /leader timed out");
                self.follow(i);
            }
            Ev::CtStreamEvent { stream, status } if self.controllers[i].stream == Some(stream) => {
                self.controllers[i].gate.on_stream_event(&status);
                tr!(self, ct_name(i), "stream: {}", show(&status));
                self.follow(i);
            }
            Ev::CtStreamLost { stream } if self.controllers[i].stream == Some(stream) => {
                let ct = &mut self.controllers[i];
                ct.gate.on_stream_lost();
                ct.stream = None;
                ct.stream_gen += 1;
                let tick = ct.stream_gen;
                tr!(self, ct_name(i), "stream lost");
                let at = now + self.s.poll_interval;
                self.send_controller(i, at, Ev::CtStreamRetry { tick });
                self.follow(i);
            }
            Ev::CtStreamRetry { tick } if tick == self.controllers[i].stream_gen => {
                self.open_stream(i);
            }
            Ev::CtWork { tick } if tick == self.controllers[i].work_gen => {
                if self.controllers[i].gate.grant(now).is_some() {
                    self.status_write(i);
                }
                self.schedule_work(i);
            }
            _ => {}
        }
    }

    pub fn sample_controller(&mut self, i: usize) {
        let ct = &self.controllers[i];
        let grant = if ct.alive {
            ct.gate.grant(self.ct_now(i))
        } else {
            None
        };
        let until = grant.map(|g| self.ct_real(i, g.until));
        match self.check.windows[i].sample(self.now, until) {
            Some(true) => {
                tr!(
                    self,
                    ct_name(i),
                    "ACTIVE (term {:?}, grant until {} s)",
                    grant.and_then(|g| g.term),
                    secs(until.unwrap_or(0)).trim()
                );
                self.status_write(i);
            }
            Some(false) => tr!(self, ct_name(i), "not active"),
            None => {}
        }
    }
}
