//! The ladder renderer: one connection's ending as a sequence diagram. This side is
//! the left column, the other end the right one, captured segments cross the lane
//! between them, and time goes down.
//!
//! Every row is one fact of the report, and rows are merged in time order. The axis is
//! not to scale: a quiet stretch of at least [`QUIET_US`] becomes one `⋮ 3.9s` row, so
//! a reader does not take four silent seconds for a few microseconds.

use super::{
    AfterlifeEnd, Closer, DetectedBy, DetectedFrom, Event, EventKind, Packet, Report, Role,
    SideSample, fmt_us,
};
use crate::sys::TcpState;
use crate::vocab::CloseMode;

/// No line of the diagram is wider than this many characters (nor than the page,
/// down to [`MIN_WIDTH`]).
pub const MAX_WIDTH: usize = 100;

/// The narrowest page the diagram is drawn for: the two text columns shrink to
/// fit down to this width, and no further.
pub const MIN_WIDTH: usize = 80;

/// A quiet stretch (µs) at least this long gets an elision row of its own.
pub const QUIET_US: u64 = 500_000;

/// Column widths, in characters: time, this side, the packet lane, the other end
/// (this side's and the other end's on a page of [`MAX_WIDTH`]; see [`Columns`]).
const TIME_W: usize = 10;
const LEFT_W: usize = 34;
const LANE_W: usize = 24;
const RIGHT_W: usize = 26;

/// The widths of the two text columns on a page `width` wide: what a page narrower
/// than [`MAX_WIDTH`] lacks comes off both, half each.
#[derive(Debug, Clone, Copy)]
struct Columns {
    left: usize,
    right: usize,
    width: usize,
}

impl Columns {
    fn for_page(width: usize) -> Self {
        let width = width.clamp(MIN_WIDTH, MAX_WIDTH);
        let short = MAX_WIDTH - width;
        Self {
            left: LEFT_W - short / 2,
            right: RIGHT_W - (short - short / 2),
            width,
        }
    }
}

/// A segment's label fits in the lane with two shaft characters on each side.
const LABEL_W: usize = LANE_W - 5;

/// A long remark is wrapped onto at most this many lines, then cut.
const MAX_LINES: usize = 3;

/// Where the header's second column starts (`the other end  ` is 15 wide).
const HEADER_INDENT: usize = 15;

/// The characters the diagram is drawn with.
struct Glyphs {
    life: char,
    quiet: char,
    shaft: char,
    head_right: char,
    head_left: char,
    cut: &'static str,
}

/// Plain ASCII, for files and pipes.
const ASCII: Glyphs = Glyphs {
    life: '|',
    quiet: ':',
    shaft: '-',
    head_right: '>',
    head_left: '<',
    cut: "...",
};

/// Box drawing, for a terminal.
const UNICODE: Glyphs = Glyphs {
    life: '│',
    quiet: '⋮',
    shaft: '─',
    head_right: '▶',
    head_left: '◀',
    cut: "…",
};

/// What a row is. Between sources, rows at equal times are ordered by this, cause
/// before effect: the other end's close action, then segments received, this side's
/// events, this side's socket after its close, segments sent, and last the other end's
/// states (read after the fact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    PeerClose,
    Received,
    Event,
    Afterlife,
    Sent,
    PeerState,
}

/// One fact on the time axis.
struct Row {
    t_us: u64,
    source: Source,
    /// Text in this side's column.
    left: String,
    /// A segment crossing the lane: `(outgoing, label)`.
    lane: Option<(bool, String)>,
    /// Text in the other end's column.
    right: String,
}

impl Row {
    fn left(t_us: u64, source: Source, text: String) -> Self {
        Self {
            t_us,
            source,
            left: text,
            lane: None,
            right: String::new(),
        }
    }

    fn right(t_us: u64, source: Source, text: String) -> Self {
        Self {
            t_us,
            source,
            left: String::new(),
            lane: None,
            right: text,
        }
    }
}

/// One connection's ending as a ladder: a header naming both ends, one row per fact
/// in time order, and a footer with the verdict, at most `width` columns wide
/// (between [`MIN_WIDTH`] and [`MAX_WIDTH`]). ASCII unless `tty`; never colour.
pub fn render(report: &Report, tty: bool, width: usize) -> String {
    let g = if tty { &UNICODE } else { &ASCII };
    let c = Columns::for_page(width);
    let mut out = String::new();
    for line in header(report, c.width) {
        push_line(&mut out, &line);
    }
    out.push('\n');
    let (this, other) = match report.role {
        Role::Connect => ("this side (client)", "the other end (server)"),
        Role::Serve => ("this side (server)", "the other end (client)"),
    };
    // Column titles wrap like any cell on a narrow page.
    let (this, other) = (wrap(this, c.left), wrap(other, c.right));
    for i in 0..this.len().max(other.len()) {
        let at = |lines: &[String]| lines.get(i).cloned().unwrap_or_default();
        let time = if i == 0 { "time" } else { "" };
        push_line(
            &mut out,
            &cells(c, time, &at(&this), "", &at(&other), g.life),
        );
    }

    let mut previous = None;
    for row in rows(report) {
        if let Some(before) = previous {
            let gap = row.t_us.saturating_sub(before);
            if gap >= QUIET_US {
                let time = format!("{} {}", g.quiet, fmt_gap(gap));
                push_line(&mut out, &cells(c, &time, "", "", "", g.quiet));
            }
        }
        previous = Some(row.t_us);
        for line in draw(g, c, &row) {
            push_line(&mut out, &line);
        }
    }

    out.push('\n');
    for line in wrap(&footer(report), c.width) {
        push_line(&mut out, &line);
    }
    if report.events_dropped > 0 {
        push_line(
            &mut out,
            &format!(
                "({} more events were not kept in the report)",
                report.events_dropped
            ),
        );
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Who is who: both addresses, and whether the other end's socket could be read.
fn header(report: &Report, width: usize) -> Vec<String> {
    let local = report
        .local
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let command = match report.role {
        Role::Connect => "tcpbye connect",
        Role::Serve => "tcpbye serve",
    };
    let seen = match &report.peer_side {
        None => "its socket not read (--no-peer-side)".to_owned(),
        Some(peer) if peer.visible => "its socket read through sock_diag".to_owned(),
        Some(peer) => peer
            .note
            .clone()
            .unwrap_or_else(|| "its socket not visible from here".to_owned()),
    };
    let mut lines = hanging("this side", &format!("{local}, {command}"), width);
    lines.extend(hanging(
        "the other end",
        &format!("{}, {seen}", report.peer),
        width,
    ));
    lines
}

/// `label` then `text`, wrapped to the page with later lines under the text.
fn hanging(label: &str, text: &str, width: usize) -> Vec<String> {
    wrap(text, width - HEADER_INDENT)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let label = if i == 0 { label } else { "" };
            format!("{label:<HEADER_INDENT$}{line}")
        })
        .collect()
}

/// Every fact of the report as a row, in time order.
fn rows(report: &Report) -> Vec<Row> {
    let mut sources: Vec<Vec<Row>> = Vec::new();

    // The other end's close action, known when tcpbye ran both ends (`lab`).
    if let (Some(Closer::Peer), Some(mode), Some(t)) =
        (report.closer, report.close, report.close_t_us)
    {
        sources.push(vec![Row::right(
            t,
            Source::PeerClose,
            format!("closes ({mode})"),
        )]);
    }

    sources.push(
        report
            .events
            .iter()
            .map(|e| Row::left(e.t_us, Source::Event, event_text(e)))
            .collect(),
    );

    if let Some(peer) = report.peer_side.as_ref().filter(|p| p.visible) {
        sources.push(
            state_changes(&peer.states)
                .into_iter()
                .map(|(t, text)| Row::right(t, Source::PeerState, text))
                .collect(),
        );
    }

    if let Some(after) = &report.afterlife {
        let mut rows: Vec<Row> = state_changes(&after.states)
            .into_iter()
            .map(|(t, text)| Row::left(t, Source::Afterlife, text))
            .collect();
        rows.extend(afterlife_end(
            report,
            &after.states,
            after.ended,
            after.watched_us,
        ));
        sources.push(rows);
    }

    if let Some(packets) = &report.packets {
        sources.push(packets.iter().map(segment).collect());
    }

    merge(sources)
}

/// Merges the sources into one time line. Each source keeps its own order (the
/// segments of a handshake that all read +0µs stay in capture order); at equal times
/// the row whose [`Source`] comes first goes first, then the source listed first.
fn merge(mut sources: Vec<Vec<Row>>) -> Vec<Row> {
    for rows in &mut sources {
        // Stable: a source's rows at equal times keep the report's order.
        rows.sort_by_key(|r| r.t_us);
        rows.reverse();
    }
    let mut merged = Vec::new();
    loop {
        let next = sources
            .iter()
            .enumerate()
            .filter_map(|(i, rows)| rows.last().map(|r| (r.t_us, r.source, i)))
            .min();
        let Some((_, _, i)) = next else {
            return merged;
        };
        merged.extend(sources[i].pop());
    }
}

/// What one event of this side says, in a few words.
fn event_text(event: &Event) -> String {
    let detail = event.detail.as_deref();
    let errno = event.errno.as_deref();
    match event.kind {
        EventKind::Connect => format!("connect(): {}", errno.unwrap_or("established")),
        EventKind::Accept => "accept()".to_owned(),
        EventKind::Epoll => match event.epoll.as_deref() {
            Some(flags) if !flags.is_empty() => format!("epoll {}", flags.join("|")),
            _ => "epoll".to_owned(),
        },
        EventKind::Recv => match (errno, event.bytes) {
            (Some(errno), _) => format!("recv {errno}"),
            (None, Some(0)) => "recv 0 (EOF)".to_owned(),
            (None, Some(n)) => format!("recv {}", bytes(n)),
            (None, None) => format!("recv {}", detail.unwrap_or("")),
        },
        EventKind::Send => match (errno, event.bytes) {
            (Some(errno), _) => format!("send {errno}"),
            (None, Some(n)) => format!("send {}", bytes(n)),
            (None, None) => "send".to_owned(),
        },
        EventKind::SoError => format!("SO_ERROR {}", errno.or(detail).unwrap_or("0")),
        EventKind::State => event
            .state
            .map_or_else(|| "state unknown".to_owned(), |s| s.to_string()),
        EventKind::Close => detail.unwrap_or("close()").to_owned(),
        EventKind::Shutdown => detail.unwrap_or("shutdown(SHUT_WR)").to_owned(),
        EventKind::Ping => match errno {
            Some(errno) => format!("ping {errno}"),
            None => "ping".to_owned(),
        },
        EventKind::Timeout => match detail {
            Some(detail) => format!("timeout: {detail}"),
            None => "timeout".to_owned(),
        },
        EventKind::Note => detail.unwrap_or("note").to_owned(),
    }
}

fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

/// A socket's readings, kept only where its state changed (the first one always);
/// a reading without a state means the socket is gone.
///
/// In CLOSE_WAIT the peer's FIN counts one byte in Recv-Q until the application
/// reads EOF, so a Recv-Q that empties there is drawn as `read EOF`.
fn state_changes(states: &[SideSample]) -> Vec<(u64, String)> {
    let mut changes = Vec::new();
    let mut last = None;
    for sample in states {
        let eof_read = sample.state == Some(TcpState::CloseWait) && sample.recv_q == 0;
        if last == Some((sample.state, eof_read)) {
            continue;
        }
        let same_state = last.is_some_and(|(state, _)| state == sample.state);
        last = Some((sample.state, eof_read));
        let text = match sample.state {
            None => "gone".to_owned(),
            Some(_) if same_state && eof_read => "read EOF".to_owned(),
            Some(state) if eof_read => format!("{state}, EOF read"),
            Some(state) => state.to_string(),
        };
        changes.push((sample.t_us, text));
    }
    changes
}

/// How the watch of this side's closed socket ended, when its readings do not already
/// say so: gone without a reading that showed it, or still there when the watch ran out.
/// It is placed at the end of the watch, which starts at this side's last close.
fn afterlife_end(
    report: &Report,
    states: &[SideSample],
    ended: AfterlifeEnd,
    watched_us: u64,
) -> Option<Row> {
    let closed_at = report
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Close)
        .map(|e| e.t_us)
        .or(report.close_t_us)?;
    let last = states.last();
    let t_us = (closed_at + watched_us).max(last.map_or(0, |s| s.t_us));
    let text = match (ended, last.map(|s| s.state)) {
        (AfterlifeEnd::Gone, Some(None)) | (AfterlifeEnd::TimeWait, _) => return None,
        (AfterlifeEnd::Gone, _) => "gone".to_owned(),
        (AfterlifeEnd::WatchEnded, Some(Some(state))) => format!("still {state} (watch ended)"),
        (AfterlifeEnd::WatchEnded, _) => "watch ended".to_owned(),
    };
    Some(Row::left(t_us, Source::Afterlife, text))
}

/// A captured segment as an arrow. Its flags, length and what it is go on the arrow;
/// when that is too long for the lane, what it is goes in the sender's column instead.
fn segment(packet: &Packet) -> Row {
    let mut label = packet
        .flags
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join("|");
    if packet.len > 0 {
        label.push_str(&format!(" len {}", packet.len));
    }
    let mut aside = String::new();
    if let Some(note) = packet.note.map(super::PacketNote::name) {
        if label.chars().count() + 1 + note.chars().count() <= LABEL_W {
            label.push(' ');
            label.push_str(note);
        } else {
            aside = format!("({note})");
        }
    }
    let source = if packet.outgoing {
        Source::Sent
    } else {
        Source::Received
    };
    let (left, right) = if packet.outgoing {
        (aside, String::new())
    } else {
        (String::new(), aside)
    };
    Row {
        t_us: packet.t_us,
        source,
        left,
        lane: Some((packet.outgoing, label)),
        right,
    }
}

/// A row as lines: long text wraps within its column, the time only on the first line.
fn draw(g: &Glyphs, c: Columns, row: &Row) -> Vec<String> {
    let left = clip(wrap(&row.left, c.left), c.left, g.cut);
    let right = clip(wrap(&row.right, c.right), c.right, g.cut);
    let lane = row
        .lane
        .as_ref()
        .map(|(outgoing, label)| arrow(g, *outgoing, label))
        .unwrap_or_default();
    let time = format!("+{}", fmt_us(row.t_us));
    (0..left.len().max(right.len()))
        .map(|i| {
            let at = |lines: &[String]| lines.get(i).cloned().unwrap_or_default();
            let (time, lane) = if i == 0 {
                (time.as_str(), lane.as_str())
            } else {
                ("", "")
            };
            cells(c, time, &at(&left), lane, &at(&right), g.life)
        })
        .collect()
}

/// One line of the diagram: the columns at their fixed widths, `life` as the lifelines.
fn cells(c: Columns, time: &str, left: &str, lane: &str, right: &str, life: char) -> String {
    let left_w = c.left;
    format!("{time:>TIME_W$}  {left:<left_w$} {life}{lane:<LANE_W$}{life} {right}")
}

/// `---FIN|ACK--->` or `<---RST---`, exactly as wide as the lane.
fn arrow(g: &Glyphs, outgoing: bool, label: &str) -> String {
    let label = clip(vec![label.to_owned()], LABEL_W, g.cut).remove(0);
    let shaft = LANE_W - 1 - label.chars().count();
    let before = shaft / 2;
    let run = |n: usize| g.shaft.to_string().repeat(n);
    if outgoing {
        format!(
            "{}{label}{}{}",
            run(before),
            run(shaft - before),
            g.head_right
        )
    } else {
        format!(
            "{}{}{label}{}",
            g.head_left,
            run(shaft - before),
            run(before)
        )
    }
}

/// The verdict, and how long detection took when this side detected something.
fn footer(report: &Report) -> String {
    let mut line = format!("verdict: {}", report.verdict);
    if report.fin_before_rst == Some(true) {
        line.push_str(" (FIN, then RST)");
    }
    if let Some(by) = report.detected_by {
        line.push_str(match by {
            DetectedBy::Keepalive => " by keepalive",
            DetectedBy::UserTimeout => " by user timeout",
            DetectedBy::Retransmit => " by retransmissions",
        });
    }
    if let (Some(Closer::Local), Some(mode)) = (report.closer, report.close)
        && mode != CloseMode::None
    {
        line.push_str(&format!(", this side closed ({mode})"));
    }
    if let Some(us) = report.detected_after_us {
        let from = match report.detected_from {
            Some(DetectedFrom::Close) => "the close",
            Some(DetectedFrom::Packet) => "the peer's FIN/RST arrived",
            _ => "the last sign of life",
        };
        line.push_str(&format!(", detected {} after {from}", fmt_us(us)));
    }
    line
}

/// A quiet stretch, coarsely: `3.9s`, `612.0ms`.
fn fmt_gap(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else {
        fmt_us(us)
    }
}

/// Splits `text` into lines of at most `width` characters at spaces; a word longer
/// than a line is cut. Empty text is one empty line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word = word;
        while !word.is_empty() {
            let used = current.chars().count();
            let len = word.chars().count();
            if used == 0 && len <= width {
                current.push_str(word);
                break;
            }
            if used > 0 && used + 1 + len <= width {
                current.push(' ');
                current.push_str(word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut current));
                continue;
            }
            let cut = word
                .char_indices()
                .nth(width)
                .map_or(word.len(), |(i, _)| i);
            lines.push(word[..cut].to_owned());
            word = &word[cut..];
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// Keeps at most [`MAX_LINES`] lines, marking the last one kept with `cut` when
/// something was left out.
fn clip(mut lines: Vec<String>, width: usize, cut: &str) -> Vec<String> {
    let over_width = lines.iter().any(|l| l.chars().count() > width);
    if lines.len() <= MAX_LINES && !over_width {
        return lines;
    }
    lines.truncate(MAX_LINES);
    let keep = width - cut.chars().count();
    for line in &mut lines {
        if line.chars().count() > width {
            *line = line.chars().take(keep).collect::<String>() + cut;
        }
    }
    if let Some(last) = lines.last_mut()
        && !last.ends_with(cut)
    {
        let kept: String = last.chars().take(keep).collect();
        *last = format!("{}{cut}", kept.trim_end());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("recv 0 (EOF)", 30), vec!["recv 0 (EOF)"]);
        assert_eq!(
            wrap("hold ended: socket closed in repair mode", 16),
            vec!["hold ended:", "socket closed in", "repair mode"]
        );
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn clips_to_three_lines() {
        let lines = wrap("one two three four five six seven eight", 9);
        assert_eq!(clip(lines, 9, "…"), vec!["one two", "three", "four fiv…"]);
        let lines = wrap("aaaa bbbb cccc dddd eeee", 4);
        assert_eq!(clip(lines, 4, "..."), vec!["aaaa", "bbbb", "c..."]);
    }

    #[test]
    fn arrows_fill_the_lane() {
        for g in [&ASCII, &UNICODE] {
            for outgoing in [true, false] {
                for label in ["RST", "FIN|ACK", "PSH|ACK len 1448 retransmission"] {
                    assert_eq!(arrow(g, outgoing, label).chars().count(), LANE_W);
                }
            }
        }
        assert_eq!(arrow(&ASCII, true, "RST"), "----------RST---------->");
        assert_eq!(arrow(&ASCII, false, "RST"), "<----------RST----------");
    }

    #[test]
    fn widest_line_fits_the_page() {
        for page in [MIN_WIDTH, 81, 90, 99, MAX_WIDTH] {
            let c = Columns::for_page(page);
            let widest = TIME_W + 2 + c.left + 1 + 1 + LANE_W + 1 + 1 + c.right;
            assert_eq!(widest, page);
        }
        assert_eq!(Columns::for_page(60).width, MIN_WIDTH);
        assert_eq!(Columns::for_page(200).width, MAX_WIDTH);
    }
}
