//! `tcpbye lab`, the main job: the whole matrix on loopback, as this user and
//! (when root) as an unprivileged user, asserting what each row observed.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{require_root, run, unprivileged};

/// Rows by (mode, setting), and the summary.
fn matrix(stdout: &str) -> (HashMap<(String, String), Value>, Value) {
    let mut rows = HashMap::new();
    let mut summary = Value::Null;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        match v["kind"].as_str() {
            Some("lab-case") => {
                let key = (
                    v["mode"].as_str().unwrap_or_default().to_owned(),
                    v["setting"].as_str().unwrap_or_default().to_owned(),
                );
                rows.insert(key, v);
            }
            Some("lab-summary") => summary = v,
            other => panic!("unexpected object {other:?}"),
        }
    }
    (rows, summary)
}

fn row<'a>(rows: &'a HashMap<(String, String), Value>, mode: &str, setting: &str) -> &'a Value {
    rows.get(&(mode.to_owned(), setting.to_owned()))
        .unwrap_or_else(|| panic!("no row {mode}/{setting}"))
}

fn assert_row(
    rows: &HashMap<(String, String), Value>,
    mode: &str,
    setting: &str,
    verdict: &str,
    recv: &str,
    state_starts: &str,
) {
    let r = row(rows, mode, setting);
    assert_eq!(r["status"], "ran", "{mode}/{setting}: {r}");
    assert_eq!(r["verdict"], verdict, "{mode}/{setting}: {r}");
    assert_eq!(r["recv"], recv, "{mode}/{setting}: {r}");
    let state = r["state"].as_str().unwrap_or_default();
    assert!(
        state.starts_with(state_starts),
        "{mode}/{setting}: state {state}"
    );
}

#[test]
fn the_full_matrix_runs_in_under_30_seconds_and_shows_what_linux_does() {
    let started = Instant::now();
    let out = run(&["lab", "--runs", "1", "--json"]);
    out.expect_code(0);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "lab took {elapsed:?}");
    let (rows, summary) = matrix(&out.stdout);
    assert_eq!(rows.len(), 28, "7 modes × 4 settings");
    assert_eq!(summary["cases"], 28);

    for setting in ["none", "keepalive", "user-timeout", "heartbeat"] {
        assert_row(&rows, "fin", setting, "fin", "EOF", "CLOSE_WAIT");
        assert_eq!(row(&rows, "fin", setting)["first_flags"], "IN|RDHUP");
        assert_eq!(row(&rows, "fin", setting)["send"], "ok → EPIPE");
        assert_row(&rows, "half", setting, "fin", "EOF", "CLOSE_WAIT");
        assert_eq!(row(&rows, "half", setting)["send"], "ok×2");
        assert_row(&rows, "rst", setting, "rst", "ECONNRESET", "CLOSE");
        assert_eq!(
            row(&rows, "rst", setting)["first_flags"],
            "IN|ERR|HUP|RDHUP"
        );
        assert_row(&rows, "rst-unread", setting, "rst", "ECONNRESET", "CLOSE");
    }
    // Silent endings: only a mechanism notices, and hang fools keepalive.
    if row(&rows, "drop", "none")["status"] == "ran" {
        assert_row(&rows, "drop", "none", "open", "-", "ESTABLISHED");
        assert_row(&rows, "drop", "keepalive", "timeout", "ETIMEDOUT", "CLOSE");
        assert_eq!(row(&rows, "drop", "keepalive")["detected_by"], "keepalive");
        assert_row(
            &rows,
            "drop",
            "user-timeout",
            "timeout",
            "ETIMEDOUT",
            "CLOSE",
        );
        assert_eq!(
            row(&rows, "drop", "user-timeout")["detected_by"],
            "user-timeout"
        );
        assert_eq!(row(&rows, "drop", "heartbeat")["verdict"], "heartbeat");
        assert_row(&rows, "reboot", "keepalive", "rst", "ECONNRESET", "CLOSE");
    } else {
        assert_eq!(row(&rows, "drop", "none")["status"], "needs CAP_NET_ADMIN");
    }
    assert_row(&rows, "hang", "keepalive", "open", "-", "ESTABLISHED");
    assert_eq!(row(&rows, "hang", "heartbeat")["verdict"], "heartbeat");
    // Detection times of the observed endings are real and small on loopback.
    let fin = row(&rows, "fin", "none")["detected_after_us"]["p50"]
        .as_u64()
        .expect("fin p50");
    assert!(fin < 50_000, "fin noticed after {fin}µs");
}

#[test]
fn without_privileges_lab_makes_its_own_namespace_or_says_what_it_needs() {
    if !require_root(
        "without_privileges_lab_makes_its_own_namespace_or_says_what_it_needs",
        "needs root to drop privileges",
    ) {
        return;
    }
    let out = unprivileged(&[
        "lab",
        "--runs",
        "1",
        "--json",
        "--modes",
        "fin,drop,reboot",
        "--settings",
        "none,heartbeat",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let (rows, summary) = matrix(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rows.len(), 6);
    assert_row(&rows, "fin", "none", "fin", "EOF", "CLOSE_WAIT");
    match summary["namespace"].as_str() {
        // A user + network namespace gave it CAP_NET_ADMIN over its own loopback.
        Some("own") => {
            assert_eq!(row(&rows, "drop", "heartbeat")["verdict"], "heartbeat");
            assert_eq!(row(&rows, "reboot", "heartbeat")["verdict"], "rst");
        }
        _ => {
            for mode in ["drop", "reboot"] {
                assert_eq!(row(&rows, mode, "none")["status"], "needs CAP_NET_ADMIN");
            }
        }
    }
}

#[test]
fn lab_rejects_none_as_a_mode() {
    let out = run(&["lab", "--modes", "fin,none"]);
    out.expect_one_error_line(2, "none");
}

/// Under a low open-file limit `lab` runs as many runs as fit, says so in one line,
/// and reports the runs it made — instead of failing half-way with EMFILE.
#[test]
fn lab_runs_what_the_open_file_limit_allows_and_says_so() {
    let script = format!(
        "ulimit -n 256 && ulimit -Hn 256 && exec '{}' lab --runs 40 --modes fin --json",
        common::BIN
    );
    let out = common::Cmd::program("bash", &["-c", &script]).run();
    out.expect_code(0);
    let line = out
        .stderr
        .iter()
        .find(|l| l.contains("--runs 40 needs about"))
        .unwrap_or_else(|| panic!("no line about the limit\n{}", out.dump()));
    assert!(line.contains("the limit is 256"), "{line}");
    let summary = &out.objects("lab-summary")[0];
    let runs = summary["runs"].as_u64().expect("runs");
    assert!((1..40).contains(&runs), "{}", out.dump());
    assert!(line.contains(&format!("running {runs} ")), "{line}");
    // Every case (fin × the four settings) is reported.
    assert_eq!(out.objects("lab-case").len(), 4, "{}", out.dump());
}
