//! `tcpbye check --pid PID`: a running program's own live connections, one per
//! mode, ended as their peer would end them, and the program judged as `check`
//! judges it. Everything happens from a thread in the program's network
//! namespace: one sock_diag dump picks the connections, a duplicate of each
//! chosen descriptor (the program's, or the peer's socket's when that is on this
//! host) carries the action and is closed at once, and the program's socket
//! (sock_diag), its descriptor (`/proc/PID/fd/N`) and its new connections are
//! then watched for `--wait`.
//!
//! How each mode is done, and why:
//! - `rst`, peer on this host: `connect(AF_UNSPEC)` on a duplicate of the peer's
//!   socket; the peer's kernel sends the RST (`tcp_disconnect`), so the program
//!   reads ECONNRESET from its peer. (`SOCK_DESTROY` would give ECONNABORTED,
//!   which no peer can cause; `SO_LINGER 0` needs the peer's own close.)
//! - `rst`, peer elsewhere: the program socket's sequence numbers (`TCP_REPAIR`
//!   on a duplicate for a few µs, then off without a window probe), and an RST
//!   from the peer's address through a raw socket, at exactly the sequence number
//!   the program expects; tried again if its socket is still established 20 ms
//!   later (data from the peer in between moves that number).
//! - `drop`: a drop-all socket filter on the program's socket: nothing from the
//!   peer reaches its TCP, its own segments still leave (a pulled cable).
//! - `hang`: a filter that drops the peer's segments carrying data or a FIN: its
//!   ACKs still come, so the program's sends succeed and its keepalive probes are
//!   answered (a hung process, whose kernel works on).
//! - `fin`, `half`: `shutdown(SHUT_WR)` on a duplicate of the peer's socket: its
//!   FIN, and the peer still reads. For `fin` that is where it differs from the
//!   peer's close(): a later write of the program is accepted, not answered by RST.
//!   A peer elsewhere: only its own program can send its FIN (`not-judged`).
//!
//! A filter stays with the socket, as a pulled cable would: after the wait tcpbye
//! takes it off a socket the program still holds (`--leave-open` keeps it), and if
//! tcpbye is killed first it stays until the program's socket ends. Nothing is
//! installed host-wide (no firewall rule, no namespace), and every duplicate is
//! closed right after its one call.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::print;
use super::procfs;
use crate::engine::side;
use crate::error::{Capability, Failure, Outcome};
use crate::judge::check as judge;
use crate::plan::CheckPidPlan;
use crate::report::check::{
    self as model, CheckCase, CheckChoice, CheckResult, CheckSummary, Descriptor, KeepaliveSysctls,
    ProgramSettings, Reaction,
};
use crate::report::{
    Afterlife, AfterlifeEnd, Closer, PeerSide, Report, Role, SCHEMA, SideSample, Verdict, micros,
};
use crate::sys::{self, DiagSocket, DiagTimerKind, SilentPeer, TcpState};
use crate::vocab::CloseMode;

/// How often the program's fd table is read for a new connection to the same peer.
const RECONNECT_POLL: Duration = Duration::from_millis(5);
/// A remote `rst` whose socket is still established this long after is sent again.
const RST_CHECK: Duration = Duration::from_millis(20);
/// At most this many RSTs per remote `rst`.
const RST_TRIES: u32 = 3;
/// Most sock_diag readings kept per socket.
const MAX_SAMPLES: usize = 64;

/// Runs `tcpbye check --pid` and prints the matrix (or, `--dry-run`, the choice).
pub fn check_pid(plan: &CheckPidPlan) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let pid = plan.pid;
    let fds = procfs::socket_fds(pid).map_err(|e| {
        refused(
            pid,
            "read its descriptors (/proc/PID/fd)",
            Capability::SysPtrace,
            e,
        )
    })?;
    let program = sys::Program::open(pid)
        .map_err(|e| refused(pid, "pidfd_open", Capability::SysPtrace, e))?;
    // Ctrl-C, SIGTERM, SIGHUP: the watch ends, the filters come off, the result is printed.
    let signals = catch_signals()?;
    let (run, _) = sys::in_netns_of(pid, || {
        run_in_netns(plan, &program, &fds, &signals, started)
    })
    .map_err(|e| {
        refused(
            pid,
            "enter its network namespace (to read its sockets with sock_diag)",
            Capability::SysAdmin,
            e,
        )
    })?;
    drop(program);
    match run? {
        Ran::Chosen(choices) => {
            print::check_choices(&choices, plan.format)?;
            Ok(Outcome::DONE)
        }
        Ran::Checked {
            result,
            interrupted,
        } => {
            print::check(&result, plan.format)?;
            Ok(Outcome {
                interrupted,
                missed: !result.summary.misses.is_empty(),
                ..Outcome::DONE
            })
        }
    }
}

/// What the thread in the program's namespace came back with.
enum Ran {
    Chosen(Vec<CheckChoice>),
    Checked {
        result: Box<CheckResult>,
        interrupted: bool,
    },
}

/// One established connection of the program.
#[derive(Debug, Clone)]
struct Conn {
    fd: i32,
    inode: u32,
    /// The program's end.
    local: SocketAddr,
    /// Its peer's end.
    remote: SocketAddr,
    peer: PeerEnd,
}

/// Where the connection's other socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerEnd {
    /// A socket of this host (this network namespace), held by `pid` as `fd`.
    Held { pid: u32, fd: i32, inode: u32 },
    /// A socket of this host whose holder could not be found (another user's
    /// process without root).
    Unheld,
    /// Not a socket of this host: the peer is elsewhere.
    Elsewhere,
}

impl PeerEnd {
    fn name(self) -> &'static str {
        match self {
            Self::Held { .. } | Self::Unheld => "this-host",
            Self::Elsewhere => "elsewhere",
        }
    }
}

/// Everything that runs inside the program's network namespace: the choice, the
/// actions, the watch, the judgement.
fn run_in_netns(
    plan: &CheckPidPlan,
    program: &sys::Program,
    fds: &[(i32, u32)],
    signals: &SignalFd,
    started: Instant,
) -> anyhow::Result<Ran> {
    let pid = plan.pid;
    let sockets = sys::dump().map_err(|e| Failure::Runtime(format!("check --pid: {e}")))?;
    let conns = connections(fds, &sockets, plan.peer);
    let chosen = choose(&plan.modes, &conns);
    let comm = procfs::comm(pid).unwrap_or_else(|| "?".into());
    // Acting needs pidfd_getfd: asked once, before anything is touched.
    if let Some(conn) = chosen.iter().find_map(|(_, c)| c.as_ref().ok()) {
        let dup = duplicate(program, conn.fd, conn.inode).map_err(|e| {
            refused(
                pid,
                "duplicate its socket (pidfd_getfd)",
                Capability::SysPtrace,
                e,
            )
        })?;
        drop(dup);
    }
    if plan.dry_run {
        let choices = chosen
            .iter()
            .map(|(mode, conn)| choice(pid, *mode, conn))
            .collect();
        return Ok(Ran::Chosen(choices));
    }
    let sysctls = KeepaliveSysctls::read();
    let mut peers: HashMap<u32, Option<sys::Program>> = HashMap::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut not_judged: Vec<(CloseMode, String)> = Vec::new();
    for (mode, conn) in chosen {
        let conn = match conn {
            Ok(conn) => conn,
            Err(why) => {
                not_judged.push((mode, why));
                continue;
            }
        };
        // The program's own options, and its socket once before the action.
        let settings = duplicate(program, conn.fd, conn.inode)
            .ok()
            .and_then(|dup| sys::socket_settings(dup.as_fd()).ok())
            .map(|s| ProgramSettings::from_socket(pid, conn.fd, s));
        let mut case = Case::new(mode, conn, settings, started, plan);
        let before = sys::lookup(case.conn.local, case.conn.remote)
            .ok()
            .flatten();
        case.program
            .record(micros(started.elapsed()), before.as_ref());
        match act(mode, &case.conn, program, &mut peers) {
            Ok(how) => {
                let now = Instant::now();
                case.acted(now, started, how);
                cases.push(case);
            }
            Err(why) => not_judged.push((mode, why)),
        }
    }
    drop(peers);
    let known_inodes: HashSet<u32> = fds.iter().map(|(_, inode)| *inode).collect();
    let interrupted = watch(&mut cases, program, pid, known_inodes, signals, started);
    // The cable plugged back in: a filter comes off a socket the program still holds.
    let mut unfiltered = Vec::new();
    let mut left_open = Vec::new();
    for case in cases.iter().filter(|c| c.filter.is_some()) {
        let held = case.released_at.is_none() && !case.program.ended;
        if !held {
            continue;
        }
        if plan.leave_open {
            left_open.push(case.mode);
            continue;
        }
        match duplicate(program, case.conn.fd, case.conn.inode)
            .and_then(|dup| sys::detach_filter(dup.as_fd()))
        {
            Ok(()) => unfiltered.push(case.mode),
            Err(e) => {
                print::tell!(
                    "{}: the filter could not be taken off fd {} ({e}): it stays with that socket",
                    case.mode,
                    case.conn.fd
                );
                left_open.push(case.mode);
            }
        }
    }
    let mut go_binaries = HashMap::new();
    let who = super::check::who(pid, None, comm.clone(), &mut go_binaries);
    let mut out: Vec<CheckCase> = Vec::new();
    for mode in &plan.modes {
        if let Some(case) = cases.iter().find(|c| c.mode == *mode) {
            out.push(case.judge(sysctls, who.clone(), plan));
        } else if let Some((_, why)) = not_judged.iter().find(|(m, _)| m == mode) {
            let mut case = model::not_judged(*mode, why.clone());
            case.pid = Some(pid);
            case.comm = Some(comm.clone());
            out.push(case);
        }
    }
    if !unfiltered.is_empty() {
        let names: Vec<&str> = unfiltered.iter().map(|m| m.name()).collect();
        print::tell!(
            "after --wait: took the filter off {} (the program still held them; --leave-open keeps it)",
            names.join(", ")
        );
    }
    let misses = judge::misses(&out, &plan.expect_noticed, plan.expect_no_leak);
    let count = |f: &dyn Fn(Reaction) -> bool| out.iter().filter(|c| f(c.reaction)).count();
    let summary = CheckSummary {
        schema: SCHEMA,
        kind: "check-summary",
        program: "running",
        target: format!("pid {pid} ({comm})"),
        wait_us: micros(plan.wait),
        wait_silent_us: plan.wait_silent.map(micros),
        elapsed_us: micros(started.elapsed()),
        cases: out.len(),
        noticed: count(&|r| r.noticed()),
        leaked: count(&|r| r == Reaction::Leaked),
        unnoticed: count(&|r| r == Reaction::Unnoticed),
        not_judged: count(&|r| r == Reaction::NotJudged),
        reconnected: out
            .iter()
            .filter(|c| c.reconnected_after_us.is_some())
            .count(),
        keepalive_sysctls: sysctls,
        left_out: Vec::new(),
        reset_after_wait: Vec::new(),
        left_open,
        unfiltered_after_wait: unfiltered,
        misses,
    };
    Ok(Ran::Checked {
        result: Box::new(CheckResult {
            cases: out,
            summary,
        }),
        interrupted,
    })
}

/// The program's established connections (each socket once, by its lowest
/// descriptor), to `peer` when given, lowest descriptor first; each with where
/// its peer's socket is.
fn connections(
    fds: &[(i32, u32)],
    sockets: &[DiagSocket],
    peer: Option<crate::values::PeerFilter>,
) -> Vec<Conn> {
    let mut by_inode: HashMap<u32, i32> = HashMap::new();
    for &(fd, inode) in fds {
        by_inode.entry(inode).or_insert(fd);
    }
    let mut conns: Vec<(Conn, Option<u32>)> = sockets
        .iter()
        .filter(|s| s.state == TcpState::Established && s.inode != 0)
        .filter(|s| peer.is_none_or(|p| p.matches(s.remote)))
        .filter_map(|s| {
            let fd = *by_inode.get(&s.inode)?;
            // The other end, when it is a socket of this namespace.
            let other = sockets.iter().find(|o| {
                same(o.local, s.remote) && same(o.remote, s.local) && o.state != TcpState::Listen
            });
            let conn = Conn {
                fd,
                inode: s.inode,
                local: s.local,
                remote: s.remote,
                peer: if other.is_some() {
                    PeerEnd::Unheld
                } else {
                    PeerEnd::Elsewhere
                },
            };
            Some((conn, other.map(|o| o.inode).filter(|i| *i != 0)))
        })
        .collect();
    conns.sort_by_key(|(c, _)| c.fd);
    conns.dedup_by_key(|(c, _)| c.inode);
    // The peers' holders, in one walk of /proc.
    let wanted: HashSet<u32> = conns.iter().filter_map(|(_, i)| *i).collect();
    let holders = if wanted.is_empty() {
        HashMap::new()
    } else {
        procfs::holders(&wanted, None)
    };
    conns
        .into_iter()
        .map(|(mut conn, other)| {
            let holder = other.and_then(|inode| {
                let pids = holders.get(&inode)?;
                pids.iter()
                    .filter(|p| **p != std::process::id())
                    .find_map(|p| procfs::descriptor_of(*p, inode))
                    .map(|(pid, fd)| (pid, fd, inode))
            });
            if let Some((pid, fd, inode)) = holder {
                conn.peer = PeerEnd::Held { pid, fd, inode };
            }
            conn
        })
        .collect()
}

/// The same address, an IPv4 one and its v4-mapped IPv6 form alike.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// One connection per mode, in the order of `modes`: `fin` and `half` first take
/// connections whose peer's socket is held on this host (the only ones they can
/// end), the others the lowest descriptors left. A mode without one gets why.
fn choose(modes: &[CloseMode], conns: &[Conn]) -> Vec<(CloseMode, Result<Conn, String>)> {
    let mut used: HashSet<u32> = HashSet::new();
    let mut chosen: HashMap<CloseMode, Result<Conn, String>> = HashMap::new();
    let needs_peer = |m: &CloseMode| matches!(m, CloseMode::Fin | CloseMode::Half);
    for &mode in modes.iter().filter(|m| needs_peer(m)) {
        let pick = conns
            .iter()
            .find(|c| !used.contains(&c.inode) && matches!(c.peer, PeerEnd::Held { .. }));
        let result = match pick {
            Some(conn) => {
                used.insert(conn.inode);
                Ok(conn.clone())
            }
            None if conns.iter().any(|c| matches!(c.peer, PeerEnd::Held { .. })) => {
                Err("no connection left for it whose peer's socket is on this host".into())
            }
            None if conns.is_empty() => Err(no_connection()),
            None => Err(format!(
                "its peer's socket is not one tcpbye can act on (on another host, or another user's without root): only the peer's own program can send its FIN; a {mode} needs a connection whose both ends are on this host"
            )),
        };
        chosen.insert(mode, result);
    }
    for &mode in modes.iter().filter(|m| !needs_peer(m)) {
        let result = match conns.iter().find(|c| !used.contains(&c.inode)) {
            Some(conn) => {
                used.insert(conn.inode);
                Ok(conn.clone())
            }
            None if conns.is_empty() => Err(no_connection()),
            None => Err("no connection left for it: one connection per mode".into()),
        };
        chosen.insert(mode, result);
    }
    modes
        .iter()
        .filter_map(|m| chosen.remove(m).map(|c| (*m, c)))
        .collect()
}

fn no_connection() -> String {
    "the program has no established TCP connection (to --peer) in its network namespace".into()
}

/// What will be done to `conn` for `mode`, in words.
fn action_text(mode: CloseMode, conn: &Conn) -> String {
    match (mode, conn.peer) {
        (CloseMode::Rst, PeerEnd::Held { .. }) => {
            "connect(AF_UNSPEC) on the peer's socket: the peer's kernel sends the RST".into()
        }
        (CloseMode::Rst, _) => "an RST from the peer's address at the sequence number the program expects (TCP_REPAIR reads it; a raw socket sends it)".into(),
        (CloseMode::Drop, _) => "a drop-all socket filter on the program's socket".into(),
        (CloseMode::Hang, _) => {
            "a socket filter on the program's socket dropping the peer's data and FIN".into()
        }
        (CloseMode::Fin, _) => "shutdown(SHUT_WR) on the peer's socket: its FIN (the peer still reads, so a later write of the program is not answered by RST)".into(),
        (CloseMode::Half, _) => "shutdown(SHUT_WR) on the peer's socket: its FIN, the peer still reading".into(),
        _ => "-".into(),
    }
}

fn choice(pid: u32, mode: CloseMode, conn: &Result<Conn, String>) -> CheckChoice {
    let base = CheckChoice {
        schema: SCHEMA,
        kind: "check-choice",
        mode,
        pid,
        fd: None,
        program_addr: None,
        peer_addr: None,
        peer: None,
        peer_pid: None,
        peer_fd: None,
        action: None,
        why: String::new(),
    };
    match conn {
        Ok(conn) => {
            let (peer_pid, peer_fd) = match conn.peer {
                PeerEnd::Held { pid, fd, .. } => (Some(pid), Some(fd)),
                _ => (None, None),
            };
            let why = match (mode, conn.peer) {
                (CloseMode::Fin | CloseMode::Half, _) => {
                    "the lowest descriptor whose peer's socket is on this host".into()
                }
                (_, PeerEnd::Held { .. } | PeerEnd::Unheld) => {
                    "the lowest descriptor left; its peer's socket is on this host".into()
                }
                _ => "the lowest descriptor left; its peer is on another host".into(),
            };
            CheckChoice {
                fd: Some(conn.fd),
                program_addr: Some(conn.local),
                peer_addr: Some(conn.remote),
                peer: Some(conn.peer.name()),
                peer_pid,
                peer_fd,
                action: Some(action_text(mode, conn)),
                why,
                ..base
            }
        }
        Err(why) => CheckChoice {
            why: why.clone(),
            ..base
        },
    }
}

/// A duplicate of `pid`'s descriptor `fd` — only if it still is socket `inode`
/// (a descriptor number is reused once the program closes it).
fn duplicate(program: &sys::Program, fd: i32, inode: u32) -> io::Result<OwnedFd> {
    let dup = std::fs::File::from(program.duplicate(fd)?);
    if dup.metadata()?.ino() != u64::from(inode) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("fd {fd} is no longer socket:[{inode}]"),
        ));
    }
    Ok(OwnedFd::from(dup))
}

/// Carries out `mode` on `conn`; every duplicate is closed before this returns.
/// `Err`: why the mode cannot be judged (nothing was changed).
fn act(
    mode: CloseMode,
    conn: &Conn,
    program: &sys::Program,
    peers: &mut HashMap<u32, Option<sys::Program>>,
) -> Result<String, String> {
    let how = action_text(mode, conn);
    let own = || {
        duplicate(program, conn.fd, conn.inode)
            .map_err(|e| format!("its descriptor could not be duplicated: {e}"))
    };
    let done = match (mode, conn.peer) {
        (CloseMode::Drop, _) => sys::attach_silence(own()?.as_fd(), SilentPeer::Gone),
        (CloseMode::Hang, _) => sys::attach_silence(own()?.as_fd(), SilentPeer::Hung),
        (CloseMode::Rst, PeerEnd::Elsewhere | PeerEnd::Unheld) => {
            return remote_rst(conn, &own()?).map(|()| how);
        }
        (CloseMode::Rst | CloseMode::Fin | CloseMode::Half, PeerEnd::Held { pid, fd, inode }) => {
            let peer = peers
                .entry(pid)
                .or_insert_with(|| sys::Program::open(pid).ok())
                .as_ref()
                .ok_or_else(|| {
                    format!("the peer's process {pid} could not be opened (pidfd_open)")
                })?;
            let dup = duplicate(peer, fd, inode).map_err(|e| {
                format!("the peer's socket (pid {pid} fd {fd}) could not be duplicated: {e}")
            })?;
            if mode == CloseMode::Rst {
                sys::disconnect(dup.as_fd())
            } else {
                sys::shutdown_write(dup.as_fd())
            }
        }
        (m, _) => return Err(format!("check --pid does not do {m}")),
    };
    done.map(|()| how)
        .map_err(|e| format!("{mode} could not be done: {e}"))
}

/// An RST from the peer's address at the sequence number the program's socket
/// (`dup`) expects.
fn remote_rst(conn: &Conn, dup: &OwnedFd) -> Result<(), String> {
    let seqs = sys::live_sequences(dup.as_fd()).map_err(|e| {
        format!(
            "its peer is on another host: reading its sequence numbers (TCP_REPAIR) failed: {e}{}",
            need(e.raw_os_error(), Capability::NetAdmin)
        )
    })?;
    sys::send_rst(conn.remote, conn.local, seqs.recv_next, seqs.send_una).map_err(|e| {
        format!(
            "its peer is on another host: sending the RST (a raw socket) failed: {e}{}",
            need(e.raw_os_error(), Capability::NetRaw)
        )
    })
}

fn need(errno: Option<i32>, capability: Capability) -> String {
    if matches!(errno, Some(libc::EPERM | libc::EACCES)) {
        format!(" (needs {})", capability.name())
    } else {
        String::new()
    }
}

/// What a reading shows that matters: state, without a file, timer kind, and
/// `recv_q` in CLOSE_WAIT.
type Seen = (TcpState, bool, Option<DiagTimerKind>, u32);

/// The state changes of one socket through sock_diag, on the check's clock.
#[derive(Debug, Default)]
struct Track {
    samples: Vec<SideSample>,
    /// What the last reading showed: state, file or not, timer kind, and `recv_q` in
    /// CLOSE_WAIT (its EOF read or not). `Some(None)`: gone.
    last: Option<Option<Seen>>,
    last_read_us: Option<u64>,
    /// Gone, or (the peer's socket) in TIME_WAIT: no more readings.
    ended: bool,
}

impl Track {
    fn record(&mut self, t_us: u64, found: Option<&DiagSocket>) {
        let key = found.map(|d| {
            let recv_q = if d.state == TcpState::CloseWait {
                d.recv_q
            } else {
                0
            };
            (d.state, d.inode == 0, d.timer.map(|t| t.kind), recv_q)
        });
        if self.last != Some(key) && self.samples.len() < MAX_SAMPLES {
            let mut sample = side::sample(t_us, found);
            sample.prev_t_us = self.last_read_us;
            self.samples.push(sample);
        }
        self.last = Some(key);
        self.last_read_us = Some(t_us);
        self.ended |= found.is_none_or(|d| d.state == TcpState::TimeWait && d.inode == 0);
    }
}

/// One mode's connection, acted on and watched.
#[derive(Debug)]
struct Case {
    mode: CloseMode,
    conn: Conn,
    settings: Option<ProgramSettings>,
    /// How it was done (and again, for a remote `rst` sent more than once).
    how: String,
    acted_at: Instant,
    action_t_us: u64,
    until: Instant,
    program: Track,
    /// The peer's socket, when it is on this host.
    peer: Track,
    next_read: Instant,
    /// The last look at `/proc/PID/fd/N` that still found the socket, and the first that did not.
    held_at: Instant,
    released_at: Option<Instant>,
    /// The program's next connection to the same peer: when it was first seen,
    /// and the look before (it came between the two).
    reconnected: Option<(Instant, Instant)>,
    filter: Option<SilentPeer>,
    rst_sent: u32,
}

impl Case {
    fn new(
        mode: CloseMode,
        conn: Conn,
        settings: Option<ProgramSettings>,
        started: Instant,
        plan: &CheckPidPlan,
    ) -> Self {
        let now = Instant::now();
        Self {
            mode,
            conn,
            settings,
            how: String::new(),
            acted_at: now,
            action_t_us: micros(now.duration_since(started)),
            until: now + plan.wait_for(mode),
            program: Track::default(),
            peer: Track::default(),
            next_read: now,
            held_at: now,
            released_at: None,
            reconnected: None,
            filter: match mode {
                CloseMode::Drop => Some(SilentPeer::Gone),
                CloseMode::Hang => Some(SilentPeer::Hung),
                _ => None,
            },
            rst_sent: 0,
        }
    }

    fn acted(&mut self, at: Instant, started: Instant, how: String) {
        let wait = self.until.saturating_duration_since(self.acted_at);
        self.acted_at = at;
        self.action_t_us = micros(at.duration_since(started));
        self.until = at + wait;
        self.held_at = at;
        self.next_read = at;
        self.how = how;
        self.rst_sent = 1;
    }

    /// The peer's socket is read when tcpbye acted on it.
    fn peer_on_host(&self) -> bool {
        matches!(self.conn.peer, PeerEnd::Held { .. })
            && matches!(self.mode, CloseMode::Fin | CloseMode::Half | CloseMode::Rst)
    }

    /// How long after the action the next sock_diag reading comes: densely at
    /// first, where the fast reactions are.
    fn read_every(&self, now: Instant) -> Duration {
        crate::engine::peer_pace(now.saturating_duration_since(self.acted_at))
    }

    /// Nothing more to learn: the socket and its descriptor are gone and the
    /// program connected again, or the wait is over.
    fn over(&self, now: Instant) -> bool {
        now >= self.until
            || (self.program.ended && self.released_at.is_some() && self.reconnected.is_some())
    }

    /// The case as `check` judges it: its connection as a report seen from the
    /// peer's side, whose part tcpbye played.
    fn judge(&self, sysctls: KeepaliveSysctls, who: judge::Who, plan: &CheckPidPlan) -> CheckCase {
        let at = |i: Instant| micros(i.saturating_duration_since(self.acted_at));
        let end = self.program.samples.last().and_then(|s| s.state);
        let report = Report {
            local: Some(self.conn.remote),
            close: Some(self.mode),
            closer: Some(Closer::Local),
            close_t_us: Some(self.action_t_us),
            peer_side: Some(PeerSide {
                visible: true,
                note: None,
                uid: None,
                states: self.program.samples.clone(),
                tcp_info: None,
            }),
            afterlife: self.peer_on_host().then(|| Afterlife {
                states: self.peer.samples.clone(),
                ended: if self
                    .peer
                    .samples
                    .iter()
                    .any(|s| s.state == Some(TcpState::TimeWait))
                {
                    AfterlifeEnd::TimeWait
                } else if self.peer.ended {
                    AfterlifeEnd::Gone
                } else {
                    AfterlifeEnd::WatchEnded
                },
                watched_us: at(self.until),
            }),
            ..Report::bare(Role::Connect, self.conn.local, Verdict::Open)
        };
        // The descriptor's fate counts once the socket left the kernel's tables.
        let descriptor = (end.is_none() && !self.program.samples.is_empty()).then(|| Descriptor {
            inode: self.conn.inode,
            pids: vec![plan.pid],
            released_after_us: self.released_at.map(at),
            released_resolution_us: self
                .released_at
                .map(|r| micros(r.saturating_duration_since(self.held_at.max(self.acted_at)))),
            held_at_end: self.released_at.is_none(),
        });
        let last = self
            .program
            .samples
            .last()
            .filter(|s| s.state.is_some())
            .cloned();
        let known = judge::Known {
            sysctls,
            settings: self.settings,
            wait_us: micros(plan.wait_for(self.mode)),
            who: Some(judge::Who {
                fd: Some(self.conn.fd),
                ..who
            }),
            peer: judge::Peer::Real,
        };
        let mut case = judge::judge(self.mode, &report, descriptor, last, known, None);
        let reconnected = self.reconnected.map(|(seen, _)| at(seen));
        judge::reconnected(&mut case, reconnected);
        if let (Some((seen, before)), true) = (self.reconnected, reconnected.is_some()) {
            case.resolution_us.reconnected =
                Some(micros(seen.saturating_duration_since(before.max(self.acted_at))).max(1));
        }
        case.tcpbye_addr = Some(self.conn.remote);
        case.program_addr = Some(self.conn.local);
        case.saw = saw(self.mode);
        case.evidence = format!("fd {}: {}; {}", self.conn.fd, self.how, case.evidence);
        case
    }
}

/// What the program could observe, as `check --pid` does each mode.
fn saw(mode: CloseMode) -> &'static str {
    match mode {
        CloseMode::Fin => "EOF (FIN from its peer's socket; its later writes still accepted)",
        CloseMode::Half => "EOF (FIN), its peer still reading",
        CloseMode::Rst => "ECONNRESET (RST from its peer)",
        CloseMode::Drop => "nothing: silence",
        CloseMode::Hang => "nothing: its data still ACKed",
        other => model::saw(other),
    }
}

/// Watches every case until its wait is over (or a signal comes): the program's
/// socket and the peer's through sock_diag, the program's descriptor, and its new
/// connections to the same peer. Returns whether a signal cut it short.
fn watch(
    cases: &mut [Case],
    program: &sys::Program,
    pid: u32,
    mut known: HashSet<u32>,
    signals: &SignalFd,
    started: Instant,
) -> bool {
    let mut next_fd_scan = Instant::now();
    let mut last_fd_scan = Instant::now();
    loop {
        if matches!(signals.read_signal(), Ok(Some(_))) {
            return true;
        }
        let now = Instant::now();
        if cases.iter().all(|c| c.over(now)) {
            return false;
        }
        let t_us = micros(now.duration_since(started));
        for case in cases.iter_mut().filter(|c| !c.over(now)) {
            // Its descriptor: one readlink.
            if case.released_at.is_none() {
                let held = procfs::holds(pid, case.conn.fd, case.conn.inode);
                if held {
                    case.held_at = Instant::now();
                } else {
                    case.released_at = Some(Instant::now());
                }
            }
            if now < case.next_read {
                continue;
            }
            case.next_read = now + case.read_every(now);
            if !case.program.ended {
                let found = sys::lookup(case.conn.local, case.conn.remote)
                    .ok()
                    .flatten();
                case.program.record(t_us, found.as_ref());
            }
            if case.peer_on_host() && !case.peer.ended {
                let found = sys::lookup(case.conn.remote, case.conn.local)
                    .ok()
                    .flatten();
                case.peer.record(t_us, found.as_ref());
            }
            // A remote RST that met a moved sequence number: sent again.
            let still = matches!(case.program.last, Some(Some((TcpState::Established, ..))));
            if case.mode == CloseMode::Rst
                && !matches!(case.conn.peer, PeerEnd::Held { .. })
                && still
                && case.rst_sent < RST_TRIES
                && now.saturating_duration_since(case.acted_at) >= RST_CHECK * case.rst_sent
            {
                case.rst_sent += 1;
                if let Ok(dup) = duplicate(program, case.conn.fd, case.conn.inode)
                    && remote_rst(&case.conn, &dup).is_ok()
                {
                    case.how = format!(
                        "{} (sent {} times)",
                        action_text(case.mode, &case.conn),
                        case.rst_sent
                    );
                }
            }
        }
        // New connections of the program to a case's peer.
        if now >= next_fd_scan {
            next_fd_scan = now + RECONNECT_POLL;
            let before = last_fd_scan;
            last_fd_scan = now;
            if let Ok(fds) = procfs::socket_fds(pid) {
                let new: HashSet<u32> = fds
                    .iter()
                    .map(|(_, inode)| *inode)
                    .filter(|i| !known.contains(i))
                    .collect();
                if !new.is_empty() {
                    let sockets = sys::dump().unwrap_or_default();
                    for socket in sockets.iter().filter(|s| new.contains(&s.inode)) {
                        reconnection(cases, socket, now, before);
                    }
                    // A socket not yet connected is looked at again next time.
                    let connected: HashSet<u32> = sockets
                        .iter()
                        .filter(|s| new.contains(&s.inode) && s.state != TcpState::SynSent)
                        .map(|s| s.inode)
                        .collect();
                    known.extend(connected);
                }
            }
        }
        let now = Instant::now();
        let next = cases
            .iter()
            .filter(|c| !c.over(now))
            .map(|c| {
                if c.released_at.is_none() {
                    now + super::check::HOLDER_POLL
                } else {
                    c.next_read
                }
            })
            .chain([next_fd_scan])
            .min()
            .unwrap_or(now);
        std::thread::sleep(
            next.saturating_duration_since(now)
                .min(Duration::from_millis(10)),
        );
    }
}

/// A new socket of the program, `seen` now (not at the look `before`): the
/// reconnection of the case that ended last before it among those to the same
/// peer without one yet — or, when none has ended, of the first such case.
fn reconnection(cases: &mut [Case], socket: &DiagSocket, seen: Instant, before: Instant) {
    if !matches!(socket.state, TcpState::Established | TcpState::SynSent) {
        return;
    }
    let same_peer = |c: &Case| same(c.conn.remote, socket.remote) && c.reconnected.is_none();
    let ended = |c: &Case| c.released_at.filter(|r| *r <= seen);
    let index = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| same_peer(c) && ended(c).is_some())
        .max_by_key(|(_, c)| ended(c))
        .or_else(|| cases.iter().enumerate().find(|(_, c)| same_peer(c)))
        .map(|(i, _)| i);
    if let Some(i) = index {
        cases[i].reconnected = Some((seen, before));
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP (for every thread started after) and returns
/// a descriptor that reads them.
fn catch_signals() -> anyhow::Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|e| Failure::Runtime(format!("block SIGINT/SIGTERM/SIGHUP: {e}")))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Failure::Runtime(format!("signalfd: {e}")).into())
}

/// The error for a step on process `pid` that failed: no such process (exit 3),
/// a missing privilege (exit 4, naming `capability`), or anything else (exit 3).
fn refused(pid: u32, step: &str, capability: Capability, err: io::Error) -> anyhow::Error {
    let name = procfs::comm(pid).unwrap_or_else(|| "?".into());
    match err.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => {
            Failure::Runtime(format!("check --pid: no process with pid {pid}")).into()
        }
        Some(libc::EPERM | libc::EACCES) => {
            let owner = std::fs::metadata(format!("/proc/{pid}"))
                .map_or(String::new(), |m| format!(", user {}", m.uid()));
            let needs = match capability {
                Capability::SysAdmin => "entering another network namespace",
                _ => "acting on another program's sockets",
            };
            Failure::Privilege {
                what: format!("check --pid {pid} ({name}{owner}) refused: {step}: {err}; {needs}"),
                capability,
            }
            .into()
        }
        _ => Failure::Runtime(format!("check --pid {pid}: {step}: {err}")).into(),
    }
}
