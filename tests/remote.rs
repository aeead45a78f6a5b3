//! `tcpbye check ADDR` against a program on another host (a python3 program in the
//! far namespace, behind a router): what the wire and tcpbye's own socket show.

use crate::common;

use std::time::Duration;

use crate::common::topology::{Side, Topology};
use crate::common::{Proc, require_root, require_tool, within};
use serde_json::Value;

/// Writes one byte every 250 ms with TCP_USER_TIMEOUT 2 s and no keepalive, and
/// waits for an error between writes, so its ETIMEDOUT is logged when its kernel
/// gives up; logs its own monotonic times, in seconds from its accept().
const USER_TIMEOUT_WRITER: &str = r#"
import select, socket, threading, time
s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c, t0):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2000)
    try:
        while True:
            c.send(b".")
            print("sent", "%.6f" % (time.monotonic() - t0), flush=True)
            readable, _, _ = select.select([c], [], [], 0.25)
            if readable and not c.recv(1):
                print("eof", "%.6f" % (time.monotonic() - t0), flush=True)
                break
    except OSError as e:
        print("gave-up", e.errno, "%.6f" % (time.monotonic() - t0), flush=True)
    c.close()
while True:
    c, _ = s.accept()
    t0 = time.monotonic()
    print("accept", flush=True)
    threading.Thread(target=serve, args=(c, t0), daemon=True).start()
"#;

/// Echoes until EOF, then closes with SO_LINGER {on, 0}: an RST.
const RST_AT_EOF: &str = r#"
import socket, struct, threading, time
s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c, t0):
    try:
        while True:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
    except OSError as e:
        print("error", e.errno, flush=True)
        c.close()
        return
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t = time.monotonic() - t0
    c.close()
    print("reset-at-eof", "%.6f" % t, flush=True)
while True:
    c, _ = s.accept()
    t0 = time.monotonic()
    print("accept", flush=True)
    threading.Thread(target=serve, args=(c, t0), daemon=True).start()
"#;

/// Accepts and keeps every connection, never reads, never closes.
const LEAKER: &str = r#"
import socket
s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)
    print("accept", flush=True)
"#;

/// Echoes, with its own keepalive: 1 s idle, 1 s interval, 3 probes.
const KEEPALIVE_1_1_3: &str = r#"
import socket, threading, time
s = socket.socket(); s.bind(("0.0.0.0", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c, t0):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    try:
        while True:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
        print("eof", "%.6f" % (time.monotonic() - t0), flush=True)
    except OSError as e:
        print("gave-up", e.errno, "%.6f" % (time.monotonic() - t0), flush=True)
    c.close()
while True:
    c, _ = s.accept()
    t0 = time.monotonic()
    print("accept", flush=True)
    threading.Thread(target=serve, args=(c, t0), daemon=True).start()
"#;

/// `script` (python3) in far behind a router, for `tcpbye check` in near: a
/// program on another host, the address to dial. `None` (after a visible
/// SKIPPED) without root or the tools.
fn remote_program(test: &str, script: &str) -> Option<(Topology, Proc, String)> {
    if !require_root(
        test,
        "network namespaces, capture, drop and reboot need root",
    ) || !require_tool(test, "python3", &["--version"], "python3 not installed")
        || !require_tool(test, "ip", &["-V"], "iproute2 not installed")
    {
        return None;
    }
    let topology = Topology::router();
    let mut proc = topology
        .program(Side::Far, "python3", &["-c", script])
        .deadline(Duration::from_secs(60))
        .spawn();
    let line = proc
        .try_stdout_line(within(5))
        .unwrap_or_else(|| panic!("python3 printed no port\n{}", proc.dump()));
    let port: u16 = line.trim().parse().expect("a port");
    let addr = topology.dial(port).to_string();
    Some((topology, proc, addr))
}

fn case<'a>(out: &'a [Value], mode: &str) -> &'a Value {
    out.iter()
        .find(|c| c["mode"] == mode)
        .unwrap_or_else(|| panic!("no check-case for {mode}: {out:?}"))
}

/// The program's log lines up to the first that starts with `event` (or all that
/// arrive by `deadline`).
fn logs_until(program: &mut Proc, event: &str, deadline: std::time::Instant) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = program.try_stdout_line(deadline) {
        let last = line.starts_with(event);
        lines.push(line);
        if last {
            break;
        }
    }
    lines
}

/// `tcpbye check ADDR ARGS --json` in near, as root (with CAP_NET_RAW: judged from the wire).
fn check(topology: &Topology, addr: &str, args: &[&str]) -> common::Finished {
    let mut argv = vec!["check", addr];
    argv.extend_from_slice(args);
    argv.push("--json");
    topology
        .near_tcpbye(&argv)
        .deadline(Duration::from_secs(30))
        .run()
}

/// The same as uid/gid nobody without capabilities (no CAP_NET_RAW: judged from
/// tcpbye's own socket), as `check::without_cap_net_raw_*` runs it.
fn check_as_nobody(topology: &Topology, addr: &str, args: &[&str]) -> common::Finished {
    let mut argv: Vec<&str> = common::AS_NOBODY[1..].to_vec();
    argv.extend_from_slice(&[common::BIN, "check", addr]);
    argv.extend_from_slice(args);
    argv.push("--json");
    topology
        .program(Side::Near, common::AS_NOBODY[0], &argv)
        .deadline(Duration::from_secs(30))
        .run()
}

fn text<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field].as_str().unwrap_or("")
}

fn micros(case: &Value, field: &str) -> u64 {
    case[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number: {case}"))
}

/// A duration as tcpbye writes it (`174µs`, `6.0ms`, `3.392s`), in µs.
fn parse_us(text: &str) -> Option<u64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("µs") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (text.strip_suffix('s')?, 1e6)
    };
    let value: f64 = number.parse().ok()?;
    Some((value * scale).round() as u64)
}

/// The durations in `text` right after `before` and after `and` (`… between +1.728s
/// and +3.392s …`), in µs.
fn range_after(text: &str, before: &str, and: &str) -> (u64, u64) {
    let rest = &text[text
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {text:?}"))
        + before.len()..];
    let word = |s: &str| -> u64 {
        let token = s
            .trim_start_matches(['+', '≈', ' '])
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ')' || c == ':')
            .next()
            .unwrap_or("");
        parse_us(token).unwrap_or_else(|| panic!("not a duration: {token:?} in {text:?}"))
    };
    let low = word(rest);
    let upper = &rest[rest
        .find(and)
        .unwrap_or_else(|| panic!("no {and:?} after {before:?} in {text:?}"))
        + and.len()..];
    (low, word(upper))
}

/// How much later than tcpbye's `connect()` (where the connection's clock starts)
/// a program's clock starts, at its `accept()`: the handshake and its wake-up.
const ACCEPT_LAG_US: i64 = 5_000;
/// How much later than the event a reading of it may come.
const READING_SLACK_US: i64 = 100_000;
/// How much later than the event a program may log it: a python thread woken by
/// an error, on a busy host.
const PROGRAM_WAKE_US: i64 = 20_000;

/// A program's log line `EVENT … SECONDS` (seconds from its accept(), on the
/// monotonic clock), in µs from tcpbye's action: early by the time between
/// tcpbye's `connect()` and its accept(), at most [`ACCEPT_LAG_US`].
fn logged_after_action(lines: &[String], event: &str, case: &Value) -> i64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with(event))
        .unwrap_or_else(|| panic!("the program logged no {event:?}: {lines:?}"));
    let seconds: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    (seconds * 1e6) as i64 - micros(case, "action_t_us") as i64
}

/// Asserts that `claimed` (µs after the action) is when the program's own log
/// says `logged` happened, or a reading later: never before it (but for its
/// wake-up to log it).
fn assert_by(claimed: u64, logged: i64, what: &str, case: &Value) {
    let claimed = claimed as i64;
    assert!(
        logged <= claimed + PROGRAM_WAKE_US && claimed <= logged + ACCEPT_LAG_US + READING_SLACK_US,
        "{what}: +{claimed}µs claimed, +{logged}µs (+ up to {ACCEPT_LAG_US}µs) in its own log: {case}"
    );
}

#[test]
fn after_drop_a_program_whose_kernel_gives_up_on_its_data_is_judged_from_its_retransmissions() {
    let test = common::test_name!();
    let Some((topology, mut program, addr)) = remote_program(test, USER_TIMEOUT_WRITER) else {
        return;
    };
    let out = check(&topology, &addr, &["--modes", "drop", "--wait", "6s"]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    let drop = case(&cases, "drop");
    let logs = logs_until(&mut program, "gave-up", within(5));
    // Its one-byte writes are data sent again, not keepalive probes (it has none).
    let evidence = text(drop, "evidence");
    assert!(evidence.contains("wire: its retransmissions"), "{drop}");
    assert!(!evidence.contains("keepalive"), "{drop}");
    assert!(!text(drop, "prediction").contains("keepalive"), "{drop}");
    // They stop: its kernel gave up (TCP_USER_TIMEOUT), which the wire shows only
    // as a likelihood, between its last retransmission and the next one due.
    assert_eq!(
        drop["reaction"],
        "kernel-gave-up",
        "{}\n{logs:?}",
        out.dump()
    );
    assert!(evidence.contains("probably"), "{drop}");
    let (last, due) = range_after(evidence, "probably gave up between", "and");
    let died = logged_after_action(&logs, "gave-up 110", drop);
    assert!(
        last as i64 <= died + ACCEPT_LAG_US && died <= due as i64,
        "ETIMEDOUT +{died}µs outside the range +{last}..+{due}µs: {drop}"
    );
    // Noticed by then, as the words have it (to the millisecond).
    assert!(
        micros(drop, "noticed_after_us").abs_diff(due) < 1_000,
        "{drop}"
    );
}

#[test]
fn a_hung_tcpbye_still_acknowledges_a_writers_data_and_the_evidence_says_so() {
    let test = common::test_name!();
    let Some((topology, mut program, addr)) = remote_program(test, USER_TIMEOUT_WRITER) else {
        return;
    };
    let out = check(&topology, &addr, &["--modes", "hang", "--wait", "2s"]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    let hang = case(&cases, "hang");
    assert_eq!(hang["reaction"], "unnoticed", "{}", out.dump());
    let evidence = text(hang, "evidence");
    let prediction = text(hang, "prediction");
    assert!(!evidence.contains("nothing from it"), "{hang}");
    assert!(!prediction.contains("no retransmission"), "{hang}");
    // As many segments as it wrote within the wait (one byte every 250 ms), each
    // acknowledged by tcpbye's kernel.
    let logs = logs_until(&mut program, "gave-up", within(5));
    let action = micros(hang, "action_t_us") as f64 / 1e6;
    let written = logs
        .iter()
        .filter_map(|l| l.strip_prefix("sent "))
        .filter_map(|t| t.parse::<f64>().ok())
        .filter(|t| (action..action + 2.0).contains(t))
        .count();
    let seen: usize = evidence
        .split("wire: its data, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of its data segments: {hang}"));
    assert!(written >= 6, "it wrote {written} times in 2 s: {logs:?}");
    assert!(
        seen.abs_diff(written) <= 1,
        "{seen} segments seen, {written} written: {hang}"
    );
    assert!(
        evidence.contains("acknowledged by tcpbye's kernel"),
        "{hang}"
    );
}

#[test]
fn half_against_a_program_that_answers_with_an_rst_is_reset() {
    let test = common::test_name!();
    let Some((topology, mut program, addr)) = remote_program(test, RST_AT_EOF) else {
        return;
    };
    // From the wire. tcpbye reads ECONNRESET, then 0: the 0 is no FIN.
    let out = check(
        &topology,
        &addr,
        &["--modes", "half", "--request", "hi\\n", "--wait", "1s"],
    );
    out.expect_code(0);
    let half = case(&out.objects("check-case"), "half").clone();
    assert_eq!(half["reaction"], "reset", "{}", out.dump());
    assert!(text(&half, "evidence").contains("wire: its RST"), "{half}");
    let logs = logs_until(&mut program, "reset-at-eof", within(5));
    let reset = logged_after_action(&logs, "reset-at-eof", &half);
    assert_by(micros(&half, "noticed_after_us"), reset, "its RST", &half);

    // From tcpbye's socket alone (no CAP_NET_RAW): the ECONNRESET it read.
    let out = check_as_nobody(
        &topology,
        &addr,
        &["--modes", "half", "--request", "hi\\n", "--wait", "1s"],
    );
    out.expect_code(0);
    let half = case(&out.objects("check-case"), "half").clone();
    assert_eq!(half["reaction"], "reset", "{}", out.dump());
    assert!(text(&half, "evidence").contains("ECONNRESET"), "{half}");
}

#[test]
fn without_cap_net_raw_fin_against_a_program_that_answers_with_an_rst_is_reset() {
    let test = common::test_name!();
    let Some((topology, mut program, addr)) = remote_program(test, RST_AT_EOF) else {
        return;
    };
    // tcpbye's closed socket leaves FIN_WAIT without TIME_WAIT: an RST ended it.
    let out = check_as_nobody(
        &topology,
        &addr,
        &["--modes", "fin", "--request", "hi\\n", "--wait", "1s"],
    );
    out.expect_code(0);
    let fin = case(&out.objects("check-case"), "fin").clone();
    assert_eq!(fin["reaction"], "reset", "{}", out.dump());
    assert!(!text(&fin, "evidence").contains("nothing from it"), "{fin}");
    assert!(
        text(&fin, "evidence").contains("without TIME_WAIT"),
        "{fin}"
    );
    let logs = logs_until(&mut program, "reset-at-eof", within(5));
    // By the reading that found tcpbye's socket gone (every 5 ms).
    let reset = logged_after_action(&logs, "reset-at-eof", &fin);
    assert_by(micros(&fin, "noticed_after_us"), reset, "its RST", &fin);
}

#[test]
fn rst_against_a_program_on_another_host_keeps_its_action_time() {
    let test = common::test_name!();
    let Some((topology, _program, addr)) = remote_program(test, RST_AT_EOF) else {
        return;
    };
    let out = check(&topology, &addr, &["--modes", "rst", "--wait", "1s"]);
    out.expect_code(0);
    let rst = case(&out.objects("check-case"), "rst").clone();
    assert_eq!(rst["reaction"], "not-judged", "{}", out.dump());
    // Acting 200 ms after connecting (no --request).
    let action = micros(&rst, "action_t_us");
    assert!((150_000..1_000_000).contains(&action), "{rst}");
}

#[test]
fn without_cap_net_raw_half_against_a_leaker_is_leaked_like_fin() {
    let test = common::test_name!();
    let Some((topology, _program, addr)) = remote_program(test, LEAKER) else {
        return;
    };
    let out = check_as_nobody(&topology, &addr, &["--modes", "fin,half", "--wait", "1s"]);
    out.expect_code(0);
    let cases = out.objects("check-case");
    for mode in ["fin", "half"] {
        let c = case(&cases, mode);
        assert_eq!(c["reaction"], "leaked", "{mode}: {}", out.dump());
        assert!(
            text(c, "evidence").contains("acknowledged tcpbye's FIN"),
            "{mode}: {c}"
        );
    }
    // Alone, half is what --expect-no-leak fails on.
    let out = check_as_nobody(
        &topology,
        &addr,
        &["--modes", "half", "--wait", "1s", "--expect-no-leak"],
    );
    out.expect_code(1);
    assert_eq!(
        case(&out.objects("check-case"), "half")["reaction"],
        "leaked",
        "{}",
        out.dump()
    );
}

#[test]
fn a_keepalive_seen_on_the_wire_is_predicted_as_a_range_and_counted_at_its_rst() {
    let test = common::test_name!();
    let Some((topology, mut program, addr)) = remote_program(test, KEEPALIVE_1_1_3) else {
        return;
    };
    // Watched 2.5 s: two probes 1 s apart, no RST yet. Its count (3) is not
    // visible: the prediction is a range from "the probes seen are all" to
    // Linux's default of 9.
    let out = check(&topology, &addr, &["--modes", "drop", "--wait", "2500ms"]);
    out.expect_code(0);
    let short = case(&out.objects("check-case"), "drop").clone();
    assert_eq!(short["reaction"], "unnoticed", "{}", out.dump());
    let prediction = text(&short, "prediction");
    let (low, high) = range_after(prediction, "between", "and");
    assert!(
        micros(&short, "would_notice_after_us").abs_diff(low) < 1_000,
        "{short}"
    );
    assert!(low < high, "{short}");
    assert_eq!(short["settings_from"], "wire", "{short}");
    // Its end (tcpbye resets what it never noticed once the wait is over).
    let _ = logs_until(&mut program, "gave-up", within(5));

    // Watched 6 s: the third probe, then its RST; its kernel's own ETIMEDOUT.
    let out = check(&topology, &addr, &["--modes", "drop", "--wait", "6s"]);
    out.expect_code(0);
    let long = case(&out.objects("check-case"), "drop").clone();
    assert_eq!(long["reaction"], "kernel-gave-up", "{}", out.dump());
    assert!(
        text(&long, "evidence").contains("after 3 keepalive probes"),
        "{long}"
    );
    let noticed = micros(&long, "noticed_after_us");
    let logs = logs_until(&mut program, "gave-up", within(5));
    let died = logged_after_action(&logs, "gave-up 110", &long);
    assert_by(noticed, died, "its keepalive's ETIMEDOUT", &long);
    // The short run's range holds it (another connection, the same settings:
    // within the timer's granularity).
    assert!(
        low.saturating_sub(50_000) <= noticed && noticed <= high + 50_000,
        "+{noticed}µs outside the predicted +{low}..+{high}µs: {short}"
    );
}
