//! The judgement of `check`: one connection's report (the program's socket
//! through sock_diag, tcpbye's own socket after its action, descriptors still
//! held) turned into the program's reaction, its timing and a prediction.

use super::programs;
use super::words::{Remote, advice, fmt_secs};
use crate::report::check::{
    CheckCase, Descriptor, KeepaliveSysctls, ProgramSettings, Reaction, Resolution, SettingsFrom,
    TimedBy, not_judged, saw,
};
use crate::report::{Report, SCHEMA, SideSample, TcpFlag, Verdict, fmt_us};
use crate::sys::{DiagTimerKind, TcpState};
use crate::vocab::CloseMode;

/// What the judge knows besides the report: the keepalive sysctls, the program's
/// own socket options when they could be read, and how long tcpbye watched after
/// its action (`--wait`).
#[derive(Debug, Clone)]
pub struct Known {
    pub sysctls: KeepaliveSysctls,
    pub settings: Option<ProgramSettings>,
    pub wait_us: u64,
    /// The program's process, when found holding its socket.
    pub who: Option<Who>,
    /// Whose socket is the program's peer.
    pub peer: Peer,
}

/// Who played the program's peer: tcpbye's own connection (`check ADDR`,
/// `check --listen`), or the program's real peer, whose socket tcpbye acted on
/// (`check --pid`). The evidence names that socket, and a timer reading's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Peer {
    #[default]
    Tcpbye,
    Real,
}

impl Peer {
    fn socket(self) -> &'static str {
        match self {
            Self::Tcpbye => "tcpbye's socket",
            Self::Real => "the peer's socket",
        }
    }

    /// What the connection's clock counts from.
    fn clock_origin(self) -> &'static str {
        match self {
            Self::Tcpbye => "connect",
            Self::Real => "the check's start",
        }
    }
}

/// The program's process: its pid, its name (`/proc/PID/comm`) and whether its
/// executable is a Go binary (whose name says nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub pid: u32,
    /// Its descriptor of the connection, when found.
    pub fd: Option<i32>,
    pub comm: String,
    pub go: bool,
}

impl From<KeepaliveSysctls> for Known {
    /// Only the sysctls: no options read, no end to the watch.
    fn from(sysctls: KeepaliveSysctls) -> Self {
        Self {
            sysctls,
            settings: None,
            wait_us: u64::MAX,
            who: None,
            peer: Peer::Tcpbye,
        }
    }
}

/// Judges one mode from its connection's report and, when the program's socket
/// vanished, the fate of its descriptor.
pub fn judge(
    mode: CloseMode,
    report: &Report,
    descriptor: Option<Descriptor>,
    last: Option<SideSample>,
    known: Known,
    remote: Option<Remote>,
) -> CheckCase {
    let Known {
        sysctls,
        settings,
        wait_us,
        who,
        peer: played_by,
    } = known;
    let Some(action) = report.close_t_us.filter(|_| report.close.is_some()) else {
        let why = match report.verdict {
            Verdict::Fin | Verdict::Rst => format!(
                "the program ended the connection ({}) before tcpbye acted",
                report.verdict
            ),
            v => format!("the connection did not get to tcpbye's action: {v}"),
        };
        return not_judged(mode, why);
    };
    // A `fin` whose close found data unread went out as an RST (tcpbye's, not the program's).
    if mode == CloseMode::Fin && report.unread_at_close > 0 {
        return not_judged(
            mode,
            format!(
                "tcpbye's own close became an RST, not a FIN: close() with {} bytes unread (arrived since the last read): Linux sends RST",
                report.unread_at_close
            ),
        );
    }
    if let Some(remote) = remote {
        return super::remote::judge(mode, report, action, remote);
    }
    let Some(peer) = report.peer_side.as_ref().filter(|p| p.visible) else {
        let note = report
            .peer_side
            .as_ref()
            .and_then(|p| p.note.clone())
            .unwrap_or_else(|| "no sock_diag reading".into());
        return not_judged(
            mode,
            format!(
                "sock_diag never found the program's socket ({note}); this version judges programs on this host, once they have accepted the connection"
            ),
        );
    };
    let after = |t: u64| t.saturating_sub(action);
    // A reading of the program's socket: what it shows came after the reading
    // before it (or the action).
    let read = |s: &SideSample| Timed {
        at: s.t_us,
        res: s
            .t_us
            .saturating_sub(s.prev_t_us.unwrap_or(action).max(action)),
        by: TimedBy::SockDiag,
    };
    let on_own_socket = |at: u64| Timed {
        at,
        res: 1,
        by: TimedBy::TcpbyeSocket,
    };
    let states = &peer.states;
    // Only a connection the program had accepted when tcpbye acted can show its
    // reaction: the reading right before the action must show its socket with a
    // file. A request socket (SYN_RECV, as TCP_DEFER_ACCEPT keeps it until data
    // comes) or a socket still in the accept queue (inode 0) reacts to nothing.
    if let Some(pre) = states.iter().rfind(|s| s.t_us <= action)
        && let Some(state) = pre.state.filter(|st| {
            *st == TcpState::SynRecv || (*st == TcpState::Established && pre.inode == 0)
        })
    {
        return not_judged(
            mode,
            format!(
                "not accepted yet when tcpbye acted (its socket {state}, without a descriptor): \
                 a listener with TCP_DEFER_ACCEPT waits for data first, so send some with --request"
            ),
        );
    }
    // Readings are stamped with the start of the loop round that took them, which
    // can precede the action taken in the same round: anything but ESTABLISHED
    // counts as after it.
    let later: Vec<&SideSample> = states
        .iter()
        .filter(|s| {
            s.t_us > action || !matches!(s.state, Some(TcpState::Established | TcpState::SynRecv))
        })
        .collect();
    let last_state = states.last();
    let vanished = later.iter().find(|s| s.state.is_none()).map(|s| read(s));

    // The program's FIN: its socket past CLOSE_WAIT, or without a file, or
    // tcpbye's own socket answered it (TIME_WAIT after fin, EOF after half).
    let fin_states = [
        TcpState::LastAck,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::Closing,
        TcpState::TimeWait,
    ];
    let peer_fin = later
        .iter()
        .find(|s| {
            s.state.is_some_and(|st| fin_states.contains(&st))
                || (s.state.is_some() && s.inode == 0)
        })
        .map(|s| read(s));
    let own_time_wait = report.afterlife.as_ref().and_then(|a| {
        a.states
            .iter()
            .find(|s| s.state == Some(TcpState::TimeWait))
            .map(read)
    });
    let eof_read_here = report
        .events
        .iter()
        .find(|e| {
            e.t_us >= action && e.kind == crate::report::EventKind::Recv && e.bytes == Some(0)
        })
        .map(|e| on_own_socket(e.t_us));
    let reset_read_here = report
        .events
        .iter()
        .find(|e| {
            e.t_us >= action
                && e.kind == crate::report::EventKind::Recv
                && e.errno.as_deref().is_some_and(|n| n == "ECONNRESET")
        })
        .map(|e| on_own_socket(e.t_us));
    // Its FIN on the wire, when tcpbye captured (root): after `reboot` its socket
    // can vanish within microseconds of its own close (tcpbye's kernel answers the
    // FIN with an RST), too fast for any sock_diag reading.
    let captured = report.packets.as_deref();
    // Within the wait: after it tcpbye closes a held socket itself, and the
    // program's FIN then answers that.
    // A held socket (`drop`, `hang`) is closed by tcpbye when its hold ends: what
    // the program sends after tcpbye's own FIN or RST answers that, not the ending.
    let own_end = captured
        .filter(|_| mode.holds_socket())
        .and_then(|packets| {
            packets
                .iter()
                .find(|p| {
                    p.t_us > action
                        && p.outgoing
                        && (p.flags.contains(&TcpFlag::Fin) || p.flags.contains(&TcpFlag::Rst))
                })
                .map(|p| p.t_us)
        })
        .unwrap_or(u64::MAX);
    let on_wire = |outgoing: bool, flag: TcpFlag| {
        captured.and_then(|packets| {
            packets
                .iter()
                .find(|p| {
                    (action..action.saturating_add(wait_us).min(own_end)).contains(&p.t_us)
                        && p.outgoing == outgoing
                        && p.flags.contains(&flag)
                })
                .map(|p| Timed {
                    at: p.t_us,
                    res: 1,
                    by: TimedBy::Wire,
                })
        })
    };
    let wire_fin = on_wire(false, TcpFlag::Fin);
    // The packet times the close when it was captured; else the earliest reading.
    let fin_at = wire_fin.or_else(|| {
        [peer_fin, own_time_wait, eof_read_here]
            .into_iter()
            .flatten()
            .min_by_key(|t| t.at)
    });
    let read_eof = later
        .iter()
        .find(|s| s.state == Some(TcpState::CloseWait) && s.recv_q == 0)
        .map(|s| read(s));

    let mut evidence = vec![describe_states(&later, action)];
    if let Some(t) = own_time_wait {
        evidence.push(format!(
            "{} TIME_WAIT +{}",
            played_by.socket(),
            fmt_us(after(t.at))
        ));
    }
    if let Some(t) = eof_read_here {
        evidence.push(format!("tcpbye read EOF +{}", fmt_us(after(t.at))));
    }
    if let Some(t) = reset_read_here {
        evidence.push(format!("tcpbye read ECONNRESET +{}", fmt_us(after(t.at))));
    }
    if let Some(t) = wire_fin {
        evidence.push(format!("wire: its FIN +{}", fmt_us(after(t.at))));
    }

    let silent = mode.is_silent();
    let (reaction, noticed) = if let Some(t) =
        fin_at.filter(|_| !silent || peer_fin.is_some() || wire_fin.is_some())
    {
        (Reaction::Closed, Some(t))
    } else if let Some(t) = reset_read_here.filter(|_| mode == CloseMode::Half) {
        (Reaction::Reset, Some(t))
    } else if let Some(gone) = vanished {
        // Its RST on the wire times it (its own abort, or its kernel giving up);
        // after `reboot`, tcpbye's kernel's RST answering its segment.
        let t = on_wire(mode == CloseMode::Reboot, TcpFlag::Rst).unwrap_or(gone);
        // The socket left the tables: what became of the descriptor decides.
        match &descriptor {
            Some(d) if d.held_at_end => {
                evidence.push(format!(
                    "socket:[{}] still held by pid {} at the end (/proc/*/fd)",
                    d.inode,
                    join(&d.pids)
                ));
                (Reaction::Leaked, None)
            }
            _ => {
                let released = descriptor.as_ref().and_then(|d| d.released_after_us);
                if let (Some(d), Some(r)) = (&descriptor, released) {
                    evidence.push(if d.pids.is_empty() {
                        format!(
                            "socket:[{}] not under /proc/*/fd at the first look +{}",
                            d.inode,
                            fmt_us(r)
                        )
                    } else {
                        format!(
                            "socket:[{}] released by pid {} +{}",
                            d.inode,
                            join(&d.pids),
                            fmt_us(r)
                        )
                    });
                }
                match mode {
                    // Our RST removed its socket at once; its reaction is letting go.
                    CloseMode::Rst => match released {
                        Some(r) => (
                            Reaction::Closed,
                            Some(Timed {
                                at: action + r,
                                res: descriptor
                                    .as_ref()
                                    .and_then(|d| d.released_resolution_us)
                                    .unwrap_or(r),
                                by: TimedBy::Descriptor,
                            }),
                        ),
                        None => {
                            evidence.push(
                                "its descriptor could not be looked up (another user's /proc/PID/fd needs root)".into(),
                            );
                            (Reaction::NotJudged, None)
                        }
                    },
                    CloseMode::Reboot if captured.is_none() => {
                        // Its own close (an application timeout) meets tcpbye's
                        // kernel's RST as fast as a keepalive probe does.
                        evidence.push(
                            "its kernel gave up, or it closed and its FIN met an RST: the two look alike without a capture (CAP_NET_RAW)".into(),
                        );
                        (Reaction::KernelGaveUp, Some(t))
                    }
                    CloseMode::Drop | CloseMode::Reboot | CloseMode::Hang => {
                        (Reaction::KernelGaveUp, Some(t))
                    }
                    _ => {
                        evidence.push(
                            "gone without a FIN: an RST, its own or tcpbye's kernel's answer to data it wrote after the close".into(),
                        );
                        (Reaction::Reset, Some(t))
                    }
                }
            }
        }
    } else {
        match last_state.and_then(|s| s.state) {
            Some(TcpState::CloseWait) => (Reaction::Leaked, None),
            Some(TcpState::Established) => (Reaction::Unnoticed, None),
            Some(other) => {
                evidence.push(format!("ended in {other}"));
                (Reaction::NotJudged, None)
            }
            None => (Reaction::NotJudged, None),
        }
    };

    // Its timer is read last when the report arrives: a keepalive set after accept()
    // shows there even when the first readings came before it.
    let keepalive = last
        .as_ref()
        .filter(|s| matches!(s.state, Some(TcpState::Established | TcpState::CloseWait)))
        .and_then(|s| keepalive_expiry(std::slice::from_ref(s), action, true))
        .or_else(|| keepalive_expiry(states, action, false));
    // The probes' interval and count: the socket's own when they could be read.
    let probing = match settings.and_then(|s| s.keepalive) {
        Some(k) => Probing {
            intvl_s: k.intvl_s,
            count: k.cnt,
            from: SettingsFrom::Socket,
        },
        None => Probing {
            intvl_s: sysctls.intvl_s,
            count: sysctls.probes,
            from: SettingsFrom::Sysctls,
        },
    };
    let noticed_us = noticed.map(|t| after(t.at));
    let (would, prediction) = predict(
        mode,
        reaction,
        noticed_us,
        keepalive,
        probing,
        last.as_ref().or(states.last()),
        Watch { wait_us, played_by },
    );
    // A silent ending noticed with no kernel timer armed: the program's own timer.
    if mode.is_silent() && reaction == Reaction::Closed && keepalive.is_none() {
        evidence.push(format!(
            "an application timeout: it closed +{} with no keepalive timer armed",
            fmt_us(noticed_us.unwrap_or(0))
        ));
    }
    let program = who
        .as_ref()
        .and_then(|w| programs::lookup(&w.comm, w.go).map(|p| (p, Some(w.pid))));
    let advice = advice(
        mode,
        reaction,
        keepalive.is_some(),
        would,
        settings.as_ref(),
        &descriptor,
        program,
    );
    let settings_from = (keepalive.is_some() && mode == CloseMode::Drop && !reaction.noticed())
        .then_some(probing.from);
    CheckCase {
        schema: SCHEMA,
        kind: "check-case",
        mode,
        pid: who.as_ref().map(|w| w.pid),
        fd: who.as_ref().and_then(|w| w.fd),
        comm: who.map(|w| w.comm),
        tcpbye_addr: report.local,
        program_addr: Some(report.peer),
        saw: saw(mode),
        reaction,
        noticed_after_us: noticed_us,
        noticed_by: noticed.map(|t| t.by),
        read_eof_after_us: read_eof.map(|t| after(t.at)),
        reconnected_after_us: None,
        would_notice_after_us: would,
        resolution_us: Resolution {
            noticed: noticed.map(|t| t.res),
            read_eof: read_eof.map(|t| t.res),
            reconnected: None,
            // Noticed: as exact as that; predicted: from a timer read in ms.
            would_notice: would.map(|_| noticed.map_or(PREDICTION_RESOLUTION_US, |t| t.res)),
        },
        prediction,
        evidence: evidence.join("; "),
        advice,
        states: states.clone(),
        action_t_us: Some(action),
        descriptor,
        settings,
        settings_from,
    }
}

/// How the program was watched: for how long after the action, and whose
/// socket was its peer.
#[derive(Debug, Clone, Copy)]
struct Watch {
    wait_us: u64,
    played_by: Peer,
}

/// sock_diag gives a timer's expiry in ms: a prediction from it is no finer.
const PREDICTION_RESOLUTION_US: u64 = 1_000;

/// A moment on the connection's clock, what it was read from, and the span
/// before it in which the moment lies.
#[derive(Debug, Clone, Copy)]
struct Timed {
    at: u64,
    res: u64,
    by: TimedBy,
}

/// How keepalive probes a silent peer: every `intvl_s`, `count` times, and where
/// those two values came from.
#[derive(Debug, Clone, Copy)]
struct Probing {
    intvl_s: u64,
    count: u64,
    from: SettingsFrom,
}

/// `check --listen`: the client's next connection, `after_us` from tcpbye's action.
/// A client that noticed and connected again `reconnected`; one that connected
/// again while this connection stayed open or leaked keeps that reaction.
pub fn reconnected(case: &mut CheckCase, after_us: Option<u64>) {
    case.reconnected_after_us = after_us;
    let Some(after) = after_us else {
        return;
    };
    case.resolution_us.reconnected = Some(1);
    if case.reaction.noticed() {
        // Its new connection proves it had noticed by then, whatever the readings' pace.
        case.reaction = Reaction::Reconnected;
        if let Some(noticed) = case.noticed_after_us.filter(|n| *n > after) {
            // Still after the last reading that had not seen it, if there was one.
            let since = noticed.saturating_sub(case.resolution_us.noticed.unwrap_or(noticed));
            case.noticed_after_us = Some(after);
            case.noticed_by = Some(TimedBy::Reconnect);
            case.resolution_us.noticed = Some(after.saturating_sub(since).max(1));
        }
        case.would_notice_after_us = case.noticed_after_us;
        case.resolution_us.would_notice = case.resolution_us.noticed;
        case.prediction = "noticed".into();
    } else if matches!(case.reaction, Reaction::Unnoticed | Reaction::Leaked) {
        case.evidence.push_str(&format!(
            "; it connected again +{} while this connection stayed",
            fmt_us(after)
        ));
    }
}

/// The inode to look for under /proc when the program's socket vanished after tcpbye acted.
pub fn vanished_inode(report: &Report) -> Option<u32> {
    let peer = report.peer_side.as_ref()?;
    let gone = peer.states.last().is_some_and(|s| s.state.is_none());
    gone.then(|| peer.states.iter().rev().map(|s| s.inode).find(|i| *i != 0))
        .flatten()
}

fn join(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `ESTABLISHED → CLOSE_WAIT(recv_q 1) +0.2ms → … → gone +3.1ms`, timed from the action.
fn describe_states(later: &[&SideSample], action: u64) -> String {
    if later.is_empty() {
        return "its socket unchanged (sock_diag)".into();
    }
    let steps: Vec<String> = later
        .iter()
        .map(|s| {
            let name = match s.state {
                None => "gone".to_owned(),
                Some(TcpState::CloseWait) if s.recv_q > 0 => {
                    format!("CLOSE_WAIT(recv_q {})", s.recv_q)
                }
                Some(st) if s.inode == 0 => format!("{st}(inode 0)"),
                Some(st) => st.name().to_owned(),
            };
            format!("{name} +{}", fmt_us(s.t_us.saturating_sub(action)))
        })
        .collect();
    format!("sock_diag: {}", steps.join(" → "))
}

/// The program socket's keepalive timer as last read while ESTABLISHED: µs from
/// the action to its expiry (saturating), and the expiry as read (seconds).
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    first_probe_after_us: u64,
    read_at_us: u64,
    expires_s: f64,
    /// Probes already sent without an answer when it was read.
    probes_sent: u64,
}

fn keepalive_expiry(states: &[SideSample], action: u64, any_state: bool) -> Option<Keepalive> {
    states
        .iter()
        .rev()
        .filter(|s| any_state || s.state == Some(TcpState::Established))
        .find_map(|s| {
            let timer = s.timer.filter(|t| t.kind == DiagTimerKind::KeepAlive)?;
            let at = s.t_us + u64::from(timer.expires_ms) * 1_000;
            Some(Keepalive {
                first_probe_after_us: at.saturating_sub(action),
                read_at_us: s.t_us,
                expires_s: f64::from(timer.expires_ms) / 1000.0,
                probes_sent: u64::from(timer.retransmits),
            })
        })
}

fn has_retransmit_timer(last: Option<&SideSample>) -> bool {
    last.and_then(|s| s.timer)
        .is_some_and(|t| matches!(t.kind, DiagTimerKind::Retransmit | DiagTimerKind::Persist))
}

fn predict(
    mode: CloseMode,
    reaction: Reaction,
    noticed: Option<u64>,
    keepalive: Option<Keepalive>,
    probing: Probing,
    last: Option<&SideSample>,
    watch: Watch,
) -> (Option<u64>, String) {
    let Watch { wait_us, played_by } = watch;
    if reaction.noticed() {
        return (noticed, "noticed".into());
    }
    match reaction {
        Reaction::Leaked if last.is_some_and(|s| s.state.is_none()) => {
            return (
                None,
                "never: the descriptor stays until the program closes it".into(),
            );
        }
        Reaction::Leaked => {
            return (
                None,
                "never: the kernel keeps a CLOSE_WAIT socket until the program closes it".into(),
            );
        }
        Reaction::NotJudged => return (None, "-".into()),
        _ => {}
    }
    let ka_text = |k: &Keepalive| {
        format!(
            "keepalive timer {:.1}s at +{} from {} (sock_diag)",
            k.expires_s,
            fmt_us(k.read_at_us),
            played_by.clock_origin()
        )
    };
    // What no kernel mechanism will do, an application's own timer may (an idle
    // timeout, a heartbeat): invisible from outside, so only the wait can tell.
    let waited = if wait_us == u64::MAX {
        String::new()
    } else {
        format!(", and none fired within {}", fmt_us(wait_us))
    };
    let never = format!(
        "no kernel mechanism will notice: no keepalive timer, no unacknowledged data (sock_diag); only an application timeout can{waited}"
    );
    match mode {
        CloseMode::Drop => match keepalive {
            Some(k) => {
                // The timer's next expiry is the next probe; the connection ends one
                // interval after the last probe goes unanswered.
                let left = probing.count.saturating_sub(k.probes_sent);
                let us = super::keepalive::gives_up_after_us(
                    k.first_probe_after_us,
                    k.probes_sent,
                    probing.intvl_s * 1_000_000,
                    probing.count,
                    None,
                );
                let source = match probing.from {
                    SettingsFrom::Socket => "its own TCP_KEEPINTVL/KEEPCNT, read from its socket",
                    _ => "sysctls tcp_keepalive_probes/intvl; its own TCP_KEEPCNT/INTVL could not be read",
                };
                (
                    Some(us),
                    format!(
                        "≈ {}: next keepalive probe +{}, then {} × {}s ({source}); {}",
                        fmt_secs(us),
                        fmt_secs(k.first_probe_after_us),
                        left,
                        probing.intvl_s,
                        ka_text(&k)
                    ),
                )
            }
            None if has_retransmit_timer(last) => (
                None,
                "unknown: data unacknowledged, retransmissions end it after tcp_retries2 (sock_diag timer `on`)".into(),
            ),
            None => (None, never),
        },
        CloseMode::Reboot => match keepalive {
            Some(k) => (
                Some(k.first_probe_after_us),
                format!(
                    "≈ {}: its first keepalive probe meets an RST; {}",
                    fmt_secs(k.first_probe_after_us),
                    ka_text(&k)
                ),
            ),
            None => (
                None,
                format!(
                    "not until it sends: no keepalive timer, no unacknowledged data (sock_diag); only an application timeout or its own next write can{waited}"
                ),
            ),
        },
        CloseMode::Hang => match keepalive {
            Some(k) => (
                None,
                format!(
                    "never by keepalive: a hung peer's kernel answers the probes; {}",
                    ka_text(&k)
                ),
            ),
            None => (
                None,
                format!(
                    "no kernel mechanism will notice: no keepalive timer (it would not help: a hung peer's kernel answers), no heartbeat seen (sock_diag); only an application timeout can{waited}"
                ),
            ),
        },
        _ => (None, "unknown".into()),
    }
}

/// The expectation misses, in words (empty: all met).
pub fn misses(
    cases: &[CheckCase],
    limits: &crate::plan::NoticeLimits,
    no_leak: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for case in cases {
        if no_leak && case.reaction == Reaction::Leaked {
            out.push(format!("{}: leaked ({})", case.mode, case.evidence));
        }
        let Some(limit) = limits.limit(case.mode) else {
            continue;
        };
        let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        match (case.reaction, case.noticed_after_us) {
            (Reaction::NotJudged, _) if !limits.names(case.mode) => {}
            (r, Some(us)) if r.noticed() && us <= limit_us => {}
            (r, Some(us)) if r.noticed() => out.push(format!(
                "{}: noticed after {}, expected within {}",
                case.mode,
                fmt_us(us),
                fmt_us(limit_us)
            )),
            (r, _) => out.push(format!(
                "{}: {}, expected noticed within {}",
                case.mode,
                r.name(),
                fmt_us(limit_us)
            )),
        }
    }
    // A limit for every mode met only because nothing could be judged is no pass.
    if limits.every.is_some()
        && let Some(first) = cases.first()
        && cases.iter().all(|c| c.reaction == Reaction::NotJudged)
    {
        out.push(format!(
            "--expect-noticed-within: no ending could be judged ({})",
            first.evidence
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_before_the_next_reading_times_the_noticing_within_the_reading_before() {
        let mut case = not_judged(CloseMode::Drop, String::new());
        case.reaction = Reaction::Closed;
        case.noticed_after_us = Some(2_975_000);
        case.noticed_by = Some(TimedBy::SockDiag);
        // The reading before showed it still established at +961 ms.
        case.resolution_us.noticed = Some(2_014_000);
        reconnected(&mut case, Some(2_968_000));
        assert_eq!(case.reaction, Reaction::Reconnected);
        assert_eq!(case.noticed_after_us, Some(2_968_000));
        assert_eq!(case.noticed_by, Some(TimedBy::Reconnect));
        assert_eq!(case.resolution_us.noticed, Some(2_007_000));
        assert_eq!(case.would_notice_after_us, Some(2_968_000));
        assert_eq!(case.resolution_us.would_notice, Some(2_007_000));
        assert_eq!(case.resolution_us.reconnected, Some(1));
    }
    use crate::report::{Afterlife, AfterlifeEnd, Event, EventKind, PeerSide, Role};
    use crate::sys::DiagTimer;

    const KA: KeepaliveSysctls = KeepaliveSysctls {
        time_s: 7200,
        intvl_s: 75,
        probes: 9,
    };
    const ACTION: u64 = 1_000;

    fn at(t_us: u64, state: Option<TcpState>, recv_q: u32, inode: u32) -> SideSample {
        SideSample {
            t_us,
            state,
            timer: None,
            recv_q,
            send_q: 0,
            inode,
            prev_t_us: None,
        }
    }

    fn report(mode: CloseMode, peer: Vec<SideSample>, own: Vec<SideSample>) -> Report {
        Report {
            close: Some(mode),
            close_t_us: Some(ACTION),
            peer_side: Some(PeerSide {
                visible: true,
                note: None,
                uid: Some(0),
                states: peer,
                tcp_info: None,
            }),
            afterlife: Some(Afterlife {
                states: own,
                ended: AfterlifeEnd::Gone,
                watched_us: 0,
            }),
            ..Report::bare(Role::Connect, "127.0.0.1:1".parse().unwrap(), Verdict::Fin)
        }
    }

    use TcpState::{CloseWait, Established, FinWait2, LastAck, TimeWait};

    #[test]
    fn a_program_that_reads_eof_then_closes_is_closed_with_two_moments() {
        let r = report(
            CloseMode::Fin,
            vec![
                at(10, Some(Established), 0, 7),
                at(1_100, Some(CloseWait), 1, 7),
                at(1_500, Some(CloseWait), 0, 7),
                at(3_000, Some(LastAck), 0, 0),
                at(3_100, None, 0, 0),
            ],
            vec![
                at(1_000, Some(FinWait2), 0, 0),
                at(3_050, Some(TimeWait), 0, 0),
            ],
        );
        let c = judge(CloseMode::Fin, &r, None, None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::Closed);
        assert_eq!(c.read_eof_after_us, Some(500));
        assert_eq!(c.noticed_after_us, Some(2_000));
        assert_eq!(c.would_notice_after_us, Some(2_000));
        assert!(c.advice.is_none());
    }

    #[test]
    fn close_wait_at_the_end_is_leaked_and_a_vanished_socket_is_reset() {
        let leaked = report(
            CloseMode::Fin,
            vec![
                at(10, Some(Established), 0, 7),
                at(1_100, Some(CloseWait), 1, 7),
            ],
            vec![at(1_000, Some(FinWait2), 0, 0)],
        );
        let c = judge(CloseMode::Fin, &leaked, None, None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::Leaked);
        assert_eq!(c.read_eof_after_us, None);
        assert!(
            c.advice
                .as_deref()
                .is_some_and(|a| a.contains("EPOLLRDHUP"))
        );
        // Gone without a FIN, and tcpbye's socket never reached TIME_WAIT: an RST.
        let reset = report(
            CloseMode::Fin,
            vec![at(10, Some(Established), 0, 7), at(1_800, None, 0, 0)],
            vec![at(1_000, Some(FinWait2), 0, 0), at(1_800, None, 0, 0)],
        );
        let gone = Descriptor {
            inode: 7,
            pids: vec![42],
            released_after_us: Some(900),
            released_resolution_us: None,
            held_at_end: false,
        };
        let c = judge(CloseMode::Fin, &reset, Some(gone), None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::Reset);
        assert_eq!(c.noticed_after_us, Some(800));
    }

    #[test]
    fn after_rst_the_descriptor_decides() {
        let r = report(
            CloseMode::Rst,
            vec![at(10, Some(Established), 0, 7), at(1_050, None, 0, 0)],
            vec![at(1_000, None, 0, 0)],
        );
        let held = Descriptor {
            inode: 7,
            pids: vec![42],
            released_after_us: None,
            released_resolution_us: None,
            held_at_end: true,
        };
        let c = judge(CloseMode::Rst, &r, Some(held), None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::Leaked);
        assert!(c.evidence.contains("still held by pid 42"));
        assert!(c.prediction.contains("descriptor"));
        let released = Descriptor {
            inode: 7,
            pids: vec![42],
            released_after_us: Some(30_000),
            released_resolution_us: None,
            held_at_end: false,
        };
        let c = judge(CloseMode::Rst, &r, Some(released), None, KA.into(), None);
        assert_eq!(
            (c.reaction, c.noticed_after_us),
            (Reaction::Closed, Some(30_000))
        );
        assert_eq!(
            judge(CloseMode::Rst, &r, None, None, KA.into(), None).reaction,
            Reaction::NotJudged
        );
    }

    #[test]
    fn silent_endings_are_predicted_from_the_keepalive_timer() {
        let mut established = at(500, Some(Established), 0, 7);
        established.timer = Some(DiagTimer {
            kind: DiagTimerKind::KeepAlive,
            expires_ms: 300000,
            retransmits: 0,
        });
        let r = report(CloseMode::Drop, vec![established.clone()], Vec::new());
        let c = judge(CloseMode::Drop, &r, None, None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::Unnoticed);
        // Expiry at 500µs + 300s, less the action at 1ms, then 9 × 75s.
        assert_eq!(
            c.would_notice_after_us,
            Some(300_000_000 - 500 + 675_000_000)
        );
        assert!(c.prediction.contains("keepalive timer 300.0s"));
        let r = report(CloseMode::Reboot, vec![established.clone()], Vec::new());
        assert_eq!(
            judge(CloseMode::Reboot, &r, None, None, KA.into(), None).would_notice_after_us,
            Some(300_000_000 - 500)
        );
        let r = report(CloseMode::Hang, vec![established], Vec::new());
        let c = judge(CloseMode::Hang, &r, None, None, KA.into(), None);
        assert_eq!(c.would_notice_after_us, None);
        assert!(c.prediction.starts_with("never by keepalive"));
        let r = report(
            CloseMode::Drop,
            vec![at(500, Some(Established), 0, 7)],
            Vec::new(),
        );
        // A later reading (when the report arrived) wins: 2 probes already unanswered.
        let mut later = at(2_000_000, Some(Established), 0, 7);
        later.timer = Some(DiagTimer {
            kind: DiagTimerKind::KeepAlive,
            expires_ms: 75000,
            retransmits: 2,
        });
        assert_eq!(
            judge(CloseMode::Drop, &r, None, Some(later), KA.into(), None).would_notice_after_us,
            Some(2_000_000 - ACTION + 75_000_000 + 7 * 75_000_000)
        );
        let c = judge(CloseMode::Drop, &r, None, None, KA.into(), None);
        assert_eq!(c.would_notice_after_us, None);
        assert!(
            c.prediction
                .starts_with("no kernel mechanism will notice: no keepalive timer"),
            "{}",
            c.prediction
        );
        // An application timer may: the wait says whether one fired.
        let waited = Known {
            wait_us: 3_000_000,
            ..Known::from(KA)
        };
        let c = judge(CloseMode::Drop, &r, None, None, waited, None);
        assert!(
            c.prediction
                .ends_with("only an application timeout can, and none fired within 3.000s"),
            "{}",
            c.prediction
        );
        // Its kernel ended it, and it let go of the descriptor.
        let r = report(
            CloseMode::Drop,
            vec![at(500, Some(Established), 0, 7), at(3_001_000, None, 0, 0)],
            Vec::new(),
        );
        let c = judge(CloseMode::Drop, &r, None, None, KA.into(), None);
        assert_eq!(
            (c.reaction, c.noticed_after_us),
            (Reaction::KernelGaveUp, Some(3_000_000))
        );
    }

    #[test]
    fn the_programs_own_keepalive_beats_the_sysctls_and_is_never_advised_slower() {
        use crate::report::check::KeepaliveSettings;
        let own = |idle_s, intvl_s, cnt| ProgramSettings {
            pid: 42,
            fd: 7,
            keepalive: Some(KeepaliveSettings {
                idle_s,
                intvl_s,
                cnt,
            }),
            user_timeout_ms: None,
            rcvtimeo_ms: None,
            sndtimeo_ms: None,
        };
        let with = |settings| Known {
            settings: Some(settings),
            ..Known::from(KA)
        };
        // PostgreSQL's tcp_keepalives 5/2/2: the timer says 5s, then 2 × 2s — not 9 × 75s.
        let mut established = at(500, Some(Established), 0, 7);
        established.timer = Some(DiagTimer {
            kind: DiagTimerKind::KeepAlive,
            expires_ms: 5000,
            retransmits: 0,
        });
        let r = report(CloseMode::Drop, vec![established.clone()], Vec::new());
        let c = judge(CloseMode::Drop, &r, None, None, with(own(5, 2, 2)), None);
        assert_eq!(c.would_notice_after_us, Some(5_000_000 - 500 + 4_000_000));
        assert_eq!(c.settings_from, Some(SettingsFrom::Socket));
        assert!(c.prediction.contains("2 × 2s (its own"), "{}", c.prediction);
        // Quick already: watch longer, never "lower TCP_KEEPIDLE (e.g. 30s)".
        let advice = c.advice.expect("advice");
        assert!(advice.contains("watch longer"), "{advice}");
        assert!(!advice.contains("30s"), "{advice}");
        // Without its own values the sysctls stand in, and say so.
        let c = judge(CloseMode::Drop, &r, None, None, KA.into(), None);
        assert_eq!(c.settings_from, Some(SettingsFrom::Sysctls));
        // redis's tcp-keepalive 300 (300s, 100s, 3): the advice lowers the idle time
        // and keeps each value at most the program's own.
        let mut slow = at(500, Some(Established), 0, 7);
        slow.timer = Some(DiagTimer {
            kind: DiagTimerKind::KeepAlive,
            expires_ms: 300000,
            retransmits: 0,
        });
        let r = report(CloseMode::Drop, vec![slow], Vec::new());
        let c = judge(CloseMode::Drop, &r, None, None, with(own(300, 1, 2)), None);
        let advice = c.advice.expect("advice");
        assert!(
            advice.contains("set TCP_KEEPIDLE=30s, TCP_KEEPINTVL=1s, TCP_KEEPCNT=2"),
            "{advice}"
        );
    }

    #[test]
    fn a_fin_that_found_data_unread_was_an_rst_and_is_not_judged_as_a_fin() {
        let established = at(500, Some(Established), 0, 7);
        let mut r = report(CloseMode::Fin, vec![established], Vec::new());
        r.unread_at_close = 5;
        let c = judge(CloseMode::Fin, &r, None, None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::NotJudged);
        assert!(c.evidence.contains("became an RST"), "{}", c.evidence);
        assert!(c.evidence.contains("5 bytes unread"), "{}", c.evidence);
        // `rst-unread` means to: its reaction is judged.
        r.close = Some(CloseMode::RstUnread);
        let c = judge(CloseMode::RstUnread, &r, None, None, KA.into(), None);
        assert_ne!(c.reaction, Reaction::NotJudged);
    }

    #[test]
    fn what_cannot_be_judged_says_why() {
        let mut r = report(CloseMode::Fin, Vec::new(), Vec::new());
        r.peer_side = Some(PeerSide {
            visible: false,
            note: Some("not visible from here".into()),
            uid: None,
            states: Vec::new(),
            tcp_info: None,
        });
        let c = judge(CloseMode::Fin, &r, None, None, KA.into(), None);
        assert_eq!(c.reaction, Reaction::NotJudged);
        assert!(c.evidence.contains("not visible from here"));
        let mut first = report(CloseMode::Fin, Vec::new(), Vec::new());
        first.close = None;
        first.close_t_us = None;
        first.events.push(Event::new(5, EventKind::Recv));
        let c = judge(CloseMode::Half, &first, None, None, KA.into(), None);
        assert!(c.evidence.contains("before tcpbye acted"), "{}", c.evidence);
    }

    #[test]
    fn expectations() {
        let closed = CheckCase {
            noticed_after_us: Some(2_000_000),
            reaction: Reaction::Closed,
            ..not_judged(CloseMode::Fin, String::new())
        };
        let unnoticed = CheckCase {
            reaction: Reaction::Unnoticed,
            ..not_judged(CloseMode::Hang, String::new())
        };
        let skipped = not_judged(CloseMode::Rst, "remote".into());
        let cases = [closed, unnoticed, skipped];
        let every = crate::plan::NoticeLimits {
            every: Some(std::time::Duration::from_secs(1)),
            per_mode: Vec::new(),
        };
        let m = misses(&cases, &every, false);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].starts_with("fin: noticed after 2.000s"));
        assert!(m[1].starts_with("hang: unnoticed"));
        let per_mode = crate::plan::NoticeLimits {
            every: None,
            per_mode: vec![
                (CloseMode::Fin, std::time::Duration::from_secs(3)),
                (CloseMode::Rst, std::time::Duration::from_secs(3)),
            ],
        };
        let m = misses(&cases, &per_mode, false);
        assert_eq!(m, vec!["rst: not-judged, expected noticed within 3.000s"]);
        let leak = [CheckCase {
            reaction: Reaction::Leaked,
            ..not_judged(CloseMode::Fin, "CLOSE_WAIT".into())
        }];
        assert_eq!(misses(&leak, &Default::default(), true).len(), 1);
        assert!(misses(&leak, &Default::default(), false).is_empty());
    }
}
