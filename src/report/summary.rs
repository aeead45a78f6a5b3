//! The closing object of a run: counts by verdict and detection-time percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{EventKind, Report, SCHEMA, Verdict};

/// Nearest-rank percentiles of detection times, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    /// `None` for an empty sample.
    pub fn of(samples: &[u64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let at = |p: f64| {
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        (!sorted.is_empty()).then(|| Self {
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// The closing object of a run: counts by verdict and detection-time percentiles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub schema: u32,
    pub kind: &'static str,
    pub connections: u64,
    /// Connections that were established (connect() or accept() succeeded).
    pub established: u64,
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Failed connect() calls by errno name (`ECONNREFUSED`, `EADDRNOTAVAIL`, …).
    pub connect_errors: BTreeMap<String, u64>,
    pub detected_after_us: Option<Percentiles>,
    /// µs from the first connection to the summary.
    pub elapsed_us: u64,
    /// Connections per second over `elapsed_us`.
    pub rate_per_sec: f64,
    pub expect_met: bool,
    pub interrupted: bool,
    #[serde(skip)]
    samples: Vec<u64>,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            schema: SCHEMA,
            kind: "summary",
            connections: 0,
            established: 0,
            verdicts: Default::default(),
            connect_errors: Default::default(),
            detected_after_us: None,
            elapsed_us: 0,
            rate_per_sec: 0.0,
            expect_met: true,
            interrupted: false,
            samples: Vec::new(),
        }
    }
}

impl Summary {
    pub fn add(&mut self, report: &Report, met: bool) {
        self.connections += 1;
        *self.verdicts.entry(report.verdict).or_default() += 1;
        let connect = report
            .events
            .iter()
            .find(|e| matches!(e.kind, EventKind::Connect | EventKind::Accept));
        match connect.and_then(|e| e.errno.as_ref()) {
            Some(errno) => *self.connect_errors.entry(errno.clone()).or_default() += 1,
            None if connect.is_some() => self.established += 1,
            None => {}
        }
        self.samples.extend(report.detected_after_us);
        self.expect_met &= met;
    }

    /// Completes the summary: percentiles, elapsed time and the rate it implies.
    pub fn finish(&mut self, elapsed: Duration) {
        self.detected_after_us = Percentiles::of(&self.samples);
        self.elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let secs = elapsed.as_secs_f64();
        self.rate_per_sec = if secs > 0.0 {
            (self.connections as f64 / secs * 10.0).round() / 10.0
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(Percentiles::of(&[]), None);
        let p = Percentiles::of(&[5, 1, 4, 2, 3]).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (3, 5, 5, 5));
        let hundred: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of(&hundred).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
    }
}
