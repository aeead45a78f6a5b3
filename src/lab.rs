//! `tcpbye lab`: both ends in one process, every close mode × detection setting,
//! all cases at once on one event loop, summarised as a matrix.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use socket2::Socket;

use crate::cli::LabArgs;
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::plan::{CloseMode, Detection, EndPlan, Heartbeat, KeepAlive};
use crate::report::{EventKind, Percentiles, Report, Role, SCHEMA, Verdict, fmt_us};
use crate::sys;

/// When the closer acts, after the connection is up.
const AFTER: Duration = Duration::from_millis(100);
/// The gap between one case's close action and the next one's.
const STAGGER: Duration = Duration::from_millis(2);
/// How long the observer watches before it reports `open`.
const OBSERVE: Duration = Duration::from_secs(5);

/// A detection setting of the observing side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    None,
    Keepalive,
    UserTimeout,
    Heartbeat,
}

impl Setting {
    pub const ALL: [Setting; 4] = [
        Self::None,
        Self::Keepalive,
        Self::UserTimeout,
        Self::Heartbeat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Keepalive => "keepalive",
            Self::UserTimeout => "user-timeout",
            Self::Heartbeat => "heartbeat",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Self::None => "plain reads only",
            Self::Keepalive => "--keepalive 1s,1s,2",
            Self::UserTimeout => "--user-timeout 1500ms --send-every 200ms",
            Self::Heartbeat => "--heartbeat 200ms,3",
        }
    }

    /// The observer's settings for this row.
    pub fn detection(self) -> Detection {
        match self {
            Self::None => Detection::default(),
            Self::Keepalive => Detection {
                keepalive: Some(KeepAlive {
                    idle: Duration::from_secs(1),
                    interval: Duration::from_secs(1),
                    count: 2,
                }),
                ..Detection::default()
            },
            Self::UserTimeout => Detection {
                user_timeout: Some(Duration::from_millis(1500)),
                send_every: Some(Duration::from_millis(200)),
                ..Detection::default()
            },
            Self::Heartbeat => Detection {
                heartbeat: Some(Heartbeat {
                    interval: Duration::from_millis(200),
                    misses: 3,
                }),
                ..Detection::default()
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    pub modes: Vec<CloseMode>,
    pub settings: Vec<Setting>,
    pub runs: u32,
}

impl LabPlan {
    pub fn from_args(args: &LabArgs) -> Result<Self, crate::Failure> {
        if args.modes.contains(&CloseMode::None) {
            return Err(crate::Failure::Usage(
                "lab --modes: `none` does not end a connection; name modes such as fin,rst,drop"
                    .into(),
            ));
        }
        let mut modes: Vec<CloseMode> = if args.modes.is_empty() {
            CloseMode::ENDINGS.to_vec()
        } else {
            args.modes.clone()
        };
        let mut seen = Vec::new();
        modes.retain(|m| {
            let first = !seen.contains(m);
            seen.push(*m);
            first
        });
        let mut settings = if args.settings.is_empty() {
            Setting::ALL.to_vec()
        } else {
            args.settings.clone()
        };
        settings.sort();
        settings.dedup();
        Ok(Self {
            modes,
            settings,
            runs: args.runs,
        })
    }
}

/// One row of the matrix: a close mode × a setting over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub schema: u32,
    pub kind: &'static str,
    pub mode: CloseMode,
    pub setting: Setting,
    pub setting_flags: &'static str,
    /// `ran`, or why the case could not run here.
    pub status: String,
    pub runs: u32,
    /// The observer's first epoll flags after the closer acted.
    pub first_flags: Option<String>,
    /// The observer's first recv() outcome after the close: `EOF`, an errno, or `-`.
    pub recv: Option<String>,
    /// The observer's send() outcomes after the close, in order.
    pub send: Option<String>,
    /// The observer socket's TCP states after the close (`CLOSE_WAIT → CLOSE`).
    pub state: Option<String>,
    /// The most frequent verdict, and all of them.
    pub verdict: Option<Verdict>,
    pub verdicts: BTreeMap<Verdict, u32>,
    pub detected_by: Option<crate::report::DetectedBy>,
    pub detected_after_us: Option<Percentiles>,
    pub predicted_us: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabSummary {
    pub schema: u32,
    pub kind: &'static str,
    pub cases: usize,
    pub runs: u32,
    pub skipped: usize,
    pub elapsed_us: u64,
    /// `own` when lab ran in a network namespace of its own, else `host`.
    pub namespace: &'static str,
}

pub struct LabResult {
    pub rows: Vec<Row>,
    pub summary: LabSummary,
    pub namespace_note: Option<String>,
    pub interrupted: bool,
}

/// Runs every case. Prints nothing but progress on stderr when `progress`.
pub fn run(plan: &LabPlan, progress: bool) -> anyhow::Result<LabResult> {
    let started = Instant::now();
    let root = sys::has_net_admin();
    let (namespace, namespace_note) = match sys::enter_own_netns(root) {
        Ok(()) => ("own", None),
        Err(e) => (
            "host",
            Some(format!(
                "running on the host's loopback (no namespace of its own: {e})"
            )),
        ),
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
        if let Emit::Report(report) = emit {
            if report.role == Role::Serve {
                if let Some(&(mode, setting)) = cases.get(&report.peer) {
                    let index = plan.modes.iter().position(|m| *m == mode).unwrap_or(0);
                    results.entry((index, setting)).or_default().push(*report);
                    done += 1;
                    if progress {
                        crate::output::tell_raw(&format!(
                            "\rtcpbye lab: {done}/{total} cases done"
                        ));
                    }
                }
            }
        }
        Ok(Flow::Continue)
    })?;
    if progress && total > 0 {
        crate::output::tell_raw("\n");
    }

    let rows = results
        .into_iter()
        .map(|((index, setting), reports)| {
            row(plan.modes[index], setting, plan.runs, &reports, net_admin)
        })
        .collect::<Vec<_>>();
    Ok(LabResult {
        summary: LabSummary {
            schema: SCHEMA,
            kind: "lab-summary",
            cases: rows.len(),
            runs: plan.runs,
            skipped,
            elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            namespace,
        },
        rows,
        namespace_note,
        interrupted: end == RunEnd::Interrupted,
    })
}

/// A connected pair over loopback: (client, accepted).
fn pair(listener: &TcpListener, server: SocketAddr) -> anyhow::Result<(Socket, Socket)> {
    let client = TcpStream::connect(server).with_context(|| format!("connect {server}"))?;
    let (accepted, _) = listener.accept().context("accept")?;
    Ok((Socket::from(client), Socket::from(accepted)))
}

fn row(mode: CloseMode, setting: Setting, runs: u32, reports: &[Report], net_admin: bool) -> Row {
    let mut verdicts = BTreeMap::new();
    for r in reports {
        *verdicts.entry(r.verdict).or_insert(0) += 1;
    }
    let verdict = verdicts.iter().max_by_key(|(_, n)| **n).map(|(v, _)| *v);
    let first = reports.iter().find(|r| Some(r.verdict) == verdict);
    let times: Vec<u64> = reports.iter().filter_map(|r| r.detected_after_us).collect();
    let status = if !reports.is_empty() {
        "ran".to_owned()
    } else if mode.needs_net_admin() && !net_admin {
        "needs CAP_NET_ADMIN".to_owned()
    } else {
        "no result".to_owned()
    };
    let after_close = |r: &Report| {
        let from = r.close_t_us.unwrap_or(0);
        r.events
            .iter()
            .filter(move |e| e.t_us >= from)
            .cloned()
            .collect::<Vec<_>>()
    };
    let states = first.map(|r| {
        let path: Vec<String> = after_close(r)
            .iter()
            .filter(|e| e.kind == EventKind::State)
            .filter_map(|e| e.state.map(|s| s.to_string()))
            .collect();
        if path.is_empty() {
            r.tcp_info
                .as_ref()
                .map_or_else(|| "-".to_owned(), |i| i.state.to_string())
        } else {
            path.join(" → ")
        }
    });
    let (first_flags, recv, send) = match first {
        Some(r) => {
            let events = after_close(r);
            let flags = events
                .iter()
                .find(|e| e.kind == EventKind::Epoll)
                .and_then(|e| e.epoll.as_ref())
                .map(|f| f.join("|"));
            let recv = events
                .iter()
                .find(|e| e.kind == EventKind::Recv && (e.errno.is_some() || e.bytes == Some(0)))
                .map(|e| e.errno.clone().unwrap_or_else(|| "EOF".to_owned()));
            let sends: Vec<String> = events
                .iter()
                .filter(|e| e.kind == EventKind::Send && e.detail.is_none())
                .map(|e| e.errno.clone().unwrap_or_else(|| "ok".to_owned()))
                .collect();
            let send = (!sends.is_empty()).then(|| compress(&sends));
            (flags, recv, send)
        }
        None => (None, None, None),
    };
    Row {
        schema: SCHEMA,
        kind: "lab-case",
        mode,
        setting,
        setting_flags: setting.summary(),
        status,
        runs: reports.len() as u32,
        first_flags: first_flags.or_else(|| first.map(|_| "-".to_owned())),
        recv: recv.or_else(|| first.map(|_| "-".to_owned())),
        send,
        state: states,
        verdict,
        verdicts,
        detected_by: first.and_then(|r| r.detected_by),
        detected_after_us: Percentiles::of(&times),
        // As in the table: a prediction only where something fired.
        predicted_us: first
            .filter(|r| r.verdict != Verdict::Open)
            .and_then(|r| r.predicted_us),
    }
    .with_runs(runs)
}

impl Row {
    fn with_runs(mut self, planned: u32) -> Self {
        if self.status == "ran" && self.runs != planned {
            self.status = format!("{} of {planned} runs reported", self.runs);
        }
        self
    }
}

/// `ok, ok, EPIPE, EPIPE` → `ok×2 → EPIPE×2`.
fn compress(items: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for item in items {
        match parts.last_mut() {
            Some((last, n)) if last == item => *n += 1,
            _ => parts.push((item.clone(), 1)),
        }
    }
    parts
        .into_iter()
        .map(|(s, n)| if n > 1 { format!("{s}×{n}") } else { s })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The matrix as a table.
pub fn render(result: &LabResult, tty: bool) -> String {
    let mut t = crate::report::table::table(tty);
    t.set_header(vec![
        "mode",
        "setting",
        "first flags",
        "recv",
        "send",
        "state",
        "verdict",
        "by",
        "p50",
        "p99",
        "predicted",
    ]);
    let dash = || "-".to_owned();
    for row in &result.rows {
        if row.status != "ran" && row.runs == 0 {
            t.add_row(vec![
                row.mode.to_string(),
                row.setting.name().to_owned(),
                row.status.clone(),
            ]);
            continue;
        }
        let p = row.detected_after_us;
        t.add_row(vec![
            row.mode.to_string(),
            row.setting.name().to_owned(),
            row.first_flags.clone().unwrap_or_else(dash),
            row.recv.clone().unwrap_or_else(dash),
            row.send.clone().unwrap_or_else(dash),
            row.state.clone().unwrap_or_else(dash),
            row.verdict.map_or_else(dash, |v| v.to_string()),
            row.detected_by.map_or_else(dash, |b| {
                crate::report::json::line(&b).trim_matches('"').to_owned()
            }),
            p.map_or_else(dash, |p| fmt_us(p.p50)),
            p.map_or_else(dash, |p| fmt_us(p.p99)),
            // A prediction is shown where something fired; `open` rows never detected anything.
            row.predicted_us
                .filter(|_| row.verdict != Some(Verdict::Open))
                .map_or_else(dash, fmt_us),
        ]);
    }
    let s = &result.summary;
    format!(
        "{t}\n{} cases × {} runs in {}; observer settings: {}; closers act {}ms after connect, 2ms apart; `open` = nothing within {}s\n",
        s.cases,
        s.runs,
        fmt_us(s.elapsed_us),
        Setting::ALL
            .iter()
            .skip(1)
            .map(|x| format!("{} = {}", x.name(), x.summary()))
            .collect::<Vec<_>>()
            .join(", "),
        AFTER.as_millis(),
        OBSERVE.as_secs(),
    )
}
