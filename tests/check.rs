//! `tcpbye check ADDR` against programs nobody here wrote (Python's socketserver,
//! redis-server, socat) and a deliberately leaking server: each test asserts the
//! reaction that program's real behaviour implies.

use crate::common;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{Cmd, Finished, Proc, golden, is_root, require_root, require_tool, within};
use serde_json::Value;

/// A server under test: killed when dropped.
pub(crate) struct Server {
    _proc: Proc,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self._proc.pid()
    }
}

/// A python3 server from `script`, which prints its port on its first line.
fn python(test: &str, script: &str) -> Option<Server> {
    if !require_tool(test, "python3", &["--version"], "python3 not installed") {
        return None;
    }
    let mut proc = Cmd::program("python3", &["-c", script])
        .deadline(Duration::from_secs(30))
        .spawn();
    let line = proc
        .try_stdout_line(within(5))
        .unwrap_or_else(|| panic!("python3 printed no port\n{}", proc.dump()));
    let port: u16 = line.trim().parse().expect("a port");
    Some(Server {
        _proc: proc,
        addr: format!("127.0.0.1:{port}"),
    })
}

/// A free ephemeral port on loopback, for a program that wants a port number.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// Starts `program ARGS` listening on `port` and waits until it accepts.
fn listening(program: &str, args: &[&str], port: u16) -> Server {
    let mut proc = Cmd::program(program, args)
        .deadline(Duration::from_secs(30))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline && proc.exited().is_none(),
            "{program} did not listen on {port}\n{}",
            proc.dump()
        );
        std::thread::sleep(common::POLL);
    }
    Server {
        _proc: proc,
        addr: format!("127.0.0.1:{port}"),
    }
}

/// A redis-server on a free loopback port, persisting nothing, with `extra`
/// settings (e.g. `["--timeout", "1"]`); `None` (after a loud skip) without it.
pub(crate) fn redis(test: &str, extra: &[&str]) -> Option<Server> {
    if !require_tool(
        test,
        "redis-server",
        &["--version"],
        "redis-server not installed",
    ) {
        return None;
    }
    let port = free_port();
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
    Some(listening("redis-server", &args, port))
}

fn check(args: &[&str]) -> Finished {
    let mut argv = vec!["check"];
    argv.extend_from_slice(args);
    Cmd::tcpbye(&argv).deadline(Duration::from_secs(20)).run()
}

fn case<'a>(out: &'a [Value], mode: &str) -> &'a Value {
    out.iter()
        .find(|c| c["mode"] == mode)
        .unwrap_or_else(|| panic!("no check-case for {mode}: {out:?}"))
}

fn reaction(out: &[Value], mode: &str) -> String {
    case(out, mode)["reaction"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

const SOCKETSERVER: &str = r#"
import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 64
s = Server(("127.0.0.1", 0), Echo)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Accepts and keeps every connection, never reads, never closes.
pub(crate) const LEAKER: &str = r#"
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)
"#;

/// socketserver with keepalive 1s idle, 1s interval, 2 probes on every accepted socket.
const KEEPALIVE_SERVER: &str = r#"
import socket, socketserver
class Echo(socketserver.StreamRequestHandler):
    def setup(self):
        s = self.request
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
        super().setup()
    def handle(self):
        try:
            for line in self.rfile:
                self.wfile.write(line)
        except OSError:
            pass
class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    request_queue_size = 64
s = Server(("127.0.0.1", 0), Echo)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[test]
fn a_short_keepalive_ends_drop_and_reboot_in_the_programs_kernel() {
    let test = common::test_name!();
    if !require_root(test, "drop and reboot need CAP_NET_ADMIN") {
        return;
    }
    let Some(server) = python(test, KEEPALIVE_SERVER) else {
        return;
    };
    let out = check(&[
        &server.addr,
        "--modes",
        "drop,reboot,hang",
        "--request",
        "x\\n",
        "--wait",
        "4500ms",
        "--json",
        "--expect-noticed-within",
        "drop=4s,reboot=2s",
    ]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    // drop: idle 1s, then 2 unanswered probes 1s apart: ≈ 3s.
    let drop = case(&cases, "drop");
    assert_eq!(drop["reaction"], "kernel-gave-up", "{}", out.dump());
    let after = drop["noticed_after_us"].as_u64().unwrap_or(0);
    assert!(
        (2_500_000..4_000_000).contains(&after),
        "drop noticed after {after}µs"
    );
    // reboot: the first probe (≈ 1s) meets an RST.
    let reboot = case(&cases, "reboot");
    assert_eq!(reboot["reaction"], "kernel-gave-up", "{}", out.dump());
    let after = reboot["noticed_after_us"].as_u64().unwrap_or(0);
    assert!(
        (700_000..2_000_000).contains(&after),
        "reboot noticed after {after}µs"
    );
    // hang: the probes are answered; nothing ends it.
    let hang = case(&cases, "hang");
    assert_eq!(hang["reaction"], "unnoticed", "{}", out.dump());
    assert!(
        hang["prediction"]
            .as_str()
            .is_some_and(|p| p.contains("never by keepalive"))
    );
}

#[test]
fn python_socketserver_notices_every_ending_it_can_see_and_passes() {
    let test = common::test_name!();
    let Some(server) = python(test, SOCKETSERVER) else {
        return;
    };
    let started = Instant::now();
    let out = check(&[
        &server.addr,
        "--request",
        "hello\\n",
        "--wait",
        "2s",
        "--json",
        "--expect-no-leak",
        "--expect-noticed-within",
        "fin=1s,half=1s,rst=1s",
    ]);
    out.expect_code(0);
    // Every mode runs at once: about --wait, not modes × wait.
    assert!(started.elapsed() < Duration::from_secs(5), "{}", out.dump());
    let cases = out.objects("check-case");
    // The handler reads EOF and returns; socketserver then closes: a FIN.
    assert_eq!(reaction(&cases, "fin"), "closed", "{}", out.dump());
    assert_eq!(reaction(&cases, "half"), "closed", "{}", out.dump());
    // ECONNRESET ends the handler; the descriptor is released.
    assert_eq!(reaction(&cases, "rst"), "closed", "{}", out.dump());
    assert!(
        case(&cases, "rst")["descriptor"].is_object(),
        "{}",
        out.dump()
    );
    // No keepalive, no heartbeat: a hung client is never noticed.
    let hang = case(&cases, "hang");
    assert_eq!(hang["reaction"], "unnoticed", "{}", out.dump());
    assert!(hang["would_notice_after_us"].is_null());
    assert!(
        hang["prediction"]
            .as_str()
            .is_some_and(|p| p.contains("no keepalive timer")),
        "{}",
        out.dump()
    );
    // Named as the Python program it is, with Python's own setting.
    let advice = hang["advice"].as_str().unwrap_or("");
    assert!(
        advice.starts_with("Python (pid ")
            && advice.contains(
                "keepalive cannot see a hung peer; its own timeout can: `sock.settimeout(seconds)`"
            ),
        "{advice}"
    );
    for c in &cases {
        if c["reaction"] == "closed" {
            assert!(
                c["noticed_after_us"]
                    .as_u64()
                    .is_some_and(|us| us < 1_000_000)
            );
        }
    }
    let summary = out.one("check-summary");
    assert_eq!(summary["leaked"], 0);
    assert_eq!(summary["misses"].as_array().map(Vec::len), Some(0));
    if is_root() {
        assert_eq!(reaction(&cases, "drop"), "unnoticed", "{}", out.dump());
        assert!(case(&cases, "drop")["would_notice_after_us"].is_null());
    }
}

#[test]
fn a_server_that_never_reads_or_closes_is_leaked_and_fails_expect_no_leak() {
    let test = common::test_name!();
    let Some(server) = python(test, LEAKER) else {
        return;
    };
    let out = check(&[
        &server.addr,
        "--modes",
        "fin,half,rst,hang",
        "--wait",
        "1s",
        "--json",
        "--expect-no-leak",
    ]);
    out.expect_code(1);
    let cases = out.objects("check-case");
    // CLOSE_WAIT held to the end, the FIN's byte never read.
    let fin = case(&cases, "fin");
    assert_eq!(fin["reaction"], "leaked", "{}", out.dump());
    assert!(fin["read_eof_after_us"].is_null());
    assert!(fin["noticed_after_us"].is_null());
    assert!(
        fin["states"].as_array().is_some_and(|s| s
            .iter()
            .any(|s| s["state"] == "CLOSE_WAIT" && s["recv_q"] == 1)),
        "{}",
        out.dump()
    );
    assert_eq!(reaction(&cases, "half"), "leaked", "{}", out.dump());
    // After our RST its socket is gone from sock_diag, but the descriptor stays.
    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "leaked", "{}", out.dump());
    assert_eq!(rst["descriptor"]["held_at_end"], true, "{}", out.dump());
    assert_eq!(reaction(&cases, "hang"), "unnoticed");
    let summary = out.one("check-summary");
    assert_eq!(summary["leaked"], 3);
    assert!(summary["misses"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m.as_str().unwrap_or("").starts_with("fin: leaked"))
    }));
    // --send with no answer coming: tcpbye acts when the 2s wait for it ends.
    let started = Instant::now();
    let unanswered = check(&[
        &server.addr,
        "--modes",
        "fin",
        "--send",
        "64",
        "--wait",
        "200ms",
        "--json",
    ]);
    unanswered.expect_code(0);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{}",
        unanswered.dump()
    );
    assert_eq!(reaction(&unanswered.objects("check-case"), "fin"), "leaked");
    // The same server without --expect-no-leak: the matrix, exit 0.
    let plain = check(&[&server.addr, "--modes", "fin", "--wait", "500ms"]);
    plain.expect_code(0);
    assert!(plain.stdout.contains("leaked"), "{}", plain.dump());
    assert!(
        plain.stdout.contains("EPOLLRDHUP"),
        "advice: {}",
        plain.dump()
    );
}

/// `text` with the number after each `marker` replaced by `mask`.
fn mask_number_after(text: &str, marker: &str, mask: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        out.push_str(mask);
        rest = rest[i + marker.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// The matrix for people, against the leaker: reactions, evidence, advice, summary.
#[test]
fn the_matrix_for_people_matches_its_golden_file() {
    let test = common::test_name!();
    let Some(server) = python(test, LEAKER) else {
        return;
    };
    let out = check(&[
        &server.addr,
        "--modes",
        "fin,half,rst,hang",
        "--wait",
        "300ms",
    ]);
    out.expect_code(0);
    // What differs from run to run besides times and ports: the inode and the pid.
    let text = mask_number_after(&out.stdout, "socket:[", "<inode>");
    let text = mask_number_after(&text, "by pid ", "<pid>");
    let text = mask_number_after(&text, "(pid ", "<pid>");
    golden(
        "check-leaker.txt",
        "TCPBYE_REGENERATE=1 cargo test --test tests check::the_matrix",
        &common::stable_human(&text),
    );
}

#[test]
fn redis_keepalive_300_surfaces_as_a_keepalive_prediction() {
    let test = common::test_name!();
    let Some(server) = redis(test, &[]) else {
        return;
    };
    let root = is_root();
    let modes = if root {
        "fin,rst,drop,reboot,hang"
    } else {
        "fin,rst,hang"
    };
    let out = check(&[
        &server.addr,
        "--modes",
        modes,
        "--request",
        "PING\\r\\n",
        "--wait",
        "2s",
        "--json",
    ]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    assert_eq!(reaction(&cases, "fin"), "closed", "{}", out.dump());
    assert_eq!(reaction(&cases, "rst"), "closed", "{}", out.dump());
    // tcp-keepalive 300 (redis's default): the keepalive timer is on its socket, but
    // a hung peer's kernel answers the probes.
    let hang = case(&cases, "hang");
    assert_eq!(hang["reaction"], "unnoticed", "{}", out.dump());
    assert!(hang["would_notice_after_us"].is_null());
    let p = hang["prediction"].as_str().unwrap_or("");
    assert!(p.starts_with("never by keepalive"), "{p}");
    let advice = hang["advice"].as_str().unwrap_or("");
    assert!(
        advice.contains("keepalive cannot see a hung peer; its own timeout can: `timeout 60`"),
        "{advice}"
    );
    assert!(
        p.contains("keepalive timer 29") || p.contains("keepalive timer 30"),
        "{p}"
    );
    if require_root(test, "drop and reboot need CAP_NET_ADMIN") {
        let drop = case(&cases, "drop");
        assert_eq!(drop["reaction"], "unnoticed", "{}", out.dump());
        let would = drop["would_notice_after_us"]
            .as_u64()
            .expect("a keepalive prediction");
        // redis sets TCP_KEEPINTVL to a third of tcp-keepalive and TCP_KEEPCNT to 3
        // on each client's socket (its anetKeepAlive); as root check reads them.
        assert_eq!(
            drop["settings"]["keepalive"],
            serde_json::json!({"idle_s": 300, "intvl_s": 100, "cnt": 3}),
            "{}",
            out.dump()
        );
        assert_eq!(drop["settings_from"], "socket");
        // The advice names redis, its pid and its own setting, not a socket option.
        assert_eq!(drop["comm"], "redis-server", "{}", out.dump());
        let advice = drop["advice"].as_str().unwrap_or("");
        assert!(
            advice.contains("TCP_KEEPIDLE=300s")
                && advice.contains(&format!(
                    "redis (pid {}): shorten its keepalive: `tcp-keepalive 30`",
                    drop["pid"]
                )),
            "{advice}"
        );
        let expected = (300 + 3 * 100) * 1_000_000;
        assert!(
            would.abs_diff(expected) < 3_000_000,
            "drop predicted {would}µs, keepalive 300s + 3 × 100s = {expected}µs"
        );
        assert!(
            drop["prediction"]
                .as_str()
                .is_some_and(|p| p.contains("keepalive"))
        );
        // After a reboot its first keepalive probe meets an RST: ≈ 300 s.
        let reboot = case(&cases, "reboot")["would_notice_after_us"]
            .as_u64()
            .expect("a keepalive prediction");
        assert!(
            reboot.abs_diff(300_000_000) < 3_000_000,
            "reboot predicted {reboot}µs"
        );
    }
}

/// redis `--tcp-keepalive 5` sets its own TCP_KEEPIDLE 5 s, TCP_KEEPINTVL 1 s
/// (5 / 3) and TCP_KEEPCNT 3 on each client's socket. `check` reads them from
/// the socket itself, predicts a pulled cable from them (≈ 8 s, not the sysctls'
/// 5 s + 9 × 75 s), advises no slower setting, and a second run that waits long
/// enough measures the kernel giving up when the prediction said.
#[test]
fn redis_own_keepalive_is_read_from_its_socket_and_predicts_the_measured_time() {
    let test = common::test_name!();
    if !require_root(test, "drop needs CAP_NET_ADMIN") {
        return;
    }
    let Some(server) = redis(test, &["--tcp-keepalive", "5"]) else {
        return;
    };
    let run = |wait: &str| {
        let argv = [
            server.addr.as_str(),
            "--modes",
            "drop",
            "--request",
            "PING\\r\\n",
            "--wait",
            wait,
            "--json",
        ];
        let mut full = vec!["check"];
        full.extend_from_slice(&argv);
        Cmd::tcpbye(&full).deadline(Duration::from_secs(40)).run()
    };
    let short = run("1s");
    short.expect_code(0);
    let drop = case(&short.objects("check-case"), "drop").clone();
    assert_eq!(drop["reaction"], "unnoticed", "{}", short.dump());
    assert_eq!(
        drop["settings"]["keepalive"],
        serde_json::json!({"idle_s": 5, "intvl_s": 1, "cnt": 3}),
        "{}",
        short.dump()
    );
    assert!(drop["settings"]["pid"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(drop["settings_from"], "socket");
    let predicted = drop["would_notice_after_us"]
        .as_u64()
        .expect("a prediction");
    assert!(
        (5_000_000..=9_000_000).contains(&predicted),
        "keepalive 5 s + 3 × 1 s from the last exchange: {predicted}µs"
    );
    let advice = drop["advice"].as_str().unwrap_or("");
    assert!(advice.contains("watch longer"), "{advice}");
    // The ground truth: wait long enough and see its kernel give up.
    let long = run("12s");
    long.expect_code(0);
    let drop = case(&long.objects("check-case"), "drop").clone();
    assert_eq!(drop["reaction"], "kernel-gave-up", "{}", long.dump());
    let measured = drop["noticed_after_us"].as_u64().expect("noticed");
    assert!(
        measured.abs_diff(predicted) < 1_000_000,
        "predicted {predicted}µs, its kernel gave up after {measured}µs"
    );
}

/// Reads until reset, then holds the dead socket 1.5 s before closing it, and
/// logs both moments (monotonic seconds) on stderr: the ground truth.
const SLOW_CLOSER: &str = r#"
import socket, sys, threading, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c):
    try:
        while c.recv(4096):
            pass
    except OSError:
        pass
    failed = time.monotonic()
    time.sleep(1.5)
    c.close()
    print(f"closed {time.monotonic() - failed:.6f}", file=sys.stderr, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A program that lets go of a reset socket 1.5 s later is watched for the whole
/// `--wait` (not until the last report came in) and is judged `closed`, at the
/// time its own log gives.
#[test]
fn a_slow_closer_is_watched_for_the_whole_wait() {
    let test = common::test_name!();
    if !require_root(test, "another process's /proc/PID/fd is read as root") {
        return;
    }
    if !require_tool(test, "python3", &["--version"], "python3 not installed") {
        return;
    }
    let mut program = Cmd::program("python3", &["-c", SLOW_CLOSER])
        .deadline(Duration::from_secs(30))
        .spawn();
    let port = program
        .try_stdout_line(within(5))
        .unwrap_or_else(|| panic!("no port\n{}", program.dump()));
    let addr = format!("127.0.0.1:{}", port.trim());
    let started = Instant::now();
    let out = check(&[
        &addr,
        "--modes",
        "rst",
        "--wait",
        "5s",
        "--expect-no-leak",
        "--json",
    ]);
    out.expect_code(0);
    let rst = case(&out.objects("check-case"), "rst").clone();
    assert_eq!(rst["reaction"], "closed", "{}", out.dump());
    let evidence = rst["evidence"].as_str().unwrap_or("");
    assert!(evidence.contains("released by pid"), "{evidence}");
    let closed = program.stderr_line(within(5), |l| l.starts_with("closed "));
    let held: f64 = closed["closed ".len()..].trim().parse().expect("seconds");
    let after = rst["noticed_after_us"].as_u64().expect("noticed") as f64 / 1e6;
    // Its descriptor, found right after tcpbye's action, is read every 1 ms; the
    // RST reaches the program within a millisecond.
    assert!(
        (after - held).abs() < 0.01,
        "tcpbye: released +{after:.3}s; the program's log: {held:.3}s after the reset"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ends once the reaction is final"
    );
}

/// redis `--timeout 1` closes a client idle for a second: an application timeout.
/// After `reboot` its FIN meets tcpbye's kernel's RST within microseconds, so its
/// socket vanishes as if its kernel had given up; captured on the wire (as root),
/// the FIN shows it closed, at the time the capture gives.
#[test]
fn redis_idle_timeout_after_reboot_is_its_own_close_seen_on_the_wire() {
    let test = common::test_name!();
    if !require_root(test, "reboot needs CAP_NET_ADMIN, the capture CAP_NET_RAW") {
        return;
    }
    let Some(server) = redis(test, &["--timeout", "1"]) else {
        return;
    };
    let out = check(&[
        &server.addr,
        "--modes",
        "reboot",
        "--request",
        "PING\\r\\n",
        "--wait",
        "3s",
        "--json",
    ]);
    out.expect_code(0);
    let reboot = case(&out.objects("check-case"), "reboot").clone();
    assert_eq!(reboot["reaction"], "closed", "{}", out.dump());
    let evidence = reboot["evidence"].as_str().unwrap_or("");
    assert!(evidence.contains("wire: its FIN +"), "{evidence}");
    // Idle since its answer to PING (before the action), closed by a cron that
    // checks timeouts every 100 ms or so: between 0.5 s and 2.5 s after the action.
    let noticed = reboot["noticed_after_us"].as_u64().expect("noticed");
    assert!(
        (500_000..2_500_000).contains(&noticed),
        "closed +{noticed}µs with --timeout 1"
    );
}

/// redis with `--timeout 2` and no TCP keepalive: no kernel mechanism notices a
/// pulled cable, only its own idle timeout. Watched for `--wait 1s`, the row says
/// so and that none fired within the wait; with `--wait-silent 4s` the same run
/// finds it: closed after about 2 s, named an application timeout.
#[test]
fn wait_silent_finds_the_programs_own_timeout() {
    let test = common::test_name!();
    if !require_root(test, "drop needs CAP_NET_ADMIN") {
        return;
    }
    let Some(server) = redis(test, &["--timeout", "2", "--tcp-keepalive", "0"]) else {
        return;
    };
    let run = |extra: &[&str]| {
        let mut argv = vec![
            server.addr.as_str(),
            "--modes",
            "drop,rst",
            "--request",
            "PING\\r\\n",
            "--wait",
            "1s",
            "--json",
        ];
        argv.extend_from_slice(extra);
        check(&argv)
    };
    let short = run(&[]);
    short.expect_code(0);
    let drop = case(&short.objects("check-case"), "drop").clone();
    assert_eq!(drop["reaction"], "unnoticed", "{}", short.dump());
    let p = drop["prediction"].as_str().unwrap_or("");
    assert!(p.starts_with("no kernel mechanism will notice"), "{p}");
    assert!(p.ends_with("none fired within 1.000s"), "{p}");
    let long = run(&["--wait-silent", "4s"]);
    long.expect_code(0);
    let drop = case(&long.objects("check-case"), "drop").clone();
    assert_eq!(drop["reaction"], "closed", "{}", long.dump());
    let noticed = drop["noticed_after_us"].as_u64().expect("noticed");
    assert!(
        (1_000_000..3_500_000).contains(&noticed),
        "redis --timeout 2 closed it +{noticed}µs"
    );
    let evidence = drop["evidence"].as_str().unwrap_or("");
    assert!(evidence.contains("an application timeout"), "{evidence}");
    let summary = &long.objects("check-summary")[0];
    assert_eq!(summary["wait_us"], 1_000_000);
    assert_eq!(summary["wait_silent_us"], 4_000_000);
    // rst is not silent: it was still watched for --wait only.
    assert_eq!(reaction(&long.objects("check-case"), "rst"), "closed");
}

#[test]
fn socat_closes_at_eof_and_has_no_keepalive() {
    let test = common::test_name!();
    if !require_tool(test, "socat", &["-V"], "socat not installed") {
        return;
    }
    let port = free_port();
    let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork");
    let server = listening("socat", &[&listen, "PIPE"], port);
    let out = check(&[
        &server.addr,
        "--modes",
        "fin,half,hang",
        "--request",
        "hi\\n",
        "--wait",
        "1s",
        "--json",
        "--expect-noticed-within",
        "fin=1s,half=1s",
    ]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    // socat answers the FIN with its own at once.
    assert_eq!(reaction(&cases, "fin"), "closed", "{}", out.dump());
    assert_eq!(reaction(&cases, "half"), "closed", "{}", out.dump());
    let hang = case(&cases, "hang");
    assert_eq!(hang["reaction"], "unnoticed", "{}", out.dump());
    assert!(
        hang["prediction"]
            .as_str()
            .is_some_and(|p| p.contains("no keepalive timer"))
    );
    // --send: socat echoes the bytes, and tcpbye acts on that answer at once,
    // not after the 2s it would wait for one. (`half`: tcpbye still reads the rest of
    // the echo; after `fin` its kernel would answer that with an RST.)
    let started = Instant::now();
    let echoed = check(&[
        &server.addr,
        "--modes",
        "half",
        "--send",
        "64",
        "--wait",
        "200ms",
        "--json",
    ]);
    echoed.expect_code(0);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{}",
        echoed.dump()
    );
    assert_eq!(reaction(&echoed.objects("check-case"), "half"), "closed");
    // A limit the silent ending cannot meet: exit 1, and the miss says why.
    let strict = check(&[
        &server.addr,
        "--modes",
        "hang",
        "--wait",
        "300ms",
        "--expect-noticed-within",
        "1s",
    ]);
    strict.expect_code(1);
    assert!(
        strict
            .stderr
            .iter()
            .any(|l| l
                == "tcpbye: expectation not met: hang: unnoticed, expected noticed within 1.000s"),
        "{}",
        strict.dump()
    );
}

/// The clients a redis-server lists for itself (`CLIENT LIST`), this query's own included.
fn redis_clients(addr: &str) -> usize {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .write_all(b"CLIENT LIST\r\n")
        .expect("send CLIENT LIST");
    // A bulk string: `$LEN\r\n` then LEN bytes, one line per client.
    let mut reply = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read CLIENT LIST");
        assert!(n > 0, "redis closed before answering");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((head, body)) = text.split_once("\r\n") {
            let len: usize = head.trim_start_matches('$').parse().expect("a bulk length");
            if body.len() >= len {
                return body[..len].lines().filter(|l| l.contains("addr=")).count();
            }
        }
    }
}

/// Waits up to 5 s for redis to list `want` clients; returns the last count.
fn redis_clients_become(addr: &str, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = redis_clients(addr);
        if n == want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(common::POLL);
    }
}

#[test]
fn silent_endings_the_program_never_noticed_are_reset_after_the_wait() {
    let test = common::test_name!();
    if !require_root(test, "drop and reboot need CAP_NET_ADMIN") {
        return;
    }
    // redis's default tcp-keepalive 300: within the wait it notices neither ending.
    let Some(server) = redis(test, &[]) else {
        return;
    };
    let args = [
        server.addr.as_str(),
        "--modes",
        "drop,reboot",
        "--request",
        "PING\\r\\n",
        "--wait",
        "1s",
        "--json",
    ];
    let out = check(&args);
    out.expect_code(0);
    let cases = out.objects("check-case");
    assert_eq!(reaction(&cases, "drop"), "unnoticed", "{}", out.dump());
    assert_eq!(reaction(&cases, "reboot"), "unnoticed", "{}", out.dump());
    let summary = &out.objects("check-summary")[0];
    assert_eq!(
        summary["reset_after_wait"],
        serde_json::json!(["drop", "reboot"])
    );
    assert_eq!(summary["left_open"], serde_json::json!([]));
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("reset drop, reboot for the program")),
        "{}",
        out.dump()
    );
    // redis itself lists only this query's connection: the RSTs reached it and it
    // freed both clients (ECONNRESET, as from a peer that came back).
    assert_eq!(redis_clients_become(&server.addr, 1), 1, "{}", out.dump());

    // --leave-open: both stay, for watching by hand, and the summary says so.
    let mut argv = args.to_vec();
    argv.push("--leave-open");
    let kept = check(&argv);
    kept.expect_code(0);
    let summary = &kept.objects("check-summary")[0];
    assert_eq!(summary["left_open"], serde_json::json!(["drop", "reboot"]));
    assert_eq!(summary["reset_after_wait"], serde_json::json!([]));
    assert_eq!(redis_clients(&server.addr), 3, "{}", kept.dump());
}

#[test]
fn unprivileged_check_says_which_endings_it_left_out() {
    let test = common::test_name!();
    if !require_root(test, "dropping to an unprivileged user needs root") {
        return;
    }
    let Some(server) = python(test, SOCKETSERVER) else {
        return;
    };
    let out = common::unprivileged(&["check", &server.addr, "--wait", "300ms", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("left out:"))
        .unwrap_or_else(|| panic!("no left-out line: {stderr}"));
    assert!(
        line.contains("drop, reboot") && line.contains("CAP_NET_ADMIN"),
        "{line}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "check-summary")
        .expect("a check-summary");
    assert_eq!(summary["left_out"], serde_json::json!(["drop", "reboot"]));
    assert_eq!(summary["cases"], 4);
}

#[test]
fn drop_and_reboot_without_net_admin_exit_4() {
    let test = common::test_name!();
    if !require_root(test, "dropping to an unprivileged user needs root") {
        return;
    }
    let out = common::unprivileged(&["check", "127.0.0.1:9", "--modes", "fin,drop"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_NET_ADMIN"));
}

#[test]
fn a_refused_connection_is_a_runtime_failure() {
    let port = free_port();
    let out = check(&[
        &format!("127.0.0.1:{port}"),
        "--modes",
        "fin",
        "--wait",
        "1s",
    ]);
    out.expect_one_error_line(3, "refused");
}

#[test]
fn another_users_descriptor_is_not_judged_without_root() {
    let test = common::test_name!();
    if !require_root(test, "dropping to an unprivileged user needs root") {
        return;
    }
    let Some(server) = python(test, SOCKETSERVER) else {
        return;
    };
    // tcpbye as nobody, the server as root: its /proc/PID/fd cannot be read, so
    // after rst a descriptor not found there proves nothing.
    let out = common::unprivileged(&[
        "check",
        &server.addr,
        "--modes",
        "fin,rst",
        "--request",
        "hi\\n",
        "--wait",
        "500ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cases: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(reaction(&cases, "fin"), "closed", "{stdout}");
    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "not-judged", "{stdout}");
    assert!(
        rst["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("needs root"))
    );
}

/// `check --listen`, started and listening on an ephemeral loopback port.
fn check_listen(args: &[&str], deadline: Duration) -> (Proc, String) {
    let mut argv = vec!["check", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let mut proc = Cmd::tcpbye(&argv).deadline(deadline).spawn();
    let addr = proc.listening();
    (proc, addr.to_string())
}

#[test]
fn a_redis_replica_notices_every_ending_and_reconnects() {
    let test = common::test_name!();
    if !require_tool(
        test,
        "redis-server",
        &["--version"],
        "redis-server not installed",
    ) {
        return;
    }
    let modes = if require_root(test, "drop and reboot need CAP_NET_ADMIN") {
        "fin,half,rst,drop,reboot,hang"
    } else {
        "fin,half,rst,hang"
    };
    let (check, addr) = check_listen(
        &[
            "--modes",
            modes,
            "--wait",
            "4s",
            "--expect-noticed-within",
            "5s",
            "--json",
        ],
        Duration::from_secs(60),
    );
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let dir = std::env::temp_dir().join(format!("tcpbye-replica-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("redis.sock");
    // A replica connects to its master, sends PING and waits for the answer at most
    // repl-timeout; whatever ends the link, it connects again from its once-a-second cron.
    let _replica = Cmd::program(
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
            "2",
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
    let out = check.finish();
    let _ = std::fs::remove_dir_all(&dir);
    out.expect_code(0);
    let cases = out.objects("check-case");
    let n = modes.split(',').count();
    assert_eq!(cases.len(), n, "{}", out.dump());
    for c in &cases {
        let mode = c["mode"].as_str().unwrap_or("?");
        assert_eq!(c["reaction"], "reconnected", "{mode}: {}", out.dump());
        let again = c["reconnected_after_us"].as_u64().expect("reconnected");
        let noticed = c["noticed_after_us"].as_u64().expect("noticed");
        assert!(noticed <= again, "{mode}: noticed after its new connection");
        match mode {
            // It reads the EOF or the RST at once; its cron reconnects within a second.
            "fin" | "half" | "rst" => {
                assert!(noticed < 500_000, "{mode}: noticed after {noticed}µs");
                assert!(again < 2_500_000, "{mode}: reconnected after {again}µs");
            }
            // Nothing to read: only its repl-timeout of 2 s ends the link.
            _ => assert!(
                (1_900_000..4_500_000).contains(&noticed),
                "{mode}: noticed after {noticed}µs, repl-timeout is 2s"
            ),
        }
    }
    let summary = out.one("check-summary");
    assert_eq!(summary["program"], "client");
    assert_eq!(summary["reconnected"], n);
    assert!(summary["misses"].as_array().is_some_and(Vec::is_empty));
}

#[test]
fn a_client_that_does_not_reconnect_leaves_the_later_modes_unjudged() {
    let test = common::test_name!();
    if !require_tool(test, "socat", &["-V"], "socat not installed") {
        return;
    }
    let (check, addr) = check_listen(
        &["--modes", "fin,rst", "--wait", "1s", "--json"],
        Duration::from_secs(20),
    );
    // socat copies the connection to /dev/null and exits at its EOF.
    let mut socat = Cmd::program("socat", &["-u", &format!("TCP:{addr}"), "/dev/null"])
        .deadline(Duration::from_secs(20))
        .spawn();
    let out = check.finish();
    socat.wait(within(5));
    out.expect_code(0);
    let cases = out.objects("check-case");
    let fin = case(&cases, "fin");
    assert_eq!(fin["reaction"], "closed", "{}", out.dump());
    assert!(fin["reconnected_after_us"].is_null());
    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "not-judged", "{}", out.dump());
    assert!(
        rst["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("did not connect again")),
        "{}",
        out.dump()
    );
    let summary = out.one("check-summary");
    assert_eq!(summary["reconnected"], 0);
    assert_eq!(summary["not_judged"], 1);
}

/// A client that reads until EOF or an error, closes, sleeps 0.3 s and connects
/// again; it logs (monotonic seconds, on stderr) when each read ended, when it
/// closed and when it connected: the ground truth for --listen's times.
const RECONNECTING_CLIENT: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
log = lambda what: print(f"{what} {time.monotonic():.6f}", file=sys.stderr, flush=True)
for _ in range(6):
    try:
        s = socket.create_connection(("127.0.0.1", port))
    except OSError:
        time.sleep(0.3)
        continue
    log("connected")
    s.sendall(b"hi\n")
    try:
        while s.recv(4096):
            pass
        log("eof")
    except OSError:
        log("error")
    s.close()
    log("closed")
    time.sleep(0.3)
"#;

/// `check --listen` after `rst`: the client's reaction is the release of its
/// socket, timed from its descriptor, not its next connection 0.3 s later. The
/// gap between the two times agrees with the gap the client logs between its
/// close() and its next connect().
#[test]
fn a_reconnecting_client_is_timed_by_its_close_not_by_its_next_connection() {
    let test = common::test_name!();
    if !require_root(test, "another process's /proc/PID/fd is read as root") {
        return;
    }
    if !require_tool(test, "python3", &["--version"], "python3 not installed") {
        return;
    }
    let (check, addr) = check_listen(
        &["--modes", "rst,fin", "--wait", "1s", "--json"],
        Duration::from_secs(30),
    );
    let port = addr.rsplit_once(':').expect("HOST:PORT").1.to_owned();
    let mut client = Cmd::program("python3", &["-c", RECONNECTING_CLIENT, &port])
        .deadline(Duration::from_secs(30))
        .spawn();
    let out = check.finish();
    out.expect_code(0);
    let cases = out.objects("check-case");
    let rst = case(&cases, "rst");
    assert_eq!(rst["reaction"], "reconnected", "{}", out.dump());
    assert_eq!(rst["noticed_by"], "descriptor", "{}", out.dump());
    assert_eq!(rst["comm"], "python3", "{}", out.dump());
    let noticed = rst["noticed_after_us"].as_u64().expect("noticed") as f64 / 1e6;
    let again = rst["reconnected_after_us"].as_u64().expect("reconnected") as f64 / 1e6;
    // The client's own account of the first connection (the rst one).
    let mut at = |what: &str| -> f64 {
        let line = client.stderr_line(within(10), |l| l.starts_with(what));
        line[what.len()..].trim().parse().expect("seconds")
    };
    let error = at("error ");
    let closed = at("closed ");
    let connected = at("connected ");
    assert!(
        closed - error < 0.05,
        "the client closed {:.3}s after the error",
        closed - error
    );
    let truth = connected - closed;
    assert!(
        ((again - noticed) - truth).abs() < 0.02,
        "tcpbye: released +{noticed:.4}s, reconnected +{again:.4}s; the client: connected {truth:.4}s after its close"
    );
    assert!(noticed < 0.1, "released +{noticed:.4}s");
    client.signal(nix::sys::signal::Signal::SIGTERM);
}

/// `--wait-client` bounds the wait for the first client: none comes, exit 3
/// with one line that names the flag.
#[test]
fn wait_client_bounds_the_wait_for_the_first_client() {
    let started = Instant::now();
    let out = check(&["--listen", "127.0.0.1:0", "--wait-client", "300ms"]);
    out.expect_code(3);
    let line = out.stderr.last().cloned().unwrap_or_default();
    assert!(
        line.starts_with("tcpbye: check --listen 127.0.0.1:")
            && line.ends_with("no client connected within 300.0ms (--wait-client)"),
        "{}",
        out.dump()
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{}", out.dump());
    check(&["127.0.0.1:1", "--wait-client", "1s"])
        .expect_usage_error("the following required arguments were not provided");
}

/// nginx on `port`, one process in the foreground, everything it writes under a
/// directory of its own (returned, for removal): `return 200` for every request,
/// `keepalive_timeout 1s`; `listen` takes `options` (e.g. ` deferred`).
pub(crate) fn nginx(port: u16, options: &str) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tcpbye-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = dir.to_str().expect("utf-8 path");
    // One process, in the foreground, everything it writes under `dir`; an HTTP/1.1
    // connection left idle is closed after keepalive_timeout.
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
         error_log {d}/error.log;
         events {{ worker_connections 64; }}
         http {{
           access_log off;
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
           fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
           keepalive_timeout 1s;
           server {{ listen 127.0.0.1:{port}{options}; location / {{ return 200 \"ok\\n\"; }} }}
         }}"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let conf_path = conf_path.to_str().expect("utf-8 path").to_owned();
    let error_log = format!("{d}/error.log");
    let server = listening(
        "nginx",
        &["-p", d, "-e", &error_log, "-c", &conf_path],
        port,
    );
    (server, dir)
}

/// nginx `listen … deferred` (TCP_DEFER_ACCEPT): a connection that sends nothing
/// is not accepted, so an ending tcpbye makes then shows no reaction of nginx's:
/// every mode is `not-judged`, and `--expect-noticed-within` fails rather than
/// passing on nothing. With a request first, nginx is judged as usual.
#[test]
fn nginx_with_deferred_accept_is_not_judged_before_it_accepts() {
    let test = common::test_name!();
    if !require_tool(test, "nginx", &["-v"], "nginx not installed") {
        return;
    }
    let port = free_port();
    let (server, dir) = nginx(port, " deferred");
    // `listening` connected once to see it listen: that connection sent nothing.
    let silent = check(&[
        &server.addr,
        "--modes",
        "fin,rst,hang",
        "--wait",
        "1s",
        "--expect-noticed-within",
        "1s",
        "--json",
    ]);
    let asked = check(&[
        &server.addr,
        "--modes",
        "fin,rst",
        "--request",
        "GET / HTTP/1.1\\r\\nHost: tcpbye\\r\\n\\r\\n",
        "--wait",
        "1s",
        "--expect-noticed-within",
        "1s",
        "--json",
    ]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    silent.expect_code(1);
    for c in silent.objects("check-case") {
        assert_eq!(c["reaction"], "not-judged", "{}", silent.dump());
        let why = c["evidence"].as_str().unwrap_or("");
        assert!(
            why.contains("not accepted yet") && why.contains("--request"),
            "{why}"
        );
    }
    assert!(
        silent.objects("check-summary")[0]["misses"][0]
            .as_str()
            .is_some_and(|m| m.contains("no ending could be judged")),
        "{}",
        silent.dump()
    );
    asked.expect_code(0);
    for c in asked.objects("check-case") {
        assert_eq!(c["reaction"], "closed", "{}", asked.dump());
    }
}

#[test]
fn nginx_closes_every_idle_connection_after_its_keepalive_timeout() {
    let test = common::test_name!();
    if !require_tool(test, "nginx", &["-v"], "nginx not installed") {
        return;
    }
    let port = free_port();
    let (server, dir) = nginx(port, "");
    let root = require_root(test, "drop and reboot need CAP_NET_ADMIN");
    let modes = if root {
        "fin,half,rst,drop,reboot,hang"
    } else {
        "fin,half,rst,hang"
    };
    let out = check(&[
        &server.addr,
        "--modes",
        modes,
        "--request",
        "GET / HTTP/1.1\\r\\nHost: tcpbye\\r\\n\\r\\n",
        "--wait",
        "3s",
        "--expect-no-leak",
        "--expect-noticed-within",
        "2s",
        "--json",
    ]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    out.expect_code(0);
    let cases = out.objects("check-case");
    for mode in modes.split(',') {
        let c = case(&cases, mode);
        let noticed = c["noticed_after_us"].as_u64().unwrap_or(u64::MAX);
        match mode {
            // It reads the EOF or the RST at once.
            "fin" | "half" | "rst" => {
                assert_eq!(c["reaction"], "closed", "{mode}: {}", out.dump());
                assert!(noticed < 500_000, "{mode}: noticed after {noticed}µs");
            }
            // Nothing to read: its keepalive_timeout of 1 s closes the idle
            // connection (after `reboot` its FIN meets an RST, which ends it at once).
            _ => {
                let r = c["reaction"].as_str().unwrap_or("");
                assert!(
                    r == "closed" || (mode == "reboot" && r == "kernel-gave-up"),
                    "{mode}: {r}\n{}",
                    out.dump()
                );
                assert!(
                    (900_000..2_000_000).contains(&noticed),
                    "{mode}: noticed after {noticed}µs, keepalive_timeout is 1s"
                );
            }
        }
    }
}

/// `SCRIPT` run in far, listening on 0.0.0.0 (the scripts above bind 127.0.0.1).
fn far_python(topology: &common::topology::Topology, script: &str) -> (Proc, std::net::SocketAddr) {
    let script = script.replace("(\"127.0.0.1\", 0)", "(\"0.0.0.0\", 0)");
    let mut proc = topology
        .program(common::topology::Side::Far, "python3", &["-c", &script])
        .deadline(Duration::from_secs(40))
        .spawn();
    let line = proc
        .try_stdout_line(within(5))
        .unwrap_or_else(|| panic!("python3 printed no port\n{}", proc.dump()));
    let port: u16 = line.trim().parse().expect("a port");
    (proc, topology.dial(port))
}

/// A python3 server from `script` in far, behind a router, for `tcpbye check` run
/// in near: a program on another host. `None` (after a visible SKIPPED) without root
/// or the tools.
fn remote_python(test: &str, script: &str) -> Option<(common::topology::Topology, Proc, String)> {
    if !require_root(
        test,
        "network namespaces, capture, drop and reboot need root",
    ) || !require_tool(test, "python3", &["--version"], "python3 not installed")
        || !require_tool(test, "ip", &["-V"], "iproute2 not installed")
    {
        return None;
    }
    let topology = common::topology::Topology::router();
    let (server, addr) = far_python(&topology, script);
    Some((topology, server, addr.to_string()))
}

#[test]
fn a_program_on_another_host_is_judged_from_the_wire() {
    let test = common::test_name!();
    if !require_root(
        test,
        "network namespaces, capture, drop and reboot need root",
    ) || !require_tool(test, "python3", &["--version"], "python3 not installed")
        || !require_tool(test, "ip", &["-V"], "iproute2 not installed")
    {
        return;
    }
    let topology = common::topology::Topology::router();
    // Keepalive 1s idle, 1s interval, 2 probes on every accepted socket.
    let (_server, addr) = far_python(&topology, KEEPALIVE_SERVER);
    let addr = addr.to_string();
    let out = topology
        .near_tcpbye(&[
            "check",
            &addr,
            "--request",
            "hello\\n",
            "--wait",
            "4s",
            "--json",
        ])
        .deadline(Duration::from_secs(30))
        .run();
    out.expect_code(0);
    let cases = out.objects("check-case");
    let get = |mode: &str| case(&cases, mode).clone();
    let evidence = |c: &Value| c["evidence"].as_str().unwrap_or("").to_owned();
    for mode in ["fin", "half"] {
        let c = get(mode);
        assert_eq!(c["reaction"], "closed", "{mode}: {}", out.dump());
        assert!(evidence(&c).contains("wire: its FIN"), "{mode}: {c}");
        assert!(
            c["noticed_after_us"]
                .as_u64()
                .is_some_and(|us| us < 500_000)
        );
    }
    let rst = get("rst");
    assert_eq!(rst["reaction"], "not-judged", "{}", out.dump());
    // Its keepalive probes cross the wire even though drop's filter discards them at
    // tcpbye's socket; after 2 unanswered probes its kernel resets the connection.
    let drop = get("drop");
    assert_eq!(drop["reaction"], "kernel-gave-up", "{}", out.dump());
    assert!(evidence(&drop).contains("keepalive probes"), "{drop}");
    assert!(evidence(&drop).contains("wire: its RST"), "{drop}");
    let noticed = drop["noticed_after_us"].as_u64().expect("noticed");
    assert!(
        (2_500_000..4_000_000).contains(&noticed),
        "drop noticed after {noticed}µs; keepalive 1s + 2 × 1s"
    );
    // After a reboot its first probe meets tcpbye's kernel's RST.
    let reboot = get("reboot");
    assert_eq!(reboot["reaction"], "kernel-gave-up", "{}", out.dump());
    assert!(evidence(&reboot).contains("met tcpbye's RST"), "{reboot}");
    let noticed = reboot["noticed_after_us"].as_u64().expect("noticed");
    assert!(
        (700_000..2_000_000).contains(&noticed),
        "reboot noticed after {noticed}µs"
    );
    // A hung peer's kernel answers its probes: never noticed.
    let hang = get("hang");
    assert_eq!(hang["reaction"], "unnoticed", "{}", out.dump());
    assert!(
        hang["prediction"]
            .as_str()
            .is_some_and(|p| p.starts_with("never by keepalive")),
        "{hang}"
    );
}

#[test]
fn a_leaking_program_on_another_host_is_caught_by_the_ack_of_the_fin() {
    let test = common::test_name!();
    let Some((topology, _server, addr)) = remote_python(test, LEAKER) else {
        return;
    };
    let out = topology
        .near_tcpbye(&[
            "check",
            &addr,
            "--modes",
            "fin,half",
            "--wait",
            "1s",
            "--expect-no-leak",
            "--json",
        ])
        .deadline(Duration::from_secs(20))
        .run();
    out.expect_code(1);
    let cases = out.objects("check-case");
    for mode in ["fin", "half"] {
        let c = case(&cases, mode);
        assert_eq!(c["reaction"], "leaked", "{mode}: {}", out.dump());
        assert!(
            c["evidence"]
                .as_str()
                .is_some_and(|e| e.contains("acknowledged tcpbye's FIN")),
            "{c}"
        );
    }
}

#[test]
fn without_cap_net_raw_a_remote_programs_silent_endings_cannot_be_judged() {
    let test = common::test_name!();
    let Some((topology, _server, addr)) = remote_python(test, SOCKETSERVER) else {
        return;
    };
    // tcpbye as nobody, without capabilities, in near.
    let as_nobody = |args: &[&str]| {
        let mut argv: Vec<&str> = common::AS_NOBODY[1..].to_vec();
        argv.push(common::BIN);
        argv.extend_from_slice(args);
        topology
            .program(common::topology::Side::Near, common::AS_NOBODY[0], &argv)
            .deadline(Duration::from_secs(20))
            .run()
    };
    // Asked for by name: an error naming the capability.
    let out = as_nobody(&["check", &addr, "--modes", "fin,hang", "--wait", "1s"]);
    out.expect_one_error_line(4, "CAP_NET_RAW");
    // By default: judged from tcpbye's own socket where it can be, not-judged where not.
    let out = as_nobody(&[
        "check",
        &addr,
        "--request",
        "hello\\n",
        "--wait",
        "1s",
        "--json",
    ]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    let fin = case(&cases, "fin");
    assert_eq!(fin["reaction"], "closed", "{}", out.dump());
    assert!(
        fin["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("judged from tcpbye's socket")),
        "{fin}"
    );
    let hang = case(&cases, "hang");
    assert_eq!(hang["reaction"], "not-judged", "{}", out.dump());
    assert!(
        hang["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("CAP_NET_RAW")),
        "{hang}"
    );
}
