//! `--pcap`: the connection's packets, both directions, from an `AF_PACKET`
//! socket in the event loop, written to a pcap file (raw IP link type) and
//! handed to the connection they belong to. Needs CAP_NET_RAW. What each
//! segment is (probe, retransmission) is told in [`segment`].

mod segment;

use segment::{Classifier, parse};

use std::fs::File;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    sockopt,
};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use socket2::{SockFilter, Socket};

use super::timers::later;
use crate::error::Failure;
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
/// connection's own segments out of the socket's buffer. On loopback (interface
/// `lo_index`) each packet passes twice, leaving and arriving: the copy leaving is
/// dropped here too, so it neither fills the buffer nor counts as a drop.
fn kernel_filter(port: u16, lo_index: u32) -> [SockFilter; 23] {
    const LD_W_ABS: u16 = 0x20; // A = u32 at k (or an ancillary field)
    const SKF_AD_PKTTYPE: u32 = 0xffff_f000 + 4;
    const SKF_AD_IFINDEX: u32 = 0xffff_f000 + 8;
    const LD_B_ABS: u16 = 0x30; // A = byte at k
    const LD_H_ABS: u16 = 0x28; // A = big-endian u16 at k
    const LD_H_IND: u16 = 0x48; // A = big-endian u16 at X + k
    const LDX_B_MSH: u16 = 0xb1; // X = 4 * (byte at k & 0xf): the IPv4 header length
    const RSH_K: u16 = 0x74; // A >>= k
    const JEQ_K: u16 = 0x15; // if A == k skip jt, else skip jf
    const RET_K: u16 = 0x06; // accept k bytes (0 = drop)
    let p = u32::from(port);
    let ins = SockFilter::new;
    let outgoing = u32::from(PACKET_OUTGOING);
    [
        ins(LD_W_ABS, 0, 0, SKF_AD_PKTTYPE), // leaving?
        ins(JEQ_K, 0, 2, outgoing),          // no: to 0
        ins(LD_W_ABS, 0, 0, SKF_AD_IFINDEX), // on lo?
        ins(JEQ_K, 18, 0, lo_index),         // yes: to 18, drop
        ins(LD_B_ABS, 0, 0, 0),              // 0: version nibble…
        ins(RSH_K, 0, 0, 4),                 // 1
        ins(JEQ_K, 0, 7, 4),                 // 2: IPv4? else 10
        ins(LD_B_ABS, 0, 0, 9),              // 3: IPv4 protocol
        ins(JEQ_K, 0, 13, 6),                // 4: TCP? else drop
        ins(LDX_B_MSH, 0, 0, 0),             // 5: X = header length
        ins(LD_H_IND, 0, 0, 0),              // 6: source port
        ins(JEQ_K, 9, 0, p),                 // 7: → accept
        ins(LD_H_IND, 0, 0, 2),              // 8: destination port
        ins(JEQ_K, 7, 8, p),                 // 9: → accept, else drop
        ins(JEQ_K, 0, 7, 6),                 // 10: IPv6? else drop
        ins(LD_B_ABS, 0, 0, 6),              // 11: next header
        ins(JEQ_K, 0, 5, 6),                 // 12: TCP? else drop
        ins(LD_H_ABS, 0, 0, 40),             // 13: source port
        ins(JEQ_K, 2, 0, p),                 // 14: → accept
        ins(LD_H_ABS, 0, 0, 42),             // 15: destination port
        ins(JEQ_K, 0, 1, p),                 // 16: → accept, else drop
        ins(RET_K, 0, 0, 0xffff),            // 17: accept
        ins(RET_K, 0, 0, 0),                 // 18: drop
    ]
}

pub struct Capture {
    sock: Socket,
    /// Unbuffered: each packet reaches the file as it is read, so a reader (or an
    /// interrupted run) sees everything captured so far. `None`: packets only go
    /// to the reports (`check` of a program on another host).
    writer: Option<PcapWriter<File>>,
    filter: Filter,
    lo_index: usize,
    /// Instant and wall clock at the same moment, to place kernel timestamps.
    epoch: (Instant, SystemTime),
    /// Names probes and retransmissions from what each direction has shown.
    classifier: Classifier,
    pub written: u64,
    /// Packets the kernel dropped for want of room in the socket's buffer.
    dropped: u64,
}

impl Capture {
    /// Opens the capture socket and the pcap file, if any.
    pub fn open(file: Option<&PcapFile>, filter: Filter) -> anyhow::Result<Self> {
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
        let writer = match file {
            Some(file) => {
                let header = PcapHeader {
                    datalink: DataLink::RAW,
                    ..PcapHeader::default()
                };
                let writer = PcapWriter::with_header(create(file)?, header)
                    .map_err(io_error)
                    .with_context(|| format!("write {}", file.path.display()))?;
                Some(writer)
            }
            None => None,
        };
        let lo_index = nix::net::if_::if_nametoindex("lo").map_or(0, |i| i as usize);
        let mut capture = Self {
            sock,
            writer,
            filter,
            lo_index,
            epoch: (Instant::now(), SystemTime::now()),
            classifier: Classifier::default(),
            written: 0,
            dropped: 0,
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
                .attach_filter(&kernel_filter(filter.addr.port(), self.lo_index as u32))
                .context("SO_ATTACH_FILTER on the capture socket")?;
        }
        Ok(())
    }

    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Packets the kernel dropped so far because this socket's buffer was full
    /// (the loop fell behind): missing from the file and from the reports.
    pub fn dropped(&mut self) -> u64 {
        if let Ok((_, drops)) = crate::sys::packet_statistics(self.sock.as_fd()) {
            self.dropped += u64::from(drops);
        }
        self.dropped
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
            if let Some(writer) = &mut self.writer {
                writer
                    .write_packet(&PcapPacket::new(wall, len as u32, data))
                    .map_err(io_error)
                    .context("write the pcap file")?;
                self.written += 1;
            }
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

/// Creates the pcap file without following a symbolic link, and without
/// replacing an existing file unless `--force` said so. Only a regular file or
/// a character device (`/dev/null`): a FIFO or a socket, which can block the
/// loop, is refused, and opening never blocks (on a FIFO without a reader,
/// open() would wait for one with the signals already blocked).
fn create(file: &PcapFile) -> anyhow::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = &file.path;
    let writable = |t: std::fs::FileType| t.is_file() || t.is_char_device();
    let refused = || {
        Failure::Usage(format!(
            "--pcap {}: a FIFO or a socket could block tcpbye; --pcap writes a regular file",
            path.display()
        ))
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_symlink() && !writable(m.file_type())) {
        return Err(refused().into());
    }
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits());
    if file.replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let options = options.open(path).map_err(|e| {
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let why = match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EEXIST | Errno::ELOOP) if link => {
                "it is a symbolic link, which --pcap never writes through".to_owned()
            }
            Some(Errno::EEXIST) => "the file exists; add --force to replace it".to_owned(),
            _ => e.to_string(),
        };
        anyhow::anyhow!("--pcap {}: {why}", path.display())
    });
    // What was opened, not what the path named a moment before.
    let file = options?;
    match file.metadata() {
        Ok(meta) if writable(meta.file_type()) => Ok(file),
        Ok(_) => Err(refused().into()),
        Err(e) => Err(e).with_context(|| format!("--pcap {}", path.display())),
    }
}

/// pcap-file's I/O error as the operating system's own, so that a failed write
/// says what failed (its own text says "Error reading bytes" for writes too).
fn io_error(e: pcap_file::PcapError) -> anyhow::Error {
    match e {
        pcap_file::PcapError::IoError(io) => io.into(),
        other => other.into(),
    }
}
