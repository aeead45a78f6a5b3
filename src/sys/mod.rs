//! The only place with `unsafe` and raw libc: kernel structs are wrapped in
//! types with named fields here so that nothing past this module sees libc.

#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
#[cfg(target_os = "linux")]
mod sock_diag;
#[cfg(target_os = "linux")]
pub use sock_diag::{DiagSocket, dump, listeners, lookup};
#[cfg(target_os = "linux")]
mod act;
#[cfg(target_os = "linux")]
pub use act::{
    LiveSequences, SilentPeer, attach_silence, detach_filter, disconnect, live_sequences, send_rst,
    shutdown_write,
};
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
pub use netns::in_netns_of;
#[cfg(target_os = "linux")]
mod kernel;
#[cfg(target_os = "linux")]
pub use kernel::{Kernel, Linux};
#[cfg(all(test, target_os = "linux"))]
pub mod fake;

mod tcp_info;
pub use tcp_info::{CaState, TcpInfo, TcpState};
mod timer;
pub use timer::{DiagTimer, DiagTimerKind};

/// The errno name (`ECONNRESET`) of an OS error, or its description when it has none.
pub fn errno_name(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => format!("{:?}", nix::errno::Errno::from_raw(code)),
        None => err.kind().to_string(),
    }
}
