//! Deadlines for the event loop: a min-heap; stale entries of finished
//! connections are skipped when they come due, and purged when they pile up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// How far ahead a deadline lands when `now + after` does not fit in an `Instant`:
/// far enough to mean "never" for any run.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The instant `after` past `now`, without the panic of `now + after` when that
/// overflows the clock: then a century ahead, or as far as the clock goes.
pub fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// connect() did not complete in time.
    Connect,
    /// This side's close action is due (`--after`).
    Close,
    /// A wait inside a close action (`rst-unread`, `drop`) is over.
    Grace,
    /// `--timeout`: stop observing.
    Timeout,
    /// `--hold` of `drop`/`hang` is over.
    HoldEnd,
    /// Read TCP_INFO.
    Sample,
    /// `--send-every`.
    SendEvery,
    /// `--heartbeat`.
    Heartbeat,
    /// The second probe send after the peer's FIN/RST.
    Probe,
    /// Read this side's closed socket again (`--linger-watch`).
    Afterlife,
    /// `check` (follow_peer): read the other end's socket again after the action.
    PeerRead,
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    /// Entries left after the last purge: the next one waits until the heap doubles.
    kept: usize,
    /// Where the grid of [`Timers::at_coarse`] starts.
    origin: Option<Instant>,
}

/// Fewest entries before stale ones are purged at all.
const PURGE_MIN: usize = 1024;

/// Tokens from here up belong to the event loop itself (listener, signals, the
/// caller's tick, …), never to a connection: [`Timers::purge`] keeps their
/// timers whatever it is told, so a clock the loop re-arms only when it fires
/// cannot be lost to a purge.
pub const RESERVED_FROM: u64 = u64::MAX - 15;

impl Timers {
    pub fn at(&mut self, when: Instant, token: u64, kind: TimerKind) {
        self.heap.push(Reverse((when, token, kind)));
    }

    /// Like [`Timers::at`], but `when` is rounded up to a multiple of `slack`
    /// counted from one origin, so that deadlines that may come a little late
    /// share a wake-up. With power-of-two slacks the grids nest: every deadline of
    /// a coarser grid is on the finer ones too. Returns the deadline set.
    pub fn at_coarse(
        &mut self,
        when: Instant,
        slack: Duration,
        token: u64,
        kind: TimerKind,
    ) -> Instant {
        // Deadlines are never in the past, so none comes before an origin taken now.
        let origin = *self.origin.get_or_insert_with(Instant::now);
        let step = u64::try_from(slack.as_nanos()).unwrap_or(u64::MAX);
        let when = match step {
            0 => when,
            step => {
                let since = u64::try_from(when.saturating_duration_since(origin).as_nanos())
                    .unwrap_or(u64::MAX);
                let rounded = since.div_ceil(step).saturating_mul(step);
                later(origin, Duration::from_nanos(rounded)).max(when)
            }
        };
        self.at(when, token, kind);
        when
    }

    /// Time until the next deadline, rounded up to whole ms (epoll's unit).
    pub fn wait_ms(&self, now: Instant) -> Option<u64> {
        self.heap.peek().map(|Reverse((when, ..))| {
            let left = when.saturating_duration_since(now);
            let ms = left.as_millis() as u64;
            if left > Duration::from_millis(ms) {
                ms + 1
            } else {
                ms
            }
        })
    }

    /// Whether a timer of `token` is pending.
    #[cfg(test)]
    pub fn has(&self, token: u64) -> bool {
        self.heap.iter().any(|Reverse((_, t, _))| *t == token)
    }

    /// Pops the next timer that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(u64, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((when, ..))) if *when <= now => self
                .heap
                .pop()
                .map(|Reverse((_, token, kind))| (token, kind)),
            _ => None,
        }
    }

    /// Drops the entries of tokens that are no longer `live` once the heap has
    /// doubled since the last purge: ended connections' timers (a sample timer
    /// can be 100 s away) must not pile up during a churn. Amortised O(1).
    /// Reserved tokens ([`RESERVED_FROM`] and up) are always kept.
    pub fn purge(&mut self, live: impl Fn(u64) -> bool) {
        if self.heap.len() < PURGE_MIN.max(2 * self.kept) {
            return;
        }
        self.heap
            .retain(|Reverse((_, token, _))| *token >= RESERVED_FROM || live(*token));
        if self.heap.capacity() > 4 * self.heap.len() {
            self.heap.shrink_to(2 * self.heap.len());
        }
        self.kept = self.heap.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_never_overflows() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        for huge in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let at = later(now, huge);
            assert!(at >= now + Duration::from_secs(365 * 24 * 3600), "{huge:?}");
            let mut timers = Timers::default();
            timers.at(at, 1, TimerKind::Timeout);
            assert_eq!(timers.pop_due(now), None);
            assert!(timers.wait_ms(now).is_some());
        }
    }

    #[test]
    fn coarse_deadlines_share_a_wake_up_and_are_never_early() {
        let mut timers = Timers::default();
        let now = Instant::now();
        let slack = Duration::from_millis(256);
        let a = timers.at_coarse(
            now + Duration::from_millis(300),
            slack,
            1,
            TimerKind::Sample,
        );
        let b = timers.at_coarse(
            now + Duration::from_millis(410),
            slack,
            2,
            TimerKind::Sample,
        );
        assert_eq!(a, b);
        assert!(
            a >= now + Duration::from_millis(410) && a < now + Duration::from_millis(300) + slack
        );
        let fine = timers.at_coarse(
            now + Duration::from_millis(5),
            Duration::ZERO,
            3,
            TimerKind::Sample,
        );
        assert_eq!(fine, now + Duration::from_millis(5));
        // A deadline past what the clock can hold stays past everything else.
        let far = timers.at_coarse(later(now, Duration::MAX), slack, 4, TimerKind::Sample);
        assert!(far >= later(now, Duration::MAX));
    }

    #[test]
    fn purge_drops_only_dead_tokens_and_only_after_growth() {
        let mut timers = Timers::default();
        let now = Instant::now();
        for token in 0..2000 {
            timers.at(now, token, TimerKind::Sample);
        }
        timers.purge(|t| t < 10);
        assert_eq!(timers.heap.len(), 10);
        // Below the threshold nothing is scanned, dead or not.
        timers.at(now, 5000, TimerKind::Sample);
        timers.purge(|_| false);
        assert_eq!(timers.heap.len(), 11);
        let mut popped = Vec::new();
        while let Some((token, _)) = timers.pop_due(now) {
            popped.push(token);
        }
        popped.sort_unstable();
        assert_eq!(popped, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5000]);
    }

    #[test]
    fn purge_never_drops_a_reserved_token() {
        let mut timers = Timers::default();
        let now = Instant::now();
        timers.at(now, u64::MAX, TimerKind::Sample);
        timers.at(now, RESERVED_FROM, TimerKind::Sample);
        for token in 0..2000 {
            timers.at(now, token, TimerKind::Sample);
        }
        timers.purge(|_| false);
        assert_eq!(timers.heap.len(), 2);
        assert!(timers.has(u64::MAX) && timers.has(RESERVED_FROM));
    }
}
