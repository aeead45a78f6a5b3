//! The `bench` figures, each beside its bare baseline and target, and their table.

use serde::Serialize;

use super::Percentiles;
use crate::vocab::CloseMode;

/// Target: tcpbye's churn rate / the bare loop's best rate.
const CHURN_TARGET: f64 = 0.9;
/// Target: `serve`'s peak RSS during a fin churn, KiB.
const PEAK_RSS_TARGET_KIB: u64 = 16 * 1024;
/// Target: idle `serve`'s CPU, % of one core.
const IDLE_CPU_TARGET: f64 = 0.5;
/// Target: what one slow client costs a plain `serve` at its peak, bytes…
const SLOW_CLIENT_TARGET: u64 = 16 * 1024;
/// …and a `serve --json`, which keeps each event of every connection.
const SLOW_CLIENT_JSON_TARGET: u64 = 128 * 1024;
/// Target: `serve`'s peak RSS while control connections stream at it, KiB.
const CONTROL_STREAM_TARGET_KIB: u64 = 24 * 1024;
/// Target: `inspect` of a process holding 10,000 TCP sockets, ms.
const INSPECT_TARGET_MS: f64 = 1000.0;

#[derive(Debug, Serialize)]
pub struct Latency {
    pub mode: CloseMode,
    pub bare_us: Percentiles,
    pub tcpbye_us: Percentiles,
    /// tcpbye p50 / bare p50 (target ≤ 1.5).
    pub ratio_p50: f64,
}

#[derive(Debug, Serialize)]
pub struct Churn {
    pub connections: u64,
    /// tcpbye's `--concurrency`, and the bare loop's threads.
    pub concurrency: usize,
    /// The bare loop in `concurrency` threads, best of `runs`.
    pub bare_per_sec: f64,
    /// The bare loop's best rate over every thread count (1 and 32).
    pub bare_best_per_sec: f64,
    /// Best of `runs`.
    pub tcpbye_per_sec: f64,
    /// tcpbye / the bare loop's best rate (target ≥ 0.9).
    pub ratio: f64,
    /// tcpbye / the bare loop with as many threads.
    pub ratio_same_threads: f64,
    pub runs: u32,
}

/// `serve` observing a full-speed `connect --close fin` churn.
#[derive(Debug, Serialize)]
pub struct FinChurn {
    /// How `serve` printed: `table` (default output, to /dev/null) or `summary-json`.
    pub output: &'static str,
    pub connections: u64,
    pub concurrency: usize,
    /// The client's rate (its summary's `rate_per_sec`).
    pub client_per_sec: f64,
    /// Connections `serve` reported (from its summary; `None` where stdout is /dev/null).
    pub reported: Option<u64>,
    /// How long after the client finished `serve` still held connections, ms.
    pub drain_ms: u64,
    /// Most connections `serve` held at once (open descriptors, read every 50 ms).
    pub peak_open: usize,
    /// `serve`'s CPU while the client ran, % of one core (100: it was the bottleneck).
    pub serve_cpu_percent: f64,
    /// `VmHWM` of `serve`, KiB.
    pub peak_rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Idle {
    pub connections: usize,
    pub reported: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub bytes_per_connection: u64,
    /// CPU used by `serve` while all connections sat idle, % of one core.
    pub idle_cpu_percent: f64,
    pub idle_seconds: f64,
}

/// `serve` facing peers that cost it memory: slow clients, or `path` control
/// connections that stream data after their question.
#[derive(Debug, Serialize)]
pub struct Hostile {
    /// `slow-clients` (one byte each every 0.2 s) or `control-streams`.
    pub load: &'static str,
    /// How `serve` printed (to /dev/null): `table`, `json`, or `pcap` (a table,
    /// and `--pcap` to a file).
    pub output: &'static str,
    /// `serve`'s CPU while the load ran, % of one core.
    pub serve_cpu_percent: f64,
    pub connections: usize,
    pub seconds: f64,
    /// Bytes the clients sent, all together.
    pub bytes_sent: u64,
    pub rss_before_kib: u64,
    /// `VmHWM` of `serve`.
    pub peak_rss_kib: u64,
    /// `VmRSS` of `serve` once every client had left.
    pub rss_after_kib: u64,
    /// (peak − before) / connections.
    pub bytes_per_connection: u64,
    /// How much the host's TCP buffer memory grew at most during the load (all
    /// sockets, both ends: data waiting to be read costs the kernel, not `serve`).
    pub kernel_tcp_growth_kib: u64,
    /// The load was cut short because `serve`'s RSS passed the bench's safety limit.
    pub stopped_at_limit: bool,
    /// Connections `serve` closed while the load ran.
    pub closed_by_serve: usize,
}

/// `inspect` of a process holding many TCP sockets (the bench itself).
#[derive(Debug, Serialize)]
pub struct Inspect {
    /// TCP connections the process holds (both ends of loopback pairs).
    pub sockets: usize,
    /// Connections `inspect` reported (its summary's `connections`).
    pub reported: u64,
    /// `tcpbye inspect PID --json` from start to exit, best of `runs`, ms.
    pub wall_ms: f64,
    /// What inspect timed itself of that run (its summary's `elapsed_us`), ms.
    pub elapsed_ms: f64,
    pub runs: u32,
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub latency: Vec<Latency>,
    pub churn: Vec<Churn>,
    pub fin_churn: Vec<FinChurn>,
    pub idle: Option<Idle>,
    pub hostile: Vec<Hostile>,
    pub inspect: Option<Inspect>,
}

/// The figures as a table at most `width` columns wide: per measure the figure
/// its target is about, the target and whether it was met, and under it what was
/// measured (tcpbye and the bare baseline, the load).
pub fn render(r: &BenchResult, width: usize) -> String {
    let mut t = super::table::Columns::new(&["measure", "result", "target", "met"]);
    let yes = |ok: bool| if ok { "yes" } else { "NO" }.to_owned();
    for l in &r.latency {
        t.row(
            vec![
                format!("{} detection p50, tcpbye/bare", l.mode),
                format!("{:.2}×", l.ratio_p50),
                "≤ 1.5×".to_owned(),
                yes(l.ratio_p50 <= 1.5),
            ],
            vec![format!(
                "tcpbye p50 {}µs, p99 {}µs; bare epoll loop p50 {}µs, p99 {}µs",
                l.tcpbye_us.p50, l.tcpbye_us.p99, l.bare_us.p50, l.bare_us.p99
            )],
        );
    }
    for c in &r.churn {
        t.row(
            vec![
                "churn rst, tcpbye/best bare loop".to_owned(),
                format!("{:.2}×", c.ratio),
                format!("≥ {CHURN_TARGET}×"),
                yes(c.ratio >= CHURN_TARGET),
            ],
            vec![format!(
                "tcpbye {}/s; bare loop best {}/s, with {} threads {}/s ({:.2}×); {} connections, concurrency {}, best of {}",
                c.tcpbye_per_sec,
                c.bare_best_per_sec,
                c.concurrency,
                c.bare_per_sec,
                c.ratio_same_threads,
                c.connections,
                c.concurrency,
                c.runs
            )],
        );
    }
    for f in &r.fin_churn {
        let output = if f.output == "table" {
            "table to /dev/null"
        } else {
            "--summary --json"
        };
        let reported = f
            .reported
            .map_or(String::new(), |n| format!(", {n} reported"));
        t.row(
            vec![
                "serve peak RSS (VmHWM), fin churn".to_owned(),
                format!("{} KiB", f.peak_rss_kib),
                format!("≤ {PEAK_RSS_TARGET_KIB} KiB"),
                yes(f.peak_rss_kib <= PEAK_RSS_TARGET_KIB
                    && f.reported.is_none_or(|n| n == f.connections)),
            ],
            vec![format!(
                "serve ({output}), fin churn of {} at concurrency {}: client {}/s, serve CPU {:.0}%, at most {} open, drained {} ms after{reported}",
                f.connections,
                f.concurrency,
                f.client_per_sec,
                f.serve_cpu_percent,
                f.peak_open,
                f.drain_ms
            )],
        );
    }
    if let Some(i) = &r.idle {
        t.row(
            vec![
                "serve RSS per idle connection".to_owned(),
                format!("{} B", i.bytes_per_connection),
                "bounded".to_owned(),
                yes(i.bytes_per_connection < 16 * 1024),
            ],
            vec![format!(
                "{} idle connections: {} KiB before, {} KiB after",
                i.connections, i.rss_before_kib, i.rss_after_kib
            )],
        );
        t.row(
            vec![
                "serve idle CPU".to_owned(),
                format!("{:.3}%", i.idle_cpu_percent),
                format!("≤ {IDLE_CPU_TARGET}%"),
                yes(i.idle_cpu_percent <= IDLE_CPU_TARGET),
            ],
            vec![format!(
                "over {}s, {} idle connections",
                i.idle_seconds, i.connections
            )],
        );
        t.row(
            vec![
                "serve closes reported".to_owned(),
                format!("{} of {}", i.reported, i.connections),
                "all".to_owned(),
                yes(i.reported == i.connections as u64),
            ],
            Vec::new(),
        );
    }
    for h in &r.hostile {
        let (what, target, met) = if h.load == "slow-clients" {
            let target = if h.output != "table" {
                SLOW_CLIENT_JSON_TARGET
            } else {
                SLOW_CLIENT_TARGET
            };
            (
                format!("serve ({}), slow clients: B/conn", h.output),
                format!("≤ {} KiB/conn", target / 1024),
                h.bytes_per_connection <= target,
            )
        } else {
            (
                "serve, streaming control conns: peak RSS".to_owned(),
                format!("≤ {} KiB", CONTROL_STREAM_TARGET_KIB),
                h.peak_rss_kib <= CONTROL_STREAM_TARGET_KIB,
            )
        };
        let result = if h.load == "slow-clients" {
            format!("{} B", h.bytes_per_connection)
        } else {
            format!("{} KiB", h.peak_rss_kib)
        };
        let cut = if h.stopped_at_limit {
            ", cut short at the safety limit"
        } else {
            ""
        };
        t.row(
            vec![what, result, target, yes(met && !h.stopped_at_limit)],
            vec![format!(
                "{} connections for {}s: RSS {} KiB before, {} KiB peak (VmHWM), {} KiB after they left; CPU {:.1}%, {} KB sent, {} closed by serve, kernel TCP memory +{} KiB{cut}",
                h.connections,
                h.seconds,
                h.rss_before_kib,
                h.peak_rss_kib,
                h.rss_after_kib,
                h.serve_cpu_percent,
                h.bytes_sent / 1000,
                h.closed_by_serve,
                h.kernel_tcp_growth_kib
            )],
        );
    }
    if let Some(i) = &r.inspect {
        t.row(
            vec![
                format!("inspect of {} connections", i.sockets),
                format!("{:.0} ms", i.wall_ms),
                format!("≤ {INSPECT_TARGET_MS:.0} ms"),
                yes(i.wall_ms <= INSPECT_TARGET_MS && i.reported == i.sockets as u64),
            ],
            vec![format!(
                "`tcpbye inspect PID --json` start to exit, best of {}; {:.0} ms by its own clock; {} of {} reported",
                i.runs, i.elapsed_ms, i.reported, i.sockets
            )],
        );
    }
    super::tidy(&t.render(width))
}
