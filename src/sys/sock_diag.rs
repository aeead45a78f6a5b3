//! `NETLINK_SOCK_DIAG`, what `ss -tian` reads: the kernel's own view of one TCP
//! socket of this host, found by its 4-tuple. It reaches sockets that no file
//! descriptor can show any more — orphans in `FIN_WAIT1`/`FIN_WAIT2`/`LAST_ACK`/
//! `CLOSING` and `TIME_WAIT` minisockets — and needs no privilege.
//!
//! The request is an exact lookup first (`SOCK_DIAG_BY_FAMILY` without
//! `NLM_F_DUMP`: the kernel's `inet_diag_find_one_icsk`, which finds established,
//! orphaned and timewait sockets alike), and a dump filtered by port if that
//! fails. Messages are built and parsed by `netlink-packet-sock-diag`, except the
//! three timer fields, which that crate reduces to a lossy enum (see
//! [`timer_from_raw`]).

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use serde::Serialize;

use super::tcp_info::{TcpInfo, TcpState};
use super::timer::{DiagTimer, DiagTimerKind};

/// How long one lookup waits for each answer from the kernel before giving up.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Large enough for any datagram the kernel builds for a dump (it caps them at 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;

/// Bytes of a netlink message header (`struct nlmsghdr`).
const NLMSG_HEADER_LEN: usize = 16;

/// Sequence number of our requests; each lookup has a socket of its own.
const SEQUENCE: u32 = 1;

/// Every bit of `idiag_states`: all TCP states (including `NEW_SYN_RECV`).
const ALL_STATES: u32 = u32::MAX;

/// One TCP socket as the kernel's socket tables show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiagSocket {
    /// The socket's own address as the kernel reports it: an IPv6 socket that
    /// serves an IPv4 peer shows a v4-mapped address (`[::ffff:127.0.0.1]:80`).
    pub local: SocketAddr,
    /// The peer's address, in the same form as `local`.
    pub remote: SocketAddr,
    /// For a `TIME_WAIT` minisocket this is its sub-state: `FIN_WAIT2` for an
    /// orphan whose FIN was acknowledged (when `tcp_fin_timeout` ≤ 60 s the kernel
    /// replaces the full socket by a minisocket right away), else `TIME_WAIT`.
    pub state: TcpState,
    /// The timer pending on the socket, if any.
    pub timer: Option<DiagTimer>,
    /// Bytes received and not yet read by the application.
    pub recv_q: u32,
    /// Bytes sent and not yet acknowledged by the peer.
    pub send_q: u32,
    /// Owner of the socket.
    pub uid: u32,
    /// Inode of the socket's file; 0 when no file descriptor refers to it any
    /// more (an orphan, or a `TIME_WAIT` minisocket).
    pub inode: u32,
    /// `INET_DIAG_INFO`: the socket's `TCP_INFO`. The kernel sends it for full
    /// sockets (orphans included), never for `TIME_WAIT` minisockets.
    pub tcp_info: Option<TcpInfo>,
}

/// The socket whose local address is `local` and remote is `remote` (v4 and v6), if any.
///
/// IPv4 and v4-mapped IPv6 addresses are the same address here, as they are to
/// the kernel. A listening socket is never returned, even though the kernel's
/// exact lookup falls back to the listener on `local` when no connection matches.
pub fn lookup(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<DiagSocket>> {
    let tuple = Tuple::new(local, remote);
    if tuple.local.is_ipv4() != tuple.remote.is_ipv4() {
        return Ok(None); // an IPv4 address never talks to a (non-mapped) IPv6 one
    }
    match lookup_exact(&tuple) {
        Ok(found) => Ok(found),
        Err(exact) => lookup_by_dump(&tuple).map_err(|dump| {
            io::Error::new(
                dump.kind(),
                format!(
                    "sock_diag lookup {local} -> {remote}: exact request: {exact}; dump: {dump}"
                ),
            )
        }),
    }
}

/// The listening sockets on `port`, both families (an IPv6 listener also
/// serves IPv4 peers).
pub fn listeners(port: u16) -> io::Result<Vec<DiagSocket>> {
    Ok(dump()?
        .into_iter()
        .filter(|s| s.state == TcpState::Listen && s.local.port() == port)
        .collect())
}

/// Every TCP socket of the calling thread's network namespace, both families:
/// listeners and connections, each with its timer, inode and `INET_DIAG_INFO`
/// (what `ss -tanoie` lists). `TIME_WAIT` minisockets and request sockets are
/// left out: they never have a file. An IPv6 socket serving an IPv4 peer is
/// listed once, with its v4-mapped addresses.
pub fn dump() -> io::Result<Vec<DiagSocket>> {
    /// `TCP_SYN_RECV`, `TCP_TIME_WAIT`, `TCP_NEW_SYN_RECV` (include/net/tcp_states.h).
    const FILELESS: u32 = (1 << 3) | (1 << 6) | (1 << 12);
    let mut all = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let any = if family == AF_INET {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        let mut request = request(
            family,
            Tuple::new((any, 0).into(), (any, 0).into()).socket_id(family),
        );
        request.states = StateFlags::from_bits_retain(ALL_STATES & !FILELESS);
        match transact(&request, true) {
            Ok(sockets) => all.extend(sockets),
            // A kernel without IPv6 has no handler for its family.
            Err(err) if family == AF_INET6 && err.raw_os_error() == Some(libc::ENOENT) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(all)
}

/// A 4-tuple with v4-mapped addresses turned into IPv4 ones.
#[derive(Debug, Clone, Copy)]
struct Tuple {
    local: SocketAddr,
    remote: SocketAddr,
}

impl Tuple {
    fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            local: canonical(local),
            remote: canonical(remote),
        }
    }

    fn matches(&self, socket: &DiagSocket) -> bool {
        canonical(socket.local) == self.local && canonical(socket.remote) == self.remote
    }

    /// The request's socket id: exact addresses and ports, any interface, any cookie.
    fn socket_id(&self, family: u8) -> SocketId {
        SocketId {
            source_port: self.local.port(),
            destination_port: self.remote.port(),
            source_address: in_family(self.local.ip(), family),
            destination_address: in_family(self.remote.ip(), family),
            interface_id: 0,
            // INET_DIAG_NOCOOKIE: with any other value the kernel compares it with
            // the socket's cookie and answers ESTALE.
            cookie: [0xff; 8],
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `ip` as an address of `family` (an IPv4 address becomes v4-mapped for AF_INET6).
fn in_family(ip: IpAddr, family: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if family == AF_INET6 => IpAddr::V6(v4.to_ipv6_mapped()),
        ip => ip,
    }
}

/// The exact-id request. `Ok(None)` when the kernel knows no such connection.
fn lookup_exact(tuple: &Tuple) -> io::Result<Option<DiagSocket>> {
    let family = if tuple.local.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    };
    let request = request(family, tuple.socket_id(family));
    match transact(&request, false) {
        Ok(sockets) => Ok(sockets.into_iter().find(|socket| tuple.matches(socket))),
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The fallback: dump the connections on these ports and pick the one that matches.
/// IPv4 connections are looked for in both families, since an IPv6 socket serves
/// IPv4 peers with v4-mapped addresses.
fn lookup_by_dump(tuple: &Tuple) -> io::Result<Option<DiagSocket>> {
    let families: &[u8] = if tuple.local.is_ipv4() {
        &[AF_INET, AF_INET6]
    } else {
        &[AF_INET6]
    };
    for &family in families {
        let request = request(family, tuple.socket_id(family));
        let sockets = transact(&request, true)?;
        if let Some(found) = sockets.into_iter().find(|socket| tuple.matches(socket)) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn request(family: u8, socket_id: SocketId) -> InetRequest {
    InetRequest {
        family,
        protocol: IPPROTO_TCP,
        extensions: ExtensionFlags::INFO,
        states: StateFlags::from_bits_retain(ALL_STATES),
        socket_id,
    }
}

/// Sends one request on a socket of its own and collects the sockets in the answer.
fn transact(request: &InetRequest, dump: bool) -> io::Result<Vec<DiagSocket>> {
    let socket = open().map_err(context("open a NETLINK_SOCK_DIAG socket"))?;

    let mut header = NetlinkHeader::default();
    header.flags = if dump {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST
    };
    header.sequence_number = SEQUENCE;
    let mut message =
        NetlinkMessage::new(header, SockDiagMessage::InetRequest(request.clone()).into());
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket
        .send(&bytes, 0)
        .map_err(context("send the request"))?;

    let mut sockets = Vec::new();
    let mut buf = vec![0; RECV_BUFFER];
    loop {
        let n = receive(&socket, &mut buf)?;
        let mut datagram = &buf[..n];
        while !datagram.is_empty() {
            let message =
                NetlinkMessage::<SockDiagMessage>::deserialize(datagram).map_err(invalid)?;
            let len = message.header.length as usize;
            if len < NLMSG_HEADER_LEN || len > datagram.len() {
                return Err(invalid(format!(
                    "message length {len} in a datagram of {}",
                    datagram.len()
                )));
            }
            let payload = &datagram[NLMSG_HEADER_LEN..len];
            datagram = datagram.get(align(len)..).unwrap_or_default();
            if message.header.sequence_number != SEQUENCE {
                continue; // not an answer to our request
            }
            let multipart = message.header.flags & NLM_F_MULTIPART != 0;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    sockets.push(diag_socket(&response, payload)?);
                    if !multipart {
                        return Ok(sockets); // the one answer to an exact request
                    }
                }
                NetlinkPayload::Done(done) if done.code < 0 => {
                    return Err(context("dump")(io::Error::from_raw_os_error(-done.code)));
                }
                NetlinkPayload::Done(_) => return Ok(sockets),
                NetlinkPayload::Error(error) => match error.code {
                    None => return Ok(sockets), // an ACK
                    // Keep the raw errno: lookup_exact branches on ENOENT.
                    Some(_) => return Err(error.to_io()),
                },
                NetlinkPayload::Overrun(_) => return Err(invalid("overrun")),
                _ => {}
            }
        }
    }
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(RECV_TIMEOUT))?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?; // the kernel, and only it
    Ok(socket)
}

/// One datagram, never truncated and never waited for longer than [`RECV_TIMEOUT`].
fn receive(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // MSG_TRUNC: netlink returns the datagram's real length even when it did not fit.
    let n = socket
        .recv(&mut &mut buf[..], libc::MSG_TRUNC)
        .map_err(|err| match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("sock_diag: no answer from the kernel within {RECV_TIMEOUT:?}"),
            ),
            _ => context("receive the answer")(err),
        })?;
    if n > buf.len() {
        return Err(invalid(format!(
            "a {n}-byte answer did not fit in {} bytes",
            buf.len()
        )));
    }
    Ok(n)
}

fn diag_socket(response: &InetResponse, raw: &[u8]) -> io::Result<DiagSocket> {
    let header = &response.header;
    let id = &header.socket_id;
    let tcp_info = response.nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(bytes) => Some(tcp_info_from_bytes(bytes)),
        _ => None,
    });
    Ok(DiagSocket {
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        state: TcpState::from_kernel(header.state),
        timer: timer_from_raw(raw)?,
        recv_q: header.recv_queue,
        send_q: header.send_queue,
        uid: header.uid,
        inode: header.inode,
        tcp_info,
    })
}

/// The timer fields of a `struct inet_diag_msg`, read from the message itself:
/// the crate's `Timer` drops `idiag_expires` for `TIME_WAIT` and `idiag_retrans`
/// (the probe count) for keepalive and zero-window probes, which tcpbye reports.
///
/// Layout (linux/inet_diag.h): `u8 family, state, timer, retrans;
/// struct inet_diag_sockid id (48 bytes); u32 expires, rqueue, wqueue, uid, inode`.
fn timer_from_raw(raw: &[u8]) -> io::Result<Option<DiagTimer>> {
    const TIMER: usize = 2;
    const RETRANS: usize = 3;
    const EXPIRES: usize = 4 + 48;
    let expires = raw
        .get(EXPIRES..EXPIRES + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| invalid(format!("inet_diag_msg of {} bytes", raw.len())))?;
    Ok(
        DiagTimerKind::from_kernel(raw[TIMER]).map(|kind| DiagTimer {
            kind,
            expires_ms: expires,
            retransmits: raw[RETRANS],
        }),
    )
}

/// `INET_DIAG_INFO` is the kernel's `struct tcp_info`, as long as the kernel's
/// own: copy what fits into a zeroed `libc::tcp_info` and honour that length.
fn tcp_info_from_bytes(bytes: &[u8]) -> TcpInfo {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut raw: libc::tcp_info = unsafe { std::mem::zeroed() };
    let len = bytes.len().min(size_of::<libc::tcp_info>());
    // SAFETY: `len` bytes fit in both `bytes` and `raw`, which do not overlap, and
    // tcp_info has only integer fields, so any bytes make a valid value.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut raw).cast::<u8>(), len) };
    super::linux::from_raw(&raw, len)
}

/// NLMSG_ALIGN.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |err| io::Error::new(err.kind(), format!("sock_diag: {what}: {err}"))
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sock_diag: unexpected answer: {what}"),
    )
}

#[cfg(test)]
mod tests {
    //! Real sockets on loopback, ephemeral ports only; every wait is bounded.

    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    use super::*;

    /// Longest a test waits for the kernel to reach a state.
    const DEADLINE: Duration = Duration::from_secs(2);

    /// A connected pair on `ip`, and the listener, still open.
    struct Pair {
        listener: TcpListener,
        client: TcpStream,
        server: TcpStream,
    }

    impl Pair {
        fn new(ip: IpAddr) -> io::Result<Self> {
            let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
            // A v4-mapped listener gets an IPv4 client, as a real one would be.
            let client = TcpStream::connect(canonical(listener.local_addr()?))?;
            let (server, _) = listener.accept()?;
            Ok(Self {
                listener,
                client,
                server,
            })
        }

        /// The client's 4-tuple, seen from the client.
        fn client_tuple(&self) -> (SocketAddr, SocketAddr) {
            tuple(&self.client)
        }

        /// The server's 4-tuple, seen from the server.
        fn server_tuple(&self) -> (SocketAddr, SocketAddr) {
            tuple(&self.server)
        }
    }

    fn tuple(stream: &TcpStream) -> (SocketAddr, SocketAddr) {
        (stream.local_addr().unwrap(), stream.peer_addr().unwrap())
    }

    fn inode(stream: &TcpStream) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", stream.as_raw_fd()))
            .unwrap()
            .ino()
    }

    fn find((local, remote): (SocketAddr, SocketAddr)) -> Option<DiagSocket> {
        lookup(local, remote).unwrap_or_else(|err| panic!("lookup {local} -> {remote}: {err}"))
    }

    /// Polls `tuple` until `done` holds for what the kernel shows, within [`DEADLINE`].
    fn eventually(
        what: &str,
        tuple: (SocketAddr, SocketAddr),
        done: impl Fn(&Option<DiagSocket>) -> bool,
    ) -> Option<DiagSocket> {
        let start = Instant::now();
        loop {
            let seen = find(tuple);
            if done(&seen) {
                return seen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: still {seen:#?} after {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn in_state(state: TcpState) -> impl Fn(&Option<DiagSocket>) -> bool {
        move |seen| seen.as_ref().is_some_and(|s| s.state == state)
    }

    fn tcp_fin_timeout_s() -> u32 {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_fin_timeout")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn uid() -> u32 {
        nix::unistd::getuid().as_raw()
    }

    /// Both ends of an idle connection are ESTABLISHED, with their own inode,
    /// no timer, and INET_DIAG_INFO; the queues count unread and unacked bytes.
    fn established(ip: IpAddr) {
        let pair = Pair::new(ip).unwrap();
        for (end, stream) in [("client", &pair.client), ("server", &pair.server)] {
            let (local, remote) = tuple(stream);
            let seen = find((local, remote)).unwrap_or_else(|| panic!("{end}: not found"));
            assert_eq!((seen.local, seen.remote), (local, remote), "{end}");
            assert_eq!(seen.state, TcpState::Established, "{end}");
            assert_eq!(u64::from(seen.inode), inode(stream), "{end}");
            assert_eq!(seen.uid, uid(), "{end}");
            assert_eq!(
                seen.timer, None,
                "{end}: an idle socket without keepalive has no timer"
            );
            let info = seen
                .tcp_info
                .unwrap_or_else(|| panic!("{end}: no INET_DIAG_INFO"));
            assert_eq!(info.state, TcpState::Established, "{end}");
            assert!(
                info.bytes_acked.is_some(),
                "{end}: this kernel sends the modern tcp_info"
            );
        }

        // Five bytes the server does not read: its Recv-Q; the client's Send-Q drains.
        std::io::Write::write_all(&mut &pair.client, b"hello").unwrap();
        let server = eventually("server Recv-Q", pair.server_tuple(), |seen| {
            seen.as_ref().is_some_and(|s| s.recv_q == 5)
        });
        assert_eq!(server.unwrap().tcp_info.unwrap().bytes_received, Some(5));
        eventually("client Send-Q", pair.client_tuple(), |seen| {
            seen.as_ref().is_some_and(|s| s.send_q == 0)
        });
    }

    #[test]
    fn established_pair_v4() {
        established(Ipv4Addr::LOCALHOST.into());
    }

    #[test]
    fn established_pair_v6() {
        if let Err(err) = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
            eprintln!("SKIPPED established_pair_v6: cannot bind [::1]: {err}");
            return;
        }
        established(Ipv6Addr::LOCALHOST.into());
    }

    /// An IPv6 socket that serves an IPv4 peer is found by either form of the
    /// tuple, by both requests, and reports its v4-mapped addresses.
    #[test]
    fn v4_mapped_server_socket() {
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let pair = match Pair::new(mapped) {
            Ok(pair) => pair,
            Err(err) => {
                eprintln!("SKIPPED v4_mapped_server_socket: cannot bind [{mapped}]: {err}");
                return;
            }
        };
        let (local, remote) = pair.server_tuple();
        assert!(local.is_ipv6() && remote.is_ipv6(), "{local} {remote}");
        let (client_local, client_remote) = pair.client_tuple();
        assert!(client_local.is_ipv4(), "{client_local}");
        let want = inode(&pair.server);
        for (how, tuple) in [
            ("mapped", (local, remote)),
            ("v4", (client_remote, client_local)),
        ] {
            let seen = find(tuple).unwrap_or_else(|| panic!("{how}: not found"));
            assert_eq!(u64::from(seen.inode), want, "{how}");
            assert_eq!(
                (seen.local, seen.remote),
                (local, remote),
                "{how}: kernel's own addresses"
            );
            let dumped = lookup_by_dump(&Tuple::new(tuple.0, tuple.1)).unwrap();
            assert_eq!(dumped.map(|s| s.inode), Some(seen.inode), "{how}: dump");
        }
    }

    /// The client closes: its orphan sits in FIN_WAIT2 with no inode, the server in CLOSE_WAIT.
    #[test]
    fn client_fin() {
        let pair = Pair::new(Ipv4Addr::LOCALHOST.into()).unwrap();
        let (client, server) = (pair.client_tuple(), pair.server_tuple());
        let server_inode = inode(&pair.server);
        drop(pair.client);

        let fin_timeout_ms = tcp_fin_timeout_s() * 1000;
        // The swap to a timewait minisocket follows the FIN's ACK, but a lookup can
        // still meet the full socket in FIN_WAIT2 for a moment before it: wait for
        // the socket this test is about.
        let minisocket = fin_timeout_ms <= 60_000;
        let orphan = eventually("client FIN_WAIT2", client, |seen| {
            seen.as_ref().is_some_and(|s| {
                s.state == TcpState::FinWait2
                    && (!minisocket || s.timer.is_some_and(|t| t.kind == DiagTimerKind::TimeWait))
            })
        })
        .unwrap();
        assert_eq!(orphan.inode, 0, "no file descriptor any more");
        let timer = orphan.timer.expect("an orphan in FIN_WAIT2 has a timer");
        assert!(timer.expires_ms <= fin_timeout_ms, "{timer:?}");
        if minisocket {
            // Linux (tcp_rcv_state_process / __tcp_close) swaps an orphan whose FIN
            // was acked for a timewait minisocket in sub-state FIN_WAIT2 right away,
            // when tcp_fin_timeout ≤ TCP_TIMEWAIT_LEN: a timewait timer, no tcp_info.
            assert_eq!(timer.kind, DiagTimerKind::TimeWait, "{orphan:#?}");
            assert_eq!(orphan.tcp_info, None);
        } else {
            // Longer timeouts keep the full socket, with the FIN_WAIT2 timer on sk_timer.
            assert_eq!(timer.kind, DiagTimerKind::KeepAlive, "{orphan:#?}");
            assert_eq!(orphan.tcp_info.map(|i| i.state), Some(TcpState::FinWait2));
        }

        let peer = eventually("server CLOSE_WAIT", server, in_state(TcpState::CloseWait)).unwrap();
        assert_eq!(u64::from(peer.inode), server_inode);
        assert_eq!(peer.tcp_info.map(|i| i.state), Some(TcpState::CloseWait));
        // The peer's FIN takes one sequence number: Recv-Q shows 1, as in `ss`.
        assert_eq!(peer.recv_q, 1);
        assert_eq!(peer.timer, None);
        drop(pair.listener);
    }

    /// Both close, the client first: the client's tuple is a TIME_WAIT minisocket,
    /// and the server's socket is gone even though the listener on its port is not.
    #[test]
    fn both_close() {
        let pair = Pair::new(Ipv4Addr::LOCALHOST.into()).unwrap();
        let (client, server) = (pair.client_tuple(), pair.server_tuple());
        drop(pair.client);
        eventually("server CLOSE_WAIT", server, in_state(TcpState::CloseWait));
        drop(pair.server);

        let tw = eventually("client TIME_WAIT", client, in_state(TcpState::TimeWait)).unwrap();
        assert_eq!(tw.inode, 0);
        assert_eq!(
            tw.tcp_info, None,
            "the kernel sends no INET_DIAG_INFO for TIME_WAIT"
        );
        let timer = tw.timer.expect("a timewait timer");
        assert_eq!(timer.kind, DiagTimerKind::TimeWait);
        assert!(
            (50_000..=60_000).contains(&timer.expires_ms),
            "TCP_TIMEWAIT_LEN is 60 s: {timer:?}"
        );
        assert_eq!((tw.recv_q, tw.send_q), (0, 0));

        // LAST_ACK is over within a round trip; the listener is still open, and
        // the kernel's exact lookup answers with it, which lookup() must not return.
        eventually("server socket gone", server, Option::is_none);
        drop(pair.listener);
    }

    /// The client resets (SO_LINGER 0): its socket is gone as close() returns.
    /// The server's socket is in CLOSE and still has its fd, yet it is *not*
    /// listed: tcp_done() → tcp_set_state(TCP_CLOSE) unhashes it, and sock_diag
    /// walks only the hash tables (the exact lookup and the dump alike).
    #[test]
    fn client_rst() {
        let pair = Pair::new(Ipv4Addr::LOCALHOST.into()).unwrap();
        let (client, server) = (pair.client_tuple(), pair.server_tuple());
        socket2::SockRef::from(&pair.client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(pair.client);
        assert_eq!(
            find(client),
            None,
            "an aborted socket is destroyed inside close()"
        );

        eventually("server socket unlisted", server, Option::is_none);
        let own = crate::sys::tcp_info(std::os::fd::AsFd::as_fd(&pair.server)).unwrap();
        assert_eq!(
            own.state,
            TcpState::Close,
            "the fd still shows the socket, in CLOSE"
        );
        assert_eq!(
            lookup_by_dump(&Tuple::new(server.0, server.1)).unwrap(),
            None
        );
        drop(pair.listener);
    }

    /// Tuples of no connection are Ok(None), whichever way the kernel says so.
    #[test]
    fn no_such_connection() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let listening = listener.local_addr().unwrap();
        // Bound, never connected nor listening: in no table the lookup searches.
        let bound =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        bound
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        let bound = bound.local_addr().unwrap().as_socket().unwrap();

        // Local port of a listener: the kernel answers with the listener itself.
        let tuple = Tuple::new(listening, bound);
        let answer = transact(&request(AF_INET, tuple.socket_id(AF_INET)), false).unwrap();
        assert_eq!(
            answer.iter().map(|s| s.state).collect::<Vec<_>>(),
            [TcpState::Listen]
        );
        assert_eq!(find((listening, bound)), None);
        assert_eq!(lookup_by_dump(&tuple).unwrap(), None);

        // Any other local port: the kernel answers ENOENT.
        let tuple = Tuple::new(bound, listening);
        let answer = transact(&request(AF_INET, tuple.socket_id(AF_INET)), false);
        assert_eq!(answer.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(find((bound, listening)), None);
        assert_eq!(lookup_by_dump(&tuple).unwrap(), None);

        // IPv4 to IPv6: no such connection can exist.
        assert_eq!(
            find((
                bound,
                SocketAddr::from((Ipv6Addr::LOCALHOST, listening.port()))
            )),
            None
        );
    }

    /// The fallback finds what the exact request finds.
    #[test]
    fn dump_agrees_with_exact() {
        let pair = Pair::new(Ipv4Addr::LOCALHOST.into()).unwrap();
        for (local, remote) in [pair.client_tuple(), pair.server_tuple()] {
            let tuple = Tuple::new(local, remote);
            let exact = lookup_exact(&tuple).unwrap().expect("exact");
            let dumped = lookup_by_dump(&tuple).unwrap().expect("dump");
            assert_eq!(
                (
                    dumped.local,
                    dumped.remote,
                    dumped.state,
                    dumped.inode,
                    dumped.timer
                ),
                (
                    exact.local,
                    exact.remote,
                    exact.state,
                    exact.inode,
                    exact.timer
                )
            );
            assert_eq!(
                dumped.tcp_info.map(|i| i.state),
                Some(TcpState::Established)
            );
        }
    }

    /// The dump lists the listener and both ends of a connection, each once, with
    /// their inodes and INET_DIAG_INFO, and a keepalive timer where one is armed.
    #[test]
    fn dump_lists_every_socket_once() {
        let pair = Pair::new(Ipv4Addr::LOCALHOST.into()).unwrap();
        socket2::SockRef::from(&pair.server)
            .set_keepalive(true)
            .unwrap();
        let all = dump().unwrap();
        let listening = pair.listener.local_addr().unwrap();
        let listener: Vec<&DiagSocket> = all
            .iter()
            .filter(|s| s.local == listening && s.state == TcpState::Listen)
            .collect();
        assert_eq!(listener.len(), 1, "{listener:#?}");
        for (end, stream) in [("client", &pair.client), ("server", &pair.server)] {
            let (local, remote) = tuple(stream);
            let found: Vec<&DiagSocket> = all
                .iter()
                .filter(|s| s.local == local && s.remote == remote)
                .collect();
            assert_eq!(found.len(), 1, "{end}: {found:#?}");
            assert_eq!(u64::from(found[0].inode), inode(stream), "{end}");
            assert!(found[0].tcp_info.is_some(), "{end}");
        }
        let server = all
            .iter()
            .find(|s| (s.local, s.remote) == pair.server_tuple())
            .unwrap();
        assert_eq!(
            server.timer.map(|t| t.kind),
            Some(DiagTimerKind::KeepAlive),
            "SO_KEEPALIVE arms the keepalive timer: {server:#?}"
        );
    }

    #[test]
    fn tcp_info_honours_the_kernel_length() {
        // A kernel of the 4.6 era sent tcp_info up to tcpi_data_segs_out.
        let end = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_out) + 4;
        let mut bytes = vec![0u8; end];
        bytes[0] = 1; // tcpi_state: ESTABLISHED
        let info = tcp_info_from_bytes(&bytes);
        assert_eq!(info.state, TcpState::Established);
        assert_eq!(info.data_segs_out, Some(0));
        assert_eq!(
            (info.delivered, info.snd_wnd, info.total_rto),
            (None, None, None)
        );
        // A kernel newer than libc's struct: the extra bytes are ignored.
        let info = tcp_info_from_bytes(&vec![0u8; size_of::<libc::tcp_info>() + 64]);
        assert_eq!(info.total_rto_time, Some(0));
    }

    #[test]
    fn timer_fields_come_from_the_raw_message() {
        let mut raw = [0u8; 72];
        raw[2] = 2; // keepalive
        raw[3] = 3; // probes sent
        raw[52..56].copy_from_slice(&1500u32.to_ne_bytes());
        let timer = timer_from_raw(&raw).unwrap().unwrap();
        assert_eq!(
            (timer.kind, timer.expires_ms, timer.retransmits),
            (DiagTimerKind::KeepAlive, 1500, 3)
        );
        raw[2] = 0;
        assert_eq!(timer_from_raw(&raw).unwrap(), None);
        assert!(timer_from_raw(&raw[..40]).is_err());
    }
}
