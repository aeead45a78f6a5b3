//! Reports that say what really happened: probes named by the kernel timer that
//! sent them, a FIN followed by an RST reported as the reset it became, detection
//! latency timed from the ending's packet (not from the peer's idle time), no
//! prediction for a detection that never happened, and timeline wording that
//! matches the run.
//!
//! Tests that capture packets or drop segments need root (CAP_NET_RAW,
//! CAP_NET_ADMIN, CAP_SYS_ADMIN for a network namespace), and some need python3 or
//! socat as the peer; without them a test skips loudly (`common::require_root`,
//! `common::require_tool`).

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::*;

/// A pcap file path of this test, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("tcpbye-truth-{}-{name}", std::process::id())))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `note`s of the segments this side sent, in order, with their lengths.
fn outgoing_notes(report: &Value) -> Vec<(u64, Option<String>)> {
    report["packets"]
        .as_array()
        .unwrap_or_else(|| panic!("no packets: {report}"))
        .iter()
        .filter(|p| p["outgoing"] == true)
        .map(|p| {
            (
                p["len"].as_u64().expect("len"),
                p["note"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Probes are named by what the kernel is doing

#[test]
fn probes_into_a_closed_window_are_zero_window_probes() {
    if !require_root(
        "probes_into_a_closed_window_are_zero_window_probes",
        "--pcap needs CAP_NET_RAW",
    ) {
        return;
    }
    // A peer that stops reading: serve fills its receive window, the window
    // closes, and serve's kernel probes it on the persist timer (`ss` shows a
    // `persist` timer). No keepalive is set, so none of these is a keepalive.
    let pcap = TempFile::new("zero-window.pcap");
    let (server, addr) = serve(&[
        "127.0.0.1:0",
        "--once",
        "--json",
        "--send",
        "64M",
        "--timeout",
        "1500ms",
        "--pcap",
        pcap.path(),
    ]);
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        "hang",
        "--timeout",
        "2s",
        "--json",
    ]);
    client.expect_code(0);
    let server = server.finish();
    server.expect_code(0);
    let r = server.report();
    let notes = outgoing_notes(&r);
    let probes: Vec<_> = notes
        .iter()
        .filter(|(len, note)| *len == 0 && note.is_some())
        .collect();
    assert!(
        probes
            .iter()
            .any(|(_, n)| n.as_deref() == Some("zero-window-probe")),
        "no zero-window probe in 1.5 s of a closed window: {notes:?}"
    );
    assert!(
        probes
            .iter()
            .all(|(_, n)| n.as_deref() == Some("zero-window-probe")),
        "every probe into the closed window is a zero-window probe: {notes:?}"
    );
}

#[test]
fn a_lost_tail_is_probed_once_before_the_timeouts_that_the_prediction_counts_from() {
    if !require_root(
        "a_lost_tail_is_probed_once_before_the_timeouts_that_the_prediction_counts_from",
        "drop needs CAP_NET_ADMIN, --pcap CAP_NET_RAW, a namespace CAP_SYS_ADMIN",
    ) {
        return;
    }
    // In a namespace of its own: retransmission timeouts here must not inflate
    // the RTO cached for loopback on the host.
    let ns = Netns::new();
    let pcap = TempFile::new("tail-loss.pcap");
    let mut server = ns
        .tcpbye(&[
            "serve",
            "127.0.0.1:0",
            "--once",
            "--json",
            "--send-every",
            "300ms",
            "--user-timeout",
            "1s",
            "--timeout",
            "5s",
            "--pcap",
            pcap.path(),
        ])
        .spawn();
    let addr = server.listening().to_string();
    let client = ns
        .tcpbye(&[
            "connect",
            &addr,
            "--close",
            "drop",
            "--after",
            "100ms",
            "--timeout",
            "5s",
            "--json",
        ])
        .spawn();
    let server = server.finish();
    server.expect_code(0);
    let r = server.report();
    drop(client);
    assert_eq!(
        (&r["verdict"], &r["detected_by"]),
        (&Value::from("timeout"), &Value::from("user-timeout")),
        "{}",
        timeline(&r)
    );
    let resent: Vec<String> = outgoing_notes(&r)
        .into_iter()
        .filter_map(|(len, note)| note.filter(|_| len > 0))
        .collect();
    // The loss-probe timer re-sends the last segment first (TCP_INFO then shows
    // total_retrans 1 and total_rto 0); every later re-send is a timeout's.
    assert_eq!(
        resent.first().map(String::as_str),
        Some("tail-loss-probe"),
        "{resent:?}"
    );
    assert!(
        resent.len() >= 2 && resent[1..].iter().all(|n| n == "retransmission"),
        "{resent:?}"
    );
    let basis = r["predicted_basis"].as_str().unwrap_or_default();
    assert!(
        basis.contains("after the first timeout-driven retransmission"),
        "{basis}"
    );
}

// ---------------------------------------------------------------------------
// 2. A FIN, then an RST

/// Stops a process until dropped, so a failing test never leaves it stopped.
struct Stopped(Pid);

impl Stopped {
    fn new(pid: u32) -> Self {
        let pid = Pid::from_raw(pid as i32);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP tcpbye");
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Asserts the report of a peer that sent a FIN and then an RST, both before
/// this side woke: verdict `rst`, `fin_before_rst`, and the FIN still visible.
fn assert_fin_then_rst(r: &Value) {
    let t = timeline(r);
    assert_eq!(r["verdict"], "rst", "{t}");
    assert_eq!(r["fin_before_rst"], true, "{t}");
    assert_eq!(r["closer"], "peer", "{t}");
    let ev = events(r);
    let eof = ev
        .iter()
        .position(|e| kind(e) == "recv" && e["bytes"] == 0)
        .unwrap_or_else(|| panic!("the FIN (recv EOF) is not in the timeline\n{t}"));
    let reset = ev
        .iter()
        .position(|e| kind(e) == "so-error" && e["errno"] == "EPIPE")
        .unwrap_or_else(|| panic!("the RST (SO_ERROR EPIPE) is not in the timeline\n{t}"));
    assert!(eof < reset, "FIN first, then RST\n{t}");
    assert!(
        ev[reset..].iter().any(|e| kind(e) == "note"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("FIN, then RST")),
        "a note says FIN, then RST\n{t}"
    );
    // Nothing was sent between the FIN and the RST: the reset is the peer's own.
    assert!(
        !ev[eof..reset].iter().any(|e| kind(e) == "send"),
        "no send between the FIN and the RST\n{t}"
    );
}

#[test]
fn socat_with_linger_0_sends_fin_then_rst_and_the_verdict_is_rst() {
    if !require_tool(
        "socat_with_linger_0_sends_fin_then_rst_and_the_verdict_is_rst",
        "socat",
        &["-V"],
        "socat not installed",
    ) {
        return;
    }
    for (linger, expected) in [(",linger=0", "rst"), ("", "fin")] {
        let (server, addr) = serve(&["127.0.0.1:0", "--once", "--json", "--timeout", "3s"]);
        // socat reads EOF from /dev/null at once, shuts its sending side down (a
        // FIN) and, with -t 0, closes at once: with linger=0 that close is an RST.
        // serve is stopped meanwhile, so both arrive before it wakes.
        let stopped = Stopped::new(server.pid());
        let target = format!("TCP:{addr}{linger}");
        Cmd::program("socat", &["-t", "0", "OPEN:/dev/null", &target])
            .deadline(Duration::from_secs(5))
            .run()
            .expect_code(0);
        drop(stopped);
        let server = server.finish();
        server.expect_code(0);
        let r = server.report();
        if expected == "rst" {
            assert_fin_then_rst(&r);
        } else {
            assert_eq!(r["verdict"], "fin", "{}", timeline(&r));
            assert!(r["fin_before_rst"].is_null(), "{}", timeline(&r));
        }
    }
}

/// python3 as a server that accepts one connection, reads one byte from it, says
/// `ready`, and on `go` on its stdin shuts its sending side down (a FIN) and
/// closes with SO_LINGER {on, 0} (an RST), then says `done`.
struct FinThenRst {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl FinThenRst {
    fn start() -> Option<Self> {
        let script = "import socket,struct,sys\n\
             s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\n\
             print(s.getsockname()[1], flush=True)\n\
             c,_=s.accept(); c.recv(1); print('ready', flush=True)\n\
             sys.stdin.readline()\n\
             c.shutdown(socket.SHUT_WR)\n\
             c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
             c.close(); print('done', flush=True)\n\
             sys.stdin.readline()\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = child.stdout.take()?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = Self {
            child,
            stdin,
            lines,
            port: 0,
        };
        peer.port = peer.line().parse().ok()?;
        Some(peer)
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(SOCKET_WAIT)
            .unwrap_or_else(|e| panic!("python3 said nothing in time: {e}"))
    }

    /// Sends the FIN and the RST; returns once python3 has closed.
    fn end(&mut self) {
        writeln!(self.stdin, "go").expect("write to python3");
        assert_eq!(self.line(), "done");
    }
}

impl Drop for FinThenRst {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tcpbye connect ARGS…` against a python3 peer that sends a FIN and then an
/// RST while tcpbye is stopped; returns the finished run.
fn connect_to_fin_then_rst(extra: &[&str]) -> Option<Finished> {
    let mut peer = FinThenRst::start()?;
    let addr = format!("127.0.0.1:{}", peer.port);
    let mut args = vec![
        "connect",
        &addr,
        "--close",
        "none",
        "--send",
        "1",
        "--timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    let client = spawn(&args);
    // The byte proves tcpbye observes the connection before it is stopped.
    assert_eq!(peer.line(), "ready");
    let stopped = Stopped::new(client.pid());
    peer.end();
    drop(stopped);
    Some(client.finish())
}

#[test]
fn a_fin_then_an_rst_before_the_wake_up_is_reported_as_rst_after_fin() {
    let Some(run) = connect_to_fin_then_rst(&["--json"]) else {
        tool_missing(
            "a_fin_then_an_rst_before_the_wake_up_is_reported_as_rst_after_fin",
            "python3 not available",
        );
        return;
    };
    run.expect_code(0);
    let r = run.report();
    assert_fin_then_rst(&r);
    // The peer's socket is gone (an RST frees it), and the first wake-up already
    // carried the error.
    let first = first_end_wakeup(&r);
    assert!(
        flags(&events(&r)[first]).contains("ERR"),
        "{}",
        timeline(&r)
    );

    let Some(table) = connect_to_fin_then_rst(&[]) else {
        return;
    };
    table.expect_code(0);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("verdict") && l.contains("rst (FIN, then RST)")),
        "the table says FIN, then RST\n{}",
        table.dump()
    );
}

// ---------------------------------------------------------------------------
// 3. A detection latency counts from the ending's packet, not from idle time

/// `serve` observing `connect --close MODE --after 300ms`, another process;
/// returns serve's run.
fn serve_sees_a_closer_after_300ms(mode: &str, serve_extra: &[&str]) -> Finished {
    let mut args = vec!["127.0.0.1:0", "--once", "--json", "--timeout", "3s"];
    args.extend_from_slice(serve_extra);
    let (server, addr) = serve(&args);
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        mode,
        "--after",
        "300ms",
        "--timeout",
        "2s",
        "--json",
    ]);
    client.expect_code(0);
    server.finish()
}

#[test]
fn an_untimed_fin_or_rst_has_no_latency_only_the_peers_idle_time() {
    for mode in ["fin", "rst"] {
        let server = serve_sees_a_closer_after_300ms(mode, &[]);
        server.expect_code(0);
        let r = server.report();
        let t = timeline(&r);
        assert_eq!(r["verdict"], mode, "{t}");
        // About 300 ms: the client's --after (counted from its connect, a little
        // before serve's accept), idle time, not detection.
        assert!(r["detected_after_us"].is_null(), "{t}{r}");
        assert!(r["detected_from"].is_null(), "{r}");
        let idle = u64_field(&r, "peer_idle_us");
        assert!((250_000..2_000_000).contains(&idle), "peer_idle_us {idle}");
        assert!(
            server.summary()["detected_after_us"].is_null(),
            "{}",
            server.dump()
        );
    }
}

#[test]
fn a_captured_fin_times_the_latency_from_its_arrival() {
    if !require_root(
        "a_captured_fin_times_the_latency_from_its_arrival",
        "--pcap needs CAP_NET_RAW",
    ) {
        return;
    }
    let pcap = TempFile::new("latency.pcap");
    let server = serve_sees_a_closer_after_300ms("fin", &["--pcap", pcap.path()]);
    server.expect_code(0);
    let r = server.report();
    let t = timeline(&r);
    assert_eq!(r["detected_from"], "packet", "{t}");
    let detected = u64_field(&r, "detected_after_us");
    let fin_at = r["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .find(|p| p["outgoing"] == false && p["flags"].to_string().contains("FIN"))
        .map(|p| u64_field(p, "t_us"))
        .unwrap_or_else(|| panic!("no FIN captured: {}", r["packets"]));
    let woke = u64_field(&events(&r)[first_end_wakeup(&r)], "t_us");
    assert!(
        (woke - fin_at).abs_diff(detected) <= 1,
        "detected {detected}µs = wake-up {woke} - FIN {fin_at}\n{t}"
    );
    assert!(detected < 50_000, "packet to wake-up took {detected}µs");
    assert!(u64_field(&r, "peer_idle_us") >= 250_000, "{t}");
    assert_eq!(
        server.summary()["detected_after_us"]["p50"],
        detected,
        "the summary aggregates the timed latency\n{}",
        server.dump()
    );
}

#[test]
fn expect_within_an_untimed_ending_fails_and_says_why() {
    let (server, addr) = serve(&[
        "127.0.0.1:0",
        "--once",
        "--json",
        "--timeout",
        "3s",
        "--expect",
        "fin",
        "--expect-within",
        "1s",
    ]);
    run(&[
        "connect",
        &addr.to_string(),
        "--close",
        "fin",
        "--after",
        "100ms",
        "--timeout",
        "2s",
    ])
    .expect_code(0);
    let server = server.finish();
    server.expect_code(1);
    assert!(
        server.stderr.iter().any(|l| l.contains(
            "verdict fin has no detection time (the arrival of the peer's FIN or RST is timed only with --pcap)"
        )),
        "{}",
        server.dump()
    );
}

// ---------------------------------------------------------------------------
// 4. No prediction for a detection that did not happen

#[test]
fn an_open_verdict_has_no_prediction() {
    // keepalive against a hung peer: its kernel answers every probe, so nothing
    // is detected; a prediction would only be the estimate re-anchored at the
    // last answered probe, a moment that never comes.
    let (server, addr) = serve(&[
        "127.0.0.1:0",
        "--once",
        "--json",
        "--keepalive",
        "1s,1s,3",
        "--timeout",
        "1500ms",
    ]);
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        "hang",
        "--timeout",
        "2s",
        "--json",
    ]);
    client.expect_code(0);
    let server = server.finish();
    server.expect_code(0);
    let r = server.report();
    assert_eq!(r["verdict"], "open", "{}", timeline(&r));
    assert!(
        r["predicted_us"].is_null(),
        "predicted_us: {}",
        r["predicted_us"]
    );
    assert!(r["predicted_basis"].is_null(), "{}", r["predicted_basis"]);
    assert!(r["detected_after_us"].is_null());
}

// ---------------------------------------------------------------------------
// 5. Timeline wording

#[test]
fn a_half_closer_whose_peer_never_ends_does_not_claim_the_peers_end() {
    // The test's own socket accepts and then neither reads nor closes.
    let (listener, addr) = plain_listener("127.0.0.1");
    let client = spawn(&[
        "connect",
        &addr.to_string(),
        "--close",
        "half",
        "--after",
        "50ms",
        "--timeout",
        "500ms",
        "--json",
    ]);
    let held = accept(&listener);
    let started = Instant::now();
    let run = client.finish();
    drop(held);
    run.expect_code(0);
    assert!(started.elapsed() < Duration::from_secs(3));
    let r = run.report();
    let t = timeline(&r);
    assert_eq!(r["verdict"], "open", "{t}");
    let last = events(&r).last().expect("events");
    assert_eq!(kind(last), "close", "{t}");
    assert_eq!(
        last["detail"], "close(): the peer had not ended when the observation stopped",
        "{t}"
    );
}
