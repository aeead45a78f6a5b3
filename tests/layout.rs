//! Human output that reads well at ordinary widths: the lab matrix fits 100 columns
//! without breaking a word, no line ends in spaces, and `--brief` gives one line
//! per connection.

mod common;

use common::{run, serve};

/// Every line of `text` that ends in a space or a tab.
fn trailing_spaces(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.ends_with(' ') || l.ends_with('\t'))
        .collect()
}

fn widest(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn lab_matrix_fits_100_columns_without_breaking_a_word() {
    // Piped output, no COLUMNS: the matrix is laid out for 100 columns.
    let out = common::Cmd::tcpbye(&["lab", "--modes", "fin,rst,hang", "--runs", "1"])
        .env("COLUMNS", "")
        .run();
    out.expect_code(0);
    assert!(
        widest(&out.stdout) <= 100,
        "a line is {} columns wide:\n{}",
        widest(&out.stdout),
        out.stdout
    );
    assert!(trailing_spaces(&out.stdout).is_empty(), "{:?}", out.stdout);
    // The states are whole words, and every case is still there.
    assert!(out.stdout.contains("ESTABLISHED"), "{}", out.stdout);
    assert!(out.stdout.contains("CLOSE_WAIT → CLOSE"), "{}", out.stdout);
    for mode in ["fin", "rst", "hang"] {
        let rows = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(mode))
            .count();
        // Four settings; each appears once per half when the matrix is split.
        assert!(
            rows == 4 || rows == 8,
            "{mode}: {rows} rows\n{}",
            out.stdout
        );
    }
}

#[test]
fn lab_matrix_is_one_table_when_there_is_room() {
    let out = common::Cmd::tcpbye(&["lab", "--modes", "fin", "--runs", "1"])
        .env("COLUMNS", "250")
        .run();
    out.expect_code(0);
    let headers = out
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("mode "))
        .count();
    assert_eq!(headers, 1, "{}", out.stdout);
    assert!(trailing_spaces(&out.stdout).is_empty(), "{:?}", out.stdout);
}

#[test]
fn connection_report_and_summary_have_no_trailing_spaces() {
    let (mut server, addr) = serve(&["127.0.0.1:0", "--timeout", "5s"]);
    let addr = addr.to_string();
    let client = run(&["connect", &addr, "--close", "rst", "--count", "2"]);
    client.expect_code(0);
    // Both reports, then the summary that Ctrl-C prints.
    let deadline = common::within(5);
    let mut reports = 0;
    while reports < 2 {
        match server.try_stdout_line(deadline) {
            Some(line) if line.starts_with("serve ") => reports += 1,
            Some(_) => {}
            None => panic!("serve printed {reports} of 2 reports\n{}", server.dump()),
        }
    }
    server.interrupt();
    let served = server.finish();
    served.expect_code(130);
    for text in [&client.stdout, &served.stdout] {
        assert!(!text.is_empty());
        assert!(trailing_spaces(text).is_empty(), "{text:?}");
    }
}

#[test]
fn brief_prints_one_line_per_connection() {
    let (server, addr) = serve(&["127.0.0.1:0", "--once", "--brief", "--timeout", "5s"]);
    let addr = addr.to_string();
    let client = run(&["connect", &addr, "--close", "rst", "--brief"]);
    client.expect_code(0);
    let served = server.finish();
    served.expect_code(0);
    let line = served.stdout.trim_end();
    assert_eq!(line.lines().count(), 1, "{}", served.stdout);
    assert!(line.starts_with("serve "), "{line}");
    assert!(line.contains(": rst"), "{line}");
    assert!(line.contains("ECONNRESET"), "{line}");
    assert_eq!(
        client.stdout.trim_end().lines().count(),
        1,
        "{}",
        client.stdout
    );
    assert!(
        client.stdout.contains("this side closed (rst)"),
        "{}",
        client.stdout
    );
}

#[test]
fn brief_excludes_json_and_ladder() {
    for other in ["--json", "--ladder"] {
        let out = run(&["connect", "127.0.0.1:9", "--brief", other]);
        out.expect_code(2);
    }
}

#[test]
fn a_closers_report_leads_with_what_the_other_end_went_through() {
    let (server, addr) = serve(&["127.0.0.1:0", "--once", "--timeout", "5s"]);
    let addr = addr.to_string();
    let client = run(&["connect", &addr, "--close", "rst"]);
    client.expect_code(0);
    server.finish().expect_code(0);
    // The title line, then the summary table whose first row is the other end's fate.
    let first_row = client.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        first_row.contains("the other end") && first_row.contains("gone +"),
        "{}",
        client.stdout
    );
    let brief = {
        let (server, addr) = serve(&["127.0.0.1:0", "--once", "--timeout", "5s"]);
        let out = run(&["connect", &addr.to_string(), "--close", "rst", "--brief"]);
        server.finish().expect_code(0);
        out
    };
    assert!(
        brief.stdout.contains("the other end: gone +"),
        "{}",
        brief.stdout
    );
}
