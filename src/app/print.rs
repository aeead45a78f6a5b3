//! The only writer to stdout and stderr: reports in the chosen format, the summary,
//! notices, and a self-erasing progress line. stdout carries results; stderr
//! carries notices, progress and failures.

use std::io::{self, IsTerminal, Write};
use std::time::Instant;

use crate::error::ExitCode;
use crate::plan::{Format, OutputPlan};
pub use crate::report::progress::Progress;
use crate::report::{Report, Summary, bench::BenchResult, json, lab::Matrix, ladder, table};

/// One `tcpbye: …` line on stderr, formatted like `format!`.
macro_rules! tell {
    ($($arg:tt)*) => {
        $crate::app::print::tell_line(format_args!($($arg)*))
    };
}
pub(crate) use tell;

/// One `tcpbye: …` line on stderr. A closed stderr (`2>&1 | head -1`) is
/// ignored: notices are never worth a panic.
pub fn tell_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "tcpbye: {args}");
}

/// Raw text on stderr (the progress line), ignoring a closed stderr.
fn tell_raw(text: &str) {
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
    started: Instant,
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
            started: Instant::now(),
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
        let json = self.plan.format == Format::Json;
        // A failed connect() the user did not expect is said in one line on stderr instead.
        let quiet_failure = report.verdict.is_connect_failure()
            && !json
            && !self.plan.expect.contains(&report.verdict);
        if !self.stdout_open || quiet_failure || self.plan.summary_only {
            return Ok(self.stdout_open);
        }
        let text = match self.plan.format {
            Format::Json => format!("{}\n", json::line(report)),
            Format::Ladder => format!(
                "{}\n{}",
                table::render(report, self.tty),
                ladder::render(report, self.tty)
            ),
            Format::Table => table::render(report, self.tty),
            Format::Brief => format!("{}\n", table::line(report)),
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
            if self.plan.format == Format::Json {
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
#[derive(Debug)]
pub struct StatusLine {
    wanted: bool,
    shown: bool,
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusLine {
    pub fn new() -> Self {
        Self {
            wanted: io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Whether progress is shown at all (stderr is a terminal).
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    pub fn show(&mut self, progress: &Progress) {
        if !self.wanted {
            return;
        }
        let width = terminal_width(true).saturating_sub(1);
        let line: String = progress.to_string().chars().take(width).collect();
        tell_raw(&format!("\r\x1b[2K{line}"));
        self.shown = true;
    }

    pub fn clear(&mut self) {
        if self.shown {
            tell_raw("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// How wide human output may be: `COLUMNS` when set, else the terminal's width
/// (for a terminal) or 100 columns (for a pipe or a file).
fn terminal_width(tty: bool) -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| {
            tty.then(|| comfy_table::Table::new().width())
                .flatten()
                .map(usize::from)
        })
        .unwrap_or(100)
}

/// Prints the `lab` matrix: rows and summary as JSON Lines, or the table.
pub fn matrix(matrix: &Matrix, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        let mut s = String::new();
        for row in &matrix.rows {
            s.push_str(&json::line(row));
            s.push('\n');
        }
        s.push_str(&json::line(&matrix.summary));
        s.push('\n');
        s
    } else {
        let tty = io::stdout().is_terminal();
        crate::report::lab::render(matrix, tty, terminal_width(tty))
    };
    write_stdout(text.as_bytes())
}

/// Prints the `check` matrix: cases and summary as JSON Lines, or the table.
pub fn check(result: &crate::report::check::CheckResult, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        let mut s = String::new();
        for case in &result.cases {
            s.push_str(&json::line(case));
            s.push('\n');
        }
        s.push_str(&json::line(&result.summary));
        s.push('\n');
        s
    } else {
        crate::report::check::render(result, io::stdout().is_terminal())
    };
    write_stdout(text.as_bytes())
}

/// Prints the `path` tables: cases and summary as JSON Lines, or the tables.
pub fn path(run: &crate::report::path::PathRun, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        let mut s = String::new();
        for case in &run.cases {
            s.push_str(&json::line(case));
            s.push('\n');
        }
        s.push_str(&json::line(&run.summary));
        s.push('\n');
        s
    } else {
        let tty = io::stdout().is_terminal();
        crate::report::path::render(run, tty, terminal_width(tty))
    };
    write_stdout(text.as_bytes())
}

/// Prints the `bench` figures: one JSON object, or the table.
pub fn bench(result: &BenchResult, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        format!("{}\n", json::line(result))
    } else {
        crate::report::bench::render(result, io::stdout().is_terminal())
    };
    write_stdout(text.as_bytes())
}
