//! The observer: one connection's state machine, driven by the reactor's epoll
//! wake-ups and timers. It records what its socket shows and never prints.

use std::io::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollFlags};
use socket2::{Socket, TcpKeepalive};

use self::parts::{Afterlife, Course, Heartbeat, Sampler, SendQueue};
use super::side::SideTrack;
use super::timeline::Timeline;
use super::timers::{TimerKind, Timers, later};
use crate::plan::EndPlan;
use crate::report::{DetectedBy, EventKind, Packet, Role};
use crate::sys::{self, Kernel, TcpInfo};
use crate::vocab::{CloseMode, Verdict};

mod close;
pub use close::peer_pace;
mod far;
mod io;
mod outcome;
mod parts;
mod sample;
#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    /// Established and observed; this side's close action may be pending.
    Open,
    /// `rst-unread`: waiting for the peer's data so that some is left unread.
    AwaitUnread,
    /// `drop`: waiting until nothing is in flight.
    AwaitQuiet,
    /// After our `shutdown(SHUT_WR)`: reading until the peer ends.
    HalfClosed,
    /// `drop`/`hang`: silent, the socket held.
    Holding,
    /// The peer ended; the post-detection probe runs.
    Probing,
    /// This side closed; its socket is followed through sock_diag.
    Afterlife,
    Done,
}

/// Everything the reactor lends a connection while it handles one event.
pub struct Ctx<'a> {
    pub epoll: &'a Epoll,
    pub timers: &'a mut Timers,
    /// `serve`: the tokens of `path` test greetings seen so far.
    pub tokens: &'a mut crate::engine::path::Ledger,
    pub token: u64,
    pub now: Instant,
    /// What the observer reads from the kernel (a fake in unit tests).
    pub os: &'a dyn Kernel,
    pub buf: &'a mut [u8],
    pub sample_every: Duration,
    /// Set when the read budget ran out: the reactor comes back without waiting.
    pub again: bool,
    /// A close action already due at the start runs at once rather than on the next
    /// loop turn (`connect`: nothing else in the loop waits on this one).
    pub act_now: bool,
}

impl Ctx<'_> {
    fn at(&mut self, when: Instant, kind: TimerKind) {
        self.timers.at(when, self.token, kind);
    }
}

pub struct Conn {
    sock: Option<Socket>,
    plan: Arc<EndPlan>,
    role: Role,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    /// Where the connection stands and, once known, how it ended.
    course: Course,
    timeline: Timeline,
    /// The peer's RST came after its FIN, before this side sent anything more.
    reset_after_fin: bool,
    detected_by: Option<DetectedBy>,
    detected_at: Option<Instant>,
    /// When and how this side acted (its close mode).
    action: Option<(Instant, CloseMode)>,
    /// When and how the other end acted, when tcpbye runs it too (`lab`).
    peer_action: Option<(Instant, CloseMode)>,
    /// The last data received (or the start): the application's last sign of life.
    last_data: Instant,
    /// The last packet of any kind received (from TCP_INFO `last_ack_recv`).
    last_packet: Instant,
    /// When the capture saw the peer's first FIN or RST arrive (`--pcap`).
    peer_end_packet: Option<Instant>,
    /// The first send not yet acknowledged, while data is in flight.
    first_unacked: Option<Instant>,
    /// The first retransmission timeout of the current loss episode.
    first_rto: Option<Instant>,
    /// `total_rto_time` before the current loss episode.
    rto_time_base: u32,
    bytes_sent: u64,
    bytes_received: u64,
    queue: SendQueue,
    heartbeat: Heartbeat,
    sampler: Sampler,
    quiet_deadline: Option<Instant>,
    /// Whether EPOLLOUT is in the registered interest.
    out_registered: bool,
    /// The other end's socket, through sock_diag, and when it was last read.
    peer_track: SideTrack,
    last_peer_read: Option<Instant>,
    /// This side's socket after its close.
    afterlife: Afterlife,
    /// Captured segments (`--pcap`), when capturing, and how many did not fit.
    packets: Option<Vec<Packet>>,
    packets_dropped: u64,
    /// Bytes this side's close found unread (its FIN became an RST).
    unread_at_close: usize,
    /// `plan.mark` was sent, when this many bytes of answer had arrived.
    marked: Option<u64>,
    /// `serve`: first bytes that look like a `path` greeting, and the test it named.
    far: Option<Box<far::Far>>,
    /// `keep_vanished`: where the connection stood when its socket vanished.
    vanished: Option<Box<crate::sys::Vanished>>,
    /// `follow_peer`: this side's action not yet told to the driver — when, how,
    /// and the other end's socket inode read right before it.
    acted: Option<(Instant, CloseMode, u32)>,
    /// `follow_peer`: the other end's socket inode, read when the action was
    /// first due, until the driver is told of it (`Some(0)` once told).
    peer_known: Option<u32>,
    /// `follow_peer`: the action has given the driver its round to hear of the
    /// other end's socket.
    peer_first: bool,
}

impl Conn {
    /// A connection whose connect() is in progress; `out_registered` says whether
    /// EPOLLOUT is in its registered interest.
    pub fn connecting(
        sock: Socket,
        peer: SocketAddr,
        plan: Arc<EndPlan>,
        start: Instant,
        out_registered: bool,
    ) -> Self {
        let mut conn = Self::new(
            sock,
            Role::Connect,
            None,
            peer,
            plan,
            start,
            Phase::Connecting,
        );
        conn.out_registered = out_registered;
        conn
    }

    /// A connection that is already established (accepted, or connected in `lab`).
    pub fn established(
        sock: Socket,
        role: Role,
        local: Option<SocketAddr>,
        peer: SocketAddr,
        plan: Arc<EndPlan>,
        start: Instant,
    ) -> Self {
        Self::new(sock, role, local, peer, plan, start, Phase::Open)
    }

    fn new(
        sock: Socket,
        role: Role,
        local: Option<SocketAddr>,
        peer: SocketAddr,
        plan: Arc<EndPlan>,
        start: Instant,
        phase: Phase,
    ) -> Self {
        let history = plan.history;
        Self {
            sock: Some(sock),
            plan,
            role,
            local,
            peer,
            course: Course::new(phase),
            timeline: Timeline::new(start, history),
            reset_after_fin: false,
            detected_by: None,
            detected_at: None,
            action: None,
            peer_action: None,
            last_data: start,
            last_packet: start,
            peer_end_packet: None,
            first_unacked: None,
            first_rto: None,
            rto_time_base: 0,
            bytes_sent: 0,
            bytes_received: 0,
            queue: SendQueue::default(),
            heartbeat: Heartbeat::default(),
            sampler: Sampler::default(),
            quiet_deadline: None,
            out_registered: false,
            peer_track: SideTrack::default(),
            last_peer_read: None,
            afterlife: Afterlife::default(),
            packets: None,
            packets_dropped: 0,
            unread_at_close: 0,
            marked: None,
            far: None,
            vanished: None,
            acted: None,
            peer_known: None,
            peer_first: false,
        }
    }

    /// Where the connection stands.
    fn phase(&self) -> Phase {
        self.course.phase()
    }

    /// How the connection ended, once known.
    fn verdict(&self) -> Option<Verdict> {
        self.course.verdict()
    }

    /// Moves the connection to `phase`: the one place a phase changes.
    fn enter(&mut self, phase: Phase) {
        self.course.set_phase(phase);
    }

    /// The connection ended in `verdict` (also replacing an earlier one: a FIN
    /// that an RST followed): the one place a verdict is set.
    fn conclude(&mut self, verdict: Verdict) {
        self.course.set_verdict(verdict);
    }

    pub fn socket(&self) -> Option<&Socket> {
        self.sock.as_ref()
    }

    /// The socket and the epoll interest it needs, while it is to be watched.
    pub fn interest(&self) -> Option<(&Socket, EpollFlags)> {
        let sock = self.sock.as_ref()?;
        (!matches!(self.phase(), Phase::Holding | Phase::Done))
            .then(|| (sock, io::interest(self.out_registered)))
    }

    pub fn is_done(&self) -> bool {
        self.phase() == Phase::Done
    }

    /// Holding silently (`drop`/`hang`) with no end of its own: ends when the observer does.
    pub fn is_holding(&self) -> bool {
        self.phase() == Phase::Holding
    }

    /// The plan this connection follows.
    pub fn plan(&self) -> &Arc<EndPlan> {
        &self.plan
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// This side's address, once known.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// When and how this side acted, for its partner in `lab`.
    pub fn action(&self) -> Option<(Instant, CloseMode)> {
        self.action
    }

    pub fn set_peer_action(&mut self, action: (Instant, CloseMode)) {
        self.peer_action.get_or_insert(action);
    }

    /// Starts observing an established connection.
    pub fn begin(&mut self, ctx: &mut Ctx<'_>, kind: EventKind) {
        self.begin_with(ctx, kind, None);
    }

    fn begin_with(&mut self, ctx: &mut Ctx<'_>, kind: EventKind, info: Option<TcpInfo>) {
        let now = ctx.now;
        self.timeline.push(now, kind, |_| {});
        if let Err(e) = self.apply_detection() {
            self.timeline
                .note(now, format!("detection settings not applied: {e}"));
        }
        match info {
            Some(info) => self.record_sample(ctx.os, now, info, true),
            None => self.sample(ctx.os, now, true),
        };
        let plan = Arc::clone(&self.plan);
        if plan.follow_peer {
            self.peer_track.watch_timer_kinds();
        }
        if let Some(timeout) = plan.timeout {
            ctx.at(later(self.timeline.start(), timeout), TimerKind::Timeout);
        }
        if let Some(every) = plan.detection.send_every {
            ctx.at(later(now, every), TimerKind::SendEvery);
        }
        if let Some(hb) = plan.detection.heartbeat {
            self.send_ping(ctx);
            ctx.at(later(now, hb.interval), TimerKind::Heartbeat);
        }
        self.queue.push(&plan.request);
        self.queue.fill(plan.send);
        self.flush(ctx);
        self.after_detection(ctx);
        if plan.close != CloseMode::None {
            let at = later(self.timeline.start(), plan.after);
            if ctx.act_now && at <= now {
                self.on_timer(ctx, TimerKind::Close);
            } else {
                ctx.at(at, TimerKind::Close);
            }
        }
        if self.sock.is_some() && self.phase() != Phase::Done {
            self.schedule_sample(ctx);
        }
    }

    fn apply_detection(&self) -> std::io::Result<()> {
        let Some(sock) = &self.sock else {
            return Ok(());
        };
        let d = &self.plan.detection;
        if d.heartbeat.is_some() || d.send_every.is_some() {
            // Small periodic writes go out at once, not behind Nagle.
            sock.set_tcp_nodelay(true)?;
        }
        if let Some(ka) = d.keepalive {
            let params = TcpKeepalive::new()
                .with_time(ka.idle)
                .with_interval(ka.interval)
                .with_retries(ka.count);
            sock.set_tcp_keepalive(&params)?;
            sock.set_keepalive(true)?;
        }
        if let Some(ut) = d.user_timeout {
            sock.set_tcp_user_timeout(Some(ut))?;
        }
        Ok(())
    }

    /// One epoll wake-up for this connection.
    pub fn on_ready(&mut self, ctx: &mut Ctx<'_>, flags: EpollFlags) {
        let now = ctx.now;
        self.record_wakeup(now, flags);
        // Sampled below; the interval starts over from the next sample on.
        self.sampler.start_over();
        match self.phase() {
            Phase::Connecting => return self.finish_connect(ctx),
            Phase::Holding | Phase::Done => return,
            _ => {}
        }
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(ctx);
        }
        let reading = self.reads();
        let readable = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLHUP
            | EpollFlags::EPOLLERR;
        if reading && flags.intersects(readable) {
            self.read_all(ctx);
        }
        if !reading && flags.contains(EpollFlags::EPOLLERR) && self.sock.is_some() {
            // A side that does not read learns of the error from SO_ERROR.
            if let Some(err) = self.read_so_error(now) {
                self.detect_errno(now, &err);
            }
        }
        if self.phase() == Phase::AwaitUnread {
            let unread = self.unread(ctx.os) as u64;
            if unread > 0 && self.answered(ctx, unread) {
                self.act(ctx, CloseMode::RstUnread);
            }
        }
        if self.plan.close_on_answer
            && self.phase() == Phase::Open
            && self.bytes_received > 0
            && self.verdict().is_none()
            && self.answered(ctx, self.bytes_received)
        {
            self.act(ctx, self.plan.close);
        }
        self.sample_once(ctx.os, now);
        self.after_detection(ctx);
    }

    /// Whether the answers a close waits for are all there, `got` bytes of them so
    /// far: the first answer, and with a `mark` (`path`) the answer to the mark
    /// too, which is sent here when the first has come.
    fn answered(&mut self, ctx: &mut Ctx<'_>, got: u64) -> bool {
        if self.plan.mark.is_empty() {
            return true;
        }
        match self.marked {
            Some(at) => got > at,
            None => {
                self.marked = Some(got);
                let plan = Arc::clone(&self.plan);
                self.queue.push(&plan.mark);
                self.flush(ctx);
                false
            }
        }
    }

    /// A timer fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, kind: TimerKind) {
        let now = ctx.now;
        if self.phase() == Phase::Done {
            return;
        }
        match kind {
            TimerKind::Connect if self.phase() == Phase::Connecting => {
                self.timeline.push(now, EventKind::Connect, |e| {
                    e.errno = Some("ETIMEDOUT".into());
                    e.detail = Some("no answer within --connect-timeout".into());
                });
                self.conclude(Verdict::ConnectTimeout);
                self.finish(now);
            }
            // A `path` greeting may have replaced a plan whose close was due.
            TimerKind::Close
                if self.phase() == Phase::Open
                    && self.verdict().is_none()
                    && self.plan.close != CloseMode::None =>
            {
                self.act(ctx, self.plan.close);
            }
            TimerKind::Grace => match self.phase() {
                Phase::AwaitUnread => self.act(ctx, CloseMode::RstUnread),
                Phase::AwaitQuiet => self.act(ctx, CloseMode::Drop),
                _ => {}
            },
            TimerKind::Timeout | TimerKind::HoldEnd if self.phase() == Phase::Holding => {
                self.end_hold(now);
            }
            TimerKind::Timeout if self.verdict().is_none() => {
                self.far_closing(ctx.os, now, crate::report::path::FarEnding::Timeout);
                self.timeline.push(now, EventKind::Timeout, |e| {
                    e.detail = Some("nothing detected before --timeout".into());
                });
                self.sample(ctx.os, now, true);
                self.conclude(Verdict::Open);
                self.finish(now);
            }
            // A sample timer replaced by an earlier one (see `stir`) does nothing.
            TimerKind::Sample if self.sampler.is_replaced(now) => {}
            TimerKind::Sample if self.sock.is_some() => {
                let news = self.sample(ctx.os, now, false);
                let can_rest = self.can_rest();
                self.sampler.sampled(news, can_rest);
                self.schedule_sample(ctx);
            }
            TimerKind::SendEvery if self.is_live() => {
                if let Some(every) = self.plan.detection.send_every {
                    self.send_filler(ctx);
                    ctx.at(later(now, every), TimerKind::SendEvery);
                }
            }
            TimerKind::Heartbeat if self.is_live() => self.heartbeat_tick(ctx),
            TimerKind::Afterlife if self.phase() == Phase::Afterlife => self.afterlife_tick(ctx),
            TimerKind::PeerRead if self.sock.is_some() && self.verdict().is_none() => {
                self.peer_read_tick(ctx);
            }
            TimerKind::Probe if self.phase() == Phase::Probing => {
                self.send_probe(ctx);
                self.recv_once(ctx);
                let _ = self.read_so_error(now);
                self.sample(ctx.os, now, true);
                self.finish(now);
            }
            _ => {}
        }
        self.after_detection(ctx);
    }

    /// Open or half-closed and not yet ended: the states in which timers send.
    fn is_live(&self) -> bool {
        matches!(
            self.phase(),
            Phase::Open | Phase::HalfClosed | Phase::AwaitUnread
        ) && self.verdict().is_none()
    }

    /// Whether this side reads what arrives: a `rst-unread` closer never does.
    fn reads(&self) -> bool {
        !(self.plan.close == CloseMode::RstUnread
            && matches!(self.phase(), Phase::Open | Phase::AwaitUnread))
    }

    /// connect() failed at once (before the loop saw it).
    pub fn fail_connect(&mut self, now: Instant, err: &Error) {
        self.connect_error(now, err);
    }

    fn connect_error(&mut self, now: Instant, err: &Error) {
        let errno = sys::errno_name(err);
        self.conclude(match err.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ECONNREFUSED) => Verdict::Refused,
            Some(Errno::EHOSTUNREACH | Errno::ENETUNREACH) => Verdict::Unreachable,
            Some(Errno::ETIMEDOUT) => Verdict::ConnectTimeout,
            _ => Verdict::Error,
        });
        self.timeline
            .push(now, EventKind::Connect, |e| e.errno = Some(errno));
        self.finish(now);
    }

    fn finish_connect(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let Some(sock) = &self.sock else { return };
        match sock.take_error() {
            Ok(None) => self.connected(ctx, None),
            // Established, then reset before this loop saw connect() complete: the
            // connection existed, and its end is the peer's RST.
            Ok(Some(err))
                if matches!(
                    err.raw_os_error().map(Errno::from_raw),
                    Some(Errno::ECONNRESET | Errno::EPIPE)
                ) =>
            {
                self.connected(ctx, None);
                let errno = sys::errno_name(&err);
                self.timeline
                    .push(now, EventKind::SoError, |e| e.errno = Some(errno));
                self.detect(now, Verdict::Rst, None);
                self.after_detection(ctx);
            }
            Ok(Some(err)) | Err(err) => self.connect_error(now, &err),
        }
    }

    /// connect() completed; `info` is a TCP_INFO reading taken just now, if any.
    pub fn connected(&mut self, ctx: &mut Ctx<'_>, info: Option<TcpInfo>) {
        let Some(sock) = &self.sock else { return };
        // Captured segments and sock_diag readings are matched by it, whatever the plan.
        if self.plan.local_addr || self.plan.peer_side || self.packets.is_some() {
            self.local = sock.local_addr().ok().and_then(|a| a.as_socket());
        }
        self.enter(Phase::Open);
        self.begin_with(ctx, EventKind::Connect, info);
    }

    fn detect_errno(&mut self, now: Instant, err: &Error) {
        let verdict = match err.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ECONNRESET | Errno::EPIPE) => Verdict::Rst,
            Some(Errno::ETIMEDOUT) => Verdict::Timeout,
            Some(Errno::EHOSTUNREACH | Errno::ENETUNREACH) => Verdict::Unreachable,
            _ => Verdict::Error,
        };
        let by = (verdict == Verdict::Timeout).then(|| self.timeout_cause());
        self.detect(now, verdict, by);
    }

    /// Which mechanism produced an ETIMEDOUT, from the settings and whether data was in flight.
    fn timeout_cause(&self) -> DetectedBy {
        let d = &self.plan.detection;
        let in_flight = self
            .sampler
            .last_info()
            .is_some_and(|i| i.unacked > 0 || i.backoff > 0);
        if d.user_timeout.is_some() {
            DetectedBy::UserTimeout
        } else if d.keepalive.is_some() && !in_flight {
            DetectedBy::Keepalive
        } else {
            DetectedBy::Retransmit
        }
    }

    fn detect(&mut self, now: Instant, verdict: Verdict, by: Option<DetectedBy>) {
        if self.verdict().is_some() {
            return;
        }
        self.conclude(verdict);
        self.detected_by = by;
        self.detected_at = Some(now);
    }

    /// After the end was detected: probe (fin/rst from the peer) or finish.
    fn after_detection(&mut self, ctx: &mut Ctx<'_>) {
        if self.verdict().is_none()
            || matches!(
                self.phase(),
                Phase::Probing | Phase::Done | Phase::Holding | Phase::Afterlife
            )
        {
            return;
        }
        let now = ctx.now;
        let so_error_read = self.check_reset_after_fin(now);
        let probe = self.plan.probe
            && self.action.is_none()
            && matches!(self.verdict(), Some(Verdict::Fin | Verdict::Rst))
            && self.sock.is_some();
        if !probe {
            self.sample_once(ctx.os, now);
            self.finish(now);
            if self.action.is_some() {
                self.start_afterlife(ctx);
            }
            return;
        }
        // What a writer meets after the peer's FIN or RST: the first send, then a
        // second one after the peer has had time to answer.
        self.enter(Phase::Probing);
        if !so_error_read {
            let _ = self.read_so_error(now);
        }
        self.send_probe(ctx);
        let rtt = self.sampler.last_info().map_or(0, |i| i.rtt);
        let gap = Duration::from_micros(u64::from(rtt) * 4)
            .clamp(Duration::from_millis(20), Duration::from_millis(500));
        ctx.at(later(now, gap), TimerKind::Probe);
    }

    /// After the peer's FIN was read, and before this side sends anything: an RST
    /// that followed the FIN waits in SO_ERROR (`EPIPE`, as it met `CLOSE_WAIT`),
    /// while recv() still reads the FIN as EOF. Then the peer's ending was a reset,
    /// and the verdict says so. Returns whether SO_ERROR was read.
    fn check_reset_after_fin(&mut self, now: Instant) -> bool {
        if self.verdict() != Some(Verdict::Fin) || self.action.is_some() || self.sock.is_none() {
            return false;
        }
        let Some(err) = self.read_so_error(now) else {
            return true;
        };
        if matches!(
            err.raw_os_error().map(Errno::from_raw),
            Some(Errno::ECONNRESET | Errno::EPIPE)
        ) {
            let errno = sys::errno_name(&err);
            self.timeline.note(
                now,
                format!(
                    "FIN, then RST: recv() read the peer's FIN as EOF, and SO_ERROR holds {errno} \
                     from the RST that followed it before this side sent anything"
                ),
            );
            self.conclude(Verdict::Rst);
            self.reset_after_fin = true;
        }
        true
    }

    /// Closes the socket (if still open) and marks the connection done.
    fn finish(&mut self, now: Instant) {
        if let Some(sock) = self.sock.take() {
            let detail = match (self.action, self.verdict()) {
                (None, _) => "close(): the observer is done",
                // This side acted (`half`) and then watched in vain: --timeout or Ctrl-C.
                (Some(_), None | Some(Verdict::Open)) => {
                    "close(): the peer had not ended when the observation stopped"
                }
                (Some(_), Some(_)) => "close(): done after the peer's end",
            };
            self.timeline
                .push(now, EventKind::Close, |e| e.detail = Some(detail.into()));
            drop(sock);
        }
        self.enter(Phase::Done);
    }

    /// Ends the observation now (Ctrl-C, or `lab` ending a holder).
    pub fn abort(&mut self, os: &dyn Kernel, now: Instant, why: &str) {
        if self.phase() == Phase::Holding {
            self.end_hold(now);
            return;
        }
        if self.verdict().is_none() {
            self.far_closing(os, now, crate::report::path::FarEnding::Stopped);
            self.timeline.note(now, why);
            self.sample(os, now, true);
            self.conclude(Verdict::Open);
        }
        self.finish(now);
        self.afterlife.stop();
    }
}
