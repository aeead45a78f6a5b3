//! Golden files of the human output, from real runs on loopback with stdout piped
//! (plain columns, as in a pipe or a CI log): one connection's report as
//! `serve --once` prints it when the peer closes with an RST and (without probe
//! writes and the other end's view, which race) with a FIN, the summary of a churn
//! at both ends, and the lab matrix of the endings that need no privileges.
//!
//! What changes from run to run (durations, ports, rates, most TCP_INFO numbers) is
//! masked by `common::stable_human`, which keeps the words, the rows and the columns:
//! a change of a renderer fails here. `TCPBYE_REGENERATE=1 cargo test --test tests golden::`
//! rewrites the files instead.

use std::time::Duration;

use crate::common::{Cmd, POLL, golden, mask_text, run, serve, stable_human, within};

/// The one command that rewrites every golden file of this test.
const REFRESH: &str = "TCPBYE_REGENERATE=1 cargo test --test tests golden::";

/// `tcpbye serve --once SERVE_ARGS` (human output) observing
/// `tcpbye connect --close MODE`.
fn serve_observing(mode: &str, serve_args: &[&str]) -> String {
    let mut args = vec!["127.0.0.1:0", "--once", "--timeout", "5s"];
    args.extend_from_slice(serve_args);
    let (server, addr) = serve(&args);
    // `--after`: serve is surely watching before the close.
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--close",
        mode,
        "--after",
        "200ms",
        "--json",
        "--timeout",
        "5s",
    ]);
    client.expect_code(0);
    let server = server.finish();
    server.expect_code(0);
    server.stdout
}

#[test]
fn one_connection_ended_by_an_rst() {
    let text = serve_observing("rst", &[]);
    assert!(text.starts_with("serve 127.0.0.1:"), "{text}");
    golden(
        "human-serve-observes-rst.txt",
        REFRESH,
        &stable_human(&text),
    );
}

/// Without the probe writes and the other end's socket: after a FIN, when the
/// closer's orphan answers a probe with an RST, and whether its FIN is acknowledged
/// (FIN_WAIT1 or FIN_WAIT2) when serve reads its state, both race serve's readings.
/// Those are real observations that vary from run to run, which no mask should hide.
#[test]
fn one_connection_ended_by_a_fin() {
    let text = serve_observing("fin", &["--no-probe", "--no-peer-side"]);
    assert!(text.starts_with("serve 127.0.0.1:"), "{text}");
    golden(
        "human-serve-observes-fin.txt",
        REFRESH,
        &stable_human(&text),
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `connect --count 3 --close rst` against `serve --summary`: both summaries.
#[test]
fn churn_summary_at_both_ends() {
    let (mut server, addr) = serve(&["127.0.0.1:0", "--summary", "--timeout", "5s"]);
    let base = open_fds(server.pid());
    let client = run(&[
        "connect",
        &addr.to_string(),
        "--count",
        "3",
        "--close",
        "rst",
        "--after",
        "100ms",
        "--timeout",
        "5s",
    ]);
    client.expect_code(0);
    // serve is done with all three once it holds no connection any more.
    let deadline = within(5);
    while open_fds(server.pid()) > base && std::time::Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    server.interrupt();
    server.expect_exit(130, within(5));
    let server = server.finish();
    golden(
        "summary-connect-count-3-rst.txt",
        REFRESH,
        &stable_human(&client.stdout),
    );
    golden(
        "summary-serve-count-3-rst.txt",
        REFRESH,
        &stable_human(&server.stdout),
    );
}

/// The matrix of every ending that needs no privileges (drop and reboot need
/// CAP_NET_ADMIN), once per setting.
#[test]
fn lab_matrix_without_privileged_modes() {
    let lab = Cmd::tcpbye(&["lab", "--modes", "fin,rst,rst-unread,hang", "--runs", "1"])
        .deadline(Duration::from_secs(30))
        .run();
    lab.expect_code(0);
    golden(
        "lab-fin-rst-rst-unread-hang.txt",
        REFRESH,
        &stable_human(&lab.stdout),
    );
}

// ---------------------------------------------------------------------------
// The masking itself: what it hides, what it must keep.

#[test]
fn masking_hides_times_ports_rates_and_counts_of_sends() {
    for (raw, masked) in [
        (
            "serve 127.0.0.1:45057 ↔ 127.0.0.1:51808: RST",
            "serve 127.0.0.1:<port> ↔ 127.0.0.1:<port>: RST",
        ),
        ("[::1]:7007 to [::1]:40000", "[::1]:<port> to [::1]:<port>"),
        ("+230µs +20.4ms 5.004s on,0.2s,0", "+<t> +<t> <t> on,<t>,0"),
        ("268µs (11170.9/s)", "<t> (<n>/s)"),
        ("ok×24 EPIPE×2", "ok×<n> EPIPE×2"),
        (
            "p50 51µs · p90 105µs rst: 3 (3 established) 16 cases",
            "p50 <t> · p90 <t> rst: 3 (3 established) 16 cases",
        ),
        ("bytes sent 13, received 0", "bytes sent 13, received 0"),
    ] {
        assert_eq!(mask_text(raw), masked, "{raw}");
    }
}

#[test]
fn masking_lays_tables_out_again_and_keeps_their_words_and_columns() {
    let run_a = "serve 127.0.0.1:1 ↔ 127.0.0.1:2: FIN\n\
                 \x20t       event  result   state\n\
                 \x20+30µs   state           ESTABLISHED\n\
                 \x20+224µs  recv   0 (EOF)\n\
                 \x20TCP_INFO  +30µs        +224µs\n\
                 \x20state     ESTABLISHED  CLOSE\n\
                 \x20rtt (µs)  17           17\n";
    let run_b = "serve 127.0.0.1:3 ↔ 127.0.0.1:4: FIN\n\
                 \x20t        event  result   state\n\
                 \x20+3µs     state           ESTABLISHED\n\
                 \x20+20.4ms  recv   0 (EOF)\n\
                 \x20TCP_INFO  +3µs         +20.4ms\n\
                 \x20state     ESTABLISHED  CLOSE\n\
                 \x20rtt (µs)  9            123\n";
    let expected = "serve 127.0.0.1:<port> ↔ 127.0.0.1:<port>: FIN\n\
                    \x20t     event  result   state\n\
                    \x20+<t>  state           ESTABLISHED\n\
                    \x20+<t>  recv   0 (EOF)\n\
                    \x20TCP_INFO  +<t>         +<t>\n\
                    \x20state     ESTABLISHED  CLOSE\n\
                    \x20rtt (µs)  <n>          <n>\n";
    assert_eq!(stable_human(run_a), expected);
    assert_eq!(stable_human(run_b), expected);
    // A word changes, or a cell moves to another column: the masked text differs.
    let other_word = run_a.replace("ESTABLISHED\n", "SYN_RECV\n");
    assert_ne!(other_word, run_a);
    assert_ne!(stable_human(&other_word), expected);
    // ESTABLISHED as a result rather than a state.
    let other_column = run_a
        .replace(
            " t       event  result   state\n",
            " t       event  result       state\n",
        )
        .replace(
            " +30µs   state           ESTABLISHED\n",
            " +30µs   state  ESTABLISHED\n",
        );
    assert_ne!(other_column, run_a);
    assert_ne!(stable_human(&other_column), expected);
}

#[test]
#[should_panic(expected = "not laid out as plain comfy-table columns")]
fn masking_refuses_a_table_laid_out_otherwise() {
    // Three spaces between columns instead of two.
    stable_human(" t     event\n +1µs   recv\n");
}
