//! `tcpbye check`'s times beside a ground truth the test takes itself: a capture
//! on loopback with tshark (the kernel's timestamp of each packet) and the
//! program's own system calls with `strace -f -ttt`. Both clocks are the wall
//! clock; tcpbye's action is placed on it from its connection's SYN, which
//! leaves at the connection clock's zero.

use crate::common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Cmd, Proc, require_root, require_tool, within};
use serde_json::Value;

/// One captured segment: wall-clock seconds, ports, FIN and RST.
#[derive(Debug, Clone, Copy)]
struct Seg {
    t: f64,
    src: u16,
    dst: u16,
    syn: bool,
    fin: bool,
    rst: bool,
}

/// tshark capturing `tcp port PORT` on loopback into a file of the test's own.
/// Stopped when dropped too: a failed test leaves no capture running.
struct Capture {
    proc: Option<Proc>,
    file: PathBuf,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Capture {
    fn start(dir: &Path, port: u16) -> Self {
        let file = dir.join("truth.pcap");
        let filter = format!("tcp port {port}");
        let mut proc = Cmd::program(
            "tshark",
            &[
                "-i",
                "lo",
                "-f",
                &filter,
                "-w",
                file.to_str().expect("utf-8"),
            ],
        )
        .deadline(Duration::from_secs(120))
        .spawn();
        proc.stderr_line(within(20), |l| l.contains("Capturing on"));
        // tshark says so as its capture process starts, a moment before the
        // first packet can be taken (seen missing a SYN on a loaded machine).
        std::thread::sleep(Duration::from_millis(500));
        Self {
            proc: Some(proc),
            file,
        }
    }

    /// SIGINT: tshark stops its capture process (dumpcap) and exits; killing
    /// tshark alone would leave dumpcap running.
    fn stop(&mut self) {
        if let Some(proc) = self.proc.take() {
            proc.interrupt();
            let _ = proc.finish_or_terminate(Duration::from_secs(10));
        }
    }

    /// Stops the capture and reads it back.
    fn segments(mut self) -> Vec<Seg> {
        self.stop();
        let out = Cmd::program(
            "tshark",
            &[
                "-r",
                self.file.to_str().expect("utf-8"),
                "-T",
                "fields",
                "-e",
                "frame.time_epoch",
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "tcp.flags.syn",
                "-e",
                "tcp.flags.fin",
                "-e",
                "tcp.flags.reset",
            ],
        )
        .deadline(Duration::from_secs(30))
        .run()
        .output();
        let flag = |f: &str| matches!(f, "1" | "True" | "true");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                Some(Seg {
                    t: f.first()?.parse().ok()?,
                    src: f.get(1)?.parse().ok()?,
                    dst: f.get(2)?.parse().ok()?,
                    syn: flag(f.get(3)?),
                    fin: flag(f.get(4)?),
                    rst: flag(f.get(5)?),
                })
            })
            .collect()
    }
}

/// The case of `mode` in check's output.
fn case<'a>(cases: &'a [Value], mode: &str) -> &'a Value {
    cases
        .iter()
        .find(|c| c["mode"] == mode)
        .unwrap_or_else(|| panic!("no case for {mode}: {cases:?}"))
}

/// tcpbye's port of a case (`tcpbye_addr`).
fn tcpbye_port(case: &Value) -> u16 {
    let addr = case["tcpbye_addr"].as_str().expect("tcpbye_addr");
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port")
}

/// The truth for a case timed from the wire: µs from tcpbye's action to the
/// program's first FIN or RST after it — for a held socket (`drop`, `hang`),
/// before tcpbye's own end. The action is tcpbye's own FIN or RST where it sent
/// one (`fin`, `half`, `rst`), else its SYN plus `action_t_us` (the SYN leaves
/// some µs after the connection clock's zero, which this does not count).
fn wire_truth(segments: &[Seg], case: &Value) -> Option<f64> {
    let p = tcpbye_port(case);
    let sends = matches!(case["mode"].as_str(), Some("fin" | "half" | "rst"));
    let own = segments
        .iter()
        .find(|s| sends && s.src == p && (s.fin || s.rst))
        .map(|s| s.t);
    let syn = segments.iter().find(|s| s.src == p && s.syn)?;
    let action = own.unwrap_or(syn.t + us(&case["action_t_us"]) / 1e6);
    let held = matches!(case["mode"].as_str(), Some("drop" | "hang"));
    let own_end = segments
        .iter()
        .filter(|s| held && s.src == p && (s.fin || s.rst) && s.t > action)
        .map(|s| s.t)
        .fold(f64::INFINITY, f64::min);
    segments
        .iter()
        .find(|s| s.dst == p && (s.fin || s.rst) && s.t > action && s.t < own_end)
        .map(|s| (s.t - action) * 1e6)
}

/// µs as a float, for the comparisons' messages.
fn us(v: &Value) -> f64 {
    v.as_u64().unwrap_or_else(|| panic!("a time: {v}")) as f64
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

fn wait_listening(proc: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline && proc.exited().is_none(),
            "nothing listens on {port}\n{}",
            proc.dump()
        );
        std::thread::sleep(common::POLL);
    }
}

/// A program run under strace, ended when dropped (a failed test too): the
/// program itself is signalled (strace passes on no SIGINT, and killing strace
/// would leave the program running), and strace exits with it.
struct Traced(Option<Proc>);

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(strace) = self.0.take() {
            stop_traced(strace);
        }
    }
}

fn stop_traced(strace: Proc) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", strace.pid())) else {
        return;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let _ = strace.finish_or_terminate(Duration::from_secs(10));
}

/// redis-server on loopback `port`, persisting nothing, with `extra` settings;
/// returned once it accepts (killed when dropped).
fn redis(port: u16, extra: &[&str]) -> Proc {
    let port_text = port.to_string();
    let mut args = vec![
        "--port",
        &port_text,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    args.extend_from_slice(extra);
    let mut redis = Cmd::program("redis-server", &args)
        .deadline(Duration::from_secs(60))
        .spawn();
    wait_listening(&mut redis, port);
    redis
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tcpbye-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// socat (forking: each connection is served by a child, which inherits the
/// accepted socket) under `strace -f -ttt`, and a capture on loopback:
/// - `fin`: socat's FIN follows tcpbye's; tcpbye times it by the packet, so its
///   `noticed_after_us` is the gap between the two FINs in the test's capture
///   (within 0.5 ms: the action is stamped just before tcpbye's close()).
/// - `rst`: the child reads ECONNRESET and exits; tcpbye times the release of
///   its descriptor within a span (its resolution), which meets the span strace
///   gives the exit: from exit_group() to the child gone.
#[test]
fn socat_times_agree_with_a_capture_and_strace() {
    let test = common::test_name!();
    if !require_root(
        test,
        "the capture needs CAP_NET_RAW, the holder's /proc/PID/fd root",
    ) || !require_tool(test, "socat", &["-V"], "socat not installed")
        || !require_tool(test, "tshark", &["-v"], "tshark not installed")
        || !require_tool(test, "strace", &["-V"], "strace not installed")
    {
        return;
    }
    let dir = scratch(test);
    let port = free_port();
    let capture = Capture::start(&dir, port);
    let trace = dir.join("socat.strace");
    let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork");
    let mut socat = Cmd::program(
        "strace",
        &[
            "-f",
            "-ttt",
            "-e",
            "trace=read,close,exit_group",
            "-o",
            trace.to_str().expect("utf-8"),
            "socat",
            &listen,
            "PIPE",
        ],
    )
    .deadline(Duration::from_secs(60))
    .spawn();
    wait_listening(&mut socat, port);
    let socat = Traced(Some(socat));
    let addr = format!("127.0.0.1:{port}");
    let out = Cmd::tcpbye(&[
        "check",
        &addr,
        "--modes",
        "fin,rst",
        "--request",
        "hi\\n",
        "--wait",
        "1s",
        "--json",
    ])
    .deadline(Duration::from_secs(30))
    .run();
    out.expect_code(0);
    // Let strace write the children's last lines, then stop socat and the capture.
    std::thread::sleep(Duration::from_millis(300));
    drop(socat);
    let segments = capture.segments();
    let cases = out.objects("check-case");
    let dump = || format!("{}\ncapture: {segments:?}", out.dump());

    let fin = case(&cases, "fin");
    assert_eq!(fin["reaction"], "closed", "{}", dump());
    assert_eq!(fin["noticed_by"], "wire", "{}", dump());
    // Named where its process was found before the action.
    assert!(
        fin["comm"].is_null() || fin["comm"] == "socat",
        "{}",
        dump()
    );
    let p = tcpbye_port(fin);
    let ours = segments
        .iter()
        .find(|s| s.src == p && s.fin)
        .expect("tcpbye's FIN");
    let theirs = segments
        .iter()
        .find(|s| s.dst == p && s.fin)
        .expect("socat's FIN");
    let truth = (theirs.t - ours.t) * 1e6;
    let noticed = us(&fin["noticed_after_us"]);
    assert!(
        (noticed - truth).abs() <= 500.0,
        "fin: tcpbye +{noticed}µs, capture: socat's FIN {truth:.0}µs after tcpbye's"
    );

    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "closed", "{}", dump());
    assert_eq!(rst["noticed_by"], "descriptor", "{}", dump());
    let p = tcpbye_port(rst);
    let reset = segments
        .iter()
        .find(|s| s.src == p && s.rst)
        .expect("tcpbye's RST");
    // The child that read ECONNRESET, and its exit.
    let text = std::fs::read_to_string(&trace).expect("strace output");
    let reader = text
        .lines()
        .find(|l| l.contains("ECONNRESET"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ECONNRESET in strace:\n{text}"));
    // The child lets go of the socket while it exits: after exit_group() is
    // entered and before strace sees it gone (`+++ exited`).
    let stamp = |l: &str| -> Option<f64> { l.split_whitespace().nth(1)?.parse().ok() };
    let of_reader: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{reader} ")))
        .collect();
    let entered = of_reader
        .iter()
        .find(|l| l.contains("exit_group("))
        .and_then(|l| stamp(l))
        .unwrap_or_else(|| panic!("no exit of {reader} in strace:\n{text}"));
    let exited = of_reader
        .iter()
        .find(|l| l.contains("+++ exited"))
        .and_then(|l| stamp(l))
        .unwrap_or_else(|| panic!("no end of {reader} in strace:\n{text}"));
    let (from, to) = ((entered - reset.t) * 1e6, (exited - reset.t) * 1e6);
    let noticed = us(&rst["noticed_after_us"]);
    let resolution = us(&rst["resolution_us"]["noticed"]);
    // tcpbye's span (the last look that found it held, the first that did not)
    // meets strace's (0.2 ms for placing the action on the wall clock).
    assert!(
        noticed - resolution <= to + 200.0 && noticed >= from - 200.0,
        "rst: tcpbye released within {:.0}–{noticed}µs; strace: exiting {from:.0}–{to:.0}µs after the RST\n{}",
        noticed - resolution,
        dump()
    );
    // Read every 0.25 ms: about that on an idle machine; a loaded one delays the
    // watching thread, never by seconds.
    assert!(
        resolution <= 5_000.0,
        "rst: a descriptor known before the action is read every 0.25 ms: {resolution}µs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis with `--timeout 1` ends an idle client itself. After `drop` its FIN is
/// the reaction; tcpbye times it by the packet. The truth: the same FIN in the
/// test's capture, less the moment of tcpbye's action, placed on the wall clock
/// from the connection's SYN (the connection clock's zero) and `action_t_us`.
#[test]
fn redis_idle_timeout_after_drop_agrees_with_the_capture() {
    let test = common::test_name!();
    if !require_root(test, "drop needs CAP_NET_ADMIN, the capture CAP_NET_RAW")
        || !require_tool(
            test,
            "redis-server",
            &["--version"],
            "redis-server not installed",
        )
        || !require_tool(test, "tshark", &["-v"], "tshark not installed")
    {
        return;
    }
    let dir = scratch(test);
    let port = free_port();
    let capture = Capture::start(&dir, port);
    let _redis = redis(port, &["--timeout", "1", "--tcp-keepalive", "0"]);
    let addr = format!("127.0.0.1:{port}");
    let out = Cmd::tcpbye(&[
        "check",
        &addr,
        "--modes",
        "drop",
        "--request",
        "PING\\r\\n",
        "--wait",
        "4s",
        "--json",
    ])
    .deadline(Duration::from_secs(30))
    .run();
    out.expect_code(0);
    let segments = capture.segments();
    let cases = out.objects("check-case");
    let drop = case(&cases, "drop");
    assert_eq!(drop["reaction"], "closed", "{}", out.dump());
    assert_eq!(drop["noticed_by"], "wire", "{}", out.dump());
    assert!(
        drop["comm"].is_null() || drop["comm"] == "redis-server",
        "{}",
        out.dump()
    );
    let truth = wire_truth(&segments, drop).unwrap_or_else(|| {
        panic!(
            "no FIN from redis in the capture: {segments:?}\n{}",
            out.dump()
        )
    });
    let noticed = us(&drop["noticed_after_us"]);
    assert!(
        (noticed - truth).abs() <= 500.0,
        "drop: tcpbye +{noticed}µs; capture: redis's FIN {truth:.0}µs after the action"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// nginx with `listen … deferred` (TCP_DEFER_ACCEPT) and `keepalive_timeout 1s`:
/// with a request sent first every connection is accepted and judged. Each
/// reaction timed from the wire — its FIN at EOF, and its keepalive timeout
/// closing the silent ones — agrees with the test's own capture within 0.5 ms.
#[test]
fn nginx_with_deferred_accept_times_agree_with_the_capture() {
    let test = common::test_name!();
    if !require_root(test, "drop needs CAP_NET_ADMIN, the capture CAP_NET_RAW")
        || !require_tool(test, "nginx", &["-v"], "nginx not installed")
        || !require_tool(test, "tshark", &["-v"], "tshark not installed")
    {
        return;
    }
    let dir = scratch(test);
    let port = crate::check::free_port();
    let capture = Capture::start(&dir, port);
    let (server, nginx_dir) = crate::check::nginx(port, " deferred");
    let out = Cmd::tcpbye(&[
        "check",
        &server.addr,
        "--modes",
        "fin,half,drop,hang",
        "--request",
        "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
        "--wait",
        "3s",
        "--json",
    ])
    .deadline(Duration::from_secs(30))
    .run();
    out.expect_code(0);
    drop(server);
    let segments = capture.segments();
    let cases = out.objects("check-case");
    // The program is named where its process was found (on a loaded machine a
    // lookup can come too late for one case; the times do not depend on it).
    assert!(
        cases
            .iter()
            .all(|c| c["comm"].is_null() || c["comm"] == "nginx")
            && cases.iter().any(|c| c["comm"] == "nginx"),
        "{}",
        out.dump()
    );
    for case in cases {
        let mode = case["mode"].as_str().unwrap_or("?").to_owned();
        assert_eq!(case["reaction"], "closed", "{mode}: {}", out.dump());
        assert_eq!(case["noticed_by"], "wire", "{mode}: {}", out.dump());
        let truth = wire_truth(&segments, &case)
            .unwrap_or_else(|| panic!("{mode}: no FIN from nginx in the capture: {segments:?}"));
        let noticed = us(&case["noticed_after_us"]);
        assert!(
            (noticed - truth).abs() <= 500.0,
            "{mode}: tcpbye +{noticed}µs; capture: nginx's FIN {truth:.0}µs after the action"
        );
    }
    let _ = std::fs::remove_dir_all(&nginx_dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis `--tcp-keepalive 2` sets its own keepalive (2 s idle, 1 s interval, 3
/// probes). After `drop` its kernel sends the probes into the silence and then an
/// RST: tcpbye times that RST from the wire, and it agrees with the test's
/// capture within 0.5 ms; the prediction from the options read off its socket
/// was within a second of it.
#[test]
fn redis_own_short_keepalive_gives_up_when_the_capture_says() {
    let test = common::test_name!();
    if !require_root(test, "drop needs CAP_NET_ADMIN, the capture CAP_NET_RAW")
        || !require_tool(
            test,
            "redis-server",
            &["--version"],
            "redis-server not installed",
        )
        || !require_tool(test, "tshark", &["-v"], "tshark not installed")
    {
        return;
    }
    let dir = scratch(test);
    let port = free_port();
    let capture = Capture::start(&dir, port);
    let _redis = redis(port, &["--tcp-keepalive", "2"]);
    let addr = format!("127.0.0.1:{port}");
    let run = |wait: &str| {
        Cmd::tcpbye(&[
            "check",
            &addr,
            "--modes",
            "drop",
            "--request",
            "PING\\r\\n",
            "--wait",
            wait,
            "--json",
        ])
        .deadline(Duration::from_secs(30))
        .run()
    };
    let short = run("500ms");
    short.expect_code(0);
    let predicted = us(&short.objects("check-case")[0]["would_notice_after_us"]);
    let out = run("9s");
    out.expect_code(0);
    let segments = capture.segments();
    let cases = out.objects("check-case");
    let drop = case(&cases, "drop");
    assert_eq!(drop["reaction"], "kernel-gave-up", "{}", out.dump());
    assert_eq!(drop["noticed_by"], "wire", "{}", out.dump());
    let truth = wire_truth(&segments, drop).unwrap_or_else(|| {
        panic!(
            "no RST from redis in the capture: {segments:?}\n{}",
            out.dump()
        )
    });
    let noticed = us(&drop["noticed_after_us"]);
    assert!(
        (noticed - truth).abs() <= 500.0,
        "drop: tcpbye +{noticed}µs; capture: redis's RST {truth:.0}µs after the action"
    );
    assert!(
        (predicted - truth).abs() <= 1_000_000.0,
        "predicted +{predicted}µs from its own options; its RST came +{truth:.0}µs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
