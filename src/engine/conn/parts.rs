//! The observer's owned parts, each with private fields: only its own methods
//! change it, whatever file of the connection asks.

use std::time::{Duration, Instant};

use crate::engine::side::SideTrack;
use crate::engine::timers::later;
use crate::report::{self, AfterlifeEnd};
use crate::sys::{TcpInfo, TcpState};
use crate::vocab::Verdict;

use super::Phase;

/// The heartbeat request. Any bytes received count as a pong, so an echo
/// server answers too.
pub(super) const PING: &[u8] = b"tcpbye-ping\n";
/// The heartbeat answer.
pub(super) const PONG: &[u8] = b"tcpbye-pong\n";
/// The payload of `--send`, `--send-every` and the post-detection probe.
pub(super) const FILL: &[u8] = b"tcpbye-data-0123456789abcdefghijklmnopqrstuvwxyz\n";
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
/// Most pongs waiting to be sent: a flood of pings does not grow the queue.
const MAX_PONGS: usize = 64;

/// Bytes queued for sending: answers (pongs, a greeting's) first, then the
/// filler bytes `--send` asked for.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    out: Vec<u8>,
    fill_left: usize,
    fill_pos: usize,
}

impl SendQueue {
    /// Queues `bytes` after what is queued, before the filler.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queues a pong, unless [`MAX_PONGS`] worth are queued already.
    pub(super) fn push_pong(&mut self) {
        if self.out.len() < MAX_PONGS * PONG.len() {
            self.out.extend_from_slice(PONG);
        }
    }

    /// `n` bytes of filler to send after what is queued, instead of any left.
    pub(super) fn fill(&mut self, n: usize) {
        self.fill_left = n;
    }

    /// Whether answers wait to be sent (the filler aside).
    pub(super) fn has_answers(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether nothing at all waits to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.out.is_empty() && self.fill_left == 0
    }

    /// The bytes to send next, if any: answers first, then up to 16 KiB of filler.
    pub(super) fn next(&self) -> Option<&[u8]> {
        if !self.out.is_empty() {
            Some(&self.out)
        } else if self.fill_left > 0 {
            let start = self.fill_pos % FILL.len();
            let n = self.fill_left.min(FILL_BLOCK.len() - start);
            Some(&FILL_BLOCK[start..start + n])
        } else {
            None
        }
    }

    /// `n` bytes of what [`SendQueue::next`] returned were sent.
    pub(super) fn sent(&mut self, n: usize) {
        if !self.out.is_empty() {
            self.out.drain(..n);
        } else {
            self.fill_left -= n;
            self.fill_pos += n;
        }
    }

    /// Forgets everything queued (a send failed).
    pub(super) fn clear(&mut self) {
        self.out.clear();
        self.fill_left = 0;
    }

    /// Filler bytes still to send.
    #[cfg(test)]
    pub(super) fn fill_left(&self) -> usize {
        self.fill_left
    }
}

/// The application heartbeat: pings found in what arrives, and the intervals
/// in a row in which nothing arrived.
#[derive(Debug, Default)]
pub(super) struct Heartbeat {
    /// How much of a ping the last bytes received matched.
    ping_match: usize,
    /// Bytes arrived since the last interval ended.
    heard: bool,
    misses: u32,
}

impl Heartbeat {
    /// Bytes arrived: returns how many whole pings ended in them.
    pub(super) fn hear(&mut self, bytes: &[u8]) -> usize {
        self.heard = true;
        let mut pings = 0;
        for &b in bytes {
            if b == PING[self.ping_match] {
                self.ping_match += 1;
                if self.ping_match == PING.len() {
                    self.ping_match = 0;
                    pings += 1;
                }
            } else {
                self.ping_match = usize::from(b == PING[0]);
            }
        }
        pings
    }

    /// An interval ended: returns the intervals in a row without a sign of life.
    pub(super) fn tick(&mut self) -> u32 {
        if self.heard {
            self.misses = 0;
        } else {
            self.misses += 1;
        }
        self.heard = false;
        self.misses
    }

    /// Intervals in a row without a sign of life so far.
    pub(super) fn misses(&self) -> u32 {
        self.misses
    }
}

/// Where the connection stands and, once known, how it ended. Changed only
/// through `Conn::enter` and `Conn::conclude`.
#[derive(Debug)]
pub(super) struct Course {
    phase: Phase,
    verdict: Option<Verdict>,
}

impl Course {
    pub(super) fn new(phase: Phase) -> Self {
        Self {
            phase,
            verdict: None,
        }
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    pub(super) fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    pub(super) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    pub(super) fn set_verdict(&mut self, verdict: Verdict) {
        self.verdict = Some(verdict);
    }
}

/// Most doublings of the sampling interval of a connection on which nothing can
/// change without an epoll wake-up (see `Conn::can_rest`).
pub(super) const QUIET_DOUBLINGS: u32 = 10;

/// This side's TCP_INFO readings: the last one, when it was taken, and the
/// pace of the next.
#[derive(Debug, Default)]
pub(super) struct Sampler {
    last_state: Option<TcpState>,
    last_info: Option<TcpInfo>,
    /// When `last_info` was read, until this side next sends or receives: a reading
    /// at that same instant would repeat it.
    info_at: Option<Instant>,
    /// Samples in a row that found nothing new on a connection at rest: each
    /// doubles the sampling interval, up to [`QUIET_DOUBLINGS`].
    quiet: u32,
    /// When the sample timer in force is due; an earlier-armed one that comes
    /// due later than it was replaced and is ignored.
    next_sample: Option<Instant>,
}

impl Sampler {
    /// The last reading.
    pub(super) fn last_info(&self) -> Option<&TcpInfo> {
        self.last_info.as_ref()
    }

    /// The state of the last reading.
    pub(super) fn last_state(&self) -> Option<TcpState> {
        self.last_state
    }

    /// Whether a reading at `now` would repeat the last one.
    pub(super) fn has_read_at(&self, now: Instant) -> bool {
        self.info_at == Some(now)
    }

    /// This side sent or received: a reading now may differ from the last.
    pub(super) fn touched(&mut self) {
        self.info_at = None;
    }

    /// Whether `info` shows a new state, and whether a watched counter moved.
    pub(super) fn news(&self, info: &TcpInfo) -> (bool, bool) {
        let new_state = self.last_state != Some(info.state);
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
        (new_state, moved)
    }

    /// Keeps `info`, read at `now`, as the last reading.
    pub(super) fn keep(&mut self, now: Instant, info: TcpInfo) {
        self.info_at = Some(now);
        self.last_state = Some(info.state);
        self.last_info = Some(info);
    }

    /// Samples in a row that found nothing new at rest.
    #[cfg(test)]
    pub(super) fn quiet(&self) -> u32 {
        self.quiet
    }

    /// The interval to the next sample: `every`, doubled per quiet sample.
    pub(super) fn interval(&self, every: Duration) -> Duration {
        every.saturating_mul(1u32 << self.quiet.min(QUIET_DOUBLINGS))
    }

    /// A sample found `news` or not, on a connection that `can_rest` or not:
    /// the interval doubles once more, or is back to its pace.
    pub(super) fn sampled(&mut self, news: bool, can_rest: bool) {
        self.quiet = if !news && can_rest {
            (self.quiet + 1).min(QUIET_DOUBLINGS)
        } else {
            0
        };
    }

    /// Something happened on the socket: back to the normal pace. Returns whether
    /// the sample timer in force comes later than `every` from `now` (re-arm it).
    pub(super) fn wake(&mut self, now: Instant, every: Duration) -> bool {
        if self.quiet == 0 {
            return false;
        }
        self.quiet = 0;
        self.next_sample.is_some_and(|at| at > later(now, every))
    }

    /// Back to the normal pace from the next sample on.
    pub(super) fn start_over(&mut self) {
        self.quiet = 0;
    }

    /// The sample timer in force is due at `at`.
    pub(super) fn armed(&mut self, at: Instant) {
        self.next_sample = Some(at);
    }

    /// Whether a sample timer firing at `now` was replaced by one due later.
    pub(super) fn is_replaced(&self, now: Instant) -> bool {
        self.next_sample.is_some_and(|at| now < at)
    }

    /// When the sample timer in force is due.
    #[cfg(test)]
    pub(super) fn next_sample(&self) -> Option<Instant> {
        self.next_sample
    }
}

/// This side's socket after its close (`--linger-watch`): its readings through
/// sock_diag, when following began, and how it ended. Boxed: only a closer that
/// follows its socket has one, and every connection held open (10,000 idle ones
/// in `serve`) would carry its size.
#[derive(Debug, Default)]
pub(super) struct Afterlife {
    track: Option<Box<(SideTrack, Instant)>>,
    end: Option<AfterlifeEnd>,
}

impl Afterlife {
    /// Starts following this side's closed socket at `now`.
    pub(super) fn begin(&mut self, now: Instant) {
        self.track = Some(Box::new((SideTrack::own(), now)));
    }

    /// The track being followed, and when following began.
    pub(super) fn track(&mut self) -> Option<(&mut SideTrack, Instant)> {
        self.track.as_deref_mut().map(|(track, at)| (track, *at))
    }

    /// How following ended, once it has.
    pub(super) fn end(&self) -> Option<AfterlifeEnd> {
        self.end
    }

    pub(super) fn set_end(&mut self, end: AfterlifeEnd) {
        self.end = Some(end);
    }

    /// The observation stopped while following: the watch ended there.
    pub(super) fn stop(&mut self) {
        if self.end.is_none() && self.track.is_some() {
            self.end = Some(AfterlifeEnd::WatchEnded);
        }
    }

    /// The report's account, when the socket was followed to an end.
    pub(super) fn into_report(self, end: Instant) -> Option<report::Afterlife> {
        let (track, started) = *self.track?;
        Some(report::Afterlife {
            states: track.into_samples(),
            ended: self.end?,
            watched_us: report::micros(end.saturating_duration_since(started)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_found_across_chunks_and_after_a_false_start() {
        let mut hb = Heartbeat::default();
        assert_eq!(hb.hear(b"xxtcpbye-pi"), 0);
        assert_eq!(hb.hear(b"ng\ntcpbye-ping\n"), 2);
        // A ping that starts inside a broken one is still found.
        assert_eq!(hb.hear(b"tcpbtcpbye-ping\n"), 1);
        assert_eq!(hb.tick(), 0);
        assert_eq!((hb.tick(), hb.tick()), (1, 2));
    }

    #[test]
    fn answers_go_before_the_filler_and_pongs_are_capped() {
        let mut q = SendQueue::default();
        q.fill(5);
        q.push(b"ok\n");
        assert_eq!(q.next(), Some(&b"ok\n"[..]));
        q.sent(2);
        assert_eq!(q.next(), Some(&b"\n"[..]));
        q.sent(1);
        assert_eq!(q.next(), Some(&FILL[..5]));
        q.sent(3);
        assert_eq!(q.next(), Some(&FILL[3..5]));
        q.sent(2);
        assert!(q.is_empty() && q.next().is_none());
        for _ in 0..100 {
            q.push_pong();
        }
        assert_eq!(q.next().map(<[u8]>::len), Some(MAX_PONGS * PONG.len()));
    }
}
