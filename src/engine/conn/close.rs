//! The close modes, in one place: what the closing end does to its socket for
//! each `--close` mode, and how it follows its socket afterwards.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use socket2::{SockFilter, Socket};

use super::{Conn, Ctx, Phase, Verdict};
use crate::engine::side;
use crate::engine::timers::{TimerKind, later};
use crate::report::{AfterlifeEnd, EventKind};
use crate::sys::{self, TcpState};
use crate::vocab::CloseMode;

/// How long `rst-unread` waits for data to leave unread.
pub(super) const UNREAD_GRACE: Duration = Duration::from_secs(1);
/// How often a closed socket is read again while following it.
const AFTERLIFE_POLL: Duration = Duration::from_millis(5);
/// How long `drop` waits for in-flight data to be acknowledged first.
pub(super) const QUIET_GRACE: Duration = Duration::from_secs(2);
const QUIET_POLL: Duration = Duration::from_millis(5);
/// How long `check`'s action waits for the driver to hear of the other end's socket.
const PEER_FIRST: Duration = Duration::from_millis(1);

/// How soon the other end's socket is read again, `since` the action: every
/// 0.5 ms for 20 ms, every 2 ms until 200 ms, then at [`PEER_READ_EVERY`]'s pace
/// (`check` and `check --pid` alike).
///
/// [`PEER_READ_EVERY`]: super::sample::PEER_READ_EVERY
pub fn peer_pace(since: Duration) -> Duration {
    match since {
        s if s < Duration::from_millis(20) => Duration::from_micros(500),
        s if s < Duration::from_millis(200) => Duration::from_millis(2),
        _ => super::sample::PEER_READ_EVERY,
    }
}

impl Conn {
    /// This side's close action.
    pub(super) fn act(&mut self, ctx: &mut Ctx<'_>, mode: CloseMode) {
        let now = ctx.now;
        // `check` (follow_peer): the driver hears of the other end's socket before
        // the action, in a round of its own, so that it can find the program's
        // descriptor while the program still holds it.
        if self.plan.follow_peer && !self.peer_first {
            self.peer_first = true;
            self.last_peer_read = None;
            self.sample(ctx.os, now, true);
            // Read now, not at its first reading: a program blocked in accept()
            // has its socket's inode before its descriptor.
            if let Some(inode) = self.peer_track.last_inode() {
                self.peer_known = Some(inode);
                ctx.at(later(now, PEER_FIRST), TimerKind::Close);
                return;
            }
        }
        match mode {
            CloseMode::Fin | CloseMode::Half => self.read_all(ctx),
            CloseMode::RstUnread if self.phase() == Phase::Open && self.unread(ctx.os) == 0 => {
                self.enter(Phase::AwaitUnread);
                self.timeline
                    .note(now, "rst-unread: waiting up to 1s for data to leave unread");
                ctx.at(later(now, UNREAD_GRACE), TimerKind::Grace);
                return;
            }
            CloseMode::Drop => {
                let deadline = *self.quiet_deadline.get_or_insert(later(now, QUIET_GRACE));
                let in_flight = self
                    .sock
                    .as_ref()
                    .and_then(|s| ctx.os.unacked_bytes(s.as_fd()).ok())
                    .unwrap_or(0);
                if in_flight > 0 && now < deadline {
                    self.enter(Phase::AwaitQuiet);
                    ctx.at(later(now, QUIET_POLL), TimerKind::Grace);
                    return;
                }
            }
            _ => {}
        }
        if self.verdict().is_some() || self.phase() == Phase::Done {
            return;
        }
        // `check` (follow_peer): the other end is read right before the action, so
        // the state it was in when this side acted is on record.
        if self.plan.follow_peer {
            self.last_peer_read = None;
            self.sample(ctx.os, now, true);
        } else {
            self.sample_once(ctx.os, now);
        }
        let Some(sock) = self.sock.take() else { return };
        // `fin` too: data that arrived after the last read turns its close into an RST.
        let unread = match mode {
            CloseMode::RstUnread | CloseMode::Fin => ctx.os.unread_bytes(sock.as_fd()).unwrap_or(0),
            _ => 0,
        };
        if mode.holds_socket() {
            // A vanished or hung peer sees nothing more: stop watching its socket.
            let _ = ctx.epoll.delete(sock.as_fd());
        }
        let fd = sock.as_raw_fd();
        // Detection times are measured from here: the instant before the syscall.
        let now = Instant::now();
        match perform(mode, sock, |sock| self.vanish(sock)) {
            Ok(Closed::Released) => {
                self.timeline.push(now, EventKind::Close, |e| {
                    e.detail = Some(describe(mode, unread));
                });
                self.action = Some((now, mode));
                self.unread_at_close = unread;
                self.note_acted(now, mode);
                self.conclude(match mode {
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
                self.timeline
                    .push(now, kind, |e| e.detail = Some(describe(mode, unread)));
                self.action = Some((now, mode));
                self.note_acted(now, mode);
                self.sock = Some(sock);
                if self.plan.follow_peer {
                    ctx.at(later(now, self.peer_pace(now)), TimerKind::PeerRead);
                }
                if mode == CloseMode::Half {
                    self.enter(Phase::HalfClosed);
                } else {
                    self.enter(Phase::Holding);
                    if let Some(hold) = self.plan.hold {
                        ctx.at(later(now, hold), TimerKind::HoldEnd);
                    }
                }
            }
            Err(e) => {
                self.timeline
                    .note(now, format!("{mode} on fd {fd} failed: {e}"));
                self.conclude(Verdict::Error);
                self.finish(now);
            }
        }
    }

    /// After this side's close: follow its socket (`--linger-watch`) or be done.
    pub(super) fn start_afterlife(&mut self, ctx: &mut Ctx<'_>) {
        let follow =
            self.plan.peer_side && !self.plan.linger_watch.is_zero() && self.local.is_some();
        if follow {
            self.enter(Phase::Afterlife);
            self.afterlife.begin(ctx.now);
            ctx.at(ctx.now, TimerKind::Afterlife);
        } else {
            self.enter(Phase::Done);
        }
    }

    pub(super) fn afterlife_tick(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let t_us = self.timeline.t_us(now);
        let (Some(local), Some((track, started))) = (self.local, self.afterlife.track()) else {
            self.enter(Phase::Done);
            return;
        };
        let found = track.read(ctx.os, t_us, local, self.peer);
        // The other end goes on too: its CLOSE_WAIT, LAST_ACK, or its end.
        let peer = self.peer_track.read(ctx.os, t_us, self.peer, local);
        let watch_over = now.saturating_duration_since(started) >= self.plan.linger_watch;
        let own_end = side::afterlife_end(found.as_ref(), watch_over);
        // `follow_peer`: this side's end is noted, and the watch goes on until the
        // other end's socket is gone or in TIME_WAIT (or the watch is over). An
        // other end that sock_diag cannot see, but whose segments are captured,
        // is watched on the wire until the watch is over.
        let hidden = self.peer_track.is_hidden();
        let end = if self.plan.follow_peer && (!hidden || self.packets.is_some()) {
            if let Some(end) = own_end {
                self.afterlife.set_end(end);
            }
            // Never on the first reading: while a socket turns into its TIME_WAIT
            // minisocket a lookup can miss it, so "gone" is read a second time.
            let second = now.saturating_duration_since(started) >= AFTERLIFE_POLL;
            let peer_over = second && !hidden && peer.is_none_or(|d| d.state == TcpState::TimeWait);
            (peer_over || watch_over)
                .then(|| self.afterlife.end().or(own_end))
                .map(|end| end.unwrap_or(AfterlifeEnd::WatchEnded))
        } else {
            own_end
        };
        match end {
            Some(end) => {
                self.afterlife.set_end(end);
                self.enter(Phase::Done);
            }
            None => {
                let pace = if self.plan.follow_peer {
                    self.peer_pace(now).min(AFTERLIFE_POLL)
                } else {
                    AFTERLIFE_POLL
                };
                ctx.at(later(now, pace), TimerKind::Afterlife);
            }
        }
    }

    /// `follow_peer`: how soon the other end's socket is read again after the
    /// action: densely at first, when a program's reaction usually comes, so
    /// that a reading brackets it closely (each time carries the span since the
    /// reading before), then at [`PEER_READ_EVERY`]'s pace.
    pub(super) fn peer_pace(&self, now: Instant) -> Duration {
        let since = self
            .action
            .map_or(Duration::MAX, |(at, _)| now.saturating_duration_since(at));
        peer_pace(since)
    }

    /// `follow_peer`, a kept socket (`half`, `drop`, `hang`): the other end read
    /// at [`Self::peer_pace`], whatever this side's sampling does.
    pub(super) fn peer_read_tick(&mut self, ctx: &mut Ctx<'_>) {
        let Some(local) = self.local else { return };
        let now = ctx.now;
        let t_us = self.timeline.t_us(now);
        self.peer_track.read(ctx.os, t_us, self.peer, local);
        self.last_peer_read = Some(now);
        ctx.at(later(now, self.peer_pace(now)), TimerKind::PeerRead);
    }

    /// Ends a `drop`/`hang` hold: a dropped socket vanishes without a packet,
    /// a hung process "exits" (the kernel closes its socket).
    pub fn end_hold(&mut self, now: Instant) {
        let Some(sock) = self.sock.take() else { return };
        let mode = self.action.map(|(_, m)| m);
        let note = if mode == Some(CloseMode::Drop) {
            match self.vanish(sock) {
                Ok(()) => "hold ended: socket closed in repair mode, nothing sent".to_owned(),
                Err(e) => format!("hold ended: repair-mode close failed ({e}); socket closed"),
            }
        } else {
            drop(sock);
            "hold ended: socket closed".to_owned()
        };
        self.timeline.note(now, note);
        if self.verdict().is_none() {
            self.conclude(Verdict::Open);
        }
        self.enter(Phase::Done);
    }
}

/// `BPF_RET | BPF_K` with k = 0: accept zero bytes of every packet.
const DROP_EVERYTHING: [SockFilter; 1] = [SockFilter::new(0x06, 0, 0, 0)];

/// What performing a close action produced.
#[derive(Debug)]
enum Closed {
    /// The socket is gone (fin, rst, rst-unread, reboot).
    Released,
    /// The socket stays open: `half` keeps reading, `drop` and `hang` hold it silently.
    Kept(Socket),
}

/// A human description of the action, for the timeline.
fn describe(mode: CloseMode, unread: usize) -> String {
    match mode {
        CloseMode::Fin if unread > 0 => {
            format!(
                "close() with {unread} bytes unread (arrived since the last read): Linux sends RST"
            )
        }
        CloseMode::Fin => "close(): FIN".to_owned(),
        CloseMode::Half => "shutdown(SHUT_WR): FIN, still reading".to_owned(),
        CloseMode::Rst => "SO_LINGER {on, 0} + close(): RST".to_owned(),
        CloseMode::RstUnread if unread > 0 => {
            format!("close() with {unread} bytes unread: Linux sends RST")
        }
        CloseMode::RstUnread => "close() with nothing unread: Linux sends FIN".to_owned(),
        CloseMode::Drop => "drop: every incoming segment discarded, nothing sent".to_owned(),
        CloseMode::Reboot => {
            "reboot: TCP_REPAIR + close(), the socket vanishes without a packet".to_owned()
        }
        CloseMode::Hang => "hang: socket open, never read or written again".to_owned(),
        CloseMode::None => "observe only".to_owned(),
    }
}

/// Performs `mode` on `sock`; `reboot` closes it through `vanish`. `drop` expects
/// nothing left in flight (the caller waits).
fn perform(
    mode: CloseMode,
    sock: Socket,
    vanish: impl FnOnce(Socket) -> io::Result<()>,
) -> io::Result<Closed> {
    match mode {
        CloseMode::Fin | CloseMode::RstUnread => Ok(Closed::Released),
        CloseMode::Rst => {
            sock.set_linger(Some(Duration::ZERO))?;
            Ok(Closed::Released)
        }
        CloseMode::Half => {
            sock.shutdown(std::net::Shutdown::Write)?;
            Ok(Closed::Kept(sock))
        }
        CloseMode::Drop => {
            sock.attach_filter(&DROP_EVERYTHING)?;
            Ok(Closed::Kept(sock))
        }
        CloseMode::Reboot => {
            vanish(sock)?;
            Ok(Closed::Released)
        }
        CloseMode::Hang | CloseMode::None => Ok(Closed::Kept(sock)),
    }
}

impl Conn {
    /// Closes without sending anything: TCP_REPAIR on, then close(). With
    /// `keep_vanished`, where the connection stood is remembered first.
    fn vanish(&mut self, sock: Socket) -> io::Result<()> {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::TcpRepair, &1)
            .map_err(io::Error::from)?;
        if self.plan.keep_vanished
            && let Some(local) = self.local
            && let Ok((send_seq, recv_seq)) = sys::repair_sequences(sock.as_fd())
        {
            self.vanished = Some(Box::new(sys::Vanished {
                local,
                peer: self.peer,
                send_seq,
                recv_seq,
            }));
        }
        drop(sock);
        Ok(())
    }

    /// `follow_peer`: keeps the action for the driver, with the other end's socket
    /// inode read right before it, so that its descriptor can be watched at once.
    fn note_acted(&mut self, at: Instant, mode: CloseMode) {
        if self.plan.follow_peer
            && let Some(inode) = self.peer_track.last_inode()
        {
            self.acted = Some((at, mode, inode));
        }
    }

    /// `follow_peer`: the other end's socket inode and this connection's close
    /// mode, once, read when the action was first due (which then waits a round),
    /// so that its holder can be found beforehand.
    pub fn take_peer_known(&mut self) -> Option<(CloseMode, u32)> {
        let inode = self.peer_known.filter(|i| *i != 0)?;
        self.peer_known = Some(0);
        Some((self.plan.close, inode))
    }

    /// The action not yet told to the driver (`follow_peer`), once.
    pub fn take_acted(&mut self) -> Option<(Instant, CloseMode, u32)> {
        self.acted.take()
    }

    /// Where the connection stood when its socket vanished (`keep_vanished`).
    pub fn take_vanished(&mut self) -> Option<sys::Vanished> {
        self.vanished.take().map(|v| *v)
    }
}
