//! The closing object of a run: counts by verdict and detection-time percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
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

/// Detection times kept for percentiles in bounded memory, however many
/// connections a `serve` or `connect --count` sees: exact up to
/// [`Samples::EXACT`] of them, then an HdrHistogram with three significant
/// digits (within 0.1 % of each value). Nearest-rank like [`Percentiles::of`];
/// the maximum stays exact.
#[derive(Debug, Clone, Default)]
struct Samples {
    exact: Vec<u64>,
    /// Every sample, once there are more than `EXACT`.
    histogram: Option<Histogram<u64>>,
    max: u64,
}

impl PartialEq for Samples {
    fn eq(&self, other: &Self) -> bool {
        self.percentiles() == other.percentiles()
    }
}

impl Samples {
    const EXACT: usize = 4096;
    /// Significant decimal digits the histogram keeps.
    const DIGITS: u8 = 3;

    fn add(&mut self, us: u64) {
        self.max = self.max.max(us);
        if self.histogram.is_none() && self.exact.len() < Self::EXACT {
            self.exact.push(us);
            return;
        }
        let histogram = self.histogram.get_or_insert_with(|| {
            // Auto-resizing: a 3-digit histogram of any range cannot fail to build.
            Histogram::new(Self::DIGITS).expect("3 significant digits are valid")
        });
        for v in std::mem::take(&mut self.exact).into_iter().chain([us]) {
            // It grows to fit; past the largest range it can track, the top bucket.
            if histogram.record(v).is_err() {
                histogram.saturating_record(v);
            }
        }
    }

    fn percentiles(&self) -> Option<Percentiles> {
        let Some(histogram) = &self.histogram else {
            return Percentiles::of(&self.exact);
        };
        // The bucket's highest value, but never past the largest sample seen.
        let at = |q: f64| histogram.value_at_quantile(q).min(self.max);
        Some(Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: self.max,
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
    /// `--pcap`: packets the kernel dropped because the capture fell behind
    /// (missing from the file and the reports); null without `--pcap`.
    pub pcap_dropped: Option<u64>,
    /// The timed detections so far (`detected_after_us`), in bounded memory.
    #[serde(skip)]
    samples: Samples,
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
            pcap_dropped: None,
            samples: Samples::default(),
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
        // Only timed detections count: a report whose ending nobody timed has none.
        if let Some(us) = report.detected_after_us {
            self.samples.add(us);
        }
        self.expect_met &= met;
    }

    /// Completes the summary: percentiles, elapsed time and the rate it implies.
    pub fn finish(&mut self, elapsed: Duration) {
        self.detected_after_us = self.samples.percentiles();
        self.elapsed_us = super::micros(elapsed);
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

    #[test]
    fn summary_samples_stay_exact_then_within_a_bucket() {
        let mut few = Samples::default();
        for us in [5, 1, 4, 2, 3] {
            few.add(us);
        }
        assert_eq!(few.percentiles(), Percentiles::of(&[5, 1, 4, 2, 3]));
        // Past EXACT: a spread of values over several octaves, in a shuffled order.
        let values: Vec<u64> = (0..100_000u64)
            .map(|i| (i * 7919) % 100_000 * 37 + 3)
            .collect();
        let mut many = Samples::default();
        for &us in &values {
            many.add(us);
        }
        assert!(many.exact.is_empty() && many.histogram.as_ref().unwrap().len() == 100_000);
        let exact = Percentiles::of(&values).unwrap();
        let approx = many.percentiles().unwrap();
        assert_eq!(approx.max, exact.max);
        for (a, e) in [
            (approx.p50, exact.p50),
            (approx.p90, exact.p90),
            (approx.p99, exact.p99),
        ] {
            assert!(a.abs_diff(e) <= e / 1000 + 1, "{approx:?} vs {exact:?}");
        }
        // Past a histogram's default range, a value is still counted.
        many.add(u64::MAX);
        assert_eq!(many.percentiles().unwrap().max, u64::MAX);
    }
}
