//! `tcpbye lab`: both ends in one process, every close mode × detection setting,
//! all cases at once on one event loop, summarised as a matrix.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::Socket;

use super::print::{self, Progress};
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::Outcome;
use crate::plan::{LabPlan, recipe};
use crate::report::lab::{self as matrix, LabSummary, LabTiming, Matrix};
use crate::report::{Report, Role, SCHEMA};
use crate::sys;
use crate::vocab::{CloseMode, Setting};

/// When the closer acts, after the connection is up.
const AFTER: Duration = Duration::from_millis(100);
/// The gap between one case's close action and the next one's.
const STAGGER: Duration = Duration::from_millis(2);
/// How long the observer watches before it reports `open`.
const OBSERVE: Duration = Duration::from_secs(5);

/// Runs `tcpbye lab` and prints the matrix.
pub fn lab(plan: &LabPlan) -> anyhow::Result<Outcome> {
    let mut status = print::StatusLine::new();
    let (matrix, interrupted) = run(plan, &mut |p| status.show(&p))?;
    status.clear();
    print::matrix(&matrix, plan.format)?;
    Ok(Outcome {
        interrupted,
        ..Outcome::DONE
    })
}

/// Descriptors `lab` holds besides its cases: stdio, epoll, signalfd, listener.
const OWN_FDS: u64 = 16;

/// `--runs`, or as many runs as the open-file limit allows (raised to the hard
/// limit first), said in one line: every case holds two sockets at once.
fn runs_that_fit(plan: &LabPlan, net_admin: bool) -> u32 {
    let cases = plan
        .modes
        .iter()
        .filter(|m| net_admin || !m.needs_net_admin())
        .count() as u64
        * plan.settings.len() as u64;
    let limit = match sys::raise_fd_limit() {
        Ok((_, hard)) => hard,
        Err(e) => {
            print::tell!("cannot raise the open-file limit: {e}");
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(u64::MAX, |(soft, _)| soft)
        }
    };
    let per_run = (cases * 2).max(1);
    let fit = limit.saturating_sub(OWN_FDS) / per_run;
    if u64::from(plan.runs) <= fit {
        return plan.runs;
    }
    let runs = u32::try_from(fit.max(1)).unwrap_or(u32::MAX);
    print::tell!(
        "--runs {} needs about {} open files, the limit is {limit}: running {runs} (raise it with `ulimit -Hn`)",
        plan.runs,
        u64::from(plan.runs) * per_run + OWN_FDS
    );
    runs
}

/// Runs every case; `progress` hears how many are done. Returns the matrix and
/// whether a signal cut the run short.
fn run(plan: &LabPlan, progress: &mut dyn FnMut(Progress)) -> anyhow::Result<(Matrix, bool)> {
    let started = Instant::now();
    let root = sys::has_net_admin();
    let namespace = match sys::enter_own_netns(root) {
        Ok(()) => "own",
        Err(e) => {
            print::tell!("running on the host's loopback (no namespace of its own: {e})");
            "host"
        }
    };
    let net_admin = sys::has_net_admin();
    let runs = runs_that_fit(plan, net_admin);

    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    let server = listener.local_addr().context("getsockname")?;
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;

    let mut cases: HashMap<SocketAddr, (CloseMode, Setting)> = HashMap::new();
    let mut results: BTreeMap<(usize, Setting), Vec<Report>> = BTreeMap::new();
    let mut skipped = 0;
    for (index, &mode) in plan.modes.iter().enumerate() {
        for &setting in &plan.settings {
            results.insert((index, setting), Vec::new());
            if mode.needs_net_admin() && !net_admin {
                skipped += 1;
                continue;
            }
            for _ in 0..runs {
                let (client, accepted) = pair(&listener, server)?;
                let key = client
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .context("getsockname")?;
                cases.insert(key, (mode, setting));
                // Staggered, so no two closers act in the same loop iteration:
                // each observer's wake-up is timed alone.
                let after = AFTER + STAGGER * cases.len() as u32;
                let closer = recipe::lab_closer(mode, after, OBSERVE);
                let observer = recipe::lab_observer(mode, setting, OBSERVE);
                reactor.add_pair((client, closer), (accepted, observer))?;
            }
        }
    }
    let total = cases.len();
    let mut done = 0;
    let end = reactor.run(&mut |emit| {
        if let Emit::Report(report) = emit
            && report.role == Role::Serve
            && let Some(&(mode, setting)) = cases.get(&report.peer)
        {
            let index = plan.modes.iter().position(|m| *m == mode).unwrap_or(0);
            results.entry((index, setting)).or_default().push(*report);
            done += 1;
            progress(Progress::Cases { done, total });
        }
        Ok(Flow::Continue)
    })?;

    let rows = results
        .into_iter()
        .map(|((index, setting), reports)| {
            matrix::row(plan.modes[index], setting, runs, &reports, net_admin)
        })
        .collect::<Vec<_>>();
    let matrix = Matrix {
        summary: LabSummary {
            schema: SCHEMA,
            kind: "lab-summary",
            cases: rows.len(),
            runs,
            skipped,
            elapsed_us: crate::report::micros(started.elapsed()),
            namespace,
            timing: LabTiming {
                closer_after: AFTER,
                stagger: STAGGER,
                observe: OBSERVE,
            },
        },
        rows,
    };
    Ok((matrix, end == RunEnd::Interrupted))
}

/// A connected pair over loopback: (client, accepted).
fn pair(listener: &TcpListener, server: SocketAddr) -> anyhow::Result<(Socket, Socket)> {
    let client = TcpStream::connect(server).with_context(|| format!("connect {server}"))?;
    let (accepted, _) = listener.accept().context("accept")?;
    Ok((Socket::from(client), Socket::from(accepted)))
}
