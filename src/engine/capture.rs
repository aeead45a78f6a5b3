//! `--pcap`: the connection's packets, both directions, from an `AF_PACKET`
//! socket in the event loop, written to a pcap file (raw IP link type) and
//! handed to the connection they belong to. Needs CAP_NET_RAW.

use std::collections::HashMap;
use std::fs::File;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    sockopt,
};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use socket2::{SockFilter, Socket};

use super::timers::later;
use crate::plan::PcapFile;
use crate::report::Packet;

/// `PACKET_OUTGOING`: on `lo` every packet is seen leaving and arriving; keep one.
const PACKET_OUTGOING: u8 = 4;
/// How long receive timestamping takes to come on after it is asked for.
const TIMESTAMPS_SETTLE: Duration = Duration::from_millis(20);
/// Most packets read per wake-up before other work gets a turn.
const BATCH: usize = 256;
/// The capture socket's receive buffer: room for bursts while the loop is busy.
const RECV_BUFFER: usize = 4 << 20;

/// A segment of a watched connection, addressed by its 4-tuple.
#[derive(Debug, Clone)]
pub struct Segment {
    pub at: Instant,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub packet: Packet,
}

/// Which packets to keep: those to or from `addr` (port only when its IP is unspecified).
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    pub addr: SocketAddr,
}

impl Filter {
    fn matches(&self, src: SocketAddr, dst: SocketAddr) -> bool {
        let hit = |a: SocketAddr| {
            a.port() == self.addr.port()
                && (self.addr.ip().is_unspecified()
                    || canonical(a.ip()) == canonical(self.addr.ip()))
        };
        hit(src) || hit(dst)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A classic BPF program for a cooked (`SOCK_DGRAM`) packet socket: keep IPv4 and
/// IPv6 TCP segments with `port` as source or destination port, drop everything
/// else in the kernel, so that the rest of the host's traffic can never crowd the
/// connection's own segments out of the socket's buffer.
fn kernel_filter(port: u16) -> [SockFilter; 19] {
    const LD_B_ABS: u16 = 0x30; // A = byte at k
    const LD_H_ABS: u16 = 0x28; // A = big-endian u16 at k
    const LD_H_IND: u16 = 0x48; // A = big-endian u16 at X + k
    const LDX_B_MSH: u16 = 0xb1; // X = 4 * (byte at k & 0xf): the IPv4 header length
    const RSH_K: u16 = 0x74; // A >>= k
    const JEQ_K: u16 = 0x15; // if A == k skip jt, else skip jf
    const RET_K: u16 = 0x06; // accept k bytes (0 = drop)
    let p = u32::from(port);
    let ins = SockFilter::new;
    [
        ins(LD_B_ABS, 0, 0, 0),   // 0: version nibble…
        ins(RSH_K, 0, 0, 4),      // 1
        ins(JEQ_K, 0, 7, 4),      // 2: IPv4? else 10
        ins(LD_B_ABS, 0, 0, 9),   // 3: IPv4 protocol
        ins(JEQ_K, 0, 13, 6),     // 4: TCP? else drop
        ins(LDX_B_MSH, 0, 0, 0),  // 5: X = header length
        ins(LD_H_IND, 0, 0, 0),   // 6: source port
        ins(JEQ_K, 9, 0, p),      // 7: → accept
        ins(LD_H_IND, 0, 0, 2),   // 8: destination port
        ins(JEQ_K, 7, 8, p),      // 9: → accept, else drop
        ins(JEQ_K, 0, 7, 6),      // 10: IPv6? else drop
        ins(LD_B_ABS, 0, 0, 6),   // 11: next header
        ins(JEQ_K, 0, 5, 6),      // 12: TCP? else drop
        ins(LD_H_ABS, 0, 0, 40),  // 13: source port
        ins(JEQ_K, 2, 0, p),      // 14: → accept
        ins(LD_H_ABS, 0, 0, 42),  // 15: destination port
        ins(JEQ_K, 0, 1, p),      // 16: → accept, else drop
        ins(RET_K, 0, 0, 0xffff), // 17: accept
        ins(RET_K, 0, 0, 0),      // 18: drop
    ]
}

pub struct Capture {
    sock: Socket,
    /// Unbuffered: each packet reaches the file as it is read, so a reader (or an
    /// interrupted run) sees everything captured so far.
    writer: PcapWriter<File>,
    filter: Filter,
    lo_index: usize,
    /// Instant and wall clock at the same moment, to place kernel timestamps.
    epoch: (Instant, SystemTime),
    /// Names probes and retransmissions from what each direction has shown.
    classifier: Classifier,
    pub written: u64,
}

impl Capture {
    /// Opens the capture socket and the pcap file.
    pub fn open(file: &PcapFile, filter: Filter) -> anyhow::Result<Self> {
        let fd = socket::socket(
            AddressFamily::Packet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .context("socket(AF_PACKET) for --pcap")?;
        socket::setsockopt(&fd, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
        let sock = Socket::from(fd);
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = sock.set_recv_buffer_size(RECV_BUFFER);
        // The kernel turns receive timestamps on for the whole stack a moment later
        // (a deferred static key); packets in between would carry none and be stamped
        // when read. Let it settle before the first connection's handshake.
        std::thread::sleep(TIMESTAMPS_SETTLE);
        let path = &file.path;
        let file = create(file)?;
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(file, header)
            .map_err(io_error)
            .with_context(|| format!("write {}", path.display()))?;
        let lo_index = nix::net::if_::if_nametoindex("lo").map_or(0, |i| i as usize);
        let mut capture = Self {
            sock,
            writer,
            filter,
            lo_index,
            epoch: (Instant::now(), SystemTime::now()),
            classifier: Classifier::default(),
            written: 0,
        };
        capture.set_filter(filter)?;
        Ok(capture)
    }

    /// Keeps the packets that `filter` matches; the kernel drops the other ports'
    /// (port 0, not yet known, keeps every TCP segment until a port is set).
    pub fn set_filter(&mut self, filter: Filter) -> anyhow::Result<()> {
        self.filter = filter;
        if filter.addr.port() != 0 {
            self.sock
                .attach_filter(&kernel_filter(filter.addr.port()))
                .context("SO_ATTACH_FILTER on the capture socket")?;
        }
        Ok(())
    }

    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Reads what is waiting; writes matching packets to the file and returns them.
    pub fn drain(&mut self) -> anyhow::Result<(Vec<Segment>, bool)> {
        let mut segments = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        for _ in 0..BATCH {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match socket::recvmsg::<LinkAddr>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_TRUNC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EAGAIN) => return Ok((segments, false)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("recvmsg(AF_PACKET)"),
            };
            let len = msg.bytes;
            let outgoing_on_lo = msg
                .address
                .is_some_and(|a| a.pkttype() == PACKET_OUTGOING && a.ifindex() == self.lo_index);
            let wall = msg
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => Some(Duration::from(ts)),
                    _ => None,
                })
                .unwrap_or_else(|| {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                });
            if outgoing_on_lo {
                continue;
            }
            let data = &buf[..len.min(buf.len())];
            let Some(mut wire) = parse(data) else {
                continue;
            };
            if !self.filter.matches(wire.src, wire.dst) {
                continue;
            }
            self.writer
                .write_packet(&PcapPacket::new(wall, len as u32, data))
                .map_err(io_error)
                .context("write the pcap file")?;
            self.written += 1;
            wire.packet.note = self.classifier.classify(&wire);
            segments.push(Segment {
                at: self.instant_of(wall),
                src: wire.src,
                dst: wire.dst,
                packet: wire.packet,
            });
        }
        Ok((segments, true))
    }

    fn instant_of(&self, wall: Duration) -> Instant {
        let (instant, system) = self.epoch;
        let base = system.duration_since(UNIX_EPOCH).unwrap_or_default();
        match wall.checked_sub(base) {
            Some(ahead) => later(instant, ahead),
            None => instant.checked_sub(base - wall).unwrap_or(instant),
        }
    }
}

/// `packets[].note`: what the kernel was doing when it sent the segment.
pub const KEEPALIVE: &str = "keepalive";
pub const ZERO_WINDOW_PROBE: &str = "zero-window-probe";
pub const TAIL_LOSS_PROBE: &str = "tail-loss-probe";
pub const RETRANSMISSION: &str = "retransmission";

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
///   never a keepalive while data waits for a closed window;
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
    pub fn classify(&mut self, seg: &Wire) -> Option<&'static str> {
        let p = &seg.packet;
        let has = |flag: &str| p.flags.contains(&flag);
        if has("RST") {
            return None;
        }
        // What the segment tells about the other direction: its acknowledgment and window.
        if has("ACK") {
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
        if has("SYN") {
            flow.no_sack = !seg.sack_permitted;
        }
        let syn_fin = u32::from(has("SYN")) + u32::from(has("FIN"));
        let end = p.seq.wrapping_add(p.len + syn_fin);
        let note = flow.high.and_then(|high| {
            let probe = p.len <= 1 && syn_fin == 0;
            if probe && p.seq.wrapping_add(1) == high {
                Some(if flow.zero_window {
                    ZERO_WINDOW_PROBE
                } else {
                    KEEPALIVE
                })
            } else if probe && p.len == 1 && p.seq == high && flow.zero_window {
                Some(ZERO_WINDOW_PROBE)
            } else if (p.len > 0 || syn_fin > 0) && before(p.seq, high) {
                let tail_probe = end == high
                    && !has("SYN")
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
fn parse(data: &[u8]) -> Option<Wire> {
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
        (tcp.syn(), "SYN"),
        (tcp.fin(), "FIN"),
        (tcp.rst(), "RST"),
        (tcp.psh(), "PSH"),
        (tcp.ack(), "ACK"),
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

/// Creates the pcap file without following a symbolic link, and without
/// replacing an existing file unless `--force` said so.
fn create(file: &PcapFile) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = &file.path;
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    if file.replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.open(path).map_err(|e| {
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let why = match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EEXIST | Errno::ELOOP) if link => {
                "it is a symbolic link, which --pcap never writes through".to_owned()
            }
            Some(Errno::EEXIST) => "the file exists; add --force to replace it".to_owned(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("--pcap {}: {why}", path.display())
    })
}

/// pcap-file's I/O error as the operating system's own, so that a failed write
/// says what failed (its own text says "Error reading bytes" for writes too).
fn io_error(e: pcap_file::PcapError) -> anyhow::Error {
    match e {
        pcap_file::PcapError::IoError(io) => io.into(),
        other => other.into(),
    }
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
                flags: flags.to_vec(),
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
    fn notes(segments: &[Wire]) -> Vec<Option<&'static str>> {
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
