//! The `bench` figures, each beside its bare baseline and target, and their table.

use serde::Serialize;

use super::Percentiles;
use crate::vocab::CloseMode;

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
    pub bare_per_sec: f64,
    pub tcpbye_per_sec: f64,
    /// tcpbye / bare (target ≥ 0.8).
    pub ratio: f64,
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

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub latency: Vec<Latency>,
    pub churn: Churn,
    pub idle: Idle,
}

/// The figures as a table, each with its target.
pub fn render(r: &BenchResult, tty: bool) -> String {
    let mut t = super::table::table(tty);
    t.set_header(vec![
        "measure",
        "bare baseline",
        "tcpbye",
        "ratio",
        "target",
        "met",
    ]);
    let yes = |ok: bool| if ok { "yes" } else { "NO" }.to_owned();
    for l in &r.latency {
        t.add_row(vec![
            format!("{} detection p50 (p99)", l.mode),
            format!("{}µs ({}µs)", l.bare_us.p50, l.bare_us.p99),
            format!("{}µs ({}µs)", l.tcpbye_us.p50, l.tcpbye_us.p99),
            format!("{:.2}×", l.ratio_p50),
            "≤ 1.5×".to_owned(),
            yes(l.ratio_p50 <= 1.5),
        ]);
    }
    t.add_row(vec![
        format!("churn, {} connections", r.churn.connections),
        format!("{}/s", r.churn.bare_per_sec),
        format!("{}/s", r.churn.tcpbye_per_sec),
        format!("{:.2}×", r.churn.ratio),
        "≥ 0.8×".to_owned(),
        yes(r.churn.ratio >= 0.8),
    ]);
    let i = &r.idle;
    t.add_row(vec![
        format!("serve, {} idle connections: RSS", i.connections),
        format!("{} KiB before", i.rss_before_kib),
        format!("{} KiB after", i.rss_after_kib),
        format!("{} B/conn", i.bytes_per_connection),
        "bounded".to_owned(),
        yes(i.bytes_per_connection < 16 * 1024),
    ]);
    t.add_row(vec![
        format!("serve, idle CPU over {}s", i.idle_seconds),
        String::new(),
        format!("{:.2}%", i.idle_cpu_percent),
        String::new(),
        "~0%".to_owned(),
        yes(i.idle_cpu_percent < 1.0),
    ]);
    t.add_row(vec![
        "serve, closes reported".to_owned(),
        String::new(),
        format!("{} of {}", i.reported, i.connections),
        String::new(),
        "all".to_owned(),
        yes(i.reported == i.connections as u64),
    ]);
    super::tidy(&format!("{t}\n"))
}
