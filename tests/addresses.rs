//! Addresses as people type them: ambiguous IPv6 text and URLs get a hint, a host
//! name is resolved when the command runs (a failed lookup is a runtime error) and
//! each of its addresses is tried in turn, as curl does.

use crate::common;

use std::net::TcpListener;

use crate::common::*;

#[test]
fn ambiguous_ipv6_and_urls_are_usage_errors_with_the_right_hint() {
    let out = run(&["connect", "::1:80"]);
    out.expect_usage_error("[::1]:80");
    let out = run(&["connect", "tcp://127.0.0.1:80"]);
    let line = out.expect_usage_error("'127.0.0.1:80'");
    assert!(!line.contains("IPv6"), "{line}");
    let out = run(&["connect", "-4", "[::1]:80"]);
    out.expect_one_error_line(2, "-4");
}

#[test]
fn a_name_that_does_not_resolve_is_a_runtime_error() {
    let out = run(&["connect", "nosuchhost.invalid:80"]);
    out.expect_one_error_line(3, "cannot resolve 'nosuchhost.invalid'");
    let out = run(&["serve", "nosuchhost.invalid:0", "--once"]);
    out.expect_one_error_line(3, "cannot resolve 'nosuchhost.invalid'");
}

/// `tcpbye ARGS` in a mount namespace of its own where /etc/hosts says `hosts`;
/// the namespace, and with it the bind mount, ends with the process.
fn with_hosts(hosts: &str, args: &[&str]) -> Finished {
    let dir = std::env::temp_dir().join(format!("tcpbye-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("hosts");
    std::fs::write(&file, hosts).expect("write hosts");
    let script = format!(
        "mount --bind '{}' /etc/hosts && exec \"$0\" \"$@\"",
        file.display()
    );
    let mut argv = vec!["-m", "--propagation", "private", "sh", "-c", &script, BIN];
    argv.extend_from_slice(args);
    let out = Cmd::program("unshare", &argv).run();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn each_address_of_a_name_is_tried_in_turn_and_minus_4_6_choose() {
    let test = common::test_name!();
    if !require_root(test, "a private /etc/hosts needs a mount namespace (root)") {
        return;
    }
    if TcpListener::bind("[::1]:0").is_err() {
        common::host_lacks(
            test,
            common::Host::Ipv6,
            "no IPv6 loopback ([::1]) on this host",
        );
        return;
    }
    let hosts = "127.0.0.1 localhost\n::1 dual.test\n127.0.0.1 dual.test\n";
    // Only one of the name's two addresses listens; whichever the resolver puts
    // first, the connection is made.
    for listen in ["[::1]:0", "127.0.0.1:0"] {
        let (server, addr) = serve(&[listen, "--once", "--timeout", "5s", "--json"]);
        let target = format!("dual.test:{}", addr.port());
        let out = with_hosts(hosts, &["connect", &target, "--close", "rst", "--json"]);
        out.expect_code(0);
        assert_eq!(
            out.report()["peer"].as_str(),
            Some(addr.to_string().as_str())
        );
        server.finish().expect_code(0);
    }
    // -4 and -6 keep to one family: here only the other one listens.
    let (server, addr) = serve(&["[::1]:0", "--once", "--timeout", "5s"]);
    let target = format!("dual.test:{}", addr.port());
    let out = with_hosts(hosts, &["connect", "-4", &target]);
    out.expect_one_error_line(3, "refused");
    let out = with_hosts(hosts, &["connect", "-6", &target, "--close", "rst"]);
    out.expect_code(0);
    server.finish().expect_code(0);
    let out = with_hosts(hosts, &["connect", "-6", "localhost:80"]);
    out.expect_one_error_line(3, "no IPv6 address");
}
