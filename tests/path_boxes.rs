//! `tcpbye path` through real middleboxes: `tcpbye serve` in far, `tcpbye path`
//! in near, and a box in mid (tests/common/topology.rs). What each box was seen to
//! do, every run:
//!
//! - a plain router: every ending arrives as sent both ways, no idle timeout;
//! - a conntrack router (`ct state invalid drop`, `nf_conntrack_tcp_loose=0`,
//!   established timeout 3 s): endings faithful; an idle flow is forgotten 3 s after
//!   its last packet and its next segment dropped, so the bracket holds 3 s and the
//!   failure is `black-holed`;
//! - socat: an RST arrives as a FIN in both directions (socat reads ECONNRESET as end
//!   of stream); with `-T 2` it ends a connection idle for 2 s with a FIN (`closed`);
//! - HAProxy (`mode tcp`, `timeout client/server 2s`): an RST from near reaches far
//!   as an RST, but one from far reaches near as a FIN; an idle connection is ended
//!   after 2 s with a FIN to near (`closed`);
//! - HAProxy with `option nolinger`: an idle connection is ended after 2 s with a
//!   FIN and, within a millisecond, an RST: `closed` every run, whichever of the
//!   two near's report names.
//!
//! Through the proxies TCP keepalive, tried past the timeout (`--confirm-keepalive`),
//! fails too: the proxy's kernel answers the probes and its idle timer counts data,
//! so the advice there is data, and the summary's `keepalive` is null. Through the conntrack router
//! the advice is keepalive.
//!
//! Every test needs root (namespaces, nftables) and the box's program; without them
//! it prints `SKIPPED <test>: <why>` and returns (CI makes that a failure).

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::topology::{FAR, MID_NEAR, Side, Topology};
use crate::common::{Finished, require_root, require_tool};

/// Returns from the test, loudly, unless it runs as root and every listed program
/// (with the argument that makes it print its version) works.
macro_rules! require {
    ($name:expr $(, $program:literal $probe:literal)*) => {
        if !require_root($name, "needs root (network namespaces, nftables)") {
            return;
        }
        for (program, probe) in [("unshare", "--version"), ("nsenter", "--version"),
            ("ip", "-V") $(, ($program, $probe))*]
        {
            if !require_tool($name, program, &[probe], &format!("{program} not installed")) {
                return;
            }
        }
    };
}

/// Far longer than any run here takes, also on a loaded machine.
const PATH_DEADLINE: Duration = Duration::from_secs(80);

/// `tcpbye serve` in far (its default plan) and `tcpbye path DIAL ARGS --json` in
/// near through the box; the finished run and how long it took.
fn path_through(topo: &Topology, args: &[&str]) -> (Finished, Duration) {
    let (_serve, port) = topo.serve_far(&[]);
    let dial = topo.dial(port).to_string();
    let mut argv = vec!["path", dial.as_str(), "--json"];
    argv.extend_from_slice(args);
    let started = Instant::now();
    let out = topo.near_tcpbye(&argv).deadline(PATH_DEADLINE).run();
    (out, started.elapsed())
}

/// The ending cases, keyed `"<test> <direction>"`.
fn endings(out: &Finished) -> Vec<(String, Value)> {
    out.objects("path-case")
        .into_iter()
        .filter(|c| c["test"] != "idle")
        .map(|c| {
            let key = format!(
                "{} {}",
                c["test"].as_str().unwrap_or("?"),
                c["direction"].as_str().unwrap_or("?")
            );
            (key, c)
        })
        .collect()
}

/// The idle cases as (idle µs, ladder, result).
fn idle_steps(out: &Finished) -> Vec<(u64, u64, String)> {
    out.objects("path-case")
        .into_iter()
        .filter(|c| c["test"] == "idle")
        .map(|c| {
            (
                c["idle_us"].as_u64().expect("idle_us"),
                c["ladder"].as_u64().expect("ladder"),
                c["result"].as_str().expect("result").to_owned(),
            )
        })
        .collect()
}

/// `s` seconds as µs.
fn us(s: f64) -> u64 {
    (s * 1e6) as u64
}

/// Asserts each ending's result: `rewritten` lists the `"<test> <direction>"` keys
/// whose RST arrived as a FIN; all others (of 8) arrive as sent.
fn assert_endings(out: &Finished, rewritten: &[&str]) {
    let cases = endings(out);
    assert_eq!(cases.len(), 8, "{}", out.dump());
    for (key, c) in &cases {
        let context = format!("{key}: {c}\n{}", out.dump());
        let wire = if key.starts_with("rst") { "rst" } else { "fin" };
        assert_eq!(c["sent"], wire, "{context}");
        assert_eq!(c["far"]["kind"], "path-far", "{context}");
        if rewritten.contains(&key.as_str()) {
            assert_eq!(c["result"], "rewritten", "{context}");
            assert_eq!(c["arrived"], "fin", "{context}");
            assert_eq!(c["note"], "RST arrived as FIN", "{context}");
        } else {
            assert_eq!(c["result"], "faithful", "{context}");
            assert_eq!(c["arrived"], wire, "{context}");
        }
        // The far end's own view agrees: what arrived there, or what it sent.
        if c["direction"] == "near-to-far" {
            assert_eq!(c["far"]["arrived"], c["arrived"], "{context}");
        } else {
            assert_eq!(c["far"]["sent"], wire, "{context}");
        }
        if key.starts_with("half") {
            let sent = c["after_fin"]["sent"].as_u64().expect("after_fin.sent");
            assert!(sent > 0, "{context}");
            assert_eq!(c["after_fin"]["arrived"].as_u64(), Some(sent), "{context}");
        }
    }
    let summary = out.one("path-summary");
    assert_eq!(summary["endings"], 8);
    assert_eq!(summary["faithful"], 8 - rewritten.len(), "{summary}");
}

/// Asserts the bracket holds `timeout_s` (min < timeout ≤ max), narrowed by the
/// second ladder to at most `width_s`, and the failure was `behaviour`; every idle
/// step up to the bracket's lower end delivered, every one from its upper end
/// failed that way.
fn assert_bracket(out: &Finished, timeout_s: f64, width_s: f64, behaviour: &str) {
    let summary = out.one("path-summary");
    let context = format!("{summary}\n{}", out.dump());
    let min = summary["idle_timeout_min_us"].as_u64().expect("min");
    let max = summary["idle_timeout_max_us"].as_u64().expect("max");
    assert!(
        min < us(timeout_s) && us(timeout_s) <= max,
        "bracket {min}–{max} µs holds {timeout_s} s\n{context}"
    );
    assert!(max - min <= us(width_s), "narrowed\n{context}");
    assert_eq!(summary["idle_behaviour"], behaviour, "{context}");
    let steps = idle_steps(out);
    assert!(steps.iter().any(|(_, ladder, _)| *ladder == 2), "{context}");
    // Ladders 1 and 2 make the bracket; 3 (`--confirm-keepalive`) is checked apart.
    for (idle, _, result) in steps.iter().filter(|(_, ladder, _)| *ladder != 3) {
        if *idle <= min {
            assert_eq!(result, "delivered", "{idle} µs\n{context}");
        } else {
            assert_eq!(result, behaviour, "{idle} µs\n{context}");
        }
    }
}

/// Asserts the advice for a path that closed idle connections with a FIN (a proxy):
/// data, since keepalive probes do not reach the proxy's idle timer, so no
/// keepalive settings (`keepalive: null`); and that keepalive, tried past the
/// timeout (`--confirm-keepalive`), indeed failed.
fn assert_proxy_advice(out: &Finished) {
    let summary = out.one("path-summary");
    let advice = summary["advice"].as_str().expect("advice");
    assert!(advice.contains("application heartbeat"), "{advice}");
    assert!(!advice.contains("--keepalive"), "{advice}");
    assert!(summary["keepalive"].is_null(), "{}", out.dump());
    assert!(
        summary["keepalive_tried"]["idle_s"].as_u64().is_some(),
        "{}",
        out.dump()
    );
    assert_eq!(summary["keepalive_confirmed"], false, "{}", out.dump());
    let confirm: Vec<Value> = out
        .objects("path-case")
        .into_iter()
        .filter(|c| c["ladder"] == 3)
        .collect();
    assert_eq!(confirm.len(), 1, "{}", out.dump());
    assert_eq!(confirm[0]["result"], "closed", "{}", out.dump());
}

#[test]
fn through_a_router_every_ending_is_faithful_and_no_idle_timeout_shows() {
    let name = "through_a_router_every_ending_is_faithful_and_no_idle_timeout_shows";
    require!(name);
    let topo = Topology::router();
    let (out, _) = path_through(
        &topo,
        &[
            "--max-idle",
            "3s",
            "--wait",
            "2s",
            "--expect-faithful",
            "--expect-idle-over",
            "3s",
        ],
    );
    out.expect_code(0);
    assert_endings(&out, &[]);
    for (key, c) in endings(&out) {
        let extra = c["extra_us"].as_u64().expect("extra_us");
        assert!(extra < 100_000, "{key}: {extra} µs\n{}", out.dump());
    }
    let steps = idle_steps(&out);
    assert_eq!(
        steps,
        vec![
            (us(1.5), 1, "delivered".to_owned()),
            (us(3.0), 1, "delivered".to_owned())
        ],
        "{}",
        out.dump()
    );
    let summary = out.one("path-summary");
    assert_eq!(summary["idle_timeout_min_us"], us(3.0), "{summary}");
    assert!(summary["idle_timeout_max_us"].is_null(), "{summary}");
    assert!(summary["idle_behaviour"].is_null(), "{summary}");
    assert_eq!(summary["misses"], serde_json::json!([]), "{summary}");
}

#[test]
fn through_a_conntrack_router_an_idle_flow_is_black_holed_after_its_timeout() {
    let name = "through_a_conntrack_router_an_idle_flow_is_black_holed_after_its_timeout";
    require!(name, "nft" "--version");
    let topo = Topology::conntrack_router(3);
    let (out, took) = path_through(
        &topo,
        &[
            "--max-idle",
            "8s",
            "--wait",
            "2s",
            "--expect-idle-over",
            "10s",
        ],
    );
    // About 11 s for the first ladder (1, 2, 4, 8 s) and 7 s for the second.
    assert!(
        took < Duration::from_secs(35),
        "took {took:?}\n{}",
        out.dump()
    );
    out.expect_code(1);
    let miss = out
        .stderr
        .iter()
        .find(|l| l.starts_with("tcpbye: expectation not met:"))
        .unwrap_or_else(|| panic!("no miss line\n{}", out.dump()));
    assert!(miss.contains("expected over 10.000s"), "{miss}");
    assert_endings(&out, &[]);
    // conntrack forgets the flow 3 s after its last packet (the ACK of the far
    // end's answer, where the idle period starts): 2.8 s delivered, 3.2 s not.
    assert_bracket(&out, 3.0, 0.4, "black-holed");
    let first: Vec<(u64, String)> = idle_steps(&out)
        .into_iter()
        .filter(|(_, ladder, _)| *ladder == 1)
        .map(|(idle, _, result)| (idle, result))
        .collect();
    let expected: Vec<(u64, String)> = [
        (1.0, "delivered"),
        (2.0, "delivered"),
        (4.0, "black-holed"),
        (8.0, "black-holed"),
    ]
    .iter()
    .map(|(s, r)| (us(*s), (*r).to_owned()))
    .collect();
    assert_eq!(first, expected, "{}", out.dump());
    let advice = out.one("path-summary")["advice"].clone();
    assert!(
        advice
            .as_str()
            .is_some_and(|a| a.contains("--keepalive 1s,1s,3")),
        "{advice}"
    );
    // The settings the advice names, in `keepalive`.
    let keepalive = out.one("path-summary")["keepalive"].clone();
    assert_eq!(
        keepalive,
        serde_json::json!({"idle_s": 1, "intvl_s": 1, "cnt": 3}),
        "{}",
        out.dump()
    );
    // Black-holed: nothing of the data sent after the idle period reached far.
    for c in out.objects("path-case") {
        if c["result"] == "black-holed" {
            assert_eq!(c["far"]["bytes_after_greeting"], 0, "{c}");
            assert_eq!(c["far"]["arrived"], "nothing", "{c}");
        }
    }
}

#[test]
fn through_socat_an_rst_arrives_as_a_fin_both_ways() {
    let name = "through_socat_an_rst_arrives_as_a_fin_both_ways";
    require!(name, "socat" "-V");
    let topo = Topology::socat_proxy(&[]);
    let (out, _) = path_through(
        &topo,
        &[
            "--tests",
            "fin,rst,half,rst-unread",
            "--wait",
            "2s",
            "--expect-faithful",
        ],
    );
    out.expect_code(1);
    let rewritten = [
        "rst near-to-far",
        "rst-unread near-to-far",
        "rst far-to-near",
        "rst-unread far-to-near",
    ];
    assert_endings(&out, &rewritten);
    let misses: Vec<&String> = out
        .stderr
        .iter()
        .filter(|l| l.starts_with("tcpbye: expectation not met:"))
        .collect();
    assert_eq!(misses.len(), 4, "{}", out.dump());
    assert!(
        misses
            .iter()
            .any(|m| m.contains("rst near-to-far: rewritten (RST arrived as FIN)")),
        "{}",
        out.dump()
    );
}

#[test]
fn through_socat_with_an_idle_timeout_the_path_closes_after_it() {
    let name = "through_socat_with_an_idle_timeout_the_path_closes_after_it";
    require!(name, "socat" "-V");
    let topo = Topology::socat_proxy(&["-T", "2"]);
    let (out, _) = path_through(
        &topo,
        &[
            "--tests",
            "idle",
            "--max-idle",
            "3s",
            "--wait",
            "1s",
            "--confirm-keepalive",
        ],
    );
    out.expect_code(0);
    assert_bracket(&out, 2.0, 0.3, "closed");
    assert_proxy_advice(&out);
    // socat's FIN reached far too: far never sent one itself.
    for c in out.objects("path-case") {
        if c["result"] == "closed" {
            assert_eq!(c["far"]["arrived"], "fin", "{c}");
            assert!(c["far"]["sent"].is_null(), "{c}");
            assert_eq!(c["far"]["bytes_after_greeting"], 0, "{c}");
        }
    }
}

#[test]
fn through_haproxy_an_rst_from_far_arrives_as_a_fin_and_idle_connections_close() {
    let name = "through_haproxy_an_rst_from_far_arrives_as_a_fin_and_idle_connections_close";
    require!(name, "haproxy" "-v");
    let topo = Topology::haproxy(Duration::from_secs(2));
    let (out, _) = path_through(
        &topo,
        &["--max-idle", "3s", "--wait", "1s", "--confirm-keepalive"],
    );
    out.expect_code(0);
    assert_endings(&out, &["rst far-to-near", "rst-unread far-to-near"]);
    assert_bracket(&out, 2.0, 0.3, "closed");
    assert_proxy_advice(&out);
    // To far, HAProxy sends a FIN then an RST on the timeout, and far's view of
    // that varies with timing; near's FIN is what the test judges by.
    for c in out.objects("path-case") {
        if c["result"] == "closed" {
            assert_eq!(c["far"]["bytes_after_greeting"], 0, "{c}");
            assert!(c["far"]["sent"].is_null(), "{c}");
        }
    }
}

#[test]
fn through_haproxy_with_nolinger_a_fin_then_rst_is_the_proxy_closing_not_a_reset() {
    let name = "through_haproxy_with_nolinger_a_fin_then_rst_is_the_proxy_closing_not_a_reset";
    require!(name, "haproxy" "-v");
    // HAProxy ends an idle connection with a FIN and an RST right after it
    // (tests/middlebox.rs reads that on the wire). Whether near's report says
    // `rst` (FIN, then RST) or `fin` depends on whether the RST had arrived when
    // near read the FIN; the path's doing is the same, and so is the judgement.
    let topo = Topology::haproxy_with(Duration::from_secs(2), &["option nolinger"]);
    let (out, _) = path_through(
        &topo,
        &[
            "--tests",
            "idle",
            "--max-idle",
            "3s",
            "--wait",
            "1s",
            "--confirm-keepalive",
        ],
    );
    out.expect_code(0);
    assert_bracket(&out, 2.0, 0.3, "closed");
    assert_proxy_advice(&out);
    for c in out.objects("path-case") {
        if c["result"] == "closed" {
            let note = c["note"].as_str().expect("note");
            assert!(note.contains("the path closed the connection"), "{c}");
            assert!(!note.contains("answered for it"), "{c}");
            assert!(c["far"]["sent"].is_null(), "{c}");
            assert_eq!(c["far"]["bytes_after_greeting"], 0, "{c}");
        }
    }
    let human = out.one("path-summary")["advice"].clone();
    assert!(
        human.as_str().is_some_and(|a| a.contains("proxy")),
        "{human}"
    );
}

/// A small TCP proxy for mid, in Python: it accepts on MID_NEAR:PORT, waits
/// CONNECT_S before it connects to FAR:PORT (a proxy whose upstream connect is
/// slow: a DNS lookup, a far upstream), then forwards both ways; the near end's FIN
/// it holds FIN_S before passing it on (a path that delays endings), the far end's
/// it passes on at once. It prints `listening` once it listens.
const DELAY_PROXY: &str = r#"
import socket, sys, threading, time
host, port, far = sys.argv[1], int(sys.argv[2]), sys.argv[3]
connect_s, fin_s = float(sys.argv[4]), float(sys.argv[5])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((host, port))
srv.listen(64)
print("listening", flush=True)
def pump(src, dst, hold):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    time.sleep(hold)
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve(client):
    time.sleep(connect_s)
    try:
        up = socket.create_connection((far, port))
    except OSError:
        client.close()
        return
    for s in (client, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ways = [threading.Thread(target=pump, args=(client, up, fin_s)),
            threading.Thread(target=pump, args=(up, client, 0.0))]
    for w in ways:
        w.start()
    for w in ways:
        w.join()
    client.close()
    up.close()
while True:
    client, _ = srv.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
"#;

#[test]
fn extra_us_near_to_far_does_not_count_a_slow_upstream_connect_as_the_baseline() {
    let name = "extra_us_near_to_far_does_not_count_a_slow_upstream_connect_as_the_baseline";
    require!(name, "python3" "--version");
    // A router in mid (nothing of its own), and the delay proxy beside it: every
    // connection through it waits 250 ms for its upstream connect, and the near
    // end's FIN takes 400 ms longer than data.
    const CONNECT_S: f64 = 0.25;
    const FIN_S: f64 = 0.4;
    let topo = Topology::router();
    let (_serve, port) = topo.serve_far(&[]);
    let mut proxy = topo
        .program(
            Side::Mid,
            "python3",
            &[
                "-c",
                DELAY_PROXY,
                &MID_NEAR.to_string(),
                &port.to_string(),
                &FAR.to_string(),
                &CONNECT_S.to_string(),
                &FIN_S.to_string(),
            ],
        )
        .spawn();
    let ready = proxy.try_stdout_line(crate::common::within(5));
    assert_eq!(ready.as_deref(), Some("listening"), "{}", proxy.dump());
    let dial = format!("{MID_NEAR}:{port}");
    let out = topo
        .near_tcpbye(&["path", &dial, "--json", "--tests", "fin", "--wait", "2s"])
        .deadline(PATH_DEADLINE)
        .run();
    // The FIN from near arrived 400 ms later than data takes: `delayed`, by that
    // much. Measured from the greeting (which waited for the upstream connect),
    // it read 150 ms. Tolerance: 25 ms either way (Python's sleep and scheduling on
    // a loaded machine, a few ms in a quiet one).
    out.expect_code(0);
    let cases = endings(&out);
    let context = out.dump();
    let (_, near_to_far) = cases
        .iter()
        .find(|(key, _)| key == "fin near-to-far")
        .unwrap_or_else(|| panic!("no fin near-to-far\n{context}"));
    // The far end got the near end's mark, after the upstream connect.
    assert!(
        near_to_far["far"]["mark_us"].as_u64().is_some(),
        "{context}"
    );
    let extra = near_to_far["extra_us"].as_u64().expect("extra_us");
    assert!(
        extra.abs_diff(us(FIN_S)) <= us(0.025),
        "extra_us {extra} µs, not {FIN_S} s ± 25 ms\n{context}"
    );
    assert_eq!(near_to_far["result"], "delayed", "{context}");
    // The far end's FIN the proxy passes on at once: not delayed, whatever the
    // upstream connect took.
    let (_, far_to_near) = cases
        .iter()
        .find(|(key, _)| key == "fin far-to-near")
        .unwrap_or_else(|| panic!("no fin far-to-near\n{context}"));
    let extra = far_to_near["extra_us"].as_u64().expect("extra_us");
    assert!(extra < us(0.05), "far to near: {extra} µs\n{context}");
    assert_eq!(far_to_near["result"], "faithful", "{context}");
}
