//! Deadlines for the event loop: a min-heap; stale entries of finished
//! connections are skipped when they come due.

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
}

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
}

impl Timers {
    pub fn at(&mut self, when: Instant, token: u64, kind: TimerKind) {
        self.heap.push(Reverse((when, token, kind)));
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
}
