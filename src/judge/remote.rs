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
/// Linux's longest retransmission timeout (`TCP_RTO_MAX`): the backoff stops doubling there.
const RTO_MAX_US: u64 = 120_000_000;
/// Linux's default `tcp_fin_timeout`: an orphaned `FIN_WAIT2` socket goes away
/// then without any packet, so only before it does "gone" mean an RST.
const FIN_TIMEOUT_US: u64 = 60_000_000;

/// Judges one mode of a remote program from the wire and tcpbye's own socket;
/// `action` is when tcpbye acted, on the connection's clock.
pub fn judge(mode: CloseMode, report: &Report, action: u64, remote: Remote) -> CheckCase {
    let unjudged = |why: String| CheckCase {
        action_t_us: Some(action),
        ..not_judged(mode, why)
    };
    if mode == CloseMode::Rst {
        return unjudged(
            "after an RST its socket is gone at once; whether the program lets go of the descriptor cannot be seen from another host".into(),
        );
    }
    let silent = mode.is_silent();
    if silent && !remote.captured {
        return unjudged(format!(
            "nothing of a program on another host reaches tcpbye's socket after {mode}; capturing its packets needs CAP_NET_RAW (run as root)"
        ));
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
    let own_states: Vec<_> = report
        .afterlife
        .iter()
        .flat_map(|a| &a.states)
        .filter(|s| within(s.t_us))
        .collect();
    let own = |state: TcpState| {
        own_states
            .iter()
            .find(|s| s.state == Some(state))
            .map(|s| s.t_us)
    };
    let own_time_wait = own(TcpState::TimeWait);
    // tcpbye's closed socket left FIN_WAIT without TIME_WAIT: an RST ended it
    // (the program's, or tcpbye's kernel's answer to data it wrote after the close).
    // A TIME_WAIT read after "gone" makes that one lookup a miss.
    let own_gone = own_states
        .iter()
        .find(|s| s.state.is_none())
        .map(|s| s.t_us)
        .filter(|t| own_time_wait.is_none() && after(*t) < FIN_TIMEOUT_US)
        .filter(|_| mode == CloseMode::Fin);
    // The first end tcpbye read: after an ECONNRESET a read returns 0, which is no FIN.
    let end_read = report.events.iter().find(|e| {
        within(e.t_us)
            && e.kind == EventKind::Recv
            && (e.bytes == Some(0) || e.errno.as_deref() == Some("ECONNRESET"))
    });
    let eof = end_read.filter(|e| e.bytes == Some(0)).map(|e| e.t_us);
    let reset = end_read.filter(|e| e.bytes != Some(0)).map(|e| e.t_us);
    // Its kernel acknowledged tcpbye's FIN: its socket is in CLOSE_WAIT from then on.
    // tcpbye's socket shows it: FIN_WAIT2 after `fin` (sock_diag) or `half` (TCP_INFO).
    let own_fin_wait2 = report
        .events
        .iter()
        .find(|e| {
            within(e.t_us) && e.kind == EventKind::State && e.state == Some(TcpState::FinWait2)
        })
        .map(|e| e.t_us);
    let fin_acked = own(TcpState::FinWait2)
        .or(own_fin_wait2)
        .or_else(|| fin_acked_on_wire(&since));

    let timed = |what: &str, t: Option<u64>| t.map(|t| format!("{what} +{}", fmt_us(after(t))));
    let mut evidence: Vec<String> = [
        timed("wire: its FIN", wire_fin),
        timed("wire: its RST", wire_rst),
        timed("its segment met tcpbye's RST", answered),
        timed("tcpbye's socket TIME_WAIT", own_time_wait),
        timed(
            "tcpbye's socket gone without TIME_WAIT (an RST: its own, or tcpbye's kernel's answer to data it wrote after the close)",
            own_gone,
        ),
        timed("tcpbye read ECONNRESET", reset),
        timed("tcpbye read EOF", eof),
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
    if mode == CloseMode::Hang
        && let Some(data) = data_since(&since)
    {
        evidence.push(data.describe(action));
    }

    let closed = [wire_fin, own_time_wait, eof].into_iter().flatten().min();
    let rst = [wire_rst, reset, own_gone].into_iter().flatten().min();
    let kernel_at_work = !probes.is_empty() || !retransmissions.is_empty();
    // After `drop` nothing answers its data: retransmissions that stop, with no
    // RST, mean its kernel gave up (its TCP_USER_TIMEOUT or tcp_retries2) —
    // probably: the wire cannot show a socket going away in silence.
    let stalled = (mode == CloseMode::Drop && closed.is_none() && rst.is_none())
        .then(|| stall(&since, &retransmissions, until))
        .flatten();
    let (reaction, noticed) = match (closed, rst) {
        (Some(c), r) if r.is_none_or(|r| c <= r) => (Reaction::Closed, Some(after(c))),
        (_, Some(t)) => {
            if silent && kernel_at_work {
                evidence.extend(gave_up_after_probes(&probes, t));
                (Reaction::KernelGaveUp, Some(after(t)))
            } else {
                (Reaction::Reset, Some(after(t)))
            }
        }
        _ => {
            if let Some(t) = answered {
                (Reaction::KernelGaveUp, Some(after(t)))
            } else if let Some(stall) = stalled {
                evidence.push(stall.describe(action));
                (Reaction::KernelGaveUp, Some(after(stall.due)))
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
            }
        }
    };
    if remote.captured {
        evidence.push("(a program on another host: judged from the wire)".into());
    } else {
        evidence.push("(a program on another host: judged from tcpbye's socket)".into());
    }

    let Prediction {
        would,
        words: prediction,
        advised,
    } = if reaction.noticed() {
        Prediction::noticed(noticed)
    } else if reaction == Reaction::Leaked {
        Prediction {
            would: None,
            words: "never: the kernel keeps a CLOSE_WAIT socket until the program closes it".into(),
            advised: None,
        }
    } else {
        predict(mode, &probes, &retransmissions, &since, action)
    };
    // Stopped retransmissions time it from the wire, somewhere between the last
    // one and the one the backoff had due.
    let timing = noticed.map(|n| match stalled.filter(|s| after(s.due) == n) {
        Some(s) => (TimedBy::Wire, s.due.saturating_sub(s.last)),
        None => timed_by(action + n, report, &[wire_fin, wire_rst, answered]),
    });
    CheckCase {
        schema: SCHEMA,
        kind: "check-case",
        mode,
        pid: None,
        fd: None,
        comm: None,
        tcpbye_addr: report.local,
        program_addr: Some(report.peer),
        saw: saw(mode),
        reaction,
        noticed_after_us: noticed,
        noticed_by: timing.map(|t| t.0),
        read_eof_after_us: None,
        reconnected_after_us: None,
        would_notice_after_us: would,
        resolution_us: Resolution {
            noticed: timing.map(|t| t.1),
            would_notice: would.map(|w| match timing {
                Some(t) if Some(w) == noticed => t.1,
                _ => 1_000,
            }),
            ..Resolution::default()
        },
        prediction,
        evidence: evidence.join("; "),
        advice: advice(
            mode,
            reaction,
            !probes.is_empty(),
            advised,
            None,
            &None,
            None,
        ),
        states: Vec::new(),
        action_t_us: Some(action),
        descriptor: None,
        settings: None,
        settings_from: (would.is_some() && !probes.is_empty()).then_some(SettingsFrom::Wire),
    }
}

/// A prediction: the time (`would_notice_after_us`), its words, and the time the
/// advice weighs against `--wait` (for a range, its likely end).
struct Prediction {
    would: Option<u64>,
    words: String,
    advised: Option<u64>,
}

impl Prediction {
    fn noticed(noticed: Option<u64>) -> Self {
        Self {
            would: noticed,
            words: "noticed".into(),
            advised: noticed,
        }
    }

    fn unknown(words: String) -> Self {
        Self {
            would: None,
            words,
            advised: None,
        }
    }
}

/// A silent ending not yet noticed: when its keepalive would give up, from the
/// probes seen on the wire. Their interval is seen; their count is not, so the
/// time is a range: from "the probes seen are all it sends" (`would`) to Linux's
/// default count.
fn predict(
    mode: CloseMode,
    probes: &[u64],
    retransmissions: &[u64],
    since: &[&Packet],
    action: u64,
) -> Prediction {
    let after = |t: u64| t.saturating_sub(action);
    match (mode, probes) {
        (CloseMode::Hang, [first, ..]) => Prediction::unknown(format!(
            "never by keepalive: a hung peer's kernel answers the probes (first +{})",
            fmt_us(after(*first))
        )),
        (CloseMode::Drop, [first, second, ..]) => {
            let interval = second.saturating_sub(*first);
            let seen = probes.len() as u64;
            // Its kernel gives up one interval after its last probe.
            let gives_up = |count: u64| after(*first).saturating_add(count.saturating_mul(interval));
            let low = gives_up(seen);
            let basis = format!(
                "first keepalive probe +{}, {seen} probes {} apart within the wait and no RST: its kernel gives up one interval after its last probe",
                fmt_us(after(*first)),
                fmt_us(interval),
            );
            if seen < DEFAULT_PROBES {
                let high = gives_up(DEFAULT_PROBES);
                Prediction {
                    would: Some(low),
                    words: format!(
                        "between ≈ {} and ≈ {}: {basis}, at +{} if it sends {seen} (its TCP_KEEPCNT is not visible from another host), at +{} with Linux's default {DEFAULT_PROBES}, later with more",
                        fmt_secs(low),
                        fmt_secs(high),
                        fmt_us(low),
                        fmt_us(high),
                    ),
                    advised: Some(high),
                }
            } else {
                Prediction {
                    would: Some(low),
                    words: format!(
                        "≈ {} at the earliest: {basis}, at +{} if it sends {seen} (its TCP_KEEPCNT is not visible from another host), later with more",
                        fmt_secs(low),
                        fmt_us(low),
                    ),
                    advised: Some(low),
                }
            }
        }
        (CloseMode::Drop, [first]) => Prediction::unknown(format!(
            "unknown: one keepalive probe within the wait (+{}), its interval not yet seen",
            fmt_us(after(*first))
        )),
        _ if !retransmissions.is_empty() => Prediction::unknown(
            "unknown: its data is unacknowledged; retransmissions end it after tcp_retries2 (≈ 15 min by default) or its TCP_USER_TIMEOUT".into(),
        ),
        (CloseMode::Hang, _) if data_since(since).is_some() => Prediction::unknown(
            "unknown: tcpbye's kernel acknowledges its data, so neither a retransmission nor a keepalive probe ends it; only an application timeout can, or its TCP_USER_TIMEOUT once tcpbye's receive window is full".into(),
        ),
        (CloseMode::Reboot, _) => Prediction::unknown(
            "never until it sends: nothing from it within the wait (no keepalive probe)".into(),
        ),
        _ => Prediction::unknown(
            "unknown: nothing from it within the wait (no keepalive probe, no retransmission)"
                .into(),
        ),
    }
}

/// Its RST ended a run of keepalive probes: how many it sent, which is its count.
fn gave_up_after_probes(probes: &[u64], rst: u64) -> Option<String> {
    let seen = probes.iter().filter(|t| **t < rst).count();
    (seen > 0).then(|| {
        let s = if seen == 1 { "" } else { "s" };
        format!(
            "its kernel reset the connection after {seen} keepalive probe{s} unanswered (its TCP_KEEPCNT, counted on the wire)"
        )
    })
}

/// Retransmissions that stopped: the last one, and when the next was due by the
/// backoff (each timeout twice the one before, up to [`RTO_MAX_US`]).
#[derive(Debug, Clone, Copy)]
struct Stall {
    last: u64,
    due: u64,
}

impl Stall {
    fn describe(self, action: u64) -> String {
        let after = |t: u64| fmt_us(t.saturating_sub(action));
        format!(
            "wire: its retransmissions stopped: none after +{last} though its backoff had the next due +{due}; its kernel probably gave up between +{last} and +{due} (its TCP_USER_TIMEOUT, or tcp_retries2: a likelihood, as no packet shows it)",
            last = after(self.last),
            due = after(self.due),
        )
    }
}

/// Whether its retransmissions stopped within the wait: at least two (so the
/// backoff is seen), nothing from it after the last, and the wait over a quarter
/// of a timeout past when the next was due.
fn stall(since: &[&Packet], retransmissions: &[u64], until: u64) -> Option<Stall> {
    let [.., previous, last] = *retransmissions else {
        return None;
    };
    let gap = last.saturating_sub(previous);
    let next = gap.saturating_mul(2).min(RTO_MAX_US.max(gap));
    let due = last.saturating_add(next);
    let later = since.iter().any(|p| !p.outgoing && p.t_us > last);
    (!later && gap > 0 && due.saturating_add(next / 4) <= until).then_some(Stall { last, due })
}

/// Its data that arrived after tcpbye's action, and how much of it tcpbye's
/// kernel acknowledged.
#[derive(Debug, Clone, Copy)]
struct Data {
    segments: usize,
    bytes: u64,
    first: u64,
    last: u64,
    acknowledged: usize,
}

impl Data {
    fn describe(self, action: u64) -> String {
        let after = |t: u64| fmt_us(t.saturating_sub(action));
        let acked = if self.acknowledged == self.segments {
            "each acknowledged by tcpbye's kernel".to_owned()
        } else {
            format!("{} acknowledged by tcpbye's kernel", self.acknowledged)
        };
        format!(
            "wire: its data, {} segments ({} bytes) +{} to +{}, {acked}",
            self.segments,
            self.bytes,
            after(self.first),
            after(self.last),
        )
    }
}

/// New data from it (not sent again) among `since`, with the acknowledgments
/// tcpbye's kernel sent for it.
fn data_since(since: &[&Packet]) -> Option<Data> {
    let data: Vec<&&Packet> = since
        .iter()
        .filter(|p| !p.outgoing && p.len > 0 && p.note.is_none())
        .collect();
    let (first, last) = (data.first()?, data.last()?);
    let acked = since
        .iter()
        .filter(|p| p.outgoing && p.flags.contains(&TcpFlag::Ack))
        .map(|p| p.ack)
        .next_back();
    let covered = |p: &Packet| {
        let end = p.seq.wrapping_add(p.len);
        acked.is_some_and(|ack| ack.wrapping_sub(end) < (1 << 31))
    };
    Some(Data {
        segments: data.len(),
        bytes: data.iter().map(|p| u64::from(p.len)).sum(),
        first: first.t_us,
        last: last.t_us,
        acknowledged: data.iter().filter(|p| covered(p)).count(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Afterlife, AfterlifeEnd, Event, Role, SideSample, Verdict};

    const ACTION: u64 = 200_000;
    const MS: u64 = 1_000;

    fn report(mode: CloseMode) -> Report {
        Report {
            close: Some(mode),
            close_t_us: Some(ACTION),
            ..Report::bare(
                Role::Connect,
                "10.111.2.2:7".parse().unwrap(),
                Verdict::Open,
            )
        }
    }

    /// A segment from the program (`outgoing` false) `after_ms` after the action.
    fn from_it(after_ms: u64, flags: &[TcpFlag], len: u32, note: Option<PacketNote>) -> Packet {
        Packet {
            t_us: ACTION + after_ms * MS,
            outgoing: false,
            flags: flags.to_vec(),
            seq: 1_000,
            ack: 1,
            len,
            note,
        }
    }

    fn captured(wait_ms: u64) -> Remote {
        Remote {
            captured: true,
            wait_us: wait_ms * MS,
        }
    }

    fn recv(after_us: u64, bytes: Option<u64>, errno: Option<&str>) -> Event {
        Event {
            bytes,
            errno: errno.map(str::to_owned),
            ..Event::new(ACTION + after_us, EventKind::Recv)
        }
    }

    fn own(after_us: u64, state: Option<TcpState>) -> SideSample {
        SideSample {
            t_us: ACTION + after_us,
            state,
            timer: None,
            recv_q: 0,
            send_q: 0,
            inode: 0,
            prev_t_us: None,
        }
    }

    const RETRANSMITTED: Option<PacketNote> = Some(PacketNote::Retransmission);

    /// Data sent again after `drop` at +262, +470, +902 and +1734 ms, as a program
    /// with TCP_USER_TIMEOUT 2 s sent it; the next was due at 1734 + 2 × 832 ms.
    fn retransmitting() -> Report {
        let mut r = report(CloseMode::Drop);
        r.packets = Some(
            [262, 470, 902, 1_734]
                .iter()
                .map(|ms| from_it(*ms, &[TcpFlag::Psh, TcpFlag::Ack], 1, RETRANSMITTED))
                .collect(),
        );
        r
    }

    #[test]
    fn retransmissions_that_stop_past_their_backoff_are_a_kernel_that_probably_gave_up() {
        let r = retransmitting();
        let c = judge(CloseMode::Drop, &r, ACTION, captured(6_000));
        assert_eq!(c.reaction, Reaction::KernelGaveUp);
        assert_eq!(c.noticed_after_us, Some(3_398 * MS));
        assert!(
            c.evidence
                .contains("probably gave up between +1.734s and +3.398s"),
            "{}",
            c.evidence
        );
        assert!(!c.evidence.contains("keepalive"), "{}", c.evidence);

        // A wait that ends before the next was due (and a quarter of its
        // timeout more) cannot tell a stop from a pause.
        let c = judge(CloseMode::Drop, &r, ACTION, captured(3_500));
        assert_eq!(c.reaction, Reaction::Unnoticed);
        assert_eq!(c.noticed_after_us, None);

        // Anything from it after the last one: not stopped.
        let mut late = retransmitting();
        if let Some(p) = late.packets.as_mut() {
            p.push(from_it(
                3_398,
                &[TcpFlag::Psh, TcpFlag::Ack],
                1,
                RETRANSMITTED,
            ));
        }
        let c = judge(CloseMode::Drop, &late, ACTION, captured(6_000));
        assert_eq!(c.reaction, Reaction::Unnoticed);
    }

    #[test]
    fn a_read_of_0_after_econnreset_is_no_fin() {
        let mut r = report(CloseMode::Half);
        r.events = vec![
            recv(300, None, Some("ECONNRESET")),
            recv(300, Some(0), None),
        ];
        let no_capture = Remote {
            captured: false,
            wait_us: 1_000 * MS,
        };
        let c = judge(CloseMode::Half, &r, ACTION, no_capture);
        assert_eq!(c.reaction, Reaction::Reset);
        assert_eq!(c.noticed_after_us, Some(300));

        r.events = vec![recv(300, Some(0), None)];
        let c = judge(CloseMode::Half, &r, ACTION, no_capture);
        assert_eq!(c.reaction, Reaction::Closed);
    }

    #[test]
    fn tcpbyes_socket_gone_without_time_wait_after_fin_is_an_rst_unless_time_wait_follows() {
        let no_capture = Remote {
            captured: false,
            wait_us: 1_000 * MS,
        };
        let mut r = report(CloseMode::Fin);
        r.afterlife = Some(Afterlife {
            states: vec![own(31, Some(TcpState::FinWait1)), own(6_025, None)],
            ended: AfterlifeEnd::Gone,
            watched_us: 6_025,
        });
        let c = judge(CloseMode::Fin, &r, ACTION, no_capture);
        assert_eq!(c.reaction, Reaction::Reset);
        assert_eq!(c.noticed_after_us, Some(6_025));
        assert!(c.evidence.contains("without TIME_WAIT"), "{}", c.evidence);

        // A lookup that missed the socket while it became a TIME_WAIT minisocket.
        r.afterlife = Some(Afterlife {
            states: vec![
                own(31, Some(TcpState::FinWait1)),
                own(5_000, None),
                own(10_000, Some(TcpState::TimeWait)),
            ],
            ended: AfterlifeEnd::TimeWait,
            watched_us: 10_000,
        });
        let c = judge(CloseMode::Fin, &r, ACTION, no_capture);
        assert_eq!(c.reaction, Reaction::Closed);
        assert_eq!(c.noticed_after_us, Some(10_000));
    }

    #[test]
    fn a_half_closed_socket_in_fin_wait2_without_a_fin_back_is_leaked() {
        let mut r = report(CloseMode::Half);
        r.events = vec![Event {
            state: Some(TcpState::FinWait2),
            ..Event::new(ACTION + 183_910, EventKind::State)
        }];
        let no_capture = Remote {
            captured: false,
            wait_us: 1_000 * MS,
        };
        let c = judge(CloseMode::Half, &r, ACTION, no_capture);
        assert_eq!(c.reaction, Reaction::Leaked);
        assert!(
            c.evidence
                .contains("its kernel acknowledged tcpbye's FIN +183.9ms"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn keepalive_probes_give_a_range_until_their_rst_gives_the_count() {
        let probe = |ms| from_it(ms, &[TcpFlag::Ack], 0, Some(PacketNote::Keepalive));
        let mut r = report(CloseMode::Drop);
        r.packets = Some(vec![probe(800), probe(1_824)]);
        let c = judge(CloseMode::Drop, &r, ACTION, captured(2_500));
        assert_eq!(c.reaction, Reaction::Unnoticed);
        // Two probes 1.024 s apart: 800 + 2 × 1024 ms if those are all, 800 + 9 × 1024 ms by default.
        assert_eq!(c.would_notice_after_us, Some(2_848 * MS));
        assert!(
            c.prediction.starts_with("between ≈ 2.848s and ≈ 10.016s"),
            "{}",
            c.prediction
        );
        assert_eq!(c.settings_from, Some(SettingsFrom::Wire));

        r.packets = Some(vec![
            probe(800),
            probe(1_824),
            probe(2_848),
            from_it(3_872, &[TcpFlag::Rst, TcpFlag::Ack], 0, None),
        ]);
        let c = judge(CloseMode::Drop, &r, ACTION, captured(6_000));
        assert_eq!(c.reaction, Reaction::KernelGaveUp);
        assert_eq!(c.noticed_after_us, Some(3_872 * MS));
        assert!(
            c.evidence.contains("after 3 keepalive probes unanswered"),
            "{}",
            c.evidence
        );
    }

    #[test]
    fn rst_is_not_judged_but_keeps_its_action_time() {
        let c = judge(
            CloseMode::Rst,
            &report(CloseMode::Rst),
            ACTION,
            captured(1_000),
        );
        assert_eq!(c.reaction, Reaction::NotJudged);
        assert_eq!(c.action_t_us, Some(ACTION));
    }
}
