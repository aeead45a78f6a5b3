//! `tcpbye check --pid PID` against running programs' own live connections: a
//! Python client with its own keepalive and a reconnect loop (its log of what
//! each recv() returned is the ground truth), a redis replica whose link to its
//! master is reset and dropped live, a client whose peer is in another network
//! namespace (an RST from a raw socket), a `kill -9` of tcpbye mid-check, and
//! the refusal of another user's program.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::topology::{FAR, Side, Topology};
use crate::common::{Cmd, Finished, Proc, require_root, require_tool, within};
use serde_json::Value;

/// An echo server: prints its port, answers every read with the same bytes.
const ECHO: &str = r#"
import socket, sys, threading
host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c):
    try:
        while True:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
    except OSError: pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A client of HOST:PORT with N workers, each holding one connection with its own
/// keepalive (TCP_KEEPIDLE 1 s, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 2); each reads until
/// EOF or an error, closes, waits 0.1 s and connects again. With `ping` a worker
/// also sends `ping` after each 0.2 s without data and logs each answer. Its log
/// (the file in argv[4], monotonic seconds) says what each worker's recv() returned, and when.
const CLIENT: &str = r#"
import os, socket, sys, threading, time
host, port = sys.argv[1].rsplit(":", 1)
n, ping = int(sys.argv[2]), sys.argv[3] == "ping"
out = open(sys.argv[4], "a", buffering=1)
log = lambda *what: print(*what, f"{time.monotonic():.6f}", file=out, flush=True)
def worker(i):
    while True:
        c = socket.create_connection((host, int(port)))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        if ping: c.settimeout(0.2)
        log("connected", i, c.getsockname()[1])
        try:
            while True:
                try:
                    d = c.recv(4096)
                except socket.timeout:
                    c.sendall(b"ping"); continue
                if not d:
                    log("eof", i); break
                log("reply", i)
        except OSError as e:
            log("error", i, e.errno)
        c.close(); log("closed", i)
        time.sleep(0.1)
for i in range(n):
    threading.Thread(target=worker, args=(i,), daemon=True).start()
print(os.getpid(), flush=True)
time.sleep(120)
"#;

/// One line of [`CLIENT`]'s log.
#[derive(Debug, Clone)]
struct Logged {
    what: String,
    worker: String,
    detail: Option<String>,
    at: f64,
}

fn parse_log(text: &str) -> Vec<Logged> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.last()?.parse().ok()?;
            Some(Logged {
                what: (*words.first()?).to_owned(),
                worker: (*words.get(1)?).to_owned(),
                detail: (words.len() > 3).then(|| words[2].to_owned()),
                at,
            })
        })
        .collect()
}

/// A python3 program from `script`; its first stdout line.
fn python(cmd: Cmd) -> (Proc, String) {
    let mut proc = cmd.deadline(Duration::from_secs(60)).spawn();
    let line = proc
        .try_stdout_line(within(5))
        .unwrap_or_else(|| panic!("the program printed nothing\n{}", proc.dump()));
    (proc, line.trim().to_owned())
}

/// A running [`CLIENT`]: killed when dropped, its log removed.
struct Client {
    _proc: Proc,
    log: std::path::PathBuf,
}

impl Client {
    /// Starts `cmd` (a [`CLIENT`] command line without its log path) and waits
    /// until its `n` workers are connected; returns it and its pid.
    fn start(mut argv: Vec<String>, n: usize, wrap: impl Fn(&[&str]) -> Cmd) -> (Self, u32) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("tcpbye-check-pid-{}-{seq}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        argv.push(log.to_string_lossy().into_owned());
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (proc, pid) = python(wrap(&args));
        let client = Self { _proc: proc, log };
        let deadline = within(5);
        while client
            .log()
            .iter()
            .filter(|l| l.what == "connected")
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "not connected: {:#?}",
                client.log()
            );
            std::thread::sleep(common::POLL);
        }
        (client, pid.parse().expect("a pid"))
    }

    fn log(&self) -> Vec<Logged> {
        parse_log(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An [`ECHO`] server on loopback and a [`CLIENT`] of it with `n` workers, all
/// connected: the server, the client and its pid.
fn echo_and_client(test: &str, n: usize, ping: bool) -> Option<(Proc, Client, u32)> {
    if !require_tool(test, "python3", &["--version"], "python3 not installed") {
        return None;
    }
    let (server, port) = python(Cmd::program("python3", &["-c", ECHO]));
    let mode = if ping { "ping" } else { "idle" };
    let argv = vec![
        "-c".to_owned(),
        CLIENT.to_owned(),
        format!("127.0.0.1:{port}"),
        n.to_string(),
        mode.to_owned(),
    ];
    let (client, pid) = Client::start(argv, n, |args| Cmd::program("python3", args));
    Some((server, client, pid))
}

fn check_pid(args: &[&str], deadline: Duration) -> Finished {
    let mut argv = vec!["check"];
    argv.extend_from_slice(args);
    Cmd::tcpbye(&argv).deadline(deadline).run()
}

fn case<'a>(cases: &'a [Value], mode: &str) -> &'a Value {
    cases
        .iter()
        .find(|c| c["mode"] == mode)
        .unwrap_or_else(|| panic!("no check-case for {mode}: {cases:#?}"))
}

fn port_of(v: &Value) -> String {
    v.as_str()
        .and_then(|s| s.parse::<SocketAddr>().ok())
        .map(|a| a.port().to_string())
        .unwrap_or_default()
}

/// The worker of the client whose connection used local `port`.
fn worker_of(log: &[Logged], port: &str) -> String {
    log.iter()
        .find(|l| l.what == "connected" && l.detail.as_deref() == Some(port))
        .map(|l| l.worker.clone())
        .unwrap_or_else(|| panic!("no worker connected from port {port}: {log:#?}"))
}

/// The first `what` the worker logged after connecting from `port`.
fn after_connect<'a>(log: &'a [Logged], port: &str, what: &str) -> Option<&'a Logged> {
    let start = log
        .iter()
        .position(|l| l.what == "connected" && l.detail.as_deref() == Some(port))?;
    let worker = &log[start].worker;
    log[start..]
        .iter()
        .find(|l| &l.worker == worker && l.what == what)
}

/// fin, half, rst and drop on four live connections of one client, each judged
/// against the client's own log: EOF for fin and half, ECONNRESET (errno 104) for
/// rst, ETIMEDOUT (110) from its keepalive for drop (1 + 2 × 1 s after its last
/// segment), and each worker connecting again 0.1 s after it closed.
#[test]
fn a_reconnecting_client_reads_what_its_peer_would_have_sent() {
    let test = common::test_name!();
    if !require_root(
        test,
        "duplicating another process's sockets needs ptrace rights",
    ) {
        return;
    }
    let Some((_server, client, pid)) = echo_and_client(test, 4, false) else {
        return;
    };
    let pid_text = pid.to_string();
    let out = check_pid(
        &[
            "--pid",
            &pid_text,
            "--modes",
            "fin,half,rst,drop",
            "--wait",
            "6s",
            "--json",
        ],
        Duration::from_secs(30),
    );
    out.expect_code(0);
    let cases = out.objects("check-case");
    let log = client.log();
    let mut noticed = HashMap::new();
    for mode in ["fin", "half", "rst", "drop"] {
        let c = case(&cases, mode);
        assert_eq!(c["reaction"], "reconnected", "{mode}: {}", out.dump());
        assert_eq!(c["pid"], pid, "{mode}");
        let port = port_of(&c["program_addr"]);
        let worker = worker_of(&log, &port);
        // After its keepalive gave up, this kernel has given the program ETIMEDOUT
        // (110) in some runs and EPIPE (32) in others.
        let (expected, errnos): (&str, &[Option<&str>]) = match mode {
            "fin" | "half" => ("eof", &[None]),
            "rst" => ("error", &[Some("104")]),
            _ => ("error", &[Some("110"), Some("32")]),
        };
        let seen = after_connect(&log, &port, expected)
            .unwrap_or_else(|| panic!("{mode}: worker {worker} logged no {expected}: {log:#?}"));
        assert!(errnos.contains(&seen.detail.as_deref()), "{mode}: {seen:?}");
        let closed = after_connect(&log, &port, "closed").expect("closed");
        let n = c["noticed_after_us"].as_u64().expect("noticed");
        let again = c["reconnected_after_us"].as_u64().expect("reconnected");
        // The worker closed, slept 0.1 s and connected again.
        assert!(
            (80_000..400_000).contains(&(again - n)),
            "{mode}: noticed +{n}µs, reconnected +{again}µs"
        );
        noticed.insert(mode, (n, seen.at, closed.at));
    }
    // The fast ones within milliseconds of the action.
    for mode in ["fin", "half", "rst"] {
        assert!(noticed[mode].0 < 100_000, "{mode}: {:?}", noticed[mode]);
    }
    // drop: its keepalive gave up after idle 1 s + 2 probes 1 s apart (≤ 3 s from its
    // last segment, which came before the check began).
    let (drop_us, drop_at, _) = noticed["drop"];
    assert!(
        (1_000_000..3_300_000).contains(&drop_us),
        "drop noticed after {drop_us}µs"
    );
    // Beside the client's own clock: drop came after rst by what its log says.
    let (rst_us, rst_at, _) = noticed["rst"];
    let logged = ((drop_at - rst_at) * 1e6) as i64;
    let measured = drop_us as i64 - rst_us as i64;
    assert!(
        (logged - measured).abs() < 30_000,
        "drop - rst: check says {measured}µs, the client's log {logged}µs"
    );
    let drop = case(&cases, "drop");
    assert_eq!(drop["settings"]["keepalive"]["idle_s"], 1, "{drop:#}");
    let summary = out.one("check-summary");
    assert_eq!(summary["program"], "running");
    assert_eq!(summary["reconnected"], 4);
    assert!(
        summary["unfiltered_after_wait"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}

/// `--dry-run` names the connection and touches nothing: the client's pings are
/// still answered on the same connection. Then `hang`: its pings are ACKed (its
/// keepalive never fires) but no answer arrives until tcpbye takes the filter off
/// after the wait, when the answers held back arrive.
#[test]
fn dry_run_touches_nothing_and_hang_holds_the_answers_back() {
    let test = common::test_name!();
    if !require_root(
        test,
        "duplicating another process's sockets needs ptrace rights",
    ) {
        return;
    }
    let Some((_server, client, pid)) = echo_and_client(test, 1, true) else {
        return;
    };
    let pid_text = pid.to_string();
    let dry = check_pid(
        &[
            "--pid",
            &pid_text,
            "--modes",
            "hang,rst",
            "--dry-run",
            "--json",
        ],
        Duration::from_secs(10),
    );
    dry.expect_code(0);
    let choices = dry.objects("check-choice");
    let hang = case(&choices, "hang");
    let port = port_of(&hang["program_addr"]);
    assert_eq!(hang["peer"], "this-host", "{hang:#}");
    assert!(hang["fd"].as_i64().is_some());
    let rst = case(&choices, "rst");
    assert!(rst["fd"].is_null(), "{rst:#}");
    assert!(
        rst["why"]
            .as_str()
            .is_some_and(|w| w.contains("no connection left")),
        "{rst:#}"
    );
    let replies = |log: &[Logged]| log.iter().filter(|l| l.what == "reply").count();
    let before = replies(&client.log());
    std::thread::sleep(Duration::from_millis(600));
    let log = client.log();
    assert!(
        replies(&log) > before,
        "no answer after the dry run: {log:#?}"
    );
    assert!(after_connect(&log, &port, "closed").is_none(), "{log:#?}");

    let started = Instant::now();
    let out = check_pid(
        &[
            "--pid", &pid_text, "--modes", "hang", "--wait", "3500ms", "--json",
        ],
        Duration::from_secs(20),
    );
    let ended = Instant::now();
    out.expect_code(0);
    let cases = out.objects("check-case");
    let c = case(&cases, "hang");
    assert_eq!(c["reaction"], "unnoticed", "{}", out.dump());
    let log = client.log();
    // Its keepalive (1 s + 2 × 1 s) would have ended a connection whose ACKs were
    // lost; no error and no new connection came.
    assert!(after_connect(&log, &port, "error").is_none(), "{log:#?}");
    assert!(
        log.iter().filter(|l| l.what == "connected").count() == 1,
        "{log:#?}"
    );
    // No answer during the wait (a margin for tcpbye's start and end)…
    let during: Vec<&Logged> = log
        .iter()
        .filter(|l| l.what == "reply")
        .filter(|l| {
            let t = l.at - mono_at(started);
            (0.3..3.3).contains(&t)
        })
        .collect();
    assert!(during.is_empty(), "answers during hang: {during:#?}");
    // …and the held-back answers once the filter is off, with the server's next
    // retransmission (its backed-off timer: 3.2 s apart by then).
    let summary = out.one("check-summary");
    assert_eq!(
        summary["unfiltered_after_wait"],
        serde_json::json!(["hang"])
    );
    let deadline = ended + Duration::from_secs(8);
    loop {
        let log = client.log();
        if log
            .iter()
            .any(|l| l.what == "reply" && l.at > mono_at(ended) - 0.05)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the filter came off: {log:#?}"
        );
        std::thread::sleep(common::POLL);
    }
}

/// Python's `time.monotonic()` and Rust's `Instant` read the same clock
/// (CLOCK_MONOTONIC): an instant in the client's log's seconds.
fn mono_at(at: Instant) -> f64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    let now_s = now.tv_sec() as f64 + now.tv_nsec() as f64 / 1e9;
    now_s - Instant::now().saturating_duration_since(at).as_secs_f64()
}

/// A redis replica's link to its master (`--replicaof`), ended live. `rst`: the
/// replica reads ECONNRESET and connects again from its once-a-second cron; `drop`
/// gets no connection of its own (the replica has one link). Then `drop` on the
/// new link: no data, no PING from the master (every 1 s) reaches it, and its
/// `repl-timeout 3` ends the link; it connects again.
#[test]
fn a_redis_replica_link_is_reset_and_dropped_live() {
    let test = common::test_name!();
    if !require_root(
        test,
        "duplicating another process's sockets needs ptrace rights",
    ) {
        return;
    }
    let Some(master) = crate::check::redis(test, &["--repl-ping-replica-period", "1"]) else {
        return;
    };
    let (host, port) = master.addr.rsplit_once(':').expect("HOST:PORT");
    let dir = std::env::temp_dir().join(format!("tcpbye-pid-replica-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A replica must listen somewhere: a unix socket, not a port.
    let socket = dir.join("redis.sock");
    let replica = Cmd::program(
        "redis-server",
        &[
            "--port",
            "0",
            "--unixsocket",
            socket.to_str().expect("utf-8 path"),
            "--replicaof",
            host,
            port,
            "--repl-timeout",
            "3",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().expect("utf-8 path"),
        ],
    )
    .deadline(Duration::from_secs(60))
    .spawn();
    let pid = replica.pid().to_string();
    // Its link is up once it holds a connection to the master.
    let linked = || {
        let out = check_pid(
            &[
                "--pid",
                &pid,
                "--peer",
                &master.addr,
                "--modes",
                "rst",
                "--dry-run",
                "--json",
            ],
            Duration::from_secs(10),
        );
        out.expect_code(0);
        out.objects("check-choice")[0]["fd"].as_i64().is_some()
    };
    let deadline = within(10);
    while !linked() {
        assert!(
            Instant::now() < deadline,
            "the replica never linked to its master"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = check_pid(
        &[
            "--pid",
            &pid,
            "--peer",
            &master.addr,
            "--modes",
            "rst,drop",
            "--wait",
            "3s",
            "--json",
        ],
        Duration::from_secs(20),
    );
    out.expect_code(0);
    let cases = out.objects("check-case");
    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "reconnected", "{}", out.dump());
    assert_eq!(rst["comm"], "redis-server");
    assert!(
        rst["noticed_after_us"]
            .as_u64()
            .is_some_and(|n| n < 100_000),
        "{rst:#}"
    );
    // Its cron connects again within a second (and a bit).
    assert!(
        rst["reconnected_after_us"]
            .as_u64()
            .is_some_and(|n| n < 1_600_000),
        "{rst:#}"
    );
    let drop = case(&cases, "drop");
    assert_eq!(drop["reaction"], "not-judged");
    assert!(
        drop["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("no connection left")),
        "{drop:#}"
    );
    let deadline = within(10);
    while !linked() {
        assert!(Instant::now() < deadline, "the replica never linked again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = check_pid(
        &[
            "--pid",
            &pid,
            "--peer",
            &master.addr,
            "--modes",
            "drop",
            "--wait",
            "8s",
            "--json",
        ],
        Duration::from_secs(30),
    );
    let _ = std::fs::remove_dir_all(&dir);
    out.expect_code(0);
    let cases = out.objects("check-case");
    let drop = case(&cases, "drop");
    assert_eq!(drop["reaction"], "reconnected", "{}", out.dump());
    // repl-timeout 3 s from the master's last PING, checked by its 1 s cron.
    let noticed = drop["noticed_after_us"].as_u64().expect("noticed");
    assert!((2_000_000..5_500_000).contains(&noticed), "{drop:#}");
    assert!(
        drop["reconnected_after_us"]
            .as_u64()
            .is_some_and(|r| r >= noticed)
    );
}

/// `kill -9` of tcpbye while a drop is under way leaves nothing host-wide: the
/// nftables ruleset and the list of network namespaces are as before, and no
/// descriptor of tcpbye lives on. The filter stays with the client's socket, as a
/// pulled cable would: its keepalive (1 + 2 × 1 s) still ends that connection,
/// and it connects again.
#[test]
fn kill_9_mid_check_leaves_only_the_filter_on_its_socket() {
    let test = common::test_name!();
    if !require_root(
        test,
        "duplicating another process's sockets needs ptrace rights",
    ) || !require_tool(test, "nft", &["--version"], "nftables not installed")
        || !require_tool(test, "ip", &["-V"], "iproute2 not installed")
    {
        return;
    }
    let Some((_server, client, pid)) = echo_and_client(test, 1, false) else {
        return;
    };
    let state = || {
        let nft = Cmd::program("nft", &["list", "ruleset"]).run().output();
        let netns = Cmd::program("ip", &["netns", "list"]).run().output();
        (nft.stdout, netns.stdout)
    };
    let before = state();
    let pid_text = pid.to_string();
    let started = Instant::now();
    let check = Cmd::tcpbye(&[
        "check", "--pid", &pid_text, "--modes", "drop", "--wait", "20s",
    ])
    .deadline(Duration::from_secs(30))
    .spawn();
    std::thread::sleep(Duration::from_millis(700));
    let tcpbye = check.pid();
    check.signal(nix::sys::signal::Signal::SIGKILL);
    let out = check.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        out.dump()
    );
    assert!(!std::path::Path::new(&format!("/proc/{tcpbye}")).exists());
    assert_eq!(state(), before, "nftables or network namespaces changed");
    // The client's keepalive gives up within 1 + 2 × 1 s of its last segment.
    let deadline = started + Duration::from_secs(6);
    loop {
        let log = client.log();
        if let Some(error) = log.iter().find(|l| l.what == "error") {
            assert!(
                error.at - mono_at(started) < 4.0,
                "ended {}s after the check started",
                error.at - mono_at(started)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped connection lived on: {log:#?}"
        );
        std::thread::sleep(common::POLL);
    }
    let deadline = within(3);
    while client
        .log()
        .iter()
        .filter(|l| l.what == "connected")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no new connection: {:#?}",
            client.log()
        );
        std::thread::sleep(common::POLL);
    }
}

/// Another user's program: `check --pid` as nobody against a process of root's
/// exits 4 with the step refused, and touches nothing.
#[test]
fn another_users_program_exits_4() {
    let test = common::test_name!();
    if !require_root(test, "dropping to user nobody needs root")
        || !require_tool(test, "setpriv", &["--version"], "util-linux not installed")
    {
        return;
    }
    let Some((_server, client, pid)) = echo_and_client(test, 1, false) else {
        return;
    };
    let out = common::unprivileged(&["check", "--pid", &pid.to_string(), "--modes", "rst"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("CAP_SYS_PTRACE"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !client
            .log()
            .iter()
            .any(|l| l.what == "error" || l.what == "eof"),
        "{:#?}",
        client.log()
    );
}

/// A client whose server is in another network namespace (through a router):
/// tcpbye enters the client's namespace, and its `rst` is an RST from the
/// server's address at the sequence number the client expects, sent from a raw
/// socket there: the client reads ECONNRESET and connects again. `fin` cannot be
/// done to it (the server's socket is not on the client's host).
#[test]
fn a_peer_elsewhere_is_reset_with_its_own_sequence_numbers() {
    let test = common::test_name!();
    if !require_root(test, "network namespaces need root")
        || !require_tool(test, "python3", &["--version"], "python3 not installed")
    {
        return;
    }
    let topo = Topology::router();
    let (_server, port) =
        python(topo.program(Side::Far, "python3", &["-c", ECHO, &FAR.to_string()]));
    let argv = vec![
        "-c".to_owned(),
        CLIENT.to_owned(),
        format!("{FAR}:{port}"),
        "1".to_owned(),
        "idle".to_owned(),
    ];
    let (client, pid) = Client::start(argv, 1, |args| topo.program(Side::Near, "python3", args));
    let out = check_pid(
        &[
            "--pid",
            &pid.to_string(),
            "--modes",
            "rst,fin",
            "--wait",
            "2s",
            "--json",
        ],
        Duration::from_secs(20),
    );
    out.expect_code(0);
    let cases = out.objects("check-case");
    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "reconnected", "{}", out.dump());
    assert!(
        rst["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("raw socket")),
        "{rst:#}"
    );
    let log = client.log();
    let port = port_of(&rst["program_addr"]);
    let error = after_connect(&log, &port, "error").expect("an error");
    assert_eq!(error.detail.as_deref(), Some("104"), "{log:#?}");
    let fin = case(&cases, "fin");
    assert_eq!(fin["reaction"], "not-judged");
    assert!(
        fin["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("only the peer's own program")),
        "{fin:#}"
    );
}
