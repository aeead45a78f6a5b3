//! What a new user meets in the first hour: values at the edges of every flag,
//! signals from a closing terminal, a privileged port, clap's own usage errors, and
//! the promises of the build (minimum Rust version).
//!
//! Every child runs under the harness's deadline and is killed and reaped when its
//! guard drops; a child that would run on is sent SIGTERM after a short grace.

use crate::common;

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use crate::common::*;
use nix::sys::signal::Signal;

/// How long a child whose flags it accepted may run before it is sent SIGTERM.
/// A panic of the kind this file guards against comes at the first connection,
/// within milliseconds; the SIGTERM then walks the interrupt path too.
const GRACE: Duration = Duration::from_secs(1);

/// Values that no duration, count or rate flag may accept.
const ALWAYS_REJECTED: [&str; 5] = ["1e19", "300000000000y", "-1", "NaN", "18446744073709551616"];

/// Values some flags accept: nothing, a lot, the largest a duration may be, one
/// day more, and the largest 32-bit count.
const EDGES: [&str; 5] = ["0", "1000", "365d", "366d", "4294967295"];

/// One flag of one subcommand, fed every extreme value.
struct Flag {
    command: &'static str,
    /// The flag's name, e.g. `--timeout`.
    name: &'static str,
    /// The value around the extreme one, `{}` marking where it goes.
    template: &'static str,
    /// Flags the case needs besides, e.g. `--close hang` for `--hold`.
    extra: &'static [&'static str],
}

const fn flag(command: &'static str, name: &'static str) -> Flag {
    Flag {
        command,
        name,
        template: "{}",
        extra: &[],
    }
}

/// Every duration and count flag of serve, connect and lab.
fn flags() -> Vec<Flag> {
    let mut all = Vec::new();
    for command in ["serve", "connect"] {
        all.extend([
            flag(command, "--timeout"),
            Flag {
                extra: &["--close", "fin"],
                ..flag(command, "--after")
            },
            Flag {
                extra: &["--close", "hang"],
                ..flag(command, "--hold")
            },
            Flag {
                extra: &["--close", "fin"],
                ..flag(command, "--linger-watch")
            },
            flag(command, "--send-every"),
            flag(command, "--expect-within"),
            flag(command, "--user-timeout"),
            Flag {
                template: "{},3",
                ..flag(command, "--heartbeat")
            },
            Flag {
                template: "200ms,{}",
                ..flag(command, "--heartbeat")
            },
            Flag {
                template: "{},1s,3",
                ..flag(command, "--keepalive")
            },
            Flag {
                template: "1s,1s,{}",
                ..flag(command, "--keepalive")
            },
            flag(command, "--send"),
        ]);
    }
    all.extend([
        flag("serve", "--max-conns"),
        flag("connect", "--connect-timeout"),
        flag("connect", "--count"),
        Flag {
            extra: &["--count", "2"],
            ..flag("connect", "--concurrency")
        },
        Flag {
            extra: &["--count", "2"],
            ..flag("connect", "--rate")
        },
        flag("lab", "--runs"),
    ]);
    all
}

/// Runs one flag with one value against a live peer and checks the outcome.
fn try_value(flag: &Flag, value: &str) {
    let arg = format!("{}={}", flag.name, flag.template.replace("{}", value));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let target = listener.local_addr().expect("local_addr").to_string();
    let mut argv: Vec<&str> = vec![flag.command];
    match flag.command {
        "serve" => argv.extend(["127.0.0.1:0", "--once", "--json"]),
        "connect" => argv.extend([target.as_str(), "--json"]),
        _ => argv.extend(["--modes", "fin", "--settings", "none", "--json"]),
    }
    argv.extend(flag.extra);
    argv.push(&arg);
    let mut child = spawn(&argv);
    if flag.command == "serve"
        && let Some(addr) = child.listening_or_not()
    {
        // The first client is where an overflowing deadline used to panic. With
        // a tiny --timeout, `--once` may already have ended for want of a client.
        if let Ok(stream) = TcpStream::connect(addr) {
            close_with_fin(stream);
        }
    }
    let out = child.finish_or_terminate(GRACE);
    let panicked = out.stderr.iter().any(|l| l.contains("panicked"));
    assert!(
        out.code.is_some_and(|c| c != 101) && !panicked,
        "tcpbye panicked\n{}",
        out.dump()
    );
    if out.code == Some(2) || ALWAYS_REJECTED.contains(&value) {
        // A rejected value: exit 2, and the first line names the flag.
        assert_eq!(out.code, Some(2), "{arg} must be rejected\n{}", out.dump());
        let first = out.stderr.first().map_or("", String::as_str);
        assert!(
            first.starts_with("tcpbye: ") && first.contains(flag.name),
            "the first stderr line must name {}\n{}",
            flag.name,
            out.dump()
        );
        assert!(out.stdout.is_empty(), "{}", out.dump());
    }
}

#[test]
fn every_duration_and_count_flag_survives_its_extremes() {
    let flags = flags();
    thread::scope(|scope| {
        for flag in &flags {
            scope.spawn(move || {
                for value in ALWAYS_REJECTED.iter().chain(&EDGES) {
                    try_value(flag, value);
                }
            });
        }
    });
}

#[test]
fn durations_beyond_a_year_are_rejected_with_the_limit() {
    for value in ["366d", "1e19", "300000000000y"] {
        let arg = format!("--timeout={value}");
        let out = run(&["serve", "127.0.0.1:0", &arg]);
        assert_eq!(out.code, Some(2), "{}", out.dump());
        assert!(
            out.stderr[0].contains("365 days"),
            "the error names the limit\n{}",
            out.dump()
        );
    }
}

// ---------------------------------------------------------------------------
// The terminal closes; flags that cannot go together

#[test]
fn sighup_ends_like_sigterm_with_the_summary() {
    let (server, addr) = serve(&["127.0.0.1:0", "--json", "--send", "1", "--timeout", "5s"]);
    let mut client = plain_connect(addr);
    // The byte `--send` makes it write proves the server is observing the connection.
    read_exactly(&mut client, 1);
    server.signal(Signal::SIGHUP);
    let out = server.finish();
    out.expect_code(130);
    let lines = out.json_lines();
    assert_eq!(
        lines.len(),
        2,
        "the open connection and the summary\n{}",
        out.dump()
    );
    assert_eq!(lines[0]["verdict"], "open", "{}", out.dump());
    assert_eq!(out.summary()["connections"], 1, "{}", out.dump());
    drop(client);
}

#[test]
fn ladder_with_count_is_a_usage_error() {
    let (_listener, addr) = plain_listener("127.0.0.1");
    let addr = addr.to_string();
    let out = run(&[
        "connect",
        &addr,
        "--count",
        "3",
        "--ladder",
        "--timeout",
        "2s",
    ]);
    out.expect_one_error_line(2, "--ladder");
    assert!(out.stdout.is_empty(), "{}", out.dump());
}

// ---------------------------------------------------------------------------
// A privileged port

/// The lowest port an unprivileged process may bind (`None`: every port is).
fn unprivileged_port_start() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .unwrap_or_else(|_| "1024".to_owned());
    let start: u16 = text
        .trim()
        .parse()
        .expect("ip_unprivileged_port_start is a port");
    (start > 1).then_some(start)
}

#[test]
fn privileged_port_is_a_privilege_error() {
    let Some(start) = unprivileged_port_start() else {
        common::host_lacks(
            "privileged_port_is_a_privilege_error",
            common::Host::PrivilegedPorts,
            "net.ipv4.ip_unprivileged_port_start is 0 or 1, every port is unprivileged",
        );
        return;
    };
    // The kernel checks the privilege before whether the port is free.
    let addr = format!("127.0.0.1:{}", start - 1);
    let args = ["serve", addr.as_str(), "--timeout", "1s"];
    // As root, drop to nobody without capabilities; otherwise tcpbye is unprivileged already.
    let child = if is_root() {
        spawn_unprivileged(&args)
    } else {
        spawn(&args)
    };
    let out = child.finish_or_terminate(GRACE);
    let line = out.expect_one_error_line(4, "CAP_NET_BIND_SERVICE");
    assert!(
        line.contains(&format!("bind {addr}")) && line.contains("port above"),
        "names the address and the way around\n{}",
        out.dump()
    );
}

// ---------------------------------------------------------------------------
// Usage errors: clap's whole message, not its first line

#[test]
fn bare_tcpbye_prints_the_help() {
    let out = run(&[]);
    out.expect_code(2);
    let text = format!("{}{}", out.stdout, out.stderr.join("\n"));
    for needle in [
        "Usage: tcpbye <COMMAND>",
        "Commands:",
        "serve",
        "connect",
        "lab",
    ] {
        assert!(text.contains(needle), "no {needle:?}\n{}", out.dump());
    }
}

#[test]
fn usage_errors_show_the_whole_clap_message() {
    for (args, needles) in [
        (
            &["completions"][..],
            &[
                "required arguments were not provided",
                "<SHELL>",
                "Usage: tcpbye completions <SHELL>",
            ][..],
        ),
        (
            &["connect", "--close", "bogus"],
            &[
                "invalid value 'bogus' for '--close <MODE>'",
                "possible values",
                "rst-unread",
            ],
        ),
        (
            &["connect", "--clos", "fin"],
            &[
                "unexpected argument '--clos'",
                "a similar argument exists: '--close'",
                "Usage: tcpbye connect",
            ],
        ),
        (
            &["serve", "--timeout", "1e19"],
            &["'--timeout <DUR>': '1e19' is too long: a duration may be at most 365 days"],
        ),
    ] {
        let out = run(args);
        out.expect_usage_error(needles[0]);
        let text = out.stderr.join("\n");
        for needle in needles {
            assert!(text.contains(needle), "no {needle:?}\n{}", out.dump());
        }
    }
}

// ---------------------------------------------------------------------------
// The build's promises

/// `1.88` or `1.88.0` as comparable numbers.
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text
        .split('.')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("{text:?} is not a version"))
        })
        .collect();
    parts.resize(3, 0);
    parts
}

/// The platform cargo builds for here (`host:` of `cargo -vV`).
fn host_triple() -> String {
    let output = Cmd::program(env!("CARGO"), &["-vV"])
        .deadline(Duration::from_secs(30))
        .run()
        .output();
    assert!(output.status.success(), "cargo -vV failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("cargo -vV names its host")
        .trim()
        .to_string()
}

/// Only the crates this platform builds: `cargo build` and `cargo test` never download
/// another platform's (`windows-sys`, `anstyle-wincon`), so `--offline` must not need them.
#[test]
fn rust_version_covers_every_locked_dependency() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let host = host_triple();
    let output = Cmd::program(
        env!("CARGO"),
        &[
            "metadata",
            "--manifest-path",
            manifest,
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
            "--format-version",
            "1",
        ],
    )
    .deadline(Duration::from_secs(60))
    .run()
    .output();
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let ours = packages
        .iter()
        .find(|p| p["name"] == "tcpbye")
        .and_then(|p| p["rust_version"].as_str())
        .expect("Cargo.toml sets rust-version");
    let needed = packages
        .iter()
        .filter_map(|p| Some((p["rust_version"].as_str()?, p["name"].as_str()?)))
        .max_by_key(|(v, _)| version(v))
        .expect("some crate declares a rust-version");
    assert!(
        version(ours) >= version(needed.0),
        "rust-version = {ours:?} in Cargo.toml, but the locked {} needs {}",
        needed.1,
        needed.0
    );
}

/// A fresh directory for one test's files, removed when it drops.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tcpbye-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `connect --pcap PATH [extra]` against a plain listener; the finished run.
fn connect_with_pcap(path: &std::path::Path, extra: &[&str]) -> Finished {
    let (listener, addr) = plain_listener("127.0.0.1");
    let addr = addr.to_string();
    let path = path.to_string_lossy().into_owned();
    let mut argv = vec!["connect", &addr, "--close", "rst", "--pcap", &path];
    argv.extend_from_slice(extra);
    let out = run(&argv);
    drop(listener);
    out
}

#[test]
fn pcap_never_writes_through_a_symlink_nor_over_a_file_without_force() {
    let test = common::test_name!();
    if !require_root(test, "--pcap needs CAP_NET_RAW (root)") {
        return;
    }
    let dir = TempDir::new("pcap-files");
    let target = dir.0.join("precious");
    std::fs::write(&target, "keep me").expect("write the target");
    let link = dir.0.join("planted.pcap");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");

    // A planted link is refused, with or without --force, and its target is untouched.
    for extra in [&[][..], &["--force"]] {
        let out = connect_with_pcap(&link, extra);
        out.expect_one_error_line(3, "symbolic link");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
    // An existing file is kept unless --force says to replace it.
    let out = connect_with_pcap(&target, &[]);
    out.expect_one_error_line(3, "--force");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let out = connect_with_pcap(&target, &["--force"]);
    out.expect_code(0);
    let replaced = std::fs::File::open(&target).unwrap();
    assert!(
        pcap_file::pcap::PcapReader::new(replaced).is_ok(),
        "--force did not leave a pcap file"
    );
    // A new file is simply created.
    let fresh = dir.0.join("fresh.pcap");
    connect_with_pcap(&fresh, &[]).expect_code(0);
    assert!(fresh.exists());
}

#[test]
fn a_pcap_write_error_says_write() {
    let test = common::test_name!();
    if !require_root(test, "--pcap needs CAP_NET_RAW (root)") {
        return;
    }
    if !std::path::Path::new("/dev/full").exists() {
        common::host_lacks(test, common::Host::DevFull, "no /dev/full here");
        return;
    }
    let out = connect_with_pcap(std::path::Path::new("/dev/full"), &["--force"]);
    let line = out.expect_one_error_line(3, "/dev/full");
    assert!(line.contains("write"), "{line}");
    assert!(!line.contains("reading"), "{line}");
    assert!(line.contains("No space left"), "{line}");
}
