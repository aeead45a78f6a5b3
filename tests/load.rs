//! Thousands of connections ending together: every one of them is reported.

use crate::common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

/// How many connections end at once.
const CONNECTIONS: usize = 10_000;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's open-file limit to its hard limit; `false` (and a loud
/// skip) when even that is below `wanted`.
fn enough_descriptors(test: &str, wanted: u64) -> bool {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < wanted {
        common::host_lacks(
            test,
            common::Host::FdLimit,
            &format!("the open-file limit is {hard}, below {wanted}"),
        );
        return false;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    true
}

#[test]
fn ten_thousand_connections_reset_at_once_are_each_reported() {
    let test = common::test_name!();
    // This process holds one end of each connection, serve the other.
    let wanted = CONNECTIONS as u64 + 200;
    if !enough_descriptors(test, wanted) {
        return;
    }
    let mut serve = Cmd::tcpbye(&["serve", "127.0.0.1:0", "--json", "--timeout", "50s"])
        .deadline(Duration::from_secs(90))
        .spawn();
    let addr = serve.listening();
    let pid = serve.pid();
    let base = open_fds(pid);
    let clients: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| TcpStream::connect(addr).expect("connect to serve"))
        .collect();
    // Every connection accepted (serve holds a descriptor for each) before any ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) < base + CONNECTIONS {
        assert!(
            Instant::now() < deadline,
            "serve accepted {} of {CONNECTIONS} in 30 s",
            open_fds(pid) - base
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended = Instant::now();
    for client in &clients {
        socket2::SockRef::from(client)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
    }
    drop(clients);
    // All the RSTs leave within a few milliseconds of each other.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reports = 0;
    let mut rst = 0;
    while reports < CONNECTIONS {
        let Some(line) = serve.try_stdout_line(deadline) else {
            panic!("{reports} of {CONNECTIONS} reports within 30 s");
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        if v["kind"] == "connection" {
            reports += 1;
            rst += usize::from(v["verdict"] == "rst");
        }
    }
    let took = ended.elapsed();
    assert_eq!(
        rst, CONNECTIONS,
        "every connection ended by an RST is reported as rst"
    );
    serve.interrupt();
    let done = serve.finish();
    assert_eq!(
        done.summary()["connections"].as_u64(),
        Some(CONNECTIONS as u64)
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_full_accept_queue_is_told() {
    let test = common::test_name!();
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    let wanted = somaxconn as u64 + 400;
    if !enough_descriptors(test, wanted) {
        return;
    }
    let mut serve = Cmd::tcpbye(&["serve", "127.0.0.1:0", "--summary", "--json"])
        .deadline(Duration::from_secs(60))
        .spawn();
    let addr = serve.listening();
    // A stopped serve accepts nothing: more connects than the queue holds fill it.
    serve.signal(nix::sys::signal::Signal::SIGSTOP);
    let clients: Vec<socket2::Socket> = (0..somaxconn + 200)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            s.set_nonblocking(true).expect("O_NONBLOCK");
            let _ = s.connect(&addr.into()); // EINPROGRESS: the handshake goes on alone
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    serve.signal(nix::sys::signal::Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(500));
    serve.interrupt();
    let done = serve.finish();
    drop(clients);
    assert!(
        done.stderr
            .iter()
            .any(|l| l.contains("the accept queue was full")),
        "{}",
        done.dump()
    );
}
