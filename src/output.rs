//! Runs a plan on the engine and writes what comes back: the only place that
//! prints reports. stdout carries reports; stderr carries notices and failures.

use std::io::{self, IsTerminal, Write};

#[cfg(target_os = "linux")]
use crate::engine::capture::Filter;
#[cfg(target_os = "linux")]
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::ExitCode;
use crate::plan::OutputPlan;
#[cfg(target_os = "linux")]
use crate::plan::{ConnectPlan, ServePlan};
use crate::report::{Report, Summary, json, ladder, table};

/// One `tcpbye: …` line on stderr. A closed stderr (`2>&1 | head -1`) is
/// ignored: notices are never worth a panic.
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::output::tell_line(format_args!($($arg)*))
    };
}

pub fn tell_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "tcpbye: {args}");
}

/// Raw text on stderr (progress lines), ignoring a closed stderr.
pub fn tell_raw(text: &str) {
    let mut err = io::stderr();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Writes to stdout; a closed stdout (`| head -1`) is reported as `Ok(false)`.
pub fn write_stdout(bytes: &[u8]) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Prints reports as they come and keeps the summary.
pub struct Printer {
    plan: OutputPlan,
    tty: bool,
    stdout_open: bool,
    started: std::time::Instant,
    misses_told: u64,
    pub summary: Summary,
}

/// Most expectation misses told one by one; the rest are counted.
const MISSES_TOLD: u64 = 5;

impl Printer {
    pub fn new(plan: OutputPlan) -> Self {
        Self {
            plan,
            tty: io::stdout().is_terminal(),
            stdout_open: true,
            started: std::time::Instant::now(),
            misses_told: 0,
            summary: Summary::default(),
        }
    }

    /// Records and prints one report; `false` once stdout is gone.
    pub fn report(&mut self, report: &Report) -> io::Result<bool> {
        let miss = report.expectation_miss(&self.plan.expect, self.plan.expect_within);
        self.summary.add(report, miss.is_none());
        if let Some(reason) = &miss {
            self.misses_told += 1;
            if self.misses_told <= MISSES_TOLD {
                tell!("expectation not met: {reason}");
            }
        }
        // A failed connect() the user did not expect is said in one line on stderr instead.
        let quiet_failure = report.verdict.is_connect_failure()
            && !self.plan.json
            && !self.plan.expect.contains(&report.verdict);
        if !self.stdout_open || quiet_failure || self.plan.summary_only {
            return Ok(self.stdout_open);
        }
        let text = if self.plan.json {
            format!("{}\n", json::line(report))
        } else if self.plan.ladder {
            format!(
                "{}\n{}",
                table::render(report, self.tty),
                ladder::render(report, self.tty)
            )
        } else {
            table::render(report, self.tty)
        };
        self.stdout_open = write_stdout(text.as_bytes())?;
        Ok(self.stdout_open)
    }

    /// Prints the summary (always in JSON; in a table when there was more than one report).
    pub fn finish(&mut self, interrupted: bool) -> io::Result<ExitCode> {
        self.summary.interrupted = interrupted;
        self.summary.finish(self.started.elapsed());
        if self.misses_told > MISSES_TOLD {
            tell!(
                "expectation not met by {} more connections",
                self.misses_told - MISSES_TOLD
            );
        }
        if self.stdout_open {
            if self.plan.json {
                write_stdout(format!("{}\n", json::line(&self.summary)).as_bytes())?;
            } else if self.summary.connections > 1 || interrupted || self.plan.summary_only {
                write_stdout(table::render_summary(&self.summary, self.tty).as_bytes())?;
            }
        }
        Ok(if interrupted {
            ExitCode::Interrupted
        } else if self.summary.expect_met {
            ExitCode::Ok
        } else {
            ExitCode::ExpectationMissed
        })
    }
}

/// A self-erasing progress line on stderr, only when stderr is a terminal.
#[cfg(target_os = "linux")]
struct StatusLine {
    shown: bool,
}

#[cfg(target_os = "linux")]
impl StatusLine {
    fn new(reactor: &mut Reactor) -> Self {
        if io::stderr().is_terminal() {
            reactor.show_progress();
        }
        Self { shown: false }
    }

    fn show(&mut self, line: &str) {
        let width = terminal_width().saturating_sub(1);
        let line: String = line.chars().take(width).collect();
        tell_raw(&format!("\r\x1b[2K{line}"));
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            tell_raw("\r\x1b[2K");
            self.shown = false;
        }
    }
}

#[cfg(target_os = "linux")]
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

#[cfg(target_os = "linux")]
pub fn serve(plan: ServePlan) -> anyhow::Result<ExitCode> {
    raise_fd_limit(plan.max_conns.unwrap_or(10_000));
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    // The capture is open (and its timestamps on) before anyone can connect.
    if let Some(path) = &plan.output.pcap {
        reactor.capture(path, Filter { addr: plan.addr })?;
    }
    let local = reactor.listen(plan.addr, plan.end.clone(), plan.max_conns)?;
    reactor.set_capture_filter(Filter { addr: local });
    tell!("listening on {local}");
    let mut printer = Printer::new(plan.output.clone());
    let mut status = StatusLine::new(&mut reactor);
    let end = reactor.run(&mut |emit| {
        Ok(match emit {
            Emit::Report(report) => {
                status.clear();
                if !printer.report(&report)? || plan.once {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
            Emit::Notice(text) => {
                status.clear();
                tell!("{text}");
                Flow::Continue
            }
            Emit::Progress(line) => {
                status.show(&line);
                Flow::Continue
            }
        })
    })?;
    status.clear();
    tell_captured(&reactor, &plan.output);
    Ok(printer.finish(end == RunEnd::Interrupted)?)
}

#[cfg(target_os = "linux")]
pub fn connect(plan: ConnectPlan) -> anyhow::Result<ExitCode> {
    let churn = plan.count > 1;
    if churn {
        raise_fd_limit(plan.concurrency);
    }
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    if let Some(path) = &plan.output.pcap {
        reactor.capture(path, Filter { addr: plan.addr })?;
    }
    if churn {
        let (addr, end, timeout) = (plan.addr, plan.end.clone(), plan.connect_timeout);
        reactor.churn(addr, end, timeout, plan.count, plan.concurrency, plan.rate);
    } else {
        reactor.connect(plan.addr, plan.end.clone(), plan.connect_timeout)?;
    }
    let mut printer = Printer::new(plan.output.clone());
    let mut failure = None;
    let mut status = StatusLine::new(&mut reactor);
    let end = reactor.run(&mut |emit| {
        match emit {
            Emit::Progress(line) => status.show(&line),
            Emit::Report(report) => {
                status.clear();
                let unexpected = !plan.output.expect.contains(&report.verdict);
                if !churn && report.verdict.is_connect_failure() && unexpected {
                    let errno = report
                        .events
                        .iter()
                        .find_map(|e| e.errno.clone())
                        .unwrap_or_default();
                    failure = Some(format!(
                        "connect {}: {} ({errno})",
                        plan.addr, report.verdict
                    ));
                }
                printer.report(&report)?;
            }
            Emit::Notice(text) => {
                status.clear();
                tell!("{text}");
            }
        }
        Ok(Flow::Continue)
    })?;
    status.clear();
    tell_captured(&reactor, &plan.output);
    let code = printer.finish(end == RunEnd::Interrupted)?;
    if churn {
        let summary = &printer.summary;
        for errno in summary.connect_errors.keys() {
            if let Some(hint) = connect_error_hint(errno) {
                tell!("{errno}: {hint}");
            }
        }
        let expected = !plan.output.expect.is_empty() && summary.expect_met;
        if summary.established == 0
            && summary.connections > 0
            && end == RunEnd::Finished
            && !expected
        {
            let errors: Vec<String> = summary
                .connect_errors
                .iter()
                .map(|(e, n)| format!("{e} ×{n}"))
                .collect();
            failure = Some(format!(
                "connect {}: none of {} connections was established ({})",
                plan.addr,
                summary.connections,
                errors.join(", ")
            ));
        }
    }
    if let Some(failure) = failure {
        tell!("{failure}");
        return Ok(ExitCode::Runtime);
    }
    Ok(code)
}

/// Says where the capture went.
#[cfg(target_os = "linux")]
fn tell_captured(reactor: &Reactor, plan: &OutputPlan) {
    if let (Some(path), Some(n)) = (&plan.pcap, reactor.captured()) {
        tell!("wrote {n} packets to {}", path.display());
    }
}

/// What to do about a connect() error seen while churning.
fn connect_error_hint(errno: &str) -> Option<&'static str> {
    match errno {
        "EADDRNOTAVAIL" => Some(
            "ephemeral ports exhausted (TIME_WAIT builds up after many fin closes): lower --rate, close with --close rst, or widen net.ipv4.ip_local_port_range",
        ),
        "EMFILE" | "ENFILE" => {
            Some("out of file descriptors: raise `ulimit -n` or lower --concurrency")
        }
        "ECONNREFUSED" => Some("nothing listens there (or its backlog overflowed)"),
        _ => None,
    }
}

/// Raises the soft open-file limit to the hard one; says so when even that is low.
#[cfg(target_os = "linux")]
fn raise_fd_limit(wanted: usize) {
    // Descriptors tcpbye itself holds: stdio, epoll, signalfd, listener or capture.
    const OWN_FDS: u64 = 8;
    match crate::sys::raise_fd_limit() {
        Ok((_, hard)) if hard < wanted as u64 + OWN_FDS => tell!(
            "the open-file limit is {hard}: at most about {} connections at once (raise it with `ulimit -Hn`)",
            hard.saturating_sub(OWN_FDS)
        ),
        Ok(_) => {}
        Err(e) => tell!("cannot raise the open-file limit: {e}"),
    }
}

#[cfg(target_os = "linux")]
pub fn lab(plan: crate::lab::LabPlan, json_out: bool) -> anyhow::Result<ExitCode> {
    let tty = io::stdout().is_terminal();
    let progress = io::stderr().is_terminal();
    let result = crate::lab::run(&plan, progress)?;
    if let Some(note) = &result.namespace_note {
        tell!("{note}");
    }
    let text = if json_out {
        let mut s = String::new();
        for row in &result.rows {
            s.push_str(&json::line(row));
            s.push('\n');
        }
        s.push_str(&json::line(&result.summary));
        s.push('\n');
        s
    } else {
        crate::lab::render(&result, tty)
    };
    write_stdout(text.as_bytes())?;
    Ok(if result.interrupted {
        ExitCode::Interrupted
    } else {
        ExitCode::Ok
    })
}

#[cfg(target_os = "linux")]
pub fn bench(plan: &crate::bench::BenchPlan, json_out: bool) -> anyhow::Result<ExitCode> {
    let result = crate::bench::run(plan, &mut |step| tell!("bench: {step}"))?;
    let text = if json_out {
        format!("{}\n", json::line(&result))
    } else {
        crate::bench::render(&result, io::stdout().is_terminal())
    };
    write_stdout(text.as_bytes())?;
    Ok(ExitCode::Ok)
}
