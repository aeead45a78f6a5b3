//! The judgement of `check` for a program on another host (or in another network
//! namespace), where sock_diag and /proc cannot see it: what arrives from it on
//! the wire, captured on tcpbye's side (even while `drop` discards it at
//! tcpbye's socket), and what tcpbye's own socket sees.

use super::words::{Remote, advice, fmt_secs};
use crate::report::check::{
    CheckCase, Reaction, Resolution, SettingsFrom, TimedBy, not_judged, saw,
};
use crate::report::{EventKind, Packet, PacketNote, Report, SCHEMA, TcpFlag, fmt_us};
use crate::sys::TcpState;
use crate::vocab::CloseMode;

/// Linux's default `tcp_keepalive_probes`: another host's own count is not visible.
const DEFAULT_PROBES: u64 = 9;

/// Judges one mode of a remote program from the wire and tcpbye's own socket;
/// `action` is when tcpbye acted, on the connection's clock.
pub fn judge(mode: CloseMode, report: &Report, action: u64, remote: Remote) -> CheckCase {
    if mode == CloseMode::Rst {
        return not_judged(
            mode,
            "after an RST its socket is gone at once; whether the program lets go of the descriptor cannot be seen from another host".into(),
        );
    }
    let silent = mode.is_silent();
    if silent && !remote.captured {
        return not_judged(
            mode,
            format!(
                "nothing of a program on another host reaches tcpbye's socket after {mode}; capturing its packets needs CAP_NET_RAW (run as root)"
            ),
        );
    }
    let after = |t: u64| t.saturating_sub(action);
    let packets: &[Packet] = report.packets.as_deref().unwrap_or_default();
    let until = action.saturating_add(remote.wait_us);
    let within = |t: u64| (action..until).contains(&t);
    let since: Vec<&Packet> = packets.iter().filter(|p| within(p.t_us)).collect();
    let inbound = |flag: TcpFlag| {
        since
            .iter()
            .find(|p| !p.outgoing && p.flags.contains(&flag))
            .map(|p| p.t_us)
    };
    let wire_fin = inbound(TcpFlag::Fin);
    let wire_rst = inbound(TcpFlag::Rst);
    let noted = |notes: &[PacketNote]| -> Vec<u64> {
        since
            .iter()
            .filter(|p| !p.outgoing && p.note.is_some_and(|n| notes.contains(&n)))
            .map(|p| p.t_us)
            .collect()
    };
    let probes = noted(&[PacketNote::Keepalive]);
    let retransmissions = noted(&[PacketNote::Retransmission, PacketNote::TailLossProbe]);
    // After `reboot`, whatever it sends meets tcpbye's kernel's RST.
    let answered = since
        .iter()
        .find(|p| p.outgoing && p.flags.contains(&TcpFlag::Rst))
        .map(|p| p.t_us)
        .filter(|_| mode == CloseMode::Reboot);
    let own = |state: TcpState| {
        report.afterlife.as_ref().and_then(|a| {
            a.states
                .iter()
                .find(|s| s.state == Some(state) && within(s.t_us))
                .map(|s| s.t_us)
        })
    };
    let own_time_wait = own(TcpState::TimeWait);
    let read = |hit: &dyn Fn(&crate::report::Event) -> bool| {
        report
            .events
            .iter()
            .find(|e| within(e.t_us) && e.kind == EventKind::Recv && hit(e))
            .map(|e| e.t_us)
    };
    let eof = read(&|e| e.bytes == Some(0));
    let reset = read(&|e| e.errno.as_deref() == Some("ECONNRESET"));
    // Its kernel acknowledged tcpbye's FIN: its socket is in CLOSE_WAIT from then on.
    let fin_acked = own(TcpState::FinWait2).or_else(|| fin_acked_on_wire(&since));

    let timed = |what: &str, t: Option<u64>| t.map(|t| format!("{what} +{}", fmt_us(after(t))));
    let mut evidence: Vec<String> = [
        timed("wire: its FIN", wire_fin),
        timed("wire: its RST", wire_rst),
        timed("its segment met tcpbye's RST", answered),
        timed("tcpbye's socket TIME_WAIT", own_time_wait),
        timed("tcpbye read EOF", eof),
        timed("tcpbye read ECONNRESET", reset),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !probes.is_empty() {
        evidence.push(format!(
            "wire: its keepalive probes {}",
            times(&probes, action)
        ));
    }
    if !retransmissions.is_empty() {
        evidence.push(format!(
            "wire: its retransmissions {}",
            times(&retransmissions, action)
        ));
    }

    let closed = [wire_fin, own_time_wait, eof].into_iter().flatten().min();
    let rst = [wire_rst, reset].into_iter().flatten().min();
    let kernel_at_work = !probes.is_empty() || !retransmissions.is_empty();
    let (reaction, noticed) = if let Some(t) = closed {
        (Reaction::Closed, Some(after(t)))
    } else if let Some(t) = rst {
        if silent && kernel_at_work {
            (Reaction::KernelGaveUp, Some(after(t)))
        } else {
            (Reaction::Reset, Some(after(t)))
        }
    } else if let Some(t) = answered {
        (Reaction::KernelGaveUp, Some(after(t)))
    } else if !silent && fin_acked.is_some() {
        evidence.extend(timed("its kernel acknowledged tcpbye's FIN", fin_acked));
        evidence.push("no FIN from it within the wait: its socket is in CLOSE_WAIT".into());
        (Reaction::Leaked, None)
    } else {
        if evidence.is_empty() {
            evidence.push(if remote.captured {
                "wire: nothing from it after tcpbye's action".into()
            } else {
                "tcpbye's socket: nothing from it after tcpbye's action".into()
            });
        }
        (Reaction::Unnoticed, None)
    };
    if remote.captured {
        evidence.push("(a program on another host: judged from the wire)".into());
    } else {
        evidence.push("(a program on another host: judged from tcpbye's socket)".into());
    }

    let (would, prediction) = if reaction.noticed() {
        (noticed, "noticed".to_owned())
    } else if reaction == Reaction::Leaked {
        (
            None,
            "never: the kernel keeps a CLOSE_WAIT socket until the program closes it".into(),
        )
    } else {
        predict(mode, &probes, &retransmissions, action)
    };
    CheckCase {
        schema: SCHEMA,
        kind: "check-case",
        mode,
        pid: None,
        comm: None,
        tcpbye_addr: report.local,
        program_addr: Some(report.peer),
        saw: saw(mode),
        reaction,
        noticed_after_us: noticed,
        noticed_by: noticed
            .map(|n| timed_by(action + n, report, &[wire_fin, wire_rst, answered]).0),
        read_eof_after_us: None,
        reconnected_after_us: None,
        would_notice_after_us: would,
        resolution_us: Resolution {
            noticed: noticed
                .map(|n| timed_by(action + n, report, &[wire_fin, wire_rst, answered]).1),
            would_notice: would.map(|w| {
                if Some(w) == noticed {
                    timed_by(action + w, report, &[wire_fin, wire_rst, answered]).1
                } else {
                    1_000
                }
            }),
            ..Resolution::default()
        },
        prediction,
        evidence: evidence.join("; "),
        advice: advice(mode, reaction, !probes.is_empty(), would, None, &None, None),
        states: Vec::new(),
        action_t_us: Some(action),
        descriptor: None,
        settings: None,
        settings_from: (would.is_some() && !probes.is_empty()).then_some(SettingsFrom::Wire),
    }
}

/// A silent ending not yet noticed: when its keepalive would give up, from the
/// probes seen on the wire (their interval; the count is Linux's default).
fn predict(
    mode: CloseMode,
    probes: &[u64],
    retransmissions: &[u64],
    action: u64,
) -> (Option<u64>, String) {
    let after = |t: u64| t.saturating_sub(action);
    match (mode, probes) {
        (CloseMode::Hang, [first, ..]) => (
            None,
            format!(
                "never by keepalive: a hung peer's kernel answers the probes (first +{})",
                fmt_us(after(*first))
            ),
        ),
        (CloseMode::Drop, [first, second, ..]) => {
            let interval = second.saturating_sub(*first);
            let us = after(*first).saturating_add(DEFAULT_PROBES.saturating_mul(interval));
            (
                Some(us),
                format!(
                    "≈ {}: first keepalive probe +{}, then {DEFAULT_PROBES} × {} (the interval seen on the wire; {DEFAULT_PROBES} probes is Linux's default, its own count is not visible)",
                    fmt_secs(us),
                    fmt_us(after(*first)),
                    fmt_us(interval)
                ),
            )
        }
        (CloseMode::Drop, [first]) => (
            None,
            format!(
                "unknown: one keepalive probe within the wait (+{}), its interval not yet seen",
                fmt_us(after(*first))
            ),
        ),
        _ if !retransmissions.is_empty() => (
            None,
            "unknown: its data is unacknowledged; retransmissions end it after tcp_retries2 (≈ 15 min by default) or its TCP_USER_TIMEOUT".into(),
        ),
        (CloseMode::Reboot, _) => (
            None,
            "never until it sends: nothing from it within the wait (no keepalive probe)".into(),
        ),
        _ => (
            None,
            "unknown: nothing from it within the wait (no keepalive probe, no retransmission)"
                .into(),
        ),
    }
}

/// Whether an incoming ACK covers tcpbye's FIN (its sequence number + 1).
fn fin_acked_on_wire(since: &[&Packet]) -> Option<u64> {
    let fin = since
        .iter()
        .find(|p| p.outgoing && p.flags.contains(&TcpFlag::Fin))?;
    let end = fin.seq.wrapping_add(fin.len).wrapping_add(1);
    since
        .iter()
        .find(|p| {
            !p.outgoing
                && p.t_us >= fin.t_us
                && p.flags.contains(&TcpFlag::Ack)
                && p.ack.wrapping_sub(end) < (1 << 31)
        })
        .map(|p| p.t_us)
}

fn times(ts: &[u64], action: u64) -> String {
    let shown: Vec<String> = ts
        .iter()
        .take(4)
        .map(|t| format!("+{}", fmt_us(t.saturating_sub(action))))
        .collect();
    let more = ts.len().saturating_sub(4);
    if more > 0 {
        format!("{} (+{more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// What a time of the program's reaction was read from, and its resolution in
/// µs: a captured segment or tcpbye's own socket (1 µs), or a sock_diag reading
/// of tcpbye's socket (since the reading before it).
fn timed_by(at: u64, report: &Report, wire: &[Option<u64>]) -> (TimedBy, u64) {
    if wire.contains(&Some(at)) {
        return (TimedBy::Wire, 1);
    }
    let reading = report
        .afterlife
        .as_ref()
        .and_then(|a| a.states.iter().find(|s| s.t_us == at));
    match reading {
        Some(s) => (
            TimedBy::SockDiag,
            at.saturating_sub(s.prev_t_us.unwrap_or(at)),
        ),
        None => (TimedBy::TcpbyeSocket, 1),
    }
}
