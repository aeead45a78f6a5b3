//! Reports that say what happened: who ended a silent connection, what a
//! detection time is measured from, one wording for a missed expectation in every
//! command, and where a refused loopback connect would have found its server.

use crate::common;

use std::net::{TcpListener, ToSocketAddrs};
use std::time::Duration;

use crate::common::{Cmd, require_root, run, serve};

/// A keepalive timeout is this side's kernel giving up on a silent peer, not a
/// close by the peer: in the table and in `--brief`.
#[test]
fn a_keepalive_timeout_is_not_called_a_close_by_the_peer() {
    let test = common::test_name!();
    if !require_root(test, "connect --close drop needs CAP_NET_ADMIN") {
        return;
    }
    for brief in [false, true] {
        let mut args = vec![
            "127.0.0.1:0",
            "--once",
            "--keepalive",
            "1s,1s,1",
            "--timeout",
            "10s",
        ];
        if brief {
            args.push("--brief");
        }
        let (server, addr) = serve(&args);
        // The dropping client holds its connection until it is interrupted.
        let client = Cmd::tcpbye(&[
            "connect",
            &addr.to_string(),
            "--close",
            "drop",
            "--after",
            "100ms",
        ])
        .deadline(Duration::from_secs(15))
        .spawn();
        let served = server.finish_by(common::within(10));
        client.interrupt();
        client.finish();
        served.expect_code(0);
        let text = &served.stdout;
        assert!(text.contains("timeout"), "{text}");
        assert!(!text.contains("closed by  the peer\n"), "{text}");
        assert!(!text.contains("the peer ended it"), "{text}");
        if brief {
            assert!(
                text.contains("this side's kernel (keepalive) after the peer fell silent"),
                "{text}"
            );
        } else {
            assert!(
                text.contains("closed by  this side's kernel (keepalive): the peer fell silent"),
                "{text}"
            );
        }
    }
}

/// `--brief` times a detection from the captured FIN as the table does.
#[test]
fn brief_says_a_detection_is_timed_from_the_captured_packet() {
    let test = common::test_name!();
    if !require_root(test, "--pcap needs CAP_NET_RAW") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tcpbye-wording-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pcap = dir.join("fin.pcap");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let (server, addr) = serve(&[
        "127.0.0.1:0",
        "--once",
        "--brief",
        "--pcap",
        &pcap_arg,
        "--timeout",
        "5s",
    ]);
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        "fin",
        "--after",
        "100ms",
    ]);
    client.expect_code(0);
    let served = server.finish();
    let _ = std::fs::remove_dir_all(&dir);
    served.expect_code(0);
    let line = served.stdout.trim_end();
    assert!(line.contains("after the peer's FIN/RST arrived"), "{line}");
    assert!(!line.contains("after the last sign of life"), "{line}");
}

/// `check`, like serve, connect and path, says each missed expectation as
/// `tcpbye: expectation not met: …` on stderr.
#[test]
fn every_command_words_a_missed_expectation_alike() {
    let (_server, addr) = serve(&["127.0.0.1:0", "--timeout", "10s"]);
    let addr = addr.to_string();
    let out = run(&[
        "check",
        &addr,
        "--modes",
        "hang",
        "--wait",
        "300ms",
        "--expect-noticed-within",
        "100ms",
    ]);
    out.expect_code(1);
    assert!(
        out.stderr
            .iter()
            .any(|l| l.starts_with("tcpbye: expectation not met: hang: unnoticed")),
        "{}",
        out.dump()
    );
    assert!(!out.stdout.contains("expectation missed"), "{}", out.dump());
    // serve/connect: the same words.
    let (server, addr) = serve(&["127.0.0.1:0", "--once", "--timeout", "5s"]);
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        "rst",
        "--expect",
        "fin",
    ]);
    client.expect_code(1);
    assert!(
        client
            .stderr
            .iter()
            .any(|l| l.starts_with("tcpbye: expectation not met: connect ")),
        "{}",
        client.dump()
    );
    server.finish();
}

/// Refused on 127.0.0.1 while the server listens on [::1] only: the error says where.
#[test]
fn a_refused_ipv4_loopback_connect_points_at_the_ipv6_listener() {
    let test = common::test_name!();
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        common::skip(test, "no IPv6 loopback");
        return;
    };
    let port = listener.local_addr().expect("local addr").port();
    // Nothing on 127.0.0.1 at that port: free it for the v4 side if a v4 socket holds it.
    if TcpListener::bind(("127.0.0.1", port)).is_err() {
        common::skip(test, "the port is taken on 127.0.0.1");
        return;
    }
    let out = run(&["connect", &format!("127.0.0.1:{port}")]);
    let line = out.expect_one_error_line(3, "refused");
    assert!(
        line.contains(&format!(
            "something listens on [::1]:{port}: try `connect [::1]:{port}`"
        )),
        "{line}"
    );
    // `localhost`, where it names 127.0.0.1 only (as /etc/hosts often does): try -6.
    let v4_only = ("localhost", port)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.all(|a| a.is_ipv4()));
    if v4_only {
        let out = run(&["connect", &format!("localhost:{port}")]);
        let line = out.expect_one_error_line(3, "refused");
        assert!(line.contains("try -6"), "{line}");
    }
    // Nothing listening anywhere: no hint.
    drop(listener);
    let out = run(&["connect", &format!("127.0.0.1:{port}")]);
    let line = out.expect_one_error_line(3, "refused");
    assert!(!line.contains("[::1]"), "{line}");
}
