//! The only writer to stdout and stderr: reports in the chosen format, the summary,
//! notices, and a self-erasing progress line. stdout carries results; stderr
//! carries notices, progress and failures.

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::Outcome;
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
/// On a terminal, a line wider than it goes on at the next line, indented.
pub fn tell_line(args: std::fmt::Arguments<'_>) {
    let text = human(format!("tcpbye: {args}"));
    let text = if io::stderr().is_terminal() {
        fit(&text, terminal_width(true))
    } else {
        text
    };
    let _ = writeln!(io::stderr(), "{text}");
}

/// `text` wrapped at spaces to `width`, each line after the first indented by two.
fn fit(text: &str, width: usize) -> String {
    let mut out = Vec::new();
    for line in text.lines() {
        for (i, part) in crate::report::wrap(line, width.saturating_sub(2))
            .lines()
            .enumerate()
        {
            out.push(if i == 0 {
                part.to_owned()
            } else {
                format!("  {part}")
            });
        }
    }
    out.join("\n")
}

/// Raw text on stderr (the progress line), ignoring a closed stderr.
fn tell_raw(text: &str) {
    let mut err = io::stderr();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Whether the locale takes UTF-8 (`LC_ALL`, `LC_CTYPE`, `LANG`); read once.
pub fn utf8() -> bool {
    static UTF8: OnceLock<bool> = OnceLock::new();
    *UTF8.get_or_init(|| {
        let var = |name| std::env::var(name).ok();
        crate::report::locale_is_utf8(
            var("LC_ALL").as_deref(),
            var("LC_CTYPE").as_deref(),
            var("LANG").as_deref(),
        )
    })
}

/// Human text as this locale can show it: unchanged under UTF-8, else in ASCII.
pub fn human(text: String) -> String {
    if utf8() {
        text
    } else {
        crate::report::ascii(&text)
    }
}

/// Whether the terminal understands no control sequences (`TERM=dumb`).
fn dumb_terminal() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// Human text on stdout, in the locale's characters.
fn write_human(text: String) -> io::Result<bool> {
    write_stdout(human(text).as_bytes())
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
    width: usize,
    stdout_open: bool,
    started: Instant,
    misses_told: u64,
    pub summary: Summary,
}

/// Most expectation misses told one by one; the rest are counted.
const MISSES_TOLD: u64 = 5;

impl Printer {
    pub fn new(plan: OutputPlan) -> Self {
        let tty = io::stdout().is_terminal();
        Self {
            plan,
            tty,
            width: terminal_width(tty),
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
                self::miss(reason);
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
        let (tty, width) = (self.tty, self.width);
        self.stdout_open = match self.plan.format {
            Format::Json => write_stdout(format!("{}\n", json::line(report)).as_bytes())?,
            Format::Ladder => write_human(format!(
                "{}\n{}",
                table::render(report, tty, width),
                ladder::render(report, tty && utf8(), width)
            ))?,
            Format::Table => write_human(table::render(report, tty, width))?,
            // One line per connection in a pipe, for grep; wrapped on a terminal.
            Format::Brief => {
                write_human(table::line(report, if tty { width } else { usize::MAX }))?
            }
        };
        Ok(self.stdout_open)
    }

    /// Prints the summary (always in JSON; in a table when there was more than one report).
    pub fn finish(&mut self, interrupted: bool) -> io::Result<Outcome> {
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
                write_human(table::render_summary(&self.summary, self.tty, self.width))?;
            }
        }
        Ok(Outcome {
            interrupted,
            missed: !self.summary.expect_met,
            ..Outcome::DONE
        })
    }
}

/// A self-erasing progress line on stderr, only when stderr is a terminal; on a
/// terminal without control sequences (`TERM=dumb`), a plain line now and then.
#[derive(Debug)]
pub struct StatusLine {
    wanted: bool,
    shown: bool,
    /// `TERM=dumb`: when the last plain line was written.
    plain: Option<Option<Instant>>,
}

/// On a dumb terminal, at most one progress line this often.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

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
            plain: dumb_terminal().then_some(None),
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
        let line: String = human(progress.to_string()).chars().take(width).collect();
        match &mut self.plain {
            Some(last) => {
                if last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    tell_raw(&format!("{line}\n"));
                    *last = Some(Instant::now());
                }
            }
            None => {
                tell_raw(&format!("\r\x1b[2K{line}"));
                self.shown = true;
            }
        }
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
        .max(MIN_WIDTH)
}

/// Narrower than this, human output is laid out as if it were this wide.
const MIN_WIDTH: usize = 40;

/// Prints the `lab` matrix: rows and summary as JSON Lines, or the table.
pub fn matrix(matrix: &Matrix, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        json::lines(&matrix.rows, &matrix.summary)
    } else {
        let tty = io::stdout().is_terminal();
        human(crate::report::lab::render(matrix, terminal_width(tty)))
    };
    write_stdout(text.as_bytes())
}

/// Tells one expectation that was not met, on stderr: the one wording every
/// command uses.
pub fn miss(what: &str) {
    tell!("expectation not met: {what}");
}

/// Prints the `check` matrix: cases and summary as JSON Lines, the table, or one
/// line per mode; each expectation missed in one line on stderr.
pub fn check(result: &crate::report::check::CheckResult, format: Format) -> io::Result<bool> {
    for what in &result.summary.misses {
        miss(what);
    }
    let width = terminal_width(io::stdout().is_terminal());
    let text = if format == Format::Json {
        json::lines(&result.cases, &result.summary)
    } else if format == Format::Brief {
        human(crate::report::check::brief(result, width))
    } else {
        human(crate::report::check::render(result, width))
    };
    write_stdout(text.as_bytes())
}

/// `check --pid --dry-run`: each mode's chosen connection, as JSON Lines or text.
pub fn check_choices(
    choices: &[crate::report::check::CheckChoice],
    format: Format,
) -> io::Result<bool> {
    let text = if format == Format::Json {
        choices.iter().map(|c| json::line(c) + "\n").collect()
    } else {
        let width = terminal_width(io::stdout().is_terminal());
        human(crate::report::check::render_choices(choices, width))
    };
    write_stdout(text.as_bytes())
}

/// Prints the `path` tables: cases and summary as JSON Lines, or the tables.
pub fn path(run: &crate::report::path::PathRun, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        json::lines(&run.cases, &run.summary)
    } else {
        let tty = io::stdout().is_terminal();
        human(crate::report::path::render(run, tty, terminal_width(tty)))
    };
    write_stdout(text.as_bytes())
}

/// Prints the `bench` figures: one JSON object, or the table.
pub fn bench(result: &BenchResult, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        format!("{}\n", json::line(result))
    } else {
        human(crate::report::bench::render(
            result,
            terminal_width(io::stdout().is_terminal()),
        ))
    };
    write_stdout(text.as_bytes())
}

/// Prints `inspect`: its connections and summary as JSON Lines, or the table.
pub fn inspect(result: &crate::report::inspect::InspectResult, format: Format) -> io::Result<bool> {
    let text = if format == Format::Json {
        json::lines(&result.conns, &result.summary)
    } else {
        let width = terminal_width(io::stdout().is_terminal());
        human(crate::report::inspect::render(result, width))
    };
    write_stdout(text.as_bytes())
}
