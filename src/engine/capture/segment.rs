//! A captured TCP segment parsed, and named by what the kernel was doing when it
//! sent it: keepalive or zero-window probe, tail-loss probe, retransmission.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};

use crate::report::{Packet, PacketNote, TcpFlag};

/// `packets[].note`: what the kernel was doing when it sent the segment.
pub const KEEPALIVE: PacketNote = PacketNote::Keepalive;
pub const ZERO_WINDOW_PROBE: PacketNote = PacketNote::ZeroWindowProbe;
pub const TAIL_LOSS_PROBE: PacketNote = PacketNote::TailLossProbe;
pub const RETRANSMISSION: PacketNote = PacketNote::Retransmission;

/// One direction of a connection, as its captured segments (both ways) show it.
#[derive(Debug, Default)]
struct Flow {
    /// The highest sequence end sent: the sender's `snd_nxt`, as far as seen.
    high: Option<u32>,
    /// The highest acknowledgment sent back: the sender's `snd_una`, as far as seen.
    acked: Option<u32>,
    /// The receiver's last advertised window was zero.
    zero_window: bool,
    /// A retransmission went out since `acked` last advanced.
    retransmitted: bool,
    /// A retransmission other than a tail-loss probe started a recovery, which
    /// lasts until `acked` reaches this point; the kernel sends no probe in it.
    recovery_until: Option<u32>,
    /// The sender's SYN did not offer SACK: the kernel then sends no tail-loss probe.
    no_sack: bool,
}

/// Names the segments that the kernel's timers send, from the sequence numbers,
/// acknowledgments and windows seen in both directions:
///
/// - a segment one byte below what was already sent, with at most one byte, is a
///   probe: a zero-window probe (the persist timer) when the receiver's last
///   window was zero, else a keepalive probe. Linux sends both the same way, and
///   never a keepalive while data waits for a closed window. A keepalive is one
///   byte below what the receiver acknowledged, too: into an open window, a single
///   byte never acknowledged and sent again looks the same but starts at the
///   acknowledgment, and is a retransmission;
/// - a segment of at most one byte sent into a zero window is a zero-window probe;
/// - data, SYN or FIN below what was already sent is a retransmission, except the
///   first one since the receiver's last new acknowledgment when it re-sends the
///   last segment sent: that is a tail-loss probe (the loss-probe timer, RFC 8985),
///   which comes before any retransmission timeout and does not count as one.
#[derive(Debug, Default)]
pub struct Classifier {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
}

impl Classifier {
    pub fn classify(&mut self, seg: &Wire) -> Option<PacketNote> {
        let p = &seg.packet;
        let has = |flag: TcpFlag| p.flags.contains(&flag);
        if has(TcpFlag::Rst) {
            return None;
        }
        // What the segment tells about the other direction: its acknowledgment and window.
        if has(TcpFlag::Ack) {
            let back = self.flows.entry((seg.dst, seg.src)).or_default();
            if back.acked.is_none_or(|acked| before(acked, p.ack)) {
                back.acked = Some(p.ack);
                back.retransmitted = false;
                if back.recovery_until.is_some_and(|to| !before(p.ack, to)) {
                    back.recovery_until = None;
                }
            }
            back.zero_window = seg.window == 0;
        }
        let flow = self.flows.entry((seg.src, seg.dst)).or_default();
        if has(TcpFlag::Syn) {
            flow.no_sack = !seg.sack_permitted;
        }
        let syn_fin = u32::from(has(TcpFlag::Syn)) + u32::from(has(TcpFlag::Fin));
        let end = p.seq.wrapping_add(p.len + syn_fin);
        let note = flow.high.and_then(|high| {
            let probe = p.len <= 1 && syn_fin == 0;
            // A keepalive re-sends the byte below what the receiver acknowledged:
            // into an open window, one byte at the acknowledgment itself is data
            // that was never acknowledged, sent again.
            let below_acked = flow
                .acked
                .is_none_or(|acked| p.seq.wrapping_add(1) == acked);
            if probe && p.seq.wrapping_add(1) == high && (below_acked || flow.zero_window) {
                Some(if flow.zero_window {
                    ZERO_WINDOW_PROBE
                } else {
                    KEEPALIVE
                })
            } else if probe && p.len == 1 && p.seq == high && flow.zero_window {
                Some(ZERO_WINDOW_PROBE)
            } else if (p.len > 0 || syn_fin > 0) && before(p.seq, high) {
                let tail_probe = end == high
                    && !has(TcpFlag::Syn)
                    && !flow.retransmitted
                    && flow.recovery_until.is_none()
                    && !flow.no_sack;
                flow.retransmitted = true;
                if tail_probe {
                    Some(TAIL_LOSS_PROBE)
                } else {
                    flow.recovery_until.get_or_insert(high);
                    Some(RETRANSMISSION)
                }
            } else {
                None
            }
        });
        if flow.high.is_none_or(|high| before(high, end)) {
            flow.high = Some(end);
        }
        note
    }
}

/// Whether sequence number `a` comes before `b`, modulo 2³².
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A parsed TCP segment: its addresses, the report's view of it, and what only
/// the classifier needs.
#[derive(Debug, Clone)]
pub struct Wire {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub packet: Packet,
    /// The advertised window, unscaled (zero is zero at any scale).
    pub window: u16,
    /// The SACK-permitted option (in a SYN).
    pub sack_permitted: bool,
}

/// Parses an IP packet carrying TCP.
pub fn parse(data: &[u8]) -> Option<Wire> {
    let sliced = SlicedPacket::from_ip(data).ok()?;
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        NetSlice::Arp(_) => return None,
    };
    let TransportSlice::Tcp(tcp) = sliced.transport? else {
        return None;
    };
    let mut flags = Vec::new();
    for (set, name) in [
        (tcp.syn(), TcpFlag::Syn),
        (tcp.fin(), TcpFlag::Fin),
        (tcp.rst(), TcpFlag::Rst),
        (tcp.psh(), TcpFlag::Psh),
        (tcp.ack(), TcpFlag::Ack),
    ] {
        if set {
            flags.push(name);
        }
    }
    let sack_permitted = tcp
        .options_iterator()
        .any(|o| matches!(o, Ok(TcpOptionElement::SelectiveAcknowledgementPermitted)));
    Some(Wire {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        packet: Packet {
            t_us: 0,
            outgoing: false,
            flags,
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            len: tcp.payload().len() as u32,
            note: None,
        },
        window: tcp.window_size(),
        sack_permitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "127.0.0.1:40000";
    const B: &str = "127.0.0.1:7007";

    /// A segment from `from` with the given flags, numbers and window.
    fn seg(from: &str, flags: &[&'static str], seq: u32, ack: u32, len: u32, window: u16) -> Wire {
        let to = if from == A { B } else { A };
        Wire {
            src: from.parse().unwrap(),
            dst: to.parse().unwrap(),
            packet: Packet {
                t_us: 0,
                outgoing: false,
                flags: flags
                    .iter()
                    .map(|f| TcpFlag::from_name(f).expect("a flag name"))
                    .collect(),
                seq,
                ack,
                len,
                note: None,
            },
            window,
            sack_permitted: flags.contains(&"SYN"),
        }
    }

    /// The notes a classifier gives `segments`, in order.
    fn notes(segments: &[Wire]) -> Vec<Option<PacketNote>> {
        let mut c = Classifier::default();
        segments.iter().map(|s| c.classify(s)).collect()
    }

    fn handshake() -> Vec<Wire> {
        vec![
            seg(A, &["SYN"], 99, 0, 0, 65495),
            seg(B, &["SYN", "ACK"], 999, 100, 0, 65483),
            seg(A, &["ACK"], 100, 1000, 0, 64),
        ]
    }

    #[test]
    fn probes_into_a_zero_window_are_zero_window_probes_not_keepalives() {
        // B fills A's window; A advertises 0; B's persist timer probes one below
        // snd_una (as `serve --send 64M` against `connect --close hang` does).
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 500, 64),
            seg(A, &["ACK"], 100, 1500, 0, 0),
            seg(B, &["ACK"], 1499, 100, 0, 64),
            seg(A, &["ACK"], 100, 1500, 0, 0),
            seg(B, &["ACK"], 1499, 100, 0, 64),
        ]);
        let n = notes(&s);
        assert_eq!(
            n[5..],
            [Some(ZERO_WINDOW_PROBE), None, Some(ZERO_WINDOW_PROBE)]
        );
    }

    #[test]
    fn the_same_probe_into_an_open_window_is_a_keepalive() {
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 500, 64),
            seg(A, &["ACK"], 100, 1500, 0, 106),
            seg(B, &["ACK"], 1499, 100, 0, 64),
        ]);
        assert_eq!(notes(&s)[5], Some(KEEPALIVE));
    }

    #[test]
    fn one_unacknowledged_byte_sent_again_is_a_retransmission_not_a_keepalive() {
        // A program writing one byte at a time against `check --modes drop`:
        // the byte is never acknowledged, and the kernel sends it again alone.
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 1, 64),
            seg(A, &["ACK"], 100, 1001, 0, 64),
            seg(B, &["PSH", "ACK"], 1001, 100, 1, 64),
            seg(B, &["PSH", "ACK"], 1001, 100, 1, 64),
            seg(B, &["PSH", "ACK"], 1001, 100, 1, 64),
            seg(B, &["PSH", "ACK"], 1001, 100, 1, 64),
        ]);
        assert_eq!(
            notes(&s)[5..],
            [
                None,
                Some(TAIL_LOSS_PROBE),
                Some(RETRANSMISSION),
                Some(RETRANSMISSION)
            ]
        );
        // Once acknowledged, the same byte re-sent is a keepalive probe.
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 1, 64),
            seg(A, &["ACK"], 100, 1001, 0, 64),
            seg(B, &["ACK"], 1000, 100, 1, 64),
        ]);
        assert_eq!(notes(&s)[5], Some(KEEPALIVE));
    }

    #[test]
    fn a_one_byte_probe_into_a_zero_window_is_a_zero_window_probe() {
        // Other stacks probe with one new byte past the closed window.
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 500, 64),
            seg(A, &["ACK"], 100, 1500, 0, 0),
            seg(B, &["ACK"], 1500, 100, 1, 64),
            seg(A, &["ACK"], 100, 1500, 0, 0),
            seg(B, &["ACK"], 1500, 100, 1, 64),
        ]);
        let n = notes(&s);
        assert_eq!(n[5], Some(ZERO_WINDOW_PROBE));
        assert_eq!(n[7], Some(ZERO_WINDOW_PROBE));
    }

    #[test]
    fn a_single_unacknowledged_segment_gets_a_tail_loss_probe_then_timeouts() {
        // `serve --send-every 3s` against `connect --close drop`: TCP_INFO showed
        // total_retrans 1 with total_rto 0 after the first re-send, and ca_state
        // `loss` (an RTO) only from the second on.
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
        ]);
        assert_eq!(
            notes(&s)[3..],
            [
                None,
                Some(TAIL_LOSS_PROBE),
                Some(RETRANSMISSION),
                Some(RETRANSMISSION)
            ]
        );
    }

    #[test]
    fn the_probe_resends_the_last_segment_and_the_timeout_the_first() {
        // `serve --send-every 200ms` against `connect --close drop`.
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1016, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1016, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1032, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 48, 64),
        ]);
        assert_eq!(
            notes(&s)[3..],
            [
                None,
                None,
                Some(TAIL_LOSS_PROBE),
                None,
                Some(RETRANSMISSION)
            ]
        );
    }

    #[test]
    fn no_tail_loss_probe_inside_a_recovery_or_without_sack() {
        // A timeout re-sends the first of two segments; the ACK of that one alone
        // leaves the recovery on, so re-sending the last one is no probe.
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1016, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(A, &["ACK"], 100, 1016, 0, 64),
            seg(B, &["PSH", "ACK"], 1016, 100, 16, 64),
        ]);
        assert_eq!(
            notes(&s)[5..],
            [Some(RETRANSMISSION), None, Some(RETRANSMISSION)]
        );

        let mut s = handshake();
        s[1].sack_permitted = false;
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
        ]);
        assert_eq!(notes(&s)[4], Some(RETRANSMISSION));
    }

    #[test]
    fn a_new_acknowledgment_starts_a_new_episode_and_rst_is_never_named() {
        let mut s = handshake();
        s.extend([
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1000, 100, 16, 64),
            seg(A, &["ACK"], 100, 1016, 0, 64),
            seg(B, &["PSH", "ACK"], 1016, 100, 16, 64),
            seg(B, &["PSH", "ACK"], 1016, 100, 16, 64),
            seg(B, &["RST"], 1016, 0, 0, 0),
        ]);
        assert_eq!(
            notes(&s)[4..],
            [
                Some(TAIL_LOSS_PROBE),
                None,
                None,
                Some(TAIL_LOSS_PROBE),
                None
            ]
        );
    }
}
