//! What a long wait is waiting for, as data the engine hands out while it runs,
//! and the one-line text a terminal shows for it.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Verdict, fmt_us};
use crate::vocab::CloseMode;

/// How far along a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The one open connection is observed.
    Observing(Watch),
    /// A `drop`/`hang` closer holds its socket silently.
    Holding {
        mode: Option<CloseMode>,
        peer: SocketAddr,
        elapsed: Duration,
    },
    /// Several connections are open at once.
    Open { connections: usize },
    /// `lab`: cases reported so far, of all.
    Cases { done: usize, total: usize },
}

/// One observed connection: what it waits for, with the counters that move.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub peer: SocketAddr,
    pub elapsed: Duration,
    /// Keepalive probes sent so far, of the count that ends the connection.
    pub keepalive_probes: Option<(u8, u32)>,
    /// Data in flight: unacknowledged segments, retransmissions, backoff, RTO (µs).
    pub in_flight: Option<InFlight>,
    /// Heartbeat intervals without a pong, of the misses that end the connection.
    pub heartbeat_misses: Option<(u32, u32)>,
    /// What the settings predict, and when (from the connection's start).
    pub predicted: Option<(Verdict, Duration)>,
    /// `--timeout`, when nothing is predicted.
    pub timeout: Option<Duration>,
}

/// The retransmission counters of TCP_INFO while data is unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub unacked: u32,
    pub retransmits: u8,
    pub backoff: u8,
    pub rto_us: u32,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: &Duration| format!("{:.1}s", d.as_secs_f64());
        match self {
            Self::Holding {
                mode,
                peer,
                elapsed,
            } => write!(
                f,
                "{}: holding the connection to {peer} silently for {}; Ctrl-C ends it without a packet",
                mode.map_or("hold", CloseMode::name),
                secs(elapsed)
            ),
            Self::Open { connections } => write!(f, "{connections} connections open"),
            Self::Cases { done, total } => write!(f, "tcpbye lab: {done}/{total} cases done"),
            Self::Observing(w) => {
                let mut parts = vec![format!("observing {} for {}", w.peer, secs(&w.elapsed))];
                if let Some((probes, count)) = w.keepalive_probes {
                    parts.push(format!("keepalive probes {probes}/{count}"));
                }
                if let Some(i) = w.in_flight {
                    parts.push(format!(
                        "unacked {} · retransmits {} · backoff {} · rto {}",
                        i.unacked,
                        i.retransmits,
                        i.backoff,
                        fmt_us(u64::from(i.rto_us))
                    ));
                }
                if let Some((misses, of)) = w.heartbeat_misses {
                    parts.push(format!("heartbeat misses {misses}/{of}"));
                }
                if let Some((verdict, at)) = &w.predicted {
                    parts.push(format!("predicted {verdict} at {}", secs(at)));
                } else if let Some(timeout) = &w.timeout {
                    parts.push(format!("--timeout at {}", secs(timeout)));
                }
                f.write_str(&parts.join(" · "))
            }
        }
    }
}
