//! `tcpbye check`: how the program under test reacted to each ending — the
//! model (`check-case`, `check-summary` in docs/json.md) and the matrix for
//! people. The judgement that turns a report into a case is in [`judge`].

use std::net::SocketAddr;

use serde::Serialize;

use super::{SCHEMA, SideSample, fmt_us, fmt_within};
use crate::vocab::CloseMode;

/// What the program did after tcpbye ended its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reaction {
    /// It closed its socket: sent a FIN (LAST_ACK, FIN_WAIT), or its socket lost
    /// its file (inode 0), or it released the descriptor of a dead socket.
    Closed,
    /// Its connection ended in an RST after `fin`/`half`: its socket vanished without
    /// a FIN, or tcpbye read ECONNRESET. The RST is the program's own abort, or
    /// tcpbye's kernel answering data the program wrote after tcpbye's `close()`.
    Reset,
    /// Its kernel ended the connection (keepalive, TCP_USER_TIMEOUT, retransmissions,
    /// or an RST answering a probe) while the program held the socket.
    KernelGaveUp,
    /// CLOSE_WAIT still held at the end of the wait, or a dead socket's descriptor still held.
    Leaked,
    /// Still ESTABLISHED at the end of the wait.
    Unnoticed,
    /// `check --listen`: the client closed its socket (or its kernel ended it) and
    /// opened a new connection (`reconnected_after_us`).
    Reconnected,
    /// tcpbye could not judge this mode (`evidence` says why).
    NotJudged,
}

impl Reaction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Reset => "reset",
            Self::KernelGaveUp => "kernel-gave-up",
            Self::Leaked => "leaked",
            Self::Unnoticed => "unnoticed",
            Self::Reconnected => "reconnected",
            Self::NotJudged => "not-judged",
        }
    }

    /// The program noticed the ending (in some way) within the wait.
    pub fn noticed(self) -> bool {
        matches!(
            self,
            Self::Closed | Self::Reset | Self::KernelGaveUp | Self::Reconnected
        )
    }
}

/// What the program's descriptor did, from `socket:[INODE]` under `/proc/*/fd`,
/// once its socket had left sock_diag's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    pub inode: u32,
    /// Processes seen holding it.
    pub pids: Vec<u32>,
    /// µs from tcpbye's action to the first look that no longer found it.
    pub released_after_us: Option<u64>,
    /// µs between the last look that still found it (or the action) and the
    /// first that did not: the release came within that span before
    /// `released_after_us`.
    pub released_resolution_us: Option<u64>,
    /// Still held at the last look, at the end of the wait.
    pub held_at_end: bool,
}

/// The keepalive sysctls (`/proc/sys/net/ipv4/tcp_keepalive_{time,intvl,probes}`):
/// another process's own TCP_KEEPINTVL/TCP_KEEPCNT are not visible, these are
/// what a socket uses unless it set its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepaliveSysctls {
    pub time_s: u64,
    pub intvl_s: u64,
    pub probes: u64,
}

impl KeepaliveSysctls {
    pub fn read() -> Self {
        let read = |name: &str, default: u64| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(default)
        };
        Self {
            time_s: read("tcp_keepalive_time", 7200),
            intvl_s: read("tcp_keepalive_intvl", 75),
            probes: read("tcp_keepalive_probes", 9),
        }
    }
}

/// One mode's result: `{"kind":"check-case", …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckCase {
    pub schema: u32,
    pub kind: &'static str,
    pub mode: CloseMode,
    /// The program's process (the one holding its socket) and its name
    /// (`/proc/PID/comm`), when found.
    pub pid: Option<u32>,
    /// Its descriptor of the connection (`/proc/PID/fd/N`), when found.
    pub fd: Option<i32>,
    pub comm: Option<String>,
    /// The connection: tcpbye's address and the program's, to match a row with
    /// `ss`, a capture or the program's log.
    pub tcpbye_addr: Option<SocketAddr>,
    pub program_addr: Option<SocketAddr>,
    /// What the program could observe of this ending.
    pub saw: &'static str,
    pub reaction: Reaction,
    /// µs from tcpbye's action to the program's reaction (closed, reset, kernel-gave-up).
    pub noticed_after_us: Option<u64>,
    /// What `noticed_after_us` was read from; null when not noticed.
    pub noticed_by: Option<TimedBy>,
    /// µs from tcpbye's action until the program read the EOF (`recv_q` 1→0 in
    /// CLOSE_WAIT), when that was seen apart from its close.
    pub read_eof_after_us: Option<u64>,
    /// `check --listen`: µs from tcpbye's action until the client's next connection
    /// was accepted; null when none came within the wait (and always for `check ADDR`).
    pub reconnected_after_us: Option<u64>,
    /// µs from tcpbye's action until the program would notice; null = never or unknown.
    pub would_notice_after_us: Option<u64>,
    /// How exactly each of those times is known: the moment lies within this
    /// many µs before the time given (null with the time).
    pub resolution_us: Resolution,
    /// The prediction in words, with what it rests on.
    pub prediction: String,
    /// What the judgement rests on.
    pub evidence: String,
    /// One line on how to close the gap, for a weak row.
    pub advice: Option<String>,
    /// The program's socket through sock_diag, on the connection's clock.
    pub states: Vec<SideSample>,
    /// µs on the connection's clock at which tcpbye acted.
    pub action_t_us: Option<u64>,
    pub descriptor: Option<Descriptor>,
    /// The program's own options on its socket, read through a duplicate of its
    /// descriptor when that is allowed (root, or the same user under ptrace's rules).
    pub settings: Option<ProgramSettings>,
    /// Where the prediction's keepalive interval and count came from; null when
    /// no prediction needed them.
    pub settings_from: Option<SettingsFrom>,
}

/// What a time was read from, which says how exact it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimedBy {
    /// A captured segment: the kernel's timestamp of the packet (1 µs).
    Wire,
    /// tcpbye's own socket: when its event loop read the EOF, the error or the
    /// new connection (1 µs; its wake-up latency comes on top).
    TcpbyeSocket,
    /// A sock_diag reading of the program's socket: between the reading before
    /// (or the action) and this one.
    #[serde(rename = "sock_diag")]
    SockDiag,
    /// A look at the program's descriptor (`/proc/PID/fd/N`): between the last
    /// look that still found it (or the action) and the first that did not.
    Descriptor,
    /// Its next connection (`check --listen`): it had noticed by then.
    Reconnect,
}

impl TimedBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Wire => "wire",
            Self::TcpbyeSocket => "tcpbye-socket",
            Self::SockDiag => "sock_diag",
            Self::Descriptor => "descriptor",
            Self::Reconnect => "reconnect",
        }
    }
}

/// The resolution of each of a case's times, in µs: the moment lies between the
/// time minus this and the time. Null where the time is null.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub noticed: Option<u64>,
    pub read_eof: Option<u64>,
    pub reconnected: Option<u64>,
    pub would_notice: Option<u64>,
}

/// The program's own socket options (`SO_KEEPALIVE`, `TCP_KEEPIDLE/INTVL/CNT`,
/// `TCP_USER_TIMEOUT`, `SO_RCVTIMEO/SO_SNDTIMEO`) and which descriptor held them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProgramSettings {
    pub pid: u32,
    pub fd: i32,
    /// Null when `SO_KEEPALIVE` is off.
    pub keepalive: Option<KeepaliveSettings>,
    /// Null when off.
    pub user_timeout_ms: Option<u64>,
    pub rcvtimeo_ms: Option<u64>,
    pub sndtimeo_ms: Option<u64>,
}

/// Keepalive as the socket has it: idle time, interval and probe count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepaliveSettings {
    pub idle_s: u64,
    pub intvl_s: u64,
    pub cnt: u64,
}

impl KeepaliveSettings {
    /// µs from the start of idleness until keepalive gives up: idle + cnt × intvl.
    pub fn gives_up_after_us(self) -> u64 {
        (self.idle_s + self.cnt * self.intvl_s) * 1_000_000
    }
}

impl ProgramSettings {
    pub fn from_socket(pid: u32, fd: i32, s: crate::sys::SocketSettings) -> Self {
        let on = |v: u64| (v > 0).then_some(v);
        Self {
            pid,
            fd,
            keepalive: s.keepalive.then_some(KeepaliveSettings {
                idle_s: s.keepidle_s,
                intvl_s: s.keepintvl_s,
                cnt: s.keepcnt,
            }),
            user_timeout_ms: on(s.user_timeout_ms),
            rcvtimeo_ms: on(s.rcvtimeo_ms),
            sndtimeo_ms: on(s.sndtimeo_ms),
        }
    }
}

/// Where a prediction's keepalive interval and probe count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingsFrom {
    /// The program's own socket, read through a duplicate of its descriptor.
    Socket,
    /// The `tcp_keepalive_*` sysctls: its own options could not be read.
    Sysctls,
    /// The probes seen on the wire (a program on another host).
    Wire,
}

/// After every case: `{"kind":"check-summary", …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSummary {
    pub schema: u32,
    pub kind: &'static str,
    /// `"server"` (`check ADDR`), `"client"` (`check --listen ADDR`) or
    /// `"running"` (`check --pid PID`).
    pub program: &'static str,
    /// The server's address, or the address `check --listen` listened on.
    pub target: String,
    pub wait_us: u64,
    /// `--wait-silent`: how long the silent endings were watched; null without it.
    pub wait_silent_us: Option<u64>,
    pub elapsed_us: u64,
    pub cases: usize,
    pub noticed: usize,
    pub leaked: usize,
    pub unnoticed: usize,
    pub not_judged: usize,
    /// `check --listen`: cases after which the client connected again.
    pub reconnected: usize,
    pub keepalive_sysctls: KeepaliveSysctls,
    /// Default endings not tried for want of a privilege (drop and reboot without
    /// CAP_NET_ADMIN).
    pub left_out: Vec<CloseMode>,
    /// Silent endings whose connection the program still held after `--wait`,
    /// which tcpbye then reset for it.
    pub reset_after_wait: Vec<CloseMode>,
    /// Silent endings whose connection the program still holds at the end
    /// (`--leave-open`, or the reset failed).
    pub left_open: Vec<CloseMode>,
    /// `check --pid`: silent endings whose filter tcpbye took off the program's
    /// socket after the wait, which it still held (the cable plugged back in).
    pub unfiltered_after_wait: Vec<CloseMode>,
    /// Each expectation missed, in words; empty when all were met.
    pub misses: Vec<String>,
}

/// Every case and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub cases: Vec<CheckCase>,
    pub summary: CheckSummary,
}

/// `check --pid --dry-run`: the connection one mode would end, and how; or why none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckChoice {
    pub schema: u32,
    pub kind: &'static str,
    pub mode: CloseMode,
    pub pid: u32,
    /// The program's descriptor of the connection; null when none was chosen.
    pub fd: Option<i32>,
    pub program_addr: Option<SocketAddr>,
    pub peer_addr: Option<SocketAddr>,
    /// Where the peer's socket is: `"this-host"` (its holder below) or `"elsewhere"`.
    pub peer: Option<&'static str>,
    pub peer_pid: Option<u32>,
    pub peer_fd: Option<i32>,
    /// What tcpbye would do, in words; null when no connection was chosen.
    pub action: Option<String>,
    /// Why this connection, or why none.
    pub why: String,
}

/// `check --pid --dry-run` for people: one paragraph per mode, wrapped to `width`.
pub fn render_choices(choices: &[CheckChoice], width: usize) -> String {
    let mut out = String::new();
    for c in choices {
        let line = match (c.fd, c.program_addr, c.peer_addr) {
            (Some(fd), Some(program), Some(peer)) => {
                let holder = match (c.peer_pid, c.peer_fd) {
                    (Some(pid), Some(fd)) => format!(" (its socket: pid {pid} fd {fd})"),
                    _ => String::new(),
                };
                format!(
                    "{}: fd {fd} {program} → {peer}{holder}: {}; {}",
                    c.mode,
                    c.action.as_deref().unwrap_or("-"),
                    c.why
                )
            }
            _ => format!("{}: no connection: {}", c.mode, c.why),
        };
        out.push_str(&super::wrap(&line, width));
        out.push('\n');
    }
    out.push_str("dry run: nothing was touched\n");
    super::tidy(&out)
}

/// What the program under test could observe of each ending.
pub fn saw(mode: CloseMode) -> &'static str {
    match mode {
        CloseMode::Fin => "EOF (FIN)",
        CloseMode::Half => "EOF (FIN), tcpbye still reading",
        CloseMode::Rst | CloseMode::RstUnread => "ECONNRESET (RST)",
        CloseMode::Drop => "nothing: silence",
        CloseMode::Reboot => "nothing until it sends, then RST",
        CloseMode::Hang => "nothing: its data still ACKed",
        CloseMode::None => "-",
    }
}

/// A case that could not be judged, and why.
pub fn not_judged(mode: CloseMode, why: String) -> CheckCase {
    CheckCase {
        schema: SCHEMA,
        kind: "check-case",
        mode,
        pid: None,
        fd: None,
        comm: None,
        tcpbye_addr: None,
        program_addr: None,
        saw: saw(mode),
        reaction: Reaction::NotJudged,
        noticed_after_us: None,
        noticed_by: None,
        read_eof_after_us: None,
        reconnected_after_us: None,
        would_notice_after_us: None,
        resolution_us: Resolution::default(),
        prediction: "-".into(),
        evidence: why,
        advice: None,
        states: Vec::new(),
        action_t_us: None,
        descriptor: None,
        settings: None,
        settings_from: None,
    }
}

/// The matrix: one row per mode with its reaction and timings, and under each
/// row, wrapped to `width`, what the program saw, the prediction, the evidence
/// and the advice; then the summary line.
pub fn render(result: &CheckResult, width: usize) -> String {
    let client = reconnects(&result.summary);
    let mut header = vec!["mode", "reaction", "after", "read EOF"];
    if client {
        header.push("reconnected");
    }
    let mut t = super::table::Columns::new(&header);
    for c in &result.cases {
        let mut row = vec![
            c.mode.to_string(),
            c.reaction.name().to_owned(),
            timed(c.noticed_after_us, c.resolution_us.noticed),
            timed(c.read_eof_after_us, c.resolution_us.read_eof),
        ];
        if client {
            row.push(timed(c.reconnected_after_us, c.resolution_us.reconnected));
        }
        let mut under = vec![format!("saw: {}", c.saw)];
        if !matches!(c.prediction.as_str(), "-" | "noticed") {
            under.push(format!("would notice: {}", c.prediction));
        }
        under.push(format!("evidence: {}", c.evidence));
        under.extend(c.advice.as_ref().map(|a| format!("advice: {a}")));
        t.row(row, under);
    }
    let mut out = t.render(width);
    out.push_str(&super::wrap(&summary_line(&result.summary), width));
    out.push('\n');
    super::tidy(&out)
}

/// `check --brief`: one line per mode (its reaction and when), then the summary line.
pub fn brief(result: &CheckResult, width: usize) -> String {
    let client = reconnects(&result.summary);
    let mode_width = result
        .cases
        .iter()
        .map(|c| c.mode.name().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in &result.cases {
        let mut line = format!("{:<mode_width$}  {}", c.mode.name(), c.reaction.name());
        let res = c.resolution_us;
        if let Some(us) = c.noticed_after_us {
            line.push_str(&format!(" after {}", fmt_within(us, res.noticed)));
        }
        if let Some(us) = c.read_eof_after_us {
            line.push_str(&format!(
                ", read EOF after {}",
                fmt_within(us, res.read_eof)
            ));
        }
        if client && let Some(us) = c.reconnected_after_us {
            line.push_str(&format!(
                ", reconnected after {}",
                fmt_within(us, res.reconnected)
            ));
        }
        if !c.reaction.noticed() {
            match c.would_notice_after_us {
                Some(us) => line.push_str(&format!(", would notice after {}", fmt_us(us))),
                None if c.reaction == Reaction::Unnoticed => line.push_str(", would not notice"),
                None => {}
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&super::wrap(&summary_line(&result.summary), width));
    out.push('\n');
    out
}

/// Whether the program's reconnections are watched: a client's (`--listen`) or
/// a running program's (`--pid`).
fn reconnects(s: &CheckSummary) -> bool {
    s.program != "server"
}

/// A table cell: the time as exactly as it is known, or `-`.
fn timed(us: Option<u64>, resolution: Option<u64>) -> String {
    us.map_or_else(|| "-".to_owned(), |us| fmt_within(us, resolution))
}

/// What was watched, and how many modes the program noticed.
fn summary_line(s: &CheckSummary) -> String {
    let client = s.program == "client";
    let reconnected = if reconnects(s) {
        format!(", {} reconnected", s.reconnected)
    } else {
        String::new()
    };
    format!(
        "{}{}: {} modes in {}, watched {}{} after each ending: {} noticed{reconnected}, {} leaked, {} unnoticed, {} not judged",
        if client { "clients of " } else { "" },
        s.target,
        s.cases,
        fmt_us(s.elapsed_us),
        fmt_us(s.wait_us),
        s.wait_silent_us.map_or(String::new(), |w| format!(
            " ({} the silent ones)",
            fmt_us(w)
        )),
        s.noticed,
        s.leaked,
        s.unnoticed,
        s.not_judged
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_of_a_time_serializes_as_its_name() {
        for by in [
            TimedBy::Wire,
            TimedBy::TcpbyeSocket,
            TimedBy::SockDiag,
            TimedBy::Descriptor,
            TimedBy::Reconnect,
        ] {
            let json = serde_json::to_string(&by).expect("serialize");
            assert_eq!(json, format!("\"{}\"", by.name()));
        }
    }
}
