//! `tcpbye check ADDR`: one fresh connection to the program under test per mode,
//! all on one event loop; each ends in its mode and the program's socket is
//! followed (sock_diag, then its descriptor under /proc) for `--wait`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::print;
use super::procfs::{children, comm, descriptor_of, first_holder, holders, holds};
use crate::engine::capture::Filter;
use crate::engine::side;
use crate::engine::timers::later;
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::{Capability, Failure, Outcome};
use crate::judge::Remote;
use crate::judge::check as judge;
use crate::plan::{CheckPlan, EndPlan, Family, History, recipe};
use crate::report::check::{
    self as model, CheckResult, CheckSummary, Descriptor, KeepaliveSysctls, ProgramSettings,
    Reaction,
};
use crate::report::micros;
use crate::report::{Report, SCHEMA, SideSample, Verdict};
use crate::sys::TcpState;
use crate::vocab::CloseMode;

/// How long tcpbye waits for the answer to `--request`/`--send` before acting anyway.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Without a request: time for the program to accept() before tcpbye acts (a
/// socket still in the accept queue has no file, which would read as closed).
const SETTLE: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `--listen`: how often the driver looks whether the check is over.
const TICK: Duration = Duration::from_millis(50);
/// How often a dead socket's descriptor is looked for under /proc.
const FD_POLL: Duration = Duration::from_millis(20);
/// How long a socket the program accepted is looked for under /proc (each [`HOLDER_POLL`]).
const SEEK: Duration = Duration::from_millis(500);
/// How often a descriptor known from before tcpbye's action is read again.
pub(super) const HOLDER_POLL: Duration = Duration::from_micros(250);

/// Runs `tcpbye check` (or `check --listen`) and prints the matrix.
pub fn check(plan: &CheckPlan) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let addr = *super::serve::resolve(&plan.addr, Family::Any)?
        .first()
        .ok_or_else(|| Failure::Runtime(format!("'{}' has no address", plan.addr)))?;
    let answer = plan.listen || !plan.request.is_empty() || plan.send > 0;
    let after = if answer { ANSWER_WAIT } else { SETTLE };
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    // A program on another host (or in another network namespace) is judged from
    // what arrives from it: its segments are captured when the privilege allows.
    let remote_target = !plan.listen && !is_local(addr);
    if let Some(mode) = plan
        .modes
        .iter()
        .find(|m| m.is_silent() && remote_target && plan.modes_given && !plan.capture)
    {
        return Err(Failure::Privilege {
            what: format!(
                "check --modes {mode} of a program on another host (its packets are the evidence)"
            ),
            capability: Capability::NetRaw,
        }
        .into());
    }
    // On this host too: the program's FIN is timed from its packet, not from the
    // next sock_diag reading, and after `reboot` its own close (which meets tcpbye's
    // kernel's RST within microseconds) is told apart from its kernel giving up.
    let captured = plan.capture;
    if captured {
        reactor.capture(None, Filter { addr })?;
    }
    let end_plan = |mode: CloseMode| recipe::check_case(plan, mode, after, answer);
    if !plan.left_out.is_empty() {
        print::tell!("{}", left_out_line(&plan.left_out));
    }
    let mut starts: HashMap<CloseMode, Instant> = HashMap::new();
    let mut holder_pids: Vec<u32> = Vec::new();
    // The program's process and its name, per case, found while it held the socket.
    let mut programs: HashMap<CloseMode, (u32, Option<i32>, String)> = HashMap::new();
    let target = if plan.listen {
        // Connections beyond the modes (the client reconnecting after the last
        // one) are held open, unjudged, until the check ends.
        // Never judged, so a few KB each however long the client keeps them.
        let extra = EndPlan {
            probe: false,
            history: History::Compact,
            ..EndPlan::default()
        };
        let local = reactor
            .listen(addr, extra, None)
            .map_err(|e| super::serve::privileged_port(e, addr))?;
        reactor.set_capture_filter(Filter { addr: local })?;
        reactor.queue_plans(plan.modes.iter().map(|&m| end_plan(m)));
        reactor.tell_accepts();
        reactor.tick_every(TICK);
        print::tell!("listening on {local}");
        local
    } else {
        // The processes holding the server's listener: where its connections'
        // descriptors are looked for first.
        holder_pids = listener_holders(addr);
        for &mode in &plan.modes {
            starts.insert(mode, Instant::now());
            reactor.connect(addr, end_plan(mode), CONNECT_TIMEOUT)?;
        }
        addr
    };

    let (tx, rx) = mpsc::channel::<Watch>();
    let watch_until = if plan.listen {
        listen_deadline(started, plan)
    } else {
        Instant::now() + after + plan.longest_wait()
    };
    let hints = holder_pids.clone();
    let watcher = std::thread::spawn(move || watch_descriptors(&rx, hints));
    let mut reports: BTreeMap<usize, Report> = BTreeMap::new();
    // Connections that ended before tcpbye acted (not with --listen: there they
    // are part of no mode, and only counted).
    let mut unmatched: Vec<Report> = Vec::new();
    // The program's socket as the connection's report arrives (its timers now).
    let mut latest: HashMap<CloseMode, Option<SideSample>> = HashMap::new();
    // The program's own socket options, where its descriptor could be duplicated.
    let mut settings: HashMap<CloseMode, ProgramSettings> = HashMap::new();
    let mut listening = Listening::default();
    // Cases whose program socket vanished: their descriptor's fate is evidence.
    let mut vanished_modes: HashSet<CloseMode> = HashSet::new();
    let mut actions: Vec<Instant> = Vec::new();
    let end = reactor.run(&mut |emit| {
        match emit {
            Emit::Report(report) => {
                let accepted = listening.open.remove(&report.peer);
                match report.close {
                    Some(mode) => {
                        if let (Some(local), Some(start)) = (report.local, starts.get(&mode)) {
                            let reading = last_reading(report.peer, local, *start);
                            if let Some(own) = reading.as_ref().and_then(|r| own_settings(r.inode))
                            {
                                settings.insert(mode, own);
                            }
                            latest.insert(mode, reading);
                            if let Some(t) = report.close_t_us {
                                actions.push(*start + Duration::from_micros(t));
                            }
                        }
                        if let Some(inode) = judge::vanished_inode(&report) {
                            // Watched until this case's wait is served: from tcpbye's action.
                            let action = starts.get(&mode).map(|start| {
                                *start + Duration::from_micros(report.close_t_us.unwrap_or(0))
                            });
                            let until =
                                later(action.unwrap_or_else(Instant::now), plan.wait_for(mode));
                            let _ = tx.send(Watch::Vanished { mode, inode, until });
                            vanished_modes.insert(mode);
                        }
                        if let Some((at, _)) = accepted {
                            listening.keep_accept(at);
                        }
                        let index = plan.modes.iter().position(|m| *m == mode).unwrap_or(0);
                        reports.insert(index, *report);
                    }
                    None if plan.listen => listening.ended_early(Instant::now()),
                    None => unmatched.push(*report),
                }
            }
            Emit::Notice(text) => print::tell!("{text}"),
            Emit::Accepted { peer, at, close } => {
                if plan.modes.contains(&close) {
                    starts.insert(close, at);
                }
                listening.accepted += 1;
                listening.last_accept = Some(at);
                listening.open.insert(peer, (at, close));
            }
            Emit::Tick(now) => {
                let flow = listen_flow(now, started, &listening, &actions, reports.len(), plan);
                if flow == Flow::Stop && now >= watch_until {
                    print::tell!(
                        "check --listen: stopped after {}s: the client kept connecting without \
                         the modes left being carried out",
                        started.elapsed().as_secs()
                    );
                }
                return Ok(flow);
            }
            // Its descriptor is found now, while the program still holds it, and
            // then watched on its own: its release is timed to a millisecond.
            Emit::Acted {
                at,
                close,
                peer_inode,
            } => {
                let until = later(at, plan.wait_for(close));
                let _ = tx.send(Watch::Acted {
                    mode: close,
                    inode: peer_inode,
                    until,
                });
            }
            // The program accepted: its descriptor is found now, before tcpbye
            // acts, so that its release is timed by one readlink from the start.
            Emit::PeerKnown { close, peer_inode } => {
                let holder = find_holder(peer_inode, &mut holder_pids);
                if let Some((pid, fd)) = holder {
                    programs.extend(comm(pid).map(|name| (close, (pid, Some(fd), name))));
                }
                let _ = tx.send(Watch::Known {
                    mode: close,
                    inode: peer_inode,
                    holder,
                });
            }
            Emit::Progress(_) => {}
        }
        Ok(Flow::Continue)
    })?;
    let vanished = reactor.take_vanished();
    drop(reactor);
    drop(tx);
    let fates = watcher
        .join()
        .map_err(|_| Failure::Runtime("the /proc watcher failed".into()))?;

    if plan.listen && listening.accepted == 0 && end != RunEnd::Interrupted {
        return Err(Failure::Runtime(format!(
            "check --listen {target}: no client connected within {} (--wait-client)",
            crate::report::fmt_us(micros(plan.wait_client))
        ))
        .into());
    }
    if listening.early > 0 {
        print::tell!(
            "{} connection(s) ended by the client before tcpbye acted: part of no mode",
            listening.early
        );
    }
    // A connection that never got to tcpbye's action: every mode fails alike
    // when the server cannot be reached.
    if reports.is_empty()
        && let Some(report) = unmatched.first()
        && matches!(
            report.verdict,
            Verdict::Refused | Verdict::Unreachable | Verdict::ConnectTimeout | Verdict::Error
        )
    {
        return Err(Failure::Runtime(format!("check: connect {addr}: {}", report.verdict)).into());
    }
    let sysctls = KeepaliveSysctls::read();
    let mut go_binaries: HashMap<u32, bool> = HashMap::new();
    let known = |settings, mode, who| judge::Known {
        sysctls,
        settings,
        wait_us: micros(plan.wait_for(mode)),
        who,
        peer: judge::Peer::Tcpbye,
    };
    // tcpbye's address of each case's connection: what a vanished socket is known by.
    let mode_of: HashMap<SocketAddr, CloseMode> = reports
        .values()
        .filter_map(|r| Some((r.local?, r.close?)))
        .collect();
    let reconnects = reconnections(&plan.modes, &starts, &reports, &listening.accepts());
    let mut unmatched = unmatched.into_iter();
    let cases: Vec<_> = plan
        .modes
        .iter()
        .enumerate()
        .map(|(index, &mode)| match reports.remove(&index) {
            Some(report) => {
                // Another user's /proc/PID/fd is readable only with root: an
                // inode not found there says nothing then.
                let euid = nix::unistd::geteuid();
                let readable = euid.is_root()
                    || report
                        .peer_side
                        .as_ref()
                        .and_then(|p| p.uid)
                        .is_some_and(|uid| uid == euid.as_raw());
                let descriptor = fates
                    .get(&mode)
                    .filter(|_| readable && vanished_modes.contains(&mode))
                    .map(|fate| {
                    let action = starts
                        .get(&mode)
                        .copied()
                        .map(|s| s + Duration::from_micros(report.close_t_us.unwrap_or(0)));
                    fate.descriptor(action)
                });
                let last = latest.remove(&mode).flatten();
                let remote = (!is_local(report.peer)).then_some(Remote {
                    captured,
                    wait_us: micros(plan.wait_for(mode)),
                });
                let own = settings.get(&mode).copied();
                // Found while it held the socket; else whoever held it last.
                let program = programs
                    .remove(&mode)
                    .or_else(|| {
                        let (pid, fd) = match own {
                            Some(s) => (s.pid, Some(s.fd)),
                            None => (fates.get(&mode)?.pids.first().copied()?, None),
                        };
                        Some((pid, fd, comm(pid)?))
                    })
                    .map(|(pid, fd, comm)| who(pid, fd, comm, &mut go_binaries));
                let known = known(own, mode, program);
                let mut case = judge::judge(mode, &report, descriptor, last, known, remote);
                if plan.listen {
                    judge::reconnected(&mut case, reconnects.get(&mode).copied());
                }
                case.tcpbye_addr = report.local;
                case.program_addr = Some(report.peer);
                case
            }
            None if plan.listen && end != RunEnd::Interrupted => model::not_judged(
                mode,
                "no connection came for it: the client did not connect again within --wait of the previous ending".into(),
            ),
            None => match unmatched.next() {
                Some(report) => {
                    judge::judge(mode, &report, None, None, known(None, mode, None), None)
                }
                None => model::not_judged(mode, "no report (interrupted)".into()),
            },
        })
        .collect();
    let afterwards = end_orphans(&vanished, &mode_of, &cases, plan.leave_open);
    if let Some(line) = afterwards.line() {
        print::tell!("{line}");
    }
    let misses = judge::misses(&cases, &plan.expect_noticed, plan.expect_no_leak);
    let count = |f: &dyn Fn(Reaction) -> bool| cases.iter().filter(|c| f(c.reaction)).count();
    let summary = CheckSummary {
        schema: SCHEMA,
        kind: "check-summary",
        program: if plan.listen { "client" } else { "server" },
        target: target.to_string(),
        wait_us: micros(plan.wait),
        wait_silent_us: plan.wait_silent.map(micros),
        elapsed_us: micros(started.elapsed()),
        cases: cases.len(),
        noticed: count(&|r| r.noticed()),
        leaked: count(&|r| r == Reaction::Leaked),
        unnoticed: count(&|r| r == Reaction::Unnoticed),
        not_judged: count(&|r| r == Reaction::NotJudged),
        reconnected: cases
            .iter()
            .filter(|c| c.reconnected_after_us.is_some())
            .count(),
        keepalive_sysctls: sysctls,
        left_out: plan.left_out.clone(),
        reset_after_wait: afterwards.reset,
        left_open: afterwards.left_open,
        unfiltered_after_wait: Vec::new(),
        misses,
    };
    let result = CheckResult { cases, summary };
    print::check(&result, plan.format)?;
    Ok(Outcome {
        interrupted: end == RunEnd::Interrupted,
        missed: !result.summary.misses.is_empty(),
        ..Outcome::DONE
    })
}

/// `check --listen`: the accepted connections, as far as deciding the end and
/// `reconnected` needs them. Bounded: connections ended before tcpbye acted are
/// only counted, and at most [`MAX_ACCEPTS_KEPT`] accept times are kept.
#[derive(Debug, Default)]
struct Listening {
    /// Connections accepted so far.
    accepted: u64,
    /// Accepted and not yet reported, by peer: when, and how tcpbye is to end it
    /// (`none` beyond the modes). As many as the loop holds open.
    open: HashMap<SocketAddr, (Instant, CloseMode)>,
    /// When the cases' connections were accepted (those reported so far).
    kept: Vec<Instant>,
    /// Connections the client ended before tcpbye acted: part of no mode (a
    /// case's plan went to the next connection), and no reconnection either.
    early: u64,
    /// When the last of those ended.
    last_early: Option<Instant>,
    last_accept: Option<Instant>,
}

/// Most accept times kept for `reconnected`: the first reconnections are the ones that count.
const MAX_ACCEPTS_KEPT: usize = 4096;

impl Listening {
    fn keep_accept(&mut self, at: Instant) {
        if self.kept.len() < MAX_ACCEPTS_KEPT {
            self.kept.push(at);
        }
    }

    /// A connection reported without tcpbye's action: the client ended it first
    /// (a health check, a port scan, or a connection beyond the modes).
    fn ended_early(&mut self, now: Instant) {
        self.early += 1;
        self.last_early = Some(now);
    }

    /// Every accept time that counts: the cases' connections, and those beyond
    /// the modes that the client still holds open (its reconnections), in order.
    fn accepts(&self) -> Vec<Instant> {
        let open = self.open.values().filter(|(_, m)| *m == CloseMode::None);
        let mut all: Vec<Instant> = self
            .kept
            .iter()
            .copied()
            .chain(open.map(|(at, _)| *at))
            .collect();
        all.sort();
        all.truncate(MAX_ACCEPTS_KEPT);
        all
    }

    /// Whether a connection that tcpbye is to end in a mode is still open.
    fn case_open(&self) -> bool {
        self.open.values().any(|(_, m)| *m != CloseMode::None)
    }
}

/// `check --listen`: the latest the check can end however the client behaves,
/// counted from `start`: the first connection's wait, then each mode's (tcpbye
/// acts on the client's first bytes or after [`ANSWER_WAIT`]).
fn listen_deadline(start: Instant, plan: &CheckPlan) -> Instant {
    later(
        start,
        plan.wait_client + (ANSWER_WAIT + plan.longest_wait() * 2) * plan.modes.len() as u32,
    )
}

/// The one line that says which default endings were left out, and why.
fn left_out_line(left_out: &[CloseMode]) -> String {
    let names: Vec<&str> = left_out.iter().map(|m| m.name()).collect();
    let privilege = Failure::Privilege {
        what: "a vanished peer".into(),
        capability: Capability::NetAdmin,
    };
    format!("left out: {} ({privilege})", names.join(", "))
}

/// What became of the silent endings' connections once the wait was over.
#[derive(Debug, Default)]
struct Afterwards {
    /// Reset for the program, which still held them.
    reset: Vec<CloseMode>,
    /// Still open in the program: `--leave-open`, or the reset failed.
    left_open: Vec<CloseMode>,
    /// Why a reset failed, per mode.
    failed: Vec<(CloseMode, String)>,
}

impl Afterwards {
    fn line(&self) -> Option<String> {
        let names = |modes: &[CloseMode]| {
            modes
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.failed.is_empty() {
            let why: Vec<String> = self
                .failed
                .iter()
                .map(|(mode, e)| format!("{mode}: {e}"))
                .collect();
            return Some(format!(
                "left open in the program: {} (the reset failed: {})",
                names(&self.left_open),
                why.join("; ")
            ));
        }
        if !self.left_open.is_empty() {
            return Some(format!(
                "left open in the program (--leave-open): {}; it ends them only when it notices",
                names(&self.left_open)
            ));
        }
        (!self.reset.is_empty()).then(|| {
            format!(
                "after --wait: reset {} for the program, which still held them (--leave-open keeps them)",
                names(&self.reset)
            )
        })
    }
}

/// Ends the connections that a silent ending left open in the program and that it
/// never noticed (a `drop` or `reboot` that the judge did not see noticed): an RST
/// with the right sequence numbers from tcpbye's side, as a peer coming back would
/// send. Connections the program already ended are left alone; `leave_open`
/// only reports them.
fn end_orphans(
    vanished: &[crate::sys::Vanished],
    mode_of: &HashMap<SocketAddr, CloseMode>,
    cases: &[model::CheckCase],
    leave_open: bool,
) -> Afterwards {
    let mut out = Afterwards::default();
    // In the order of the cases, not of the sockets' vanishing.
    let mut vanished: Vec<&crate::sys::Vanished> = vanished.iter().collect();
    vanished.sort_by_key(|v| {
        mode_of
            .get(&v.local)
            .and_then(|mode| cases.iter().position(|c| c.mode == *mode))
    });
    for v in vanished {
        let Some(case) = mode_of
            .get(&v.local)
            .and_then(|mode| cases.iter().find(|c| c.mode == *mode))
        else {
            continue;
        };
        // The program's socket, still open in the program (it has a file), when
        // sock_diag shows it; a remote one is unseen.
        let held = if is_local(v.peer) {
            crate::sys::lookup(v.peer, v.local)
                .ok()
                .flatten()
                .is_some_and(|d| {
                    d.inode != 0 && !matches!(d.state, TcpState::TimeWait | TcpState::Close)
                })
        } else {
            !case.reaction.noticed()
        };
        if !held {
            continue;
        }
        if leave_open {
            out.left_open.push(case.mode);
            continue;
        }
        match crate::sys::reset_vanished(v) {
            Ok(()) => out.reset.push(case.mode),
            Err(e) => {
                out.left_open.push(case.mode);
                out.failed.push((case.mode, e.to_string()));
            }
        }
    }
    out
}

/// `check --listen`: whether to go on. The check ends once every case has been
/// reported and `--wait` has passed since the last ending (or the client has
/// connected again since), or when the client stops connecting: no connection
/// for the next mode within `--wait` of the last ending (an action, or a
/// connection the client ended before tcpbye acted), or none at all within
/// `--wait-client` — and at [`listen_deadline`] in any case.
fn listen_flow(
    now: Instant,
    started: Instant,
    listening: &Listening,
    actions: &[Instant],
    reported: usize,
    plan: &CheckPlan,
) -> Flow {
    if now >= listen_deadline(started, plan) {
        return Flow::Stop;
    }
    if listening.accepted == 0 {
        return if now.saturating_duration_since(started) >= plan.wait_client {
            Flow::Stop
        } else {
            Flow::Continue
        };
    }
    // A case's connection ends by its own timeout.
    if listening.case_open() {
        return Flow::Continue;
    }
    let last_action = actions.iter().max().copied();
    if reported >= plan.modes.len()
        && let Some(last) = last_action
    {
        // Every case reported: over once the wait after the last ending is, or
        // once the client connected again.
        let reconnected = listening.accepts().iter().any(|at| *at > last);
        return if reconnected || now >= later(last, plan.wait) {
            Flow::Stop
        } else {
            Flow::Continue
        };
    }
    // Modes left: the client has --wait from the last ending to connect again.
    let last_end = [last_action, listening.last_early, listening.last_accept]
        .into_iter()
        .flatten()
        .max();
    match last_end {
        Some(last) if now < later(last, plan.longest_wait()) => Flow::Continue,
        Some(_) => Flow::Stop,
        None => Flow::Continue,
    }
}

/// `check --listen`: for each mode, µs from tcpbye's action to the next accepted
/// connection not already counted for an earlier ending.
fn reconnections(
    modes: &[CloseMode],
    starts: &HashMap<CloseMode, Instant>,
    reports: &BTreeMap<usize, Report>,
    accepts: &[Instant],
) -> HashMap<CloseMode, u64> {
    let mut acted: Vec<(Instant, CloseMode)> = modes
        .iter()
        .enumerate()
        .filter_map(|(index, mode)| {
            let t = reports.get(&index)?.close_t_us?;
            Some((*starts.get(mode)? + Duration::from_micros(t), *mode))
        })
        .collect();
    acted.sort_by_key(|(at, _)| *at);
    let mut used = vec![false; accepts.len()];
    let mut out = HashMap::new();
    for (action, mode) in acted {
        if let Some(i) = (0..accepts.len()).find(|&i| !used[i] && accepts[i] > action) {
            used[i] = true;
            out.insert(mode, micros(accepts[i] - action));
        }
    }
    out
}

/// The program's socket (`remote` → `local` seen from its side) read once more
/// through sock_diag, on the connection's clock; `None` when it is gone.
fn last_reading(remote: SocketAddr, local: SocketAddr, start: Instant) -> Option<SideSample> {
    let d = crate::sys::lookup(remote, local).ok().flatten()?;
    Some(side::sample(micros(start.elapsed()), Some(&d)))
}

/// The options the program set on the socket with `inode`, read through a
/// duplicate of the first descriptor of it found under /proc/*/fd; `None` when
/// the inode is 0, no descriptor holds it, or the duplicate is not allowed.
fn own_settings(inode: u32) -> Option<ProgramSettings> {
    let (pid, fd) = first_holder(Some(inode).filter(|i| *i != 0)?)?;
    let read = crate::sys::program_socket_settings(pid, fd).ok()?;
    Some(ProgramSettings::from_socket(pid, fd, read))
}

/// The processes holding a listening socket that accepts connections to `addr`.
fn listener_holders(addr: SocketAddr) -> Vec<u32> {
    let inodes: HashSet<u32> = crate::sys::listeners(addr.port())
        .unwrap_or_default()
        .into_iter()
        .filter(|l| {
            let ip = l.local.ip().to_canonical();
            ip.is_unspecified() || ip == addr.ip().to_canonical()
        })
        .map(|l| l.inode)
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut pids: Vec<u32> = holders(&inodes, None).into_values().flatten().collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The program's process for the judge; an executable whose name tcpbye does
/// not know is looked into for Go's marker, once per process.
pub(super) fn who(
    pid: u32,
    fd: Option<i32>,
    comm: String,
    go_binaries: &mut HashMap<u32, bool>,
) -> judge::Who {
    let go = crate::judge::programs::lookup(&comm, false).is_none()
        && *go_binaries.entry(pid).or_insert_with(|| is_go_binary(pid));
    judge::Who { pid, fd, comm, go }
}

/// Whether `/proc/PID/exe` carries the marker of Go's build information
/// (`\xff Go buildinf:`); files over 256 MiB are not read.
fn is_go_binary(pid: u32) -> bool {
    const MARKER: &[u8] = b"\xff Go buildinf:";
    let path = format!("/proc/{pid}/exe");
    let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= 256 << 20);
    small
        && std::fs::read(&path).is_ok_and(|bytes| bytes.windows(MARKER.len()).any(|w| w == MARKER))
}

/// The holder of socket `inode`, looking first near the processes in `known`
/// (see [`near_holder`]), then everywhere; a new holder joins `known`.
fn find_holder(inode: u32, known: &mut Vec<u32>) -> Option<(u32, i32)> {
    let found = near_holder(inode, known).or_else(|| first_holder(inode))?;
    if !known.contains(&found.0) {
        known.push(found.0);
    }
    Some(found)
}

/// The holder of socket `inode` among the processes in `known` (those that
/// held the program's listener or earlier sockets) and their children (a
/// forking server's child inherits the socket its parent accepted): a few fd
/// tables instead of all of /proc.
fn near_holder(inode: u32, known: &[u32]) -> Option<(u32, i32)> {
    known
        .iter()
        .find_map(|pid| descriptor_of(*pid, inode))
        .or_else(|| {
            known
                .iter()
                .flat_map(|pid| children(*pid))
                .find_map(|pid| descriptor_of(pid, inode))
        })
}

/// Whether `addr`'s IP is an address of this host (in this network namespace):
/// binding to it succeeds only then. Nothing is sent.
fn is_local(addr: SocketAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok()
}

/// What became of the program's descriptor of one case's socket.
#[derive(Debug, Default)]
struct Fate {
    inode: u32,
    pids: Vec<u32>,
    /// The descriptor itself, when known from before tcpbye's action: `/proc/PID/fd/N`.
    holder: Option<(u32, i32)>,
    released_at: Option<Instant>,
    /// Until when its descriptor is looked for, from the program's accept().
    seek_until: Option<Instant>,
    /// When it was last looked for under all of /proc.
    sought_everywhere: Option<Instant>,
    /// Found before tcpbye's action, which has not come yet.
    before_action: bool,
    /// The last look that still found it held: its release came after.
    held_at: Option<Instant>,
    /// The end of its case's wait: it is watched until then.
    until: Option<Instant>,
    /// Looked for at least once.
    looked: bool,
}

impl Fate {
    fn descriptor(&self, action: Option<Instant>) -> Descriptor {
        let since = |at: Instant| action.map_or(0, |a| micros(at.saturating_duration_since(a)));
        // Released between the last look that found it (or the action) and the
        // first that did not.
        let resolution = self.released_at.map(|released| {
            let from = match (self.held_at, action) {
                (Some(held), Some(a)) => held.max(a),
                (held, a) => held.or(a).unwrap_or(released),
            };
            micros(released.saturating_duration_since(from))
        });
        Descriptor {
            inode: self.inode,
            pids: self.pids.clone(),
            released_after_us: self.released_at.map(since),
            released_resolution_us: resolution,
            held_at_end: self.released_at.is_none() && !self.pids.is_empty(),
        }
    }

    fn watched(&self, now: Instant) -> bool {
        let until = match self.until {
            Some(until) => now < until,
            // Found before the action: read from then on, so that a release
            // right after the action is bracketed by a look right before it.
            None => self.before_action && self.holder.is_some(),
        };
        self.released_at.is_none() && (!self.looked || self.seeking(now) || until)
    }

    /// Its descriptor is still being looked for, since the program accepted.
    fn seeking(&self, now: Instant) -> bool {
        self.holder.is_none()
            && self.released_at.is_none()
            && self.seek_until.is_some_and(|u| now < u)
    }
}

/// What the watcher is told of a case's socket.
#[derive(Debug)]
enum Watch {
    /// The program accepted the connection: its descriptor is looked for now,
    /// before tcpbye acts, and watched once it has.
    Known {
        mode: CloseMode,
        inode: u32,
        holder: Option<(u32, i32)>,
    },
    /// tcpbye just acted on the connection; the program's socket has this inode.
    /// Its descriptor is found now and watched on its own until `until`.
    Acted {
        mode: CloseMode,
        inode: u32,
        until: Instant,
    },
    /// The program's socket left the kernel's tables: its descriptor is looked
    /// for (if not already watched) until `until`.
    Vanished {
        mode: CloseMode,
        inode: u32,
        until: Instant,
    },
}

/// Follows the program's descriptor of each socket it is told of: one found right
/// after tcpbye's action is read on its own every [`HOLDER_POLL`] (one `readlink`);
/// others are looked for under /proc/*/fd every [`FD_POLL`]; each until its case's
/// wait is over (at least once). Returns once the sender is dropped and every
/// descriptor is released or its wait served.
///
/// `holder_pids`: processes likely to hold the program's sockets (the server's
/// listener), looked at first; each process found holding one joins them.
fn watch_descriptors(rx: &Receiver<Watch>, mut holder_pids: Vec<u32>) -> HashMap<CloseMode, Fate> {
    let mut fates: HashMap<CloseMode, Fate> = HashMap::new();
    let mut sender = true;
    loop {
        let now = Instant::now();
        let pending: Vec<&Fate> = fates.values().filter(|f| f.watched(now)).collect();
        if !sender && pending.is_empty() {
            return fates;
        }
        let wait = if pending.iter().any(|f| f.holder.is_some() || f.seeking(now)) {
            HOLDER_POLL
        } else if !pending.is_empty() {
            FD_POLL
        } else {
            Duration::from_secs(3600)
        };
        let message = if sender {
            match rx.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // No action comes any more.
                    sender = false;
                    for fate in fates.values_mut() {
                        fate.before_action = false;
                    }
                    None
                }
            }
        } else {
            std::thread::sleep(wait);
            None
        };
        match message {
            Some(Watch::Known {
                mode,
                inode,
                holder,
            }) => {
                fates.insert(
                    mode,
                    Fate {
                        inode,
                        pids: holder.map(|(pid, _)| pid).into_iter().collect(),
                        holder,
                        held_at: holder.map(|_| Instant::now()),
                        seek_until: holder.is_none().then(|| later(Instant::now(), SEEK)),
                        looked: holder.is_some(),
                        before_action: true,
                        ..Fate::default()
                    },
                );
            }
            Some(Watch::Acted { mode, inode, until })
                if fates.get(&mode).is_some_and(|f| {
                    f.inode == inode && (f.holder.is_some() || f.seek_until.is_some())
                }) =>
            {
                // Found (or being looked for) since before the action: watched from now.
                if let Some(fate) = fates.get_mut(&mode) {
                    fate.until = Some(until);
                    fate.before_action = false;
                }
            }
            Some(Watch::Acted { mode, inode, until }) => {
                let holder = first_holder(inode);
                fates.insert(
                    mode,
                    Fate {
                        inode,
                        pids: holder.map(|(pid, _)| pid).into_iter().collect(),
                        holder,
                        until: Some(until),
                        looked: holder.is_some(),
                        ..Fate::default()
                    },
                );
            }
            Some(Watch::Vanished { mode, inode, until }) => {
                let fate = fates.entry(mode).or_default();
                if fate.inode != inode {
                    *fate = Fate {
                        inode,
                        until: Some(until),
                        ..Fate::default()
                    };
                }
            }
            None => {}
        }
        let now = Instant::now();
        // Sockets the program accepted: their descriptor, in the fd tables of the
        // processes that held earlier ones first, then anywhere.
        for fate in fates.values_mut().filter(|f| f.seeking(now)) {
            // The known processes each round, all of /proc every FD_POLL.
            let everywhere = fate
                .sought_everywhere
                .is_none_or(|at| now >= later(at, FD_POLL));
            let found = if everywhere {
                fate.sought_everywhere = Some(now);
                find_holder(fate.inode, &mut holder_pids)
            } else {
                near_holder(fate.inode, &holder_pids)
            };
            if let Some(holder) = found {
                fate.holder = Some(holder);
                fate.pids = vec![holder.0];
                fate.held_at = Some(Instant::now());
                fate.seek_until = None;
            }
        }
        // Known descriptors: one readlink each.
        for fate in fates.values_mut().filter(|f| f.watched(now)) {
            let Some((pid, fd)) = fate.holder else {
                continue;
            };
            let held = holds(pid, fd, fate.inode);
            if held {
                fate.held_at = Some(Instant::now());
            } else {
                // That descriptor is gone; another process may hold one too: a
                // child that inherited it, or one of the program's other processes.
                let at = Instant::now();
                let mut near = children(pid);
                near.extend(holder_pids.iter().copied());
                match near.iter().find_map(|p| descriptor_of(*p, fate.inode)) {
                    // Held on there: that descriptor is read from now on.
                    Some(other) => {
                        fate.holder = Some(other);
                        if !fate.pids.contains(&other.0) {
                            fate.pids.push(other.0);
                        }
                        fate.held_at = Some(Instant::now());
                    }
                    None => fate.released_at = Some(at),
                }
            }
        }
        let open: Vec<&mut Fate> = fates
            .values_mut()
            .filter(|f| f.holder.is_none() && !f.seeking(now) && f.watched(now))
            .collect();
        if open.is_empty() {
            continue;
        }
        let wanted: HashSet<u32> = open.iter().map(|f| f.inode).collect();
        // Once every descriptor's holders are known, only their fd tables are read.
        let known: Option<Vec<u32>> = open
            .iter()
            .all(|f| !f.pids.is_empty())
            .then(|| open.iter().flat_map(|f| f.pids.iter().copied()).collect());
        let holders = holders(&wanted, known.as_deref());
        let at = Instant::now();
        for fate in open {
            fate.looked = true;
            match holders.get(&fate.inode) {
                Some(pids) => {
                    fate.held_at = Some(at);
                    for pid in pids {
                        if !fate.pids.contains(pid) {
                            fate.pids.push(*pid);
                        }
                    }
                }
                // Not found: released now, or (never seen) by the first look.
                None => fate.released_at = Some(at),
            }
        }
    }
}
