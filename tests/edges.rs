//! Hard edges, each with real processes on loopback: a tiny open-file limit
//! (EMFILE), a flooding client, a silent client, SIGINT, stdout closed early,
//! IPv6, `--max-conns`, ports in use or closed, a server that goes away in the
//! middle of a churn, the TIME_WAIT a `fin` churn leaves behind, and stderr closed
//! too (`2>&1 | head -1`).
//!
//! Every child is killed and reaped when its guard drops, so a failing assertion
//! leaves no process behind. Every wait has a deadline and waits on something
//! observable (a stderr line, a report, an exit, a count in /proc); the only
//! sleeps are the measurement windows of the CPU and RSS checks and the short
//! steps of those deadline-bounded polls. Every tcpbye that observes has a
//! `--timeout`.

use crate::common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    Cmd, Netns, POLL, Proc, SOCKET_WAIT, Stdout, privilege_missing, require_root, require_tool,
    within,
};

/// `tcpbye serve ARGS` (ARGS include the address), up and listening.
fn serve(args: &[&str], stdout: Stdout) -> (Proc, SocketAddr) {
    let argv: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .collect();
    let mut p = Cmd::tcpbye(&argv).stdout(stdout).spawn();
    let addr = p.listening_by(within(5));
    (p, addr)
}

/// `tcpbye ARGS`, started.
fn tcpbye(args: &[&str], stdout: Stdout) -> Proc {
    Cmd::tcpbye(args).stdout(stdout).spawn()
}

// ---------------------------------------------------------------------------
// /proc, the test's own sockets, `ss`

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// utime + stime, in clock ticks (fields 14 and 15 of proc_pid_stat(5)).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat has a comm");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Polls `/proc/PID/fd` until `ok(count)` or the deadline; returns the last count.
fn wait_fds(pid: u32, deadline: Instant, ok: impl Fn(usize) -> bool) -> usize {
    loop {
        let n = open_fds(pid);
        if ok(n) || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(POLL);
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, SOCKET_WAIT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(SOCKET_WAIT)).expect("SO_RCVTIMEO");
    s
}

/// A loopback port that refuses connections: bound (so nobody else can take it
/// while the test runs) but not listening.
fn refusing_port() -> (socket2::Socket, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local_addr");
    (sock, addr)
}

fn summary_count(summary: &Value, object: &str, key: &str) -> u64 {
    summary[object][key].as_u64().unwrap_or(0)
}

/// Whether `ss` runs; if not, false after a loud SKIPPED line.
fn ss_available(test: &str) -> bool {
    require_tool(test, "ss", &["-V"], "`ss` (iproute2) is not installed")
}

/// Sockets in TIME_WAIT whose peer is `port` on loopback: the client side of
/// connections to a server on that port.
fn time_wait_to(port: u16) -> usize {
    let out = Cmd::program("ss", &["-tan", "state", "time-wait"])
        .run()
        .output();
    assert!(out.status.success(), "ss failed: {out:?}");
    let suffix = format!(":{port}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| {
            // Recv-Q Send-Q Local:Port Peer:Port (the state column is left out).
            l.split_whitespace()
                .nth(3)
                .is_some_and(|peer| peer.ends_with(&suffix))
        })
        .count()
}

// ---------------------------------------------------------------------------
// The edges

/// With 24 descriptors, `serve` can hold only a few connections. With 40 clients it
/// must say so once, back off instead of spinning on EMFILE, and resume accepting
/// as clients leave, until all 40 have been reported.
#[test]
fn emfile_backs_off_says_so_once_and_recovers() {
    const CLIENTS: usize = 40;
    // `ulimit -n` sets the soft and the hard limit, so serve cannot raise it.
    let mut serve = Cmd::tcpbye_via(
        &["sh", "-c", r#"ulimit -n 24 && exec "$0" "$@""#],
        &[
            "serve",
            "127.0.0.1:0",
            "--json",
            "--no-probe",
            "--timeout",
            "12s",
        ],
    )
    .spawn();
    let addr = serve.listening_by(within(5));
    let pid = serve.pid();

    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let notice = serve.stderr_line(within(5), |l| l.contains("Too many open files"));
    assert!(
        notice.contains("accept") && notice.contains("pausing"),
        "the EMFILE notice should say what tcpbye does: {notice}"
    );

    // Paused, not spinning: CPU over one second stays far below one core.
    let hz = clock_ticks_per_sec();
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    eprintln!("emfile: serve used {used} of {hz} ticks in 1 s at the fd limit");
    assert!(
        used * 100 / hz <= 20,
        "serve used {used} ticks of {hz} in 1 s while at the fd limit (spinning?)\n{}",
        serve.dump()
    );

    // Clients leave in waves: each report frees a descriptor for a waiting one.
    let ours: BTreeSet<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    let mut clients = clients.into_iter();
    for client in clients.by_ref().take(10) {
        drop(client);
    }
    let mut reported = BTreeSet::new();
    let deadline = within(8);
    while reported.len() < 10 {
        let r = serve.json_line(deadline);
        assert_eq!(r["kind"], "connection", "{}", serve.dump());
        assert_eq!(r["verdict"], "fin", "{r}");
        reported.insert(r["peer"].as_str().unwrap().parse::<SocketAddr>().unwrap());
    }
    drop(clients);
    while reported.len() < CLIENTS {
        let r = serve.json_line(deadline);
        assert_eq!(r["verdict"], "fin", "{r}");
        reported.insert(r["peer"].as_str().unwrap().parse::<SocketAddr>().unwrap());
    }
    assert_eq!(reported, ours, "every client reported once");

    serve.interrupt();
    serve.expect_exit(130, within(5));
    let summary = serve.summary();
    assert_eq!(summary["connections"], CLIENTS as u64, "{summary}");
    assert_eq!(summary_count(&summary, "verdicts", "fin"), CLIENTS as u64);
    let notices = serve
        .err_seen
        .iter()
        .filter(|l| l.contains("Too many open files"))
        .count();
    assert_eq!(
        notices,
        1,
        "one EMFILE notice, not a flood\n{}",
        serve.dump()
    );
}

/// A client that writes as fast as it can for a second: serve's memory stays
/// bounded, and it counts every byte.
#[test]
fn flooding_client_bounded_memory_every_byte_counted() {
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let (mut serve, addr) = serve(
        &["127.0.0.1:0", "--json", "--once", "--timeout", "10s"],
        Stdout::Lines,
    );
    let pid = serve.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(proc_status_kib(pid, "VmRSS:"));
                thread::sleep(Duration::from_millis(20));
            }
            max
        })
    };

    let mut client = connect(addr);
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written: u64 = 0;
    let flood_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < flood_until {
        client.write_all(&chunk).expect("flood write");
        written += chunk.len() as u64;
    }
    // A graceful end: FIN after the data, then read until serve closes.
    client.shutdown(Shutdown::Write).expect("shutdown");
    let mut sink = Vec::new();
    let _ = client.read_to_end(&mut sink);
    stop.store(true, Ordering::Relaxed);
    let max_rss = sampler.join().expect("sampler");

    let report = serve.json_line(within(8));
    serve.expect_exit(0, within(5));
    eprintln!("flood: {written} bytes written in 1 s, serve's RSS peaked at {max_rss} KiB");
    assert!(
        written > 1 << 20,
        "the client wrote only {written} bytes in 1 s"
    );
    assert!(
        max_rss < RSS_LIMIT_KIB,
        "serve's RSS reached {max_rss} KiB during the flood\n{}",
        serve.dump()
    );
    assert_eq!(report["verdict"], "fin", "{report}");
    assert_eq!(
        report["bytes_received"].as_u64(),
        Some(written),
        "bytes_received differs from what the client wrote ({written})"
    );
    assert!(
        report["events"].as_array().unwrap().len() <= 512,
        "events are bounded"
    );
}

/// A client that connects and never sends or closes: `open` at `--timeout`.
#[test]
fn silent_client_is_open_at_timeout() {
    let started = Instant::now();
    let (mut serve, addr) = serve(
        &["127.0.0.1:0", "--json", "--once", "--timeout", "1s"],
        Stdout::Lines,
    );
    let client = connect(addr);
    let report = serve.json_line(within(6));
    serve.expect_exit(0, within(5));
    drop(client);
    assert_eq!(report["verdict"], "open", "{report}");
    assert_eq!(report["closer"], Value::Null, "{report}");
    assert_eq!(report["detected_after_us"], Value::Null, "{report}");
    assert_eq!(report["bytes_received"], 0, "{report}");
    let kinds: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"timeout"), "a timeout event: {kinds:?}");
    let duration = report["duration_us"].as_u64().unwrap();
    assert!(
        (1_000_000..3_000_000).contains(&duration),
        "observed for about --timeout 1s, not {duration} µs"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// SIGINT with connections open: exit 130 after a summary that counts them as `open`.
#[test]
fn sigint_summarises_open_connections() {
    let (mut serve, addr) = serve(
        &["127.0.0.1:0", "--summary", "--json", "--timeout", "10s"],
        Stdout::Lines,
    );
    let pid = serve.pid();
    let base = open_fds(pid);
    let clients: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    let held = wait_fds(pid, within(5), |n| n >= base + 3);
    assert!(held >= base + 3, "serve accepted {} of 3", held - base);

    serve.interrupt();
    serve.expect_exit(130, within(5));
    drop(clients);
    let lines = serve.json_lines();
    assert_eq!(
        lines.len(),
        1,
        "--summary prints only the summary\n{}",
        serve.dump()
    );
    let summary = serve.summary();
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert_eq!(summary["connections"], 3, "{summary}");
    assert_eq!(summary["established"], 3, "{summary}");
    assert_eq!(
        summary["verdicts"],
        serde_json::json!({"open": 3}),
        "{summary}"
    );
}

/// stdout closed before `lab` writes (`| head` that has gone): quiet exit 0.
#[test]
fn lab_with_stdout_closed_exits_quietly() {
    let mut lab = tcpbye(
        &["lab", "--runs", "1", "--modes", "fin", "--settings", "none"],
        Stdout::ClosedAtOnce,
    );
    lab.expect_exit(0, within(12));
    assert!(
        lab.err_seen.iter().all(|l| !l.contains("Broken pipe")),
        "{}",
        lab.dump()
    );
}

/// `serve --json | head -1`: the first report gets through; at the next one
/// serve finds stdout gone and stops quietly with exit 0. The same for a churn
/// whose summary has nowhere to go.
#[test]
fn serve_with_stdout_closed_after_first_line_stops_quietly() {
    let (mut serve, addr) = serve(
        &["127.0.0.1:0", "--json", "--no-probe", "--timeout", "5s"],
        Stdout::ClosedAfterFirstLine,
    );
    drop(connect(addr));
    let first = serve.json_line(within(5));
    assert_eq!(first["kind"], "connection", "{first}");

    // Now the reader is gone. Another connection produces a report that cannot be written.
    let mut churn = tcpbye(
        &[
            "connect",
            &addr.to_string(),
            "--count",
            "3",
            "--json",
            "--timeout",
            "5s",
        ],
        Stdout::ClosedAtOnce,
    );
    churn.expect_exit(0, within(8));
    serve.expect_exit(0, within(5));
    for p in [&serve, &churn] {
        assert!(
            p.err_seen.iter().all(|l| !l.contains("Broken pipe")),
            "{}",
            p.dump()
        );
    }
}

/// IPv6 loopback end to end: an RST from `connect` is seen as `rst` by `serve`.
#[test]
fn ipv6_loopback_rst() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        common::host_lacks(
            "ipv6_loopback_rst",
            common::Host::Ipv6,
            &format!("cannot bind [::1]:0 ({e})"),
        );
        return;
    }
    let (mut serve, addr) = serve(
        &["[::1]:0", "--json", "--once", "--timeout", "5s"],
        Stdout::Lines,
    );
    assert!(addr.is_ipv6(), "{addr}");
    let mut client = tcpbye(
        &[
            "connect",
            &addr.to_string(),
            "--close",
            "rst",
            "--json",
            "--timeout",
            "5s",
        ],
        Stdout::Lines,
    );
    client.expect_exit(0, within(8));
    let report = serve.json_line(within(5));
    serve.expect_exit(0, within(5));
    assert_eq!(report["verdict"], "rst", "{report}");
    assert_eq!(report["closer"], "peer", "{report}");
    assert!(
        report["peer"].as_str().unwrap().starts_with("[::1]:"),
        "{report}"
    );
    assert_eq!(report["local"], addr.to_string().as_str(), "{report}");
    let ours = &client.json_lines()[0];
    assert_eq!(ours["verdict"], "rst", "{ours}");
    assert_eq!(ours["peer"], report["local"]);
    assert_eq!(ours["local"], report["peer"]);
}

/// `--max-conns 1`: a second client while the first is observed is closed at
/// once, with a notice; the first still gets its report.
#[test]
fn max_conns_closes_the_extra_client_at_once() {
    let (mut serve, addr) = serve(
        &[
            "127.0.0.1:0",
            "--max-conns",
            "1",
            "--json",
            "--once",
            "--timeout",
            "8s",
        ],
        Stdout::Lines,
    );
    let first = connect(addr);
    let mut second = connect(addr);
    let second_addr = second.local_addr().unwrap();
    let mut buf = [0u8; 16];
    let seen = second.read(&mut buf);
    assert!(
        matches!(&seen, Ok(0)) || matches!(&seen, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the second client should see EOF or a reset at once, saw {seen:?}"
    );
    let notice = serve.stderr_line(within(5), |l| l.contains("--max-conns 1 reached"));
    assert!(
        notice.contains(&second_addr.to_string()),
        "the notice names the second client {second_addr}: {notice}"
    );

    let first_addr = first.local_addr().unwrap();
    drop(first);
    let report = serve.json_line(within(5));
    serve.expect_exit(0, within(5));
    assert_eq!(report["verdict"], "fin", "{report}");
    assert_eq!(report["peer"], first_addr.to_string().as_str(), "{report}");
    let summary = serve.summary();
    assert_eq!(
        summary["connections"], 1,
        "the closed one is not reported: {summary}"
    );
}

/// A port someone else listens on: exit 3, one line naming the cause.
#[test]
fn port_in_use_exits_3_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let mut serve = tcpbye(
        &["serve", &addr, "--json", "--timeout", "2s"],
        Stdout::Lines,
    );
    serve.expect_exit(3, within(5));
    // A notice about a low open-file limit depends on the machine, not on this edge.
    let lines: Vec<&String> = serve
        .err_seen
        .iter()
        .filter(|l| !l.contains("open-file limit"))
        .collect();
    assert_eq!(lines.len(), 1, "one stderr line\n{}", serve.dump());
    assert!(lines[0].starts_with("tcpbye: "), "{}", serve.dump());
    assert!(
        lines[0].contains("Address already in use"),
        "{}",
        serve.dump()
    );
    assert!(
        lines[0].contains(&addr),
        "the line names {addr}\n{}",
        serve.dump()
    );
    assert!(serve.out_seen.is_empty(), "{}", serve.dump());
}

/// One connect to a port nobody listens on: exit 3 and one line.
#[test]
fn connection_refused_exits_3() {
    let (_reserved, addr) = refusing_port();
    let mut client = tcpbye(
        &["connect", &addr.to_string(), "--timeout", "2s"],
        Stdout::Lines,
    );
    client.expect_exit(3, within(5));
    assert_eq!(client.err_seen.len(), 1, "{}", client.dump());
    assert!(client.err_seen[0].contains("refused"), "{}", client.dump());
    assert!(
        client.err_seen[0].contains("ECONNREFUSED"),
        "{}",
        client.dump()
    );
}

/// A churn against a port nobody listens on: every attempt counted by errno,
/// exit 3, a hint and one failure line.
#[test]
fn churn_against_a_closed_port() {
    let (_reserved, addr) = refusing_port();
    let mut churn = tcpbye(
        &[
            "connect",
            &addr.to_string(),
            "--count",
            "20",
            "--concurrency",
            "4",
            "--json",
            "--timeout",
            "2s",
        ],
        Stdout::Lines,
    );
    churn.expect_exit(3, within(8));
    let lines = churn.json_lines();
    assert_eq!(lines.len(), 1, "only the summary\n{}", churn.dump());
    let s = &lines[0];
    assert_eq!(s["connections"], 20, "{s}");
    assert_eq!(s["established"], 0, "{s}");
    assert_eq!(
        s["connect_errors"],
        serde_json::json!({"ECONNREFUSED": 20}),
        "{s}"
    );
    assert_eq!(s["verdicts"], serde_json::json!({"refused": 20}), "{s}");
    let failures = churn
        .err_seen
        .iter()
        .filter(|l| l.contains("none of 20 connections was established"))
        .count();
    assert_eq!(failures, 1, "{}", churn.dump());
    assert!(
        churn
            .err_seen
            .iter()
            .any(|l| l.contains("ECONNREFUSED: nothing listens")),
        "the ECONNREFUSED hint\n{}",
        churn.dump()
    );
    assert!(churn.err_seen.len() <= 2, "{}", churn.dump());
}

/// A churn whose server goes away half-way: some established, the rest refused,
/// both counted; exit 0 because some got through.
#[test]
fn churn_with_server_gone_half_way() {
    const COUNT: u64 = 40;
    const SERVED: usize = 10;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    // Linux honours SO_RCVTIMEO in accept(): the thread cannot hang.
    socket2::SockRef::from(&listener)
        .set_read_timeout(Some(SOCKET_WAIT))
        .expect("SO_RCVTIMEO");
    let server = thread::spawn(move || {
        let mut accepted = 0;
        while accepted < SERVED {
            match listener.accept() {
                Ok((stream, _)) => {
                    accepted += 1;
                    drop(stream);
                }
                Err(_) => break,
            }
        }
        // The listener closes here: every later connect is refused.
        accepted
    });
    let mut churn = tcpbye(
        &[
            "connect",
            &addr.to_string(),
            "--count",
            &COUNT.to_string(),
            "--rate",
            "100",
            "--json",
            "--timeout",
            "2s",
        ],
        Stdout::Lines,
    );
    churn.expect_exit(0, within(10));
    assert_eq!(
        server.join().unwrap(),
        SERVED,
        "the server thread accepted {SERVED}"
    );
    let s = churn.summary();
    eprintln!("server gone half-way: {s}");
    let established = s["established"].as_u64().unwrap();
    let refused = summary_count(&s, "connect_errors", "ECONNREFUSED");
    let errors: u64 = s["connect_errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(s["connections"], COUNT, "{s}");
    assert!(established >= SERVED as u64, "{s}");
    assert!(refused >= 1, "{s}");
    assert_eq!(
        established + errors,
        COUNT,
        "each attempt counted once: {s}"
    );
    assert_eq!(summary_count(&s, "verdicts", "refused"), refused, "{s}");
    assert!(
        churn.err_seen.iter().any(|l| l.contains("ECONNREFUSED")),
        "{}",
        churn.dump()
    );
}

/// The client side of a `fin` churn ends in TIME_WAIT; an `rst` churn leaves none.
#[test]
fn fin_churn_leaves_time_wait_rst_does_not() {
    if !ss_available("fin_churn_leaves_time_wait_rst_does_not") {
        return;
    }
    const COUNT: usize = 20;
    // Loopback reuses a TIME_WAIT port for a new connection (tcp_tw_reuse=2, the
    // default), so a later connect of the churn may take over an earlier one's
    // TIME_WAIT: most, not all, remain.
    const MOST: usize = COUNT / 2;
    let mut seen = Vec::new();
    for mode in ["fin", "rst"] {
        // Without probe writes serve closes after the client, so the client's
        // close is the active one (a probe would draw an RST from the closed client).
        let (mut serve, addr) = serve(
            &[
                "127.0.0.1:0",
                "--summary",
                "--json",
                "--no-probe",
                "--timeout",
                "10s",
            ],
            Stdout::Lines,
        );
        let pid = serve.pid();
        let base = open_fds(pid);
        let before = time_wait_to(addr.port());
        let mut churn = tcpbye(
            &[
                "connect",
                &addr.to_string(),
                "--count",
                &COUNT.to_string(),
                "--concurrency",
                "4",
                "--close",
                mode,
                "--json",
                "--timeout",
                "5s",
            ],
            Stdout::Lines,
        );
        churn.expect_exit(0, within(8));
        assert_eq!(
            churn.summary()["established"],
            COUNT as u64,
            "{}",
            churn.dump()
        );
        // serve has closed its side of every connection…
        let left = wait_fds(pid, within(5), |n| n <= base);
        assert!(
            left <= base,
            "serve still holds {} connections",
            left - base
        );
        // …and the client's TIME_WAIT sockets appear when serve's FIN arrives.
        let deadline = within(3);
        let mut after = time_wait_to(addr.port());
        while mode == "fin" && after < before + MOST && Instant::now() < deadline {
            thread::sleep(POLL);
            after = time_wait_to(addr.port());
        }
        serve.interrupt();
        serve.expect_exit(130, within(5));
        let summary = serve.summary();
        assert_eq!(
            summary_count(&summary, "verdicts", mode),
            COUNT as u64,
            "serve saw every {mode}: {summary}"
        );
        eprintln!(
            "{mode} churn: TIME_WAIT to port {}: {before} → {after}",
            addr.port()
        );
        seen.push((mode, before, after));
    }
    let (_, fin_before, fin_after) = seen[0];
    let (_, rst_before, rst_after) = seen[1];
    assert!(
        fin_after >= fin_before + MOST,
        "fin churn: TIME_WAIT to the server port went {fin_before} → {fin_after}, want at least +{MOST}"
    );
    assert_eq!(
        rst_after, rst_before,
        "rst churn: TIME_WAIT to the server port went {rst_before} → {rst_after}"
    );
}

/// `tcpbye serve 2>&1 | head -1`: stdout and stderr share one pipe, whose reader
/// goes away after the `listening on` line. A later notice (here `--max-conns`)
/// must not panic; serve goes on until a report finds stdout gone, then exits 0.
#[test]
fn serve_with_stderr_closed_does_not_panic() {
    // `head -1`: read one line, then close the only read end.
    let mut serve = Cmd::tcpbye(&[
        "serve",
        "127.0.0.1:0",
        "--max-conns",
        "1",
        "--timeout",
        "2s",
    ])
    .stdout(Stdout::SharedWithStderrClosedAfterFirstLine)
    .spawn();
    let addr = serve.listening();
    let first = connect(addr);
    let second = connect(addr); // closed at once, with a notice on stderr
    let status = serve.wait(within(8));
    drop((first, second));
    assert_eq!(
        status.code(),
        Some(0),
        "serve with stderr closed: {status} (101 is a Rust panic)"
    );
}

/// Ephemeral ports exhausted: in a network namespace of its own (where the port
/// range is its own to narrow) two local ports allow two `fin` connections, whose
/// TIME_WAIT then holds both ports: the rest fail EADDRNOTAVAIL, counted and
/// explained, never a crash or a spin.
#[test]
fn ephemeral_port_exhaustion_is_counted_with_a_hint() {
    const TEST: &str = "ephemeral_port_exhaustion_is_counted_with_a_hint";
    if !require_root(TEST, "needs root for a network namespace")
        || !require_tool(TEST, "ip", &["-V"], "no `ip` (iproute2) here")
    {
        return;
    }
    let ns = Netns::new();
    let narrowed = ns
        .program(
            "sh",
            &[
                "-c",
                "echo '40000 40001' > /proc/sys/net/ipv4/ip_local_port_range",
            ],
        )
        .run();
    if narrowed.code != Some(0) {
        privilege_missing(
            TEST,
            &format!("cannot narrow the namespace's local port range\n{narrowed}"),
        );
        return;
    }
    // A fixed port: an ephemeral one would take one of the two.
    let mut serve = ns
        .tcpbye(&["serve", "127.0.0.1:7007", "--summary", "--no-probe"])
        .spawn();
    serve.listening_by(within(5));
    let out = ns
        .tcpbye(&[
            "connect",
            "127.0.0.1:7007",
            "--count",
            "6",
            "--close",
            "fin",
            "--json",
        ])
        .deadline(Duration::from_secs(20))
        .run()
        .output();
    serve.interrupt();
    serve.wait(within(5));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "some connections were made: {stdout} {stderr}"
    );
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &Value| v["kind"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert_eq!(summary["connections"], 6);
    assert_eq!(summary["established"], 2, "{summary}");
    assert_eq!(summary["connect_errors"]["EADDRNOTAVAIL"], 4, "{summary}");
    assert!(stderr.contains("ephemeral ports exhausted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
