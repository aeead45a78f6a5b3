//! Linux socket calls that neither socket2 nor nix offers safely.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use super::tcp_info::{CaState, TcpInfo, TcpState};

/// A libc call's return value as a `Result`: -1 (any negative) means `errno`.
fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
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
