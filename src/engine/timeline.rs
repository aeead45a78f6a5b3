//! The bounded record of what one side saw: events and TCP_INFO snapshots.

use std::time::Instant;

use crate::report::{Event, EventKind, Snapshot};
use crate::sys::TcpInfo;

/// Most events kept per connection; later ones are counted, not stored.
pub const MAX_EVENTS: usize = 512;
/// Most TCP_INFO snapshots kept per connection (the last one is always kept).
pub const MAX_SNAPSHOTS: usize = 128;

#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    pub events: Vec<Event>,
    pub events_dropped: u64,
    pub snapshots: Vec<Snapshot>,
    pub snapshots_dropped: u64,
}

impl Timeline {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            events: Vec::new(),
            events_dropped: 0,
            snapshots: Vec::new(),
            snapshots_dropped: 0,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// µs from the connection's start to `at`.
    pub fn t_us(&self, at: Instant) -> u64 {
        crate::report::micros(at.saturating_duration_since(self.start))
    }

    /// Appends an event built by `fill`, unless the timeline is full.
    pub fn push(&mut self, at: Instant, kind: EventKind, fill: impl FnOnce(&mut Event)) {
        if self.events.len() >= MAX_EVENTS {
            self.events_dropped += 1;
            return;
        }
        let mut event = Event::new(self.t_us(at), kind);
        fill(&mut event);
        if self.events.capacity() == 0 {
            // An idle connection has two (accept/connect, state): not the default four.
            self.events.reserve_exact(2);
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
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            self.snapshots_dropped += 1;
            self.snapshots.pop();
        }
        if self.snapshots.capacity() == 0 {
            // An idle connection keeps one snapshot (248 B): not room for four.
            self.snapshots.reserve_exact(1);
        }
        self.snapshots.push(snapshot);
    }
}
