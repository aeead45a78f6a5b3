//! The event loop: one epoll instance for the listener, every connection and the
//! signals, one timer heap. Single-threaded; time comes from the loop itself.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use socket2::Socket;

use super::capture::{Capture, Filter, Segment};
use super::conn::{Conn, Ctx};
use super::predict::KernelTcp;
use super::timers::{RESERVED_FROM, TimerKind, Timers, later};
use crate::plan::{EndPlan, PcapFile};
use crate::report::progress::Progress;
use crate::report::{EventKind, Report, Role};
use crate::sys::{Kernel, Linux};
use crate::vocab::CloseMode;

mod churn;
mod control;
mod listen;

const TOKEN_LISTENER: u64 = u64::MAX;
const TOKEN_SIGNAL: u64 = u64::MAX - 1;
const TOKEN_PROGRESS: u64 = u64::MAX - 2;
const TOKEN_CHURN: u64 = u64::MAX - 3;
const TOKEN_CAPTURE: u64 = u64::MAX - 4;
const TOKEN_TICK: u64 = u64::MAX - 5;
// Every token above is the loop's own: a purge of ended connections' timers keeps them.
const _: () = assert!(TOKEN_TICK >= RESERVED_FROM);
/// Captured segments kept while their connection is not yet known.
const MAX_PENDING_SEGMENTS: usize = 1024;
/// Most batches of captured packets read in one go (each up to 256 packets).
const CAPTURE_CATCH_UP: usize = 16;
/// How often a progress line is emitted when asked for.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// TCP_INFO sampling: at most this often per connection…
const SAMPLE_MIN: Duration = Duration::from_millis(50);
/// …and at most this many samples per second over all connections.
const SAMPLES_PER_SEC: u32 = 100;

/// What the loop hands to its caller as it happens.
#[derive(Debug)]
pub enum Emit {
    /// A connection ended; its report.
    Report(Box<Report>),
    /// Something the user should know that is not part of a report.
    Notice(String),
    /// What is being waited for, and how far along (only with [`Reactor::show_progress`]).
    Progress(Progress),
    /// The listener accepted a connection from this peer, which closes in `close`
    /// (only with [`Reactor::tell_accepts`]).
    Accepted {
        peer: SocketAddr,
        at: Instant,
        close: CloseMode,
    },
    /// The caller's clock (only with [`Reactor::tick_every`]): a chance to stop.
    Tick(Instant),
    /// A connection that follows the other end (`follow_peer`) just ended in
    /// `close`: when, and the inode of the other end's socket read right before.
    Acted {
        at: Instant,
        close: CloseMode,
        peer_inode: u32,
    },
    /// A connection that follows the other end first read the other end's socket
    /// with a file (the program accepted it): that socket's inode, told once,
    /// before the action when the program accepted in time.
    PeerKnown { close: CloseMode, peer_inode: u32 },
}

/// Whether the caller wants the loop to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Nothing left to observe, or the caller said stop.
    Finished,
    /// SIGINT, SIGTERM or SIGHUP arrived; open connections were reported as `open`.
    Interrupted,
}

/// `connect --count`: connections still to make, at most `concurrency` at once,
/// at most one per `interval`.
struct Churn {
    addr: SocketAddr,
    plan: Arc<EndPlan>,
    timeout: Duration,
    left: u64,
    concurrency: usize,
    interval: Option<Duration>,
    next_at: Instant,
    fd_limit_told: bool,
}

struct Listener {
    sock: Socket,
    /// The listening address when it is one address (not 0.0.0.0 or ::).
    local: Option<SocketAddr>,
    plan: Arc<EndPlan>,
    /// Plans for the next accepted connections, one each, before `plan`.
    queued: VecDeque<Arc<EndPlan>>,
    /// Every plan ever queued, in the order given: a plan given back goes back in its place.
    order: Vec<Arc<EndPlan>>,
    /// Hand the caller an [`Emit::Accepted`] per connection.
    tell: bool,
    max_conns: Option<usize>,
    paused: bool,
    emfile_told: bool,
    /// Connections closed at once for `--max-conns` since the last notice, and
    /// when that was: a flood of them is told at most every 10 s.
    capped: u64,
    capped_told: Option<Instant>,
}

pub struct Reactor {
    epoll: Epoll,
    /// Boxed: a table sized for a past peak then costs a pointer per slot, not a `Conn`.
    conns: HashMap<u64, Box<Conn>>,
    partners: HashMap<u64, u64>,
    timers: Timers,
    next_token: u64,
    listener: Option<Listener>,
    signals: Option<SignalFd>,
    kernel: KernelTcp,
    /// What connections read from the kernel (a fake in unit tests).
    os: &'static dyn Kernel,
    buf: Vec<u8>,
    again: Vec<u64>,
    progress: bool,
    /// How often [`Emit::Tick`] is handed out, when the caller asked for it.
    tick: Option<Duration>,
    churn: Option<Churn>,
    /// Connections that ended and wait to be reported.
    done: Vec<u64>,
    capture: Option<Capture>,
    /// `--pcap`: the connections that keep their packets, by (local, peer)…
    by_tuple: HashMap<(SocketAddr, SocketAddr), u64>,
    /// …and those whose local address was not known yet (a connect in progress).
    unplaced: Vec<u64>,
    pending_segments: Vec<Segment>,
    /// Wake-ups that found the listener's accept queue full.
    queue_full: u64,
    /// `path`: what the far end saw of finished test connections, by token.
    book: control::Book,
    /// `path`: control connections waiting for their question or its answer.
    controls: HashMap<u64, control::Control>,
    /// Where `keep_vanished` connections stood when their sockets vanished.
    vanished: Vec<crate::sys::Vanished>,
    /// Actions of `follow_peer` connections not yet handed to the caller.
    acted: Vec<Emit>,
}

impl Reactor {
    pub fn new() -> anyhow::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
        Ok(Self {
            epoll,
            conns: HashMap::new(),
            partners: HashMap::new(),
            timers: Timers::default(),
            next_token: 0,
            listener: None,
            signals: None,
            kernel: KernelTcp::read(),
            os: &Linux,
            buf: vec![0; 64 * 1024],
            again: Vec::new(),
            tick: None,
            progress: false,
            churn: None,
            done: Vec::new(),
            capture: None,
            by_tuple: HashMap::new(),
            unplaced: Vec::new(),
            pending_segments: Vec::new(),
            queue_full: 0,
            book: control::Book::default(),
            controls: HashMap::new(),
            vanished: Vec::new(),
            acted: Vec::new(),
        })
    }

    /// Captures the packets to or from `filter` into a pcap file, when given, and
    /// gives each connection's report its packets.
    pub fn capture(&mut self, file: Option<&PcapFile>, filter: Filter) -> anyhow::Result<()> {
        let capture = Capture::open(file, filter)?;
        self.epoll
            .add(
                capture.socket(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CAPTURE),
            )
            .context("epoll_ctl(capture)")?;
        self.capture = Some(capture);
        Ok(())
    }

    /// Narrows the capture to `filter` (once the listener's port is known).
    pub fn set_capture_filter(&mut self, filter: Filter) -> anyhow::Result<()> {
        match self.capture.as_mut() {
            Some(capture) => capture.set_filter(filter),
            None => Ok(()),
        }
    }

    /// Packets written to the pcap file so far.
    pub fn captured(&self) -> Option<u64> {
        self.capture.as_ref().map(|c| c.written)
    }

    /// Packets the kernel dropped because the capture fell behind, so far
    /// (`PACKET_STATISTICS`); `None` without a capture.
    pub fn capture_dropped(&mut self) -> Option<u64> {
        self.capture.as_mut().map(Capture::dropped)
    }

    fn read_capture(&mut self) -> anyhow::Result<()> {
        let Some(capture) = self.capture.as_mut() else {
            return Ok(());
        };
        // Catch up on a backlog (bounded): a report built now needs its last segments.
        let mut segments = Vec::new();
        for _ in 0..CAPTURE_CATCH_UP {
            let (batch, more) = capture.drain()?;
            segments.extend(batch);
            if !more {
                break;
            }
        }
        let pending = std::mem::take(&mut self.pending_segments);
        for seg in pending.into_iter().chain(segments) {
            let taken = self
                .owner(&seg)
                .and_then(|token| self.conns.get_mut(&token))
                .is_some_and(|conn| conn.take_segment(&seg));
            if !taken {
                if self.pending_segments.len() >= MAX_PENDING_SEGMENTS {
                    self.pending_segments.remove(0);
                }
                self.pending_segments.push(seg);
            }
        }
        Ok(())
    }

    /// The connection a captured segment belongs to, looked up by its 4-tuple:
    /// no scan of every connection per segment.
    fn owner(&mut self, seg: &Segment) -> Option<u64> {
        let (src, dst) = (canonical(seg.src), canonical(seg.dst));
        let find = |map: &HashMap<(SocketAddr, SocketAddr), u64>| {
            map.get(&(src, dst))
                .or_else(|| map.get(&(dst, src)))
                .copied()
        };
        if let Some(token) = find(&self.by_tuple) {
            return Some(token);
        }
        if self.unplaced.is_empty() {
            return None;
        }
        // A connect that completed since: its local address is known now.
        for token in std::mem::take(&mut self.unplaced) {
            self.place(token);
        }
        find(&self.by_tuple)
    }

    /// Indexes a connection that keeps its packets by its 4-tuple, or keeps it
    /// aside until its local address is known.
    fn place(&mut self, token: u64) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        match conn.local() {
            Some(local) => {
                self.by_tuple
                    .insert((canonical(local), canonical(conn.peer())), token);
            }
            None => self.unplaced.push(token),
        }
    }

    /// Takes a connection that leaves the loop out of the 4-tuple index.
    fn unplace(&mut self, token: u64, conn: &Conn) {
        if let Some(local) = conn.local() {
            let key = (canonical(local), canonical(conn.peer()));
            if self.by_tuple.get(&key) == Some(&token) {
                self.by_tuple.remove(&key);
            }
        }
        self.unplaced.retain(|t| *t != token);
    }

    /// Emits [`Emit::Progress`] lines while connections are open.
    pub fn show_progress(&mut self) {
        self.progress = true;
        self.timers.at(
            later(Instant::now(), PROGRESS_EVERY),
            TOKEN_PROGRESS,
            TimerKind::Sample,
        );
    }

    /// Hands the caller an [`Emit::Tick`] every `every`, so that it can end the run
    /// on a clock of its own even while nothing else happens.
    pub fn tick_every(&mut self, every: Duration) {
        self.tick = Some(every);
        self.timers
            .at(later(Instant::now(), every), TOKEN_TICK, TimerKind::Sample);
    }

    /// Routes SIGINT, SIGTERM and SIGHUP (the terminal closed) into the loop (they
    /// are blocked for the thread). A signal ignored at start, as under `nohup`,
    /// stays ignored: the kernel discards it before the signalfd.
    pub fn catch_signals(&mut self) -> anyhow::Result<()> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        set.thread_block().context("block SIGINT/SIGTERM/SIGHUP")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("signalfd")?;
        self.epoll
            .add(
                fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
            )
            .context("epoll_ctl(signalfd)")?;
        self.signals = Some(fd);
        Ok(())
    }

    /// Adds both ends of an established connection (`lab`), linked so each
    /// knows when the other acted.
    pub fn add_pair(
        &mut self,
        (a, a_plan): (Socket, EndPlan),
        (b, b_plan): (Socket, EndPlan),
    ) -> anyhow::Result<(u64, u64)> {
        let ta = self.add_established(a, Role::Connect, a_plan)?;
        let tb = self.add_established(b, Role::Serve, b_plan)?;
        self.partners.insert(ta, tb);
        self.partners.insert(tb, ta);
        Ok((ta, tb))
    }

    fn add_established(&mut self, sock: Socket, role: Role, plan: EndPlan) -> anyhow::Result<u64> {
        let peer = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .context("getpeername")?;
        sock.set_nonblocking(true).context("O_NONBLOCK")?;
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        self.adopt(sock, role, (local, peer), Arc::new(plan), Instant::now())
    }

    fn adopt(
        &mut self,
        sock: Socket,
        role: Role,
        (local, peer): (Option<SocketAddr>, SocketAddr),
        plan: Arc<EndPlan>,
        start: Instant,
    ) -> anyhow::Result<u64> {
        let token = self.token();
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        self.epoll
            .add(sock.as_fd(), EpollEvent::new(flags, token))
            .context("epoll_ctl(add)")?;
        let kind = if role == Role::Serve {
            EventKind::Accept
        } else {
            EventKind::Connect
        };
        let mut conn = Conn::established(sock, role, local, peer, plan, start);
        if self.capture.is_some() {
            conn.keep_packets();
            self.pending_segments.retain(|seg| !conn.take_segment(seg));
        }
        let sample_every = self.sample_every();
        let mut ctx = Ctx {
            epoll: &self.epoll,
            timers: &mut self.timers,
            tokens: &mut self.book.tokens,
            token,
            now: Instant::now(),
            os: self.os,
            buf: &mut self.buf,
            sample_every,
            again: false,
            act_now: false,
        };
        conn.begin(&mut ctx, kind);
        if conn.is_done() {
            self.done.push(token);
        }
        self.conns.insert(token, Box::new(conn));
        if self.capture.is_some() {
            self.place(token);
        }
        Ok(token)
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn sample_every(&self) -> Duration {
        let spread = Duration::from_secs(1) * (self.conns.len() as u32 + 1) / SAMPLES_PER_SEC;
        spread.max(SAMPLE_MIN)
    }

    /// Runs until nothing is left to observe, `sink` says stop, or a signal arrives.
    pub fn run(
        &mut self,
        sink: &mut dyn FnMut(Emit) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<RunEnd> {
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            if self.done.is_empty() && self.refill(sink)? == Flow::Stop {
                return Ok(RunEnd::Finished);
            }
            if self.conns.is_empty() && self.listener.is_none() && self.churn.is_none() {
                return Ok(RunEnd::Finished);
            }
            let now = Instant::now();
            let timeout = if self.again.is_empty() && self.done.is_empty() {
                match self.timers.wait_ms(now) {
                    Some(ms) => EpollTimeout::try_from(ms.min(60_000)).unwrap_or(EpollTimeout::MAX),
                    None => EpollTimeout::NONE,
                }
            } else {
                EpollTimeout::ZERO
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e).context("epoll_wait"),
            };
            let now = Instant::now();
            // Reports of connections that ended last round are built only now, after
            // the wait: nothing stands between a close action and the peer's wake-up.
            if self.reap(sink)? == Flow::Stop {
                return Ok(RunEnd::Finished);
            }
            if self.refill(sink)? == Flow::Stop {
                return Ok(RunEnd::Finished);
            }
            let mut again = std::mem::take(&mut self.again);
            for event in &events[..n] {
                match event.data() {
                    TOKEN_SIGNAL => {
                        self.interrupt(now, sink)?;
                        return Ok(RunEnd::Interrupted);
                    }
                    TOKEN_LISTENER => {
                        if self.accept_all(now, sink)? == Flow::Stop {
                            return Ok(RunEnd::Finished);
                        }
                    }
                    TOKEN_CAPTURE => self.read_capture()?,
                    token if self.is_control(token) => self.control_ready(token, now),
                    token => {
                        again.retain(|t| *t != token);
                        self.dispatch(token, now, |conn, ctx| conn.on_ready(ctx, event.events()));
                    }
                }
            }
            for token in again {
                self.dispatch(token, now, |conn, ctx| {
                    conn.on_ready(ctx, EpollFlags::EPOLLIN);
                });
            }
            while let Some((token, kind)) = self.timers.pop_due(Instant::now()) {
                if token == TOKEN_LISTENER {
                    self.resume_accepting();
                    continue;
                }
                if token == TOKEN_PROGRESS {
                    self.emit_progress(sink)?;
                    continue;
                }
                if token == TOKEN_CHURN {
                    continue;
                }
                if token == TOKEN_TICK {
                    let now = Instant::now();
                    if let Some(every) = self.tick {
                        self.timers
                            .at(later(now, every), TOKEN_TICK, TimerKind::Sample);
                    }
                    if sink(Emit::Tick(now))? == Flow::Stop {
                        return Ok(RunEnd::Finished);
                    }
                    continue;
                }
                let now = Instant::now();
                if self.is_control(token) {
                    self.control_timer(token, now);
                    continue;
                }
                self.dispatch(token, now, |conn, ctx| conn.on_timer(ctx, kind));
            }
            for acted in std::mem::take(&mut self.acted) {
                if sink(acted)? == Flow::Stop {
                    return Ok(RunEnd::Finished);
                }
            }
            // Without a partner in this process no wake-up is waiting on the
            // reports: build them now rather than after another round.
            let unpartnered = !self.done.iter().any(|t| self.partners.contains_key(t));
            if !self.done.is_empty() && unpartnered && self.reap(sink)? == Flow::Stop {
                return Ok(RunEnd::Finished);
            }
        }
    }

    /// Whether `token` is a `path` control connection's; without any, no lookup
    /// (hashing) is paid for on every event of every connection.
    fn is_control(&self, token: u64) -> bool {
        !self.controls.is_empty() && self.controls.contains_key(&token)
    }

    fn dispatch(&mut self, token: u64, now: Instant, f: impl FnOnce(&mut Conn, &mut Ctx<'_>)) {
        self.dispatch_with(token, now, false, f);
    }

    /// `act_now`: a close action already due runs in this call, not on a timer.
    fn dispatch_with(
        &mut self,
        token: u64,
        now: Instant,
        act_now: bool,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>),
    ) {
        let sample_every = self.sample_every();
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut ctx = Ctx {
            epoll: &self.epoll,
            timers: &mut self.timers,
            tokens: &mut self.book.tokens,
            token,
            now,
            os: self.os,
            buf: &mut self.buf,
            sample_every,
            again: false,
            act_now,
        };
        f(conn, &mut ctx);
        if ctx.again {
            self.again.push(token);
        }
        if let Some((close, peer_inode)) = conn.take_peer_known() {
            self.acted.push(Emit::PeerKnown { close, peer_inode });
        }
        if let Some((at, close, peer_inode)) = conn.take_acted() {
            self.acted.push(Emit::Acted {
                at,
                close,
                peer_inode,
            });
        }
        // `serve`: a `path` control connection leaves the observer, unreported.
        if let Some((sock, rest)) = conn.take_control() {
            if let Some(conn) = self.conns.remove(&token) {
                self.unplace(token, &conn);
            }
            self.open_control(token, sock, rest, now);
            return;
        }
        if conn.is_done() && !self.done.contains(&token) {
            self.done.push(token);
        }
        let action = conn.action();
        if let (Some(action), Some(partner)) = (action, self.partners.get(&token))
            && let Some(other) = self.conns.get_mut(partner)
        {
            other.set_peer_action(action);
        }
    }

    fn emit_progress(
        &mut self,
        sink: &mut dyn FnMut(Emit) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        self.timers.at(
            later(now, PROGRESS_EVERY),
            TOKEN_PROGRESS,
            TimerKind::Sample,
        );
        let line = match self.conns.len() {
            0 => return Ok(()),
            1 => self
                .conns
                .values()
                .find_map(|c| c.progress(now, self.kernel)),
            n => Some(Progress::Open { connections: n }),
        };
        if let Some(line) = line {
            sink(Emit::Progress(line))?;
        }
        Ok(())
    }

    /// Emits the reports of finished connections; ends a `lab` holder whose partner is done.
    fn reap(&mut self, sink: &mut dyn FnMut(Emit) -> anyhow::Result<Flow>) -> anyhow::Result<Flow> {
        if !self.done.is_empty() && self.capture.is_some() {
            self.read_capture()?;
        }
        let done = std::mem::take(&mut self.done);
        let mut flow = Flow::Continue;
        for token in done {
            let Some(mut conn) = self.conns.remove(&token) else {
                continue;
            };
            self.vanished.extend(conn.take_vanished());
            self.unplace(token, &conn);
            if let Some(partner) = self.partners.remove(&token) {
                self.partners.remove(&partner);
                // A `drop`/`hang` holder with no --hold of its own lasts until its observer is done.
                if let Some(other) = self.conns.get_mut(&partner).filter(|c| c.is_holding()) {
                    other.end_hold(Instant::now());
                    self.done.push(partner);
                }
            }
            if let Some(sock) = conn.socket() {
                let _ = self.epoll.delete(sock.as_fd());
            }
            self.give_back_plan(&conn);
            let view = conn.far_view();
            let report = (*conn).into_report(self.kernel);
            if let Some(view) = view {
                self.book_report(view, Instant::now());
            }
            if sink(Emit::Report(Box::new(report)))? == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        if flow == Flow::Stop {
            self.shutdown_all();
        }
        self.trim();
        Ok(flow)
    }

    /// The connections whose sockets vanished (`drop`, `reboot`) with
    /// `keep_vanished`, as they stood then; the list is emptied.
    pub fn take_vanished(&mut self) -> Vec<crate::sys::Vanished> {
        std::mem::take(&mut self.vanished)
    }

    /// A queued plan ([`Reactor::queue_plans`]) whose connection ended before its
    /// action was never carried out (a health check, a port scan, a client that
    /// left at once): it goes back into the queue, in its place, for the next
    /// connections.
    fn give_back_plan(&mut self, conn: &Conn) {
        let Some(listener) = &mut self.listener else {
            return;
        };
        if conn.role() != Role::Serve || conn.action().is_some() {
            return;
        }
        let place = |plan: &Arc<EndPlan>| listener.order.iter().position(|p| Arc::ptr_eq(p, plan));
        let Some(mine) = place(conn.plan()) else {
            return;
        };
        let at = listener
            .queued
            .iter()
            .position(|p| place(p).is_some_and(|theirs| theirs > mine))
            .unwrap_or(listener.queued.len());
        listener.queued.insert(at, Arc::clone(conn.plan()));
    }

    /// Gives back what a past peak of connections left behind: the table's
    /// slots, and the timers of connections that ended.
    fn trim(&mut self) {
        if self.conns.capacity() > 64 && self.conns.len() * 4 < self.conns.capacity() {
            self.conns.shrink_to(self.conns.len() * 2);
        }
        let (conns, controls) = (&self.conns, &self.controls);
        self.timers
            .purge(|token| conns.contains_key(&token) || controls.contains_key(&token));
    }

    fn interrupt(
        &mut self,
        now: Instant,
        sink: &mut dyn FnMut(Emit) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<()> {
        for conn in self.conns.values_mut() {
            conn.abort(self.os, now, "interrupted (SIGINT/SIGTERM/SIGHUP)");
        }
        self.done = self.conns.keys().copied().collect();
        self.controls.clear();
        self.listener = None;
        self.churn = None;
        self.reap(sink)?;
        Ok(())
    }

    /// Ends every connection quietly (after `--once`).
    fn shutdown_all(&mut self) {
        let now = Instant::now();
        for conn in self.conns.values_mut() {
            conn.abort(self.os, now, "tcpbye is exiting");
        }
        self.conns.clear();
        self.by_tuple.clear();
        self.unplaced.clear();
        self.controls.clear();
        self.listener = None;
    }
}

/// The address with an IPv4-mapped IPv6 address as plain IPv4, as the capture
/// reports it.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caller's tick is re-armed only when it fires: a purge that dropped it
    /// would leave `check --listen` waiting for a clock that never comes.
    #[test]
    fn trim_keeps_the_tick_among_stale_timers() {
        let mut reactor = Reactor::new().unwrap();
        reactor.tick_every(Duration::from_millis(50));
        let later_on = Instant::now() + Duration::from_secs(100);
        for token in 1..2000 {
            reactor.timers.at(later_on, token, TimerKind::Sample);
        }
        reactor.trim();
        assert!(!reactor.timers.has(1), "stale timers were not purged");
        assert!(reactor.timers.has(TOKEN_TICK), "the tick was purged");
    }

    /// A connected loopback pair: (connecting end, accepted end).
    fn pair() -> (Socket, Socket) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (Socket::from(a), Socket::from(b))
    }

    fn observer(timeout: Duration) -> EndPlan {
        EndPlan {
            timeout: Some(timeout),
            ..EndPlan::default()
        }
    }

    /// The same bug in a running loop: every turn trims, and the tick still
    /// reaches the caller, who stops the loop long before the connections' timeout.
    #[test]
    fn the_tick_reaches_the_caller_through_purges_in_a_running_loop() {
        let mut reactor = Reactor::new().unwrap();
        let (a, b) = pair();
        let timeout = Duration::from_secs(5);
        reactor
            .add_pair((a, observer(timeout)), (b, observer(timeout)))
            .unwrap();
        let later_on = Instant::now() + Duration::from_secs(100);
        for token in 1000..3000 {
            reactor.timers.at(later_on, token, TimerKind::Sample);
        }
        reactor.tick_every(Duration::from_millis(20));
        let started = Instant::now();
        let mut ticks = 0;
        let end = reactor
            .run(&mut |emit| {
                Ok(match emit {
                    Emit::Tick(_) => {
                        ticks += 1;
                        Flow::Stop
                    }
                    _ => Flow::Continue,
                })
            })
            .unwrap();
        assert_eq!(end, RunEnd::Finished);
        assert_eq!(ticks, 1, "the loop ended without a tick");
        assert!(
            started.elapsed() < timeout,
            "the loop ran until the timeout"
        );
        assert!(!reactor.timers.has(1000), "stale timers were not purged");
    }

    /// A `lab` pair: the closer's FIN is reported by both ends, the observer's
    /// detection timed from the closer's action.
    #[test]
    fn a_pair_reports_the_closers_fin_at_both_ends() {
        let mut reactor = Reactor::new().unwrap();
        let (a, b) = pair();
        let closer = EndPlan {
            close: CloseMode::Fin,
            ..EndPlan::default()
        };
        reactor
            .add_pair((a, closer), (b, observer(Duration::from_secs(5))))
            .unwrap();
        let mut reports = Vec::new();
        let end = reactor
            .run(&mut |emit| {
                if let Emit::Report(report) = emit {
                    reports.push(report);
                }
                Ok(Flow::Continue)
            })
            .unwrap();
        assert_eq!(end, RunEnd::Finished);
        assert_eq!(reports.len(), 2);
        let by_role = |role| reports.iter().find(|r| r.role == role).unwrap();
        let (closer, observer) = (by_role(Role::Connect), by_role(Role::Serve));
        assert_eq!(closer.closer, Some(crate::report::Closer::Local));
        assert_eq!(closer.close, Some(CloseMode::Fin));
        assert_eq!(observer.closer, Some(crate::report::Closer::Peer));
        assert_eq!(observer.verdict, crate::vocab::Verdict::Fin);
        assert_eq!(
            observer.detected_from,
            Some(crate::report::DetectedFrom::Close)
        );
        assert!(
            observer.detected_after_us.is_some_and(|us| us < 5_000_000),
            "{:?}",
            observer.detected_after_us
        );
    }

    /// TCP_INFO sampling shares a budget of [`SAMPLES_PER_SEC`] among all
    /// connections, never faster than [`SAMPLE_MIN`] each.
    #[test]
    fn sampling_is_spread_over_all_connections() {
        let mut reactor = Reactor::new().unwrap();
        assert_eq!(reactor.sample_every(), SAMPLE_MIN);
        for _ in 0..10 {
            let (a, b) = pair();
            let timeout = Duration::from_secs(60);
            reactor
                .add_pair((a, observer(timeout)), (b, observer(timeout)))
                .unwrap();
        }
        // 21 shares (20 connections and the next one) of 100 samples a second.
        assert_eq!(reactor.sample_every(), Duration::from_millis(210));
    }

    /// Every connection reads the kernel through the loop's [`Kernel`]: a
    /// scripted one is what its samples see.
    #[test]
    fn connections_read_the_kernel_the_loop_lends_them() {
        let fake: &'static crate::sys::fake::FakeKernel =
            Box::leak(Box::new(crate::sys::fake::FakeKernel::established()));
        fake.set_info(|i| i.rtt = 123_456);
        let mut reactor = Reactor::new().unwrap();
        reactor.os = fake;
        let (a, b) = pair();
        let short = Duration::from_millis(1);
        reactor
            .add_pair((a, observer(short)), (b, observer(short)))
            .unwrap();
        let mut reports = Vec::new();
        reactor
            .run(&mut |emit| {
                if let Emit::Report(report) = emit {
                    reports.push(report);
                }
                Ok(Flow::Continue)
            })
            .unwrap();
        assert_eq!(reports.len(), 2);
        assert!(fake.info_reads.get() >= 2);
        for report in reports {
            assert_eq!(report.tcp_info.map(|i| i.rtt), Some(123_456));
        }
    }
}
