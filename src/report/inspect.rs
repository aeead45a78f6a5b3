//! `tcpbye inspect`: a running program's TCP connections — the model
//! (`inspect-conn`, `inspect-summary` in docs/json.md) and the table for people,
//! one line per peer. The judgement that fills a connection's predictions is in
//! `judge::inspect`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::check::KeepaliveSettings;
use super::{fmt_secs, fmt_us};
use crate::sys::{DiagTimer, TcpState};

/// One value per silent ending: a pulled cable, a rebooted peer, a hung peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endings<T> {
    pub drop: T,
    pub reboot: T,
    pub hang: T,
}

/// What is left behind: a connection the program no longer uses but still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leak {
    /// The peer closed (its FIN came) and the program has not: the kernel keeps
    /// a `CLOSE_WAIT` socket until the program closes it.
    CloseWait,
    /// The kernel ended the connection (an RST, a timeout) and the socket is gone
    /// from its tables, but the program still holds its descriptor.
    DeadDescriptor,
}

impl Leak {
    pub fn name(self) -> &'static str {
        match self {
            Self::CloseWait => "close-wait",
            Self::DeadDescriptor => "dead-descriptor",
        }
    }
}

/// One TCP connection of the program: `{"kind":"inspect-conn", …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectConn {
    pub schema: u32,
    pub kind: &'static str,
    pub pid: u32,
    /// The program's descriptor number (the lowest, when it holds several).
    pub fd: i32,
    pub inode: u32,
    pub local: Option<SocketAddr>,
    /// Null for a dead descriptor: a closed socket no longer tells its peer.
    pub remote: Option<SocketAddr>,
    pub state: TcpState,
    /// Bytes received and not yet read by the program.
    pub recv_q: u32,
    /// Bytes sent and not yet acknowledged by the peer.
    pub send_q: u32,
    /// The timer pending on the socket (sock_diag), as `ss -o` shows it.
    #[serde(serialize_with = "DiagTimer::serialize_as_text")]
    pub timer: Option<DiagTimer>,
    /// Whether the options below were read from the socket itself (a duplicate
    /// of its descriptor); false when it closed before they could be.
    pub options_read: bool,
    /// Null when `SO_KEEPALIVE` is off; else the values in effect (the socket's
    /// own, or its network namespace's sysctls where it set none).
    pub keepalive: Option<KeepaliveSettings>,
    /// `TCP_USER_TIMEOUT`; null when off.
    pub user_timeout_ms: Option<u64>,
    /// `SO_RCVTIMEO`, `SO_SNDTIMEO`; null when off.
    pub rcvtimeo_ms: Option<u64>,
    pub sndtimeo_ms: Option<u64>,
    /// `TCP_INFO`: ms since data last arrived, and since the peer's last ACK.
    pub last_data_recv_ms: Option<u32>,
    pub last_ack_recv_ms: Option<u32>,
    /// µs from now until the program's kernel would notice each silent ending if
    /// it happened now; null where no kernel mechanism would.
    pub would_notice_after_us: Endings<Option<u64>>,
    /// Each prediction in words, with what it rests on.
    pub prediction: Endings<String>,
    pub leak: Option<Leak>,
    /// `close-wait`: ms since the peer's last ACK, which its FIN carried: how
    /// long the socket has been in CLOSE_WAIT, at least (exactly, unless
    /// segments came after the FIN).
    pub close_wait_ms: Option<u32>,
    /// The leak in words.
    pub leak_detail: Option<String>,
}

/// After the connections: `{"kind":"inspect-summary", …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectSummary {
    pub schema: u32,
    pub kind: &'static str,
    /// The processes inspected: the one asked for, or those holding `--port`'s socket.
    pub pids: Vec<u32>,
    /// Their names (`/proc/PID/comm`), in the same order.
    pub names: Vec<String>,
    /// `--port`: the local port whose processes were inspected.
    pub port: Option<u16>,
    /// Whether their network namespace is another one than tcpbye's (entered for sock_diag).
    pub other_netns: bool,
    pub connections: usize,
    /// Lines of the table: connections grouped by peer.
    pub peers: usize,
    /// Listening sockets (not counted as connections).
    pub listening: Vec<SocketAddr>,
    pub close_wait: usize,
    pub dead_descriptors: usize,
    /// Descriptors of other sockets: not TCP (UNIX, UDP, netlink), or TCP and
    /// never connected.
    pub other_sockets: usize,
    pub elapsed_us: u64,
}

/// Every connection and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectResult {
    pub conns: Vec<InspectConn>,
    pub summary: InspectSummary,
}

/// Whom a line of the table is about: the connections to one server (a pool),
/// or the clients from one host on one of the program's listening ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Server(SocketAddr),
    Clients { from: IpAddr, port: u16 },
    Unknown,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(addr) => write!(f, "{addr}"),
            Self::Clients { from, port } => write!(f, "clients {from} → :{port}"),
            Self::Unknown => f.write_str("(dead)"),
        }
    }
}

fn peer_of(c: &InspectConn, listening_ports: &[u16]) -> Peer {
    match (c.local, c.remote) {
        (Some(local), Some(remote)) if listening_ports.contains(&local.port()) => Peer::Clients {
            from: remote.ip().to_canonical(),
            port: local.port(),
        },
        (_, Some(remote)) => Peer::Server(remote),
        (_, None) => Peer::Unknown,
    }
}

/// The table: one line per peer (a pool of connections to one server is one
/// line, with counts and the spread of each prediction), under each line its
/// descriptors, the timeouts set (`TCP_USER_TIMEOUT`, `SO_RCVTIMEO`,
/// `SO_SNDTIMEO`), what the predictions rest on and any leak; then the summary line.
pub fn render(result: &InspectResult, width: usize) -> String {
    let ports: Vec<u16> = result.summary.listening.iter().map(|a| a.port()).collect();
    let mut groups: BTreeMap<Peer, Vec<&InspectConn>> = BTreeMap::new();
    for c in &result.conns {
        groups.entry(peer_of(c, &ports)).or_default().push(c);
    }
    let mut t = super::table::Columns::new(&[
        "peer",
        "conns",
        "state",
        "keepalive",
        "drop",
        "reboot",
        "hang",
        "leaks",
    ]);
    for (peer, conns) in &groups {
        let first = conns[0];
        let cells = vec![
            peer.to_string(),
            conns.len().to_string(),
            counted(conns.iter().map(|c| c.state.name().to_owned())),
            same_or_mixed(conns.iter().map(|c| keepalive_cell(c))),
            spread(conns.iter().map(|c| c.would_notice_after_us.drop)),
            spread(conns.iter().map(|c| c.would_notice_after_us.reboot)),
            spread(conns.iter().map(|c| c.would_notice_after_us.hang)),
            counted_or_dash(
                conns
                    .iter()
                    .filter_map(|c| c.leak.map(|l| l.name().to_owned())),
            ),
        ];
        let fds: Vec<String> = conns
            .iter()
            .take(FDS_SHOWN)
            .map(|c| c.fd.to_string())
            .collect();
        let more = match conns.len().saturating_sub(FDS_SHOWN) {
            0 => String::new(),
            n => format!(" … and {n} more"),
        };
        let mut under = vec![format!("fd {}{more}", fds.join(","))];
        let timeouts: Vec<String> = [
            (
                "TCP_USER_TIMEOUT",
                conns.iter().map(|c| c.user_timeout_ms).collect::<Vec<_>>(),
            ),
            ("SO_RCVTIMEO", conns.iter().map(|c| c.rcvtimeo_ms).collect()),
            ("SO_SNDTIMEO", conns.iter().map(|c| c.sndtimeo_ms).collect()),
        ]
        .into_iter()
        .filter(|(_, values)| values.iter().any(Option::is_some))
        .map(|(name, values)| {
            let shown = values
                .iter()
                .map(|v| v.map_or_else(|| "off".to_owned(), |ms| fmt_secs(ms * 1_000)));
            format!("{name} {}", same_or_mixed(shown))
        })
        .collect();
        if !timeouts.is_empty() {
            under.push(format!("options: {}", timeouts.join(", ")));
        }
        let p = &first.prediction;
        if first.leak == Some(Leak::DeadDescriptor) {
            // The leak line says it all.
        } else if p.drop == p.reboot && p.drop == p.hang {
            under.push(format!("drop, reboot, hang: {}", p.drop));
        } else {
            under.push(format!("drop: {}", p.drop));
            under.push(format!("reboot: {}", p.reboot));
            under.push(format!("hang: {}", p.hang));
        }
        let leaks: Vec<&InspectConn> = conns.iter().copied().filter(|c| c.leak.is_some()).collect();
        for c in leaks.iter().take(LEAKS_SHOWN) {
            if let Some(detail) = &c.leak_detail {
                under.push(format!("leak: fd {}: {detail}", c.fd));
            }
        }
        if leaks.len() > LEAKS_SHOWN {
            under.push(format!("leak: … and {} more", leaks.len() - LEAKS_SHOWN));
        }
        t.row(cells, under);
    }
    let mut out = if groups.is_empty() {
        String::new()
    } else {
        t.render(width)
    };
    out.push_str(&super::wrap(&summary_line(&result.summary), width));
    out.push('\n');
    super::tidy(&out)
}

/// Descriptors listed under a line; the rest are counted.
const FDS_SHOWN: usize = 10;

/// Leaks described one by one under a line; the rest are counted.
const LEAKS_SHOWN: usize = 5;

/// `300s/100s×3`, `off`, or `?` when the options could not be read.
fn keepalive_cell(c: &InspectConn) -> String {
    match (c.options_read, c.keepalive) {
        (false, _) => "?".into(),
        (true, None) => "off".into(),
        (true, Some(k)) => format!("{}s/{}s×{}", k.idle_s, k.intvl_s, k.cnt),
    }
}

/// The one value all share, or `mixed`.
fn same_or_mixed(values: impl Iterator<Item = String>) -> String {
    let mut values = values.peekable();
    let Some(first) = values.next() else {
        return "-".into();
    };
    if values.all(|v| v == first) {
        first
    } else {
        "mixed".into()
    }
}

/// `ESTABLISHED`, or `4 ESTABLISHED, 1 CLOSE_WAIT` when they differ.
fn counted(values: impl Iterator<Item = String>) -> String {
    let counts = tally(values);
    match counts.as_slice() {
        [(one, _)] => one.clone(),
        _ => joined(&counts),
    }
}

/// `2 close-wait, 1 dead-descriptor`, or `-` for none.
fn counted_or_dash(values: impl Iterator<Item = String>) -> String {
    let counts = tally(values);
    if counts.is_empty() {
        "-".into()
    } else {
        joined(&counts)
    }
}

fn tally(values: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.into_iter().collect()
}

fn joined(counts: &[(String, usize)]) -> String {
    counts
        .iter()
        .map(|(v, n)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `≈10m00s`, the spread `9m58s–10m00s`, `never`, or with some that never
/// would: `≈10m00s (2 never)`.
fn spread(values: impl Iterator<Item = Option<u64>>) -> String {
    let (mut min, mut max, mut never) = (u64::MAX, 0, 0usize);
    let mut any = false;
    for v in values {
        match v {
            Some(us) => {
                any = true;
                min = min.min(us);
                max = max.max(us);
            }
            None => never += 1,
        }
    }
    if !any {
        return "never".into();
    }
    let (lo, hi) = (fmt_secs(min), fmt_secs(max));
    let mut s = if lo == hi {
        format!("≈{lo}")
    } else {
        format!("{lo}–{hi}")
    };
    if never > 0 {
        s.push_str(&format!(" ({never} never)"));
    }
    s
}

fn summary_line(s: &InspectSummary) -> String {
    let who: Vec<String> = s
        .pids
        .iter()
        .zip(&s.names)
        .map(|(pid, name)| format!("pid {pid} ({name})"))
        .collect();
    let port = s.port.map_or(String::new(), |p| format!(" on port {p}"));
    let netns = if s.other_netns {
        " in another network namespace"
    } else {
        ""
    };
    let listening = if s.listening.is_empty() {
        String::new()
    } else {
        let addrs: Vec<String> = s.listening.iter().map(ToString::to_string).collect();
        format!("; listening on {}", addrs.join(", "))
    };
    format!(
        "{}{port}{netns}: {} to {}{listening}; leaks: {} close-wait, {}; {}; read in {}",
        who.join(", "),
        counted_noun(s.connections, "TCP connection"),
        counted_noun(s.peers, "peer"),
        s.close_wait,
        counted_noun(s.dead_descriptors, "dead descriptor"),
        counted_noun(s.other_sockets, "other socket"),
        fmt_us(s.elapsed_us)
    )
}

/// `1 peer`, `2 peers`.
fn counted_noun(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The number of lines [`render`] groups `conns` into.
pub fn peers(conns: &[InspectConn], listening: &[SocketAddr]) -> usize {
    let ports: Vec<u16> = listening.iter().map(|a| a.port()).collect();
    let groups: std::collections::BTreeSet<Peer> =
        conns.iter().map(|c| peer_of(c, &ports)).collect();
    groups.len()
}
