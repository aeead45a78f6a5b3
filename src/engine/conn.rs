//! The observer: one connection's state machine, driven by the reactor's epoll
//! wake-ups and timers. It records what its socket shows and never prints.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use socket2::{Socket, TcpKeepalive};

use super::capture::Segment;
use super::close::{self, Closed};
use super::predict::{self, Anchors, KernelTcp};
use super::side::{self, SideTrack};
use super::timeline::Timeline;
use super::timers::{TimerKind, Timers};
use crate::plan::{CloseMode, EndPlan};
use crate::report::{
    Afterlife, AfterlifeEnd, Closer, DetectedBy, DetectedFrom, EventKind, Packet, Report, Role,
    SCHEMA, Verdict,
};
use crate::sys::{self, CaState, TcpInfo, TcpState};

/// The heartbeat request and answer. Any bytes received count as a pong, so an
/// echo server answers too.
pub const PING: &[u8] = b"tcpbye-ping\n";
pub const PONG: &[u8] = b"tcpbye-pong\n";
/// The payload of `--send`, `--send-every` and the post-detection probe.
const FILL: &[u8] = b"tcpbye-data-0123456789abcdefghijklmnopqrstuvwxyz\n";
const PROBE: &[u8] = b"tcpbye-probe\n";
/// FILL repeated, so `--send` writes up to 16 KiB per send() call.
static FILL_BLOCK: [u8; 16 * 1024] = {
    let mut block = [0u8; 16 * 1024];
    let mut i = 0;
    while i < block.len() {
        block[i] = FILL[i % FILL.len()];
        i += 1;
    }
    block
};
/// Most bytes read per wake-up before other connections get their turn.
const READ_BUDGET: usize = 1 << 20;
/// How long `rst-unread` waits for data to leave unread.
const UNREAD_GRACE: Duration = Duration::from_secs(1);
/// How often the other end's socket is read at most while this side's state holds.
const PEER_READ_EVERY: Duration = Duration::from_millis(10);
/// Most captured segments kept per connection.
const MAX_PACKETS: usize = 4096;
/// How often a closed socket is read again while following it.
const AFTERLIFE_POLL: Duration = Duration::from_millis(5);
/// How long `drop` waits for in-flight data to be acknowledged first.
const QUIET_GRACE: Duration = Duration::from_secs(2);
const QUIET_POLL: Duration = Duration::from_millis(5);

/// Interest while reading; `EPOLLOUT` is added only while data waits to be sent.
fn interest(want_out: bool) -> EpollFlags {
    let base = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    if want_out {
        base | EpollFlags::EPOLLOUT
    } else {
        base
    }
}

/// The raw flag names of an epoll wake-up, without the `EPOLL` prefix.
pub fn flag_names(flags: EpollFlags) -> Vec<&'static str> {
    const NAMES: [(EpollFlags, &str); 8] = [
        (EpollFlags::EPOLLIN, "IN"),
        (EpollFlags::EPOLLPRI, "PRI"),
        (EpollFlags::EPOLLOUT, "OUT"),
        (EpollFlags::EPOLLERR, "ERR"),
        (EpollFlags::EPOLLHUP, "HUP"),
        (EpollFlags::EPOLLRDHUP, "RDHUP"),
        (EpollFlags::EPOLLRDNORM, "RDNORM"),
        (EpollFlags::EPOLLWRNORM, "WRNORM"),
    ];
    NAMES
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .map(|(_, n)| *n)
        .collect()
}

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
    pub token: u64,
    pub now: Instant,
    pub buf: &'a mut [u8],
    pub sample_every: Duration,
    /// Set when the read budget ran out: the reactor comes back without waiting.
    pub again: bool,
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
    phase: Phase,
    timeline: Timeline,
    verdict: Option<Verdict>,
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
    /// The first send not yet acknowledged, while data is in flight.
    first_unacked: Option<Instant>,
    /// The first retransmission timeout of the current loss episode.
    first_rto: Option<Instant>,
    /// `total_rto_time` before the current loss episode.
    rto_time_base: u32,
    bytes_sent: u64,
    bytes_received: u64,
    /// Bytes queued for sending: pongs first, then `fill_left` bytes of FILL.
    out: Vec<u8>,
    fill_left: usize,
    fill_pos: usize,
    ping_match: usize,
    rx_since_tick: bool,
    hb_misses: u32,
    last_state: Option<TcpState>,
    last_info: Option<TcpInfo>,
    quiet_deadline: Option<Instant>,
    /// Whether EPOLLOUT is in the registered interest.
    out_registered: bool,
    /// The other end's socket, through sock_diag, and when it was last read.
    peer_track: SideTrack,
    last_peer_read: Option<Instant>,
    /// This side's socket after its close: the readings, and when following began.
    own_track: Option<(SideTrack, Instant)>,
    afterlife_end: Option<AfterlifeEnd>,
    /// Captured segments (`--pcap`), when capturing, and how many did not fit.
    packets: Option<Vec<Packet>>,
    packets_dropped: u64,
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
        peer: SocketAddr,
        plan: Arc<EndPlan>,
        start: Instant,
    ) -> Self {
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
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
        Self {
            sock: Some(sock),
            plan,
            role,
            local,
            peer,
            phase,
            timeline: Timeline::new(start),
            verdict: None,
            detected_by: None,
            detected_at: None,
            action: None,
            peer_action: None,
            last_data: start,
            last_packet: start,
            first_unacked: None,
            first_rto: None,
            rto_time_base: 0,
            bytes_sent: 0,
            bytes_received: 0,
            out: Vec::new(),
            fill_left: 0,
            fill_pos: 0,
            ping_match: 0,
            rx_since_tick: false,
            hb_misses: 0,
            last_state: None,
            last_info: None,
            quiet_deadline: None,
            out_registered: false,
            peer_track: SideTrack::default(),
            last_peer_read: None,
            own_track: None,
            afterlife_end: None,
            packets: None,
            packets_dropped: 0,
        }
    }

    pub fn socket(&self) -> Option<&Socket> {
        self.sock.as_ref()
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Holding silently (`drop`/`hang`) with no end of its own: ends when the observer does.
    pub fn is_holding(&self) -> bool {
        self.phase == Phase::Holding
    }

    /// Starts keeping captured segments for the report.
    pub fn keep_packets(&mut self) {
        self.packets.get_or_insert_with(Vec::new);
    }

    /// Takes a captured segment if it belongs to this connection; `false` if not.
    pub fn take_segment(&mut self, seg: &Segment) -> bool {
        let Some(local) = self.local else {
            return false;
        };
        let same = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
        };
        let outgoing = same(seg.src, local) && same(seg.dst, self.peer);
        let incoming = same(seg.src, self.peer) && same(seg.dst, local);
        if !outgoing && !incoming {
            return false;
        }
        match self.packets.as_mut() {
            Some(packets) if packets.len() < MAX_PACKETS => packets.push(Packet {
                t_us: self.timeline.t_us(seg.at),
                outgoing,
                ..seg.packet.clone()
            }),
            Some(_) => self.packets_dropped += 1,
            None => {}
        }
        true
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
            Some(info) => self.record_sample(now, info, true),
            None => self.sample(now, true),
        }
        let plan = Arc::clone(&self.plan);
        if plan.close != CloseMode::None {
            ctx.at(self.timeline.start() + plan.after, TimerKind::Close);
        }
        if let Some(timeout) = plan.timeout {
            ctx.at(self.timeline.start() + timeout, TimerKind::Timeout);
        }
        if let Some(every) = plan.detection.send_every {
            ctx.at(now + every, TimerKind::SendEvery);
        }
        if let Some(hb) = plan.detection.heartbeat {
            self.send_now(ctx, PING, EventKind::Ping);
            ctx.at(now + hb.interval, TimerKind::Heartbeat);
        }
        ctx.at(now + ctx.sample_every, TimerKind::Sample);
        self.fill_left = plan.send;
        self.flush(ctx);
        self.after_detection(ctx);
    }

    fn apply_detection(&self) -> io::Result<()> {
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
        self.timeline
            .push(now, EventKind::Epoll, |e| e.epoll = Some(flag_names(flags)));
        match self.phase {
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
        if self.phase == Phase::AwaitUnread && self.unread() > 0 {
            self.act(ctx, CloseMode::RstUnread);
        }
        self.sample(now, true);
        self.after_detection(ctx);
    }

    /// A timer fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, kind: TimerKind) {
        let now = ctx.now;
        if self.phase == Phase::Done {
            return;
        }
        match kind {
            TimerKind::Connect if self.phase == Phase::Connecting => {
                self.timeline.push(now, EventKind::Connect, |e| {
                    e.errno = Some("ETIMEDOUT".into());
                    e.detail = Some("no answer within --connect-timeout".into());
                });
                self.verdict = Some(Verdict::ConnectTimeout);
                self.finish(now);
            }
            TimerKind::Close if self.phase == Phase::Open && self.verdict.is_none() => {
                self.act(ctx, self.plan.close);
            }
            TimerKind::Grace => match self.phase {
                Phase::AwaitUnread => self.act(ctx, CloseMode::RstUnread),
                Phase::AwaitQuiet => self.act(ctx, CloseMode::Drop),
                _ => {}
            },
            TimerKind::Timeout | TimerKind::HoldEnd if self.phase == Phase::Holding => {
                self.end_hold(now);
            }
            TimerKind::Timeout if self.verdict.is_none() => {
                self.timeline.push(now, EventKind::Timeout, |e| {
                    e.detail = Some("nothing detected before --timeout".into());
                });
                self.sample(now, true);
                self.verdict = Some(Verdict::Open);
                self.finish(now);
            }
            TimerKind::Sample if self.sock.is_some() => {
                self.sample(now, false);
                ctx.at(now + ctx.sample_every, TimerKind::Sample);
            }
            TimerKind::SendEvery if self.is_live() => {
                if let Some(every) = self.plan.detection.send_every {
                    self.send_now(ctx, &FILL[..16], EventKind::Send);
                    ctx.at(now + every, TimerKind::SendEvery);
                }
            }
            TimerKind::Heartbeat if self.is_live() => self.heartbeat_tick(ctx),
            TimerKind::Afterlife if self.phase == Phase::Afterlife => self.afterlife_tick(ctx),
            TimerKind::Probe if self.phase == Phase::Probing => {
                self.send_now(ctx, PROBE, EventKind::Send);
                self.recv_once(ctx);
                let _ = self.read_so_error(now);
                self.sample(now, true);
                self.finish(now);
            }
            _ => {}
        }
        self.after_detection(ctx);
    }

    /// Open or half-closed and not yet ended: the states in which timers send.
    fn is_live(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::HalfClosed | Phase::AwaitUnread
        ) && self.verdict.is_none()
    }

    /// Whether this side reads what arrives: a `rst-unread` closer never does.
    fn reads(&self) -> bool {
        !(self.plan.close == CloseMode::RstUnread
            && matches!(self.phase, Phase::Open | Phase::AwaitUnread))
    }

    /// connect() failed at once (before the loop saw it).
    pub fn fail_connect(&mut self, now: Instant, err: &io::Error) {
        self.connect_error(now, err);
    }

    fn connect_error(&mut self, now: Instant, err: &io::Error) {
        let errno = sys::errno_name(err);
        self.verdict = Some(match err.raw_os_error().map(Errno::from_raw) {
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
        self.local = sock.local_addr().ok().and_then(|a| a.as_socket());
        self.phase = Phase::Open;
        self.begin_with(ctx, EventKind::Connect, info);
    }

    /// Reads until EAGAIN, EOF or the budget; records data, EOF and errors.
    fn read_all(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut data = 0usize;
        let mut errors = 0;
        while let Some(sock) = &self.sock {
            match recv(sock, ctx.buf) {
                Ok(0) => {
                    self.record_data(now, &mut data);
                    self.timeline.push(now, EventKind::Recv, |e| {
                        e.bytes = Some(0);
                        e.detail = Some("EOF".into());
                    });
                    self.detect(now, Verdict::Fin, None);
                    break;
                }
                Ok(n) => {
                    data += n;
                    self.on_data(&ctx.buf[..n]);
                    if data >= READ_BUDGET {
                        ctx.again = true;
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.record_data(now, &mut data);
                    self.timeline.push(now, EventKind::Recv, |ev| {
                        ev.errno = Some(sys::errno_name(&e))
                    });
                    self.detect_errno(now, &e);
                    errors += 1;
                    // After ECONNRESET the next recv() returns EOF: show it.
                    if errors > 1 {
                        break;
                    }
                }
            }
        }
        self.record_data(now, &mut data);
        if !self.out.is_empty() && self.verdict.is_none() {
            self.flush(ctx);
        }
    }

    /// One recv() after the probe, to show what a reader meets then.
    fn recv_once(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let Some(sock) = &self.sock else { return };
        match recv(sock, ctx.buf) {
            Ok(n) => {
                self.bytes_received += n as u64;
                self.timeline.push(now, EventKind::Recv, |e| {
                    e.bytes = Some(n as u64);
                    e.detail = (n == 0).then(|| "EOF".into());
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.timeline
                    .push(now, EventKind::Recv, |ev| ev.errno = Some("EAGAIN".into()));
            }
            Err(e) => {
                self.timeline.push(now, EventKind::Recv, |ev| {
                    ev.errno = Some(sys::errno_name(&e))
                });
            }
        }
    }

    fn record_data(&mut self, now: Instant, data: &mut usize) {
        if *data > 0 {
            let n = *data as u64;
            self.timeline
                .push(now, EventKind::Recv, |e| e.bytes = Some(n));
            self.last_data = now;
            self.last_packet = now;
            *data = 0;
        }
    }

    /// Counts received bytes and answers heartbeat pings found in them.
    fn on_data(&mut self, bytes: &[u8]) {
        self.bytes_received += bytes.len() as u64;
        self.rx_since_tick = true;
        for &b in bytes {
            if b == PING[self.ping_match] {
                self.ping_match += 1;
                if self.ping_match == PING.len() {
                    self.ping_match = 0;
                    if self.out.len() < 64 * PONG.len() {
                        self.out.extend_from_slice(PONG);
                    }
                }
            } else {
                self.ping_match = usize::from(b == PING[0]);
            }
        }
    }

    /// Reads (and so clears) SO_ERROR, recording it; returns the pending error.
    fn read_so_error(&mut self, now: Instant) -> Option<io::Error> {
        let sock = self.sock.as_ref()?;
        let err = match sock.take_error() {
            Ok(err) => err,
            Err(e) => Some(e),
        };
        let errno = err.as_ref().map(sys::errno_name);
        self.timeline.push(now, EventKind::SoError, |e| {
            e.detail = errno.is_none().then(|| "0".into());
            e.errno = errno;
        });
        err
    }

    /// Sends what is queued (pongs, then --send fill) without blocking.
    fn flush(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut sent = 0usize;
        let mut failure = None;
        while let Some(sock) = &self.sock {
            let result = if !self.out.is_empty() {
                send(sock, &self.out)
            } else if self.fill_left > 0 {
                let start = self.fill_pos % FILL.len();
                let n = self.fill_left.min(FILL_BLOCK.len() - start);
                send(sock, &FILL_BLOCK[start..start + n])
            } else {
                break;
            };
            match result {
                Ok(n) => {
                    sent += n;
                    if !self.out.is_empty() {
                        self.out.drain(..n);
                    } else {
                        self.fill_left -= n;
                        self.fill_pos += n;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if sent > 0 {
            self.bytes_sent += sent as u64;
            self.timeline
                .push(now, EventKind::Send, |e| e.bytes = Some(sent as u64));
        }
        if let Some(e) = failure {
            self.timeline.push(now, EventKind::Send, |ev| {
                ev.errno = Some(sys::errno_name(&e))
            });
            self.detect_errno(now, &e);
            self.out.clear();
            self.fill_left = 0;
        }
        let want_out = !self.out.is_empty() || self.fill_left > 0;
        if let Some(sock) = self
            .sock
            .as_ref()
            .filter(|_| want_out != self.out_registered)
        {
            let mut event = EpollEvent::new(interest(want_out), ctx.token);
            // Changing interest on a registered socket cannot fail for a live fd.
            let _ = ctx.epoll.modify(sock.as_fd(), &mut event);
            self.out_registered = want_out;
        }
    }

    /// Sends one small message now (ping, probe, --send-every), recording the outcome.
    fn send_now(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8], kind: EventKind) {
        let now = ctx.now;
        let Some(sock) = &self.sock else { return };
        if self.first_unacked.is_none() && sys::unacked_bytes(sock.as_fd()).unwrap_or(0) == 0 {
            self.first_unacked = Some(now);
        }
        match send(sock, bytes) {
            Ok(n) => {
                self.bytes_sent += n as u64;
                self.timeline.push(now, kind, |e| e.bytes = Some(n as u64));
            }
            Err(e) => {
                self.timeline
                    .push(now, kind, |ev| ev.errno = Some(sys::errno_name(&e)));
                if e.kind() != ErrorKind::WouldBlock {
                    self.detect_errno(now, &e);
                }
            }
        }
    }

    fn heartbeat_tick(&mut self, ctx: &mut Ctx<'_>) {
        let Some(hb) = self.plan.detection.heartbeat else {
            return;
        };
        let now = ctx.now;
        if self.rx_since_tick {
            self.hb_misses = 0;
        } else {
            self.hb_misses += 1;
        }
        self.rx_since_tick = false;
        if self.hb_misses >= hb.misses {
            let misses = self.hb_misses;
            self.timeline.push(now, EventKind::Note, |e| {
                e.detail = Some(format!("{misses} heartbeat intervals without a pong"));
            });
            self.detect(now, Verdict::Heartbeat, None);
            return;
        }
        self.send_now(ctx, PING, EventKind::Ping);
        ctx.at(now + hb.interval, TimerKind::Heartbeat);
    }

    /// Bytes received and unread on this socket.
    fn unread(&self) -> usize {
        self.sock
            .as_ref()
            .and_then(|s| sys::unread_bytes(s.as_fd()).ok())
            .unwrap_or(0)
    }

    /// This side's close action.
    fn act(&mut self, ctx: &mut Ctx<'_>, mode: CloseMode) {
        let now = ctx.now;
        match mode {
            CloseMode::Fin | CloseMode::Half => self.read_all(ctx),
            CloseMode::RstUnread if self.phase == Phase::Open && self.unread() == 0 => {
                self.phase = Phase::AwaitUnread;
                self.timeline
                    .note(now, "rst-unread: waiting up to 1s for data to leave unread");
                ctx.at(now + UNREAD_GRACE, TimerKind::Grace);
                return;
            }
            CloseMode::Drop => {
                let deadline = *self.quiet_deadline.get_or_insert(now + QUIET_GRACE);
                let in_flight = self
                    .sock
                    .as_ref()
                    .and_then(|s| sys::unacked_bytes(s.as_fd()).ok())
                    .unwrap_or(0);
                if in_flight > 0 && now < deadline {
                    self.phase = Phase::AwaitQuiet;
                    ctx.at(now + QUIET_POLL, TimerKind::Grace);
                    return;
                }
            }
            _ => {}
        }
        if self.verdict.is_some() || self.phase == Phase::Done {
            return;
        }
        self.sample(now, true);
        let Some(sock) = self.sock.take() else { return };
        let unread = match mode {
            CloseMode::RstUnread => sys::unread_bytes(sock.as_fd()).unwrap_or(0),
            _ => 0,
        };
        if matches!(mode, CloseMode::Drop | CloseMode::Hang) {
            // A vanished or hung peer sees nothing more: stop watching its socket.
            let _ = ctx.epoll.delete(sock.as_fd());
        }
        let fd = sock.as_raw_fd();
        // Detection times are measured from here: the instant before the syscall.
        let now = Instant::now();
        match close::perform(mode, sock) {
            Ok(Closed::Released) => {
                self.timeline.push(now, EventKind::Close, |e| {
                    e.detail = Some(close::describe(mode, unread));
                });
                self.action = Some((now, mode));
                self.verdict = Some(match mode {
                    CloseMode::Rst => Verdict::Rst,
                    CloseMode::RstUnread if unread > 0 => Verdict::Rst,
                    CloseMode::Reboot => Verdict::Open,
                    _ => Verdict::Fin,
                });
                self.detected_at = Some(now);
                self.start_afterlife(ctx);
            }
            Ok(Closed::Kept(sock)) => {
                let kind = if mode == CloseMode::Half {
                    EventKind::Shutdown
                } else {
                    EventKind::Close
                };
                self.timeline.push(now, kind, |e| {
                    e.detail = Some(close::describe(mode, unread))
                });
                self.action = Some((now, mode));
                self.sock = Some(sock);
                if mode == CloseMode::Half {
                    self.phase = Phase::HalfClosed;
                } else {
                    self.phase = Phase::Holding;
                    if let Some(hold) = self.plan.hold {
                        ctx.at(now + hold, TimerKind::HoldEnd);
                    }
                }
            }
            Err(e) => {
                self.timeline
                    .note(now, format!("{mode} on fd {fd} failed: {e}"));
                self.verdict = Some(Verdict::Error);
                self.finish(now);
            }
        }
    }

    /// After this side's close: follow its socket (`--linger-watch`) or be done.
    fn start_afterlife(&mut self, ctx: &mut Ctx<'_>) {
        let follow =
            self.plan.peer_side && !self.plan.linger_watch.is_zero() && self.local.is_some();
        if follow {
            self.phase = Phase::Afterlife;
            self.own_track = Some((SideTrack::own(), ctx.now));
            ctx.at(ctx.now, TimerKind::Afterlife);
        } else {
            self.phase = Phase::Done;
        }
    }

    fn afterlife_tick(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let t_us = self.timeline.t_us(now);
        let (Some(local), Some((track, started))) = (self.local, self.own_track.as_mut()) else {
            self.phase = Phase::Done;
            return;
        };
        let found = track.read(t_us, local, self.peer);
        // The other end goes on too: its CLOSE_WAIT, LAST_ACK, or its end.
        self.peer_track.read(t_us, self.peer, local);
        let watch_over = now.saturating_duration_since(*started) >= self.plan.linger_watch;
        match side::afterlife_end(found.as_ref(), watch_over) {
            Some(end) => {
                self.afterlife_end = Some(end);
                self.phase = Phase::Done;
            }
            None => ctx.at(now + AFTERLIFE_POLL, TimerKind::Afterlife),
        }
    }

    /// Ends a `drop`/`hang` hold: a dropped socket vanishes without a packet,
    /// a hung process "exits" (the kernel closes its socket).
    pub fn end_hold(&mut self, now: Instant) {
        let Some(sock) = self.sock.take() else { return };
        let mode = self.action.map(|(_, m)| m);
        let note = if mode == Some(CloseMode::Drop) {
            match close::vanish(sock) {
                Ok(()) => "hold ended: socket closed in repair mode, nothing sent".to_owned(),
                Err(e) => format!("hold ended: repair-mode close failed ({e}); socket closed"),
            }
        } else {
            drop(sock);
            "hold ended: socket closed".to_owned()
        };
        self.timeline.note(now, note);
        self.verdict.get_or_insert(Verdict::Open);
        self.phase = Phase::Done;
    }

    fn detect_errno(&mut self, now: Instant, err: &io::Error) {
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
            .last_info
            .as_ref()
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
        if self.verdict.is_some() {
            return;
        }
        self.verdict = Some(verdict);
        self.detected_by = by;
        self.detected_at = Some(now);
    }

    /// After the end was detected: probe (fin/rst from the peer) or finish.
    fn after_detection(&mut self, ctx: &mut Ctx<'_>) {
        let Some(verdict) = self.verdict else { return };
        if matches!(
            self.phase,
            Phase::Probing | Phase::Done | Phase::Holding | Phase::Afterlife
        ) {
            return;
        }
        let now = ctx.now;
        let probe = self.plan.probe
            && self.action.is_none()
            && matches!(verdict, Verdict::Fin | Verdict::Rst)
            && self.sock.is_some();
        if !probe {
            self.sample(now, true);
            self.finish(now);
            if self.action.is_some() {
                self.start_afterlife(ctx);
            }
            return;
        }
        // What a writer meets after the peer's FIN or RST: the first send, then a
        // second one after the peer has had time to answer.
        self.phase = Phase::Probing;
        let _ = self.read_so_error(now);
        self.send_now(ctx, PROBE, EventKind::Send);
        let rtt = self.last_info.as_ref().map_or(0, |i| i.rtt);
        let gap = Duration::from_micros(u64::from(rtt) * 4)
            .clamp(Duration::from_millis(20), Duration::from_millis(500));
        ctx.at(now + gap, TimerKind::Probe);
    }

    /// Reads TCP_INFO; records state changes, and the snapshot when `always` or
    /// when a counter worth watching moved.
    fn sample(&mut self, now: Instant, always: bool) {
        let Some(sock) = &self.sock else { return };
        let Ok(info) = sys::tcp_info(sock.as_fd()) else {
            return;
        };
        self.record_sample(now, info, always);
    }

    fn record_sample(&mut self, now: Instant, info: TcpInfo, always: bool) {
        // The other end's socket (the mirrored 4-tuple) is read through netlink: at
        // each change of this side's state, else at most every PEER_READ_EVERY, so a
        // stream of data wake-ups does not become a stream of sock_diag requests.
        let due = self.last_state != Some(info.state)
            || self
                .last_peer_read
                .is_none_or(|at| now.saturating_duration_since(at) >= PEER_READ_EVERY);
        if let Some(local) = self.local.filter(|_| self.plan.peer_side && due) {
            let t_us = self.timeline.t_us(now);
            self.peer_track.read(t_us, self.peer, local);
            self.last_peer_read = Some(now);
        }
        if self.verdict.is_none() {
            self.track_silence(now, &info);
        }
        if self.last_state != Some(info.state) {
            let state = info.state;
            self.timeline
                .push(now, EventKind::State, |e| e.state = Some(state));
            self.last_state = Some(state);
        }
        let moved = self.last_info.as_ref().is_none_or(|last| {
            (
                last.retransmits,
                last.probes,
                last.backoff,
                last.unacked,
                last.total_retrans,
            ) != (
                info.retransmits,
                info.probes,
                info.backoff,
                info.unacked,
                info.total_retrans,
            )
        });
        if always || moved {
            self.timeline.snapshot(now, info.clone());
        }
        self.last_info = Some(info);
    }

    /// One line on what this connection is waiting for and how far along it is
    /// (for a progress display); `None` once it has ended.
    pub fn progress(&self, now: Instant, kernel: KernelTcp) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.timeline.start());
        let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
        let mut parts = Vec::new();
        match self.phase {
            Phase::Done | Phase::Probing | Phase::Connecting | Phase::Afterlife => return None,
            Phase::Holding => {
                let mode = self.action.map_or("hold", |(_, m)| m.name());
                return Some(format!(
                    "{mode}: holding the connection to {} silently for {}; Ctrl-C ends it without a packet",
                    self.peer,
                    secs(elapsed)
                ));
            }
            _ => parts.push(format!("observing {} for {}", self.peer, secs(elapsed))),
        }
        let d = &self.plan.detection;
        if let Some(info) = &self.last_info {
            if let Some(ka) = d.keepalive {
                parts.push(format!("keepalive probes {}/{}", info.probes, ka.count));
            }
            if info.unacked > 0 || info.retransmits > 0 || d.send_every.is_some() {
                parts.push(format!(
                    "unacked {} · retransmits {} · backoff {} · rto {}",
                    info.unacked,
                    info.retransmits,
                    info.backoff,
                    crate::report::fmt_us(u64::from(info.rto))
                ));
            }
        }
        if let Some(hb) = d.heartbeat {
            parts.push(format!("heartbeat misses {}/{}", self.hb_misses, hb.misses));
        }
        if let Some(p) = predict::predict(d, kernel, self.anchors()) {
            parts.push(format!(
                "predicted {} at {}",
                p.verdict,
                secs(p.at.saturating_duration_since(self.timeline.start()))
            ));
        } else if let Some(timeout) = self.plan.timeout {
            parts.push(format!("--timeout at {}", secs(timeout)));
        }
        Some(parts.join(" · "))
    }

    fn anchors(&self) -> Anchors {
        Anchors {
            last_data: self.last_data,
            last_packet: self.last_packet,
            first_unacked: self.first_unacked,
            first_rto: self.first_rto,
            rto: Duration::from_micros(
                self.last_info
                    .as_ref()
                    .map_or(200_000, |i| u64::from(i.rto)),
            ),
        }
    }

    /// Updates what predictions are anchored on: the last packet received, and
    /// when the current loss episode's first retransmission timeout fired.
    fn track_silence(&mut self, now: Instant, info: &TcpInfo) {
        let since = |ms: u32| now.checked_sub(Duration::from_millis(u64::from(ms)));
        if let Some(rx) = since(info.last_ack_recv) {
            self.last_packet = self.last_packet.max(rx);
        }
        let rto_time = info.total_rto_time.unwrap_or(0);
        if info.ca_state == CaState::Loss {
            if self.first_rto.is_none() {
                self.first_rto = since(rto_time.saturating_sub(self.rto_time_base)).or(Some(now));
            }
        } else {
            self.rto_time_base = rto_time;
            self.first_rto = None;
        }
        if info.unacked == 0 {
            self.first_unacked = None;
        }
    }

    /// Closes the socket (if still open) and marks the connection done.
    fn finish(&mut self, now: Instant) {
        if let Some(sock) = self.sock.take() {
            let detail = if self.action.is_some() {
                "close(): done after the peer's end"
            } else {
                "close(): the observer is done"
            };
            self.timeline
                .push(now, EventKind::Close, |e| e.detail = Some(detail.into()));
            drop(sock);
        }
        self.phase = Phase::Done;
    }

    /// Ends the observation now (Ctrl-C, or `lab` ending a holder).
    pub fn abort(&mut self, now: Instant, why: &str) {
        if self.phase == Phase::Holding {
            self.end_hold(now);
            return;
        }
        if self.verdict.is_none() {
            self.timeline.note(now, why);
            self.sample(now, true);
            self.verdict = Some(Verdict::Open);
        }
        self.finish(now);
        if self.afterlife_end.is_none() && self.own_track.is_some() {
            self.afterlife_end = Some(AfterlifeEnd::WatchEnded);
        }
    }

    /// The finished report.
    pub fn into_report(self, kernel: KernelTcp) -> Report {
        let end = Instant::now();
        let verdict = self.verdict.unwrap_or(Verdict::Open);
        let closer = match (self.action, self.peer_action) {
            (Some(_), _) => Some(Closer::Local),
            (None, Some(_)) => Some(Closer::Peer),
            // An ending this side detected was the peer's doing, seen or silent.
            (None, None)
                if matches!(
                    verdict,
                    Verdict::Fin | Verdict::Rst | Verdict::Heartbeat | Verdict::Timeout
                ) =>
            {
                Some(Closer::Peer)
            }
            _ => None,
        };
        let acted = match closer {
            Some(Closer::Local) => self.action,
            Some(Closer::Peer) => self.peer_action,
            None => None,
        };
        // Detection is measured for what the peer did; a local fin/rst has none.
        let observed =
            closer == Some(Closer::Peer) || self.action.is_some_and(|(_, m)| m == CloseMode::Half);
        let (reference, from) = match self.peer_action {
            Some((at, _)) => (at, DetectedFrom::Close),
            None => (self.last_data, DetectedFrom::LastActivity),
        };
        let detected = self
            .detected_at
            .filter(|_| observed && verdict != Verdict::Open)
            .map(|at| micros(at.saturating_duration_since(reference)));
        let silent = !matches!(verdict, Verdict::Fin | Verdict::Rst) && self.action.is_none();
        let prediction = silent
            .then(|| predict::predict(&self.plan.detection, kernel, self.anchors()))
            .flatten();
        let close_t_us = acted.map(|(at, _)| self.timeline.t_us(at));
        let duration_us = micros(end.saturating_duration_since(self.timeline.start()));
        let peer_side = self
            .plan
            .peer_side
            .then(|| self.peer_track.into_peer_side());
        let afterlife = match (self.own_track, self.action, self.afterlife_end) {
            (Some((track, started)), Some(_), Some(ended)) => Some(Afterlife {
                states: track.into_samples(),
                ended,
                watched_us: micros(end.saturating_duration_since(started)),
            }),
            _ => None,
        };
        let snapshots = self.timeline.snapshots;
        Report {
            schema: SCHEMA,
            kind: "connection",
            role: self.role,
            local: self.local,
            peer: self.peer,
            close: acted.map(|(_, mode)| mode),
            closer,
            close_t_us,
            verdict,
            detected_by: self.detected_by,
            detected_after_us: detected,
            detected_from: detected.map(|_| from),
            predicted_us: prediction
                .as_ref()
                .map(|p| micros(p.at.saturating_duration_since(reference))),
            predicted_basis: prediction.map(|p| p.basis),
            duration_us,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            events: self.timeline.events,
            events_dropped: self.timeline.events_dropped,
            tcp_info: snapshots.last().map(|s| s.tcp_info.clone()),
            snapshots,
            snapshots_dropped: self.timeline.snapshots_dropped,
            peer_side,
            afterlife,
            packets: self.packets,
            packets_dropped: self.packets_dropped,
        }
    }
}

/// An IPv4 address and its v4-mapped IPv6 form compare equal.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// recv() into an initialised buffer (socket2 wants `MaybeUninit`).
fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    (&*sock).read(buf)
}

/// send() with MSG_NOSIGNAL so a reset peer gives EPIPE, not SIGPIPE.
fn send(sock: &Socket, bytes: &[u8]) -> io::Result<usize> {
    sock.send_with_flags(bytes, libc::MSG_NOSIGNAL)
}
