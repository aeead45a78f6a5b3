//! Sockets seen through sock_diag rather than a descriptor: the other end of a
//! local connection, and this side's own socket after it closed.

use std::net::SocketAddr;

use crate::report::{AfterlifeEnd, PeerSide, SideSample, fmt_us};
use crate::sys::{DiagSocket, DiagTimerKind, Kernel, TcpInfo, TcpState};

/// Most state readings kept per tracked socket.
const MAX_SAMPLES: usize = 64;
/// Lookups that must find nothing, before any found the socket, to call it not local.
const EARLY_MISSES: u32 = 3;
/// A keepalive timer this far from where its countdown should be was re-armed.
const KEEPALIVE_REARM_MS: u64 = 1000;

/// The state changes of one socket as sock_diag shows them.
#[derive(Debug, Default)]
pub struct SideTrack {
    samples: Vec<SideSample>,
    tcp_info: Option<TcpInfo>,
    uid: Option<u32>,
    /// Set when the first lookup found nothing: the other end is not local.
    hidden: Option<String>,
    /// This side's own socket: found nothing means gone, never "not visible".
    own: bool,
    /// Lookups that found nothing before the first that found the socket.
    early_misses: u32,
    /// When the first of those looked (µs on the report's clock), and whether the
    /// socket looked for is on a loopback address, where it can only be local.
    first_miss: Option<(u64, bool)>,
    /// µs of the last reading, recorded or not.
    last_read_us: Option<u64>,
    /// Also record a change of the pending timer's kind (`check`: a keepalive set
    /// after accept() shows only in a later reading).
    timer_kinds: bool,
}

impl SideTrack {
    /// A track of this side's own socket after its close.
    pub fn own() -> Self {
        Self {
            own: true,
            ..Self::default()
        }
    }

    /// Reads the socket `local`→`remote` and records it if its state changed.
    /// Returns what was read (`None`: no such socket).
    pub fn read(
        &mut self,
        os: &dyn Kernel,
        t_us: u64,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<DiagSocket> {
        if self.hidden.is_some() {
            return None;
        }
        let found = match os.lookup(local, remote) {
            Ok(found) => found,
            Err(e) => {
                self.hidden = Some(format!("sock_diag failed: {e}"));
                return None;
            }
        };
        if self.samples.is_empty() && found.is_none() && !self.own {
            // Right after the handshake the other end may still be a request socket
            // that sock_diag's lookup does not return (a loaded host): only a few
            // misses in a row mean it is not local.
            self.missed(t_us, local.ip().is_loopback());
            if self.early_misses < EARLY_MISSES {
                return None;
            }
            self.hidden = Some(
                "not visible from here: the other end is not a socket of this host (or of this network namespace)"
                    .to_owned(),
            );
            return None;
        }
        self.record(t_us, found.as_ref());
        found
    }

    fn record(&mut self, t_us: u64, found: Option<&DiagSocket>) {
        let mut sample = sample(t_us, found);
        sample.prev_t_us = self.last_read_us.replace(t_us);
        if let Some(d) = found {
            self.uid = Some(d.uid);
            if d.tcp_info.is_some() {
                self.tcp_info.clone_from(&d.tcp_info);
            }
        }
        // Besides state and descriptor changes, keep the moment a CLOSE_WAIT socket's
        // Recv-Q empties: its FIN counts one byte there until the application reads EOF.
        let timer_kinds = self.timer_kinds;
        let key = |s: &SideSample| {
            let eof_unread = s.state == Some(TcpState::CloseWait) && s.recv_q > 0;
            let timer = s.timer.filter(|_| timer_kinds).map(|t| t.kind);
            (s.state, s.inode == 0, eof_unread, timer)
        };
        // And a keepalive timer re-armed to another expiry than its countdown
        // explains: the program set its own TCP_KEEPIDLE after accept() (read
        // between its SO_KEEPALIVE and its TCP_KEEPIDLE, the timer shows the
        // sysctl's 7200 s first), which the prediction must not miss.
        let rearmed = |last: &SideSample| {
            let (Some(was), Some(now)) = (last.timer, sample.timer) else {
                return false;
            };
            let elapsed_ms = sample.t_us.saturating_sub(last.t_us) / 1000;
            let expected = u64::from(was.expires_ms).saturating_sub(elapsed_ms);
            timer_kinds
                && was.kind == DiagTimerKind::KeepAlive
                && now.kind == DiagTimerKind::KeepAlive
                && expected.abs_diff(u64::from(now.expires_ms)) > KEEPALIVE_REARM_MS
        };
        let changed = self
            .samples
            .last()
            .is_none_or(|last| key(last) != key(&sample) || rearmed(last));
        if changed && self.samples.len() < MAX_SAMPLES {
            self.samples.push(sample);
        }
    }

    /// A lookup before any found the socket found nothing.
    fn missed(&mut self, t_us: u64, loopback: bool) {
        self.early_misses += 1;
        self.first_miss.get_or_insert((t_us, loopback));
    }

    /// Records a reading whose timer kind changed, too.
    pub fn watch_timer_kinds(&mut self) {
        self.timer_kinds = true;
    }

    /// Whether the socket cannot be read here (not local, or sock_diag failed).
    pub fn is_hidden(&self) -> bool {
        self.hidden.is_some()
    }

    /// The last state read (`None` also when gone).
    pub fn last_state(&self) -> Option<TcpState> {
        self.samples.last().and_then(|s| s.state)
    }

    /// The inode of the socket's file as last read; `None` while it has none.
    pub fn last_inode(&self) -> Option<u32> {
        self.samples.last().map(|s| s.inode).filter(|i| *i != 0)
    }

    pub fn into_peer_side(self) -> PeerSide {
        PeerSide {
            visible: self.hidden.is_none() && !self.samples.is_empty(),
            note: match (self.hidden, self.samples.is_empty(), self.first_miss) {
                (Some(note), _, _) => Some(note),
                // The connection ended (an RST, say) before sock_diag's first reading.
                (None, true, Some((t_us, true))) => {
                    Some(format!("gone before the first look, +{}", fmt_us(t_us)))
                }
                (None, true, Some((t_us, false))) => Some(format!(
                    "not found at the first look, +{}: gone already, or not a socket of this host",
                    fmt_us(t_us)
                )),
                (None, true, None) => Some("no connection was established to look at".to_owned()),
                (None, false, _) => None,
            },
            uid: self.uid,
            states: self.samples,
            tcp_info: self.tcp_info,
        }
    }

    pub fn into_samples(self) -> Vec<SideSample> {
        self.samples
    }
}

/// Why following a closed socket stops now, if it does.
pub fn afterlife_end(found: Option<&DiagSocket>, watch_over: bool) -> Option<AfterlifeEnd> {
    match found {
        None => Some(AfterlifeEnd::Gone),
        Some(d) if d.state == TcpState::TimeWait => Some(AfterlifeEnd::TimeWait),
        Some(_) if watch_over => Some(AfterlifeEnd::WatchEnded),
        Some(_) => None,
    }
}

/// One sock_diag reading as the report has it (`None`: the socket is gone); the
/// timer as `ss -o` shows it, e.g. `keepalive,297.0s,0`.
pub fn sample(t_us: u64, found: Option<&DiagSocket>) -> SideSample {
    SideSample {
        t_us,
        state: found.map(|d| d.state),
        timer: found.and_then(|d| d.timer),
        recv_q: found.map_or(0, |d| d.recv_q),
        send_q: found.map_or(0, |d| d.send_q),
        inode: found.map_or(0, |d| d.inode),
        prev_t_us: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::DiagTimer;

    fn established(keepalive_ms: u32) -> DiagSocket {
        let addr: SocketAddr = "127.0.0.1:7".parse().expect("address");
        DiagSocket {
            local: addr,
            remote: addr,
            state: TcpState::Established,
            timer: Some(DiagTimer {
                kind: DiagTimerKind::KeepAlive,
                expires_ms: keepalive_ms,
                retransmits: 0,
            }),
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode: 7,
            tcp_info: None,
        }
    }

    #[test]
    fn a_keepalive_timer_set_again_by_the_program_is_recorded() {
        let mut track = SideTrack::default();
        track.watch_timer_kinds();
        // Read between its SO_KEEPALIVE and its TCP_KEEPIDLE: the sysctl's 7200 s.
        track.record(35, Some(&established(7_200_000)));
        // A countdown as expected: nothing new.
        track.record(500_035, Some(&established(7_199_500)));
        // Then its own 300 s: a reading of its own, which the prediction uses.
        track.record(1_000_035, Some(&established(299_000)));
        let samples = track.into_samples();
        assert_eq!(samples.len(), 2, "{samples:?}");
        assert_eq!(samples[1].timer.map(|t| t.expires_ms), Some(299_000));
    }

    #[test]
    fn an_end_gone_before_the_first_look_says_so() {
        let mut loopback = SideTrack::default();
        loopback.missed(12, true);
        loopback.missed(40, true);
        let side = loopback.into_peer_side();
        assert!(!side.visible);
        assert_eq!(
            side.note.as_deref(),
            Some("gone before the first look, +12µs")
        );
        let mut remote = SideTrack::default();
        remote.missed(30, false);
        assert_eq!(
            remote.into_peer_side().note.as_deref(),
            Some("not found at the first look, +30µs: gone already, or not a socket of this host")
        );
        // Never looked at all: nothing was established.
        assert_eq!(
            SideTrack::default().into_peer_side().note.as_deref(),
            Some("no connection was established to look at")
        );
    }
}
