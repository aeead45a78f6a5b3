//! `tcpbye path` over a direct loopback path (127.0.0.1 and ::1) with `tcpbye
//! serve` as the far end: every ending arrives as sent in both directions, data
//! flows after a half-close both ways, no idle timeout is found, the JSON
//! contract, the expectations' exit codes, bad input, far ends that are not a
//! tcpbye serve, the control line protocol itself, and `serve` unchanged for
//! ordinary clients. One test puts socat (which turns an RST into a FIN) in
//! between, on loopback, to see a rewrite and `--expect-faithful` miss.
//!
//! Far ends that must not be taken for the path: one whose own `--timeout` ends
//! the test connections, one that refuses them (`--max-conns`), one restarted
//! mid-run; an interrupted run. Hostile clients of serve's control protocol, each
//! bounded in count and time: control connections that stream megabytes, that
//! hold every slot without a question, a second greeting with a used token, and
//! a far end of another protocol version.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::common::{Cmd, Proc, SOCKET_WAIT, require_tool, serve};
use serde_json::Value;

/// Long enough for a `path` run of a few seconds on a loaded machine.
const PATH_DEADLINE: Duration = Duration::from_secs(40);

fn path(args: &[&str]) -> common::Finished {
    let mut argv = vec!["path"];
    argv.extend_from_slice(args);
    Cmd::tcpbye(&argv).deadline(PATH_DEADLINE).run()
}

fn cases(out: &common::Finished) -> Vec<Value> {
    out.objects("path-case")
}

/// Every ending case faithful, with the far end's own report behind it.
fn assert_endings_faithful(out: &common::Finished, n: usize) {
    let endings: Vec<Value> = cases(out)
        .into_iter()
        .filter(|c| c["test"] != "idle")
        .collect();
    assert_eq!(endings.len(), n, "{}", out.dump());
    for c in &endings {
        let what = format!("{} {}", c["test"], c["direction"]);
        assert_eq!(c["result"], "faithful", "{what}\n{}", out.dump());
        assert_eq!(c["sent"], c["arrived"], "{what}");
        let wire = if c["test"] == "rst" || c["test"] == "rst-unread" {
            "rst"
        } else {
            "fin"
        };
        assert_eq!(c["sent"], wire, "{what}");
        assert_eq!(c["far"]["kind"], "path-far", "{what}");
        assert_eq!(c["far"]["token"], c["token"], "{what}");
        if c["direction"] == "near-to-far" {
            assert_eq!(c["far"]["arrived"], wire, "{what}: the far end's own view");
        } else {
            assert_eq!(c["far"]["sent"], wire, "{what}: the far end's own action");
        }
        // Measured against the greeting's own trip: on loopback far below the limit.
        let extra = c["extra_us"]
            .as_u64()
            .expect("extra_us measured on loopback");
        assert!(extra < 100_000, "{what}: extra {extra}µs");
        if c["test"] == "half" {
            let sent = c["after_fin"]["sent"].as_u64().expect("after_fin.sent");
            assert!(sent > 0, "{what}: data after the FIN\n{}", out.dump());
            assert_eq!(c["after_fin"]["arrived"].as_u64(), Some(sent), "{what}");
        } else {
            assert!(c["after_fin"].is_null(), "{what}");
        }
    }
}

#[test]
fn every_ending_arrives_as_sent_both_ways_on_ipv4_loopback() {
    let (_serve, addr) = serve(&["127.0.0.1:0"]);
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "fin,rst,half,rst-unread",
        "--wait",
        "2s",
        "--json",
        "--expect-faithful",
    ]);
    out.expect_code(0);
    assert_endings_faithful(&out, 8);
    let far_to_near = cases(&out)
        .iter()
        .filter(|c| c["direction"] == "far-to-near")
        .count();
    assert_eq!(far_to_near, 4, "{}", out.dump());
    let summary = out.one("path-summary");
    assert_eq!(summary["endings"], 8);
    assert_eq!(summary["faithful"], 8);
    assert!(summary["idle_timeout_min_us"].is_null(), "no idle test ran");
    assert_eq!(summary["misses"], serde_json::json!([]));
}

#[test]
fn every_ending_arrives_as_sent_both_ways_on_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        common::host_lacks(
            "every_ending_arrives_as_sent_both_ways_on_ipv6_loopback",
            common::Host::Ipv6,
            "no ::1 here",
        );
        return;
    }
    let (_serve, addr) = serve(&["[::1]:0"]);
    assert!(addr.is_ipv6());
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "fin,rst,half,rst-unread",
        "--wait",
        "2s",
        "--json",
        "--expect-faithful",
    ]);
    out.expect_code(0);
    assert_endings_faithful(&out, 8);
    assert_eq!(out.one("path-summary")["target"], addr.to_string());
}

#[test]
fn a_whole_run_keeps_the_json_contract_and_finds_no_idle_timeout() {
    let (_serve, addr) = serve(&["127.0.0.1:0"]);
    let out = path(&[
        &addr.to_string(),
        "--max-idle",
        "2s",
        "--wait",
        "1s",
        "--json",
        "--expect-faithful",
        "--expect-idle-over",
        "2s",
        "--confirm-keepalive",
    ]);
    out.expect_code(0);
    let lines = out.json_lines();
    assert_eq!(
        lines.last().map(|l| &l["kind"]),
        Some(&Value::from("path-summary"))
    );
    for c in cases(&out) {
        for field in [
            "schema",
            "test",
            "direction",
            "token",
            "sent",
            "arrived",
            "result",
            "note",
        ] {
            assert!(!c[field].is_null(), "{field} missing in {c}");
        }
    }
    assert_endings_faithful(&out, 8);
    // The doubling ladder up to --max-idle: 1s and 2s, both delivered.
    let idle: Vec<Value> = cases(&out)
        .into_iter()
        .filter(|c| c["test"] == "idle")
        .collect();
    let periods: Vec<u64> = idle.iter().filter_map(|c| c["idle_us"].as_u64()).collect();
    assert_eq!(periods, vec![1_000_000, 2_000_000], "{}", out.dump());
    for c in &idle {
        assert_eq!(c["result"], "delivered", "{c}");
        assert_eq!(c["direction"], "near-to-far");
        assert_eq!(c["sent"], "data");
        assert_eq!(c["arrived"], "data");
        assert_eq!(c["ladder"], 1);
        let got = c["far"]["bytes_after_greeting"].as_u64().unwrap_or(0);
        assert!(
            got > 0,
            "the far end got the data after the idle period: {c}"
        );
        // The data came after the idle period, by the far end's own clock.
        let last = c["far"]["last_data_us"].as_u64().expect("last_data_us");
        assert!(last + 50_000 >= c["idle_us"].as_u64().unwrap_or(0), "{c}");
    }
    let summary = out.one("path-summary");
    assert_eq!(summary["idle_timeout_min_us"], 2_000_000);
    assert!(summary["idle_timeout_max_us"].is_null(), "{summary}");
    assert!(summary["idle_behaviour"].is_null(), "{summary}");
    assert!(summary["advice"].is_null(), "{summary}");
    assert!(
        summary["keepalive_confirmed"].is_null(),
        "nothing to confirm: {summary}"
    );
    assert_eq!(summary["max_idle_us"], 2_000_000);
}

#[test]
fn expect_idle_over_misses_when_no_period_that_long_was_tried() {
    let (_serve, addr) = serve(&["127.0.0.1:0"]);
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "idle",
        "--idle-ladder",
        "300ms",
        "--wait",
        "500ms",
        "--json",
        "--expect-idle-over",
        "1s",
    ]);
    out.expect_code(1);
    let miss = out
        .stderr
        .iter()
        .find(|l| l.starts_with("tcpbye: expectation not met:"))
        .unwrap_or_else(|| panic!("no miss line\n{}", out.dump()));
    assert!(miss.contains("raise --max-idle"), "{miss}");
    let summary = out.one("path-summary");
    assert_eq!(summary["idle_timeout_min_us"], 300_000);
    assert_eq!(summary["misses"].as_array().map(Vec::len), Some(1));
}

#[test]
fn the_table_says_each_ending_in_words() {
    let (_serve, addr) = serve(&["127.0.0.1:0"]);
    let out = Cmd::tcpbye(&[
        "path",
        &addr.to_string(),
        "--tests",
        "rst,half",
        "--wait",
        "1s",
    ])
    .env("COLUMNS", "")
    .deadline(PATH_DEADLINE)
    .run();
    out.expect_code(0);
    assert!(out.stdout.contains("RST arrived as RST"), "{}", out.stdout);
    assert!(
        out.stdout.contains("FIN arrived as FIN, then 26 bytes"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("4 of 4 endings faithful"),
        "{}",
        out.stdout
    );
    for line in out.stdout.lines() {
        assert!(!line.ends_with(' '), "trailing space: {line:?}");
        assert!(line.chars().count() <= 100, "wider than 100: {line:?}");
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

/// socat as a forking TCP proxy from a free port to `target`, listening.
fn start_socat(target: SocketAddr) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut socat = Cmd::program(
            "socat",
            &[
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
                &format!("TCP:{target}"),
            ],
        )
        .deadline(PATH_DEADLINE)
        .spawn();
        let deadline = common::within(3);
        while std::time::Instant::now() < deadline && socat.exited().is_none() {
            // A probe that socat forwards: serve reports it as an ordinary connection.
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (socat, port);
            }
            std::thread::sleep(common::POLL);
        }
    }
    panic!("socat did not start listening");
}

#[test]
fn through_socat_an_rst_arrives_as_a_fin_and_expect_faithful_misses() {
    let name = "through_socat_an_rst_arrives_as_a_fin_and_expect_faithful_misses";
    if !require_tool(name, "socat", &["-V"], "socat not installed") {
        return;
    }
    let (_serve, addr) = serve(&["127.0.0.1:0"]);
    let (_socat, port) = start_socat(addr);
    let out = path(&[
        &format!("127.0.0.1:{port}"),
        "--tests",
        "fin,rst",
        "--wait",
        "2s",
        "--json",
        "--expect-faithful",
    ]);
    out.expect_code(1);
    for c in cases(&out) {
        let what = format!("{} {}", c["test"], c["direction"]);
        if c["test"] == "rst" {
            assert_eq!(c["result"], "rewritten", "{what}\n{}", out.dump());
            assert_eq!(c["arrived"], "fin", "{what}");
            assert_eq!(c["note"], "RST arrived as FIN", "{what}");
        } else {
            assert_eq!(c["result"], "faithful", "{what}\n{}", out.dump());
        }
    }
    let misses: Vec<&String> = out
        .stderr
        .iter()
        .filter(|l| l.starts_with("tcpbye: expectation not met:"))
        .collect();
    assert_eq!(misses.len(), 2, "{}", out.dump());
    assert!(misses[0].contains("RST arrived as FIN"), "{}", misses[0]);
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    run_path(&[]).expect_usage_error("required arguments");
    run_path(&["127.0.0.1:7007", "--tests", "drop"]).expect_usage_error("drop");
    run_path(&["127.0.0.1:7007", "--max-idle", "soon"]).expect_usage_error("soon");
    run_path(&["127.0.0.1:7007", "--idle-ladder", "1s,x"]).expect_usage_error("x");
    run_path(&["127.0.0.1:0"]).expect_one_error_line(2, "port 0");
    run_path(&["127.0.0.1:7007", "--wait", "0s"]).expect_one_error_line(2, "--wait");
    // Periods have a floor of 1 ms: shorter ones are busy write loops.
    run_path(&["127.0.0.1:7007", "--idle-ladder", "0s"]).expect_usage_error("at least 1ms");
    run_path(&["127.0.0.1:7007", "--idle-ladder", "1s,0.0000001"])
        .expect_usage_error("at least 1ms");
    run_path(&["127.0.0.1:7007", "--max-idle", "0.0000001"]).expect_usage_error("at least 1ms");
    common::run(&["connect", "127.0.0.1:7007", "--send-every", "0"])
        .expect_usage_error("at least 1ms");
    common::run(&["serve", "127.0.0.1:0", "--send-every", "500us"])
        .expect_usage_error("--send-every");
    run_path(&["127.0.0.1:7007", "--tests", "fin", "--idle-ladder", "1s"])
        .expect_one_error_line(2, "needs the idle test");
    run_path(&[
        "127.0.0.1:7007",
        "--tests",
        "fin",
        "--expect-idle-over",
        "5s",
    ])
    .expect_one_error_line(2, "needs the idle test");
    run_path(&["127.0.0.1:7007", "--tests", "idle", "--expect-faithful"])
        .expect_one_error_line(2, "needs an ending test");
}

fn run_path(args: &[&str]) -> common::Finished {
    let mut argv = vec!["path"];
    argv.extend_from_slice(args);
    common::run(&argv)
}

#[test]
fn nothing_listening_is_one_line_and_exit_3() {
    let port = free_port();
    let out = run_path(&[&format!("127.0.0.1:{port}"), "--wait", "1s"]);
    out.expect_one_error_line(3, "nothing listens there");
    assert!(out.stdout.is_empty(), "{}", out.dump());
}

/// A plain listener that is not tcpbye: accepts one connection and `answer`s it.
fn stranger(answer: fn(TcpStream)) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let thread = std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(SOCKET_WAIT));
            answer(stream);
        }
    });
    (addr, thread)
}

#[test]
fn a_far_end_that_is_not_a_tcpbye_serve_is_one_line_and_exit_3() {
    // An HTTP-ish server: reads, answers something else, closes.
    let (addr, http) = stranger(|mut s| {
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
    });
    let out = run_path(&[&addr.to_string(), "--wait", "2s"]);
    out.expect_one_error_line(3, "not a tcpbye serve");
    assert!(out.stderr[0].contains("HTTP/1.0 400"), "{}", out.dump());
    http.join().expect("http thread");

    // A server that closes without a word.
    let (addr, mute) = stranger(drop);
    let out = run_path(&[&addr.to_string(), "--wait", "2s"]);
    out.expect_one_error_line(3, "without answering");
    mute.join().expect("mute thread");

    // A server that reads and never answers: --wait bounds the wait.
    let (addr, silent) = stranger(|mut s| {
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        let _ = s.read(&mut buf);
    });
    let started = std::time::Instant::now();
    let out = run_path(&[&addr.to_string(), "--wait", "300ms"]);
    out.expect_one_error_line(3, "no answer within 300.0ms");
    assert!(started.elapsed() < Duration::from_secs(4));
    silent.join().expect("silent thread");
}

/// One control question; the answer line as JSON.
fn ask(addr: SocketAddr, question: &str) -> Value {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    s.write_all(format!("TCPBYE-CONTROL 1\n{question}\n").as_bytes())
        .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("read the answer, then EOF");
    assert_eq!(answer.matches('\n').count(), 1, "one line: {answer:?}");
    serde_json::from_str(answer.trim_end()).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn the_control_protocol_answers_by_token() {
    let (mut serve, addr) = serve(&["127.0.0.1:0", "--json"]);
    assert_eq!(ask(addr, "HELLO")["kind"], "path-hello");
    assert_eq!(ask(addr, "HELLO")["version"], 1);
    assert_eq!(ask(addr, "REPORT never-seen 0")["kind"], "path-unknown");
    assert_eq!(ask(addr, "WHAT")["kind"], "path-error");

    // A test connection: the greeting, its answer, 5 bytes, then a FIN.
    let mut test = TcpStream::connect(addr).expect("connect");
    test.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    test.write_all(b"TCPBYE-PATH 1 tok-42 near-to-far fin\n")
        .expect("greet");
    let mut ack = [0u8; 15];
    test.read_exact(&mut ack)
        .expect("the answer to the greeting");
    assert_eq!(&ack, b"TCPBYE-PATH-OK\n");
    test.write_all(b"hello").expect("write");
    test.shutdown(Shutdown::Write).expect("shutdown");
    // The far end waits (up to 3 s) for the connection to end, then answers.
    let far = ask(addr, "REPORT tok-42 3000");
    assert_eq!(far["kind"], "path-far", "{far}");
    assert_eq!(far["token"], "tok-42");
    assert_eq!(far["test"], "near-to-far fin");
    assert_eq!(far["arrived"], "fin", "{far}");
    assert_eq!(far["open"], false, "{far}");
    assert_eq!(far["bytes_after_greeting"], 5, "{far}");
    assert!(far["sent"].is_null(), "observe only: {far}");
    // Observe only: nothing more was written into the test connection.
    let mut rest = Vec::new();
    let _ = test.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    // serve still reports the connection, saying which test it was.
    let report = serve.json_line(common::within(5));
    assert_eq!(report["verdict"], "fin", "{report}");
    let noted = common::events(&report)
        .iter()
        .any(|e| e["detail"] == "path test tok-42: near-to-far fin");
    assert!(noted, "{report}");
}

#[test]
fn serve_keeps_its_own_plan_for_ordinary_clients_while_answering_path() {
    let (mut serve, addr) = serve(&[
        "127.0.0.1:0",
        "--close",
        "rst",
        "--after",
        "300ms",
        "--json",
    ]);
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "fin,half",
        "--wait",
        "2s",
        "--json",
        "--expect-faithful",
    ]);
    out.expect_code(0);
    assert_endings_faithful(&out, 4);
    // An ordinary client whose first bytes only look like a greeting: serve
    // follows its own plan (--close rst --after 300ms) and writes nothing else.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    plain.write_all(b"TCPBYE-NOT-A-GREETING\n").expect("write");
    let mut buf = [0u8; 64];
    let err = plain.read(&mut buf).expect_err("serve resets it");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let deadline = common::within(5);
    loop {
        let report = serve.json_line(deadline);
        if report["bytes_received"] == 22 {
            assert_eq!(report["close"], "rst", "{report}");
            assert_eq!(report["closer"], "local", "{report}");
            break;
        }
    }
}

/// serve's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A test connection that stays open at serve: its token is one serve knows.
fn open_test_connection(addr: SocketAddr, token: &str) -> TcpStream {
    let mut test = TcpStream::connect(addr).expect("connect");
    test.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    test.write_all(format!("TCPBYE-PATH 1 {token} near-to-far idle\n").as_bytes())
        .expect("greet");
    let mut ack = [0u8; 15];
    test.read_exact(&mut ack)
        .expect("the answer to the greeting");
    assert_eq!(&ack, b"TCPBYE-PATH-OK\n");
    test
}

/// A hostile control client: sends `first`, then streams up to `limit` bytes
/// (until `until`), then waits (at most 5 s) for serve to end the connection.
/// Returns the bytes it streamed and whether serve ended the connection.
fn stream_after(
    addr: SocketAddr,
    first: &[u8],
    limit: usize,
    until: std::time::Instant,
) -> (usize, bool) {
    use std::io::ErrorKind;
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    let chunk = [b'x'; 512];
    let mut sent = 0;
    let mut ended = s.write_all(first).is_err();
    while !ended && sent < limit && std::time::Instant::now() < until {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                ended = matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
            }
        }
    }
    let mut buf = [0u8; 4096];
    while !ended {
        match s.read(&mut buf) {
            Ok(0) => ended = true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                ended = e.kind() == ErrorKind::ConnectionReset;
                break;
            }
        }
    }
    (sent, ended)
}

#[test]
fn control_connections_that_stream_are_closed_and_cost_serve_no_memory() {
    let (serve, addr) = serve(&["127.0.0.1:0", "--json"]);
    let _test = open_test_connection(addr, "tok-flood");
    let before = peak_rss_kib(serve.pid());
    // 48 clients ask a question that waits (up to 60 s) for the open test
    // connection, then stream; 16 stream without ever ending a question line.
    // Up to 1 MiB each (64 MiB in all), for at most 6 s.
    const PER_CLIENT: usize = 1 << 20;
    let until = std::time::Instant::now() + Duration::from_secs(6);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                let first: &[u8] = if i < 48 {
                    b"TCPBYE-CONTROL 1\nREPORT tok-flood 60000\n"
                } else {
                    b"TCPBYE-CONTROL 1\n"
                };
                stream_after(addr, first, PER_CLIENT, until)
            })
        })
        .collect();
    let met: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let peak = peak_rss_kib(serve.pid());
    eprintln!(
        "serve VmHWM {before} KiB before, {peak} KiB after 64 control clients streaming {} KiB",
        met.iter().map(|(n, _)| n).sum::<usize>() / 1024
    );
    for (i, (sent, ended)) in met.iter().enumerate() {
        // serve answers with an error and closes, long before the 60 s asked for.
        assert!(
            ended,
            "client {i}: {sent} bytes streamed, and serve kept the connection open\n{}",
            serve.dump()
        );
    }
    // The bound docs/path.md states: at most 24 MiB of peak RSS with 256
    // control connections, whatever they send.
    assert!(
        peak < 24 * 1024,
        "serve's peak RSS {peak} KiB\n{}",
        serve.dump()
    );
    // One write with the question and too many bytes after it, then silence:
    // answered with an error at once, not after the 60 s asked for.
    let mut one = TcpStream::connect(addr).expect("connect");
    one.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    let mut burst = b"TCPBYE-CONTROL 1\nREPORT tok-flood 60000\n".to_vec();
    burst.extend_from_slice(&[b'x'; 400]);
    one.write_all(&burst).expect("write");
    let mut answer = String::new();
    let _ = one.read_to_string(&mut answer);
    assert!(answer.contains("path-error"), "{answer:?}");
    // serve still answers.
    assert_eq!(ask(addr, "HELLO")["kind"], "path-hello");
}

/// No idle timeout was made up: no bracket, no behaviour, no advice.
fn assert_no_idle_timeout(out: &common::Finished) {
    let summary = out.one("path-summary");
    for field in [
        "idle_timeout_max_us",
        "idle_behaviour",
        "keepalive",
        "advice",
    ] {
        assert!(
            summary[field].is_null(),
            "{field}: {summary}\n{}",
            out.dump()
        );
    }
}

/// The idle cases of a run.
fn idle_cases(out: &common::Finished) -> Vec<Value> {
    cases(out)
        .into_iter()
        .filter(|c| c["test"] == "idle")
        .collect()
}

#[test]
fn a_far_end_that_times_out_itself_fails_the_steps_and_invents_no_idle_timeout() {
    // The far end's own --timeout closes every test connection after 1.5 s: its
    // FIN is not the path's, and no step says anything about the path.
    let (_serve, addr) = serve(&["127.0.0.1:0", "--timeout", "1500ms"]);
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "idle",
        "--idle-ladder",
        "1s,2s",
        "--wait",
        "1s",
        "--json",
    ]);
    out.expect_code(3);
    let idle = idle_cases(&out);
    assert_eq!(idle.len(), 2, "{}", out.dump());
    for c in &idle {
        assert_eq!(c["result"], "failed", "{c}");
        assert_eq!(c["far"]["ended_by"], "timeout", "{c}");
        assert_eq!(c["far"]["sent"], "fin", "{c}");
        let note = c["note"].as_str().unwrap_or("");
        assert!(note.contains("its --timeout ran out"), "{note}");
    }
    assert_no_idle_timeout(&out);
    let summary = out.one("path-summary");
    assert!(summary["idle_timeout_min_us"].is_null(), "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    assert!(
        out.stderr.iter().any(|l| l.contains("2 of 2 tests failed")),
        "{}",
        out.dump()
    );
}

#[test]
fn connections_a_far_end_refused_fail_and_stay_out_of_the_bracket() {
    // serve --max-conns 2 accepts two of the four idle connections and closes the
    // others at once: their FIN or RST came from serve, which has no record of them.
    let (_serve, addr) = serve(&["127.0.0.1:0", "--max-conns", "2"]);
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "idle",
        "--idle-ladder",
        "1s,1500ms,2s,2500ms",
        "--wait",
        "1s",
        "--json",
    ]);
    out.expect_code(3);
    let idle = idle_cases(&out);
    assert_eq!(idle.len(), 4, "{}", out.dump());
    let failed: Vec<&Value> = idle.iter().filter(|c| c["result"] == "failed").collect();
    assert!(failed.len() >= 2, "{}", out.dump());
    for c in &idle {
        assert!(
            c["result"] == "failed" || c["result"] == "delivered",
            "only the far end's refusals ended connections here: {c}"
        );
    }
    // No record of the refused ones; a control connection may be refused too
    // while two test connections are still open there.
    for c in &failed {
        let note = c["note"].as_str().unwrap_or("");
        assert!(
            note.contains("no record") || note.contains("no report from the far end"),
            "{c}"
        );
    }
    assert_no_idle_timeout(&out);
    assert_eq!(out.one("path-summary")["failed"], failed.len());
}

/// Whether a connection to `port` is established (from /proc/net/tcp).
fn established_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 3
            && cols[3] == "01"
            && cols[1].rsplit(':').next() == Some(&format!("{port:04X}"))
    })
}

#[test]
fn a_far_end_restarted_mid_run_fails_the_step_and_invents_no_idle_timeout() {
    let (mut first, addr) = serve(&["127.0.0.1:0"]);
    let run = Cmd::tcpbye(&[
        "path",
        &addr.to_string(),
        "--tests",
        "idle",
        "--idle-ladder",
        "4s",
        "--wait",
        "1s",
        "--json",
    ])
    .deadline(PATH_DEADLINE)
    .spawn();
    // The idle connection is up at the far end: kill that serve (its kernel
    // closes the connection) and start another on the same port.
    let deadline = common::within(10);
    while !established_to(addr.port()) {
        assert!(std::time::Instant::now() < deadline, "no test connection");
        std::thread::sleep(common::POLL);
    }
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait(common::within(5));
    let (_second, again) = serve(&[&addr.to_string()]);
    assert_eq!(again, addr);
    let out = run.finish_by(common::within(30));
    out.expect_code(3);
    let idle = idle_cases(&out);
    assert_eq!(idle.len(), 1, "{}", out.dump());
    assert_eq!(idle[0]["result"], "failed", "{}", out.dump());
    assert!(idle[0]["far"].is_null(), "{}", out.dump());
    assert_no_idle_timeout(&out);
}

/// How many connections to `port` are established (from /proc/net/tcp), both
/// ends counted.
fn established_count(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && (cols[1].rsplit(':').next() == Some(port.as_str())
                    || cols[2].rsplit(':').next() == Some(port.as_str()))
        })
        .count()
}

#[test]
fn an_interrupted_path_judges_no_unfinished_step() {
    let (_serve, addr) = serve(&["127.0.0.1:0"]);
    let run = Cmd::tcpbye(&[
        "path",
        &addr.to_string(),
        "--tests",
        "idle",
        "--idle-ladder",
        "2s,6s",
        "--wait",
        "1s",
        "--json",
    ])
    .deadline(PATH_DEADLINE)
    .spawn();
    // Both idle connections are up (two ends each): interrupt long before either
    // step has sent.
    let deadline = common::within(10);
    while established_count(addr.port()) < 4 {
        assert!(std::time::Instant::now() < deadline, "no test connections");
        std::thread::sleep(common::POLL);
    }
    run.interrupt();
    let out = run.finish_by(common::within(20));
    out.expect_code(130);
    let idle = idle_cases(&out);
    assert_eq!(idle.len(), 2, "{}", out.dump());
    for c in &idle {
        assert_eq!(c["result"], "interrupted", "{c}\n{}", out.dump());
    }
    assert_no_idle_timeout(&out);
    let summary = out.one("path-summary");
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert!(summary["idle_timeout_min_us"].is_null(), "{summary}");
}

/// A control connection that greets and never asks: it holds one of serve's slots.
fn silent_control(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"TCPBYE-CONTROL 1\n").expect("greet");
    s
}

/// The one answer line to `question` on a control connection, as sent.
fn ask_raw(addr: SocketAddr, question: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
    s.write_all(format!("TCPBYE-CONTROL 1\n{question}\n").as_bytes())
        .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn full_control_slots_answer_busy_and_path_waits_for_a_free_one() {
    let (_serve, addr) = serve(&["127.0.0.1:0", "--json"]);
    // A question about a token no connection carries is answered at once, not
    // after the 60 s it asks to wait: it holds no slot.
    let started = std::time::Instant::now();
    assert!(ask_raw(addr, "REPORT never-seen 60000").contains("path-unknown"));
    assert!(started.elapsed() < Duration::from_secs(1));
    // 256 connections that greet and never ask hold every slot.
    let silent: Vec<TcpStream> = (0..256).map(|_| silent_control(addr)).collect();
    let deadline = common::within(5);
    loop {
        let answer = ask_raw(addr, "HELLO");
        if answer == "{\"kind\":\"path-busy\"}\n" {
            break;
        }
        assert!(answer.contains("path-hello"), "{answer:?}");
        assert!(std::time::Instant::now() < deadline, "never busy");
        std::thread::sleep(common::POLL);
    }
    // path is told busy, says so, and asks again until serve has closed the
    // silent ones (2 s without a question).
    let out = path(&[
        &addr.to_string(),
        "--tests",
        "fin",
        "--wait",
        "1s",
        "--json",
    ]);
    out.expect_code(0);
    assert!(
        out.stderr.iter().any(|l| l.contains("the far end is busy")),
        "{}",
        out.dump()
    );
    assert_endings_faithful(&out, 2);
    // path's success within its 3.75 s of tries shows the slots came free well
    // before the old 10 s; and the silent ones were closed by serve.
    for mut s in silent {
        s.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
        let mut buf = [0u8; 64];
        let read = s.read(&mut buf);
        assert!(
            matches!(read, Ok(0)),
            "a silent control connection is still open: {read:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_second_greeting_with_a_used_token_is_refused() {
    let (_serve, addr) = serve(&["127.0.0.1:0", "--json"]);
    let mut owner = open_test_connection(addr, "tok-owned");
    owner.write_all(b"hello").expect("write");
    // Another connection with the same token is told so and closed: it cannot
    // take over the owner's report.
    let thief = |addr| {
        let mut thief = TcpStream::connect(addr).expect("connect");
        thief.set_read_timeout(Some(SOCKET_WAIT)).expect("timeout");
        thief
            .write_all(b"TCPBYE-PATH 1 tok-owned far-to-near rst\n")
            .expect("greet");
        let mut answer = Vec::new();
        thief.read_to_end(&mut answer).expect("an answer, then EOF");
        assert_eq!(answer, b"TCPBYE-PATH-USED\n");
    };
    thief(addr);
    let far = ask(addr, "REPORT tok-owned 0");
    assert_eq!(far["test"], "near-to-far idle", "the owner's: {far}");
    assert_eq!(far["open"], true, "{far}");
    // Still refused once the owner has ended and its report is kept.
    owner.shutdown(Shutdown::Write).expect("shutdown");
    let far = ask(addr, "REPORT tok-owned 3000");
    assert_eq!(far["open"], false, "{far}");
    assert_eq!(far["bytes_after_greeting"], 5, "{far}");
    thief(addr);
    let far = ask(addr, "REPORT tok-owned 0");
    assert_eq!(far["test"], "near-to-far idle", "{far}");
    assert_eq!(far["bytes_after_greeting"], 5, "{far}");
}

#[test]
fn a_far_end_of_another_protocol_version_is_one_line_and_exit_3() {
    for (answer, says) in [
        (
            &b"{\"kind\":\"path-hello\",\"version\":99}\n"[..],
            "version 99",
        ),
        (b"{\"kind\":\"path-hello\"}\n", "no version"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let far = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.set_read_timeout(Some(SOCKET_WAIT));
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        let out = run_path(&[&addr.to_string(), "--wait", "2s"]);
        let line = out.expect_one_error_line(3, "path protocol");
        assert!(line.contains(says), "{line}");
        assert!(line.contains("speaks version 1"), "{line}");
        assert!(out.stdout.is_empty(), "{}", out.dump());
        far.join().expect("far thread");
    }
}
