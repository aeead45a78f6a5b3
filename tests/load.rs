//! Thousands of connections ending together: every one of them is reported.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// How many connections end at once.
const CONNECTIONS: usize = 10_000;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn ten_thousand_connections_reset_at_once_are_each_reported() {
    let test = "ten_thousand_connections_reset_at_once_are_each_reported";
    // This process holds one end of each connection, serve the other.
    let wanted = CONNECTIONS as u64 + 200;
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if hard < wanted {
        skip(
            test,
            &format!("the open-file limit is {hard}, below {wanted}"),
        );
        return;
    }
    if soft < wanted {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
            .expect("setrlimit");
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
