//! The shell snippets that the README and docs/ci.md give for CI, run as written
//! (with a free port in place of a fixed one): a recipe a user copies must work.

use crate::common;

use std::net::TcpListener;
use std::path::Path;

use crate::common::{BIN, Cmd};

/// The first ```sh block after `heading` in `file` (relative to the package).
fn snippet(file: &str, heading: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let section = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("{file} has no {heading:?}"))
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("{file}: no sh block after {heading:?}"))
        .0;
    block.to_owned()
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

#[test]
fn the_readmes_ci_snippet_passes_and_cannot_race() {
    let script = snippet("README.md", "## In CI");
    assert!(script.contains("127.0.0.1:9000"), "{script}");
    // A `tcpbye` first on PATH whose `serve` starts 300 ms late, as on a loaded CI
    // machine: the connect then certainly comes before anything listens.
    let shim_dir = std::env::temp_dir().join(format!("tcpbye-docs-{}", std::process::id()));
    std::fs::create_dir_all(&shim_dir).expect("temp dir");
    let shim = shim_dir.join("tcpbye");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\n[ \"$1\" = serve ] && sleep 0.3\nexec {BIN} \"$@\"\n"),
    )
    .expect("write the shim");
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the shim");
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path_with = |dir: &Path| {
        format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    };
    for dir in [&shim_dir, bin_dir, bin_dir] {
        let script = script.replace("9000", &free_port().to_string());
        let out = Cmd::program("bash", &["-euc", &script])
            .env("PATH", &path_with(dir))
            .run();
        out.expect_code(0);
        assert!(
            out.stdout.contains(r#""kind":"summary""#),
            "serve printed no summary\n{}",
            out.dump()
        );
    }
    let _ = std::fs::remove_dir_all(&shim_dir);
}

#[test]
fn ci_mds_first_recipe_waits_for_serve_and_passes() {
    let script = snippet(
        "docs/ci.md",
        "Wait for that line, then take the port from it:",
    );
    let (work, path) = workdir("ci-md");
    let script = format!("cd '{}'\n{script}", work.display());
    let out = Cmd::program("bash", &["-euc", &script])
        .env("PATH", &path)
        .run();
    out.expect_code(0);
    let served = std::fs::read_to_string(work.join("serve.jsonl")).unwrap_or_default();
    assert!(
        served.contains(r#""verdict":"rst""#),
        "{served}\n{}",
        out.dump()
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// CI proves the README's set-up on a cache that holds only what its commands fetch:
/// both commands, verbatim, after a brand-new `CARGO_HOME`.
#[test]
fn ci_runs_the_readmes_two_set_up_commands_on_a_fresh_cargo_cache() {
    let setup = snippet("README.md", "## Set-up: two commands");
    let commands: Vec<&str> = setup
        .lines()
        .map(|line| {
            line.split_once('#')
                .map_or(line, |(command, _)| command)
                .trim()
        })
        .filter(|command| !command.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "the README gives two commands: {setup}");
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .expect(".ci/run");
    let lines: Vec<&str> = ci.lines().map(str::trim).collect();
    let fresh = lines
        .iter()
        .position(|line| line.starts_with("CARGO_HOME=\"$(mktemp -d"))
        .expect(".ci/run makes a fresh CARGO_HOME");
    assert!(
        lines.contains(&"export CARGO_HOME"),
        ".ci/run exports its fresh CARGO_HOME"
    );
    for command in commands {
        // Verbatim, its output also kept for the count of skipped tests.
        let at = lines
            .iter()
            .position(|line| {
                *line == command
                    || line
                        .strip_prefix(command)
                        .is_some_and(|rest| rest.starts_with(" 2>&1 | tee "))
            })
            .unwrap_or_else(|| panic!(".ci/run does not run the README's {command:?} verbatim"));
        assert!(at > fresh, "{command:?} runs before the fresh CARGO_HOME");
    }
}

/// The first recipe's lines that wait for `serve` and read its port.
fn read_port_lines() -> String {
    let first = snippet(
        "docs/ci.md",
        "Wait for that line, then take the port from it:",
    );
    let from = first.find("for _ in").expect("the wait loop");
    let to = first.find("PORT=").expect("the PORT line");
    let end = first[to..].find('\n').map_or(first.len(), |n| to + n);
    first[from..end].to_owned()
}

/// A directory of its own under the temp dir, and a PATH with the binary first.
fn workdir(name: &str) -> (std::path::PathBuf, String) {
    let work = std::env::temp_dir().join(format!("tcpbye-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("temp dir");
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (work, path)
}

/// ci.md's churn recipe, as written (the port read as its first recipe reads it),
/// passes, and passes again in the same directory: its files are overwritten.
#[test]
fn ci_mds_churn_recipe_passes_twice_in_a_row() {
    let test = common::test_name!();
    if !common::require_root(test, "the recipe's --pcap needs CAP_NET_RAW")
        || !common::require_tool(test, "jq", &["--version"], "jq not installed")
        || !common::require_tool(test, "ss", &["-V"], "ss (iproute2) not installed")
    {
        return;
    }
    let recipe = snippet("docs/ci.md", "## Many connections: churn and `--summary`");
    assert!(recipe.contains("# ... read PORT as above ..."), "{recipe}");
    let recipe = recipe.replace("# ... read PORT as above ...", &read_port_lines());
    let (work, path) = workdir("churn");
    let script = format!("cd '{}'\n{recipe}", work.display());
    for run in 1..=2 {
        let out = Cmd::program("bash", &["-euc", &script])
            .env("PATH", &path)
            .deadline(std::time::Duration::from_secs(120))
            .run();
        assert_eq!(
            out.stdout.lines().filter(|l| *l == "true").count(),
            2,
            "run {run}: both checks print true\n{}",
            out.dump()
        );
        out.expect_code(0);
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Every `jq -es` check in ci.md fails on an empty file (a run that wrote nothing).
#[test]
fn ci_mds_jq_checks_fail_on_empty_input() {
    let test = common::test_name!();
    if !common::require_tool(test, "jq", &["--version"], "jq not installed") {
        return;
    }
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md"))
        .expect("docs/ci.md");
    let checks: Vec<&str> = text
        .lines()
        .map(|l| l.trim_matches('`'))
        .filter(|l| l.starts_with("jq -e"))
        .collect();
    assert!(checks.len() >= 4, "{checks:?}");
    let (work, path) = workdir("jq-empty");
    for check in checks {
        let file = check.rsplit(' ').next().expect("a file name");
        std::fs::write(work.join(file), "").expect("an empty file");
        let script = format!("cd '{}'\n{check}", work.display());
        let out = Cmd::program("bash", &["-c", &script])
            .env("PATH", &path)
            .run();
        assert_ne!(
            out.status.code(),
            Some(0),
            "passes on an empty {file}: {check}"
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The guide's hung-process example (section 7) holds on any machine: the client
/// hangs before reading, so the server's data fills both buffers and
/// `TCP_USER_TIMEOUT` ends the connection.
#[test]
fn the_guides_hung_process_example_times_out_by_user_timeout() {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guide.md"))
            .expect("docs/guide.md");
    let serve_flags = "--send 64M --user-timeout 1s --timeout 20s";
    let connect_flags = "--close hang --after 0s --timeout 25s";
    assert!(
        guide.contains(&format!("`serve {serve_flags}`")),
        "guide §7 changed"
    );
    assert!(
        guide.contains(&format!("`connect {connect_flags}`")),
        "guide §7 changed"
    );
    let mut argv = vec!["serve", "127.0.0.1:0", "--once", "--json"];
    argv.extend(serve_flags.split(' '));
    let mut serve = Cmd::tcpbye(&argv)
        .deadline(std::time::Duration::from_secs(40))
        .spawn();
    let addr = serve.listening().to_string();
    let mut argv = vec!["connect", addr.as_str()];
    argv.extend(connect_flags.split(' '));
    let client = Cmd::tcpbye(&argv)
        .deadline(std::time::Duration::from_secs(40))
        .spawn();
    let out = serve.finish();
    drop(client);
    let report = &out.objects("connection")[0];
    assert_eq!(report["verdict"], "timeout", "{}", out.dump());
    assert_eq!(report["detected_by"], "user-timeout", "{}", out.dump());
}

/// A `serve`/`connect` pair from the docs as a script: the `serve` line runs in the
/// background (its stderr kept), `PORT` is read as ci.md's first recipe reads it,
/// then the other lines run with `$PORT`, and the script waits for `serve`.
fn pair_script(snippet: &str) -> String {
    let mut lines = snippet
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty());
    let serve = lines.next().expect("a serve line");
    assert!(serve.starts_with("tcpbye serve "), "{serve}");
    let serve = serve.split(" #").next().unwrap_or(serve).trim_end();
    let mut script = format!(
        "rm -f serve.err\n{serve} > serve.out 2> serve.err &\nserve_pid=$!\n{}\n",
        read_port_lines()
    );
    for line in lines {
        script.push_str(&line.replace("PORT", "$PORT"));
        script.push('\n');
    }
    script.push_str("wait $serve_pid\n");
    script
}

/// The guide's `sh` snippets, as written (PORT read from serve's stderr, the
/// template's placeholders filled), each run twice in one directory: they pass,
/// and they can be run again.
#[test]
fn the_guides_snippets_run_as_written_and_again() {
    let test = common::test_name!();
    let lab = snippet("docs/guide.md", "## The whole picture: `tcpbye lab`");
    let template = snippet("docs/guide.md", "## How the two-process excerpts were made")
        .replace(" [DETECTION FLAGS]", " --keepalive 1s,1s,2")
        .replace("MODE", "rst");
    let mut scripts = vec![("lab", lab), ("template", pair_script(&template))];
    if common::require_root(test, "the ladder snippet's --pcap needs CAP_NET_RAW") {
        let ladder = snippet("docs/guide.md", "### FIN, seen from the closer");
        scripts.push(("ladder", pair_script(&ladder)));
    }
    let (work, path) = workdir("guide");
    for (name, script) in &scripts {
        for run in 1..=2 {
            let script = format!("cd '{}'\n{script}", work.display());
            let out = Cmd::program("bash", &["-euc", &script])
                .env("PATH", &path)
                .deadline(std::time::Duration::from_secs(60))
                .run();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name}, run {run}\n{}",
                out.dump()
            );
        }
    }
    let served = std::fs::read_to_string(work.join("serve.out")).unwrap_or_default();
    assert!(!served.is_empty(), "serve printed its report");
    let _ = std::fs::remove_dir_all(&work);
}

/// The guide's path snippet on loopback (the far end's address in place of
/// `far.example`, an ephemeral port for 7007): it runs and measures no idle timeout.
#[test]
fn the_guides_path_snippet_runs_on_loopback() {
    let text = snippet("docs/guide.md", "## Measure a path")
        .replace("0.0.0.0:7007", "127.0.0.1:0")
        .replace("far.example:7007", "127.0.0.1:PORT");
    let path_line = text
        .lines()
        .find(|l| l.starts_with("tcpbye path "))
        .expect("a path line")
        .split(" #")
        .next()
        .expect("a command")
        .trim_end()
        .to_owned();
    let serve_line = text
        .lines()
        .find(|l| l.starts_with("tcpbye serve "))
        .expect("a serve line")
        .split(" #")
        .next()
        .expect("a command")
        .to_owned();
    let script = format!(
        "rm -f serve.err\n{serve_line} > serve.out 2> serve.err &\nserve_pid=$!\n{}\n\
         {} --json > path.jsonl\nkill $serve_pid\n",
        read_port_lines(),
        path_line.replace("PORT", "$PORT")
    );
    let (work, path) = workdir("guide-path");
    let out = Cmd::program(
        "bash",
        &["-euc", &format!("cd '{}'\n{script}", work.display())],
    )
    .env("PATH", &path)
    .deadline(std::time::Duration::from_secs(90))
    .run();
    assert_eq!(out.status.code(), Some(0), "{}", out.dump());
    let jsonl = std::fs::read_to_string(work.join("path.jsonl")).unwrap_or_default();
    let summary: serde_json::Value = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "path-summary")
        .unwrap_or_else(|| panic!("no path-summary\n{jsonl}"));
    // Loopback has no idle timeout: only a lower bound, the longest idle step.
    assert!(summary["idle_timeout_max_us"].is_null(), "{summary}");
    assert_eq!(
        summary["idle_timeout_min_us"], summary["max_idle_us"],
        "{summary}"
    );
    assert_eq!(summary["faithful"], summary["endings"], "{summary}");
    let _ = std::fs::remove_dir_all(&work);
}
