//! When should a silent ending be noticed? Computed from the detection settings
//! and the kernel's own values, the way the kernel's timers compute it.

use std::time::{Duration, Instant};

use super::timers::later;
use crate::plan::Detection;
use crate::report::{DetectedBy, Verdict};

/// The kernel values the prediction depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTcp {
    /// `net.ipv4.tcp_retries2`.
    pub retries2: u32,
}

impl KernelTcp {
    /// Reads the running kernel's values, falling back to Linux defaults.
    pub fn read() -> Self {
        let retries2 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_retries2")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(15);
        Self { retries2 }
    }
}

/// A predicted detection: when, by what, and what was assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub at: Instant,
    pub verdict: Verdict,
    pub by: Option<DetectedBy>,
    pub basis: String,
}

/// What the observer knew about the connection's last signs of life.
#[derive(Debug, Clone, Copy)]
pub struct Anchors {
    /// The last data received from the peer (heartbeat counts from here).
    pub last_data: Instant,
    /// The last packet of any kind received (keepalive counts from here).
    pub last_packet: Instant,
    /// The first send that was never acknowledged, if data is in flight.
    pub first_unacked: Option<Instant>,
    /// The first retransmission timeout of the loss episode: the kernel's
    /// `retrans_stamp`, from which TCP_USER_TIMEOUT and tcp_retries2 count.
    pub first_rto: Option<Instant>,
    /// The retransmission timeout in force, to estimate `first_rto` when not seen.
    pub rto: Duration,
}

/// Linux's `TCP_RTO_MIN` and `TCP_RTO_MAX`.
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(120);

/// How long `tcp_retries2` retransmissions take with exponential backoff from
/// `TCP_RTO_MIN`, capped at `TCP_RTO_MAX` (the kernel's `retransmits_timed_out`).
pub fn retransmit_budget(retries2: u32) -> Duration {
    let thresh = (RTO_MAX.as_millis() / RTO_MIN.as_millis()).ilog2();
    if retries2 <= thresh {
        RTO_MIN * ((2u32 << retries2) - 1)
    } else {
        RTO_MIN * ((2u32 << thresh) - 1) + RTO_MAX * (retries2 - thresh)
    }
}

/// Predicts the earliest detection for `detection` against a silent peer.
pub fn predict(detection: &Detection, kernel: KernelTcp, anchors: Anchors) -> Option<Prediction> {
    let mut candidates = Vec::new();
    if let Some(hb) = detection.heartbeat {
        candidates.push(Prediction {
            at: later(
                anchors.last_data,
                hb.interval.saturating_mul(hb.misses.saturating_add(1)),
            ),
            verdict: Verdict::Heartbeat,
            by: None,
            basis: format!(
                "heartbeat: {} pings of {:?} unanswered after the last data received",
                hb.misses, hb.interval
            ),
        });
    }
    let in_flight = detection.send_every.is_some() || detection.heartbeat.is_some();
    if in_flight {
        let start = anchors.first_rto.unwrap_or_else(|| {
            later(
                anchors.first_unacked.unwrap_or(anchors.last_packet),
                anchors.rto,
            )
        });
        candidates.push(match detection.user_timeout {
            Some(ut) => Prediction {
                at: later(start, ut),
                verdict: Verdict::Timeout,
                by: Some(DetectedBy::UserTimeout),
                basis: format!(
                    "TCP_USER_TIMEOUT {ut:?} after the first timeout-driven retransmission (where the kernel starts counting; a tail-loss probe before it does not count)"
                ),
            },
            None => Prediction {
                at: later(start, retransmit_budget(kernel.retries2)),
                verdict: Verdict::Timeout,
                by: Some(DetectedBy::Retransmit),
                basis: format!(
                    "tcp_retries2={} after the first timeout-driven retransmission (a tail-loss probe before it does not count): backoff from {RTO_MIN:?}, capped at {RTO_MAX:?}",
                    kernel.retries2
                ),
            },
        });
    } else if let Some(ka) = detection.keepalive {
        let prediction = match detection.user_timeout {
            // With TCP_USER_TIMEOUT set, the kernel ignores TCP_KEEPCNT: it aborts at the
            // first keepalive timer after the user timeout has elapsed with a probe out.
            Some(ut) => {
                let mut fire = ka.idle + ka.interval;
                while fire < ut {
                    fire += ka.interval;
                }
                Prediction {
                    at: later(anchors.last_packet, fire),
                    verdict: Verdict::Timeout,
                    by: Some(DetectedBy::UserTimeout),
                    basis: format!(
                        "keepalive probes every {:?} after {:?} idle, aborted by TCP_USER_TIMEOUT {ut:?} (TCP_KEEPCNT ignored)",
                        ka.interval, ka.idle
                    ),
                }
            }
            None => Prediction {
                at: later(
                    anchors.last_packet,
                    ka.idle.saturating_add(ka.interval.saturating_mul(ka.count)),
                ),
                verdict: Verdict::Timeout,
                by: Some(DetectedBy::Keepalive),
                basis: format!(
                    "keepalive: {:?} idle + {} probes × {:?} after the last packet received",
                    ka.idle, ka.count, ka.interval
                ),
            },
        };
        candidates.push(prediction);
    }
    candidates.into_iter().min_by_key(|p| p.at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Heartbeat, KeepAlive};

    fn anchors(now: Instant) -> Anchors {
        Anchors {
            last_data: now,
            last_packet: now,
            first_unacked: None,
            first_rto: None,
            rto: RTO_MIN,
        }
    }

    #[test]
    fn retries2_default_is_about_fifteen_minutes() {
        assert_eq!(retransmit_budget(15), Duration::from_millis(924_600));
        assert_eq!(retransmit_budget(3), Duration::from_millis(3_000));
    }

    #[test]
    fn keepalive_is_idle_plus_probes() {
        let now = Instant::now();
        let d = Detection {
            keepalive: Some(KeepAlive {
                idle: Duration::from_secs(1),
                interval: Duration::from_secs(1),
                count: 3,
            }),
            ..Detection::default()
        };
        let p = predict(&d, KernelTcp { retries2: 15 }, anchors(now)).unwrap();
        assert_eq!(p.at - now, Duration::from_secs(4));
        assert_eq!(p.by, Some(DetectedBy::Keepalive));
    }

    #[test]
    fn user_timeout_overrides_keepalive_count() {
        let now = Instant::now();
        let d = Detection {
            keepalive: Some(KeepAlive {
                idle: Duration::from_secs(1),
                interval: Duration::from_secs(1),
                count: 9,
            }),
            user_timeout: Some(Duration::from_millis(2500)),
            ..Detection::default()
        };
        let p = predict(&d, KernelTcp { retries2: 15 }, anchors(now)).unwrap();
        assert_eq!(p.at - now, Duration::from_secs(3));
        assert_eq!(p.by, Some(DetectedBy::UserTimeout));
    }

    #[test]
    fn in_flight_predictions_count_from_the_first_timeout_driven_retransmission() {
        // The kernel's loss-probe timer re-sends the last segment before the first
        // retransmission timeout; TCP_USER_TIMEOUT and tcp_retries2 ignore it.
        let now = Instant::now();
        for user_timeout in [Some(Duration::from_secs(1)), None] {
            let d = Detection {
                send_every: Some(Duration::from_millis(200)),
                user_timeout,
                ..Detection::default()
            };
            let rto = now + Duration::from_millis(400);
            let a = Anchors {
                first_rto: Some(rto),
                ..anchors(now)
            };
            let p = predict(&d, KernelTcp { retries2: 3 }, a).unwrap();
            assert_eq!(p.at, rto + user_timeout.unwrap_or(retransmit_budget(3)));
            assert!(
                p.basis
                    .contains("after the first timeout-driven retransmission")
                    && p.basis.contains("tail-loss probe"),
                "{}",
                p.basis
            );
        }
    }

    #[test]
    fn heartbeat_wins_when_fastest_and_nothing_predicts_without_settings() {
        let now = Instant::now();
        let d = Detection {
            heartbeat: Some(Heartbeat {
                interval: Duration::from_millis(200),
                misses: 3,
            }),
            ..Detection::default()
        };
        let p = predict(&d, KernelTcp { retries2: 15 }, anchors(now)).unwrap();
        assert_eq!(
            (p.verdict, p.at - now),
            (Verdict::Heartbeat, Duration::from_millis(800))
        );
        assert!(
            predict(
                &Detection::default(),
                KernelTcp { retries2: 15 },
                anchors(now)
            )
            .is_none()
        );
    }

    #[test]
    fn the_largest_settings_predict_without_overflow() {
        let now = Instant::now();
        let year = Duration::from_secs(365 * 24 * 60 * 60);
        let d = Detection {
            heartbeat: Some(Heartbeat {
                interval: year,
                misses: u32::MAX,
            }),
            keepalive: Some(KeepAlive {
                idle: Duration::from_secs(32767),
                interval: Duration::from_secs(32767),
                count: 127,
            }),
            user_timeout: Some(year),
            send_every: Some(year),
        };
        let p = predict(&d, KernelTcp { retries2: 255 }, anchors(now)).unwrap();
        assert!(p.at > now);
    }
}
