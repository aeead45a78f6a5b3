//! Reports that say what really happened: probes named by the kernel timer that
//! sent them.
//!
//! Tests that capture packets or drop segments need root (CAP_NET_RAW,
//! CAP_NET_ADMIN, CAP_SYS_ADMIN for a network namespace), and some need python3 or
//! socat as the peer; without them a test skips loudly (`common::require_root`,
//! `common::require_tool`).

#![cfg(target_os = "linux")]

mod common;

use std::path::PathBuf;

use serde_json::Value;

use common::*;

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
}
