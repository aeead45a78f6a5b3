//! Shared helpers for the integration tests: run `tcpbye` as a child process with a
//! deadline (never a bare sleep), make sure no child outlives a failing test, and
//! read the JSON reports it prints.

// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tcpbye");

/// The longest one tcpbye child may run before the test fails and kills it. Every
/// child also gets its own, shorter `--timeout`.
pub const DEADLINE: Duration = Duration::from_secs(8);

/// How long a test's own socket waits for tcpbye (accept, read).
pub const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// A running tcpbye. Dropping it before [`Tcpbye::finish`] kills and reaps the
/// child, so a failing assertion never leaves a process behind.
pub struct Tcpbye {
    args: Vec<String>,
    child: Child,
    started: Instant,
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
    reaped: bool,
}

/// What a tcpbye run left behind.
#[derive(Debug)]
pub struct Finished {
    pub args: Vec<String>,
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: Vec<String>,
}

/// Starts `tcpbye ARGS` with stdout and stderr captured by reader threads.
pub fn spawn(args: &[&str]) -> Tcpbye {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let mut out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let (out_tx, out_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        let _ = out_tx.send(bytes);
    });
    let (err_tx, err_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if err_tx.send(line).is_err() {
                break;
            }
        }
    });
    Tcpbye {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        child,
        started: Instant::now(),
        stdout: out_rx,
        stderr: err_rx,
        stderr_seen: Vec::new(),
        reaped: false,
    }
}

/// Runs `tcpbye ARGS` to completion (within [`DEADLINE`]).
pub fn run(args: &[&str]) -> Finished {
    spawn(args).finish()
}

/// Starts `tcpbye serve ARGS` and waits for its `listening on` line.
pub fn serve(args: &[&str]) -> (Tcpbye, SocketAddr) {
    let argv: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .collect();
    let mut child = spawn(&argv);
    let addr = child.listening();
    (child, addr)
}

impl Tcpbye {
    fn left(&self) -> Duration {
        (self.started + DEADLINE).saturating_duration_since(Instant::now())
    }

    fn command(&self) -> String {
        format!("tcpbye {}", self.args.join(" "))
    }

    /// Waits for the first stderr line, which must be `tcpbye: listening on ADDR`.
    pub fn listening(&mut self) -> SocketAddr {
        let line = match self.stderr.recv_timeout(self.left()) {
            Ok(line) => line,
            Err(e) => panic!("{}: no first stderr line ({e:?})", self.command()),
        };
        self.stderr_seen.push(line.clone());
        let addr = line
            .strip_prefix("tcpbye: listening on ")
            .unwrap_or_else(|| panic!("{}: first stderr line is {line:?}", self.command()));
        addr.parse()
            .unwrap_or_else(|e| panic!("{}: {addr:?} is not an address: {e}", self.command()))
    }

    /// Waits for the process to exit and collects its output. Panics (and so kills
    /// the child) if it does not exit within [`DEADLINE`] of its start.
    pub fn finish(mut self) -> Finished {
        let stdout = match self.stdout.recv_timeout(self.left()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => panic!(
                "{} did not exit within {DEADLINE:?} ({e:?}); stderr so far: {:?}",
                self.command(),
                self.stderr_seen
            ),
        };
        // stdout reached EOF: the process is exiting.
        let status = self.child.wait().expect("wait for tcpbye");
        self.reaped = true;
        loop {
            match self.stderr.recv_timeout(self.left()) {
                Ok(line) => self.stderr_seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: stderr still open after exit", self.command())
                }
            }
        }
        Finished {
            args: std::mem::take(&mut self.args),
            code: status.code(),
            stdout,
            stderr: std::mem::take(&mut self.stderr_seen),
        }
    }
}

impl Drop for Tcpbye {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    fn command(&self) -> String {
        format!("tcpbye {}", self.args.join(" "))
    }

    /// A readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "{}\nexit: {:?}\nstderr: {:#?}\nstdout:\n{}",
            self.command(),
            self.code,
            self.stderr,
            self.stdout
        )
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

/// Whether the tests run as root (privileged tests run for real only then).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `tcpbye ARGS` as uid/gid 65534 with no capabilities (util-linux `setpriv`);
/// needs root to drop to that user.
pub fn unprivileged(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}
