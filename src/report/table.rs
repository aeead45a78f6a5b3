//! The human renderer: comfy-table on a terminal, plain columns otherwise.

use comfy_table::presets::{NOTHING, UTF8_FULL_CONDENSED};
use comfy_table::{ContentArrangement, Table};

use super::{
    AfterlifeEnd, Closer, DetectedFrom, Event, EventKind, Report, SideSample, Summary, fmt_us,
};

/// A table styled for where stdout goes: box drawing on a terminal, plain columns otherwise.
pub fn table(tty: bool) -> Table {
    let mut t = Table::new();
    if tty {
        t.load_style(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        t.load_style(NOTHING);
    }
    t
}

/// A [`table`] at most `width` columns wide: a cell too long for it is wrapped
/// at spaces onto more lines of its row.
pub fn table_within(tty: bool, width: usize) -> Table {
    let mut t = table(tty);
    t.set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(u16::try_from(width).unwrap_or(u16::MAX));
    t
}

/// One connection's report, at most `width` columns wide: summary, timeline,
/// TCP_INFO first vs last.
pub fn render(report: &Report, tty: bool, width: usize) -> String {
    let mut out = String::new();
    let role = match report.role {
        super::Role::Serve => "serve",
        super::Role::Connect => "connect",
    };
    let local = report
        .local
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let title = format!(
        "{role} {local} ↔ {peer}: {verdict}",
        peer = report.peer,
        verdict = report.verdict.name().to_uppercase()
    );
    out.push_str(&super::wrap(&title, width));
    out.push('\n');

    let mut summary = table_within(tty, width);
    // A closer's report leads with what its action did to the other end.
    if let Some(seen) = other_end_after_close(report) {
        summary.add_row(vec!["the other end".to_owned(), seen]);
    }
    let closer = match (report.closer, report.close) {
        (Some(Closer::Local), Some(mode)) => format!("this side ({mode})"),
        (Some(Closer::Peer), Some(mode)) => format!("the peer ({mode})"),
        (Some(Closer::Peer), None) => gave_up(report).map_or_else(
            || "the peer".to_owned(),
            |who| format!("{who}: the peer fell silent"),
        ),
        _ => "-".to_owned(),
    };
    summary.add_row(vec!["closed by", &closer]);
    let verdict = match (report.detected_by, report.fin_before_rst) {
        (Some(by), _) => format!("{} (by {})", report.verdict, serde_plain(&by)),
        (None, Some(true)) => format!("{} (FIN, then RST)", report.verdict),
        (None, _) => report.verdict.to_string(),
    };
    summary.add_row(vec!["verdict", &verdict]);
    match (report.detected_after_us, report.peer_idle_us) {
        (Some(us), idle) => {
            summary.add_row(vec![
                "detected".to_owned(),
                format!("{} {}", fmt_us(us), detected_from(report)),
            ]);
            if let Some(idle) =
                idle.filter(|_| report.detected_from != Some(DetectedFrom::LastActivity))
            {
                summary.add_row(vec![
                    "peer idle".to_owned(),
                    format!(
                        "{} from its last data until this side saw its end",
                        fmt_us(idle)
                    ),
                ]);
            }
        }
        (None, Some(idle)) => {
            summary.add_row(vec![
                "detected".to_owned(),
                "not timed: the arrival of the peer's FIN/RST is known only with --pcap".to_owned(),
            ]);
            summary.add_row(vec![
                "peer idle".to_owned(),
                format!(
                    "{} from its last data until this side saw its end",
                    fmt_us(idle)
                ),
            ]);
        }
        (None, None) => {}
    }
    if let Some(us) = report.predicted_us {
        let basis = report.predicted_basis.as_deref().unwrap_or("");
        summary.add_row(vec![
            "predicted".to_owned(),
            format!("{} — {basis}", fmt_us(us)),
        ]);
    }
    summary.add_row(vec![
        "bytes".to_owned(),
        format!(
            "sent {}, received {}",
            report.bytes_sent, report.bytes_received
        ),
    ]);
    summary.add_row(vec!["duration".to_owned(), fmt_us(report.duration_us)]);
    out.push_str(&summary.to_string());
    out.push('\n');

    let mut timeline = table_within(tty, width);
    timeline.set_header(vec!["t", "event", "result", "state"]);
    for event in &report.events {
        let (what, result) = describe(event);
        let state = event.state.map(|s| s.to_string()).unwrap_or_default();
        timeline.add_row(vec![
            format!("+{}", fmt_us(event.t_us)),
            what.to_owned(),
            result,
            state,
        ]);
    }
    if report.events_dropped > 0 {
        timeline.add_row(vec![
            String::new(),
            "…".to_owned(),
            format!("{} more events not kept", report.events_dropped),
            String::new(),
        ]);
    }
    out.push_str(&timeline.to_string());
    out.push('\n');

    if let Some(peer) = &report.peer_side {
        if peer.visible {
            out.push_str(&side_table(
                "the other end (sock_diag)",
                &peer.states,
                tty,
                width,
            ));
        } else if let Some(note) = &peer.note {
            out.push_str(&super::wrap(&format!("the other end: {note}"), width));
            out.push('\n');
        }
    }
    if let Some(after) = &report.afterlife {
        let title = format!(
            "this side after its close (sock_diag every 5ms): {}",
            match after.ended {
                AfterlifeEnd::Gone => "freed",
                AfterlifeEnd::TimeWait => "in TIME_WAIT (60s)",
                AfterlifeEnd::WatchEnded => "still there when --linger-watch ended",
            }
        );
        out.push_str(&side_table(&title, &after.states, tty, width));
    }
    if let (Some(first), Some(last)) = (report.snapshots.first(), report.snapshots.last()) {
        let mut info = table_within(tty, width);
        info.set_header(vec![
            "TCP_INFO".to_owned(),
            format!("+{}", fmt_us(first.t_us)),
            format!("+{}", fmt_us(last.t_us)),
        ]);
        for ((name, a), (_, b)) in first.tcp_info.rows().into_iter().zip(last.tcp_info.rows()) {
            info.add_row(vec![name.to_owned(), a, b]);
        }
        out.push_str(&info.to_string());
        out.push('\n');
    }
    super::tidy(&out)
}

/// One connection in one line (`--brief`): who ended it, how this side saw it, how
/// fast; wider than `width`, it goes on at the next line, indented.
pub fn line(report: &Report, width: usize) -> String {
    let role = match report.role {
        super::Role::Serve => "serve",
        super::Role::Connect => "connect",
    };
    let mut parts = vec![format!("{role} {}: {}", report.peer, report.verdict)];
    if let Some(by) = report.detected_by {
        parts[0].push_str(&format!(" by {}", by.name()));
    }
    parts.push(match (report.closer, report.close) {
        (Some(Closer::Local), Some(mode)) => format!("this side closed ({mode})"),
        (Some(Closer::Peer), Some(mode)) => format!("the peer closed ({mode})"),
        (Some(Closer::Peer), None) => gave_up(report).map_or_else(
            || "the peer ended it".to_owned(),
            |who| format!("{who} after the peer fell silent"),
        ),
        _ => "nobody closed".to_owned(),
    });
    if let Some(us) = report.detected_after_us {
        parts.push(format!("detected {} {}", fmt_us(us), detected_from(report)));
    }
    // The first errno or EOF this side met, and the last TCP state it saw.
    let first = report
        .events
        .iter()
        .find_map(|e| match (e.kind, &e.errno, e.bytes) {
            (EventKind::Recv | EventKind::Send | EventKind::SoError, Some(errno), _) => {
                Some(errno.clone())
            }
            (EventKind::Recv, None, Some(0)) => Some("EOF".to_owned()),
            _ => None,
        });
    parts.extend(first);
    let state = report.events.iter().rev().find_map(|e| e.state);
    parts.extend(state.map(|s| s.to_string()));
    // A closer's own socket tells little; what the other end went through does.
    parts.extend(other_end_after_close(report).map(|s| format!("the other end: {s}")));
    parts.push(fmt_us(report.duration_us));
    let text = super::wrap(&parts.join(" · "), width.saturating_sub(2).max(20));
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Where the detection time is measured from, in words.
fn detected_from(report: &Report) -> &'static str {
    match report.detected_from {
        Some(DetectedFrom::Close) => "after the close",
        Some(DetectedFrom::Packet) => "after the peer's FIN/RST arrived",
        Some(DetectedFrom::LastActivity) | None => "after the last sign of life",
    }
}

/// Who ended a connection whose peer sent nothing: this side's kernel (a
/// keepalive, user timeout or retransmission timeout), or tcpbye's heartbeat.
fn gave_up(report: &Report) -> Option<String> {
    match (report.verdict, report.detected_by) {
        (super::Verdict::Timeout, Some(by)) => Some(format!("this side's kernel ({})", by.name())),
        (super::Verdict::Timeout, None) => Some("this side's kernel".to_owned()),
        (super::Verdict::Heartbeat, _) => Some("this side (heartbeat)".to_owned()),
        _ => None,
    }
}

/// For a closer whose other end sock_diag could read: that socket's states from
/// the close on, e.g. `CLOSE_WAIT +35µs → gone +1.1ms`.
fn other_end_after_close(report: &Report) -> Option<String> {
    if report.closer != Some(Closer::Local) {
        return None;
    }
    let from = report.close_t_us?;
    let peer = report.peer_side.as_ref().filter(|p| p.visible)?;
    let after: Vec<String> = peer
        .states
        .iter()
        .filter(|s| s.t_us >= from)
        .map(|s| {
            let state = s
                .state
                .map_or_else(|| "gone".to_owned(), |st| st.to_string());
            format!("{state} +{}", fmt_us(s.t_us))
        })
        .collect();
    (!after.is_empty()).then(|| after.join(" → "))
}

/// A socket's states as sock_diag showed them, under a line that says which socket.
fn side_table(title: &str, states: &[SideSample], tty: bool, width: usize) -> String {
    let mut t = table_within(tty, width);
    t.set_header(vec!["t", "state", "timer", "Recv-Q", "Send-Q", "fd"]);
    for s in states {
        t.add_row(vec![
            format!("+{}", fmt_us(s.t_us)),
            s.state
                .map_or_else(|| "gone".to_owned(), |st| st.to_string()),
            s.timer.map(|t| t.to_string()).unwrap_or_default(),
            s.recv_q.to_string(),
            s.send_q.to_string(),
            if s.inode == 0 {
                "none".to_owned()
            } else {
                "yes".to_owned()
            },
        ]);
    }
    format!("{}\n{t}\n", super::wrap(title, width))
}

/// The event's name and its result, for the timeline table.
fn describe(event: &Event) -> (&'static str, String) {
    let errno_or = |fallback: String| event.errno.clone().unwrap_or(fallback);
    let detail = event.detail.clone().unwrap_or_default();
    match event.kind {
        EventKind::Epoll => (
            "epoll",
            event.epoll.as_deref().unwrap_or_default().join("|"),
        ),
        EventKind::Recv => (
            "recv",
            errno_or(match event.bytes {
                Some(0) => "0 (EOF)".to_owned(),
                Some(n) => format!("{n} bytes"),
                None => detail,
            }),
        ),
        EventKind::Send => (
            "send",
            errno_or(
                event
                    .bytes
                    .map(|n| format!("{n} bytes"))
                    .unwrap_or_default(),
            ),
        ),
        EventKind::SoError => ("SO_ERROR", errno_or("0".to_owned())),
        EventKind::State => ("state", String::new()),
        EventKind::Connect => ("connect", errno_or("established".to_owned())),
        EventKind::Accept => ("accept", "established".to_owned()),
        EventKind::Close => ("close", detail),
        EventKind::Shutdown => ("shutdown", detail),
        EventKind::Ping => ("ping", errno_or(String::new())),
        EventKind::Timeout => ("timeout", detail),
        EventKind::Note => ("note", detail),
    }
}

fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    super::json::line(value).trim_matches('"').to_owned()
}

/// The closing summary of a run with several connections.
pub fn render_summary(summary: &Summary, tty: bool, width: usize) -> String {
    let mut t = table_within(tty, width);
    let join = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let verdicts = join(
        summary
            .verdicts
            .iter()
            .map(|(v, n)| format!("{v}: {n}"))
            .collect(),
    );
    let errors = join(
        summary
            .connect_errors
            .iter()
            .map(|(e, n)| format!("{e}: {n}"))
            .collect(),
    );
    t.add_row(vec![
        "connections".to_owned(),
        format!(
            "{} ({} established)",
            summary.connections, summary.established
        ),
    ]);
    t.add_row(vec!["verdicts".to_owned(), verdicts]);
    t.add_row(vec!["connect errors".to_owned(), errors]);
    let detected = summary
        .detected_after_us
        .as_ref()
        .map_or("-".to_owned(), |p| {
            format!(
                "p50 {} · p90 {} · p99 {} · max {}",
                fmt_us(p.p50),
                fmt_us(p.p90),
                fmt_us(p.p99),
                fmt_us(p.max)
            )
        });
    t.add_row(vec!["detected after".to_owned(), detected]);
    t.add_row(vec![
        "elapsed".to_owned(),
        format!(
            "{} ({}/s)",
            fmt_us(summary.elapsed_us),
            summary.rate_per_sec
        ),
    ]);
    super::tidy(&format!("{t}\n"))
}

/// Plain columns for a matrix, the same on a terminal and in a pipe: one space
/// before each cell, cells padded to the widest of their column, two spaces
/// apart (as comfy-table lays out without borders). A row's free text (what it
/// rests on, advice) goes on lines under it, indented by two spaces and wrapped
/// to the page, never inside a cell.
#[derive(Debug, Default)]
pub struct Columns {
    header: Vec<String>,
    rows: Vec<(Vec<String>, Vec<String>)>,
}

impl Columns {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|&h| h.to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// A row of cells, and the texts to print under it, each wrapped on its own.
    pub fn row(&mut self, cells: Vec<String>, under: Vec<String>) {
        self.rows.push((cells, under));
    }

    /// The table at most `width` columns wide where its cells allow (a cell is
    /// never broken; the text under the rows always fits).
    pub fn render(&self, width: usize) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for (cells, _) in &self.rows {
            for (w, cell) in widths.iter_mut().zip(cells) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (c, w) in widths.iter().enumerate().take(columns) {
                let cell = cells.get(c).map_or("", String::as_str);
                s.push(' ');
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 1));
            }
            s.trim_end().to_owned()
        };
        let mut out = line(&self.header);
        out.push('\n');
        for (cells, under) in &self.rows {
            out.push_str(&line(cells));
            out.push('\n');
            for text in under {
                for l in super::wrap(text, width.saturating_sub(UNDER.len()).max(20)).lines() {
                    out.push_str(UNDER);
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The indent of the text under a row: two spaces, where no table line starts
/// (a table line starts with one space and a cell, or with the padding of an
/// empty first cell, three or more).
const UNDER: &str = "  ";
