//! A kernel that answers what a test scripted, for unit tests of the engine.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use super::{DiagSocket, Kernel, TcpInfo, TcpState};

/// Scripted readings: each call returns the value in force, and is counted.
#[derive(Debug, Default)]
pub struct FakeKernel {
    /// The TCP_INFO reading; `None` makes `tcp_info` fail.
    pub info: RefCell<Option<TcpInfo>>,
    /// What a sock_diag lookup finds, whatever the 4-tuple.
    pub diag: RefCell<Option<DiagSocket>>,
    pub unread: Cell<usize>,
    pub unacked: Cell<usize>,
    /// How many times each reading was asked for.
    pub info_reads: Cell<u32>,
    pub lookups: Cell<u32>,
}

impl FakeKernel {
    /// A kernel whose socket is established, idle, with nothing in flight.
    pub fn established() -> Self {
        let fake = Self::default();
        fake.set_info(|_| {});
        fake
    }

    /// Replaces the TCP_INFO reading by an established, idle one changed by `edit`.
    pub fn set_info(&self, edit: impl FnOnce(&mut TcpInfo)) {
        let mut info = idle_info();
        edit(&mut info);
        *self.info.borrow_mut() = Some(info);
    }
}

/// An established socket's reading with every counter at zero.
pub fn idle_info() -> TcpInfo {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let raw: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut info = super::linux::from_raw(&raw, std::mem::size_of::<libc::tcp_info>());
    info.state = TcpState::Established;
    info.rto = 200_000;
    info
}

impl Kernel for FakeKernel {
    fn tcp_info(&self, _fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
        self.info_reads.set(self.info_reads.get() + 1);
        self.info
            .borrow()
            .clone()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    fn lookup(&self, _local: SocketAddr, _remote: SocketAddr) -> io::Result<Option<DiagSocket>> {
        self.lookups.set(self.lookups.get() + 1);
        Ok(self.diag.borrow().clone())
    }

    fn unread_bytes(&self, _fd: BorrowedFd<'_>) -> io::Result<usize> {
        Ok(self.unread.get())
    }

    fn unacked_bytes(&self, _fd: BorrowedFd<'_>) -> io::Result<usize> {
        Ok(self.unacked.get())
    }
}
