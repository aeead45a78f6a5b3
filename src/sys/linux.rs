//! Linux socket calls that neither socket2 nor nix offers safely.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::tcp_info::{CaState, TcpInfo, TcpState};

/// A libc call's return value as a `Result`: -1 (any negative) means `errno`.
pub(super) fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// send() with `MSG_NOSIGNAL`, so that writing to a reset peer fails with
/// EPIPE instead of raising SIGPIPE.
pub fn send_nosignal(sock: &socket2::Socket, bytes: &[u8]) -> io::Result<usize> {
    sock.send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

/// accept() whose socket is non-blocking (and close-on-exec) from the start:
/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`, no fcntl() pair per connection.
pub fn accept_nonblocking(
    listener: &socket2::Socket,
) -> io::Result<(socket2::Socket, socket2::SockAddr)> {
    listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

/// A non-blocking connect() that is still under way (`EINPROGRESS`).
pub fn is_in_progress(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINPROGRESS)
}

/// The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`).
pub fn is_fd_limit(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Reads `TCP_INFO`, honouring the length the running kernel returns.
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut raw: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `raw`, which outlives the call.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut raw).cast(),
            &mut len,
        )
    })?;
    Ok(from_raw(&raw, len as usize))
}

/// Converts a kernel `tcp_info` of which only the first `len` bytes were filled
/// (by `getsockopt` or an `INET_DIAG_INFO` attribute): later fields are `None`.
pub(super) fn from_raw(raw: &libc::tcp_info, len: usize) -> TcpInfo {
    let has = |end: usize| len >= end;
    macro_rules! field {
        ($name:ident) => {
            has(offset_of!(libc::tcp_info, $name) + size_of_val(&raw.$name)).then_some(raw.$name)
        };
    }
    TcpInfo {
        state: TcpState::from_kernel(raw.tcpi_state),
        ca_state: CaState::from_kernel(raw.tcpi_ca_state),
        retransmits: raw.tcpi_retransmits,
        probes: raw.tcpi_probes,
        backoff: raw.tcpi_backoff,
        rto: raw.tcpi_rto,
        ato: raw.tcpi_ato,
        snd_mss: raw.tcpi_snd_mss,
        rcv_mss: raw.tcpi_rcv_mss,
        unacked: raw.tcpi_unacked,
        sacked: raw.tcpi_sacked,
        lost: raw.tcpi_lost,
        retrans: raw.tcpi_retrans,
        last_data_sent: raw.tcpi_last_data_sent,
        last_data_recv: raw.tcpi_last_data_recv,
        last_ack_recv: raw.tcpi_last_ack_recv,
        pmtu: raw.tcpi_pmtu,
        rtt: raw.tcpi_rtt,
        rttvar: raw.tcpi_rttvar,
        snd_ssthresh: raw.tcpi_snd_ssthresh,
        snd_cwnd: raw.tcpi_snd_cwnd,
        advmss: raw.tcpi_advmss,
        reordering: raw.tcpi_reordering,
        rcv_space: raw.tcpi_rcv_space,
        total_retrans: raw.tcpi_total_retrans,
        bytes_acked: field!(tcpi_bytes_acked),
        bytes_received: field!(tcpi_bytes_received),
        segs_out: field!(tcpi_segs_out),
        segs_in: field!(tcpi_segs_in),
        notsent_bytes: field!(tcpi_notsent_bytes),
        min_rtt: field!(tcpi_min_rtt),
        data_segs_in: field!(tcpi_data_segs_in),
        data_segs_out: field!(tcpi_data_segs_out),
        delivered: field!(tcpi_delivered),
        bytes_sent: field!(tcpi_bytes_sent),
        bytes_retrans: field!(tcpi_bytes_retrans),
        snd_wnd: field!(tcpi_snd_wnd),
        rcv_wnd: field!(tcpi_rcv_wnd),
        total_rto: field!(tcpi_total_rto),
        total_rto_recoveries: field!(tcpi_total_rto_recoveries),
        total_rto_time: field!(tcpi_total_rto_time),
    }
}

/// A packet socket's counters since the last reading (`PACKET_STATISTICS`, which
/// resets them): packets that reached the socket, and those dropped because its
/// receive buffer was full.
pub fn packet_statistics(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    /// `struct tpacket_stats` (linux/if_packet.h).
    #[repr(C)]
    #[derive(Default)]
    struct Stats {
        packets: u32,
        drops: u32,
    }
    let mut stats = Stats::default();
    let mut len = size_of::<Stats>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `stats`, which outlives the call.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        )
    })?;
    Ok((stats.packets, stats.drops))
}

/// Bytes received and not yet read (`FIONREAD`/`SIOCINQ`).
pub fn unread_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Bytes sent and not yet acknowledged by the peer (`SIOCOUTQ`).
pub fn unacked_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one c_int through the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `CAP_NET_ADMIN` in the effective set of this process (in its own user namespace).
pub fn has_net_admin() -> bool {
    has_capability(12)
}

/// `CAP_NET_RAW` in the effective set of this process.
pub fn has_net_raw() -> bool {
    has_capability(13)
}

fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// Moves this (single-threaded) process into a network namespace of its own,
/// with a user namespace first when not privileged, and brings `lo` up.
/// The namespace ends with the process: nothing is left behind.
pub fn enter_own_netns(privileged: bool) -> io::Result<()> {
    use nix::sched::{CloneFlags, unshare};
    let flags = if privileged {
        CloneFlags::CLONE_NEWNET
    } else {
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET
    };
    unshare(flags).map_err(io::Error::from)?;
    loopback_up()
}

/// `ip link set lo up` through SIOCSIFFLAGS.
fn loopback_up() -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags inside `req`.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// Raises the soft open-file limit to the hard limit; returns (before, after).
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok((soft, hard))
}

/// `TCP_REPAIR_QUEUE` values: which queue `TCP_QUEUE_SEQ` reads or sets.
pub(super) const TCP_RECV_QUEUE: libc::c_int = 1;
pub(super) const TCP_SEND_QUEUE: libc::c_int = 2;
/// `TCP_REPAIR` value that leaves repair mode without sending a window probe.
pub(super) const TCP_REPAIR_OFF_NO_WP: u32 = -1_i32 as u32;

/// Where a connection stood when its socket vanished without a packet (closed in
/// repair mode): enough to put a socket back in its place later and reset the
/// peer with sequence numbers the peer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanished {
    pub local: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
    /// The next sequence number this side would have sent (the peer's `rcv_nxt`).
    pub send_seq: u32,
    /// The next sequence number this side expected.
    pub recv_seq: u32,
}

pub(super) fn set_int(
    fd: BorrowedFd<'_>,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the pointer and length describe `value`, which outlives the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(super) fn get_int(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `value`, which outlives the call.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// The send and receive sequence numbers of a socket already in repair mode.
pub fn repair_sequences(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    let send = get_int(fd, libc::TCP_QUEUE_SEQ)? as u32;
    set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    let recv = get_int(fd, libc::TCP_QUEUE_SEQ)? as u32;
    Ok((send, recv))
}

/// Resets the peer of a connection whose socket vanished: a new socket in repair
/// mode takes the old one's place (same addresses, same sequence numbers) without
/// a packet, leaves repair mode without a window probe, and closes with
/// `SO_LINGER {on, 0}`: one RST whose sequence number is exactly what the peer
/// expects, so it reads ECONNRESET as from its peer. Needs CAP_NET_ADMIN.
pub fn reset_vanished(v: &Vanished) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::TcpRepair};
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(v.local),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Repair mode first: it also lets the bind share the port (SK_FORCE_REUSE).
    setsockopt(&sock, TcpRepair, &1).map_err(io::Error::from)?;
    sock.bind(&v.local.into())?;
    let fd = std::os::fd::AsFd::as_fd(&sock);
    set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)?;
    set_int(fd, libc::TCP_QUEUE_SEQ, v.send_seq as libc::c_int)?;
    set_int(fd, libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)?;
    set_int(fd, libc::TCP_QUEUE_SEQ, v.recv_seq as libc::c_int)?;
    // In repair mode connect() sends no SYN: the socket is ESTABLISHED at once.
    sock.connect(&v.peer.into())?;
    setsockopt(&sock, TcpRepair, &TCP_REPAIR_OFF_NO_WP).map_err(io::Error::from)?;
    sock.set_linger(Some(std::time::Duration::ZERO))?;
    drop(sock);
    Ok(())
}

/// The options a program set on its own TCP socket, as its kernel holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSettings {
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL` (seconds) and `TCP_KEEPCNT`: the socket's own,
    /// or the sysctls' values when it never set them.
    pub keepidle_s: u64,
    pub keepintvl_s: u64,
    pub keepcnt: u64,
    /// `TCP_USER_TIMEOUT`, 0 when off.
    pub user_timeout_ms: u64,
    /// `SO_RCVTIMEO` and `SO_SNDTIMEO`, 0 when off.
    pub rcvtimeo_ms: u64,
    pub sndtimeo_ms: u64,
}

/// A running process whose descriptors this one may duplicate: a `pidfd_open(2)`
/// descriptor, opened once for all of them.
#[derive(Debug)]
pub struct Program {
    pidfd: std::os::fd::OwnedFd,
}

impl Program {
    /// `pidfd_open(2)`: `ESRCH` when no such process exists.
    pub fn open(pid: u32) -> io::Result<Self> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let pid =
            libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = cvt(libc::c_int::try_from(pidfd).unwrap_or(-1))?;
        // SAFETY: `pidfd` is a descriptor just returned to this process, owned by no one else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok(Self { pidfd })
    }

    /// A duplicate of the program's descriptor `fd` (`pidfd_getfd(2)`), allowed to
    /// root, or to the same user where ptrace would be (`EPERM` otherwise). Drop it
    /// at once: a duplicate held on keeps the socket alive after the program's own
    /// close().
    pub fn duplicate(&self, fd: i32) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: pidfd_getfd takes a pidfd, a descriptor number in that process and
        // flags, and returns a new descriptor in this process or -1.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), fd, 0) };
        let dup = cvt(libc::c_int::try_from(dup).unwrap_or(-1))?;
        // SAFETY: as above: a fresh descriptor this process alone owns.
        Ok(unsafe { OwnedFd::from_raw_fd(dup) })
    }
}

/// Reads the options of descriptor `fd` of process `pid` through a duplicate
/// ([`Program::duplicate`]), which is closed before this returns.
pub fn program_socket_settings(pid: u32, fd: i32) -> io::Result<SocketSettings> {
    let dup = Program::open(pid)?.duplicate(fd)?;
    let settings = socket_settings(std::os::fd::AsFd::as_fd(&dup));
    drop(dup);
    settings
}

/// The options in effect on a TCP socket: its own, or the sysctls' (of the
/// socket's network namespace) where it set none.
pub fn socket_settings(fd: BorrowedFd<'_>) -> io::Result<SocketSettings> {
    let sock = socket2::SockRef::from(&fd);
    let ms = |d: Option<std::time::Duration>| {
        d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Ok(SocketSettings {
        keepalive: sock.keepalive()?,
        keepidle_s: sock.tcp_keepalive_time()?.as_secs(),
        keepintvl_s: sock.tcp_keepalive_interval()?.as_secs(),
        keepcnt: u64::from(sock.tcp_keepalive_retries()?),
        user_timeout_ms: ms(sock.tcp_user_timeout()?),
        rcvtimeo_ms: ms(sock.read_timeout()?),
        sndtimeo_ms: ms(sock.write_timeout()?),
    })
}

/// Whether a socket is a TCP socket (`SO_PROTOCOL`), of either family.
pub fn is_tcp(fd: BorrowedFd<'_>) -> bool {
    let sock = socket2::SockRef::from(&fd);
    matches!(sock.protocol(), Ok(Some(p)) if p == socket2::Protocol::TCP)
}

/// Whether an IPv6 socket of this network namespace listens on `[::1]:port` or
/// `[::]:port` (from `/proc/net/tcp6`): where a refused IPv4 loopback connect
/// would have found its server over IPv6.
pub fn listening_on_ipv6_loopback(port: u16) -> bool {
    std::fs::read_to_string("/proc/net/tcp6")
        .is_ok_and(|table| ipv6_loopback_listener(&table, port))
}

/// [`listening_on_ipv6_loopback`] over the text of `/proc/net/tcp6`: local address
/// as four 32-bit words in host order, `:PORT` in hex, state `0A` (LISTEN).
fn ipv6_loopback_listener(table: &str, port: u16) -> bool {
    let loopback: String = std::net::Ipv6Addr::LOCALHOST
        .octets()
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    let any = "0".repeat(32);
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
            return false;
        };
        let Some((addr, p)) = local.split_once(':') else {
            return false;
        };
        *state == "0A"
            && u16::from_str_radix(p, 16) == Ok(port)
            && (addr.eq_ignore_ascii_case(&loopback) || addr == any)
    })
}

#[cfg(test)]
mod proc_net_tests {
    use super::*;

    #[test]
    fn finds_an_ipv6_loopback_listener_by_port() {
        let table = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000001000000:1F5F 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n\
   2: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F5F 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0\n";
        assert!(ipv6_loopback_listener(table, 0x1F5F));
        assert!(ipv6_loopback_listener(table, 80));
        // An established connection's local port is no listener.
        assert!(!ipv6_loopback_listener(table, 0x9C40));
        assert!(!ipv6_loopback_listener(table, 81));
    }

    #[test]
    fn a_real_ipv6_loopback_listener_is_found() {
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("SKIPPED a_real_ipv6_loopback_listener_is_found: no IPv6 loopback");
            return;
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        assert!(listening_on_ipv6_loopback(port));
        drop(listener);
        assert!(!listening_on_ipv6_loopback(port));
    }
}
