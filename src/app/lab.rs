//! `tcpbye lab`: both ends in one process, every close mode × detection setting,
//! all cases at once on one event loop, summarised as a matrix.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::Socket;

use super::print::{self, Progress};
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::ExitCode;
use crate::plan::{EndPlan, LabPlan};
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
pub fn lab(plan: &LabPlan) -> anyhow::Result<ExitCode> {
    let mut status = print::StatusLine::new();
    let (matrix, interrupted) = run(plan, &mut |p| status.show(&p))?;
    status.clear();
    print::matrix(&matrix, plan.format)?;
    Ok(if interrupted {
        ExitCode::Interrupted
    } else {
        ExitCode::Ok
    })
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
            for _ in 0..plan.runs {
                let (client, accepted) = pair(&listener, server)?;
                let key = client
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .context("getsockname")?;
                cases.insert(key, (mode, setting));
                let closer = EndPlan {
                    close: mode,
                    // Staggered, so no two closers act in the same loop iteration:
                    // each observer's wake-up is timed alone.
                    after: AFTER + STAGGER * cases.len() as u32,
                    probe: false,
                    timeout: Some(OBSERVE + Duration::from_secs(1)),
                    ..EndPlan::default()
                };
                let observer = EndPlan {
                    send: if mode == CloseMode::RstUnread { 64 } else { 0 },
                    detection: setting.detection(),
                    timeout: Some(OBSERVE),
                    ..EndPlan::default()
                };
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
            matrix::row(plan.modes[index], setting, plan.runs, &reports, net_admin)
        })
        .collect::<Vec<_>>();
    let matrix = Matrix {
        summary: LabSummary {
            schema: SCHEMA,
            kind: "lab-summary",
            cases: rows.len(),
            runs: plan.runs,
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
