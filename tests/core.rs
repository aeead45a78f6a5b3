//! Core integration tests: real TCP connections on loopback, ended in each close
//! mode, checked against what the other end actually observed (epoll flags, recv
//! and send outcomes, TCP states, probe results), with tcpbye on both ends and
//! against peers that are not tcpbye; the JSON contract; `--expect`; bad input.
//!
//! Every tcpbye child has a `--timeout` and a deadline; nothing waits by sleeping.

use crate::common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use crate::common::{
    Finished, accept, addr_field, close_with_fin, close_with_rst, events, first_end_wakeup,
    flag_set, flags, kind, outcome, outcomes_after, plain_connect, plain_listener, position,
    read_exactly, run, serve, spawn, states, timeline, u64_field,
};
use serde_json::Value;

/// The first bytes of tcpbye's `--send` payload.
const SEND_PREFIX: &[u8] = b"tcpbye-dat";
/// One probe write.
const PROBE: &[u8] = b"tcpbye-probe\n";
/// The closer's `--after`: long enough that the observer is surely watching.
const AFTER: &str = "200ms";
const AFTER_US: u64 = 200_000;

/// What the observer was shown: the peer's FIN, its FIN while it keeps reading
/// (half close), or its RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerEnd {
    Fin,
    Half,
    Rst,
}

impl PeerEnd {
    fn of_mode(mode: &str) -> Self {
        match mode {
            "fin" => Self::Fin,
            "half" => Self::Half,
            "rst" | "rst-unread" => Self::Rst,
            other => panic!("no peer end for mode {other}"),
        }
    }
}

/// Asserts everything an observer (`--close none`) must report when its peer
/// ended the connection as `end`. `sent` is what the observer sent before (its
/// `--send`); `not_before_us` bounds when the end may have been seen.
fn assert_observed(r: &Value, end: PeerEnd, sent: u64, not_before_us: u64) {
    let t = timeline(r);
    let (verdict, wake, wake_recvs, state, all_states, probes, final_state) = match end {
        PeerEnd::Fin => (
            "fin",
            &["IN", "RDHUP"][..],
            &["EOF"][..],
            "CLOSE_WAIT",
            &["ESTABLISHED", "CLOSE_WAIT", "CLOSE"][..],
            ["13", "EPIPE"],
            "CLOSE",
        ),
        PeerEnd::Half => (
            "fin",
            &["IN", "RDHUP"][..],
            &["EOF"][..],
            "CLOSE_WAIT",
            &["ESTABLISHED", "CLOSE_WAIT"][..],
            ["13", "13"],
            "CLOSE_WAIT",
        ),
        PeerEnd::Rst => (
            "rst",
            &["IN", "ERR", "HUP", "RDHUP"][..],
            &["ECONNRESET", "EOF"][..],
            "CLOSE",
            &["ESTABLISHED", "CLOSE"][..],
            ["EPIPE", "EPIPE"],
            "CLOSE",
        ),
    };
    assert_eq!(r["verdict"], verdict, "verdict\n{t}");
    assert_eq!(r["closer"], "peer", "closer\n{t}");
    assert!(r["close"].is_null(), "an observer has no close mode\n{t}");
    assert!(
        r["close_t_us"].is_null(),
        "an observer cannot know when the peer acted\n{t}"
    );
    // Without --pcap nothing timed the arrival of the client's FIN or RST: no
    // detection latency, only how long the client had been quiet.
    assert!(r["detected_after_us"].is_null(), "detected_after_us\n{t}");
    assert!(r["detected_from"].is_null(), "detected_from\n{t}");
    assert!(r["peer_idle_us"].is_u64(), "peer_idle_us\n{t}");

    let ev = events(r);
    assert_eq!(
        states(r).first().map(String::as_str),
        Some("ESTABLISHED"),
        "precondition: the observer must start watching before the peer ends the \
         connection (an overloaded machine can starve it past --after)\n{t}"
    );
    let i = first_end_wakeup(r);
    let woke = u64_field(&ev[i], "t_us");
    assert!(
        woke >= not_before_us,
        "the end was seen at {woke}µs, before the peer acted\n{t}"
    );
    assert!(
        !ev[..i].iter().any(|e| kind(e) == "recv"),
        "the observer received something before the end\n{t}"
    );

    // The wake-up: its raw flags, and what the reads in it returned.
    assert_eq!(
        flags(&ev[i]),
        flag_set(wake),
        "flags of the first wake-up after the end\n{t}"
    );
    let in_wakeup: Vec<String> = ev[i + 1..]
        .iter()
        .take_while(|e| kind(e) == "recv")
        .map(outcome)
        .collect();
    assert_eq!(
        in_wakeup, wake_recvs,
        "recv() in the first wake-up after the end\n{t}"
    );
    // After the end, a reader only ever sees EOF again (ECONNRESET is reported once).
    let recvs = outcomes_after(r, i, "recv");
    assert!(
        recvs[wake_recvs.len()..].iter().all(|o| o == "EOF"),
        "recv() after the end: {recvs:?}\n{t}"
    );

    // The TCP state machine: the state when the probe began (a periodic TCP_INFO
    // sample may have caught it just before the wake-up), and every change.
    let probe_at = ev[i + 1..]
        .iter()
        .position(|e| kind(e) == "so-error")
        .map(|p| i + 1 + p)
        .unwrap_or_else(|| panic!("no SO_ERROR reading after the end\n{t}"));
    let state_then = ev[..probe_at]
        .iter()
        .rev()
        .find(|e| kind(e) == "state")
        .map(|e| &e["state"]);
    assert_eq!(
        state_then,
        Some(&Value::from(state)),
        "state after the end\n{t}"
    );
    assert_eq!(states(r), all_states, "state changes\n{t}");
    assert_eq!(
        r["tcp_info"]["state"], final_state,
        "last TCP_INFO state\n{t}"
    );

    // The probe: SO_ERROR (already consumed or never set), then two sends.
    let so_error = &ev[probe_at];
    assert!(so_error["errno"].is_null(), "SO_ERROR\n{t}");
    assert_eq!(so_error["detail"], "0", "SO_ERROR\n{t}");
    assert_eq!(outcomes_after(r, i, "send"), probes, "probe sends\n{t}");
    let later: Vec<_> = ev[i + 1..]
        .iter()
        .filter(|e| kind(e) == "epoll")
        .map(flags)
        .collect();
    match end {
        // The first probe reached a closed socket: the closer answered RST.
        PeerEnd::Fin => assert!(
            later.iter().any(|f| f.contains("ERR") && f.contains("HUP")),
            "no ERR|HUP wake-up after the probe\n{t}"
        ),
        // The half-closed peer still reads: nothing resets.
        PeerEnd::Half => assert!(
            !later.iter().any(|f| f.contains("ERR")),
            "a half-closed peer must not reset\n{t}"
        ),
        PeerEnd::Rst => {}
    }
    let probe_bytes = match end {
        PeerEnd::Fin => PROBE.len(),
        PeerEnd::Half => 2 * PROBE.len(),
        PeerEnd::Rst => 0,
    };
    assert_eq!(
        u64_field(r, "bytes_sent"),
        sent + probe_bytes as u64,
        "bytes_sent\n{t}"
    );
    assert_eq!(u64_field(r, "bytes_received"), 0, "bytes_received\n{t}");

    let last = ev.last().expect("events");
    assert_eq!(
        (kind(last), &last["detail"]),
        ("close", &Value::from("close(): the observer is done")),
        "{t}"
    );
}

/// Asserts what tcpbye reports as the closer (`--close MODE --after AFTER`) whose
/// peer is a tcpbye observer that sent it 10 bytes and then probed.
fn assert_closed(r: &Value, mode: &str) {
    let t = timeline(r);
    let end = PeerEnd::of_mode(mode);
    assert_eq!(r["closer"], "local", "closer\n{t}");
    assert_eq!(r["close"], mode, "close\n{t}");
    let verdict = if end == PeerEnd::Rst { "rst" } else { "fin" };
    assert_eq!(r["verdict"], verdict, "verdict\n{t}");
    assert_eq!(u64_field(r, "bytes_sent"), 0, "bytes_sent\n{t}");

    let action = if end == PeerEnd::Half {
        "shutdown"
    } else {
        "close"
    };
    let i = position(r, action);
    let ev = events(r);
    let at = u64_field(&ev[i], "t_us");
    assert_eq!(
        u64_field(r, "close_t_us"),
        at,
        "close_t_us is the action's time\n{t}"
    );
    assert!(
        at >= AFTER_US,
        "closed at {at}µs, before --after {AFTER}\n{t}"
    );
    let detail = match mode {
        "fin" => "close(): FIN",
        "half" => "shutdown(SHUT_WR): FIN, still reading",
        "rst" => "SO_LINGER {on, 0} + close(): RST",
        "rst-unread" => "close() with 10 bytes unread: Linux sends RST",
        other => panic!("no detail for {other}"),
    };
    assert_eq!(ev[i]["detail"], detail, "close detail\n{t}");

    // The observer's 10 bytes were read before the close, except by rst-unread.
    let read_before: u64 = ev[..i]
        .iter()
        .filter(|e| kind(e) == "recv")
        .map(|e| u64_field(e, "bytes"))
        .sum();
    let unread = mode == "rst-unread";
    assert_eq!(
        read_before,
        if unread { 0 } else { 10 },
        "bytes read before the close\n{t}"
    );

    if end != PeerEnd::Half {
        assert_eq!(
            i,
            ev.len() - 1,
            "a fin/rst closer's report ends with its close\n{t}"
        );
        assert!(
            r["detected_after_us"].is_null(),
            "nothing to detect after a local close\n{t}"
        );
        assert_eq!(
            u64_field(r, "bytes_received"),
            read_before,
            "bytes_received\n{t}"
        );
        return;
    }
    // Half close: the closer keeps receiving the observer's probes, then its FIN.
    let recvs = outcomes_after(r, i, "recv");
    let (eof, data) = recvs
        .split_last()
        .unwrap_or_else(|| panic!("no recv after shutdown\n{t}"));
    assert_eq!(eof, "EOF", "a half closer ends on the peer's FIN\n{t}");
    let after: u64 = data
        .iter()
        .map(|o| {
            o.parse::<u64>()
                .unwrap_or_else(|_| panic!("recv after shutdown: {o}\n{t}"))
        })
        .sum();
    assert_eq!(
        after,
        2 * PROBE.len() as u64,
        "bytes received after shutdown\n{t}"
    );
    assert_eq!(
        u64_field(r, "bytes_received"),
        10 + after,
        "bytes_received\n{t}"
    );
    // FIN_WAIT1/FIN_WAIT2 while the peer still writes (which of them a sample
    // catches depends on timing), then CLOSE once its FIN came (the kernel moved
    // the connection to a TIME_WAIT socket that no descriptor shows).
    let states_after: Vec<&str> = ev[i + 1..]
        .iter()
        .filter(|e| kind(e) == "state")
        .map(|e| e["state"].as_str().expect("state is a string"))
        .collect();
    assert_eq!(
        states_after.last(),
        Some(&"CLOSE"),
        "half closer's last state\n{t}"
    );
    assert!(
        states_after
            .iter()
            .all(|s| ["FIN_WAIT1", "FIN_WAIT2", "CLOSE"].contains(s)),
        "half closer's states after shutdown: {states_after:?}\n{t}"
    );
    let last = ev.last().expect("events");
    assert_eq!(
        (kind(last), &last["detail"]),
        ("close", &Value::from("close(): done after the peer's end")),
        "{t}"
    );
}

/// The earliest time (on the observer's timeline) at which the observer can have
/// seen `closer`'s end. The observer sent its `--send` bytes as it started, so it
/// started no later than they reached the closer; the closer acted `close_t_us`
/// into its own timeline.
fn earliest_end(closer: &Value) -> u64 {
    let data_in = events(closer)
        .iter()
        .find(|e| kind(e) == "epoll" && flags(e).contains("IN"))
        .map_or(0, |e| u64_field(e, "t_us"));
    u64_field(closer, "close_t_us").saturating_sub(data_in)
}

/// Which tcpbye observes; the other one closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observer {
    Serve,
    Connect,
}

/// Runs `tcpbye serve` and `tcpbye connect` against each other: the observer sends
/// 10 bytes and watches, the closer ends the connection with `mode` after [`AFTER`].
/// Returns (serve, connect) as they finished, both exit 0.
fn run_pair(
    mode: &str,
    observer: Observer,
    extra_serve: &[&str],
    extra_connect: &[&str],
) -> (Finished, Finished) {
    let observe = ["--close", "none", "--send", "10"];
    let close = ["--close", mode, "--after", AFTER];
    let (serve_end, connect_end) = match observer {
        Observer::Serve => (&observe, &close),
        Observer::Connect => (&close, &observe),
    };
    let mut args = vec!["127.0.0.1:0", "--once", "--json", "--timeout", "5s"];
    args.extend_from_slice(serve_end);
    args.extend_from_slice(extra_serve);
    let (server, addr) = serve(&args);
    let addr = addr.to_string();
    let mut args = vec!["connect", &addr, "--json", "--timeout", "5s"];
    args.extend_from_slice(connect_end);
    args.extend_from_slice(extra_connect);
    let client = run(&args);
    let server = server.finish();
    (server, client)
}

/// One close mode, both tcpbye ends, `observer` watching.
fn close_mode_case(mode: &str, observer: Observer) {
    let (server, client) = run_pair(mode, observer, &[], &[]);
    server.expect_code(0);
    client.expect_code(0);
    let (s, c) = (server.report(), client.report());
    assert_eq!(s["role"], "serve");
    assert_eq!(c["role"], "connect");
    assert_eq!(
        addr_field(&s, "local"),
        addr_field(&c, "peer"),
        "the two ends disagree on addresses"
    );
    assert_eq!(
        addr_field(&s, "peer"),
        addr_field(&c, "local"),
        "the two ends disagree on addresses"
    );
    let (watcher, closer) = match observer {
        Observer::Serve => (&s, &c),
        Observer::Connect => (&c, &s),
    };
    assert_observed(watcher, PeerEnd::of_mode(mode), 10, earliest_end(closer));
    assert_closed(closer, mode);
    if mode == "rst-unread" {
        assert_eq!(
            u64_field(closer, "bytes_received"),
            0,
            "rst-unread read nothing\n{}",
            timeline(closer)
        );
    }
}

#[test]
fn fin_connect_closes_serve_observes() {
    close_mode_case("fin", Observer::Serve);
}

#[test]
fn fin_serve_closes_connect_observes() {
    close_mode_case("fin", Observer::Connect);
}

#[test]
fn half_connect_closes_serve_observes() {
    close_mode_case("half", Observer::Serve);
}

#[test]
fn half_serve_closes_connect_observes() {
    close_mode_case("half", Observer::Connect);
}

#[test]
fn rst_connect_closes_serve_observes() {
    close_mode_case("rst", Observer::Serve);
}

#[test]
fn rst_serve_closes_connect_observes() {
    close_mode_case("rst", Observer::Connect);
}

#[test]
fn rst_unread_connect_closes_serve_observes() {
    close_mode_case("rst-unread", Observer::Serve);
}

#[test]
fn rst_unread_serve_closes_connect_observes() {
    close_mode_case("rst-unread", Observer::Connect);
}

#[test]
fn rst_over_ipv6_loopback() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        common::host_lacks(
            "rst_over_ipv6_loopback",
            common::Host::Ipv6,
            "no IPv6 loopback ([::1]) on this host",
        );
        return;
    }
    let (server, addr) = serve(&[
        "[::1]:0",
        "--once",
        "--json",
        "--send",
        "10",
        "--timeout",
        "5s",
    ]);
    assert!(
        addr.is_ipv6() && addr.ip().is_loopback(),
        "listening on {addr}"
    );
    let addr = addr.to_string();
    let client = run(&[
        "connect",
        &addr,
        "--close",
        "rst",
        "--after",
        AFTER,
        "--timeout",
        "5s",
        "--json",
    ]);
    let server = server.finish();
    server.expect_code(0);
    client.expect_code(0);
    let (s, c) = (server.report(), client.report());
    assert_observed(&s, PeerEnd::Rst, 10, earliest_end(&c));
    assert_closed(&c, "rst");
    assert!(addr_field(&s, "peer").is_ipv6());
}

// ---------------------------------------------------------------------------
// Against a peer that is not tcpbye

/// `tcpbye connect --close none` observing the test's own listener, which reads
/// tcpbye's 10 bytes (so tcpbye is surely observing) and then ends as `end` does.
fn connect_observes_plain_listener(end: fn(std::net::TcpStream)) -> Value {
    let (listener, addr) = plain_listener("127.0.0.1");
    let addr_text = addr.to_string();
    let client = spawn(&[
        "connect",
        &addr_text,
        "--close",
        "none",
        "--send",
        "10",
        "--timeout",
        "5s",
        "--json",
    ]);
    let mut stream = accept(&listener);
    assert_eq!(read_exactly(&mut stream, 10), SEND_PREFIX);
    let tcpbye_addr = stream.peer_addr().expect("peer_addr");
    end(stream);
    let client = client.finish();
    client.expect_code(0);
    assert!(client.stderr.is_empty(), "{}", client.dump());
    let r = client.report();
    assert_eq!(r["role"], "connect");
    assert_eq!(addr_field(&r, "peer"), addr);
    assert_eq!(addr_field(&r, "local"), tcpbye_addr);
    r
}

#[test]
fn connect_observes_plain_listener_fin() {
    let r = connect_observes_plain_listener(close_with_fin);
    assert_observed(&r, PeerEnd::Fin, 10, 0);
}

#[test]
fn connect_observes_plain_listener_rst() {
    let r = connect_observes_plain_listener(close_with_rst);
    assert_observed(&r, PeerEnd::Rst, 10, 0);
}

/// `tcpbye serve --once` observing the test's own client, which reads serve's 10
/// bytes and then ends as `end` does.
fn serve_observes_plain_client(end: fn(std::net::TcpStream), extra: &[&str]) -> Value {
    let mut args = vec![
        "127.0.0.1:0",
        "--once",
        "--json",
        "--send",
        "10",
        "--timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    let (server, addr) = serve(&args);
    let mut stream = plain_connect(addr);
    assert_eq!(read_exactly(&mut stream, 10), SEND_PREFIX);
    let client_addr = stream.local_addr().expect("local_addr");
    end(stream);
    let server = server.finish();
    server.expect_code(0);
    assert_eq!(
        server.stderr.len(),
        1,
        "only the listening line\n{}",
        server.dump()
    );
    let r = server.report();
    assert_eq!(r["role"], "serve");
    assert_eq!(addr_field(&r, "local"), addr);
    assert_eq!(addr_field(&r, "peer"), client_addr);
    r
}

#[test]
fn serve_observes_plain_client_fin() {
    let r = serve_observes_plain_client(close_with_fin, &[]);
    assert_observed(&r, PeerEnd::Fin, 10, 0);
}

#[test]
fn serve_observes_plain_client_rst() {
    let r = serve_observes_plain_client(close_with_rst, &[]);
    assert_observed(&r, PeerEnd::Rst, 10, 0);
}

#[test]
fn serve_observes_plain_client_half_close_and_its_probes_arrive() {
    let (server, addr) = serve(&[
        "127.0.0.1:0",
        "--once",
        "--json",
        "--send",
        "10",
        "--timeout",
        "5s",
    ]);
    let mut stream = plain_connect(addr);
    assert_eq!(read_exactly(&mut stream, 10), SEND_PREFIX);
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown(SHUT_WR)");
    // Everything serve writes after our FIN arrives, then serve's own FIN.
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("read until serve's FIN");
    assert_eq!(
        rest,
        [PROBE, PROBE].concat(),
        "what serve wrote after our half close"
    );
    let server = server.finish();
    server.expect_code(0);
    assert_observed(&server.report(), PeerEnd::Half, 10, 0);
}

#[test]
fn no_probe_sends_nothing_after_the_end() {
    let r = serve_observes_plain_client(close_with_fin, &["--no-probe"]);
    let t = timeline(&r);
    assert_eq!(r["verdict"], "fin", "{t}");
    let i = first_end_wakeup(&r);
    assert_eq!(flags(&events(&r)[i]), flag_set(&["IN", "RDHUP"]), "{t}");
    assert!(
        outcomes_after(&r, i, "send").is_empty(),
        "--no-probe sent\n{t}"
    );
    assert_eq!(outcomes_after(&r, i, "recv"), ["EOF"], "{t}");
    assert_eq!(u64_field(&r, "bytes_sent"), 10, "{t}");
    assert_eq!(r["tcp_info"]["state"], "CLOSE_WAIT", "{t}");
}

#[test]
fn serve_observes_plain_client_closing_at_once() {
    // No handshake with tcpbye first: the end may arrive before accept() returns.
    for (end, verdict, wake, first_recv, state) in [
        (
            close_with_fin as fn(std::net::TcpStream),
            "fin",
            &["IN", "RDHUP"][..],
            "EOF",
            "CLOSE_WAIT",
        ),
        (
            close_with_rst,
            "rst",
            &["IN", "ERR", "HUP", "RDHUP"][..],
            "ECONNRESET",
            "CLOSE",
        ),
    ] {
        let (server, addr) = serve(&["127.0.0.1:0", "--once", "--json", "--timeout", "5s"]);
        end(plain_connect(addr));
        let server = server.finish();
        server.expect_code(0);
        let r = server.report();
        let t = timeline(&r);
        assert_eq!(r["verdict"], verdict, "{t}");
        let i = first_end_wakeup(&r);
        assert_eq!(flags(&events(&r)[i]), flag_set(wake), "{t}");
        assert_eq!(outcomes_after(&r, i, "recv")[0], first_recv, "{t}");
        assert!(states(&r).contains(&state.to_owned()), "{t}");
    }
}

#[test]
fn connect_observes_plain_listener_fin_at_once() {
    for _ in 0..3 {
        let (listener, addr) = plain_listener("127.0.0.1");
        let addr = addr.to_string();
        let client = spawn(&[
            "connect",
            &addr,
            "--close",
            "none",
            "--timeout",
            "5s",
            "--json",
        ]);
        close_with_fin(accept(&listener));
        let client = client.finish();
        client.expect_code(0);
        let r = client.report();
        let t = timeline(&r);
        assert_eq!(r["verdict"], "fin", "{t}");
        assert_eq!(r["closer"], "peer", "{t}");
        assert!(
            outcomes_after(&r, 0, "recv").iter().all(|o| o == "EOF"),
            "{t}"
        );
        assert!(states(&r).contains(&"CLOSE_WAIT".to_owned()), "{t}");
    }
}

#[test]
fn connect_observes_plain_listener_rst_at_once() {
    // The peer accepts and resets at once. When the RST lands before tcpbye's loop
    // has seen connect() complete, SO_ERROR says ECONNRESET and the engine files it
    // as a failed connect: verdict `error`, `local` and `closer` null (about one
    // round in seven here). The connection was established, so the verdict is
    // `rst` whichever path is taken; many rounds make the bad path near certain.
    for _ in 0..40 {
        let (listener, addr) = plain_listener("127.0.0.1");
        let addr = addr.to_string();
        let client = spawn(&[
            "connect",
            &addr,
            "--close",
            "none",
            "--timeout",
            "5s",
            "--json",
        ]);
        close_with_rst(accept(&listener));
        let client = client.finish();
        client.expect_code(0);
        let r = client.report();
        let t = timeline(&r);
        assert_eq!(
            r["verdict"], "rst",
            "an accepted connection that was reset\n{t}"
        );
        assert_eq!(r["closer"], "peer", "{t}");
    }
}

/// `tcpbye connect --close MODE --after 100ms` against the test's own listener.
fn plain_listener_meets_closer(mode: &str, send_first: bool) -> (std::net::TcpStream, Finished) {
    let (listener, addr) = plain_listener("127.0.0.1");
    let addr = addr.to_string();
    let client = spawn(&[
        "connect",
        &addr,
        "--close",
        mode,
        "--after",
        "100ms",
        "--timeout",
        "5s",
        "--json",
    ]);
    let mut stream = accept(&listener);
    if send_first {
        stream.write_all(b"0123456789").expect("write to tcpbye");
    }
    let mut buf = [0u8; 64];
    let read = stream.read(&mut buf);
    let client = client.finish();
    client.expect_code(0);
    match (mode, read) {
        ("fin", Ok(0)) => {}
        ("rst" | "rst-unread", Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        (_, other) => panic!(
            "--close {mode}: the plain peer's read() returned {other:?}\n{}",
            client.dump()
        ),
    }
    (stream, client)
}

#[test]
fn plain_listener_reads_eof_after_connect_fin() {
    let (_, client) = plain_listener_meets_closer("fin", false);
    assert_eq!(client.report()["verdict"], "fin");
}

#[test]
fn plain_listener_gets_reset_by_connect_rst() {
    let (_, client) = plain_listener_meets_closer("rst", false);
    assert_eq!(client.report()["verdict"], "rst");
}

#[test]
fn plain_listener_gets_reset_by_connect_rst_unread() {
    let (_, client) = plain_listener_meets_closer("rst-unread", true);
    let r = client.report();
    let t = timeline(&r);
    assert_eq!(r["verdict"], "rst", "{t}");
    assert_eq!(u64_field(&r, "bytes_received"), 0, "{t}");
    assert_eq!(
        events(&r)[position(&r, "close")]["detail"],
        "close() with 10 bytes unread: Linux sends RST",
        "{t}"
    );
}

#[test]
fn plain_listener_keeps_writing_to_connect_half() {
    let (listener, addr) = plain_listener("127.0.0.1");
    let addr = addr.to_string();
    let client = spawn(&[
        "connect",
        &addr,
        "--close",
        "half",
        "--after",
        "100ms",
        "--timeout",
        "5s",
        "--json",
    ]);
    let mut stream = accept(&listener);
    let mut buf = [0u8; 16];
    assert_eq!(
        stream.read(&mut buf).expect("read tcpbye's FIN"),
        0,
        "half close reads as EOF"
    );
    // tcpbye stopped writing but still reads: what we send now reaches it.
    stream
        .write_all(b"after-eof")
        .expect("write after the peer's FIN");
    close_with_fin(stream);
    let client = client.finish();
    client.expect_code(0);
    let r = client.report();
    let t = timeline(&r);
    assert_eq!(
        (&r["verdict"], &r["close"], &r["closer"]),
        (&"fin".into(), &"half".into(), &"local".into()),
        "{t}"
    );
    let i = position(&r, "shutdown");
    assert_eq!(outcomes_after(&r, i, "recv"), ["9", "EOF"], "{t}");
    assert_eq!(u64_field(&r, "bytes_received"), 9, "{t}");
}

#[test]
fn rst_unread_with_nothing_unread_sends_fin() {
    // A peer that never writes: rst-unread waits its grace second, then has only a FIN to send.
    let (listener, addr) = plain_listener("127.0.0.1");
    let addr = addr.to_string();
    let client = spawn(&[
        "connect",
        &addr,
        "--close",
        "rst-unread",
        "--timeout",
        "5s",
        "--json",
    ]);
    let mut stream = accept(&listener);
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).expect("read tcpbye's FIN"), 0);
    let client = client.finish();
    client.expect_code(0);
    let r = client.report();
    let t = timeline(&r);
    assert_eq!(r["verdict"], "fin", "{t}");
    assert_eq!(r["close"], "rst-unread", "{t}");
    let ev = events(&r);
    assert!(
        ev.iter()
            .any(|e| kind(e) == "note"
                && e["detail"].as_str().is_some_and(|d| d.contains("waiting"))),
        "{t}"
    );
    let close = &ev[position(&r, "close")];
    assert_eq!(
        close["detail"], "close() with nothing unread: Linux sends FIN",
        "{t}"
    );
    assert!(
        u64_field(close, "t_us") >= 900_000,
        "closed before the grace period\n{t}"
    );
}

#[test]
fn serve_accepts_every_address_form() {
    for (form, host) in [
        (":0", "127.0.0.1"),
        ("0", "127.0.0.1"),
        ("127.0.0.1:0", "127.0.0.1"),
    ] {
        let (server, addr) = serve(&[form, "--once", "--json", "--timeout", "5s"]);
        assert_eq!(addr.ip().to_string(), host, "serve {form}");
        assert_ne!(addr.port(), 0, "serve {form}: an ephemeral port was chosen");
        close_with_fin(plain_connect(addr));
        let server = server.finish();
        server.expect_code(0);
        assert_eq!(server.report()["verdict"], "fin", "serve {form}");
    }
}

// ---------------------------------------------------------------------------
// The JSON contract

fn assert_u64_or_null(v: &Value, what: &str) {
    assert!(
        v.is_u64() || v.is_null(),
        "{what} is not a number or null: {v}"
    );
}

fn assert_str_or_null(v: &Value, what: &str, allowed: &[&str]) {
    match v {
        Value::Null => {}
        Value::String(s) => assert!(
            allowed.is_empty() || allowed.contains(&s.as_str()),
            "{what} = {s:?}"
        ),
        other => panic!("{what} is not a string or null: {other}"),
    }
}

fn assert_tcp_info(info: &Value) {
    let obj = info
        .as_object()
        .unwrap_or_else(|| panic!("tcp_info is not an object: {info}"));
    assert!(obj["state"].is_string(), "tcp_info.state: {info}");
    assert!(obj["ca_state"].is_string(), "tcp_info.ca_state: {info}");
    for field in [
        "retransmits",
        "probes",
        "backoff",
        "rto",
        "rtt",
        "rttvar",
        "unacked",
        "lost",
        "total_retrans",
        "snd_cwnd",
        "last_data_recv",
        "last_ack_recv",
    ] {
        assert!(
            obj.get(field).is_some_and(Value::is_u64),
            "tcp_info.{field}: {info}"
        );
    }
    for (field, v) in obj {
        assert!(
            v.is_u64() || v.is_string() || v.is_null(),
            "tcp_info.{field}: {v}"
        );
    }
}

fn assert_report_shape(r: &Value, role: &str) {
    const VERDICTS: [&str; 9] = [
        "fin",
        "rst",
        "timeout",
        "heartbeat",
        "open",
        "refused",
        "unreachable",
        "connect-timeout",
        "error",
    ];
    const MODES: [&str; 8] = [
        "fin",
        "half",
        "rst",
        "rst-unread",
        "drop",
        "reboot",
        "hang",
        "none",
    ];
    const KINDS: [&str; 13] = [
        "connect", "accept", "epoll", "recv", "send", "so-error", "state", "close", "shutdown",
        "ping", "pong", "timeout", "note",
    ];
    const FLAGS: [&str; 8] = [
        "IN", "PRI", "OUT", "ERR", "HUP", "RDHUP", "RDNORM", "WRNORM",
    ];
    assert_eq!(r["schema"], 1);
    assert_eq!(r["kind"], "connection");
    assert_eq!(r["role"], role);
    addr_field(r, "local");
    addr_field(r, "peer");
    assert_str_or_null(&r["close"], "close", &MODES);
    assert_str_or_null(&r["closer"], "closer", &["local", "peer"]);
    assert_u64_or_null(&r["close_t_us"], "close_t_us");
    assert!(
        VERDICTS.contains(&r["verdict"].as_str().unwrap_or("")),
        "verdict {}",
        r["verdict"]
    );
    assert_str_or_null(
        &r["detected_by"],
        "detected_by",
        &["keepalive", "user-timeout", "retransmit"],
    );
    assert_u64_or_null(&r["detected_after_us"], "detected_after_us");
    assert_str_or_null(
        &r["detected_from"],
        "detected_from",
        &["close", "packet", "last-activity"],
    );
    assert_u64_or_null(&r["peer_idle_us"], "peer_idle_us");
    assert_u64_or_null(&r["predicted_us"], "predicted_us");
    assert_str_or_null(&r["predicted_basis"], "predicted_basis", &[]);
    let duration = u64_field(r, "duration_us");
    u64_field(r, "bytes_sent");
    u64_field(r, "bytes_received");
    assert_eq!(u64_field(r, "events_dropped"), 0);
    assert_eq!(u64_field(r, "snapshots_dropped"), 0);

    let mut prev = 0;
    assert!(!events(r).is_empty());
    for e in events(r) {
        let obj = e
            .as_object()
            .unwrap_or_else(|| panic!("event is not an object: {e}"));
        let t = u64_field(e, "t_us");
        assert!(
            t >= prev && t <= duration,
            "event times must be ordered and within duration_us: {e}"
        );
        prev = t;
        assert!(KINDS.contains(&kind(e)), "event kind {e}");
        for (field, v) in obj {
            match field.as_str() {
                "t_us" | "kind" => {}
                "epoll" => assert!(
                    v.as_array().is_some_and(|a| a
                        .iter()
                        .all(|f| FLAGS.contains(&f.as_str().unwrap_or("")))),
                    "epoll flags: {e}"
                ),
                "bytes" => assert!(v.is_u64(), "bytes: {e}"),
                "errno" => assert!(v.as_str().is_some_and(|s| s.starts_with('E')), "errno: {e}"),
                "state" | "detail" => assert!(v.is_string(), "{field}: {e}"),
                // Fields added later are allowed; the known ones keep their types.
                _ => {}
            }
        }
    }
    assert_tcp_info(&r["tcp_info"]);
    let snapshots = r["snapshots"].as_array().expect("snapshots is an array");
    assert!(!snapshots.is_empty());
    let mut prev = 0;
    for s in snapshots {
        let t = u64_field(s, "t_us");
        assert!(t >= prev, "snapshots out of order");
        prev = t;
        assert_tcp_info(&s["tcp_info"]);
    }
    assert_eq!(
        snapshots.last().map(|s| &s["tcp_info"]),
        Some(&r["tcp_info"]),
        "tcp_info is the last snapshot"
    );
}

#[test]
fn json_lines_carry_report_and_summary() {
    let (server, client) = run_pair("rst", Observer::Serve, &[], &[]);
    server.expect_code(0);
    client.expect_code(0);
    for (out, role) in [(&server, "serve"), (&client, "connect")] {
        assert_eq!(out.stdout.lines().count(), 2, "{}", out.dump());
        let r = out.report();
        assert_report_shape(&r, role);
        let s = out.summary();
        assert_eq!(s["schema"], 1);
        assert_eq!(u64_field(&s, "connections"), 1);
        assert_eq!(s["verdicts"], serde_json::json!({ "rst": 1 }));
        assert_eq!(s["expect_met"], true);
        assert_eq!(s["interrupted"], false);
        match &r["detected_after_us"] {
            Value::Null => assert!(s["detected_after_us"].is_null(), "{s}"),
            us => {
                for p in ["p50", "p90", "p99", "max"] {
                    assert_eq!(
                        &s["detected_after_us"][p], us,
                        "one sample: every percentile is it\n{s}"
                    );
                }
            }
        }
    }
    // The observer saw the client's end (untimed without --pcap, so only its idle
    // time is known); the closer had nothing to detect.
    assert!(server.report()["detected_after_us"].is_null());
    assert!(server.report()["peer_idle_us"].is_u64());
    assert!(client.report()["detected_after_us"].is_null());
    assert!(client.report()["peer_idle_us"].is_null());
}

// ---------------------------------------------------------------------------
// --expect

#[test]
fn expect_met_exits_zero() {
    let (server, client) = run_pair(
        "rst",
        Observer::Serve,
        &["--expect", "rst"],
        &["--expect", "fin,rst"],
    );
    server.expect_code(0);
    client.expect_code(0);
    assert_eq!(
        server.stderr.len(),
        1,
        "only the listening line\n{}",
        server.dump()
    );
    assert!(client.stderr.is_empty(), "{}", client.dump());
    assert_eq!(server.summary()["expect_met"], true);
    assert_eq!(client.summary()["expect_met"], true);
}

#[test]
fn expect_missed_exits_one_with_one_reason_line() {
    let (listener, addr) = plain_listener("127.0.0.1");
    let addr_text = addr.to_string();
    let client = spawn(&[
        "connect",
        &addr_text,
        "--close",
        "none",
        "--send",
        "10",
        "--timeout",
        "5s",
        "--json",
        "--expect",
        "fin",
    ]);
    let mut stream = accept(&listener);
    read_exactly(&mut stream, 10);
    close_with_rst(stream);
    let client = client.finish();
    let line = client.expect_one_error_line(1, "expectation not met");
    assert!(line.contains("verdict rst, expected fin"), "{line}");
    assert!(line.contains(&addr_text), "{line}");
    // The report is still printed, and the summary says the expectation failed.
    assert_eq!(client.report()["verdict"], "rst");
    assert_eq!(client.summary()["expect_met"], false);
}

#[test]
fn serve_expect_missed_exits_one() {
    let (server, client) = run_pair("rst", Observer::Serve, &["--expect", "fin"], &[]);
    client.expect_code(0);
    server.expect_code(1);
    let reasons: Vec<&String> = server
        .stderr
        .iter()
        .filter(|l| l.contains("expectation not met"))
        .collect();
    assert_eq!(reasons.len(), 1, "{}", server.dump());
    assert_eq!(
        server.stderr.len(),
        2,
        "listening line + one reason\n{}",
        server.dump()
    );
    assert!(
        reasons[0].contains("verdict rst, expected fin"),
        "{}",
        server.dump()
    );
    assert_eq!(server.summary()["expect_met"], false);
}

// ---------------------------------------------------------------------------
// Bad input: one error line (clap's adds its tips and usage), the right exit
// code, never a panic

#[test]
fn bad_addresses_are_usage_errors() {
    for (args, needle) in [
        (
            &["connect", "nowhere:99999", "--timeout", "2s"][..],
            "99999",
        ),
        (&["serve", ":22x", "--timeout", "2s"], "22x"),
        (&["serve", "99999", "--timeout", "2s"], "99999"),
    ] {
        // clap's message: the error line, then its pointer to --help.
        run(args).expect_usage_error(needle);
    }
    // A rule of the plan: one line.
    let out = run(&["connect", "127.0.0.1:0", "--timeout", "2s"]);
    out.expect_one_error_line(2, "port 0");
    assert!(out.stdout.is_empty(), "{}", out.dump());
}

#[test]
fn unknown_close_mode_is_a_usage_error() {
    for args in [
        &[
            "connect",
            "127.0.0.1:9",
            "--close",
            "bogus",
            "--timeout",
            "2s",
        ][..],
        &[
            "serve",
            "127.0.0.1:0",
            "--close",
            "bogus",
            "--timeout",
            "2s",
        ],
        &["connect", "127.0.0.1:9", "--close", "", "--timeout", "2s"],
    ] {
        let out = run(args);
        out.expect_usage_error("--close");
        // The valid modes are listed.
        assert!(
            out.stderr.iter().any(|l| l.contains("possible values")),
            "{}",
            out.dump()
        );
    }
}

#[test]
fn bad_durations_are_usage_errors() {
    for (args, needle) in [
        (
            &[
                "connect",
                "127.0.0.1:9",
                "--after",
                "soon",
                "--timeout",
                "2s",
            ][..],
            "--after",
        ),
        (
            &["connect", "127.0.0.1:9", "--timeout", "5parsecs"],
            "--timeout",
        ),
        (
            &["serve", "127.0.0.1:0", "--after=-1s", "--timeout", "2s"],
            "--after",
        ),
        (&["serve", "127.0.0.1:0", "--timeout", "x"], "--timeout"),
    ] {
        run(args).expect_usage_error(needle);
    }
}

#[test]
fn port_in_use_is_a_runtime_error() {
    let (_listener, addr) = plain_listener("127.0.0.1");
    let addr = addr.to_string();
    let out = run(&["serve", &addr, "--once", "--timeout", "2s"]);
    let line = out.expect_one_error_line(3, "Address already in use");
    assert!(line.contains(&addr), "the line names the address: {line}");
    assert!(out.stdout.is_empty(), "{}", out.dump());
}

/// A port that refuses connections: bound (so nobody else can take it) but not listening.
fn refusing_port() -> (socket2::Socket, SocketAddr) {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    sock.bind(&any.into()).expect("bind");
    let addr = sock
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("an IP address");
    (sock, addr)
}

#[test]
fn refused_connection_is_a_runtime_error() {
    let (_sock, addr) = refusing_port();
    let addr = addr.to_string();
    let out = run(&["connect", &addr, "--timeout", "2s"]);
    let line = out.expect_one_error_line(3, "ECONNREFUSED");
    assert!(line.contains(&addr), "{line}");
    assert!(out.stdout.is_empty(), "{}", out.dump());

    // With --json the report is still printed; the exit code is the same.
    let out = run(&["connect", &addr, "--timeout", "2s", "--json"]);
    out.expect_one_error_line(3, "ECONNREFUSED");
    let r = out.report();
    assert_eq!(r["verdict"], "refused");
    assert_eq!(
        out.summary()["verdicts"],
        serde_json::json!({ "refused": 1 })
    );
}

#[test]
fn refused_connection_meets_expect_refused() {
    let (_sock, addr) = refusing_port();
    let addr = addr.to_string();
    let out = run(&[
        "connect",
        &addr,
        "--timeout",
        "2s",
        "--json",
        "--expect",
        "refused",
    ]);
    out.expect_code(0);
    assert!(out.stderr.is_empty(), "{}", out.dump());
    let r = out.report();
    assert_eq!(r["verdict"], "refused");
    let connect = &events(&r)[position(&r, "connect")];
    assert_eq!(connect["errno"], "ECONNREFUSED", "{}", timeline(&r));
}
