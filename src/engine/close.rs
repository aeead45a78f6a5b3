//! The close modes: what the closing end does to its socket, in one place.

use std::io;
use std::time::Duration;

use socket2::{SockFilter, Socket};

use crate::plan::CloseMode;

/// `BPF_RET | BPF_K` with k = 0: accept zero bytes of every packet.
const DROP_EVERYTHING: [SockFilter; 1] = [SockFilter::new(0x06, 0, 0, 0)];

/// What performing a close action produced.
#[derive(Debug)]
pub enum Closed {
    /// The socket is gone (fin, rst, rst-unread, reboot).
    Released,
    /// The socket stays open: `half` keeps reading, `drop` and `hang` hold it silently.
    Kept(Socket),
}

/// A human description of the action, for the timeline.
pub fn describe(mode: CloseMode, unread: usize) -> String {
    match mode {
        CloseMode::Fin => "close(): FIN".to_owned(),
        CloseMode::Half => "shutdown(SHUT_WR): FIN, still reading".to_owned(),
        CloseMode::Rst => "SO_LINGER {on, 0} + close(): RST".to_owned(),
        CloseMode::RstUnread if unread > 0 => {
            format!("close() with {unread} bytes unread: Linux sends RST")
        }
        CloseMode::RstUnread => "close() with nothing unread: Linux sends FIN".to_owned(),
        CloseMode::Drop => "drop: every incoming segment discarded, nothing sent".to_owned(),
        CloseMode::Reboot => {
            "reboot: TCP_REPAIR + close(), the socket vanishes without a packet".to_owned()
        }
        CloseMode::Hang => "hang: socket open, never read or written again".to_owned(),
        CloseMode::None => "observe only".to_owned(),
    }
}

/// Performs `mode` on `sock`. `drop` expects nothing left in flight (the caller waits).
pub fn perform(mode: CloseMode, sock: Socket) -> io::Result<Closed> {
    match mode {
        CloseMode::Fin | CloseMode::RstUnread => Ok(Closed::Released),
        CloseMode::Rst => {
            sock.set_linger(Some(Duration::ZERO))?;
            Ok(Closed::Released)
        }
        CloseMode::Half => {
            sock.shutdown(std::net::Shutdown::Write)?;
            Ok(Closed::Kept(sock))
        }
        CloseMode::Drop => {
            sock.attach_filter(&DROP_EVERYTHING)?;
            Ok(Closed::Kept(sock))
        }
        CloseMode::Reboot => {
            vanish(sock)?;
            Ok(Closed::Released)
        }
        CloseMode::Hang | CloseMode::None => Ok(Closed::Kept(sock)),
    }
}

/// Closes without sending anything: TCP_REPAIR on, then close().
pub fn vanish(sock: Socket) -> io::Result<()> {
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::TcpRepair, &1)
        .map_err(io::Error::from)?;
    drop(sock);
    Ok(())
}
