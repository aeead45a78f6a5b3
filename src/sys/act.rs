//! Ending a running program's connection as its peer would, through a duplicate
//! of a descriptor (`pidfd_getfd(2)`): socket filters that make its peer go silent
//! or hang, a FIN or an RST from the peer's own socket when that is on this host,
//! and an RST with the right sequence numbers from a raw socket when it is not.
//! Nothing here is installed host-wide: a filter belongs to one socket and goes
//! with it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use socket2::{SockFilter, SockRef};

use super::linux::{
    TCP_RECV_QUEUE, TCP_REPAIR_OFF_NO_WP, TCP_SEND_QUEUE, cvt, get_int, set_int, unacked_bytes,
};

/// What a filter attached to the program's socket lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilentPeer {
    /// Nothing: every segment from the peer is discarded before TCP sees it, as
    /// behind a pulled cable (`drop`). The program's own segments still leave.
    Gone,
    /// Segments without payload and without FIN: the peer's kernel still ACKs
    /// the program's data and answers its keepalive probes, but no data and no
    /// FIN arrive, as from a hung process (`hang`).
    Hung,
}

/// Classic BPF, run with the TCP header at offset 0 (the IP header is already
/// pulled when `tcp_filter` runs the socket's filter).
const LD_B_ABS: u16 = 0x30;
const LD_W_LEN: u16 = 0x80;
const RSH_K: u16 = 0x74;
const AND_K: u16 = 0x54;
const SUB_X: u16 = 0x1c;
const TAX: u16 = 0x07;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// One classic BPF instruction: code, jump if true, jump if false, constant.
type Instruction = (u16, u8, u8, u32);

/// `ret #0`: every segment dropped.
const DROP_EVERYTHING: [Instruction; 1] = [(RET_K, 0, 0, 0)];

/// Drops a segment that carries payload (its length beyond the TCP header) or a FIN.
const DROP_DATA_AND_FIN: [Instruction; 11] = [
    (LD_B_ABS, 0, 0, 13),       // 0: flags
    (JSET_K, 8, 0, 0x01),       // 1: FIN → drop
    (LD_B_ABS, 0, 0, 12),       // 2: data offset (high nibble)
    (RSH_K, 0, 0, 2),           // 3
    (AND_K, 0, 0, 0x3c),        // 4: header length in bytes
    (TAX, 0, 0, 0),             // 5: X = header length
    (LD_W_LEN, 0, 0, 0),        // 6: A = segment length
    (SUB_X, 0, 0, 0),           // 7: A = payload length
    (JEQ_K, 0, 1, 0),           // 8: none → accept, else drop
    (RET_K, 0, 0, 0xffff_ffff), // 9: accept, whole
    (RET_K, 0, 0, 0),           // 10: drop
];

fn program(instructions: &[Instruction]) -> Vec<SockFilter> {
    instructions
        .iter()
        .map(|&(code, jt, jf, k)| SockFilter::new(code, jt, jf, k))
        .collect()
}

/// Attaches the filter for `peer` to the socket behind `fd` (`SO_ATTACH_FILTER`,
/// which needs no privilege on a socket one holds). It stays on the socket after
/// `fd` is closed: only `SO_DETACH_FILTER`, or the socket's end, removes it.
pub fn attach_silence(fd: BorrowedFd<'_>, peer: SilentPeer) -> io::Result<()> {
    let instructions: &[Instruction] = match peer {
        SilentPeer::Gone => &DROP_EVERYTHING,
        SilentPeer::Hung => &DROP_DATA_AND_FIN,
    };
    SockRef::from(&fd).attach_filter(&program(instructions))
}

/// Takes any filter off the socket behind `fd` (`SO_DETACH_FILTER`): its peer's
/// segments reach TCP again. `ENOENT` when it has none.
pub fn detach_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
    SockRef::from(&fd).detach_filter()
}

/// `shutdown(SHUT_WR)` on the socket behind `fd`: it sends its FIN and can still
/// read, whoever else holds it.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    SockRef::from(&fd).shutdown(std::net::Shutdown::Write)
}

/// `connect(AF_UNSPEC)` on the socket behind `fd`: the kernel's `tcp_disconnect`
/// sends an RST with the connection's own sequence numbers (so its peer reads
/// ECONNRESET) and leaves the socket unconnected, with `ECONNRESET` pending for
/// whoever holds it.
pub fn disconnect(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: sockaddr is plain old data; all-zero is a valid value (AF_UNSPEC = 0).
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: the pointer and length describe `addr`, which outlives the call.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &raw const addr,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Where a live connection stands, from its own side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSequences {
    /// The oldest byte it sent that is not yet acknowledged (`snd_una`).
    pub send_una: u32,
    /// The next byte it expects from its peer (`rcv_nxt`): the only sequence
    /// number its kernel accepts an RST at.
    pub recv_next: u32,
}

/// Reads the sequence numbers of a live, established socket: `TCP_REPAIR` on,
/// `TCP_QUEUE_SEQ` of both queues, `TCP_REPAIR` off without a window probe, and
/// `SO_REUSEADDR` as it was (leaving repair mode clears it). Nothing is sent.
/// For those few microseconds a `recv()` or `send()` of the program fails with
/// `EINVAL`; the connection itself is untouched. Needs CAP_NET_ADMIN.
pub fn live_sequences(fd: BorrowedFd<'_>) -> io::Result<LiveSequences> {
    use nix::sys::socket::{setsockopt, sockopt::TcpRepair};
    let sock = SockRef::from(&fd);
    let reuse = sock.reuse_address()?;
    setsockopt(&fd, TcpRepair, &1).map_err(io::Error::from)?;
    let read = (|| {
        set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
        let write_seq = get_int(fd, libc::TCP_QUEUE_SEQ)? as u32;
        set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
        let recv_next = get_int(fd, libc::TCP_QUEUE_SEQ)? as u32;
        set_int(fd, libc::TCP_REPAIR_QUEUE, 0)?;
        Ok::<_, io::Error>((write_seq, recv_next))
    })();
    let off = setsockopt(&fd, TcpRepair, &TCP_REPAIR_OFF_NO_WP).map_err(io::Error::from);
    let restored = sock.set_reuse_address(reuse);
    let (write_seq, recv_next) = read?;
    off?;
    restored?;
    // Bytes written and not yet acknowledged: sent or still queued.
    let unacked = unacked_bytes(fd).unwrap_or(0) as u32;
    Ok(LiveSequences {
        send_una: write_seq.wrapping_sub(unacked),
        recv_next,
    })
}

/// Sends one RST|ACK from `from` to `to` through a raw socket of this thread's
/// network namespace (`IPPROTO_RAW`, the IP header written here): sequence
/// number `seq`, acknowledging `ack`, as `from`'s kernel would abort. Needs
/// CAP_NET_RAW.
pub fn send_rst(from: SocketAddr, to: SocketAddr, seq: u32, ack: u32) -> io::Result<()> {
    let tcp = |pseudo: &[u8]| {
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&from.port().to_be_bytes());
        h[2..4].copy_from_slice(&to.port().to_be_bytes());
        h[4..8].copy_from_slice(&seq.to_be_bytes());
        h[8..12].copy_from_slice(&ack.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = 0x14; // RST|ACK
        let sum = checksum(&[pseudo, &h]);
        h[16..18].copy_from_slice(&sum.to_be_bytes());
        h
    };
    match (from.ip().to_canonical(), to.ip().to_canonical()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
            let mut packet = vec![
                0x45,
                0,
                0,
                40,
                0,
                0,
                0x40,
                0,
                64,
                libc::IPPROTO_TCP as u8,
                0,
                0,
            ];
            packet.extend_from_slice(&src.octets());
            packet.extend_from_slice(&dst.octets());
            packet.extend_from_slice(&tcp(&pseudo));
            let dest = SocketAddr::new(IpAddr::V4(dst), 0);
            send_raw(libc::AF_INET, &packet, dest, None)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, libc::IPPROTO_TCP as u8]);
            let mut packet = vec![0x60, 0, 0, 0, 0, 20, libc::IPPROTO_TCP as u8, 64];
            packet.extend_from_slice(&src.octets());
            packet.extend_from_slice(&dst.octets());
            packet.extend_from_slice(&tcp(&pseudo));
            let dest = SocketAddr::new(IpAddr::V6(dst), 0);
            send_raw(libc::AF_INET6, &packet, dest, Some(IPV6_HDRINCL))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an RST between an IPv4 and an IPv6 address",
        )),
    }
}

/// `IPV6_HDRINCL` (linux/in6.h): the IPv6 header is the caller's.
const IPV6_HDRINCL: libc::c_int = 36;

fn send_raw(
    family: libc::c_int,
    packet: &[u8],
    dest: SocketAddr,
    hdrincl: Option<libc::c_int>,
) -> io::Result<()> {
    // SAFETY: socket() takes three integers and returns a new descriptor or -1.
    let raw = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    })?;
    // SAFETY: a descriptor just returned to this process, owned by no one else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(option) = hdrincl {
        let on: libc::c_int = 1;
        // SAFETY: the pointer and length describe `on`, which outlives the call.
        cvt(unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                option,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    let dest = socket2::SockAddr::from(dest);
    // SAFETY: the buffer and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            dest.as_ptr().cast(),
            dest.len(),
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`, each of
/// even length.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_of_a_segment_with_its_checksum_is_zero() {
        // RFC 1071's example words, then the checksum written in: the sum folds to 0xffff.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let sum = checksum(&[&data]);
        assert_eq!(sum, !0xddf2);
        let with = [&data[..], &sum.to_be_bytes()[..]].concat();
        assert_eq!(checksum(&[&with]), 0);
    }

    #[test]
    fn the_hung_filter_drops_data_and_fin_and_keeps_acks() {
        /// Runs `prog` the way the kernel does, on a segment from its TCP header on.
        fn run(prog: &[Instruction], segment: &[u8]) -> u32 {
            let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
            loop {
                let (code, jt, jf, k) = prog[pc];
                pc += 1;
                match code {
                    LD_B_ABS => a = u32::from(segment[k as usize]),
                    LD_W_LEN => a = segment.len() as u32,
                    RSH_K => a >>= k,
                    AND_K => a &= k,
                    SUB_X => a = a.wrapping_sub(x),
                    TAX => x = a,
                    JEQ_K => pc += usize::from(if a == k { jt } else { jf }),
                    JSET_K => pc += usize::from(if a & k != 0 { jt } else { jf }),
                    RET_K => return k,
                    _ => unreachable!(),
                }
            }
        }
        let header = |flags: u8, doff_words: u8, payload: usize| {
            let mut s = vec![0u8; usize::from(doff_words) * 4 + payload];
            s[12] = doff_words << 4;
            s[13] = flags;
            s
        };
        let filter = DROP_DATA_AND_FIN;
        assert_eq!(run(&DROP_EVERYTHING, &header(0x10, 5, 0)), 0);
        // A pure ACK, with or without options (timestamps: 8 words).
        assert_ne!(run(&filter, &header(0x10, 5, 0)), 0);
        assert_ne!(run(&filter, &header(0x10, 8, 0)), 0);
        // Data, a FIN, a FIN with data: dropped.
        assert_eq!(run(&filter, &header(0x18, 8, 100)), 0);
        assert_eq!(run(&filter, &header(0x11, 5, 0)), 0);
        assert_eq!(run(&filter, &header(0x19, 8, 5)), 0);
        // An RST passes: its kernel's own.
        assert_ne!(run(&filter, &header(0x14, 5, 0)), 0);
    }
}
