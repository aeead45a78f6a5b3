//! The bounded record of what one side saw: events and TCP_INFO snapshots.

use std::time::Instant;

use crate::plan::History;
use crate::report::{Event, EventKind, Snapshot, fmt_us};
use crate::sys::TcpInfo;

/// Most events kept per connection; later ones are counted, not stored.
pub const MAX_EVENTS: usize = 512;
/// Most TCP_INFO snapshots kept per connection (the last one is always kept).
pub const MAX_SNAPSHOTS: usize = 128;
/// [`History::Compact`]: the first events kept…
const HEAD_EVENTS: usize = 12;
/// …and the last ones: those between are folded into one note.
const TAIL_EVENTS: usize = 12;
/// [`History::Compact`]: snapshots kept (the last one always).
const COMPACT_SNAPSHOTS: usize = 4;

#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    history: History,
    pub events: Vec<Event>,
    pub events_dropped: u64,
    pub snapshots: Vec<Snapshot>,
    pub snapshots_dropped: u64,
    /// [`History::Compact`]: what was folded out of the middle, by kind.
    folded: Option<Box<Folded>>,
}

/// Events folded out of a compact timeline: how many of each kind, their bytes,
/// and when the last one happened.
#[derive(Debug, Default)]
struct Folded {
    by_kind: Vec<(EventKind, u64, u64)>,
    last_t_us: u64,
}

impl Folded {
    fn add(&mut self, event: &Event) {
        self.last_t_us = event.t_us;
        let bytes = event.bytes.unwrap_or(0);
        match self.by_kind.iter_mut().find(|(k, ..)| *k == event.kind) {
            Some((_, n, b)) => {
                *n += 1;
                *b += bytes;
            }
            None => self.by_kind.push((event.kind, 1, bytes)),
        }
    }

    fn note(&self) -> Event {
        let mut parts = Vec::new();
        for (kind, n, bytes) in &self.by_kind {
            let name = match kind {
                EventKind::Epoll => "epoll wake-ups",
                EventKind::Recv => "recv",
                EventKind::Send => "send",
                EventKind::SoError => "SO_ERROR",
                EventKind::Ping => "ping",
                _ => "other",
            };
            parts.push(match kind {
                EventKind::Recv | EventKind::Send => format!("{name} ×{n} ({bytes} bytes)"),
                _ => format!("{name} ×{n}"),
            });
        }
        let mut event = Event::new(self.last_t_us, EventKind::Note);
        event.detail = Some(format!(
            "folded, up to +{}: {} (--json or --ladder keeps each)",
            fmt_us(self.last_t_us),
            parts.join(", ")
        ));
        event
    }
}

/// Kinds that repeat for as long as a connection lives, and so are folded.
fn foldable(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Epoll | EventKind::Recv | EventKind::Send | EventKind::SoError | EventKind::Ping
    )
}

impl Timeline {
    pub fn new(start: Instant, history: History) -> Self {
        Self {
            start,
            history,
            events: Vec::new(),
            events_dropped: 0,
            snapshots: Vec::new(),
            snapshots_dropped: 0,
            folded: None,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn history(&self) -> History {
        self.history
    }

    /// From now on keep every event and snapshot (up to the full caps): a
    /// connection whose timeline others read (a `path` test) needs them all.
    pub fn keep_all(&mut self) {
        self.history = History::Full;
    }

    /// µs from the connection's start to `at`.
    pub fn t_us(&self, at: Instant) -> u64 {
        crate::report::micros(at.saturating_duration_since(self.start))
    }

    /// Appends an event built by `fill`, unless the timeline is full; a compact
    /// one folds its oldest repeatable event past the first ones instead.
    pub fn push(&mut self, at: Instant, kind: EventKind, fill: impl FnOnce(&mut Event)) {
        let cap = match self.history {
            History::Full => MAX_EVENTS,
            History::Compact => HEAD_EVENTS + TAIL_EVENTS,
        };
        if self.events.len() >= cap {
            let fold = (self.history == History::Compact)
                .then(|| (HEAD_EVENTS..self.events.len()).find(|&i| foldable(self.events[i].kind)))
                .flatten();
            let Some(i) = fold else {
                self.events_dropped += 1;
                return;
            };
            // Folded, not dropped: the note says how many.
            let old = self.events.remove(i);
            self.folded.get_or_insert_with(Box::default).add(&old);
        }
        let mut event = Event::new(self.t_us(at), kind);
        fill(&mut event);
        if self.events.len() == self.events.capacity() {
            // An idle connection has two (accept/connect, state): not the default
            // four; a compact timeline never grows past its cap.
            let want = (self.events.len() * 2).clamp(2, cap);
            self.events.reserve_exact(want - self.events.len());
        }
        self.events.push(event);
    }

    pub fn note(&mut self, at: Instant, text: impl Into<String>) {
        let text = text.into();
        self.push(at, EventKind::Note, |e| e.detail = Some(text));
    }

    /// Keeps a snapshot; past the cap the newest replaces the previous last one.
    pub fn snapshot(&mut self, at: Instant, tcp_info: TcpInfo) {
        let snapshot = Snapshot {
            t_us: self.t_us(at),
            tcp_info,
        };
        if self.snapshots.last() == Some(&snapshot) {
            return;
        }
        let cap = match self.history {
            History::Full => MAX_SNAPSHOTS,
            History::Compact => COMPACT_SNAPSHOTS,
        };
        if self.snapshots.len() >= cap {
            self.snapshots_dropped += 1;
            self.snapshots.pop();
        }
        if self.snapshots.capacity() == 0 {
            // An idle connection keeps one snapshot (248 B): not room for four.
            self.snapshots.reserve_exact(1);
        }
        self.snapshots.push(snapshot);
    }

    /// The events for the report: a compact timeline's folded ones become one
    /// note, in its place in time.
    pub fn into_events(mut self) -> Vec<Event> {
        if let Some(folded) = self.folded.take() {
            let note = folded.note();
            let at = (HEAD_EVENTS.min(self.events.len())..self.events.len())
                .find(|&i| self.events[i].t_us > note.t_us)
                .unwrap_or(self.events.len());
            self.events.insert(at, note);
        }
        self.events
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn recv(timeline: &mut Timeline, at: Instant, bytes: u64) {
        timeline.push(at, EventKind::Recv, |e| e.bytes = Some(bytes));
    }

    #[test]
    fn a_compact_timeline_keeps_the_first_and_last_events_and_folds_the_rest() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, History::Compact);
        timeline.push(start, EventKind::Accept, |_| {});
        timeline.push(start, EventKind::State, |_| {});
        for i in 1..=10_000u64 {
            let at = start + Duration::from_millis(200 * i);
            timeline.push(at, EventKind::Epoll, |_| {});
            recv(&mut timeline, at, 1);
            if i == 5_000 {
                timeline.push(at, EventKind::State, |_| {});
            }
        }
        let end = start + Duration::from_secs(3000);
        timeline.push(end, EventKind::Recv, |e| e.bytes = Some(0));
        assert!(timeline.events.capacity() <= HEAD_EVENTS + TAIL_EVENTS);
        let dropped = timeline.events_dropped;
        let events = timeline.into_events();
        assert_eq!(events.len(), HEAD_EVENTS + TAIL_EVENTS + 1);
        assert_eq!(events[0].kind, EventKind::Accept);
        // The EOF is last; the state change in the middle is never folded.
        assert_eq!(events.last().and_then(|e| e.bytes), Some(0));
        assert_eq!(
            events.iter().filter(|e| e.kind == EventKind::State).count(),
            2
        );
        let note = events
            .iter()
            .find(|e| e.kind == EventKind::Note)
            .and_then(|e| e.detail.clone())
            .expect("a note of what was folded");
        // 5 of the 1-byte reads are among the first events, 5 among the last
        // (with the EOF and the state change).
        assert!(note.contains("recv ×9990 (9990 bytes)"), "{note}");
        assert_eq!(dropped, 0, "folded events are not dropped ones");
        assert!(events.windows(2).all(|w| w[0].t_us <= w[1].t_us));
    }

    #[test]
    fn a_full_timeline_keeps_the_first_events_up_to_its_cap() {
        let start = Instant::now();
        let mut timeline = Timeline::new(start, History::Full);
        for i in 0..(MAX_EVENTS as u64 + 10) {
            recv(&mut timeline, start + Duration::from_millis(i), 1);
        }
        assert_eq!(timeline.events_dropped, 10);
        let events = timeline.into_events();
        assert_eq!(events.len(), MAX_EVENTS);
        assert!(events.iter().all(|e| e.kind == EventKind::Recv));
    }
}
