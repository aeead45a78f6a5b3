//! Peers nobody controls: `check --listen` and `serve` facing health checks, port
//! scans and clients that come and go, and what tcpbye still guarantees then —
//! every command ends by itself, and what it keeps stays bounded.

use crate::common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::{Cmd, Proc, close_with_fin, close_with_rst, plain_connect, within};

/// `check --listen ARGS --json`, listening on an ephemeral loopback port.
fn check_listen(args: &[&str], deadline: Duration) -> (Proc, SocketAddr) {
    let mut argv = vec!["check", "--listen", "127.0.0.1:0", "--json"];
    argv.extend_from_slice(args);
    let mut proc = Cmd::tcpbye(&argv).deadline(deadline).spawn();
    let addr = proc.listening();
    (proc, addr)
}

/// What port scans and health checks do: connect and leave at once, with an RST
/// or a FIN; the last one (a FIN) waits for tcpbye to close its side, so that
/// the client that comes next finds them all over. A refused connect (tcpbye
/// already gone) ends it.
fn scan(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            return;
        };
        if i + 1 == n {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut buf = [0u8; 64];
            while let Ok(1..) = (&stream).read(&mut buf) {}
        } else if i % 2 == 0 {
            close_with_fin(stream);
        } else {
            close_with_rst(stream);
        }
    }
}

/// A well-behaved client: reads until tcpbye ends the connection, then closes.
fn until_the_end(addr: SocketAddr) {
    let mut stream: TcpStream = plain_connect(addr);
    let mut buf = [0u8; 256];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn case<'a>(cases: &'a [serde_json::Value], mode: &str) -> &'a serde_json::Value {
    cases
        .iter()
        .find(|c| c["mode"] == mode)
        .unwrap_or_else(|| panic!("no case for {mode}"))
}

#[test]
fn check_listen_ends_after_a_health_check_that_left_before_tcpbye_acted() {
    let (check, addr) = check_listen(
        &["--modes", "fin,rst", "--wait", "1s"],
        Duration::from_secs(30),
    );
    // The only client: one health check, gone at once.
    scan(addr, 1);
    let out = check.finish();
    out.expect_code(0);
    let cases = out.objects("check-case");
    for mode in ["fin", "rst"] {
        assert_eq!(
            case(&cases, mode)["reaction"],
            "not-judged",
            "{}",
            out.dump()
        );
    }
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("1 connection(s) ended by the client before tcpbye acted")),
        "{}",
        out.dump()
    );
}

#[test]
fn scans_before_between_and_after_the_client_are_part_of_no_mode() {
    let (check, addr) = check_listen(
        &["--modes", "fin,rst", "--wait", "1s"],
        Duration::from_secs(40),
    );
    scan(addr, 20);
    until_the_end(addr);
    scan(addr, 20);
    until_the_end(addr);
    scan(addr, 20);
    let out = check.finish();
    out.expect_code(0);
    let cases = out.objects("check-case");
    // Each mode went to a connection that stayed: the client's, not a scan's.
    for mode in ["fin", "rst"] {
        let reaction = case(&cases, mode)["reaction"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        assert!(
            reaction != "not-judged",
            "{mode}: {reaction}\n{}",
            out.dump()
        );
    }
    let told = out
        .stderr
        .iter()
        .find(|l| l.contains("ended by the client before tcpbye acted"))
        .unwrap_or_else(|| panic!("no count of early connections\n{}", out.dump()));
    // The scans after the last mode count until the check is over.
    let n: u64 = told
        .trim_start_matches("tcpbye: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!((40..=60).contains(&n), "{told}");
}

/// The README's CI snippet: `serve --once --timeout` started in the background
/// must end even when the client never comes.
#[test]
fn serve_once_with_a_timeout_ends_when_no_client_comes() {
    let mut serve = Cmd::tcpbye(&[
        "serve",
        "127.0.0.1:0",
        "--once",
        "--json",
        "--expect",
        "rst",
        "--timeout",
        "1s",
    ])
    .deadline(Duration::from_secs(10))
    .spawn();
    serve.listening();
    let started = std::time::Instant::now();
    let out = serve.finish();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "ended after {took:?}");
    let line = out
        .expect_code(3)
        .stderr
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        line.starts_with("tcpbye: ") && line.contains("no client connected within 1.000s"),
        "{}",
        out.dump()
    );
    assert!(out.stdout.is_empty(), "{}", out.dump());
}

/// The wait for the first client does not cut a client that came: its own
/// `--timeout` still ends it.
#[test]
fn serve_once_with_a_timeout_still_reports_a_client_that_came() {
    let (mut serve, addr) = common::serve(&["127.0.0.1:0", "--once", "--json", "--timeout", "1s"]);
    let client = plain_connect(addr);
    let report = serve.json_line(within(10));
    assert_eq!(report["verdict"], "open", "{}", serve.dump());
    serve.expect_exit(0, within(10));
    drop(client);
}

/// `--pcap` to a FIFO (with `--force`, which used to open it and wait for a
/// reader with SIGINT and SIGTERM already blocked): refused at once.
#[test]
fn pcap_to_a_fifo_is_refused_at_once() {
    let test = common::test_name!();
    if !common::require_root(test, "--pcap needs CAP_NET_RAW") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tcpbye-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fifo = dir.join("capture.pcap");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .expect("mkfifo");
    let path = fifo.to_str().expect("utf-8 path");
    for force in [true, false] {
        let mut args = vec!["serve", "127.0.0.1:0", "--pcap", path];
        if force {
            args.push("--force");
        }
        let out = Cmd::tcpbye(&args).deadline(Duration::from_secs(10)).run();
        out.expect_one_error_line(2, "a FIFO or a socket could block tcpbye");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A slow client: one byte every 2 ms, `n` times, then a FIN.
fn trickle(addr: SocketAddr, n: usize) {
    use std::io::Write;
    let mut stream = plain_connect(addr);
    for _ in 0..n {
        if stream.write_all(b"x").is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A plain serve report of a slow client stays a few rows long: the repeated
/// reads are folded into one note, the first and last events kept.
#[test]
fn a_slow_clients_plain_report_is_folded_and_json_keeps_every_event() {
    let (serve, addr) = common::serve(&["127.0.0.1:0", "--once", "--no-probe"]);
    trickle(addr, 400);
    let out = serve.finish();
    out.expect_code(0);
    let rows = out
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('+'))
        .count();
    assert!(
        (5..=40).contains(&rows),
        "{rows} timeline rows\n{}",
        out.dump()
    );
    assert!(
        out.stdout.contains("folded") && out.stdout.contains("recv ×"),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout.contains("EOF"),
        "the ending is kept\n{}",
        out.dump()
    );

    let (serve, addr) = common::serve(&["127.0.0.1:0", "--once", "--no-probe", "--json"]);
    trickle(addr, 400);
    let out = serve.finish();
    out.expect_code(0);
    let report = out.report();
    let events = common::events(&report);
    assert!(events.len() > 400, "{} events", events.len());
    assert!(events.iter().all(
        |e| common::kind(e) != "note" || !e["detail"].as_str().unwrap_or("").contains("folded")
    ));
}

#[test]
fn serve_help_states_its_connection_cap() {
    let out = Cmd::tcpbye(&["serve", "--help"]).run();
    out.expect_code(0);
    assert!(
        out.stdout.contains("--max-conns <N>") && out.stdout.contains("[default: 10000]"),
        "{}",
        out.dump()
    );
}

/// `--pcap` with many connections at once: each report holds its own segments
/// (found by 4-tuple), and the summary says how many the kernel dropped.
#[test]
fn pcap_gives_each_of_many_connections_its_own_segments_and_counts_drops() {
    use std::io::Write;
    let test = "pcap_gives_each_of_many_connections_its_own_segments_and_counts_drops";
    if !common::require_root(test, "--pcap needs CAP_NET_RAW") {
        return;
    }
    const CLIENTS: usize = 100;
    let dir = std::env::temp_dir().join(format!("tcpbye-pcap-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("many.pcap");
    let (mut serve, addr) = common::serve(&[
        "127.0.0.1:0",
        "--json",
        "--no-probe",
        "--pcap",
        file.to_str().expect("utf-8 path"),
    ]);
    // All open at once, each sending as many bytes as its number, then a FIN.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| plain_connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&vec![b'x'; i + 1]).expect("send");
    }
    drop(clients);
    let mut reports = Vec::new();
    while reports.len() < CLIENTS {
        reports.push(serve.json_line(within(20)));
    }
    serve.interrupt();
    let out = serve.finish();
    let _ = std::fs::remove_dir_all(&dir);
    out.expect_code(130);
    for r in &reports {
        let sent = r["bytes_received"].as_u64().expect("bytes_received");
        let packets = r["packets"].as_array().expect("packets with --pcap");
        let data: Vec<u64> = packets
            .iter()
            .filter(|p| p["outgoing"] == false)
            .filter_map(|p| p["len"].as_u64())
            .filter(|len| *len > 0)
            .collect();
        // One segment of its own length: none of another connection's.
        assert_eq!(data, [sent], "{r}");
        let fin = packets.iter().any(|p| {
            p["outgoing"] == false
                && p["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "FIN"))
        });
        assert!(fin, "no FIN of its own: {r}");
    }
    let summary = out.summary();
    assert_eq!(summary["pcap_dropped"], 0, "{summary}");
}

/// A flood of connections beyond `--max-conns` is told once, then counted, not
/// one stderr line each: the first at once, the rest at most every 10 s.
#[test]
fn a_flood_beyond_max_conns_is_told_once_not_per_connection() {
    let mut serve = Cmd::tcpbye(&["serve", "127.0.0.1:0", "--max-conns", "1", "--summary"])
        .deadline(Duration::from_secs(30))
        .spawn();
    let addr = serve.listening();
    let held = plain_connect(addr);
    let started = std::time::Instant::now();
    for _ in 0..200 {
        // Each is closed at once by serve; reading to the end waits for that.
        let Ok(mut extra) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            break;
        };
        let _ = extra.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 16];
        let _ = extra.read(&mut buf);
    }
    // One line, and one more for every 10 s the flood lasted.
    let allowed = 1 + (started.elapsed().as_secs() / 10) as usize;
    drop(held);
    serve.interrupt();
    let out = serve.finish_or_terminate(Duration::from_secs(5));
    let told: Vec<&String> = out
        .stderr
        .iter()
        .filter(|l| l.contains("--max-conns 1 reached"))
        .collect();
    assert!(
        (1..=allowed).contains(&told.len()),
        "at most {allowed} lines for 200 closed connections: {told:?}"
    );
    assert!(told[0].contains("closed the connection from"), "{told:?}");
}
