//! The `--ladder` renderer against fixed, recorded timelines. The reports below copy
//! what `tcpbye serve` and `tcpbye connect` printed with `--json` on loopback (the
//! packets are what a capture of the same exchange shows; the report types are
//! Serialize only, so they are built here rather than parsed).
//!
//! Each rendering is compared with a golden file under `tests/golden/`;
//! `TCPBYE_REGENERATE=1 cargo test --test tests ladder::` rewrites them instead. The tests also
//! check the diagram's shape directly, so that they fail for more than drift.

use crate::common;

use tcpbye::report::ladder::{MAX_WIDTH, MIN_WIDTH, render};
use tcpbye::report::{
    Afterlife, AfterlifeEnd, Closer, DetectedBy, DetectedFrom, Event, EventKind, Packet,
    PacketNote, PeerSide, Report, Role, SideSample, TcpFlag, Verdict,
};
use tcpbye::sys::{DiagTimer, DiagTimerKind, TcpState};
use tcpbye::vocab::CloseMode;

/// The one command that rewrites every golden file of this test.
const REFRESH: &str = "TCPBYE_REGENERATE=1 cargo test --test tests ladder::";

// ---------------------------------------------------------------------------------
// Building reports

fn event(t_us: u64, kind: EventKind) -> Event {
    Event::new(t_us, kind)
}

fn state(t_us: u64, state: TcpState) -> Event {
    Event {
        state: Some(state),
        ..Event::new(t_us, EventKind::State)
    }
}

fn epoll(t_us: u64, flags: &[&'static str]) -> Event {
    Event {
        epoll: Some(flags.to_vec()),
        ..Event::new(t_us, EventKind::Epoll)
    }
}

fn with_bytes(t_us: u64, kind: EventKind, bytes: u64) -> Event {
    Event {
        bytes: Some(bytes),
        ..Event::new(t_us, kind)
    }
}

fn eof(t_us: u64) -> Event {
    Event {
        bytes: Some(0),
        detail: Some("EOF".to_owned()),
        ..Event::new(t_us, EventKind::Recv)
    }
}

fn with_errno(t_us: u64, kind: EventKind, errno: &str) -> Event {
    Event {
        errno: Some(errno.to_owned()),
        ..Event::new(t_us, kind)
    }
}

fn with_detail(t_us: u64, kind: EventKind, detail: &str) -> Event {
    Event {
        detail: Some(detail.to_owned()),
        ..Event::new(t_us, kind)
    }
}

fn so_error_none(t_us: u64) -> Event {
    with_detail(t_us, EventKind::SoError, "0")
}

fn sample(t_us: u64, state: Option<TcpState>, inode: u32) -> SideSample {
    SideSample {
        t_us,
        state,
        timer: None,
        recv_q: 0,
        send_q: 0,
        inode,
        prev_t_us: None,
    }
}

fn visible(states: Vec<SideSample>) -> Option<PeerSide> {
    Some(PeerSide {
        visible: true,
        note: None,
        uid: Some(0),
        states,
        tcp_info: None,
    })
}

fn packet(
    t_us: u64,
    outgoing: bool,
    flags: &[&'static str],
    (seq, ack): (u32, u32),
    len: u32,
    note: Option<&'static str>,
) -> Packet {
    Packet {
        t_us,
        outgoing,
        flags: flags
            .iter()
            .map(|f| TcpFlag::from_name(f).expect("a flag name"))
            .collect(),
        seq,
        ack,
        len,
        note: note.map(|n| PacketNote::from_name(n).expect("a note name")),
    }
}

/// A report with everything that does not concern the ladder left empty.
fn report(role: Role, local: &str, peer: &str, verdict: Verdict) -> Report {
    Report {
        local: Some(local.parse().expect("local address")),
        ..Report::bare(role, peer.parse().expect("peer address"), verdict)
    }
}

/// `connect --close fin --after 100ms --pcap` against `tcpbye serve`, from the
/// closer's side: the handshake, this side's FIN, the server's probe write (which
/// also acknowledges the FIN) and the RST the orphaned socket answers it with.
fn fin_with_packets() -> Report {
    use TcpState::*;
    const C: u32 = 1_802_526_463; // this side's initial sequence number
    const S: u32 = 1_065_602_303; // the server's
    Report {
        close: Some(CloseMode::Fin),
        closer: Some(Closer::Local),
        close_t_us: Some(100_913),
        duration_us: 106_402,
        events: vec![
            event(89, EventKind::Connect),
            state(89, Established),
            with_detail(100_913, EventKind::Close, "close(): FIN"),
        ],
        peer_side: visible(vec![
            // Still in the accept queue (no descriptor), then accepted: one state.
            sample(89, Some(Established), 0),
            sample(50_414, Some(Established), 1_274_893),
            SideSample {
                recv_q: 1,
                ..sample(100_964, Some(CloseWait), 1_274_893)
            },
            sample(106_313, None, 0),
        ]),
        afterlife: Some(Afterlife {
            states: vec![
                SideSample {
                    timer: Some(DiagTimer {
                        kind: DiagTimerKind::Retransmit,
                        expires_ms: 200,
                        retransmits: 0,
                    }),
                    send_q: 1,
                    ..sample(100_964, Some(FinWait1), 0)
                },
                sample(106_313, None, 0),
            ],
            ended: AfterlifeEnd::Gone,
            watched_us: 5_745,
        }),
        packets: Some(vec![
            packet(32, true, &["SYN"], (C, 0), 0, None),
            packet(44, false, &["SYN", "ACK"], (S, C + 1), 0, None),
            packet(56, true, &["ACK"], (C + 1, S + 1), 0, None),
            packet(100_940, true, &["FIN", "ACK"], (C + 1, S + 1), 0, None),
            packet(101_173, false, &["PSH", "ACK"], (S + 1, C + 2), 13, None),
            packet(101_191, true, &["RST"], (C + 2, 0), 0, None),
        ]),
        ..report(
            Role::Connect,
            "127.0.0.1:54586",
            "127.0.0.1:39903",
            Verdict::Fin,
        )
    }
}

/// `tcpbye serve --pcap` observing `connect --close fin --after 100ms`: the FIN
/// arrives, the observer wakes, reads EOF, probes with a write and meets the RST.
/// The handshake precedes accept(), where this report's clock starts: it reads +0µs.
fn fin_observed_with_packets() -> Report {
    use TcpState::*;
    const C: u32 = 3_596_964_773; // the client's initial sequence number
    const S: u32 = 490_863_492; // this side's
    Report {
        closer: Some(Closer::Peer),
        detected_after_us: Some(100_523),
        detected_from: Some(DetectedFrom::LastActivity),
        duration_us: 120_924,
        bytes_sent: 13,
        events: vec![
            event(33, EventKind::Accept),
            state(33, Established),
            epoll(100_523, &["IN", "RDHUP"]),
            eof(100_523),
            state(100_523, CloseWait),
            so_error_none(100_523),
            with_bytes(100_523, EventKind::Send, 13),
            epoll(100_703, &["IN", "ERR", "HUP", "RDHUP"]),
            eof(100_703),
            state(100_703, Close),
            with_errno(120_839, EventKind::Send, "EPIPE"),
            eof(120_839),
            so_error_none(120_839),
            with_detail(120_839, EventKind::Close, "close(): the observer is done"),
        ],
        peer_side: visible(vec![
            sample(33, Some(Established), 1_274_934),
            SideSample {
                timer: Some(DiagTimer {
                    kind: DiagTimerKind::Retransmit,
                    expires_ms: 200,
                    retransmits: 0,
                }),
                send_q: 1,
                ..sample(100_523, Some(FinWait1), 0)
            },
            sample(100_703, None, 0),
        ]),
        packets: Some(vec![
            packet(0, false, &["SYN"], (C, 0), 0, None),
            packet(0, true, &["SYN", "ACK"], (S, C + 1), 0, None),
            packet(0, false, &["ACK"], (C + 1, S + 1), 0, None),
            packet(100_439, false, &["FIN", "ACK"], (C + 1, S + 1), 0, None),
            packet(100_672, true, &["PSH", "ACK"], (S + 1, C + 2), 13, None),
            packet(100_689, false, &["RST"], (C + 2, 0), 0, None),
        ]),
        ..report(
            Role::Serve,
            "127.0.0.1:39287",
            "127.0.0.1:42006",
            Verdict::Fin,
        )
    }
}

/// `tcpbye serve` observing `connect --close rst --after 100ms`: no capture, the
/// other end's socket read through sock_diag.
fn rst_observed() -> Report {
    use TcpState::*;
    Report {
        closer: Some(Closer::Peer),
        detected_after_us: Some(101_429),
        detected_from: Some(DetectedFrom::LastActivity),
        duration_us: 121_719,
        events: vec![
            event(30, EventKind::Accept),
            state(30, Established),
            epoll(101_429, &["IN", "ERR", "HUP", "RDHUP"]),
            with_errno(101_429, EventKind::Recv, "ECONNRESET"),
            eof(101_429),
            state(101_429, Close),
            so_error_none(101_429),
            with_errno(101_429, EventKind::Send, "EPIPE"),
            with_errno(121_610, EventKind::Send, "EPIPE"),
            eof(121_610),
            so_error_none(121_610),
            with_detail(121_610, EventKind::Close, "close(): the observer is done"),
        ],
        peer_side: visible(vec![
            sample(30, Some(Established), 500_708),
            sample(101_429, None, 0),
        ]),
        ..report(
            Role::Serve,
            "127.0.0.1:45759",
            "127.0.0.1:51642",
            Verdict::Rst,
        )
    }
}

/// `tcpbye serve --keepalive 4s,1s,2 --pcap` observing `connect --close drop`: four
/// silent seconds, two unanswered probes, then the kernel gives up and sends an RST.
fn drop_caught_by_keepalive() -> Report {
    use TcpState::*;
    const C: u32 = 3_105_879_102; // the client's initial sequence number
    const S: u32 = 786_313_589; // this side's
    Report {
        closer: Some(Closer::Peer),
        detected_by: Some(DetectedBy::Keepalive),
        detected_after_us: Some(6_113_899),
        detected_from: Some(DetectedFrom::LastActivity),
        predicted_us: Some(6_001_710),
        predicted_basis: Some(
            "keepalive: 4s idle + 2 probes × 1s after the last packet received".to_owned(),
        ),
        duration_us: 6_114_205,
        events: vec![
            event(175, EventKind::Accept),
            state(175, Established),
            epoll(6_113_899, &["IN", "ERR", "HUP", "RDHUP"]),
            with_errno(6_113_899, EventKind::Recv, "ETIMEDOUT"),
            eof(6_113_899),
            state(6_113_899, Close),
            with_detail(6_113_899, EventKind::Close, "close(): the observer is done"),
        ],
        // The dropped end stays ESTABLISHED: it answers nothing and its filter eats the RST.
        peer_side: visible(vec![sample(175, Some(Established), 1_274_982)]),
        packets: Some(vec![
            packet(0, false, &["SYN"], (C, 0), 0, None),
            packet(0, true, &["SYN", "ACK"], (S, C + 1), 0, None),
            packet(0, false, &["ACK"], (C + 1, S + 1), 0, None),
            packet(4_065_888, true, &["ACK"], (S, C + 1), 0, Some("keepalive")),
            packet(5_089_877, true, &["ACK"], (S, C + 1), 0, Some("keepalive")),
            packet(6_113_882, true, &["RST", "ACK"], (S + 1, C + 1), 0, None),
        ]),
        ..report(
            Role::Serve,
            "127.0.0.1:35541",
            "127.0.0.1:58194",
            Verdict::Timeout,
        )
    }
}

/// `connect --close half --after 50ms` to a server on another host: its socket
/// cannot be read, this side's can (it ends in TIME_WAIT).
fn half_close_peer_not_visible() -> Report {
    use TcpState::*;
    Report {
        close: Some(CloseMode::Half),
        closer: Some(Closer::Local),
        close_t_us: Some(61_903),
        detected_after_us: Some(0),
        detected_from: Some(DetectedFrom::LastActivity),
        duration_us: 94_540,
        bytes_received: 26,
        events: vec![
            event(11_842, EventKind::Connect),
            state(11_842, Established),
            with_detail(
                61_903,
                EventKind::Shutdown,
                "shutdown(SHUT_WR): FIN, still reading",
            ),
            state(61_941, FinWait1),
            epoll(73_716, &["IN"]),
            with_bytes(73_716, EventKind::Recv, 13),
            state(73_716, FinWait2),
            epoll(94_388, &["IN", "HUP", "RDHUP"]),
            with_bytes(94_388, EventKind::Recv, 13),
            eof(94_388),
            state(94_388, Close),
            with_detail(
                94_388,
                EventKind::Close,
                "close(): done after the peer's end",
            ),
        ],
        peer_side: Some(PeerSide {
            visible: false,
            note: Some(
                "not visible from here: the other end is not a socket of this host \
                 (or of this network namespace)"
                    .to_owned(),
            ),
            uid: None,
            states: Vec::new(),
            tcp_info: None,
        }),
        afterlife: Some(Afterlife {
            states: vec![SideSample {
                timer: Some(DiagTimer {
                    kind: DiagTimerKind::TimeWait,
                    expires_ms: 60000,
                    retransmits: 0,
                }),
                ..sample(94_489, Some(TimeWait), 0)
            }],
            ended: AfterlifeEnd::TimeWait,
            watched_us: 148,
        }),
        ..report(
            Role::Connect,
            "192.168.1.23:34102",
            "203.0.113.7:7007",
            Verdict::Fin,
        )
    }
}

// ---------------------------------------------------------------------------------
// Golden files and shape checks

/// Compares `rendered` with `tests/golden/ladder-NAME-{tty,ascii}.txt`, or rewrites
/// the file under `REFRESH`.
fn golden(name: &str, tty: bool, rendered: &str) {
    let style = if tty { "tty" } else { "ascii" };
    common::golden(&format!("ladder-{name}-{style}.txt"), REFRESH, rendered);
}

/// Renders both styles, checks their shape, and compares each with its golden file.
fn check(name: &str, report: &Report) -> (String, String) {
    let ascii = render(report, false, MAX_WIDTH);
    let tty = render(report, true, MAX_WIDTH);
    assert_eq!(
        ascii,
        render(report, false, MAX_WIDTH),
        "{name}: same input, other output"
    );
    for (text, is_tty) in [(&ascii, false), (&tty, true)] {
        shape(name, text, is_tty);
        golden(name, is_tty, text);
    }
    // On an 80-column terminal: narrower text columns, the same rows in the same order.
    let narrow = render(report, true, MIN_WIDTH);
    for line in narrow.lines() {
        let width = line.chars().count();
        assert!(
            width <= MIN_WIDTH,
            "{name} at 80: {width} columns: {line:?}"
        );
        assert!(
            !line.ends_with(' '),
            "{name} at 80: trailing space: {line:?}"
        );
    }
    let times = |text: &str| text.lines().filter_map(row_time).collect::<Vec<f64>>();
    assert_eq!(times(&narrow), times(&tty), "{name} at 80:\n{narrow}");
    // One layout in two alphabets: mapping the terminal glyphs back gives the ASCII text.
    let mapped: String = tty
        .chars()
        .map(|c| match c {
            '│' => '|',
            '⋮' => ':',
            '─' => '-',
            '▶' => '>',
            '◀' => '<',
            c => c,
        })
        .collect();
    assert_eq!(mapped, ascii, "{name}: the two styles differ beyond glyphs");
    (ascii, tty)
}

/// What every ladder must be: narrow enough, free of escape codes, ASCII when not a
/// terminal (`µ` comes from the shared duration format), rows in time order.
fn shape(name: &str, text: &str, tty: bool) {
    for line in text.lines() {
        let width = line.chars().count();
        assert!(width <= MAX_WIDTH, "{name}: {width} columns: {line:?}");
        assert!(!line.contains('\x1b'), "{name}: escape code in {line:?}");
        if !tty {
            assert!(
                line.chars().all(|c| c.is_ascii() || c == 'µ'),
                "{name}: not ASCII: {line:?}"
            );
        }
    }
    let times: Vec<f64> = text.lines().filter_map(row_time).collect();
    assert!(times.len() > 3, "{name}: too few rows:\n{text}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "{name}: rows out of time order: {times:?}\n{text}"
    );
}

/// The time of a row (`+12.3ms` → 12300.0 µs), `None` for other lines.
fn row_time(line: &str) -> Option<f64> {
    let stamp = line.trim_start().strip_prefix('+')?;
    let stamp = stamp.split_whitespace().next()?;
    let (number, scale) = if let Some(n) = stamp.strip_suffix("µs") {
        (n, 1.0)
    } else if let Some(n) = stamp.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (stamp.strip_suffix('s')?, 1e6)
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// The lines that are rows or elisions (not the header, headings or footer).
fn body(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with('+') || l.starts_with(':') || l.starts_with('⋮') || l.is_empty()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

fn is_elision(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with(": ") || l.starts_with("⋮ ")
}

/// The index of the first line containing `needle`; panics with the text if none.
fn find(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

// ---------------------------------------------------------------------------------
// The cases

#[test]
fn fin_ending_with_packets() {
    let (ascii, tty) = check("fin", &fin_with_packets());
    for (text, [to_right, to_left, life]) in [(&ascii, ['>', '<', '|']), (&tty, ['▶', '◀', '│'])]
    {
        let lines: Vec<&str> = text.lines().collect();
        // The FIN leaves right after the close action, left to right.
        let close = find(text, "close(): FIN");
        let fin = lines[close + 1];
        assert!(fin.contains("FIN|ACK"), "after the close: {fin:?}");
        assert!(
            fin.ends_with(&format!("{to_right}{life}")),
            "the FIN goes to the other end: {fin:?}"
        );
        // The other end sits in CLOSE_WAIT; its probe write comes back and meets an RST.
        let close_wait = find(text, "CLOSE_WAIT");
        let data = find(text, "PSH|ACK len 13");
        let rst = find(text, "RST");
        assert!(
            close < close_wait && close_wait < data && data < rst,
            "{text}"
        );
        assert!(lines[data].contains(&format!("{life}{to_left}")), "{text}");
        assert!(lines[rst].ends_with(&format!("{to_right}{life}")), "{text}");
        // This side's socket: FIN_WAIT1 after its close, then gone (in the left column).
        let gone = find(text, "gone");
        assert!(find(text, "FIN_WAIT1") < gone && rst < gone, "{text}");
        assert!(lines[gone].find("gone") < lines[gone].find(life));
        // Two readings of the other end in ESTABLISHED (before and after accept()) are
        // one state: one row on each side.
        assert_eq!(
            lines.iter().filter(|l| l.contains("ESTABLISHED")).count(),
            2,
            "{text}"
        );
        assert!(
            body(text).iter().all(|l| !is_elision(l)),
            "no long gap here"
        );
    }
    assert!(ascii.contains("verdict: fin, this side closed (fin)"));
}

#[test]
fn fin_seen_by_the_observer_with_packets() {
    let (ascii, tty) = check("fin-observed", &fin_observed_with_packets());
    for text in [&ascii, &tty] {
        // The handshake (clamped to +0µs) comes before accept().
        assert!(find(text, "SYN|ACK") < find(text, "accept()"));
        // The FIN arrives, this side wakes, reads EOF, probes; the write meets an RST.
        let order = [
            "FIN|ACK",
            "epoll IN|RDHUP",
            "recv 0 (EOF)",
            "send 13 bytes",
            "PSH|ACK len 13",
            "RST",
            "epoll IN|ERR|HUP|RDHUP",
            "gone",
            "send EPIPE",
        ]
        .map(|needle| find(text, needle));
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{text}");
    }
    // Three segments at +0µs keep the order they were captured in.
    assert!(find(&ascii, "-SYN-") < find(&ascii, "-SYN|ACK-"));
    assert!(find(&ascii, "-SYN|ACK-") < find(&ascii, "-ACK-"));
    assert!(ascii.contains("verdict: fin, detected 100.5ms after the last sign of life"));
}

#[test]
fn rst_ending_without_packets() {
    let (ascii, tty) = check("rst", &rst_observed());
    for text in [&ascii, &tty] {
        // No capture: nothing crosses the lane.
        assert!(!text.contains("->") && !text.contains("<-") && !text.contains('▶'));
        // The wake-up, then what recv() said, then the other end's socket is gone.
        let wake = find(text, "epoll IN|ERR|HUP|RDHUP");
        let reset = find(text, "recv ECONNRESET");
        let gone = find(text, "gone");
        assert!(wake < reset && reset < gone);
        assert!(
            text.lines()
                .nth(gone)
                .is_some_and(|l| l.contains("+101.4ms"))
        );
    }
    assert!(ascii.contains("detected 101.4ms after the last sign of life"));
}

#[test]
fn silent_drop_caught_by_keepalive() {
    let (ascii, tty) = check("drop-keepalive", &drop_caught_by_keepalive());
    for (text, quiet) in [(&ascii, ':'), (&tty, '⋮')] {
        let lines = body(text);
        let elisions: Vec<&str> = lines
            .iter()
            .filter(|l| is_elision(l))
            .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(elisions, ["4.1s", "1.0s", "1.0s"], "{text}");
        // The four quiet seconds sit between the start and the first probe.
        let first = lines.iter().position(|l| is_elision(l)).expect("elision");
        assert!(lines[first - 1].contains("+175µs"), "{text}");
        assert!(lines[first + 1].contains("ACK keepalive"), "{text}");
        assert!(lines[first].trim_start().starts_with(quiet));
        // Then the kernel gives up: RST out, ETIMEDOUT in; the dropped end never changed.
        assert!(find(text, "RST|ACK") < find(text, "recv ETIMEDOUT"));
        assert_eq!(text.matches("ESTABLISHED").count(), 2, "{text}");
    }
    assert!(ascii.contains("verdict: timeout by keepalive, detected 6.114s after"));
}

#[test]
fn peer_side_not_visible() {
    let (ascii, tty) = check("half-not-visible", &half_close_peer_not_visible());
    for (text, life) in [(&ascii, '|'), (&tty, '│')] {
        assert!(text.contains("not visible from here"), "{text}");
        // Nothing at all in the other end's column.
        for line in body(text) {
            let after = line.rsplit(life).next().unwrap_or("");
            let after = after.trim();
            assert!(
                after.is_empty() || is_elision(line),
                "other end's column not empty: {line:?}"
            );
        }
        assert!(find(text, "shutdown(SHUT_WR)") < find(text, "TIME_WAIT"));
    }
}

/// What the four recorded cases do not show: the other end's close action when
/// tcpbye ran both ends, a segment label too long for the lane, and dropped events.
#[test]
fn other_end_close_long_labels_and_dropped_events() {
    let mut report = rst_observed();
    report.close = Some(CloseMode::Rst);
    report.close_t_us = Some(101_429);
    report.events_dropped = 7;
    report.packets = Some(vec![packet(
        101_429,
        false,
        &["PSH", "ACK"],
        (1, 1),
        1448,
        Some("retransmission"),
    )]);
    for tty in [false, true] {
        let text = render(&report, tty, MAX_WIDTH);
        shape("edges", &text, tty);
        let life = if tty { '│' } else { '|' };
        // At one instant: the other end acts, its segment arrives, this side wakes.
        let closes = find(&text, "closes (rst)");
        let segment = find(&text, "PSH|ACK len 1448");
        let wake = find(&text, "epoll IN|ERR|HUP|RDHUP");
        assert!(closes < segment && segment < wake, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[closes]
                .rsplit(life)
                .next()
                .is_some_and(|r| r.contains("closes"))
        );
        // The note did not fit on the arrow: it stands in the sender's column.
        assert!(
            lines[segment]
                .rsplit(life)
                .next()
                .is_some_and(|r| r.trim() == "(retransmission)"),
            "{text}"
        );
        assert!(text.contains("(7 more events were not kept in the report)"));
    }
}
