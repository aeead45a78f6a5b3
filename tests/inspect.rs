//! `tcpbye inspect PID` against real running programs (redis-server, Python
//! clients and servers, one in a network namespace of its own): each test asserts
//! what the program really set or did — its keepalive, its pool, a CLOSE_WAIT it
//! never closes, a dead socket it still holds — and the refusals.

use crate::common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::check::LEAKER;
use crate::common::{Cmd, Finished, Netns, Proc, require_root, require_tool, within};
use serde_json::Value;

/// `tcpbye inspect ARGS`, run to its end.
fn inspect(args: &[&str]) -> Finished {
    let mut argv = vec!["inspect"];
    argv.extend_from_slice(args);
    Cmd::tcpbye(&argv).deadline(Duration::from_secs(20)).run()
}

/// `tcpbye inspect PID --json`, which must exit 0: its connections and summary.
fn inspect_json(pid: u32) -> (Vec<Value>, Value) {
    let out = inspect(&[&pid.to_string(), "--json"]);
    out.expect_code(0);
    (out.objects("inspect-conn"), out.one("inspect-summary"))
}

/// Runs `inspect_json(pid)` until `done` holds for its connections, within 5 s.
fn inspect_until(pid: u32, what: &str, done: impl Fn(&[Value]) -> bool) -> (Vec<Value>, Value) {
    let deadline = within(5);
    loop {
        let (conns, summary) = inspect_json(pid);
        if done(&conns) {
            return (conns, summary);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within 5 s: {conns:#?}"
        );
        std::thread::sleep(common::POLL);
    }
}

/// A python3 program from `script`, whose first stdout line is returned; `None`
/// (after a loud skip) without python3.
fn python(test: &str, script: &str, args: &[&str]) -> Option<(Proc, String)> {
    if !require_tool(test, "python3", &["--version"], "python3 not installed") {
        return None;
    }
    let mut argv = vec!["-c", script];
    argv.extend_from_slice(args);
    let proc = Cmd::program("python3", &argv)
        .deadline(Duration::from_secs(30))
        .spawn();
    Some(first_line(proc))
}

fn first_line(mut proc: Proc) -> (Proc, String) {
    let line = proc
        .try_stdout_line(within(5))
        .unwrap_or_else(|| panic!("the program printed nothing\n{}", proc.dump()));
    (proc, line.trim().to_owned())
}

fn addr(v: &Value) -> Option<SocketAddr> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// Connects `n` times to the address in argv[1] and holds every connection,
/// never reading; prints its pid once all are up.
const POOL: &str = r#"
import os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
pool = [socket.create_connection((host, int(port))) for _ in range(int(sys.argv[2]))]
print(os.getpid(), flush=True)
time.sleep(60)
"#;

/// A listener of the test's, and a [`POOL`] program holding `n` connections to
/// it: the listener, its address, the program and its pid.
fn pool(test: &str, n: usize) -> Option<(TcpListener, SocketAddr, Proc, u32)> {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = server.local_addr().expect("addr");
    let (client, pid) = python(test, POOL, &[&target.to_string(), &n.to_string()])?;
    Some((server, target, client, pid.parse().expect("a pid")))
}

/// A pair on loopback inside one process (listener, client, accepted), held;
/// prints its pid and its listener's port.
const PAIR: &str = r#"
import os, socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
print(os.getpid(), s.getsockname()[1], flush=True)
time.sleep(60)
"#;

/// redis-server with `--tcp-keepalive 300` sets its own keepalive on each
/// client's socket: TCP_KEEPIDLE 300 s, TCP_KEEPINTVL 100 s (a third),
/// TCP_KEEPCNT 3 (its anetKeepAlive). inspect reads those from the socket and
/// predicts from them and the socket's timer: a pulled cable ≈ 300 + 3 × 100 s,
/// a rebooted peer at the first probe ≈ 300 s, a hung one never. `--port` finds
/// the same process.
#[test]
fn redis_keepalive_300_is_read_from_its_socket() {
    let test = common::test_name!();
    let Some(redis) = crate::check::redis(test, &["--tcp-keepalive", "300"]) else {
        return;
    };
    let client = TcpStream::connect(&redis.addr).expect("connect to redis");
    let port = client.peer_addr().expect("peer").port();
    let port_text = port.to_string();
    // A PING answered: redis has accepted the connection and set its options.
    std::io::Write::write_all(&mut &client, b"PING\r\n").expect("send PING");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut pong = [0u8; 7];
    std::io::Read::read_exact(&mut &client, &mut pong).expect("+PONG");
    assert_eq!(&pong, b"+PONG\r\n");
    let mine = client.local_addr().expect("local addr");

    let (conns, summary) = inspect_json(redis.pid());
    let conn = conns
        .iter()
        .find(|c| addr(&c["remote"]) == Some(mine))
        .unwrap_or_else(|| panic!("no inspect-conn for {mine}: {conns:#?}"));
    assert_eq!(conn["state"], "ESTABLISHED");
    assert_eq!(
        conn["keepalive"],
        serde_json::json!({"idle_s": 300, "intvl_s": 100, "cnt": 3}),
        "{conn:#}"
    );
    assert!(conn["user_timeout_ms"].is_null());
    let timer = conn["timer"].as_str().unwrap_or("");
    assert!(timer.starts_with("keepalive,"), "{conn:#}");
    let would = &conn["would_notice_after_us"];
    let pulled = would["drop"].as_u64().expect("a drop prediction");
    let reboot = would["reboot"].as_u64().expect("a reboot prediction");
    // Its timer was armed for 300 s when redis set keepalive, a moment ago.
    assert!(
        (590_000_000..=600_000_000).contains(&pulled),
        "drop: 300 s + 3 × 100 s from the timer's arming, got {pulled} µs"
    );
    assert!(
        (290_000_000..=300_000_000).contains(&reboot),
        "reboot: the first probe ≈ 300 s, got {reboot} µs"
    );
    assert_eq!(
        pulled - reboot,
        300_000_000,
        "3 × 100 s after the first probe"
    );
    assert!(would["hang"].is_null());
    assert!(
        conn["prediction"]["hang"]
            .as_str()
            .is_some_and(|p| p.contains("only an application timeout can")),
        "{conn:#}"
    );
    assert!(conn["leak"].is_null());
    assert_eq!(summary["pids"], serde_json::json!([redis.pid()]));
    assert_eq!(summary["names"][0], "redis-server");
    assert_eq!(summary["other_netns"], false);
    let listening = format!("127.0.0.1:{port}");
    assert_eq!(summary["listening"], serde_json::json!([listening]));

    // The table: the clients of its port on one line, keepalive and predictions.
    let table = inspect(&[&redis.pid().to_string()]);
    table.expect_code(0);
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains(&format!("clients 127.0.0.1 → :{port}")))
        .unwrap_or_else(|| panic!("no line for redis's clients\n{}", table.dump()));
    assert!(line.contains("300s/100s×3"), "{line}");

    // --port finds redis by its listener.
    let by_port = inspect(&["--port", &port_text, "--json"]);
    by_port.expect_code(0);
    assert_eq!(
        by_port.one("inspect-summary")["pids"],
        serde_json::json!([redis.pid()])
    );
    drop(client);
}

/// A pool: one program with 5 connections to one server is one line of the
/// table (5 connections, no keepalive: nothing would notice a silent ending) and
/// 5 `inspect-conn` objects.
#[test]
fn a_pool_of_connections_to_one_server_is_one_line() {
    let test = common::test_name!();
    let Some((server, target, client, pid)) = pool(test, 5) else {
        return;
    };
    let (conns, summary) = inspect_json(pid);
    assert_eq!(conns.len(), 5, "{conns:#?}");
    for c in &conns {
        assert_eq!(addr(&c["remote"]), Some(target), "{c:#}");
        assert_eq!(c["state"], "ESTABLISHED");
        assert!(c["keepalive"].is_null(), "python sets no keepalive: {c:#}");
        assert_eq!(
            c["would_notice_after_us"],
            serde_json::json!({"drop": null, "reboot": null, "hang": null})
        );
        assert!(
            c["prediction"]["drop"]
                .as_str()
                .is_some_and(|p| p.starts_with("no kernel mechanism will notice")),
            "{c:#}"
        );
    }
    assert_eq!(summary["connections"], 5);
    assert_eq!(summary["peers"], 1);

    let table = inspect(&[&pid.to_string()]);
    table.expect_code(0);
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .filter(|l| l.starts_with(' ') && !l.starts_with("  "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "a header and one line\n{}", table.dump());
    assert_eq!(
        rows[1],
        [
            target.to_string().as_str(),
            "5",
            "ESTABLISHED",
            "off",
            "never",
            "never",
            "never",
            "-"
        ],
        "{}",
        table.dump()
    );
    drop(client);
    drop(server);
}

/// A program whose peer closed and which never closes its socket: a CLOSE_WAIT
/// leak, with how long it has been in CLOSE_WAIT (the peer's FIN, the last ACK
/// that came: at least as long as since the test closed, never longer).
#[test]
fn a_close_wait_the_program_never_closes_is_a_leak() {
    let test = common::test_name!();
    let Some((server, port)) = python(test, LEAKER, &[]) else {
        return;
    };
    let stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    let mine = stream.local_addr().expect("addr");
    drop(stream);
    let closed = Instant::now();
    let (conns, summary) = inspect_until(server.pid(), "CLOSE_WAIT for 300 ms", |conns| {
        conns
            .iter()
            .any(|c| addr(&c["remote"]) == Some(mine) && c["close_wait_ms"].as_u64() >= Some(300))
    });
    let since = closed.elapsed();
    let conn = conns
        .iter()
        .find(|c| addr(&c["remote"]) == Some(mine))
        .expect("its connection");
    assert_eq!(conn["state"], "CLOSE_WAIT");
    assert_eq!(conn["leak"], "close-wait");
    let ms = conn["close_wait_ms"].as_u64().expect("close_wait_ms");
    assert!(
        u128::from(ms) <= since.as_millis() + 10,
        "CLOSE_WAIT for {ms} ms, but the test closed {since:?} ago"
    );
    assert!(
        conn["leak_detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("CLOSE_WAIT for")),
        "{conn:#}"
    );
    assert_eq!(summary["close_wait"], 1);
}

/// A program whose connection was reset and which still holds the descriptor: the
/// socket is gone from the kernel's tables, its descriptor is a dead one.
#[test]
fn a_reset_socket_still_held_is_a_dead_descriptor() {
    let test = common::test_name!();
    let Some((server, _target, client, pid)) = pool(test, 1) else {
        return;
    };
    let (accepted, peer) = server.accept().expect("accept");
    socket2::SockRef::from(&accepted)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(accepted);
    let (conns, summary) = inspect_until(pid, "a dead descriptor", |conns| {
        conns.iter().any(|c| c["leak"] == "dead-descriptor")
    });
    assert_eq!(conns.len(), 1, "{conns:#?}");
    let conn = &conns[0];
    assert_eq!(conn["state"], "CLOSE");
    assert!(conn["remote"].is_null(), "{conn:#}");
    assert_eq!(addr(&conn["local"]), Some(peer), "{conn:#}");
    assert_eq!(summary["dead_descriptors"], 1);
    drop(client);
}

/// A program in a network namespace of its own: tcpbye enters it for sock_diag
/// and finds its connection (both ends) and its listener, which tcpbye's own
/// namespace does not have.
#[test]
fn a_program_in_another_network_namespace_is_inspected_inside_it() {
    let test = common::test_name!();
    if !require_root(test, "a network namespace needs root")
        || !require_tool(test, "python3", &["--version"], "python3 not installed")
    {
        return;
    }
    let ns = Netns::new();
    let proc = ns
        .program("python3", &["-c", PAIR])
        .deadline(Duration::from_secs(30))
        .spawn();
    let (proc, line) = first_line(proc);
    let (pid, port) = line.split_once(' ').expect("PID PORT");
    let pid: u32 = pid.parse().expect("a pid");
    let port: u16 = port.parse().expect("a port");
    let (conns, summary) = inspect_json(pid);
    assert_eq!(summary["other_netns"], true, "{summary:#}");
    let listening: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert_eq!(
        summary["listening"],
        serde_json::json!([listening.to_string()])
    );
    assert_eq!(conns.len(), 2, "{conns:#?}");
    let server_side = conns
        .iter()
        .find(|c| addr(&c["local"]) == Some(listening))
        .unwrap_or_else(|| panic!("the accepted end: {conns:#?}"));
    let client_side = conns
        .iter()
        .find(|c| addr(&c["remote"]) == Some(listening))
        .unwrap_or_else(|| panic!("the connecting end: {conns:#?}"));
    assert_eq!(server_side["remote"], client_side["local"]);
    for c in [server_side, client_side] {
        assert_eq!(c["state"], "ESTABLISHED");
        assert_eq!(c["options_read"], true);
    }
    // Not in tcpbye's own namespace: `--port` looks there and finds nothing.
    if !tcp_port_in_use(port) {
        inspect(&["--port", &port.to_string()])
            .expect_one_error_line(3, "no process holds a TCP socket on local port");
    }
    drop(proc);
}

/// Whether anything in this network namespace uses TCP port `port` (binding it fails).
fn tcp_port_in_use(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

#[test]
fn a_pid_that_does_not_exist_is_one_line_and_exit_3() {
    // Process ids are below pid_max: this one cannot exist.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(4_194_304);
    inspect(&[&pid_max.to_string()])
        .expect_one_error_line(3, &format!("no process with pid {pid_max}"));
    inspect(&["0"]).expect_usage_error("0");
    inspect(&["1", "--port", "80"]).expect_usage_error("cannot be used with");
}

/// tcpbye as nobody against a program of root's: its descriptors are not this
/// user's to read: exit 4, and the line says what was refused and what would do.
#[test]
fn another_users_program_is_refused_with_exit_4() {
    let test = common::test_name!();
    if !require_root(test, "dropping to an unprivileged user needs root") {
        return;
    }
    let Some((server, _port)) = python(test, LEAKER, &[]) else {
        return;
    };
    let pid = server.pid().to_string();
    let out = Cmd::tcpbye_via(&common::AS_NOBODY, &["inspect", &pid])
        .deadline(Duration::from_secs(20))
        .run();
    let line = out.expect_one_error_line(4, &format!("inspect of pid {pid}"));
    assert!(line.contains("CAP_SYS_PTRACE"), "{line}");
    assert!(line.contains("Permission denied"), "{line}");
    assert!(out.stdout.is_empty(), "{}", out.dump());
}
