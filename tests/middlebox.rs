//! What real middleboxes do to connection endings and to idle flows, observed with
//! `tcpbye serve --json` in far and `tcpbye connect --json` in near, with the box in
//! mid (see tests/common/topology.rs: three network namespaces the test builds and
//! removes). What each box was seen to do, every run:
//!
//! - a plain router passes a FIN as a FIN and an RST as an RST, and far sees near's
//!   own address;
//! - socat (1.7.4) terminates TCP: far sees mid's address, a FIN as a FIN, and an RST
//!   from near as a FIN (socat reads ECONNRESET as end of stream). With `-T 2` it ends
//!   an idle connection after 2 s with a FIN to each side;
//! - HAProxy (2.6, `mode tcp`, `timeout client/server 2s`) ends an idle connection
//!   after 2 s with a FIN to the client (near), and to the server (far) a FIN followed
//!   within a millisecond by an RST. A `serve` that reads the FIN and closes sees
//!   that as `rst` with `fin_before_rst` in most runs, but as a plain `fin` when its
//!   own FIN reaches HAProxy before the RST leaves (HAProxy then closes cleanly), so
//!   the test holds far's socket open (`--close hang`) and reads the wire;
//! - HAProxy with `option nolinger` ends an idle connection to the client (near)
//!   with a FIN and an RST within a millisecond after it (near holds its socket open:
//!   a client that answers the FIN with its own may reach HAProxy before the RST
//!   leaves, and then no RST comes);
//! - a conntrack router (`ct state invalid drop`, `nf_conntrack_tcp_loose=0`,
//!   established timeout 3 s) delivers data sent after 1 s of idleness, but forgets a
//!   flow idle for 5 s: its entry is gone, near's next data is dropped without a
//!   word, far sees nothing, and near retransmits until `--user-timeout` ends it with
//!   ETIMEDOUT.
//!
//! Every test needs root (namespaces, nftables, capture) and the box's program; without
//! them it prints `SKIPPED <test>: <why>` and returns (CI makes that a failure).

#![cfg(target_os = "linux")]

use crate::common;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::topology::{MID_FAR, NEAR, Side, Topology, processes_in};
use crate::common::{Finished, require_root, require_tool};

/// Returns from the test, loudly, unless it runs as root and every listed program
/// (with the argument that makes it print its version) works.
macro_rules! require {
    ($name:expr $(, $program:literal $probe:literal)*) => {
        if !require_root($name, "needs root (network namespaces, nftables, packet capture)") {
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

/// A deadline `secs` from now.
fn by(secs: u64) -> Instant {
    common::within(secs)
}

/// The one connection report of a finished `--json` run.
fn report(run: &Finished) -> Value {
    run.one("connection")
}

/// `s` seconds as µs, for comparing with a report's µs fields.
fn us(s: f64) -> u64 {
    (s * 1e6) as u64
}

fn u64_of(report: &Value, field: &str) -> u64 {
    common::u64_field(report, field)
}

/// The flags of the captured segments the other end sent, except those from before the
/// report's start (far: the handshake that completed before `accept()`).
fn incoming_flags(report: &Value) -> Vec<Vec<String>> {
    packets(report)
        .iter()
        .filter(|p| p["outgoing"] == false && p["t_us"].as_u64() > Some(0))
        .map(|p| {
            p["flags"]
                .as_array()
                .expect("flags")
                .iter()
                .map(|f| f.as_str().expect("flag").to_owned())
                .collect()
        })
        .collect()
}

fn packets(report: &Value) -> &[Value] {
    report["packets"]
        .as_array()
        .unwrap_or_else(|| panic!("no packets (was --pcap given?): {report}"))
}

fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f == flag)
}

/// `serve` in far and `connect` in near through the box, the connection ending with
/// `mode` after 100 ms; returns (near's, far's) finished runs.
fn one_ending(topo: &Topology, mode: &str) -> (Finished, Finished) {
    let (serve, port) = topo.serve_far(&["--once", "--json", "--timeout", "5s", "--no-probe"]);
    let dial = topo.dial(port).to_string();
    let near = topo
        .near_tcpbye(&[
            "connect",
            &dial,
            "--close",
            mode,
            "--after",
            "100ms",
            "--json",
            "--timeout",
            "3s",
        ])
        .spawn()
        .finish_by(by(6));
    let far = serve.finish_by(by(6));
    (near, far)
}

/// Asserts the ending near caused and the one far saw, and the address far saw near
/// at.
fn assert_ending(near: &Finished, far: &Finished, sent: &str, seen: &str, peer_ip: &str) {
    let context = format!("{near}\n{far}");
    assert_eq!(near.code, Some(0), "{context}");
    let near_report = report(near);
    assert_eq!(near_report["verdict"], sent, "{context}");
    assert_eq!(near_report["closer"], "local", "{context}");
    let far_report = report(far);
    assert_eq!(far_report["verdict"], seen, "far sees {seen}\n{context}");
    assert_eq!(far_report["closer"], "peer", "{context}");
    let peer = far_report["peer"].as_str().expect("peer");
    assert!(
        peer.starts_with(&format!("{peer_ip}:")),
        "far sees the connection come from {peer_ip}\n{context}"
    );
}

#[test]
fn topology_builds_quickly_and_leaves_nothing_behind() {
    require!("topology_builds_quickly_and_leaves_nothing_behind", "socat" "-V");
    let started = Instant::now();
    let topo = Topology::socat_proxy(&[]);
    let built = started.elapsed();
    assert!(built < Duration::from_secs(2), "built in {built:?}");

    // A live connection through the proxy: socat's forked child is inside mid too.
    let (serve, port) = topo.serve_far(&["--json", "--timeout", "8s"]);
    let dial = topo.dial(port).to_string();
    let mut near = topo
        .near_tcpbye(&["connect", &dial, "--close", "none", "--timeout", "8s"])
        .spawn();
    let deadline = by(3);
    let mid_inode = topo.inode(Side::Mid).to_owned();
    while processes_in(&[&mid_inode]).len() < 3 {
        // holder, socat listening, socat's child for the connection
        assert!(
            Instant::now() < deadline,
            "no forked socat\n{}",
            near.dump()
        );
        assert!(near.exited().is_none(), "{}", near.dump());
        std::thread::sleep(common::POLL);
    }
    let inodes: Vec<String> = [Side::Near, Side::Mid, Side::Far]
        .iter()
        .map(|s| topo.inode(*s).to_owned())
        .collect();
    let dir = topo.dir().to_owned();
    assert!(dir.is_dir());
    // The topology goes first, with tcpbye still running on both sides.
    let dropping = Instant::now();
    drop(topo);
    let dropped = dropping.elapsed();
    drop((near, serve));
    let left = processes_in(&inodes.iter().collect::<Vec<_>>());
    assert!(
        left.is_empty(),
        "processes left in the namespaces: {left:?}"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
    assert!(dropped < Duration::from_secs(2), "removed in {dropped:?}");
}

#[test]
fn router_passes_fin_as_fin_and_rst_as_rst() {
    require!("router_passes_fin_as_fin_and_rst_as_rst");
    let topo = Topology::router();
    for mode in ["fin", "rst"] {
        let (near, far) = one_ending(&topo, mode);
        assert_ending(&near, &far, mode, mode, &NEAR.to_string());
    }
    let (_, far) = one_ending(&topo, "rst");
    let errnos = common::outcomes_after(&report(&far), 0, "recv");
    assert_eq!(
        errnos.first().map(String::as_str),
        Some("ECONNRESET"),
        "{far}"
    );
}

#[test]
fn socat_proxy_passes_fin_but_turns_rst_into_fin() {
    require!("socat_proxy_passes_fin_but_turns_rst_into_fin", "socat" "-V");
    let topo = Topology::socat_proxy(&[]);
    for (sent, seen) in [("fin", "fin"), ("rst", "fin")] {
        let (near, far) = one_ending(&topo, sent);
        assert_ending(&near, &far, sent, seen, &MID_FAR.to_string());
        let errnos = common::outcomes_after(&report(&far), 0, "recv");
        assert!(!errnos.contains(&"ECONNRESET".to_owned()), "{far}");
    }
}

/// Both ends idle through the box (`--close none`, `--no-probe`, `--timeout 6s`, and
/// `near_extra`, `far_extra`) until something ends the connection; returns (near's,
/// far's) finished runs.
fn idle_through(topo: &Topology, near_extra: &[&str], far_extra: &[&str]) -> (Finished, Finished) {
    let mut far_args = vec!["--once", "--json", "--no-probe", "--timeout", "6s"];
    far_args.extend_from_slice(far_extra);
    let (serve, port) = topo.serve_far(&far_args);
    let dial = topo.dial(port).to_string();
    let mut near_args = vec![
        "connect",
        &dial,
        "--close",
        "none",
        "--json",
        "--no-probe",
        "--timeout",
        "6s",
    ];
    near_args.extend_from_slice(near_extra);
    let near = topo.near_tcpbye(&near_args).spawn().finish_by(by(9));
    let far = serve.finish_by(by(9));
    (near, far)
}

/// `peer_idle_us` of a report whose peer ended it, within `[from, to]` seconds.
fn assert_ended_after(report: &Value, from: f64, to: f64, context: &str) {
    assert_eq!(report["closer"], "peer", "{context}");
    let idle = u64_of(report, "peer_idle_us");
    assert!(
        (us(from)..=us(to)).contains(&idle),
        "ended after {idle} µs idle, not within {from}–{to} s\n{context}"
    );
}

#[test]
fn socat_idle_timeout_ends_both_sides_with_fin() {
    require!("socat_idle_timeout_ends_both_sides_with_fin", "socat" "-V");
    let topo = Topology::socat_proxy(&["-T", "2"]);
    let (near, far) = idle_through(&topo, &[], &[]);
    let context = format!("{near}\n{far}");
    for side in [&near, &far] {
        assert_eq!(side.code, Some(0), "{context}");
        let report = report(side);
        assert_eq!(report["verdict"], "fin", "{context}");
        assert_eq!(report["fin_before_rst"], Value::Null, "{context}");
        assert_ended_after(&report, 1.9, 3.0, &context);
    }
}

#[test]
fn haproxy_idle_timeout_sends_fin_to_client_and_fin_then_rst_to_server() {
    require!(
        "haproxy_idle_timeout_sends_fin_to_client_and_fin_then_rst_to_server",
        "haproxy" "-v"
    );
    let topo = Topology::haproxy(Duration::from_secs(2));
    let near_pcap = topo.file("near.pcap").display().to_string();
    let far_pcap = topo.file("far.pcap").display().to_string();
    // far neither reads nor closes (`hang`): what reaches it is HAProxy's doing alone,
    // not an answer to far's own FIN.
    let (near, far) = idle_through(
        &topo,
        &["--pcap", &near_pcap],
        &[
            "--close", "hang", "--after", "0s", "--hold", "3s", "--pcap", &far_pcap,
        ],
    );
    let context = format!("{near}\n{far}");

    // The client's side: a plain FIN.
    assert_eq!(near.code, Some(0), "{context}");
    let near_report = report(&near);
    assert_eq!(near_report["verdict"], "fin", "{context}");
    assert_ended_after(&near_report, 1.9, 3.0, &context);
    let from_proxy = incoming_flags(&near_report);
    assert!(
        from_proxy.iter().any(|f| has(f, "FIN")) && !from_proxy.iter().any(|f| has(f, "RST")),
        "near gets a FIN and no RST: {from_proxy:?}\n{context}"
    );

    // The server's side: a FIN at the timeout, and an RST right after it.
    assert_eq!(far.code, Some(0), "{context}");
    let far_report = report(&far);
    let from_proxy: Vec<(u64, Vec<String>)> = packets(&far_report)
        .iter()
        .filter(|p| p["outgoing"] == false && p["t_us"].as_u64() > Some(0))
        .map(|p| {
            let flags = p["flags"].as_array().expect("flags");
            let flags = flags.iter().map(|f| f.as_str().expect("flag").to_owned());
            (p["t_us"].as_u64().expect("t_us"), flags.collect())
        })
        .collect();
    let names: Vec<&Vec<String>> = from_proxy.iter().map(|(_, f)| f).collect();
    let [(fin_at, fin), (rst_at, rst)] = from_proxy.as_slice() else {
        panic!("far gets two segments, a FIN and an RST: {from_proxy:?}\n{context}");
    };
    assert!(has(fin, "FIN") && has(rst, "RST"), "{names:?}\n{context}");
    assert!(
        (us(1.9)..=us(3.0)).contains(fin_at),
        "the FIN at the 2 s timeout\n{context}"
    );
    assert!(
        rst_at - fin_at < us(0.1),
        "the RST right after the FIN\n{context}"
    );
}

/// The segments the other end sent after the handshake, as (µs, flags).
fn incoming_after_handshake(report: &Value) -> Vec<(u64, Vec<String>)> {
    packets(report)
        .iter()
        .filter(|p| p["outgoing"] == false)
        .map(|p| {
            let flags = p["flags"].as_array().expect("flags");
            let flags = flags.iter().map(|f| f.as_str().expect("flag").to_owned());
            (p["t_us"].as_u64().expect("t_us"), flags.collect::<Vec<_>>())
        })
        .filter(|(_, flags)| !has(flags, "SYN"))
        .collect()
}

#[test]
fn haproxy_with_nolinger_ends_an_idle_client_with_a_fin_then_an_rst() {
    const NAME: &str = "haproxy_with_nolinger_ends_an_idle_client_with_a_fin_then_an_rst";
    require!(NAME, "haproxy" "-v");
    let topo = Topology::haproxy_with(Duration::from_secs(2), &["option nolinger"]);
    let near_pcap = topo.file("near.pcap").display().to_string();
    // Both ends hold their sockets open (`hang`): near sends no FIN of its own after
    // HAProxy's (an observer would, and a FIN that reaches HAProxy before its RST
    // leaves can spare the RST), so what reaches near is HAProxy's doing alone.
    let (serve, port) = topo.serve_far(&[
        "--once",
        "--json",
        "--no-probe",
        "--timeout",
        "6s",
        "--close",
        "hang",
        "--after",
        "0s",
        "--hold",
        "3s",
    ]);
    let dial = topo.dial(port).to_string();
    let near = topo
        .near_tcpbye(&[
            "connect",
            &dial,
            "--close",
            "hang",
            "--after",
            "0s",
            "--hold",
            "3s",
            "--json",
            "--timeout",
            "6s",
            "--pcap",
            &near_pcap,
        ])
        .spawn()
        .finish_by(by(9));
    let far = serve.finish_by(by(9));
    let context = format!("{near}\n{far}");
    assert_eq!(near.code, Some(0), "{context}");
    let near_report = report(&near);
    let from_proxy = incoming_after_handshake(&near_report);
    let [(fin_at, fin), (rst_at, rst)] = from_proxy.as_slice() else {
        panic!("near gets two segments, a FIN and an RST: {from_proxy:?}\n{context}");
    };
    assert!(
        has(fin, "FIN") && !has(fin, "RST") && has(rst, "RST"),
        "{from_proxy:?}\n{context}"
    );
    assert!(
        (us(1.9)..=us(3.0)).contains(fin_at),
        "the FIN at the 2 s timeout\n{context}"
    );
    assert!(
        rst_at - fin_at < us(0.05),
        "the RST right after the FIN\n{context}"
    );
}

#[test]
fn conntrack_settings_stay_inside_mid() {
    require!("conntrack_settings_stay_inside_mid", "nft" "--version");
    const KEYS: [&str; 3] = [
        "net.netfilter.nf_conntrack_tcp_loose",
        "net.netfilter.nf_conntrack_tcp_timeout_established",
        "net.ipv4.ip_forward",
    ];
    let host = |key: &str| {
        std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
            .map(|v| v.trim().to_owned())
            .ok()
    };
    let before: Vec<Option<String>> = KEYS.iter().map(|k| host(k)).collect();
    let topo = Topology::conntrack_router(3);
    assert_eq!(topo.sysctl(Side::Mid, KEYS[0]), "0");
    assert_eq!(topo.sysctl(Side::Mid, KEYS[1]), "3");
    assert_eq!(topo.sysctl(Side::Mid, KEYS[2]), "1");
    assert_eq!(topo.sysctl(Side::Near, KEYS[2]), "0", "only mid forwards");
    let during: Vec<Option<String>> = KEYS.iter().map(|k| host(k)).collect();
    drop(topo);
    let after: Vec<Option<String>> = KEYS.iter().map(|k| host(k)).collect();
    assert_eq!(before, during, "the host's values did not change");
    assert_eq!(before, after, "the host's values did not change");
    assert_ne!(
        before[1].as_deref(),
        Some("3"),
        "the host already has mid's timeout, so this test cannot tell"
    );
}

#[test]
fn conntrack_router_delivers_after_a_short_idle() {
    require!("conntrack_router_delivers_after_a_short_idle", "nft" "--version");
    let topo = Topology::conntrack_router(3);
    let (serve, port) = topo.serve_far(&["--once", "--json", "--no-probe", "--timeout", "5s"]);
    let dial = topo.dial(port).to_string();
    // Idle 1 s, send, idle 0.5 s, FIN.
    let near = topo
        .near_tcpbye(&[
            "connect",
            &dial,
            "--close",
            "fin",
            "--after",
            "1500ms",
            "--send-every",
            "1s",
            "--user-timeout",
            "2s",
            "--json",
            "--timeout",
            "4s",
        ])
        .spawn()
        .finish_by(by(7));
    let far = serve.finish_by(by(7));
    let context = format!("{near}\n{far}");
    assert_eq!(near.code, Some(0), "{context}");
    let near_report = report(&near);
    let sent = u64_of(&near_report, "bytes_sent");
    assert!(sent > 0, "{context}");
    assert_eq!(near_report["verdict"], "fin", "{context}");
    let far_report = report(&far);
    assert_eq!(u64_of(&far_report, "bytes_received"), sent, "{context}");
    assert_eq!(far_report["verdict"], "fin", "{context}");
    assert_eq!(
        near_report["tcp_info"]["total_retrans"], 0,
        "nothing was lost\n{context}"
    );
}

/// mid's conntrack entries for connections to far's `port`, or `None` when the
/// kernel does not show the table.
fn tracked(topo: &Topology, port: u16) -> Option<Vec<String>> {
    let dport = format!("dport={port} ");
    Some(
        topo.conntrack_entries()?
            .into_iter()
            .filter(|e| e.contains(&dport))
            .collect(),
    )
}

#[test]
fn conntrack_router_black_holes_a_flow_idle_past_its_timeout() {
    const NAME: &str = "conntrack_router_black_holes_a_flow_idle_past_its_timeout";
    require!(NAME, "nft" "--version");
    let topo = Topology::conntrack_router(3);
    let near_pcap = topo.file("near.pcap").display().to_string();
    let far_pcap = topo.file("far.pcap").display().to_string();
    let (serve, port) = topo.serve_far(&[
        "--once",
        "--json",
        "--no-probe",
        "--timeout",
        "8s",
        "--pcap",
        &far_pcap,
    ]);
    let dial = topo.dial(port).to_string();
    // Idle 5 s, then send: mid forgot the flow 3 s after the handshake.
    let near = topo
        .near_tcpbye(&[
            "connect",
            &dial,
            "--close",
            "none",
            "--send-every",
            "5s",
            "--user-timeout",
            "2s",
            "--json",
            "--no-probe",
            "--timeout",
            "10s",
            "--pcap",
            &near_pcap,
        ])
        .spawn();
    // The flow is tracked while it is young …
    let deadline = by(2);
    let tracked_at_first = loop {
        match tracked(&topo, port) {
            None => break None,
            Some(entries) if !entries.is_empty() => break Some(entries),
            Some(_) if Instant::now() >= deadline => {
                panic!("mid never tracked the flow\n{}", near.dump())
            }
            Some(_) => std::thread::sleep(common::POLL),
        }
    };
    let near = near.finish_by(by(10));
    // … and forgotten once near has given up (far has not ended yet: nothing new).
    let tracked_at_end = tracked(&topo, port);
    let far = serve.finish_by(by(4));
    let context = format!("{near}\n{far}");

    match (tracked_at_first, tracked_at_end) {
        (Some(first), Some(end)) => {
            assert!(first.iter().all(|e| e.contains("ESTABLISHED")), "{first:?}");
            assert!(end.is_empty(), "mid forgot the flow: {end:?}\n{context}");
        }
        _ => common::host_lacks(
            NAME,
            common::Host::Conntrack,
            "no /proc/PID/net/nf_conntrack: conntrack entries not checked",
        ),
    }

    // near: its data went out and was retransmitted, nothing came back, and the
    // user timeout ended it.
    assert_eq!(near.code, Some(0), "{context}");
    let near_report = report(&near);
    assert_eq!(near_report["verdict"], "timeout", "{context}");
    assert_eq!(near_report["detected_by"], "user-timeout", "{context}");
    assert_eq!(
        common::outcomes_after(&near_report, 0, "recv")
            .first()
            .map(String::as_str),
        Some("ETIMEDOUT"),
        "{context}"
    );
    let near_packets = packets(&near_report);
    let retransmitted = near_packets
        .iter()
        .filter(|p| p["outgoing"] == true && p["note"] == "retransmission")
        .count();
    assert!(retransmitted >= 2, "near retransmits\n{context}");
    let data_at = near_packets
        .iter()
        .find(|p| p["outgoing"] == true && p["len"].as_u64() > Some(0))
        .and_then(|p| p["t_us"].as_u64())
        .expect("near sent data");
    assert!(data_at >= us(4.9), "near sent after 5 s idle\n{context}");
    assert!(
        !near_packets
            .iter()
            .any(|p| p["outgoing"] == false && p["t_us"].as_u64() >= Some(data_at)),
        "nothing reaches near after its data\n{context}"
    );

    // far: not a byte, not a segment after the handshake; it ends by its own timeout.
    assert_eq!(far.code, Some(0), "{context}");
    let far_report = report(&far);
    assert_eq!(far_report["verdict"], "open", "{context}");
    assert_eq!(u64_of(&far_report, "bytes_received"), 0, "{context}");
    assert!(
        incoming_flags(&far_report).is_empty(),
        "far sees nothing after the handshake\n{context}"
    );
}
