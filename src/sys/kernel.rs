//! The kernel as the engine reads it: one small trait for the readings the
//! observer's decisions rest on (TCP_INFO, the socket tables, the bytes unread
//! and unacknowledged), so that its state machine can be driven by a fake in
//! unit tests. Everything else the engine does to a socket (send, recv, close,
//! options) stays on the socket itself.

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use super::{DiagSocket, TcpInfo};

/// What the engine reads from the kernel about its sockets.
pub trait Kernel {
    /// `getsockopt(TCP_INFO)` on this side's socket.
    fn tcp_info(&self, fd: BorrowedFd<'_>) -> io::Result<TcpInfo>;
    /// The socket `local`→`remote` in the socket tables (sock_diag).
    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<DiagSocket>>;
    /// Bytes received and not yet read.
    fn unread_bytes(&self, fd: BorrowedFd<'_>) -> io::Result<usize>;
    /// Bytes sent and not yet acknowledged by the peer.
    fn unacked_bytes(&self, fd: BorrowedFd<'_>) -> io::Result<usize>;
}

/// The running kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

impl Kernel for Linux {
    fn tcp_info(&self, fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
        super::tcp_info(fd)
    }

    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<DiagSocket>> {
        super::lookup(local, remote)
    }

    fn unread_bytes(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        super::unread_bytes(fd)
    }

    fn unacked_bytes(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        super::unacked_bytes(fd)
    }
}
