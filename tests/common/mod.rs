//! Shared helpers for the integration tests:
//!
//! - the one process harness: [`Cmd`] starts `tcpbye` (directly, or through a wrapper
//!   such as `nsenter` or `setpriv`) or a third-party peer, with stdout and stderr read
//!   by threads; every wait has a deadline (never a bare sleep), and dropping a [`Proc`]
//!   kills and reaps the child, so no child outlives a failing test. [`spawn`], [`run`]
//!   and [`serve`] are the short forms for plain `tcpbye ARGS`;
//! - loud skips: [`skip`], [`require_root`], [`tool_missing`], [`require_tool`];
//! - golden files: [`golden`] compares (or rewrites), [`stable_human`] masks human
//!   output;
//! - reading the JSON reports tcpbye prints;
//! - [`topology`]: near, mid and far network namespaces with a real middlebox between.

// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

pub mod topology;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tcpbye");

/// The longest one child may run, by default, before the test fails and kills it.
/// Every tcpbye child also gets its own, shorter `--timeout`.
pub const DEADLINE: Duration = Duration::from_secs(8);

/// How long a test's own socket waits for tcpbye (accept, read).
pub const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// The step of the deadline-bounded polls (a child's exit, /proc, `ss`).
pub const POLL: Duration = Duration::from_millis(10);

/// An instant `secs` seconds from now: a deadline.
pub fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// What is left until `deadline`.
pub fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

// ---------------------------------------------------------------------------
// Skips

/// The name of the test function it is written in, for [`skip`], [`require_root`]
/// and friends: `require_root(test_name!(), "…")` says which test did not run.
macro_rules! test_name {
    () => {{
        fn here() {}
        fn name_of<T>(_: T) -> &'static str {
            std::any::type_name::<T>()
        }
        let path = name_of(here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.rsplit("::").next().unwrap_or(path)
    }};
}
pub(crate) use test_name;

/// Set to `1` (CI, as root): a privileged test that cannot run fails instead of skipping.
pub const REQUIRE_PRIVILEGED: &str = "TCPBYE_TEST_REQUIRE_PRIVILEGED";

/// Set to `1` (CI, once its tools are installed): a test whose third-party tool is
/// missing fails instead of skipping.
pub const REQUIRE_TOOLS: &str = "TCPBYE_TEST_REQUIRE_TOOLS";

fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "1")
}

/// Says that `test` did not run, and why: `SKIPPED <test>: <why>` on stderr.
///
/// A direct write to `io::stderr()`: libtest captures only the `print!`/`eprint!`
/// macros, so this line shows in a plain `cargo test`, next to the `ok` that the
/// test that returned early still gets. One `write` call for the whole line, so that
/// libtest's own lines on the terminal do not cut into it.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A privilege `test` needs is missing (`why` says which): skips loudly, or fails
/// under `TCPBYE_TEST_REQUIRE_PRIVILEGED=1`.
pub fn privilege_missing(test: &str, why: &str) {
    if required(REQUIRE_PRIVILEGED) {
        panic!("privileged test skipped although {REQUIRE_PRIVILEGED}=1: {test}: {why}");
    }
    skip(test, why);
}

/// Whether a test that needs root can go on: true as root; otherwise false after a
/// loud skip (see [`privilege_missing`]: a failure under
/// `TCPBYE_TEST_REQUIRE_PRIVILEGED=1`). `why` says what root is needed for.
pub fn require_root(test: &str, why: &str) -> bool {
    if is_root() {
        return true;
    }
    privilege_missing(test, why);
    false
}

/// A third-party tool `test` needs is missing (`why` names it): skips loudly, or
/// fails under `TCPBYE_TEST_REQUIRE_TOOLS=1`.
pub fn tool_missing(test: &str, why: &str) {
    if required(REQUIRE_TOOLS) {
        panic!("test skipped for a missing tool although {REQUIRE_TOOLS}=1: {test}: {why}");
    }
    skip(test, why);
}

/// Something of the host a test needs that neither root nor a package gives:
/// each has its own `TCPBYE_TEST_REQUIRE_*` variable, which `.ci/run` sets on the
/// machines it knows have it, so that a skip there is a failure.
#[derive(Debug, Clone, Copy)]
pub enum Host {
    /// An IPv6 loopback address (`::1`).
    Ipv6,
    /// `/dev/full`, a file every write to fails with ENOSPC.
    DevFull,
    /// An open-file hard limit high enough for the load tests.
    FdLimit,
    /// Conntrack's table under `/proc/PID/net/nf_conntrack`.
    Conntrack,
    /// Ports below `net.ipv4.ip_unprivileged_port_start` (above 1).
    PrivilegedPorts,
}

impl Host {
    pub fn variable(self) -> &'static str {
        match self {
            Self::Ipv6 => "TCPBYE_TEST_REQUIRE_IPV6",
            Self::DevFull => "TCPBYE_TEST_REQUIRE_DEV_FULL",
            Self::FdLimit => "TCPBYE_TEST_REQUIRE_FD_LIMIT",
            Self::Conntrack => "TCPBYE_TEST_REQUIRE_CONNTRACK",
            Self::PrivilegedPorts => "TCPBYE_TEST_REQUIRE_PRIVILEGED_PORTS",
        }
    }
}

/// The host lacks `what` that `test` needs (`why` says what is missing): skips
/// loudly, or fails under that feature's `TCPBYE_TEST_REQUIRE_*=1`.
pub fn host_lacks(test: &str, what: Host, why: &str) {
    let var = what.variable();
    if required(var) {
        panic!("test skipped although {var}=1: {test}: {why}");
    }
    skip(test, why);
}

/// Whether `program PROBE` runs and exits 0 (e.g. `socat -V`); if not, false after
/// [`tool_missing`] with `why`.
pub fn require_tool(test: &str, program: &str, probe: &[&str], why: &str) -> bool {
    let works = Cmd::program(program, probe)
        .try_spawn()
        .is_ok_and(|p| p.finish().code == Some(0));
    if !works {
        tool_missing(test, why);
    }
    works
}

/// Whether the tests run as root (privileged tests run for real only then).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// The process harness

/// Where a child's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// A pipe read line by line, every line kept (the default).
    Lines,
    /// A pipe whose read end is closed before the child writes anything (`| head`
    /// that has already exited).
    ClosedAtOnce,
    /// A pipe whose first line is read, then its read end closed (`| head -1`).
    ClosedAfterFirstLine,
    /// One pipe for stdout and stderr (`2>&1 | head -1`): its first line is read (and
    /// kept as a stderr line), then its read end closed.
    SharedWithStderrClosedAfterFirstLine,
}

/// A child process to start: `tcpbye ARGS` (possibly through a wrapper that execs
/// it) or a program that is not tcpbye.
#[must_use]
pub struct Cmd {
    argv: Vec<String>,
    what: String,
    env: Vec<(String, String)>,
    stdout: Stdout,
    deadline: Duration,
}

impl Cmd {
    /// `tcpbye ARGS`.
    pub fn tcpbye(args: &[&str]) -> Self {
        Self::tcpbye_via(&[], args)
    }

    /// `WRAPPER… tcpbye ARGS`: tcpbye started by a program that execs it, e.g.
    /// `nsenter -t PID -n`, `setpriv …` or `sh -c 'ulimit -n 24 && exec "$0" "$@"'`.
    pub fn tcpbye_via(wrapper: &[&str], args: &[&str]) -> Self {
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.push(BIN);
        argv.extend_from_slice(args);
        let mut what: Vec<&str> = wrapper.to_vec();
        what.push("tcpbye");
        what.extend_from_slice(args);
        Self::new(&argv, what.join(" "))
    }

    /// `PROGRAM ARGS`, a program that is not tcpbye (a third-party peer, socat, ss).
    pub fn program(program: &str, args: &[&str]) -> Self {
        let mut argv = vec![program];
        argv.extend_from_slice(args);
        let what = argv.join(" ");
        Self::new(&argv, what)
    }

    fn new(argv: &[&str], what: String) -> Self {
        Self {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            what,
            // tcpbye writes ASCII unless the locale takes UTF-8: the same characters
            // on every machine, whatever its own locale (`env` can change it).
            env: vec![("LC_ALL".to_owned(), "C.UTF-8".to_owned())],
            stdout: Stdout::Lines,
            deadline: DEADLINE,
        }
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Where its stdout goes (default [`Stdout::Lines`]).
    pub fn stdout(mut self, stdout: Stdout) -> Self {
        self.stdout = stdout;
        self
    }

    /// The deadline, from the start, of the waits that are not given their own
    /// ([`Proc::listening`], [`Proc::finish`]); default [`DEADLINE`].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Starts it; an error if the program cannot be started (not installed).
    pub fn try_spawn(self) -> std::io::Result<Proc> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).stdin(Stdio::null());
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let shared = if self.stdout == Stdout::SharedWithStderrClosedAfterFirstLine {
            let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let stderr_end = write_end.try_clone()?;
            cmd.stdout(Stdio::from(write_end))
                .stderr(Stdio::from(stderr_end));
            Some(read_end)
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        };
        let mut child = cmd.spawn()?;
        // The Command holds our copies of a shared pipe's write ends: without them,
        // the pipe ends when the child's copies do.
        drop(cmd);
        let (stdout, stderr) = match shared {
            Some(read_end) => (None, read_lines(std::fs::File::from(read_end), true)),
            None => {
                let out = child.stdout.take().expect("stdout is piped");
                let err = child.stderr.take().expect("stderr is piped");
                let stdout = match self.stdout {
                    Stdout::ClosedAtOnce => {
                        drop(out);
                        None
                    }
                    mode => Some(read_lines(out, mode == Stdout::ClosedAfterFirstLine)),
                };
                (stdout, read_lines(err, false))
            }
        };
        Ok(Proc {
            what: self.what,
            child,
            deadline: Instant::now() + self.deadline,
            status: None,
            stdout,
            stderr,
            out_raw: Vec::new(),
            err_raw: Vec::new(),
            out_seen: Vec::new(),
            err_seen: Vec::new(),
        })
    }

    /// Starts it; panics if it cannot be started.
    pub fn spawn(self) -> Proc {
        let what = self.what.clone();
        self.try_spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"))
    }

    /// Runs it to its end (within its deadline).
    pub fn run(self) -> Finished {
        self.spawn().finish()
    }
}

/// A reader thread: each line of `source` (with its newline) as it arrives; only the
/// first if `first_only`. The thread drops `source` when it returns.
fn read_lines(source: impl Read + Send + 'static, first_only: bool) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() || first_only {
                        break;
                    }
                }
            }
        }
    });
    rx
}

fn text_of(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// Starts `tcpbye ARGS` with stdout and stderr captured by reader threads.
pub fn spawn(args: &[&str]) -> Proc {
    Cmd::tcpbye(args).spawn()
}

/// Runs `tcpbye ARGS` to completion (within [`DEADLINE`]).
pub fn run(args: &[&str]) -> Finished {
    Cmd::tcpbye(args).run()
}

/// Starts `tcpbye serve ARGS` and waits for its `listening on` line.
pub fn serve(args: &[&str]) -> (Proc, SocketAddr) {
    let argv: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .collect();
    let mut child = spawn(&argv);
    let addr = child.listening();
    (child, addr)
}

/// A running child. Dropping it before it has been waited for kills and reaps it, so
/// a failing assertion never leaves a process behind.
pub struct Proc {
    what: String,
    child: Child,
    /// For the waits that are not given their own deadline.
    deadline: Instant,
    status: Option<ExitStatus>,
    stdout: Option<Receiver<Vec<u8>>>,
    stderr: Receiver<Vec<u8>>,
    out_raw: Vec<u8>,
    err_raw: Vec<u8>,
    /// The stdout lines read so far.
    pub out_seen: Vec<String>,
    /// The stderr lines read so far.
    pub err_seen: Vec<String>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "{}\nexit: {:?}\nstderr: {:#?}\nstdout: {:#?}",
            self.what, self.status, self.err_seen, self.out_seen
        )
    }

    fn keep_stderr(&mut self, line: Vec<u8>) -> String {
        let text = text_of(&line);
        self.err_raw.extend_from_slice(&line);
        self.err_seen.push(text.clone());
        text
    }

    fn keep_stdout(&mut self, line: Vec<u8>) -> String {
        let text = text_of(&line);
        self.out_raw.extend_from_slice(&line);
        self.out_seen.push(text.clone());
        text
    }

    /// Waits for the first stderr line, which must be `tcpbye: listening on ADDR`.
    pub fn listening(&mut self) -> SocketAddr {
        let line = match self.stderr.recv_timeout(left(self.deadline)) {
            Ok(line) => self.keep_stderr(line),
            Err(e) => panic!("{}: no first stderr line ({e:?})", self.what),
        };
        let addr = line
            .strip_prefix("tcpbye: listening on ")
            .unwrap_or_else(|| panic!("{}: first stderr line is {line:?}", self.what));
        addr.parse()
            .unwrap_or_else(|e| panic!("{}: {addr:?} is not an address: {e}", self.what))
    }

    /// Waits until `deadline` for `tcpbye: listening on ADDR`, after any notices
    /// (such as one about the open-file limit).
    pub fn listening_by(&mut self, deadline: Instant) -> SocketAddr {
        let line = self.stderr_line(deadline, |l| l.starts_with("tcpbye: listening on "));
        let addr = line.trim_start_matches("tcpbye: listening on ");
        addr.parse()
            .unwrap_or_else(|e| panic!("{addr:?} is not an address ({e})\n{}", self.dump()))
    }

    /// Waits for a stderr line that satisfies `pred` and returns it.
    pub fn stderr_line(&mut self, deadline: Instant, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.stderr.recv_timeout(left(deadline)) {
                Ok(line) => {
                    let line = self.keep_stderr(line);
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no such stderr line ({e:?})\n{}", self.dump()),
            }
        }
    }

    /// The next stdout line, or `None` if there is none by `deadline`.
    pub fn try_stdout_line(&mut self, deadline: Instant) -> Option<String> {
        let line = self.stdout.as_ref()?.recv_timeout(left(deadline)).ok()?;
        Some(self.keep_stdout(line))
    }

    /// The next stdout line, parsed as JSON.
    pub fn json_line(&mut self, deadline: Instant) -> Value {
        let Some(rx) = &self.stdout else {
            panic!("stdout is not read\n{}", self.dump())
        };
        match rx.recv_timeout(left(deadline)) {
            Ok(line) => {
                let line = self.keep_stdout(line);
                serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {line}\n{}", self.dump())
                })
            }
            Err(e) => panic!("no stdout line in time ({e:?})\n{}", self.dump()),
        }
    }

    /// Whether it has exited already (its status if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the exit by `deadline`, then collects the rest of its output (which
    /// must end with it).
    pub fn wait(&mut self, deadline: Instant) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => panic!("did not exit in time\n{}", self.dump()),
                Err(e) => panic!("wait: {e}\n{}", self.dump()),
            }
        };
        self.status = Some(status);
        // The reader threads may still hold lines written just before the exit.
        let drained_by = deadline.max(Instant::now() + Duration::from_secs(1));
        let mut open = false;
        if let Some(rx) = self.stdout.take() {
            loop {
                match rx.recv_timeout(left(drained_by)) {
                    Ok(line) => drop(self.keep_stdout(line)),
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {
                        open = true;
                        break;
                    }
                }
            }
        }
        loop {
            match self.stderr.recv_timeout(left(drained_by)) {
                Ok(line) => drop(self.keep_stderr(line)),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    open = true;
                    break;
                }
            }
        }
        assert!(!open, "output still open after exit\n{}", self.dump());
        status
    }

    /// Waits for the exit and asserts its code and that nothing panicked.
    pub fn expect_exit(&mut self, code: i32, deadline: Instant) {
        let status = self.wait(deadline);
        assert_eq!(status.code(), Some(code), "wrong exit\n{}", self.dump());
        self.assert_no_panic();
    }

    pub fn assert_no_panic(&self) {
        for line in &self.err_seen {
            assert!(
                !line.contains("panicked") && !line.contains("RUST_BACKTRACE"),
                "tcpbye panicked\n{}",
                self.dump()
            );
        }
    }

    /// The stdout lines seen so far, parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.out_seen
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", self.dump()))
            })
            .collect()
    }

    /// The last stdout line, which must be the summary.
    pub fn summary(&self) -> Value {
        let lines = self.json_lines();
        let last = lines
            .last()
            .unwrap_or_else(|| panic!("no stdout\n{}", self.dump()))
            .clone();
        assert_eq!(last["kind"], "summary", "{}", self.dump());
        last
    }

    /// SIGINT, as Ctrl-C sends it.
    pub fn interrupt(&self) {
        self.signal(nix::sys::signal::Signal::SIGINT);
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}\n{}", self.dump()));
    }

    /// Gives the child `grace` to exit on its own, then sends it SIGTERM, and
    /// collects its output like [`Proc::finish`].
    pub fn finish_or_terminate(mut self, grace: Duration) -> Finished {
        let by = Instant::now() + grace;
        while self.exited().is_none() && Instant::now() < by {
            thread::sleep(POLL);
        }
        if self.exited().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
        }
        self.finish()
    }

    /// Like [`Proc::listening`], but `None` when the first stderr line is not
    /// `tcpbye: listening on ADDR` (the line is kept with the rest of stderr).
    pub fn listening_or_not(&mut self) -> Option<SocketAddr> {
        let line = self.stderr.recv_timeout(left(self.deadline)).ok()?;
        let line = self.keep_stderr(line);
        line.strip_prefix("tcpbye: listening on ")?.parse().ok()
    }

    /// Waits for the exit (within the deadline of its [`Cmd`]) and collects its output.
    pub fn finish(self) -> Finished {
        let deadline = self.deadline;
        self.finish_by(deadline)
    }

    /// Waits for the exit by `deadline` and collects its output.
    pub fn finish_by(mut self, deadline: Instant) -> Finished {
        let status = self.wait(deadline);
        Finished {
            what: std::mem::take(&mut self.what),
            code: status.code(),
            status,
            stdout: String::from_utf8_lossy(&self.out_raw).into_owned(),
            stderr: std::mem::take(&mut self.err_seen),
            out_raw: std::mem::take(&mut self.out_raw),
            err_raw: std::mem::take(&mut self.err_raw),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a child left behind.
#[derive(Debug)]
pub struct Finished {
    /// The command line, for messages.
    pub what: String,
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub status: ExitStatus,
    pub stdout: String,
    /// The stderr lines.
    pub stderr: Vec<String>,
    out_raw: Vec<u8>,
    err_raw: Vec<u8>,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dump())
    }
}

impl Finished {
    /// A readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "{}\nexit: {:?}\nstderr: {:#?}\nstdout:\n{}",
            self.what, self.code, self.stderr, self.stdout
        )
    }

    /// What `Command::output` would have returned: the status and the bytes.
    pub fn output(self) -> std::process::Output {
        std::process::Output {
            status: self.status,
            stdout: self.out_raw,
            stderr: self.err_raw,
        }
    }

    /// Asserts the exit code; returns `self` for chaining.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "wrong exit code\n{}", self.dump());
        for line in &self.stderr {
            assert!(
                !line.contains("panicked"),
                "tcpbye panicked\n{}",
                self.dump()
            );
        }
        self
    }

    /// Asserts exit code `code`, exactly one stderr line that contains `needle`
    /// and starts with `tcpbye: `, and no panic. Returns the line.
    pub fn expect_one_error_line(&self, code: i32, needle: &str) -> &str {
        self.expect_code(code);
        assert_eq!(
            self.stderr.len(),
            1,
            "expected exactly one stderr line\n{}",
            self.dump()
        );
        let line = &self.stderr[0];
        assert!(
            line.starts_with("tcpbye: "),
            "stderr line lacks the prefix\n{}",
            self.dump()
        );
        assert!(
            line.contains(needle),
            "stderr line lacks {needle:?}\n{}",
            self.dump()
        );
        line
    }

    /// Asserts a usage error as clap reports it: exit 2, a first stderr line that
    /// starts with `tcpbye: ` and contains `needle`, clap's pointer to `--help` as
    /// the last line, nothing on stdout, and no panic. Returns the first line.
    pub fn expect_usage_error(&self, needle: &str) -> &str {
        self.expect_code(2);
        let first = self.stderr.first().map_or("", String::as_str);
        assert!(
            first.starts_with("tcpbye: ") && first.contains(needle),
            "the first stderr line lacks the prefix or {needle:?}\n{}",
            self.dump()
        );
        assert_eq!(
            self.stderr.last().map(String::as_str),
            Some("For more information, try '--help'."),
            "clap's whole message\n{}",
            self.dump()
        );
        assert!(self.stdout.is_empty(), "{}", self.dump());
        first
    }

    /// Every stdout line, parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {line}\n{}", self.dump())
                })
            })
            .collect()
    }

    /// The JSON objects of `kind` on stdout.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// The one JSON object of `kind` on stdout (there must be exactly one).
    pub fn one(&self, kind: &str) -> Value {
        let mut objects = self.objects(kind);
        assert_eq!(objects.len(), 1, "one {kind} object\n{}", self.dump());
        objects.remove(0)
    }

    /// The one connection report of a `--json` run that must print exactly one
    /// connection line and one summary line.
    pub fn report(&self) -> Value {
        let lines = self.json_lines();
        assert_eq!(
            lines.len(),
            2,
            "expected one connection and one summary line\n{}",
            self.dump()
        );
        assert_eq!(lines[0]["kind"], "connection", "{}", self.dump());
        assert_eq!(lines[1]["kind"], "summary", "{}", self.dump());
        lines[0].clone()
    }

    /// The summary line (the last stdout line).
    pub fn summary(&self) -> Value {
        let lines = self.json_lines();
        let last = lines
            .last()
            .unwrap_or_else(|| panic!("no stdout\n{}", self.dump()));
        assert_eq!(last["kind"], "summary", "{}", self.dump());
        last.clone()
    }
}

/// util-linux `setpriv` that drops to uid/gid 65534 with no capabilities, then
/// execs the rest of its command line.
pub const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
];

/// Runs `tcpbye ARGS` as uid/gid 65534 with no capabilities ([`AS_NOBODY`]);
/// needs root to drop to that user.
pub fn unprivileged(args: &[&str]) -> std::process::Output {
    Cmd::tcpbye_via(&AS_NOBODY, args)
        .deadline(Duration::from_secs(30))
        .run()
        .output()
}

/// Starts `tcpbye ARGS` as uid/gid 65534 with no capabilities ([`AS_NOBODY`]);
/// needs root to drop to that user.
pub fn spawn_unprivileged(args: &[&str]) -> Proc {
    Cmd::tcpbye_via(&AS_NOBODY, args).spawn()
}

/// A network namespace of its own (its own loopback, up; its own sysctls and
/// `tcp_metrics` cache; nothing left on the host), held open by a `sleep` child and
/// gone when dropped. Needs root (CAP_SYS_ADMIN) and util-linux and iproute2.
pub struct Netns {
    holder: Proc,
    /// `net:[INODE]`, the namespace's identity in /proc/PID/ns/net.
    pub inode: String,
}

impl Netns {
    pub fn new() -> Self {
        let mut holder = Cmd::program(
            "unshare",
            &[
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo ready && exec sleep 120",
            ],
        )
        .spawn();
        let line = holder.try_stdout_line(within(5)).unwrap_or_default();
        assert_eq!(
            line.trim(),
            "ready",
            "the namespace holder did not bring lo up\n{}",
            holder.dump()
        );
        let inode = std::fs::read_link(format!("/proc/{}/ns/net", holder.pid()))
            .expect("read the namespace link")
            .to_string_lossy()
            .into_owned();
        Self { holder, inode }
    }

    /// The holder's process id: `nsenter -t PID -n`, `ip link set X netns PID`,
    /// and /proc/PID/net/ show this namespace.
    pub fn pid(&self) -> u32 {
        self.holder.pid()
    }

    /// `tcpbye ARGS` inside the namespace.
    pub fn tcpbye(&self, args: &[&str]) -> Cmd {
        let pid = self.holder.pid().to_string();
        Cmd::tcpbye_via(&["nsenter", "-t", &pid, "-n"], args)
    }

    /// `PROGRAM ARGS` inside the namespace.
    pub fn program(&self, program: &str, args: &[&str]) -> Cmd {
        let pid = self.holder.pid().to_string();
        let mut argv = vec!["-t", &pid, "-n", program];
        argv.extend_from_slice(args);
        Cmd::program("nsenter", &argv)
    }
}

// ---------------------------------------------------------------------------
// Golden files

/// Set to `1`: every golden comparison rewrites its file instead of comparing.
pub const REGENERATE: &str = "TCPBYE_REGENERATE";

/// `tests/golden/NAME`.
pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `rendered` with the golden file `tests/golden/NAME`, or rewrites the file
/// under `TCPBYE_REGENERATE=1`. `refresh` is the command that rewrites the golden
/// files of the calling test; a failure names the file and that command.
pub fn golden(name: &str, refresh: &str, rendered: &str) {
    let path = golden_path(name);
    if std::env::var_os(REGENERATE).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden dir"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        std::fs::write(&path, rendered)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `{refresh}` to create it, then read it",
            path.display()
        )
    });
    if expected != rendered {
        let first = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(rendered.lines().count()));
        panic!(
            "{} differs from the rendering, first at line {}:\n  golden:   {:?}\n  rendered: {:?}\n\
             full rendering:\n{rendered}\nif the change is intended, run `{refresh}` and review the diff",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            rendered.lines().nth(first).unwrap_or("<end>"),
        );
    }
}

/// Human output made the same from run to run, for a golden file.
///
/// Each plain table (comfy-table without borders: every line starts with a space,
/// one space either side of every cell, cells left-aligned and padded to the widest
/// of their column) is split into its cells, which are masked and laid out again by
/// the same rule; every other line is masked as it is. What is masked: see
/// [`mask_text`], and the numbers of a `TCP_INFO` table that vary (`<n>`). The words
/// (verdicts, errno names, states, labels), the order of the rows, the column of
/// every cell and whether lines keep their trailing padding stay, so a change of the
/// renderer still shows.
///
/// Panics if indented lines cannot be cut into tables laid out by that rule: a change
/// of layout fails too.
pub fn stable_human(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].starts_with(' ') {
            out.push_str(&mask_text(lines[i]));
            out.push('\n');
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < lines.len() && lines[end].starts_with(' ') {
            end += 1;
        }
        // Indented lines are one table or several in a row; a line indented by
        // exactly two spaces is free text under the table row before it.
        let under = |l: &str| l.starts_with("  ") && !l[2..].starts_with(' ');
        let rows: Vec<&str> = lines[i..end]
            .iter()
            .copied()
            .filter(|l| !under(l))
            .collect();
        let mut texts: Vec<Vec<&str>> = vec![Vec::new(); rows.len()];
        let mut row = None;
        for l in &lines[i..end] {
            if under(l) {
                let r: usize = row.expect("text under a row follows a row");
                texts[r].push(l);
            } else {
                row = Some(row.map_or(0, |r| r + 1));
            }
        }
        let mut laid = Vec::new();
        for (from, to) in split_tables(&rows).unwrap_or_else(|| {
            panic!(
                "these lines are not laid out as plain comfy-table columns (one space \
                 either side of every cell, cells left-aligned and padded to the widest of \
                 their column), which the golden files assume:\n{}",
                rows.join("\n")
            )
        }) {
            let table = &rows[from..to];
            let cells = table_cells(table).expect("split_tables checked it");
            let padded: Vec<bool> = table.iter().map(|l| l.ends_with(' ')).collect();
            laid.extend(
                stable_table(&cells, &padded)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            );
        }
        // A row's text under it as one line: where it wraps moves with the
        // lengths of what the masks hide.
        for (line, texts) in laid.iter().zip(&texts) {
            out.push_str(line);
            out.push('\n');
            if !texts.is_empty() {
                let joined: Vec<&str> = texts.iter().map(|t| t.trim()).collect();
                out.push_str("  ");
                out.push_str(&mask_text(&joined.join(" ")));
                out.push('\n');
            }
        }
        i = end;
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

/// Indented lines cut into tables, as `(from, to)` line ranges, or `None` if they
/// cannot be: the cut into the fewest tables that each pass [`table_cells`]. (Two
/// tables in a row pass as one only if their columns line up exactly.)
fn split_tables(lines: &[&str]) -> Option<Vec<(usize, usize)>> {
    let n = lines.len();
    // best[k]: the cut of lines[k..] into the fewest tables, as (tables, end of the
    // first table).
    let mut best: Vec<Option<(usize, usize)>> = vec![None; n + 1];
    best[n] = Some((0, n));
    for k in (0..n).rev() {
        for j in k + 1..=n {
            let Some((tables, _)) = best[j] else {
                continue;
            };
            if best[k].is_none_or(|(t, _)| tables + 1 < t) && table_cells(&lines[k..j]).is_some() {
                best[k] = Some((tables + 1, j));
            }
        }
    }
    let mut cut = Vec::new();
    let mut k = 0;
    while k < n {
        let (_, j) = best[k]?;
        cut.push((k, j));
        k = j;
    }
    Some(cut)
}

/// `cells` laid out as comfy-table does without borders, one line per row, each
/// with its trailing padding.
fn lay_out(cells: &[Vec<String>]) -> Vec<String> {
    let columns = cells.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    cells
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push(' ');
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 1));
            }
            line
        })
        .collect()
}

/// The cells of `lines` if they are one plain table: no cell starts with a space or
/// holds two in a row, and laid out again from their cells the lines come out the
/// same (with or without trailing padding).
fn table_cells(lines: &[&str]) -> Option<Vec<Vec<String>>> {
    let rows: Vec<Vec<char>> = lines.iter().map(|l| l.chars().collect()).collect();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let blank = |p: usize| rows.iter().all(|r| r.get(p).is_none_or(|&c| c == ' '));
    // A cell starts after the leading space, and after every run of two or more
    // positions blank on every line (one cell's right space, the next one's left
    // space) that is not the table's end.
    let mut starts = vec![1];
    let mut p = 1;
    while p < width {
        if !blank(p) {
            p += 1;
            continue;
        }
        let run = p;
        while p < width && blank(p) {
            p += 1;
        }
        if p < width && p - run >= 2 {
            starts.push(p);
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..starts.len())
                .map(|c| {
                    let end = starts.get(c + 1).map_or(width, |next| next - 1);
                    let (from, to) = (starts[c].min(r.len()), end.min(r.len()));
                    r[from..to].iter().collect::<String>().trim_end().to_owned()
                })
                .collect()
        })
        .collect();
    let cells_whole = cells
        .iter()
        .flatten()
        .all(|c| !c.starts_with(' ') && !c.contains("  "));
    let same = lay_out(&cells)
        .iter()
        .zip(lines)
        .all(|(laid, line)| laid == line || laid.trim_end() == *line);
    (cells_whole && same).then_some(cells)
}

/// One table of [`stable_human`]: its cells masked and laid out again; a line keeps
/// its trailing padding if it had it (`padded`).
fn stable_table(cells: &[Vec<String>], padded: &[bool]) -> String {
    let tcp_info = cells[0][0] == "TCP_INFO";
    // TCP_INFO rows that stay the same on loopback, where nothing is lost: a change
    // there is news. Every other TCP_INFO number (rto, rtt, windows, bytes, times
    // since the last segment) varies from run to run.
    const STEADY: [&str; 9] = [
        "retransmits",
        "probes",
        "backoff",
        "snd_cwnd",
        "unacked",
        "lost",
        "retrans",
        "total_retrans",
        "total_rto",
    ];
    let masked: Vec<Vec<String>> = cells
        .iter()
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .enumerate()
                .map(|(c, cell)| {
                    let number = !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit());
                    if tcp_info && r > 0 && c > 0 && number && !STEADY.contains(&row[0].as_str()) {
                        "<n>".to_owned()
                    } else {
                        mask_text(cell)
                    }
                })
                .collect()
        })
        .collect();
    let mut out = String::new();
    for (line, &padded) in lay_out(&masked).iter().zip(padded) {
        out.push_str(if padded { line } else { line.trim_end() });
        out.push('\n');
    }
    out
}

/// Masks what changes from run to run in a line of human output: durations (`230µs`,
/// `20.4ms`, `5.004s`, `0.2s` in a timer: `<t>`), rates (`3.7/s`: `<n>/s`), ports
/// (`127.0.0.1:45057`, `[::1]:45057`: `:<port>`) and the count of successful sends
/// (`ok×24`: `ok×<n>`). Other numbers stay (`EPIPE×2`, `rst: 3`, `p50`).
pub fn mask_text(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let digits_from = |mut j: usize| {
        while j < c.len() && c[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    while i < c.len() {
        let prev = i.checked_sub(1).map(|p| c[p]);
        let next_is_digit = c.get(i + 1).is_some_and(char::is_ascii_digit);
        // A port: `:` after an address (its last digit, or an IPv6 address's `]`).
        if c[i] == ':' && prev.is_some_and(|p| p.is_ascii_digit() || p == ']') && next_is_digit {
            out.push_str(":<port>");
            i = digits_from(i + 1);
            continue;
        }
        // A number that starts a word (not the `50` of `p50`, not the `0.1` of `127.0.0.1`).
        if c[i].is_ascii_digit() && !prev.is_some_and(|p| p.is_alphanumeric() || p == '.') {
            let mut end = digits_from(i);
            if c.get(end) == Some(&'.') && c.get(end + 1).is_some_and(char::is_ascii_digit) {
                end = digits_from(end + 1);
            }
            let unit = ["µs", "ms", "s", "/s"].into_iter().find(|unit| {
                let n = unit.chars().count();
                c[end..].iter().take(n).copied().eq(unit.chars())
                    && !c.get(end + n).is_some_and(|a| a.is_alphanumeric())
            });
            match unit {
                Some("/s") => {
                    out.push_str("<n>/s");
                    i = end + 2;
                }
                Some(unit) => {
                    out.push_str("<t>");
                    i = end + unit.chars().count();
                }
                None if out.ends_with("ok×") => {
                    out.push_str("<n>");
                    i = end;
                }
                None => {
                    out.extend(&c[i..end]);
                    i = end;
                }
            }
            continue;
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Reading reports

/// The report's timeline.
pub fn events(report: &Value) -> &[Value] {
    report["events"]
        .as_array()
        .unwrap_or_else(|| panic!("report has no events array: {report}"))
}

/// A compact timeline, one event per line, for assertion messages.
pub fn timeline(report: &Value) -> String {
    let mut text = format!(
        "role {} verdict {} closer {} close {}\n",
        report["role"], report["verdict"], report["closer"], report["close"]
    );
    for e in events(report) {
        text.push_str(&format!("  {e}\n"));
    }
    text
}

pub fn kind(event: &Value) -> &str {
    event["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("event without a kind: {event}"))
}

/// The epoll flag names of an `epoll` event.
pub fn flags(event: &Value) -> BTreeSet<String> {
    event["epoll"]
        .as_array()
        .unwrap_or_else(|| panic!("not an epoll event: {event}"))
        .iter()
        .map(|f| f.as_str().expect("flag names are strings").to_owned())
        .collect()
}

/// A flag set from names, to compare with [`flags`].
pub fn flag_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// What a `recv` or `send` event says: its errno (`ECONNRESET`), `EOF` for a
/// zero-byte recv, or the byte count (`13`).
pub fn outcome(event: &Value) -> String {
    if let Some(errno) = event["errno"].as_str() {
        return errno.to_owned();
    }
    match event["bytes"].as_u64() {
        Some(0) if kind(event) == "recv" => "EOF".to_owned(),
        Some(n) => n.to_string(),
        None => panic!("event with neither bytes nor errno: {event}"),
    }
}

/// The outcomes of every event of `of_kind` after index `after`.
pub fn outcomes_after(report: &Value, after: usize, of_kind: &str) -> Vec<String> {
    events(report)[after + 1..]
        .iter()
        .filter(|e| kind(e) == of_kind)
        .map(outcome)
        .collect()
}

/// The TCP states named by the `state` events, in order.
pub fn states(report: &Value) -> Vec<String> {
    events(report)
        .iter()
        .filter(|e| kind(e) == "state")
        .map(|e| e["state"].as_str().expect("state is a string").to_owned())
        .collect()
}

/// Index of the first epoll wake-up that shows the peer's end (RDHUP or ERR).
pub fn first_end_wakeup(report: &Value) -> usize {
    events(report)
        .iter()
        .position(|e| {
            kind(e) == "epoll" && {
                let f = flags(e);
                f.contains("RDHUP") || f.contains("ERR")
            }
        })
        .unwrap_or_else(|| panic!("no epoll wake-up with RDHUP or ERR\n{}", timeline(report)))
}

/// Index of the first event of `of_kind`.
pub fn position(report: &Value, of_kind: &str) -> usize {
    events(report)
        .iter()
        .position(|e| kind(e) == of_kind)
        .unwrap_or_else(|| panic!("no {of_kind} event\n{}", timeline(report)))
}

pub fn u64_field(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned number: {}", report[field]))
}

pub fn addr_field(report: &Value, field: &str) -> SocketAddr {
    report[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{field} is not an address: {}", report[field]))
}

// ---------------------------------------------------------------------------
// The test's own sockets (a peer that is not tcpbye)

/// A listener on an ephemeral loopback port whose accept() gives up after [`SOCKET_WAIT`].
pub fn plain_listener(host: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((host, 0)).expect("bind an ephemeral port");
    // Linux honours SO_RCVTIMEO in accept(): a tcpbye that never connects fails the test.
    socket2::SockRef::from(&listener)
        .set_read_timeout(Some(SOCKET_WAIT))
        .expect("SO_RCVTIMEO");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}

/// Accepts one connection (or fails after [`SOCKET_WAIT`]); reads on it time out too.
pub fn accept(listener: &TcpListener) -> TcpStream {
    let (stream, _) = listener
        .accept()
        .unwrap_or_else(|e| panic!("tcpbye did not connect within {SOCKET_WAIT:?}: {e}"));
    stream
        .set_read_timeout(Some(SOCKET_WAIT))
        .expect("SO_RCVTIMEO");
    stream
}

/// Connects to `addr` (or fails after [`SOCKET_WAIT`]); reads time out too.
pub fn plain_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, SOCKET_WAIT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(SOCKET_WAIT))
        .expect("SO_RCVTIMEO");
    stream
}

/// Reads exactly `n` bytes (tcpbye's `--send` data): proof that tcpbye is observing.
pub fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream
        .read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes from tcpbye: {e}"));
    buf
}

/// close() with nothing unread: a FIN.
pub fn close_with_fin(stream: TcpStream) {
    drop(stream);
}

/// SO_LINGER {on, 0} + close(): an RST.
pub fn close_with_rst(stream: TcpStream) {
    let sock = socket2::Socket::from(stream);
    sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
    drop(sock);
}

#[test]
fn test_name_is_the_name_of_the_function_it_is_in() {
    assert_eq!(
        test_name!(),
        "test_name_is_the_name_of_the_function_it_is_in"
    );
}
