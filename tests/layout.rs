//! Human output that reads well at ordinary widths: every command fits a terminal
//! of 80 or 100 columns (run in a real pseudo-terminal of that size) and 100
//! columns when piped, without breaking a word; no line ends in spaces; `--brief`
//! gives one line per connection (and `check --brief` one per mode); ASCII where
//! the locale is not UTF-8, and no control sequences on a dumb terminal.

use crate::common;

use std::time::Duration;

use crate::common::{Cmd, require_tool, run, serve, within};

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
    // The states are whole words, under their rows, and every case is still there.
    assert!(out.stdout.contains("ESTABLISHED"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "\n  flags IN|RDHUP · recv EOF · send ok → EPIPE · state CLOSE_WAIT → CLOSE\n"
        ),
        "{}",
        out.stdout
    );
    for mode in ["fin", "rst", "hang"] {
        let rows = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(mode))
            .count();
        assert_eq!(rows, 4, "{mode}\n{}", out.stdout);
    }
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

// ---------------------------------------------------------------------------
// At a terminal's real width

/// Runs its arguments in a pseudo-terminal `cols` columns wide (stdin, stdout and
/// stderr all on it) and copies what they write to its own stdout.
const IN_A_TERMINAL: &str = r#"
import fcntl, os, pty, select, struct, sys, termios
cols = int(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    # The size is set before tcpbye starts, so its first look sees it.
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    os.environ.pop("COLUMNS", None)
    os.execvp(sys.argv[2], sys.argv[2:])
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// `tcpbye ARGS` in a terminal `cols` columns wide, with `env` set; `None` (after a
/// loud skip) without python3.
fn in_terminal(test: &str, cols: u16, args: &[&str], env: &[(&str, &str)]) -> Option<Cmd> {
    if !require_tool(test, "python3", &["--version"], "python3 not installed") {
        return None;
    }
    let cols = cols.to_string();
    let mut argv = vec!["-c", IN_A_TERMINAL, &cols, common::BIN];
    argv.extend_from_slice(args);
    let mut cmd = Cmd::program("python3", &argv).deadline(Duration::from_secs(30));
    for (key, value) in env {
        cmd = cmd.env(key, value);
    }
    Some(cmd)
}

/// What a terminal shows of `raw`: each line as its last `\r` left it, without
/// control sequences.
fn screen(raw: &str) -> Vec<String> {
    raw.split('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            let shown = l.rsplit('\r').next().unwrap_or_default();
            let mut out = String::new();
            let mut chars = shown.chars();
            while let Some(c) = chars.next() {
                if c == '\x1b' {
                    // CSI: ESC [ parameters, then one final letter.
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

/// Asserts no line of what the terminal shows is wider than `cols` or ends in a space.
fn fits(what: &str, cols: usize, raw: &str) {
    let lines = screen(raw);
    assert!(lines.len() > 2, "{what}: too little output\n{raw}");
    for line in &lines {
        assert!(
            line.chars().count() <= cols,
            "{what} at {cols} columns: a line of {}:\n{line}\n\n{}",
            line.chars().count(),
            lines.join("\n")
        );
        assert!(
            !line.ends_with(' '),
            "{what}: trailing spaces: {line:?}\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn lab_check_bench_and_help_fit_80_and_100_column_terminals() {
    let test = common::test_name!();
    // The program under test for `check`: a tcpbye serve, which notices each ending.
    let (_server, addr) = serve(&["127.0.0.1:0", "--timeout", "10s"]);
    let addr = addr.to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["lab", "--modes", "fin,rst,hang", "--runs", "1"],
        vec![
            "check",
            &addr,
            "--modes",
            "fin,half,rst,hang",
            "--wait",
            "300ms",
        ],
        vec![
            "check", &addr, "--modes", "fin,hang", "--wait", "300ms", "--brief",
        ],
        vec![
            "bench",
            "--only",
            "latency,idle",
            "--samples",
            "20",
            "--idle",
            "20",
            "--idle-seconds",
            "1",
        ],
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["connect", "--help"],
        vec!["lab", "--help"],
        vec!["check", "--help"],
        vec!["path", "--help"],
        vec!["bench", "--help"],
    ];
    for cols in [80, 100] {
        for args in &commands {
            let Some(cmd) = in_terminal(test, cols, args, &[]) else {
                return;
            };
            let out = cmd.run();
            out.expect_code(0);
            fits(&args.join(" "), usize::from(cols), &out.stdout);
        }
    }
}

#[test]
fn serve_and_connect_reports_fit_80_and_100_column_terminals() {
    let test = common::test_name!();
    for cols in [80, 100] {
        for extra in [
            &[][..],
            &["--brief"][..],
            &["--ladder"][..],
            &["--keepalive", "1s,1s,2"][..],
        ] {
            let mut args = vec!["serve", "127.0.0.1:0", "--once", "--timeout", "5s"];
            args.extend_from_slice(extra);
            let Some(cmd) = in_terminal(test, cols, &args, &[]) else {
                return;
            };
            let mut server = cmd.spawn();
            // Its stderr comes through the terminal, on python's stdout.
            let deadline = within(5);
            let addr = loop {
                let line = server
                    .try_stdout_line(deadline)
                    .unwrap_or_else(|| panic!("serve did not listen\n{}", server.dump()));
                if let Some(at) = line.split("listening on ").nth(1) {
                    break at.trim().to_owned();
                }
            };
            let mut client = vec!["connect", &addr, "--close", "rst", "--after", "100ms"];
            client.extend_from_slice(extra);
            let Some(cmd) = in_terminal(test, cols, &client, &[]) else {
                return;
            };
            let connect = cmd.run();
            connect.expect_code(0);
            let served = server.finish();
            served.expect_code(0);
            let what = format!("{extra:?}");
            fits(
                &format!("connect {what}"),
                usize::from(cols),
                &connect.stdout,
            );
            fits(&format!("serve {what}"), usize::from(cols), &served.stdout);
        }
    }
}

/// A long error or notice on stderr goes on at the next line on a terminal, and
/// stays one line in a pipe (for grep).
#[test]
fn long_stderr_lines_fit_the_terminal() {
    let test = common::test_name!();
    let (_server, addr) = serve(&["127.0.0.1:0", "--once", "--timeout", "5s"]);
    let addr = addr.to_string();
    // An expectation missed: a line of well over 80 columns.
    let args = [
        "connect",
        &addr,
        "--close",
        "rst",
        "--expect-within",
        "1ms",
        "--brief",
    ];
    let Some(cmd) = in_terminal(test, 80, &args, &[]) else {
        return;
    };
    let out = cmd.run();
    out.expect_code(1);
    assert!(out.stdout.contains("expectation not met"), "{}", out.stdout);
    fits("connect --expect-within", 80, &out.stdout);
    let (_server, addr) = serve(&["127.0.0.1:0", "--once", "--timeout", "5s"]);
    let addr = addr.to_string();
    let piped = run(&["connect", &addr, "--close", "rst", "--expect-within", "1ms"]);
    piped.expect_code(1);
    let line = piped
        .stderr
        .iter()
        .find(|l| l.starts_with("tcpbye: expectation not met: connect "))
        .unwrap_or_else(|| panic!("{}", piped.dump()));
    assert!(line.chars().count() > 80, "{line}");
}

#[test]
fn check_and_bench_fit_100_columns_when_piped() {
    let (_server, addr) = serve(&["127.0.0.1:0", "--timeout", "10s"]);
    let addr = addr.to_string();
    for args in [
        vec![
            "check",
            &addr,
            "--modes",
            "fin,half,rst,hang",
            "--wait",
            "300ms",
        ],
        vec!["bench", "--only", "latency", "--samples", "20"],
    ] {
        let out = Cmd::tcpbye(&args).env("COLUMNS", "").run();
        out.expect_code(0);
        assert!(widest(&out.stdout) <= 100, "{}", out.stdout);
        assert!(trailing_spaces(&out.stdout).is_empty(), "{:?}", out.stdout);
    }
}

#[test]
fn check_brief_prints_one_line_per_mode() {
    let (_server, addr) = serve(&["127.0.0.1:0", "--timeout", "10s"]);
    let addr = addr.to_string();
    let out = run(&[
        "check",
        &addr,
        "--modes",
        "fin,rst,hang",
        "--wait",
        "300ms",
        "--brief",
    ]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for (line, mode) in lines.iter().zip(["fin ", "rst ", "hang "]) {
        assert!(line.starts_with(mode), "{}", out.stdout);
    }
    assert!(lines[0].contains(" after "), "{}", out.stdout);
    assert!(lines[2].contains("unnoticed"), "{}", out.stdout);
    // Then the summary line, which fits: 3 modes, 3 lines, one summary.
    assert!(lines[3].contains(": 3 modes in"), "{}", out.stdout);
    assert!(lines.len() <= 5, "{}", out.stdout);
    let both = run(&["check", &addr, "--brief", "--json"]);
    both.expect_code(2);
}

// ---------------------------------------------------------------------------
// The locale and the terminal's kind

#[test]
fn ascii_when_the_locale_is_not_utf8() {
    let (server, addr) = serve(&["127.0.0.1:0", "--timeout", "10s"]);
    let addr = addr.to_string();
    for (env, utf8) in [
        ("C.UTF-8", true),
        ("C", false),
        ("POSIX", false),
        ("en_US.ISO-8859-1", false),
    ] {
        for args in [
            vec!["lab", "--modes", "fin,rst", "--runs", "1"],
            vec!["check", &addr, "--modes", "fin,hang", "--wait", "300ms"],
            vec!["connect", &addr, "--close", "rst"],
            vec!["lab", "--help"],
        ] {
            let out = Cmd::tcpbye(&args).env("LC_ALL", env).run();
            out.expect_code(0);
            let text = format!("{}{}", out.stdout, out.stderr.join("\n"));
            assert_eq!(text.is_ascii(), !utf8, "LC_ALL={env} {args:?}\n{text}");
        }
        // Same layout: the lab matrix's lines are as wide either way.
    }
    // LANG decides when LC_ALL and LC_CTYPE are unset.
    let out = Cmd::tcpbye(&["lab", "--modes", "fin", "--runs", "1"])
        .env("LC_ALL", "")
        .env("LC_CTYPE", "")
        .env("LANG", "C")
        .run();
    out.expect_code(0);
    assert!(out.stdout.is_ascii(), "{}", out.stdout);
    assert!(out.stdout.contains("ok > EPIPE"), "{}", out.stdout);
    drop(server);
}

#[test]
fn box_drawing_falls_back_to_ascii_on_a_terminal() {
    let test = common::test_name!();
    let (server, addr) = serve(&["127.0.0.1:0", "--timeout", "10s"]);
    let addr = addr.to_string();
    for (locale, boxes) in [("C.UTF-8", true), ("C", false)] {
        let Some(cmd) = in_terminal(
            test,
            80,
            &["connect", &addr, "--close", "rst"],
            &[("LC_ALL", locale)],
        ) else {
            return;
        };
        let out = cmd.run();
        out.expect_code(0);
        assert_eq!(out.stdout.contains('│'), boxes, "{}", out.stdout);
        assert_eq!(out.stdout.is_ascii(), !boxes, "{}", out.stdout);
        fits("connect", 80, &out.stdout);
    }
    drop(server);
}

#[test]
fn a_dumb_terminal_gets_plain_progress_lines() {
    let test = common::test_name!();
    for (term, erases) in [("xterm", true), ("dumb", false)] {
        let Some(cmd) = in_terminal(
            test,
            80,
            &["lab", "--modes", "fin,rst", "--runs", "1"],
            &[("TERM", term)],
        ) else {
            return;
        };
        let out = cmd.run();
        out.expect_code(0);
        assert_eq!(
            out.stdout.contains("\x1b[2K"),
            erases,
            "TERM={term}\n{:?}",
            out.stdout
        );
        if !erases {
            assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
            // The first progress line, alone on its line.
            assert!(
                out.stdout.contains("tcpbye lab: 0/8 cases done\r\n")
                    || out.stdout.contains("tcpbye lab: 1/8 cases done\r\n"),
                "{:?}",
                out.stdout
            );
        }
    }
}
