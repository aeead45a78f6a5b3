//! `tcpbye inspect PID` (or `--port PORT`): a running program's TCP connections,
//! read without sending anything — its descriptors under /proc, the sockets of
//! its network namespace through sock_diag (from a thread that enters that
//! namespace when it is not tcpbye's), and each socket's own options through a
//! duplicate of its descriptor, closed at once.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use super::{print, procfs};
use crate::error::{Capability, Failure, Outcome};
use crate::judge::inspect::{self as judge, Namespace};
use crate::plan::{InspectPlan, InspectTarget};
use crate::report::inspect::{InspectConn, InspectResult, InspectSummary, Leak, peers};
use crate::report::{SCHEMA, micros};
use crate::sys::{self, TcpState};

/// Runs `tcpbye inspect` and prints the table or the JSON lines.
pub fn inspect(plan: &InspectPlan) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (pids, port) = match plan.target {
        InspectTarget::Pid(pid) => (vec![pid], None),
        InspectTarget::Port(port) => (port_holders(port)?, Some(port)),
    };
    let mut all = Read::default();
    // A socket several processes hold (a listener shared after fork) is theirs once.
    let mut seen: HashSet<u32> = HashSet::new();
    let mut names = Vec::new();
    for &pid in &pids {
        names.push(name_of(pid));
        let read = read_program(pid, &mut seen)?;
        all.conns.extend(read.conns);
        all.listening.extend(read.listening);
        all.other_sockets += read.other_sockets;
        all.other_netns |= read.other_netns;
    }
    all.conns.sort_by_key(|c| (c.pid, c.fd));
    all.listening.sort_unstable();
    all.listening.dedup();
    let leaks = |leak| all.conns.iter().filter(|c| c.leak == Some(leak)).count();
    let summary = InspectSummary {
        schema: SCHEMA,
        kind: "inspect-summary",
        pids,
        names,
        port,
        other_netns: all.other_netns,
        connections: all.conns.len(),
        peers: peers(&all.conns, &all.listening),
        listening: all.listening.clone(),
        close_wait: leaks(Leak::CloseWait),
        dead_descriptors: leaks(Leak::DeadDescriptor),
        other_sockets: all.other_sockets,
        elapsed_us: micros(started.elapsed()),
    };
    let result = InspectResult {
        conns: all.conns,
        summary,
    };
    print::inspect(&result, plan.format)?;
    Ok(Outcome::DONE)
}

/// What one process holds.
#[derive(Debug, Default)]
struct Read {
    conns: Vec<InspectConn>,
    listening: Vec<SocketAddr>,
    other_sockets: usize,
    other_netns: bool,
}

/// Reads the TCP sockets of process `pid` that are not in `seen` (and adds them).
fn read_program(pid: u32, seen: &mut HashSet<u32>) -> anyhow::Result<Read> {
    let fds = procfs::socket_fds(pid).map_err(|e| {
        refused(
            pid,
            "read its descriptors (/proc/PID/fd)",
            Capability::SysPtrace,
            e,
        )
    })?;
    // Each socket by its lowest descriptor.
    let mut by_inode: HashMap<u32, i32> = HashMap::new();
    for (fd, inode) in fds {
        if !seen.contains(&inode) {
            by_inode.entry(inode).or_insert(fd);
        }
    }
    seen.extend(by_inode.keys().copied());
    let ((sockets, ns), other_netns) = sys::in_netns_of(pid, || {
        let retries2 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_retries2")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(15);
        (
            sys::dump(),
            Namespace {
                tcp_retries2: retries2,
            },
        )
    })
    .map_err(|e| {
        refused(
            pid,
            "enter its network namespace (to list its sockets with sock_diag)",
            Capability::SysAdmin,
            e,
        )
    })?;
    let sockets = sockets.map_err(|e| Failure::Runtime(format!("inspect: {e}")))?;
    let program = sys::Program::open(pid)
        .map_err(|e| refused(pid, "pidfd_open", Capability::SysPtrace, e))?;
    let options = |fd: i32| -> anyhow::Result<Option<sys::SocketSettings>> {
        match program.duplicate(fd) {
            Ok(dup) => Ok(sys::socket_settings(dup.as_fd()).ok()),
            Err(e) if is_denied(&e) => Err(refused(
                pid,
                "duplicate its sockets (pidfd_getfd) to read their options",
                Capability::SysPtrace,
                e,
            )),
            // Closed since /proc was read.
            Err(_) => Ok(None),
        }
    };

    let mut read = Read {
        other_netns,
        ..Read::default()
    };
    let mut listed: HashSet<u32> = HashSet::new();
    for socket in sockets.iter().filter(|s| s.inode != 0) {
        let Some(&fd) = by_inode.get(&socket.inode) else {
            continue;
        };
        listed.insert(socket.inode);
        if socket.state == TcpState::Listen {
            read.listening.push(socket.local);
            continue;
        }
        let settings = options(fd)?;
        read.conns
            .push(judge::connection(pid, fd, socket, settings, ns));
    }
    // Sockets the tables do not list: not TCP, never connected, or dead.
    let mut unlisted: Vec<(i32, u32)> = by_inode
        .iter()
        .filter(|(inode, _)| !listed.contains(inode))
        .map(|(inode, fd)| (*fd, *inode))
        .collect();
    unlisted.sort_unstable();
    for (fd, inode) in unlisted {
        let dup = match program.duplicate(fd) {
            Ok(dup) => dup,
            Err(e) if is_denied(&e) => {
                return Err(refused(
                    pid,
                    "duplicate its sockets (pidfd_getfd) to read them",
                    Capability::SysPtrace,
                    e,
                ));
            }
            Err(_) => continue,
        };
        let fd_ref = dup.as_fd();
        let dead = sys::is_tcp(fd_ref)
            .then(|| sys::tcp_info(fd_ref).ok())
            .flatten()
            .and_then(|info| {
                let local = socket2::SockRef::from(&fd_ref)
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket());
                let settings = sys::socket_settings(fd_ref).ok();
                judge::dead_descriptor(pid, fd, inode, local, &info, settings)
            });
        drop(dup);
        match dead {
            Some(conn) => read.conns.push(conn),
            None => read.other_sockets += 1,
        }
    }
    Ok(read)
}

/// `EPERM`/`EACCES`: what the rights of this user do not allow.
fn is_denied(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// The error for a step on process `pid` that failed: no such process (exit 3),
/// a missing privilege (exit 4, naming `capability`), or anything else (exit 3).
fn refused(pid: u32, step: &str, capability: Capability, err: io::Error) -> anyhow::Error {
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => {
            Failure::Runtime(format!("inspect: no process with pid {pid}")).into()
        }
        _ if is_denied(&err) => {
            let owner = std::fs::metadata(format!("/proc/{pid}"))
                .map_or(String::new(), |m| format!(", user {}", m.uid()));
            let needs = match capability {
                Capability::SysAdmin => "entering another network namespace",
                _ => "reading a program's sockets",
            };
            Failure::Privilege {
                what: format!(
                    "inspect of pid {pid} ({}{owner}) refused: {step}: {err}; {needs}",
                    name_of(pid)
                ),
                capability,
            }
            .into()
        }
        _ => Failure::Runtime(format!("inspect pid {pid}: {step}: {err}")).into(),
    }
}

/// The process's name (`/proc/PID/comm`), or `?`.
fn name_of(pid: u32) -> String {
    super::procfs::comm(pid).unwrap_or_else(|| "?".into())
}

/// `--port PORT`: the processes holding a TCP socket on that local port in
/// tcpbye's network namespace (its listener, else any socket bound to it).
fn port_holders(port: u16) -> anyhow::Result<Vec<u32>> {
    let sockets = sys::dump().map_err(|e| Failure::Runtime(format!("inspect: {e}")))?;
    let on_port: Vec<&sys::DiagSocket> = sockets
        .iter()
        .filter(|s| s.local.port() == port && s.inode != 0)
        .collect();
    let listeners: Vec<&&sys::DiagSocket> = on_port
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .collect();
    let inodes: HashSet<u32> = if listeners.is_empty() {
        on_port.iter().map(|s| s.inode).collect()
    } else {
        listeners.iter().map(|s| s.inode).collect()
    };
    if inodes.is_empty() {
        return Err(Failure::Runtime(format!(
            "inspect --port {port}: no process holds a TCP socket on local port {port} (in this network namespace)"
        ))
        .into());
    }
    let mut pids: Vec<u32> = procfs::holders(&inodes, None)
        .into_values()
        .flatten()
        .filter(|pid| *pid != std::process::id())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    if pids.is_empty() {
        let euid = nix::unistd::geteuid();
        if !euid.is_root()
            && let Some(other) = on_port.iter().find(|s| s.uid != euid.as_raw())
        {
            return Err(Failure::Privilege {
                what: format!(
                    "inspect --port {port}: its socket belongs to user {}, whose descriptors this user cannot read; finding its process",
                    other.uid
                ),
                capability: Capability::SysPtrace,
            }
            .into());
        }
        return Err(Failure::Runtime(format!(
            "inspect --port {port}: no process holds a descriptor of its socket"
        ))
        .into());
    }
    Ok(pids)
}
