//! The observer's I/O: reading until EAGAIN, the send queue (pongs, `--send`
//! data), one-off sends (pings, probes), heartbeats, and SO_ERROR.

use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::time::Instant;

use nix::sys::epoll::{EpollEvent, EpollFlags};
use socket2::Socket;

use super::parts::{FILL, PING};
use super::{Conn, Ctx, Verdict};
use crate::engine::timers::{TimerKind, later};
use crate::report::{EventKind, Role};
use crate::sys::{self, Kernel};

const PROBE: &[u8] = b"tcpbye-probe\n";
/// Most bytes read per wake-up before other connections get their turn.
const READ_BUDGET: usize = 1 << 20;
/// Interest while reading; `EPOLLOUT` is added only while data waits to be sent.
pub(super) fn interest(want_out: bool) -> EpollFlags {
    let base = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
    if want_out {
        base | EpollFlags::EPOLLOUT
    } else {
        base
    }
}

/// The raw flag names of an epoll wake-up, without the `EPOLL` prefix.
fn flag_names(flags: EpollFlags) -> Vec<&'static str> {
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

impl Conn {
    /// Records an epoll wake-up with its raw flags.
    pub(super) fn record_wakeup(&mut self, now: Instant, flags: EpollFlags) {
        self.timeline
            .push(now, EventKind::Epoll, |e| e.epoll = Some(flag_names(flags)));
    }

    /// A heartbeat ping.
    pub(super) fn send_ping(&mut self, ctx: &mut Ctx<'_>) {
        self.send_now(ctx, PING, EventKind::Ping);
    }

    /// A little data, so that retransmission timeouts apply (`--send-every`).
    pub(super) fn send_filler(&mut self, ctx: &mut Ctx<'_>) {
        self.send_now(ctx, &FILL[..16], EventKind::Send);
    }

    /// One of the writes after the peer's end that show what a writer meets.
    pub(super) fn send_probe(&mut self, ctx: &mut Ctx<'_>) {
        self.send_now(ctx, PROBE, EventKind::Send);
    }

    /// Reads until EAGAIN, EOF or the budget; records data, EOF and errors.
    pub(super) fn read_all(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut data = 0usize;
        let mut errors = 0;
        while let Some(sock) = &self.sock {
            let result = recv(sock, ctx.buf);
            if !matches!(&result, Err(e) if e.kind() == ErrorKind::WouldBlock) {
                self.sampler.touched();
            }
            match result {
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
                    // `serve`: the first line may be a `path` greeting; a control
                    // connection's socket is handed over unread past its first chunk.
                    // After a test's greeting (its plan no longer takes greetings),
                    // the near end's mark may follow.
                    let first = self.bytes_received == n as u64 || self.far.is_some();
                    if (self.plan.path_greetings || self.far.is_some())
                        && self.role == Role::Serve
                        && first
                        && self.greet(now, &ctx.buf[..n], ctx.tokens)
                    {
                        break;
                    }
                    if first && self.path_token().is_some() {
                        // A `path` test: its far-end view reads the whole timeline.
                        self.timeline.keep_all();
                    }
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
        self.follow_greeting(ctx);
        if self.queue.has_answers() && self.verdict().is_none() {
            self.flush(ctx);
        }
    }

    /// One recv() after the probe, to show what a reader meets then.
    pub(super) fn recv_once(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let Some(sock) = &self.sock else { return };
        self.sampler.touched();
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

    pub(super) fn record_data(&mut self, now: Instant, data: &mut usize) {
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
    pub(super) fn on_data(&mut self, bytes: &[u8]) {
        self.bytes_received += bytes.len() as u64;
        for _ in 0..self.heartbeat.hear(bytes) {
            self.queue.push_pong();
        }
    }

    /// Reads (and so clears) SO_ERROR, recording it; returns the pending error.
    pub(super) fn read_so_error(&mut self, now: Instant) -> Option<io::Error> {
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
    pub(super) fn flush(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut sent = 0usize;
        let mut failure = None;
        while let Some(sock) = &self.sock {
            let Some(bytes) = self.queue.next() else {
                break;
            };
            let result = send(sock, bytes);
            match result {
                Ok(n) => {
                    sent += n;
                    self.queue.sent(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if sent > 0 || failure.is_some() {
            self.sampler.touched();
            self.stir(ctx);
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
            self.queue.clear();
        }
        let want_out = !self.queue.is_empty();
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
    pub(super) fn send_now(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8], kind: EventKind) {
        let now = ctx.now;
        if self.sock.is_none() {
            return;
        }
        self.sampler.touched();
        self.stir(ctx);
        let Some(sock) = &self.sock else { return };
        // The anchor of predictions, which matter only until the end is detected
        // (the probe sends after it).
        if self.verdict().is_none()
            && self.first_unacked.is_none()
            && ctx.os.unacked_bytes(sock.as_fd()).unwrap_or(0) == 0
        {
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

    pub(super) fn heartbeat_tick(&mut self, ctx: &mut Ctx<'_>) {
        let Some(hb) = self.plan.detection.heartbeat else {
            return;
        };
        let now = ctx.now;
        let misses = self.heartbeat.tick();
        if misses >= hb.misses {
            self.timeline.push(now, EventKind::Note, |e| {
                e.detail = Some(format!("{misses} heartbeat intervals without a pong"));
            });
            self.detect(now, Verdict::Heartbeat, None);
            return;
        }
        self.send_now(ctx, PING, EventKind::Ping);
        ctx.at(later(now, hb.interval), TimerKind::Heartbeat);
    }

    /// Bytes received and unread on this socket.
    pub(super) fn unread(&self, os: &dyn Kernel) -> usize {
        self.sock
            .as_ref()
            .and_then(|s| os.unread_bytes(s.as_fd()).ok())
            .unwrap_or(0)
    }
}

/// recv() into an initialised buffer (socket2 wants `MaybeUninit`).
fn recv(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    (&*sock).read(buf)
}

/// send() that meets a reset peer with EPIPE, not SIGPIPE.
fn send(sock: &Socket, bytes: &[u8]) -> io::Result<usize> {
    sys::send_nosignal(sock, bytes)
}
