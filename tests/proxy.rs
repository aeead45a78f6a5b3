//! The proxy recipe of docs/ci.md as tests: does a proxy forward a client's FIN as a
//! FIN and its RST as an RST? Real processes on 127.0.0.1 only: `tcpbye serve` on an
//! ephemeral port, socat in front of it, `tcpbye connect` through socat.
//!
//! socat 1.7.4 forwards a FIN as a FIN, but not an RST: it reads ECONNRESET from the
//! client, treats it as end of stream and passes a FIN on. These tests assert that
//! behaviour, and that `serve --expect rst` catches it with exit code 1. A direct
//! connection, without the proxy, keeps the RST an RST.
//!
//! Without socat each proxy test prints `SKIPPED <test>: socat not installed` to stderr
//! and returns. Linux only: readiness is read from /proc/net/tcp.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

const TCPBYE: &str = env!("CARGO_BIN_EXE_tcpbye");

/// What every test may spend at most, start to end.
const BUDGET: Duration = Duration::from_secs(9);
/// How long socat gets to start listening, per attempt.
const SOCAT_READY: Duration = Duration::from_secs(2);
/// socat attempts (a free port can be taken between our check and socat's bind).
const SOCAT_ATTEMPTS: usize = 3;

macro_rules! require_socat {
    ($name:expr) => {
        if !socat_installed() {
            eprintln!("SKIPPED {}: socat not installed", $name);
            return;
        }
    };
}

fn socat_installed() -> bool {
    Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The time a test has left.
struct Budget(Instant);

impl Budget {
    fn start() -> Self {
        Self(Instant::now() + BUDGET)
    }

    /// `limit`, or less when the test's budget ends sooner.
    fn at_most(&self, limit: Duration) -> Instant {
        (Instant::now() + limit).min(self.0)
    }
}

/// A child process that is killed and reaped when dropped, so that a failing
/// assertion never leaves a process behind.
struct Guard {
    child: Child,
    what: String,
    stdout: Option<JoinHandle<String>>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Guard {
    /// Spawns `cmd` with stdout and stderr piped and read by threads, so that a full
    /// pipe can never block the child.
    fn spawn(mut cmd: Command, what: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().expect("piped stderr");
        let (tx, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            what: what.to_owned(),
            stdout: Some(stdout),
            stderr_lines,
            stderr_seen: Vec::new(),
        }
    }

    /// Waits until a stderr line starts with `prefix` and returns the rest of it.
    fn wait_stderr(&mut self, prefix: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let rest = line.strip_prefix(prefix).map(str::to_owned);
                    self.stderr_seen.push(line);
                    if let Some(rest) = rest {
                        return rest;
                    }
                }
                Err(_) => panic!(
                    "{}: no stderr line starting with {prefix:?} in time; stderr so far: {:?}",
                    self.what, self.stderr_seen
                ),
            }
        }
    }

    /// Whether the child has exited already.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the child to exit by `deadline`; returns its status, stdout and stderr.
    fn finish(mut self, deadline: Instant) -> Finished {
        let status = loop {
            if let Some(status) = self.exited() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit in time; stderr so far: {:?}",
                self.what,
                self.stderr_seen
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = self
            .stdout
            .take()
            .expect("stdout thread")
            .join()
            .unwrap_or_default();
        // The child has exited: its stderr pipe ends once the reader thread drains it.
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(500)) {
            stderr.push(line);
        }
        Finished {
            what: self.what.clone(),
            code: status.code(),
            stdout,
            stderr: stderr.join("\n"),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that ran to its end.
struct Finished {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// The JSON objects of `kind` on stdout.
    fn objects(&self, kind: &str) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", self.what))
            })
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    /// The single `connection` report.
    fn connection(&self) -> Value {
        let mut reports = self.objects("connection");
        assert_eq!(
            reports.len(),
            1,
            "{}: one connection report\n{self}",
            self.what
        );
        reports.remove(0)
    }

    fn summary(&self) -> Value {
        let mut summaries = self.objects("summary");
        assert_eq!(summaries.len(), 1, "{}: one summary\n{self}", self.what);
        summaries.remove(0)
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- {} exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// `tcpbye serve 127.0.0.1:0 --once --json --expect EXPECT`, started and listening.
fn start_serve(expect: &str, budget: &Budget) -> (Guard, u16) {
    let mut cmd = Command::new(TCPBYE);
    cmd.args([
        "serve",
        "127.0.0.1:0",
        "--once",
        "--json",
        "--timeout",
        "5s",
        "--expect",
        expect,
    ]);
    let mut serve = Guard::spawn(cmd, "tcpbye serve");
    let addr = serve.wait_stderr(
        "tcpbye: listening on ",
        budget.at_most(Duration::from_secs(5)),
    );
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in the listening line {addr:?}"));
    (serve, port)
}

/// A port that was free a moment ago. Another process can take it before socat binds
/// it, which is why `start_socat` retries.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Socket inodes of the LISTEN sockets on 127.0.0.1:`port`, from /proc/net/tcp.
fn listening_inodes(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            (fields.len() > 9 && fields[1] == local && fields[3] == "0A")
                .then(|| fields[9].to_owned())
        })
        .collect()
}

/// Whether process `pid` holds one of the sockets `inodes`.
fn holds_socket(pid: u32, inodes: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| {
            let target = target.to_string_lossy();
            inodes.iter().any(|i| target == format!("socket:[{i}]"))
        })
}

/// socat as a one-connection TCP proxy from a free port to `target`, listening.
///
/// Readiness is read from /proc/net/tcp (a LISTEN socket on the port that socat
/// holds), polled for at most 2 s per attempt. A probe connection cannot be used:
/// socat would accept it and forward it to `serve --once`, which would then report the
/// probe instead of the connection under test.
fn start_socat(target: u16, budget: &Budget) -> (Guard, u16) {
    let mut failures = Vec::new();
    for _ in 0..SOCAT_ATTEMPTS {
        let port = free_port();
        let mut cmd = Command::new("socat");
        cmd.arg("-d") // warnings too: socat logs the reset it read from the client
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
            .arg(format!("TCP:127.0.0.1:{target}"));
        let mut socat = Guard::spawn(cmd, "socat");
        let deadline = budget.at_most(SOCAT_READY);
        loop {
            if socat.exited().is_some() {
                // Most likely the port was taken before socat could bind it.
                failures.push(socat.finish(deadline).to_string());
                break;
            }
            if holds_socket(socat.child.id(), &listening_inodes(port)) {
                return (socat, port);
            }
            if Instant::now() >= deadline {
                failures.push(format!("socat not listening on {port} within 2 s"));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("socat did not start after {SOCAT_ATTEMPTS} attempts:\n{failures:#?}");
}

/// `tcpbye connect 127.0.0.1:PORT --close MODE --after 100ms`, run to its end.
fn run_connect(port: u16, mode: &str, budget: &Budget) -> Finished {
    let mut cmd = Command::new(TCPBYE);
    cmd.args(["connect", &format!("127.0.0.1:{port}"), "--close", mode])
        .args(["--after", "100ms", "--timeout", "3s", "--json"]);
    Guard::spawn(cmd, "tcpbye connect").finish(budget.at_most(Duration::from_secs(5)))
}

/// The errno names of the `recv` events of a report, in order.
fn recv_errnos(report: &Value) -> Vec<String> {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "recv")
        .filter_map(|e| e["errno"].as_str().map(str::to_owned))
        .collect()
}

/// serve (with `--expect EXPECT`) behind socat; the client closes with `mode`.
fn through_socat(mode: &str, expect: &str, budget: &Budget) -> (Finished, Finished, Finished) {
    let (serve, serve_port) = start_serve(expect, budget);
    let (socat, proxy_port) = start_socat(serve_port, budget);
    let connect = run_connect(proxy_port, mode, budget);
    let serve = serve.finish(budget.at_most(Duration::from_secs(5)));
    // socat exits by itself after its one connection (often with status 1: its
    // forward of the server's probe write meets the closed client).
    let socat = socat.finish(budget.at_most(Duration::from_secs(2)));
    (connect, serve, socat)
}

#[test]
fn proxy_forwards_fin_as_fin() {
    require_socat!("proxy_forwards_fin_as_fin");
    let budget = Budget::start();
    let (connect, serve, socat) = through_socat("fin", "fin", &budget);
    let context = format!("{connect}\n{serve}\n{socat}");

    assert_eq!(connect.code, Some(0), "connect exits 0\n{context}");
    assert_eq!(connect.connection()["verdict"], "fin", "{context}");

    let report = serve.connection();
    assert_eq!(report["verdict"], "fin", "serve sees a FIN\n{context}");
    assert_eq!(report["closer"], "peer", "{context}");
    assert!(recv_errnos(&report).is_empty(), "no recv error\n{context}");
    assert_eq!(serve.summary()["expect_met"], true, "{context}");
    assert_eq!(
        serve.code,
        Some(0),
        "--expect fin is met: exit 0\n{context}"
    );
}

#[test]
fn proxy_turns_rst_into_fin_and_expect_rst_catches_it() {
    require_socat!("proxy_turns_rst_into_fin_and_expect_rst_catches_it");
    let budget = Budget::start();
    let (connect, serve, socat) = through_socat("rst", "rst", &budget);
    let context = format!("{connect}\n{serve}\n{socat}");

    // The client did send an RST to socat ...
    assert_eq!(connect.code, Some(0), "connect exits 0\n{context}");
    assert_eq!(connect.connection()["verdict"], "rst", "{context}");

    // ... but socat read ECONNRESET as end of stream and passed a FIN on.
    let report = serve.connection();
    assert_eq!(
        report["verdict"], "fin",
        "socat forwarded the client's RST as a FIN (measured with socat 1.7.4); \
         if this fails, this socat forwards RSTs and docs/ci.md needs updating\n{context}"
    );
    assert!(
        !recv_errnos(&report).contains(&"ECONNRESET".to_owned()),
        "serve never read ECONNRESET\n{context}"
    );
    assert_eq!(serve.summary()["expect_met"], false, "{context}");
    assert_eq!(
        serve.code,
        Some(1),
        "--expect rst not met: exit 1\n{context}"
    );
    assert!(
        serve
            .stderr
            .contains("tcpbye: expectation not met: serve 127.0.0.1:"),
        "serve says why it exits 1\n{context}"
    );
}

#[test]
fn direct_connection_keeps_rst_as_rst() {
    let budget = Budget::start();
    let (serve, port) = start_serve("rst", &budget);
    let connect = run_connect(port, "rst", &budget);
    let serve = serve.finish(budget.at_most(Duration::from_secs(5)));
    let context = format!("{connect}\n{serve}");

    assert_eq!(connect.code, Some(0), "connect exits 0\n{context}");
    let report = serve.connection();
    assert_eq!(report["verdict"], "rst", "serve sees the RST\n{context}");
    assert_eq!(
        recv_errnos(&report).first().map(String::as_str),
        Some("ECONNRESET"),
        "{context}"
    );
    assert_eq!(serve.summary()["expect_met"], true, "{context}");
    assert_eq!(
        serve.code,
        Some(0),
        "--expect rst is met: exit 0\n{context}"
    );
}
