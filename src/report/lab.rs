//! The `lab` matrix: one row per close mode × detection setting, built from the
//! observers' reports, and its table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{DetectedBy, EventKind, Percentiles, Report, Verdict, fmt_us};
use crate::vocab::{CloseMode, Setting};

/// One row of the matrix: a close mode × a setting over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub schema: u32,
    pub kind: &'static str,
    pub mode: CloseMode,
    pub setting: Setting,
    pub setting_flags: String,
    /// `ran`, or why the case could not run here.
    pub status: String,
    pub runs: u32,
    /// The observer's first epoll flags after the closer acted.
    pub first_flags: Option<String>,
    /// The observer's first recv() outcome after the close: `EOF`, an errno, or `-`.
    pub recv: Option<String>,
    /// The observer's send() outcomes after the close, in order.
    pub send: Option<String>,
    /// The observer socket's TCP states after the close (`CLOSE_WAIT → CLOSE`).
    pub state: Option<String>,
    /// The most frequent verdict, and all of them.
    pub verdict: Option<Verdict>,
    pub verdicts: BTreeMap<Verdict, u32>,
    pub detected_by: Option<DetectedBy>,
    pub detected_after_us: Option<Percentiles>,
    pub predicted_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabSummary {
    pub schema: u32,
    pub kind: &'static str,
    pub cases: usize,
    pub runs: u32,
    pub skipped: usize,
    pub elapsed_us: u64,
    /// `own` when lab ran in a network namespace of its own, else `host`.
    pub namespace: &'static str,
    /// When each closer acted after connect, the gap between two closers, and how
    /// long each observer watched (for the table's footer).
    #[serde(skip)]
    pub timing: LabTiming,
}

/// The timing every case of a lab run shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabTiming {
    pub closer_after: Duration,
    pub stagger: Duration,
    pub observe: Duration,
}

/// The whole matrix: one row per case, then the summary.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: Vec<Row>,
    pub summary: LabSummary,
}

/// The row of one case from the observers' reports of all its runs.
pub fn row(
    mode: CloseMode,
    setting: Setting,
    runs: u32,
    reports: &[Report],
    net_admin: bool,
) -> Row {
    let mut verdicts = BTreeMap::new();
    for r in reports {
        *verdicts.entry(r.verdict).or_insert(0) += 1;
    }
    let verdict = verdicts.iter().max_by_key(|(_, n)| **n).map(|(v, _)| *v);
    let first = reports.iter().find(|r| Some(r.verdict) == verdict);
    let times: Vec<u64> = reports.iter().filter_map(|r| r.detected_after_us).collect();
    let status = if !reports.is_empty() {
        "ran".to_owned()
    } else if mode.needs_net_admin() && !net_admin {
        "needs CAP_NET_ADMIN".to_owned()
    } else {
        "no result".to_owned()
    };
    let after_close = |r: &Report| {
        let from = r.close_t_us.unwrap_or(0);
        r.events
            .iter()
            .filter(move |e| e.t_us >= from)
            .cloned()
            .collect::<Vec<_>>()
    };
    let states = first.map(|r| {
        let path: Vec<String> = after_close(r)
            .iter()
            .filter(|e| e.kind == EventKind::State)
            .filter_map(|e| e.state.map(|s| s.to_string()))
            .collect();
        if path.is_empty() {
            r.tcp_info
                .as_ref()
                .map_or_else(|| "-".to_owned(), |i| i.state.to_string())
        } else {
            path.join(" → ")
        }
    });
    let (first_flags, recv, send) = match first {
        Some(r) => {
            let events = after_close(r);
            let flags = events
                .iter()
                .find(|e| e.kind == EventKind::Epoll)
                .and_then(|e| e.epoll.as_ref())
                .map(|f| f.join("|"));
            let recv = events
                .iter()
                .find(|e| e.kind == EventKind::Recv && (e.errno.is_some() || e.bytes == Some(0)))
                .map(|e| e.errno.clone().unwrap_or_else(|| "EOF".to_owned()));
            let sends: Vec<String> = events
                .iter()
                .filter(|e| e.kind == EventKind::Send && e.detail.is_none())
                .map(|e| e.errno.clone().unwrap_or_else(|| "ok".to_owned()))
                .collect();
            let send = (!sends.is_empty()).then(|| compress(&sends));
            (flags, recv, send)
        }
        None => (None, None, None),
    };
    Row {
        schema: super::SCHEMA,
        kind: "lab-case",
        mode,
        setting,
        setting_flags: setting.summary(),
        status,
        runs: reports.len() as u32,
        first_flags: first_flags.or_else(|| first.map(|_| "-".to_owned())),
        recv: recv.or_else(|| first.map(|_| "-".to_owned())),
        send,
        state: states,
        verdict,
        verdicts,
        detected_by: first.and_then(|r| r.detected_by),
        detected_after_us: Percentiles::of(&times),
        // As in the table: a prediction only where something fired.
        predicted_us: first
            .filter(|r| r.verdict != Verdict::Open)
            .and_then(|r| r.predicted_us),
    }
    .with_runs(runs)
}

impl Row {
    fn with_runs(mut self, planned: u32) -> Self {
        if self.status == "ran" && self.runs != planned {
            self.status = format!("{} of {planned} runs reported", self.runs);
        }
        self
    }
}

/// `ok, ok, EPIPE, EPIPE` → `ok×2 → EPIPE×2`.
fn compress(items: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for item in items {
        match parts.last_mut() {
            Some((last, n)) if last == item => *n += 1,
            _ => parts.push((item.clone(), 1)),
        }
    }
    parts
        .into_iter()
        .map(|(s, n)| if n > 1 { format!("{s}×{n}") } else { s })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The matrix's columns: how (and how fast) the observer knew; what it saw after
/// the close goes on a line under each row.
const HEADER: [&str; 7] = [
    "mode",
    "setting",
    "verdict",
    "by",
    "p50",
    "p99",
    "predicted",
];

/// The matrix as text at most `width` columns wide: one row per case, with what
/// the observer saw after the close (first epoll flags, recv, send, TCP states)
/// on a line under it, so no cell is ever broken inside a word. The footer is
/// wrapped at spaces.
pub fn render(matrix: &Matrix, width: usize) -> String {
    let mut t = super::table::Columns::new(&HEADER);
    for row in &matrix.rows {
        let (cells, under) = cells(row);
        t.row(cells, vec![under]);
    }
    let s = &matrix.summary;
    let footer = format!(
        "{} cases × {} runs in {}; observer settings: {}; closers act {}ms after connect, {}ms apart; `open` = nothing within {}s",
        s.cases,
        s.runs,
        fmt_us(s.elapsed_us),
        Setting::ALL
            .iter()
            .skip(1)
            .map(|x| format!("{} = {}", x.name(), x.summary()))
            .collect::<Vec<_>>()
            .join(", "),
        s.timing.closer_after.as_millis(),
        s.timing.stagger.as_millis(),
        s.timing.observe.as_secs(),
    );
    super::tidy(&format!(
        "{}{}\n",
        t.render(width),
        super::wrap(&footer, width)
    ))
}

/// One row's cells, in [`HEADER`] order, and the line under it: what the
/// observer saw, or why the case did not run.
fn cells(row: &Row) -> (Vec<String>, String) {
    let dash = || "-".to_owned();
    let mut out = vec![row.mode.to_string(), row.setting.name().to_owned()];
    if row.status != "ran" && row.runs == 0 {
        out.extend(std::iter::repeat_n(dash(), HEADER.len() - 2));
        return (out, row.status.clone());
    }
    let p = row.detected_after_us;
    out.extend([
        row.verdict.map_or_else(dash, |v| v.to_string()),
        row.detected_by.map_or_else(dash, |b| b.name().to_owned()),
        p.map_or_else(dash, |p| fmt_us(p.p50)),
        p.map_or_else(dash, |p| fmt_us(p.p99)),
        // A prediction is shown where something fired; `open` rows never detected anything.
        row.predicted_us
            .filter(|_| row.verdict != Some(Verdict::Open))
            .map_or_else(dash, fmt_us),
    ]);
    let field = |v: &Option<String>| v.clone().unwrap_or_else(dash);
    let mut under = format!(
        "flags {} · recv {} · send {} · state {}",
        field(&row.first_flags),
        field(&row.recv),
        field(&row.send),
        field(&row.state)
    );
    if row.status != "ran" {
        under.push_str(&format!(" ({})", row.status));
    }
    (out, under)
}
