//! The observer's readings: TCP_INFO samples and state changes, the other end's
//! socket through sock_diag, captured segments, the anchors predictions use, and
//! progress as data.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::{Conn, Ctx, Phase};
use crate::engine::capture::Segment;
use crate::engine::predict::{self, Anchors, KernelTcp};
use crate::engine::timers::{TimerKind, later};
use crate::plan::History;
use crate::report::progress::{InFlight, Progress, Watch};
use crate::report::{EventKind, Packet, TcpFlag};
use crate::sys::{CaState, Kernel, TcpInfo, TcpState};

/// How often the other end's socket is read at most while this side's state holds.
pub(super) const PEER_READ_EVERY: Duration = Duration::from_millis(10);
/// Most captured segments kept per connection.
const MAX_PACKETS: usize = 4096;
/// Most captured segments kept per connection with a compact history.
const COMPACT_PACKETS: usize = 64;
/// Longest a TCP_INFO sample waits so that other connections' samples share its wake-up.
const SAMPLE_SLACK_MAX: Duration = Duration::from_millis(1024);

impl Conn {
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
        let ends = seg
            .packet
            .flags
            .iter()
            .any(|f| matches!(f, TcpFlag::Fin | TcpFlag::Rst));
        if incoming && ends && self.peer_end_packet.is_none() {
            self.peer_end_packet = Some(seg.at);
        }
        // A compact report (serve's table) shows no packets: a few are kept.
        let cap = match self.timeline.history() {
            History::Full => MAX_PACKETS,
            History::Compact => COMPACT_PACKETS,
        };
        match self.packets.as_mut() {
            Some(packets) if packets.len() < cap => packets.push(Packet {
                t_us: self.timeline.t_us(seg.at),
                outgoing,
                ..seg.packet.clone()
            }),
            Some(_) => self.packets_dropped += 1,
            None => {}
        }
        true
    }

    /// Arms the next TCP_INFO sample: the reactor's interval, doubled per quiet
    /// sample, and late by up to a quarter of it (a power of two of ms, at most
    /// [`SAMPLE_SLACK_MAX`]) so that the samples of many connections share a
    /// wake-up instead of each costing one.
    pub(super) fn schedule_sample(&mut self, ctx: &mut Ctx<'_>) {
        let every = self.sampler.interval(ctx.sample_every);
        let quarter_ms = (every / 4).min(SAMPLE_SLACK_MAX).as_millis() as u64;
        let slack = match quarter_ms {
            0 => Duration::ZERO,
            ms => Duration::from_millis(1 << ms.ilog2()),
        };
        let at = ctx
            .timers
            .at_coarse(later(ctx.now, every), slack, ctx.token, TimerKind::Sample);
        self.sampler.armed(at);
    }

    /// Nothing on this socket can change without an epoll wake-up: no detection
    /// setting, established, nothing queued, in flight or being retried. Its
    /// sampling may then back off.
    pub(super) fn can_rest(&self) -> bool {
        self.plan.detection.is_empty()
            && self.phase() == Phase::Open
            && self.verdict().is_none()
            && self.queue.is_empty()
            && self.sampler.last_info().is_some_and(|i| {
                i.state == TcpState::Established
                    && (i.unacked, i.retransmits, i.probes, i.backoff) == (0, 0, 0, 0)
                    && i.notsent_bytes.unwrap_or(0) == 0
            })
    }

    /// This side sent something: sampling is back to its normal pace at once.
    pub(super) fn stir(&mut self, ctx: &mut Ctx<'_>) {
        let due_later = self.sampler.wake(ctx.now, ctx.sample_every);
        if due_later && self.sock.is_some() {
            self.schedule_sample(ctx);
        }
    }

    /// Reads TCP_INFO; records state changes, and the snapshot when `always` or
    /// when a counter worth watching moved. Returns whether the state or a
    /// watched counter changed.
    pub(super) fn sample(&mut self, os: &dyn Kernel, now: Instant, always: bool) -> bool {
        let Some(sock) = &self.sock else { return false };
        let Ok(info) = os.tcp_info(sock.as_fd()) else {
            return false;
        };
        self.record_sample(os, now, info, always)
    }

    /// A snapshot at `now`, unless one was taken at this same instant and this side
    /// has sent or received nothing since (it would read the same).
    pub(super) fn sample_once(&mut self, os: &dyn Kernel, now: Instant) {
        if !self.sampler.has_read_at(now) {
            self.sample(os, now, true);
        }
    }

    /// Records a TCP_INFO reading; returns whether the state or a watched counter changed.
    pub(super) fn record_sample(
        &mut self,
        os: &dyn Kernel,
        now: Instant,
        info: TcpInfo,
        always: bool,
    ) -> bool {
        // The other end's socket (the mirrored 4-tuple) is read through netlink: at
        // each change of this side's state, else at most every PEER_READ_EVERY, so a
        // stream of data wake-ups does not become a stream of sock_diag requests.
        let due = self.sampler.last_state() != Some(info.state)
            || self
                .last_peer_read
                .is_none_or(|at| now.saturating_duration_since(at) >= PEER_READ_EVERY);
        if let Some(local) = self.local.filter(|_| self.plan.peer_side && due) {
            let t_us = self.timeline.t_us(now);
            self.peer_track.read(os, t_us, self.peer, local);
            self.last_peer_read = Some(now);
        }
        if self.verdict().is_none() {
            self.track_silence(now, &info);
        }
        let (new_state, moved) = self.sampler.news(&info);
        if new_state {
            let state = info.state;
            self.timeline
                .push(now, EventKind::State, |e| e.state = Some(state));
        }
        if always || moved {
            self.timeline.snapshot(now, info.clone());
        }
        self.sampler.keep(now, info);
        new_state || moved
    }

    /// What this connection is waiting for and how far along it is (for a
    /// progress display); `None` once it has ended.
    pub fn progress(&self, now: Instant, kernel: KernelTcp) -> Option<Progress> {
        let start = self.timeline.start();
        let elapsed = now.saturating_duration_since(start);
        match self.phase() {
            Phase::Done | Phase::Probing | Phase::Connecting | Phase::Afterlife => return None,
            Phase::Holding => {
                return Some(Progress::Holding {
                    mode: self.action.map(|(_, m)| m),
                    peer: self.peer,
                    elapsed,
                });
            }
            _ => {}
        }
        let d = &self.plan.detection;
        let info = self.sampler.last_info();
        Some(Progress::Observing(Watch {
            peer: self.peer,
            elapsed,
            keepalive_probes: d.keepalive.zip(info).map(|(ka, i)| (i.probes, ka.count)),
            in_flight: info
                .filter(|i| i.unacked > 0 || i.retransmits > 0 || d.send_every.is_some())
                .map(|i| InFlight {
                    unacked: i.unacked,
                    retransmits: i.retransmits,
                    backoff: i.backoff,
                    rto_us: i.rto,
                }),
            heartbeat_misses: d.heartbeat.map(|hb| (self.heartbeat.misses(), hb.misses)),
            predicted: predict::predict(d, kernel, self.anchors())
                .map(|p| (p.verdict, p.at.saturating_duration_since(start))),
            timeout: self.plan.timeout,
        }))
    }

    pub(super) fn anchors(&self) -> Anchors {
        Anchors {
            last_data: self.last_data,
            last_packet: self.last_packet,
            first_unacked: self.first_unacked,
            first_rto: self.first_rto,
            rto: Duration::from_micros(
                self.sampler
                    .last_info()
                    .map_or(200_000, |i| u64::from(i.rto)),
            ),
        }
    }

    /// Updates what predictions are anchored on: the last packet received, and
    /// when the current loss episode's first retransmission timeout fired.
    pub(super) fn track_silence(&mut self, now: Instant, info: &TcpInfo) {
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
}

/// An IPv4 address and its v4-mapped IPv6 form compare equal.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
