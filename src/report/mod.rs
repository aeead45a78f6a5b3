//! The report model — the public JSON contract (see docs/json.md) — and one
//! renderer per output format, picked by [`Format`].

use std::net::SocketAddr;

use serde::Serialize;

use crate::sys::{TcpInfo, TcpState};
pub use crate::vocab::{CloseMode, DetectedBy, Verdict};

pub mod bench;
pub mod check;
pub mod inspect;
pub mod json;
pub mod lab;
pub mod ladder;
pub mod path;
pub mod progress;
mod summary;
pub mod table;

pub use summary::{Percentiles, Summary};

/// How reports are written: one renderer per variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// A table for people: boxed on a terminal, plain columns when piped.
    #[default]
    Table,
    /// The table, then a ladder diagram of the ending.
    Ladder,
    /// One line per connection.
    Brief,
    /// JSON Lines, one object per line (docs/json.md).
    Json,
}

/// Version of the JSON contract; bumped on any breaking change.
pub const SCHEMA: u32 = 1;

/// Which command produced the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Serve,
    Connect,
}

/// Which end closed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Closer {
    /// This side performed the close action (`close` says which).
    Local,
    /// The other side ended the connection.
    Peer,
}

/// Where `detected_after_us` is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectedFrom {
    /// The closer's action (known when tcpbye runs both ends, as in `lab`).
    Close,
    /// The arrival of the peer's FIN or RST, as the capture (`--pcap`) timed it.
    Packet,
    /// The last sign of life from the peer (data received, or the connection's
    /// start): for silent endings, which no packet announces.
    LastActivity,
}

/// What happened, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// connect() completed (or failed: errno).
    Connect,
    /// accept() returned this connection.
    Accept,
    /// An epoll wake-up; `epoll` holds its raw flags.
    Epoll,
    /// recv(): `bytes` read (0 = EOF) or `errno`.
    Recv,
    /// send(): `bytes` written or `errno`.
    Send,
    /// getsockopt(SO_ERROR): `errno`, or `detail` "0" when none. Reading it clears it.
    SoError,
    /// The TCP state (from TCP_INFO) changed to `state`.
    State,
    /// This side's close action (`detail` names the mode).
    Close,
    /// shutdown(SHUT_WR).
    Shutdown,
    /// A heartbeat ping was sent.
    Ping,
    /// The observation ended without the connection ending (`--timeout`).
    Timeout,
    /// A remark about what tcpbye did or saw (`detail`).
    Note,
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// µs since the connection's start (connect() call or accept()).
    pub t_us: u64,
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoll: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    pub fn new(t_us: u64, kind: EventKind) -> Self {
        Self {
            t_us,
            kind,
            epoll: None,
            bytes: None,
            errno: None,
            state: None,
            detail: None,
        }
    }
}

/// A TCP_INFO reading and when it was taken (µs since the connection's start).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub t_us: u64,
    pub tcp_info: TcpInfo,
}

/// One reading of a socket through `NETLINK_SOCK_DIAG` (what `ss -ti` reads),
/// on the report's clock. `state` is null once the socket is gone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideSample {
    pub t_us: u64,
    pub state: Option<TcpState>,
    /// The pending timer; in JSON as `ss -o` shows it, e.g. `timewait,59.9s,0`.
    #[serde(serialize_with = "crate::sys::DiagTimer::serialize_as_text")]
    pub timer: Option<crate::sys::DiagTimer>,
    pub recv_q: u32,
    pub send_q: u32,
    /// 0 when no file descriptor refers to the socket (orphan or TIME_WAIT).
    pub inode: u32,
    /// µs of the reading before this one, which still read as the one before
    /// in the list: what this reading shows came after it. Null for the first.
    pub prev_t_us: Option<u64>,
}

/// The other end of the connection, read through sock_diag when it is a socket
/// of this host (and network namespace).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSide {
    pub visible: bool,
    /// Why it is not visible, when it is not.
    pub note: Option<String>,
    pub uid: Option<u32>,
    /// Each change of its state (and the first reading).
    pub states: Vec<SideSample>,
    /// Its TCP_INFO at the last reading that carried one.
    pub tcp_info: Option<TcpInfo>,
}

/// How following this side's own socket after its close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterlifeEnd {
    /// The kernel freed the socket.
    Gone,
    /// It reached TIME_WAIT, where it stays for 60 s on Linux.
    TimeWait,
    /// `--linger-watch` ran out first.
    WatchEnded,
}

/// This side's socket after its close action, when no descriptor can show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Afterlife {
    pub states: Vec<SideSample>,
    pub ended: AfterlifeEnd,
    /// µs from the close action to the end of the watch.
    pub watched_us: u64,
}

/// A TCP flag set on a captured segment; in JSON its name, `"FIN"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TcpFlag {
    Syn,
    Fin,
    Rst,
    Psh,
    Ack,
}

impl TcpFlag {
    /// Every flag a report names, in the order a segment lists them.
    pub const ALL: [TcpFlag; 5] = [Self::Syn, Self::Fin, Self::Rst, Self::Psh, Self::Ack];

    pub fn name(self) -> &'static str {
        match self {
            Self::Syn => "SYN",
            Self::Fin => "FIN",
            Self::Rst => "RST",
            Self::Psh => "PSH",
            Self::Ack => "ACK",
        }
    }

    /// The flag named `name` (`"FIN"`), if a report names it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What the kernel was doing when it sent a captured segment; in JSON kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PacketNote {
    /// A keepalive probe: one byte, or none, below what was already sent.
    Keepalive,
    /// A probe of a closed receive window (the persist timer).
    ZeroWindowProbe,
    /// The loss-probe timer re-sending the last segment (RFC 8985).
    TailLossProbe,
    /// Data, SYN or FIN sent again.
    Retransmission,
}

impl PacketNote {
    pub const ALL: [PacketNote; 4] = [
        Self::Keepalive,
        Self::ZeroWindowProbe,
        Self::TailLossProbe,
        Self::Retransmission,
    ];

    /// The note named `name` (`"keepalive"`), if a report names it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Keepalive => "keepalive",
            Self::ZeroWindowProbe => "zero-window-probe",
            Self::TailLossProbe => "tail-loss-probe",
            Self::Retransmission => "retransmission",
        }
    }
}

/// One captured TCP segment of the connection (`--pcap`), on the report's clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packet {
    pub t_us: u64,
    /// Sent by this side (else by the other end).
    pub outgoing: bool,
    /// TCP flags present, e.g. `["FIN", "ACK"]`.
    pub flags: Vec<TcpFlag>,
    pub seq: u32,
    pub ack: u32,
    /// Payload bytes.
    pub len: u32,
    /// Which kernel mechanism sent the segment, when tcpbye can tell: `keepalive`,
    /// `zero-window-probe`, `tail-loss-probe`, `retransmission` (see `capture::Classifier`).
    pub note: Option<PacketNote>,
}

/// One report: one connection, from one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub kind: &'static str,
    pub role: Role,
    pub local: Option<SocketAddr>,
    pub peer: SocketAddr,
    /// The close mode the closer used, when tcpbye closed (this side, or both sides in `lab`).
    pub close: Option<CloseMode>,
    pub closer: Option<Closer>,
    /// When the closer acted, on this report's timeline (µs), when known: this
    /// side's own action, or the other end's when tcpbye runs both (`lab`).
    pub close_t_us: Option<u64>,
    pub verdict: Verdict,
    /// For `rst`: whether the peer's FIN came before its RST; null for other verdicts.
    pub fin_before_rst: Option<bool>,
    pub detected_by: Option<DetectedBy>,
    /// µs from `detected_from` to the moment this side knew.
    pub detected_after_us: Option<u64>,
    pub detected_from: Option<DetectedFrom>,
    /// µs from the peer's last data (or the connection's start) until this side
    /// saw its end: how long the peer had been quiet, not a detection latency.
    pub peer_idle_us: Option<u64>,
    /// The detection time the settings and the kernel's values predict.
    pub predicted_us: Option<u64>,
    /// What the prediction assumed.
    pub predicted_basis: Option<String>,
    /// µs from the connection's start to the end of the report.
    pub duration_us: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub events: Vec<Event>,
    /// Events left out of `events` to keep a report bounded.
    pub events_dropped: u64,
    /// The last TCP_INFO snapshot, taken before the socket was closed.
    pub tcp_info: Option<TcpInfo>,
    /// TCP_INFO at connect/accept, at each wake-up, when a sample changed, and at the end.
    pub snapshots: Vec<Snapshot>,
    /// Snapshots left out of `snapshots` to keep a report bounded.
    pub snapshots_dropped: u64,
    /// The other end's socket through sock_diag; null with `--no-peer-side`.
    pub peer_side: Option<PeerSide>,
    /// This side's socket after its own close; null when this side did not close.
    pub afterlife: Option<Afterlife>,
    /// The connection's segments in both directions; null without `--pcap`.
    pub packets: Option<Vec<Packet>>,
    /// Captured segments left out of `packets` to keep a report bounded.
    pub packets_dropped: u64,
    /// Bytes this side's close found unread: its `fin` or `rst-unread` then went
    /// out as an RST. Not in JSON (the close event's `detail` says it).
    #[serde(skip)]
    pub unread_at_close: usize,
}

impl Report {
    /// A report of a connection with nothing observed: no events, readings or
    /// packets, every figure zero or null. What a judge's input is built from
    /// when the facts come from elsewhere (`check --pid`, tests).
    pub fn bare(role: Role, peer: SocketAddr, verdict: Verdict) -> Self {
        Self {
            schema: SCHEMA,
            kind: "connection",
            role,
            local: None,
            peer,
            close: None,
            closer: None,
            close_t_us: None,
            verdict,
            fin_before_rst: None,
            detected_by: None,
            detected_after_us: None,
            detected_from: None,
            peer_idle_us: None,
            predicted_us: None,
            predicted_basis: None,
            duration_us: 0,
            bytes_sent: 0,
            bytes_received: 0,
            events: Vec::new(),
            events_dropped: 0,
            tcp_info: None,
            snapshots: Vec::new(),
            snapshots_dropped: 0,
            peer_side: None,
            afterlife: None,
            packets: None,
            packets_dropped: 0,
            unread_at_close: 0,
        }
    }

    /// The one-line reason this report fails the expectations, if it does.
    pub fn expectation_miss(
        &self,
        expect: &[Verdict],
        within: Option<std::time::Duration>,
    ) -> Option<String> {
        if !expect.is_empty() && !expect.contains(&self.verdict) {
            let wanted: Vec<&str> = expect.iter().map(|v| v.name()).collect();
            return Some(format!(
                "{} {}: verdict {}, expected {}",
                self.role_name(),
                self.peer,
                self.verdict,
                wanted.join(" or ")
            ));
        }
        if let Some(within) = within {
            let limit = micros(within);
            let unmeasured = if matches!(self.verdict, Verdict::Fin | Verdict::Rst) {
                " (the arrival of the peer's FIN or RST is timed only with --pcap)"
            } else {
                ""
            };
            match self.detected_after_us {
                Some(us) if us <= limit => {}
                Some(us) => {
                    return Some(format!(
                        "{} {}: detected after {}, expected within {}",
                        self.role_name(),
                        self.peer,
                        fmt_us(us),
                        fmt_us(limit)
                    ));
                }
                None => {
                    return Some(format!(
                        "{} {}: verdict {} has no detection time{unmeasured}, expected within {}",
                        self.role_name(),
                        self.peer,
                        self.verdict,
                        fmt_us(limit)
                    ));
                }
            }
        }
        None
    }

    fn role_name(&self) -> &'static str {
        match self.role {
            Role::Serve => "serve",
            Role::Connect => "connect",
        }
    }
}

/// Human text without trailing spaces on any line (tables pad their last column).
pub fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        out.push_str(body.trim_end());
        out.push_str(newline);
    }
    out
}

/// The widest line of `text`, in characters (what a terminal shows for these tables).
pub fn text_width(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// `text` wrapped at spaces into lines of at most `width` characters (a word
/// longer than that gets a line of its own).
pub fn wrap(text: &str, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines.join("\n")
}

/// Whether the locale takes UTF-8, from `LC_ALL`, `LC_CTYPE` and `LANG` in the
/// order the C library reads them (the first one set and not empty decides); none
/// set is the C locale, which is ASCII.
pub fn locale_is_utf8(lc_all: Option<&str>, lc_ctype: Option<&str>, lang: Option<&str>) -> bool {
    [lc_all, lc_ctype, lang]
        .into_iter()
        .flatten()
        .find(|v| !v.is_empty())
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

/// Human text for a terminal whose locale is not UTF-8: every other character
/// replaced by one ASCII character (`µs` → `us`, `→` → `>`, box drawing → `+-|`),
/// so columns laid out by character stay aligned and no line grows.
pub fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_ascii() => c,
            'µ' => 'u',
            '→' | '▶' | '≥' | '»' => '>',
            '←' | '◀' | '≤' | '«' => '<',
            '↔' | '—' | '–' | '·' | '─' | '━' | '┄' | '┈' => '-',
            '×' => 'x',
            '…' => '.',
            '≈' => '~',
            '⋮' | '┆' | '┊' | '│' | '┃' => '|',
            '═' => '=',
            '²' => '2',
            '³' => '3',
            '┌' | '┐' | '└' | '┘' | '├' | '┤' | '┬' | '┴' | '┼' | '╞' | '╡' | '╪' | '╭' | '╮'
            | '╯' | '╰' => '+',
            _ => '?',
        })
        .collect()
}

/// A duration in whole µs, as the JSON has it (saturating).
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Formats µs for people: `87µs`, `12.3ms`, `4.002s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.3}s", us as f64 / 1e6),
    }
}

/// A time printed no more exactly than it is known: as [`fmt_us`] when its
/// resolution (the span before it in which the moment lies) is finer than
/// what that prints, else as the span, `4.1–6.2ms`, or `≤6.2ms` from 0.
pub fn fmt_within(us: u64, resolution: Option<u64>) -> String {
    let printed_step = match us {
        0..1_000 => 1,
        1_000..1_000_000 => 100,
        _ => 1_000,
    };
    let Some(res) = resolution.filter(|r| *r > printed_step) else {
        return fmt_us(us);
    };
    let high = fmt_us(us);
    match us.checked_sub(res).filter(|low| *low > 0) {
        None => format!("≤{high}"),
        Some(low) => {
            let low = fmt_us(low);
            let unit = |s: &str| {
                s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
                    .to_owned()
            };
            if unit(&low) == unit(&high) {
                format!("{}–{high}", low.trim_end_matches(unit(&low).as_str()))
            } else {
                format!("{low}–{high}")
            }
        }
    }
}

/// µs as people read a long wait: `1h05m`, `16m14s`, else as [`fmt_us`] does.
pub fn fmt_secs(us: u64) -> String {
    let s = us / 1_000_000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        fmt_us(us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_printed_as_exactly_as_it_is_known() {
        assert_eq!(fmt_within(6_167, Some(1)), "6.2ms");
        assert_eq!(fmt_within(6_167, None), "6.2ms");
        assert_eq!(fmt_within(6_167, Some(100)), "6.2ms");
        assert_eq!(fmt_within(6_167, Some(2_000)), "4.2–6.2ms");
        assert_eq!(fmt_within(6_167, Some(6_167)), "≤6.2ms");
        assert_eq!(fmt_within(304_000, Some(303_660)), "340µs–304.0ms");
        assert_eq!(fmt_within(184, Some(184)), "≤184µs");
        assert_eq!(fmt_within(2_500_000, Some(1_000)), "2.500s");
    }

    #[test]
    fn tidy_and_wrap() {
        assert_eq!(tidy("a  \n b \n\n"), "a\n b\n\n");
        assert_eq!(tidy("x "), "x");
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc");
        assert_eq!(wrap("averylongword b", 4), "averylongword\nb");
        assert_eq!(text_width("ab\nabcd\n"), 4);
    }

    #[test]
    fn ascii_keeps_every_line_as_wide() {
        let text = "┌──┬──┐\n│ a┆ b│\n+87µs ok×2 → EPIPE · ≤ 1.5× — … ↔ ≈45s ⋮";
        let plain = ascii(text);
        assert!(plain.is_ascii(), "{plain}");
        assert_eq!(
            plain,
            "+--+--+\n| a| b|\n+87us okx2 > EPIPE - < 1.5x - . - ~45s |"
        );
        for (a, b) in text.lines().zip(plain.lines()) {
            assert_eq!(a.chars().count(), b.chars().count());
        }
    }

    #[test]
    fn utf8_locale_from_the_first_variable_set() {
        assert!(locale_is_utf8(None, None, Some("en_US.UTF-8")));
        assert!(locale_is_utf8(None, Some("C.utf8"), Some("C")));
        assert!(!locale_is_utf8(Some("C"), None, Some("en_US.UTF-8")));
        assert!(!locale_is_utf8(None, None, Some("POSIX")));
        assert!(!locale_is_utf8(None, None, None));
        assert!(locale_is_utf8(Some(""), None, Some("de_DE.UTF-8")));
        assert!(!locale_is_utf8(None, None, Some("en_US.ISO-8859-1")));
    }

    #[test]
    fn human_durations() {
        assert_eq!(fmt_us(87), "87µs");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(4_002_000), "4.002s");
    }
}
