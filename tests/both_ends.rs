//! Both ends of one connection in one report: the other end's socket through
//! sock_diag (`peer_side`), this side's socket after its close (`afterlife`), and
//! the packets (`--pcap`, root only). Real sockets on 127.0.0.1, ephemeral ports.

use serde_json::Value;

use crate::common::{Cmd, Proc, require_root, run, serve, tool_missing, unprivileged, within};

/// The states in a `peer_side` or `afterlife` list (`gone` for null).
fn side_states(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list of sock_diag readings")
        .iter()
        .map(|s| s["state"].as_str().unwrap_or("gone").to_owned())
        .collect()
}

/// serve observes with `serve_args`; connect closes with `--close MODE --after 100ms`.
fn pair(serve_args: &[&str], connect_args: &[&str]) -> (Value, Value) {
    let mut args = vec!["127.0.0.1:0", "--once", "--json", "--timeout", "5s"];
    args.extend_from_slice(serve_args);
    let (server, addr) = serve(&args);
    let addr = addr.to_string();
    let mut cargs = vec![
        "connect",
        addr.as_str(),
        "--json",
        "--timeout",
        "5s",
        "--after",
        "100ms",
    ];
    cargs.extend_from_slice(connect_args);
    let client = run(&cargs);
    client.expect_code(0);
    let observer = server.finish();
    observer.expect_code(0);
    (observer.report(), client.report())
}

#[test]
fn fin_closer_is_followed_to_its_end_and_sees_the_observer_in_close_wait() {
    let (observer, closer) = pair(&[], &["--close", "fin"]);
    // The closer's own socket after close(): an orphan in FIN_WAIT1/2 with no
    // descriptor, until the observer's probe write meets it and it is freed (RST).
    // The probe may win the race to the first reading: then it is gone at once.
    let after = &closer["afterlife"];
    let states = side_states(&after["states"]);
    match states.first().map(String::as_str) {
        Some("FIN_WAIT1" | "FIN_WAIT2") => assert_eq!(
            after["states"][0]["inode"], 0,
            "an orphan has no descriptor"
        ),
        Some("gone") => {}
        _ => panic!("afterlife {states:?}"),
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("gone"),
        "{states:?}"
    );
    assert_eq!(after["ended"], "gone", "{after}");
    // The closer saw the observer's socket move to CLOSE_WAIT (its FIN arrived),
    // unless the observer's probe had already reset the connection.
    let peer = &closer["peer_side"];
    assert_eq!(peer["visible"], true);
    let seen = side_states(&peer["states"]);
    let probe_won = states.first().map(String::as_str) == Some("gone");
    assert!(
        seen.contains(&"CLOSE_WAIT".to_owned()) || probe_won,
        "closer's view of the observer: {seen:?}"
    );
    // The observer saw the closer's socket go ESTABLISHED → FIN_WAIT1/2 → gone.
    let seen = side_states(&observer["peer_side"]["states"]);
    assert_eq!(
        seen.first().map(String::as_str),
        Some("ESTABLISHED"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.starts_with("FIN_WAIT")),
        "observer's view of the closer: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("gone"), "{seen:?}");
}

#[test]
fn fin_closer_ends_in_time_wait_when_the_observer_closes_too() {
    let (_, closer) = pair(&["--no-probe"], &["--close", "fin"]);
    let after = &closer["afterlife"];
    let states = side_states(&after["states"]);
    assert_eq!(after["ended"], "time-wait", "{after}");
    assert_eq!(
        states.last().map(String::as_str),
        Some("TIME_WAIT"),
        "{states:?}"
    );
    let timer = after["states"]
        .as_array()
        .and_then(|s| s.last())
        .and_then(|s| s["timer"].as_str())
        .unwrap_or_default();
    assert!(
        timer.starts_with("timewait,"),
        "TIME_WAIT has its timer: {timer:?}"
    );
}

#[test]
fn rst_closer_is_gone_at_once() {
    let (observer, closer) = pair(&[], &["--close", "rst"]);
    let after = &closer["afterlife"];
    assert_eq!(after["ended"], "gone", "{after}");
    assert!(
        side_states(&after["states"]).iter().all(|s| s == "gone"),
        "no state survives an abortive close: {after}"
    );
    let watched = after["watched_us"].as_u64().expect("watched_us");
    assert!(
        watched < 100_000,
        "gone at the first reading, watched {watched}µs"
    );
    let seen = side_states(&observer["peer_side"]["states"]);
    assert_eq!(seen.last().map(String::as_str), Some("gone"), "{seen:?}");
}

/// A server that is not tcpbye: python3 accepts one connection and holds it. It is
/// killed when dropped.
struct ThirdParty {
    _child: Proc,
    port: u16,
}

impl ThirdParty {
    /// python3 listens on an ephemeral port, prints it, accepts one connection and
    /// then runs `after_accept` (Python statements using the accepted socket `c`).
    fn start(after_accept: &str) -> Option<Self> {
        let script = format!(
            "import socket,sys,time\n\
             s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(1)\n\
             print(s.getsockname()[1], flush=True)\n\
             c,_=s.accept(); {after_accept}\n"
        );
        let mut child = Cmd::program("python3", &["-c", &script]).try_spawn().ok()?;
        let line = child.try_stdout_line(within(5))?;
        let port = line.trim().parse().ok()?;
        Some(Self {
            _child: child,
            port,
        })
    }
}

#[test]
fn a_third_party_servers_socket_appears_in_the_report() {
    for (mode, expected) in [("fin", "CLOSE_WAIT"), ("rst", "gone")] {
        let Some(server) = ThirdParty::start("time.sleep(3)") else {
            tool_missing(
                "a_third_party_servers_socket_appears_in_the_report",
                "python3 not available",
            );
            return;
        };
        let addr = format!("127.0.0.1:{}", server.port);
        let client = run(&[
            "connect",
            &addr,
            "--close",
            mode,
            "--after",
            "100ms",
            "--json",
            "--timeout",
            "3s",
        ]);
        client.expect_code(0);
        let report = client.report();
        let peer = &report["peer_side"];
        assert_eq!(peer["visible"], true, "{peer}");
        let states = side_states(&peer["states"]);
        assert_eq!(
            states.first().map(String::as_str),
            Some("ESTABLISHED"),
            "{mode}: {states:?}"
        );
        assert!(
            states.contains(&expected.to_owned()),
            "{mode}: python's socket {states:?}"
        );
        let with_fd = peer["states"]
            .as_array()
            .expect("states")
            .iter()
            .any(|s| s["state"] == "CLOSE_WAIT" && s["inode"] != 0);
        assert_eq!(
            with_fd,
            mode == "fin",
            "{mode}: python still holds its descriptor: {peer}"
        );
    }
}

#[test]
fn no_peer_side_leaves_both_views_out() {
    let (server, addr) = serve(&[
        "127.0.0.1:0",
        "--once",
        "--json",
        "--timeout",
        "2s",
        "--no-peer-side",
    ]);
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        "fin",
        "--json",
        "--timeout",
        "2s",
        "--no-peer-side",
    ]);
    assert!(client.report()["peer_side"].is_null());
    assert!(server.finish().report()["peer_side"].is_null());
}

/// The TCP flags of each packet in a pcap file, in order, with their direction.
fn pcap_flags(path: &std::path::Path, client_port: u16) -> Vec<(bool, String)> {
    let file = std::fs::File::open(path).expect("the pcap file exists");
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("a valid pcap header");
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("a valid pcap record");
        let sliced = etherparse::SlicedPacket::from_ip(&packet.data).expect("an IP packet");
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP")
        };
        let mut flags = Vec::new();
        for (set, name) in [(tcp.syn(), "SYN"), (tcp.fin(), "FIN"), (tcp.rst(), "RST")] {
            if set {
                flags.push(name);
            }
        }
        out.push((tcp.source_port() == client_port, flags.join("|")));
    }
    out
}

#[test]
fn pcap_holds_the_fin_and_the_rst_where_expected() {
    if !require_root(
        "pcap_holds_the_fin_and_the_rst_where_expected",
        "needs CAP_NET_RAW (root)",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tcpbye-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for mode in ["fin", "rst"] {
        let path = dir.join(format!("{mode}.pcap"));
        let (server, addr) = serve(&["127.0.0.1:0", "--once", "--json", "--timeout", "3s"]);
        let path_text = path.to_string_lossy().into_owned();
        let client = run(&[
            "connect",
            &addr.to_string(),
            "--close",
            mode,
            "--after",
            "100ms",
            "--json",
            "--timeout",
            "3s",
            "--pcap",
            &path_text,
        ]);
        client.expect_code(0);
        server.finish().expect_code(0);
        let report = client.report();
        let port = report["local"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("local port");
        let flags = pcap_flags(&path, port);
        assert_eq!(
            flags.first(),
            Some(&(true, "SYN".to_owned())),
            "{mode}: {flags:?}"
        );
        let closing: Vec<&(bool, String)> = flags
            .iter()
            .filter(|(_, f)| f.contains("FIN") || f.contains("RST"))
            .collect();
        let first = closing
            .first()
            .map(|(from_client, f)| (*from_client, f.as_str()));
        match mode {
            "fin" => assert_eq!(first, Some((true, "FIN")), "{flags:?}"),
            _ => assert_eq!(first, Some((true, "RST")), "{flags:?}"),
        }
        // The same packets are in the report, with the direction seen from the client.
        let in_report: Vec<String> = report["packets"]
            .as_array()
            .expect("packets with --pcap")
            .iter()
            .map(|p| {
                p["flags"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .unwrap_or_default()
            })
            .collect();
        assert!(
            in_report
                .iter()
                .any(|f| f.contains(if mode == "fin" { "FIN" } else { "RST" })),
            "{in_report:?}"
        );
        if let Ok(tshark) = Cmd::program(
            "tshark",
            &["-r", &path_text, "-T", "fields", "-e", "tcp.flags.str"],
        )
        .deadline(std::time::Duration::from_secs(20))
        .try_spawn()
        {
            let out = tshark.finish().output();
            let text = String::from_utf8_lossy(&out.stdout);
            let needle = if mode == "fin" { "F" } else { "R" };
            assert!(
                out.status.success() && text.lines().any(|l| l.contains(needle)),
                "tshark: {text}"
            );
        } else {
            tool_missing(
                "pcap_holds_the_fin_and_the_rst_where_expected (the tshark check)",
                "tshark not installed",
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcap_without_cap_net_raw_exits_4() {
    if !require_root(
        "pcap_without_cap_net_raw_exits_4",
        "needs root to drop privileges with setpriv",
    ) {
        return;
    }
    let out = unprivileged(&[
        "connect",
        "127.0.0.1:9",
        "--pcap",
        "/tmp/never-written.pcap",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAP_NET_RAW"), "{stderr}");
}

#[test]
fn the_other_ends_eof_read_is_seen_in_its_recv_queue() {
    // python3 reads EOF 300 ms after the FIN: its CLOSE_WAIT Recv-Q (the FIN's one
    // byte) empties then, and the report shows when.
    let Some(server) = ThirdParty::start("time.sleep(0.4); c.recv(10); time.sleep(2)") else {
        tool_missing(
            "the_other_ends_eof_read_is_seen_in_its_recv_queue",
            "python3 not available",
        );
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let client = run(&[
        "connect",
        &addr,
        "--close",
        "fin",
        "--after",
        "100ms",
        "--linger-watch",
        "1s",
        "--json",
        "--timeout",
        "3s",
    ]);
    drop(server);
    client.expect_code(0);
    let report = client.report();
    let close_wait: Vec<(u64, u64)> = report["peer_side"]["states"]
        .as_array()
        .expect("states")
        .iter()
        .filter(|s| s["state"] == "CLOSE_WAIT")
        .map(|s| {
            (
                s["t_us"].as_u64().unwrap_or(0),
                s["recv_q"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        close_wait.first().map(|(_, q)| *q),
        Some(1),
        "FIN unread: {close_wait:?}"
    );
    let read_at = close_wait
        .iter()
        .find(|(_, q)| *q == 0)
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("no EOF read seen: {close_wait:?}"));
    let closed_at = report["close_t_us"].as_u64().expect("close_t_us");
    let after = read_at - closed_at;
    assert!(
        (250_000..1_000_000).contains(&after),
        "EOF read {after}µs after the FIN"
    );
}
