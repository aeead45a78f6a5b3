//! The shell snippets that the README and docs/ci.md give for CI, run as written
//! (with a free port in place of a fixed one): a recipe a user copies must work.

mod common;

use std::net::TcpListener;
use std::path::Path;

use common::{BIN, Cmd};

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
    let work = std::env::temp_dir().join(format!("tcpbye-ci-md-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
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
        let at = lines
            .iter()
            .position(|line| *line == command)
            .unwrap_or_else(|| panic!(".ci/run does not run the README's {command:?} verbatim"));
        assert!(at > fresh, "{command:?} runs before the fresh CARGO_HOME");
    }
}
