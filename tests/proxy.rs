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
//! (shown by a plain `cargo test`) and returns; under `TCPBYE_TEST_REQUIRE_TOOLS=1` it
//! fails instead. Linux only: readiness is read from /proc/net/tcp.

#![cfg(target_os = "linux")]

use crate::common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Cmd, Finished, Proc, require_tool};

/// What every test may spend at most, start to end.
const BUDGET: Duration = Duration::from_secs(9);
/// How long socat gets to start listening, per attempt.
const SOCAT_READY: Duration = Duration::from_secs(2);
/// socat attempts (a free port can be taken between our check and socat's bind).
const SOCAT_ATTEMPTS: usize = 3;

macro_rules! require_socat {
    ($name:expr) => {
        if !require_tool($name, "socat", &["-V"], "socat not installed") {
            return;
        }
    };
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

/// `tcpbye serve 127.0.0.1:0 --once --json --expect EXPECT`, started and listening.
fn start_serve(expect: &str, budget: &Budget) -> (Proc, u16) {
    let mut serve = Cmd::tcpbye(&[
        "serve",
        "127.0.0.1:0",
        "--once",
        "--json",
        "--timeout",
        "5s",
        "--expect",
        expect,
    ])
    .spawn();
    let port = serve
        .listening_by(budget.at_most(Duration::from_secs(5)))
        .port();
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
fn start_socat(target: u16, budget: &Budget) -> (Proc, u16) {
    let mut failures = Vec::new();
    for _ in 0..SOCAT_ATTEMPTS {
        let port = free_port();
        let mut socat = Cmd::program(
            "socat",
            &[
                "-d", // warnings too: socat logs the reset it read from the client
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
                &format!("TCP:127.0.0.1:{target}"),
            ],
        )
        .spawn();
        let deadline = budget.at_most(SOCAT_READY);
        loop {
            if socat.exited().is_some() {
                // Most likely the port was taken before socat could bind it.
                failures.push(socat.finish_by(deadline).to_string());
                break;
            }
            if holds_socket(socat.pid(), &listening_inodes(port)) {
                return (socat, port);
            }
            if Instant::now() >= deadline {
                failures.push(format!("socat not listening on {port} within 2 s"));
                break;
            }
            std::thread::sleep(common::POLL);
        }
    }
    panic!("socat did not start after {SOCAT_ATTEMPTS} attempts:\n{failures:#?}");
}

/// `tcpbye connect 127.0.0.1:PORT --close MODE --after 100ms`, run to its end.
fn run_connect(port: u16, mode: &str, budget: &Budget) -> Finished {
    Cmd::tcpbye(&[
        "connect",
        &format!("127.0.0.1:{port}"),
        "--close",
        mode,
        "--after",
        "100ms",
        "--timeout",
        "3s",
        "--json",
    ])
    .spawn()
    .finish_by(budget.at_most(Duration::from_secs(5)))
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
    let serve = serve.finish_by(budget.at_most(Duration::from_secs(5)));
    // socat exits by itself after its one connection (often with status 1: its
    // forward of the server's probe write meets the closed client).
    let socat = socat.finish_by(budget.at_most(Duration::from_secs(2)));
    (connect, serve, socat)
}

#[test]
fn proxy_forwards_fin_as_fin() {
    require_socat!("proxy_forwards_fin_as_fin");
    let budget = Budget::start();
    let (connect, serve, socat) = through_socat("fin", "fin", &budget);
    let context = format!("{connect}\n{serve}\n{socat}");

    assert_eq!(connect.code, Some(0), "connect exits 0\n{context}");
    assert_eq!(connect.one("connection")["verdict"], "fin", "{context}");

    let report = serve.one("connection");
    assert_eq!(report["verdict"], "fin", "serve sees a FIN\n{context}");
    assert_eq!(report["closer"], "peer", "{context}");
    assert!(recv_errnos(&report).is_empty(), "no recv error\n{context}");
    assert_eq!(serve.one("summary")["expect_met"], true, "{context}");
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
    assert_eq!(connect.one("connection")["verdict"], "rst", "{context}");

    // ... but socat read ECONNRESET as end of stream and passed a FIN on.
    let report = serve.one("connection");
    assert_eq!(
        report["verdict"], "fin",
        "socat forwarded the client's RST as a FIN (measured with socat 1.7.4); \
         if this fails, this socat forwards RSTs and docs/ci.md needs updating\n{context}"
    );
    assert!(
        !recv_errnos(&report).contains(&"ECONNRESET".to_owned()),
        "serve never read ECONNRESET\n{context}"
    );
    assert_eq!(serve.one("summary")["expect_met"], false, "{context}");
    assert_eq!(
        serve.code,
        Some(1),
        "--expect rst not met: exit 1\n{context}"
    );
    assert!(
        serve
            .stderr
            .iter()
            .any(|l| l.contains("tcpbye: expectation not met: serve 127.0.0.1:")),
        "serve says why it exits 1\n{context}"
    );
}

#[test]
fn direct_connection_keeps_rst_as_rst() {
    let budget = Budget::start();
    let (serve, port) = start_serve("rst", &budget);
    let connect = run_connect(port, "rst", &budget);
    let serve = serve.finish_by(budget.at_most(Duration::from_secs(5)));
    let context = format!("{connect}\n{serve}");

    assert_eq!(connect.code, Some(0), "connect exits 0\n{context}");
    let report = serve.one("connection");
    assert_eq!(report["verdict"], "rst", "serve sees the RST\n{context}");
    assert_eq!(
        recv_errnos(&report).first().map(String::as_str),
        Some("ECONNRESET"),
        "{context}"
    );
    assert_eq!(serve.one("summary")["expect_met"], true, "{context}");
    assert_eq!(
        serve.code,
        Some(0),
        "--expect rst is met: exit 0\n{context}"
    );
}
