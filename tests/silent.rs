//! Silent endings (drop, reboot, hang) against each detection mechanism, on real
//! sockets. These need root (CAP_NET_ADMIN for the socket filter and TCP_REPAIR,
//! CAP_SYS_ADMIN for a network namespace of their own). Without it each test
//! prints `SKIPPED <test>: <why>` to stderr (shown by a plain `cargo test`) and
//! returns; under `TCPBYE_TEST_REQUIRE_PRIVILEGED=1` (CI as root) it fails instead.
//!
//! Every test runs both ends inside a fresh network namespace that it creates and
//! that dies with it: its own loopback, its own `tcp_metrics` cache (so a test that
//! provoked retransmission timeouts cannot inflate another test's RTO), and nothing
//! left on the host.

use crate::common;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Netns, Proc, require_root};

/// Returns from the test, loudly, unless it runs as root.
macro_rules! require_root {
    ($name:expr) => {
        if !require_root($name, "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)") {
            return;
        }
    };
}

/// Starts `tcpbye serve 127.0.0.1:0 ARGS` in `ns`; returns it and its port.
fn serve(ns: &Netns, args: &[&str]) -> (Proc, u16) {
    let mut all = vec!["serve", "127.0.0.1:0", "--once", "--json"];
    all.extend_from_slice(args);
    let mut child = ns.tcpbye(&all).spawn();
    let port = child.listening().port();
    (child, port)
}

/// Waits (bounded) for a child and returns its connection report.
fn report_of(child: Proc, limit: Duration) -> Value {
    let out = child.finish_by(Instant::now() + limit).stdout;
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("valid JSON line"))
        .find(|v| v["kind"] == "connection")
        .unwrap_or_else(|| panic!("no connection report in {out:?}"))
}

fn connect(ns: &Netns, port: u16, args: &[&str]) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    let mut all = vec!["connect", addr.as_str(), "--json"];
    all.extend_from_slice(args);
    ns.tcpbye(&all).spawn()
}

/// Runs an observing server and a closing client; returns (observer, closer) reports.
fn observe(serve_args: &[&str], connect_args: &[&str], limit: Duration) -> (Value, Value, String) {
    let ns = Netns::new();
    let (server, port) = serve(&ns, serve_args);
    let client = connect(&ns, port, connect_args);
    let observer = report_of(server, limit);
    let closer = report_of(client, limit);
    let inode = ns.inode.clone();
    drop(ns);
    (observer, closer, inode)
}

fn us(v: &Value) -> f64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a number")) as f64
}

fn events<'a>(report: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(move |e| e["kind"] == kind)
}

fn errnos(report: &Value, kind: &str) -> Vec<String> {
    events(report, kind)
        .filter_map(|e| e["errno"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts detection landed within `tolerance` (fraction) of the prediction.
fn assert_near_prediction(report: &Value, tolerance: f64) {
    let measured = us(&report["detected_after_us"]);
    let predicted = us(&report["predicted_us"]);
    let error = (measured - predicted).abs();
    assert!(
        error <= predicted * tolerance,
        "detected after {measured}µs, predicted {predicted}µs ({}): off by more than {:.0}%",
        report["predicted_basis"],
        tolerance * 100.0
    );
}

/// After the namespace is gone no process may still be inside it.
fn assert_namespace_gone(inode: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|e| {
                std::fs::read_link(e.path().join("ns/net"))
                    .is_ok_and(|l| l.to_string_lossy() == inode)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} still hold {inode}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn drop_is_caught_by_keepalive_at_idle_plus_probes() {
    require_root!("drop_is_caught_by_keepalive_at_idle_plus_probes");
    let (observer, closer, ns) = observe(
        &["--keepalive", "1s,1s,3", "--timeout", "8s"],
        &["--close", "drop", "--timeout", "7s"],
        Duration::from_secs(12),
    );
    assert_eq!(observer["verdict"], "timeout");
    assert_eq!(observer["detected_by"], "keepalive");
    assert_eq!(errnos(&observer, "recv"), ["ETIMEDOUT"]);
    assert_eq!(observer["tcp_info"]["state"], "CLOSE");
    // 1 s idle + 3 × 1 s probes after the last packet (the handshake, give or take a ms).
    let predicted = us(&observer["predicted_us"]);
    assert!(
        (4.0e6..4.05e6).contains(&predicted),
        "predicted {predicted}µs"
    );
    assert_near_prediction(&observer, 0.10);
    let probes: Vec<u64> = observer["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["tcp_info"]["probes"].as_u64().expect("probes"))
        .collect();
    assert_eq!(
        probes.iter().max(),
        Some(&3),
        "keepalive probes climb to 3: {probes:?}"
    );
    assert_eq!(closer["close"], "drop");
    assert_eq!(closer["verdict"], "open");
    assert_namespace_gone(&ns);
}

#[test]
fn drop_is_caught_by_keepalive_in_the_reverse_direction() {
    require_root!("drop_is_caught_by_keepalive_in_the_reverse_direction");
    let ns = Netns::new();
    let (server, port) = serve(
        &ns,
        &["--close", "drop", "--after", "100ms", "--timeout", "7s"],
    );
    let client = connect(
        &ns,
        port,
        &[
            "--close",
            "none",
            "--keepalive",
            "1s,1s,3",
            "--timeout",
            "8s",
        ],
    );
    let observer = report_of(client, Duration::from_secs(12));
    let closer = report_of(server, Duration::from_secs(12));
    assert_eq!(observer["verdict"], "timeout");
    assert_eq!(observer["detected_by"], "keepalive");
    assert_eq!(errnos(&observer, "recv"), ["ETIMEDOUT"]);
    assert_near_prediction(&observer, 0.10);
    assert_eq!(closer["close"], "drop");
    let inode = ns.inode.clone();
    drop(ns);
    assert_namespace_gone(&inode);
}

#[test]
fn drop_with_data_in_flight_is_caught_by_user_timeout() {
    require_root!("drop_with_data_in_flight_is_caught_by_user_timeout");
    let (observer, _, ns) = observe(
        &[
            "--user-timeout",
            "1500ms",
            "--send-every",
            "200ms",
            "--timeout",
            "8s",
        ],
        &["--close", "drop", "--after", "100ms", "--timeout", "6s"],
        Duration::from_secs(12),
    );
    assert_eq!(observer["verdict"], "timeout");
    assert_eq!(observer["detected_by"], "user-timeout");
    assert_eq!(errnos(&observer, "recv"), ["ETIMEDOUT"]);
    assert_near_prediction(&observer, 0.10);
    // The sends before the abort all succeeded: a blackhole accepts every write.
    assert!(events(&observer, "send").all(|e| e["errno"].is_null()));
    let max_backoff = observer["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .filter_map(|s| s["tcp_info"]["backoff"].as_u64())
        .max();
    assert!(
        max_backoff >= Some(2),
        "retransmissions backed off: {max_backoff:?}"
    );
    assert_namespace_gone(&ns);
}

#[test]
fn drop_is_caught_by_heartbeat_well_under_a_second() {
    require_root!("drop_is_caught_by_heartbeat_well_under_a_second");
    let (observer, _, ns) = observe(
        &["--heartbeat", "200ms,3", "--timeout", "5s"],
        &["--close", "drop", "--after", "100ms", "--timeout", "3s"],
        Duration::from_secs(8),
    );
    assert_eq!(observer["verdict"], "heartbeat");
    assert!(observer["detected_by"].is_null());
    let after = us(&observer["detected_after_us"]);
    assert!(after < 1_000_000.0, "heartbeat detection took {after}µs");
    assert_near_prediction(&observer, 0.10);
    assert_namespace_gone(&ns);
}

#[test]
fn drop_without_a_mechanism_stays_open_while_retransmissions_back_off() {
    require_root!("drop_without_a_mechanism_stays_open_while_retransmissions_back_off");
    let (observer, _, ns) = observe(
        &["--send-every", "300ms", "--timeout", "3s"],
        &["--close", "drop", "--after", "100ms", "--timeout", "4s"],
        Duration::from_secs(8),
    );
    assert_eq!(observer["verdict"], "open");
    assert!(observer["detected_after_us"].is_null());
    let snapshots = observer["snapshots"].as_array().expect("snapshots");
    let field = |name: &str| -> Vec<u64> {
        snapshots
            .iter()
            .filter_map(|s| s["tcp_info"][name].as_u64())
            .collect()
    };
    let backoff = field("backoff");
    assert!(
        backoff.windows(2).all(|w| w[1] >= w[0]),
        "backoff never falls: {backoff:?}"
    );
    assert!(backoff.last() >= Some(&2), "backoff climbs: {backoff:?}");
    assert!(field("total_retrans").last() >= Some(&2));
    assert_eq!(observer["tcp_info"]["state"], "ESTABLISHED");
    // Nothing was detected, so there is no prediction to compare with (the
    // retransmission limit, tcp_retries2, is ≈ 924.6 s away).
    assert!(
        observer["predicted_us"].is_null(),
        "predicted {}",
        observer["predicted_us"]
    );
    assert_namespace_gone(&ns);
}

#[test]
fn reboot_answers_the_next_segment_with_rst() {
    require_root!("reboot_answers_the_next_segment_with_rst");
    let (observer, closer, ns) = observe(
        &["--send-every", "500ms", "--timeout", "5s", "--no-probe"],
        &["--close", "reboot", "--after", "100ms", "--timeout", "3s"],
        Duration::from_secs(8),
    );
    assert_eq!(observer["verdict"], "rst");
    assert_eq!(
        errnos(&observer, "recv").first().map(String::as_str),
        Some("ECONNRESET")
    );
    let send_t = events(&observer, "send")
        .map(|e| us(&e["t_us"]))
        .next()
        .expect("a send");
    let reset_t = events(&observer, "recv")
        .find(|e| e["errno"] == "ECONNRESET")
        .map(|e| us(&e["t_us"]))
        .expect("ECONNRESET");
    assert!(
        (0.0..50_000.0).contains(&(reset_t - send_t)),
        "RST {reset_t}µs came right after the send at {send_t}µs"
    );
    assert!(
        send_t >= 400_000.0,
        "nothing was noticed before the first send at {send_t}µs"
    );
    assert_eq!(closer["close"], "reboot");
    assert_namespace_gone(&ns);
}

#[test]
fn hang_is_invisible_to_keepalive() {
    require_root!("hang_is_invisible_to_keepalive");
    let (observer, _, ns) = observe(
        &["--keepalive", "1s,1s,1", "--timeout", "3500ms"],
        &["--close", "hang", "--after", "100ms", "--timeout", "5s"],
        Duration::from_secs(8),
    );
    assert_eq!(observer["verdict"], "open");
    // The hung peer's kernel answers every probe, so no probe is ever outstanding.
    let probes = observer["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .filter_map(|s| s["tcp_info"]["probes"].as_u64())
        .max();
    assert_eq!(probes, Some(0));
    assert_eq!(observer["tcp_info"]["state"], "ESTABLISHED");
    assert_namespace_gone(&ns);
}

#[test]
fn hang_is_caught_by_heartbeat() {
    require_root!("hang_is_caught_by_heartbeat");
    let (observer, _, ns) = observe(
        &["--heartbeat", "200ms,3", "--timeout", "5s"],
        &["--close", "hang", "--after", "100ms", "--timeout", "3s"],
        Duration::from_secs(8),
    );
    assert_eq!(observer["verdict"], "heartbeat");
    assert_near_prediction(&observer, 0.10);
    // Unlike drop, the pings were all acknowledged: nothing is in flight.
    assert_eq!(observer["tcp_info"]["unacked"], 0);
    assert_namespace_gone(&ns);
}

#[test]
fn without_cap_net_admin_drop_exits_4_with_one_line() {
    require_root!("without_cap_net_admin_drop_exits_4_with_one_line");
    for mode in ["drop", "reboot"] {
        let out = common::unprivileged(&["connect", "127.0.0.1:9", "--close", mode]);
        assert_eq!(out.status.code(), Some(4), "{mode}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
