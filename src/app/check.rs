//! `tcpbye check ADDR`: one fresh connection to the program under test per mode,
//! all on one event loop; each ends in its mode and the program's socket is
//! followed (sock_diag, then its descriptor under /proc) for `--wait`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::print;
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::{ExitCode, Failure};
use crate::plan::{CheckPlan, EndPlan, Family};
use crate::report::check::judge;
use crate::report::check::{
    self as model, CheckResult, CheckSummary, Descriptor, KeepaliveSysctls, Reaction,
};
use crate::report::{Report, SCHEMA, SideSample, Verdict};
use crate::vocab::CloseMode;

/// How long tcpbye waits for the answer to `--request`/`--send` before acting anyway.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Without a request: time for the program to accept() before tcpbye acts (a
/// socket still in the accept queue has no file, which would read as closed).
const SETTLE: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a dead socket's descriptor is looked for under /proc.
const FD_POLL: Duration = Duration::from_millis(20);

/// Runs `tcpbye check` and prints the matrix.
pub fn check(plan: &CheckPlan) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let addr = *super::serve::resolve(&plan.addr, Family::Any)?
        .first()
        .ok_or_else(|| Failure::Runtime(format!("'{}' has no address", plan.addr)))?;
    let answer = !plan.request.is_empty() || plan.send > 0;
    let after = if answer { ANSWER_WAIT } else { SETTLE };
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    let mut starts: HashMap<CloseMode, Instant> = HashMap::new();
    for &mode in &plan.modes {
        let end = EndPlan {
            send: plan.send,
            request: plan.request.clone(),
            close: mode,
            after,
            close_on_answer: answer,
            hold: matches!(mode, CloseMode::Drop | CloseMode::Hang).then_some(plan.wait),
            probe: false,
            timeout: Some(after + plan.wait),
            peer_side: true,
            linger_watch: plan.wait,
            follow_peer: true,
            ..EndPlan::default()
        };
        starts.insert(mode, Instant::now());
        reactor.connect(addr, end, CONNECT_TIMEOUT)?;
    }

    let (tx, rx) = mpsc::channel::<(CloseMode, u32)>();
    let deadline = Instant::now() + after + plan.wait;
    let watcher = std::thread::spawn(move || watch_descriptors(&rx, deadline));
    let mut reports: BTreeMap<usize, Report> = BTreeMap::new();
    let mut unmatched: Vec<Report> = Vec::new();
    // The program's socket as the connection's report arrives (its timers now).
    let mut latest: HashMap<CloseMode, Option<SideSample>> = HashMap::new();
    let end = reactor.run(&mut |emit| {
        match emit {
            Emit::Report(report) => match report.close {
                Some(mode) => {
                    if let (Some(local), Some(start)) = (report.local, starts.get(&mode)) {
                        latest.insert(mode, last_reading(report.peer, local, *start));
                    }
                    if let Some(inode) = judge::vanished_inode(&report) {
                        let _ = tx.send((mode, inode));
                    }
                    let index = plan.modes.iter().position(|m| *m == mode).unwrap_or(0);
                    reports.insert(index, *report);
                }
                None => unmatched.push(*report),
            },
            Emit::Notice(text) => print::tell!("{text}"),
            Emit::Progress(_) => {}
        }
        Ok(Flow::Continue)
    })?;
    drop(tx);
    let fates = watcher
        .join()
        .map_err(|_| Failure::Runtime("the /proc watcher failed".into()))?;

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
                let descriptor = fates.get(&mode).filter(|_| readable).map(|fate| {
                    let action = starts
                        .get(&mode)
                        .copied()
                        .map(|s| s + Duration::from_micros(report.close_t_us.unwrap_or(0)));
                    fate.descriptor(action)
                });
                let last = latest.remove(&mode).flatten();
                judge::judge(mode, &report, descriptor, last, sysctls)
            }
            None => match unmatched.next() {
                Some(report) => judge::judge(mode, &report, None, None, sysctls),
                None => model::not_judged(mode, "no report (interrupted)".into()),
            },
        })
        .collect();
    let misses = model::misses(&cases, &plan.expect_noticed, plan.expect_no_leak);
    let count = |f: &dyn Fn(Reaction) -> bool| cases.iter().filter(|c| f(c.reaction)).count();
    let summary = CheckSummary {
        schema: SCHEMA,
        kind: "check-summary",
        target: addr.to_string(),
        wait_us: micros(plan.wait),
        elapsed_us: micros(started.elapsed()),
        cases: cases.len(),
        noticed: count(&|r| r.noticed()),
        leaked: count(&|r| r == Reaction::Leaked),
        unnoticed: count(&|r| r == Reaction::Unnoticed),
        not_judged: count(&|r| r == Reaction::NotJudged),
        keepalive_sysctls: sysctls,
        misses,
    };
    let result = CheckResult { cases, summary };
    print::check(&result, plan.format)?;
    Ok(if end == RunEnd::Interrupted {
        ExitCode::Interrupted
    } else if result.summary.misses.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::ExpectationMissed
    })
}

/// The program's socket (`remote` → `local` seen from its side) read once more
/// through sock_diag, on the connection's clock; `None` when it is gone.
fn last_reading(remote: SocketAddr, local: SocketAddr, start: Instant) -> Option<SideSample> {
    let d = crate::sys::lookup(remote, local).ok().flatten()?;
    Some(SideSample {
        t_us: micros(start.elapsed()),
        state: Some(d.state),
        timer: d.timer.map(|t| {
            format!(
                "{},{:.1}s,{}",
                t.kind,
                f64::from(t.expires_ms) / 1000.0,
                t.retransmits
            )
        }),
        recv_q: d.recv_q,
        send_q: d.send_q,
        inode: d.inode,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What became of one dead socket's descriptor.
#[derive(Debug, Default)]
struct Fate {
    inode: u32,
    pids: Vec<u32>,
    released_at: Option<Instant>,
}

impl Fate {
    fn descriptor(&self, action: Option<Instant>) -> Descriptor {
        let since = |at: Instant| action.map_or(0, |a| micros(at.saturating_duration_since(a)));
        Descriptor {
            inode: self.inode,
            pids: self.pids.clone(),
            released_after_us: self.released_at.map(since),
            held_at_end: self.released_at.is_none() && !self.pids.is_empty(),
        }
    }
}

/// Looks for `socket:[INODE]` under /proc/*/fd for each inode it is sent, every
/// FD_POLL until `deadline`, and once more for inodes that arrive later; returns
/// when the sender is dropped.
fn watch_descriptors(
    rx: &Receiver<(CloseMode, u32)>,
    deadline: Instant,
) -> HashMap<CloseMode, Fate> {
    let mut fates: HashMap<CloseMode, Fate> = HashMap::new();
    loop {
        let now = Instant::now();
        let wait = if now < deadline {
            FD_POLL.min(deadline - now)
        } else {
            Duration::from_secs(3600)
        };
        let mut fresh = false;
        match rx.recv_timeout(wait) {
            Ok((mode, inode)) => {
                fates.insert(
                    mode,
                    Fate {
                        inode,
                        ..Fate::default()
                    },
                );
                fresh = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return fates,
        }
        if !fresh && Instant::now() >= deadline {
            continue;
        }
        let open: Vec<&mut Fate> = fates
            .values_mut()
            .filter(|f| f.released_at.is_none())
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
            match holders.get(&fate.inode) {
                Some(pids) => {
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

/// Which processes hold a descriptor of each socket inode (`/proc/PID/fd/N` →
/// `socket:[INODE]`), looking at `only` these processes when given, else at all;
/// processes whose fds cannot be read are skipped.
fn holders(inodes: &HashSet<u32>, only: Option<&[u32]>) -> HashMap<u32, Vec<u32>> {
    let mut found: HashMap<u32, Vec<u32>> = HashMap::new();
    let pids: Vec<u32> = match only {
        Some(pids) => pids.to_vec(),
        None => match std::fs::read_dir("/proc") {
            Ok(procs) => procs
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect(),
            Err(_) => return found,
        },
    };
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                let pids = found.entry(inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    found
}
