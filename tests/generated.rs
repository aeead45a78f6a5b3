//! The man page and shell completions are generated from the clap definition and
//! checked in (`docs/`, `completions/`). This test regenerates each file with the
//! built binary and fails when the checked-in copy has drifted;
//! `TCPBYE_REGENERATE=1 cargo test --test tests generated::` rewrites them all instead.
//!
//! It also checks that every long flag of `serve`, `connect` and `lab` has help text,
//! since that text is what the man page and completions are made of.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, ValueEnum};

use crate::common::Cmd;

/// The one command that refreshes every generated file.
const REFRESH: &str = "TCPBYE_REGENERATE=1 cargo test --test tests generated::";

/// A checked-in file and the `tcpbye` arguments that print its content.
struct Generated {
    path: &'static str,
    args: &'static [&'static str],
}

const MAN: Generated = Generated {
    path: "docs/tcpbye.1",
    args: &["man"],
};

const GENERATED: [Generated; 6] = [
    MAN,
    Generated {
        path: "completions/tcpbye.bash",
        args: &["completions", "bash"],
    },
    Generated {
        path: "completions/_tcpbye",
        args: &["completions", "zsh"],
    },
    Generated {
        path: "completions/tcpbye.fish",
        args: &["completions", "fish"],
    },
    Generated {
        path: "completions/tcpbye.elv",
        args: &["completions", "elvish"],
    },
    Generated {
        path: "completions/_tcpbye.ps1",
        args: &["completions", "powershell"],
    },
];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Runs the built binary and returns its stdout; panics (with stderr) unless it exits 0.
fn tcpbye(args: &[&str]) -> String {
    let output = Cmd::tcpbye(args)
        // Fixed width so help output does not depend on the terminal running the tests.
        .env("COLUMNS", "100")
        .run()
        .output();
    assert!(
        output.status.success(),
        "tcpbye {} exited with {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap_or_else(|e| panic!("tcpbye {}: stdout is not UTF-8: {e}", args.join(" ")))
}

/// Why the checked-in content of `file` differs from what the binary prints now,
/// or `None` when they are identical.
fn drift(file: &Generated, checked_in: Option<&str>, fresh: &str) -> Option<String> {
    let command = format!("tcpbye {}", file.args.join(" "));
    let Some(checked_in) = checked_in else {
        return Some(format!(
            "{} is missing (it is the output of `{command}`)\n  refresh all generated files with: {REFRESH}",
            file.path
        ));
    };
    if checked_in == fresh {
        return None;
    }
    let mut old = checked_in.lines();
    let mut new = fresh.lines();
    let mut line = 1;
    let (old_line, new_line) = loop {
        match (old.next(), new.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (a, b) => break (a, b),
        }
    };
    if old_line.is_none() && new_line.is_none() {
        return Some(format!(
            "{} differs from the output of `{command}` in line endings or the final newline\n  refresh all generated files with: {REFRESH}",
            file.path
        ));
    }
    let show = |l: Option<&str>| l.map_or_else(|| "(end of file)".to_owned(), |l| format!("{l:?}"));
    Some(format!(
        "{} differs from the output of `{command}` at line {line}:\n    checked in: {}\n    generated:  {}\n  refresh all generated files with: {REFRESH}",
        file.path,
        show(old_line),
        show(new_line),
    ))
}

#[test]
fn generated_files_match_the_binary() {
    let regenerate = std::env::var("TCPBYE_REGENERATE").is_ok_and(|v| v == "1");
    let mut drifts = Vec::new();
    for file in &GENERATED {
        let fresh = tcpbye(file.args);
        let path = repo_path(file.path);
        if regenerate {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            }
            fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            eprintln!("TCPBYE_REGENERATE=1: wrote {}", file.path);
            continue;
        }
        let checked_in = match fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {}: {e}", path.display()),
        };
        drifts.extend(drift(file, checked_in.as_deref(), &fresh));
    }
    assert!(
        drifts.is_empty(),
        "generated files are out of date:\n{}",
        drifts.join("\n")
    );
}

#[test]
fn every_shell_has_a_checked_in_completion() {
    for shell in clap_complete::Shell::value_variants() {
        let name = shell.to_string();
        assert!(
            GENERATED
                .iter()
                .any(|g| g.args[..] == ["completions", name.as_str()]),
            "`tcpbye completions {name}` has no checked-in file: add one to GENERATED in tests/generated.rs"
        );
    }
}

/// The comparison is a real function: an altered help string is drift, identical text is not.
#[test]
fn an_altered_help_string_is_reported_as_drift() {
    let man = tcpbye(MAN.args);
    assert_eq!(drift(&MAN, Some(&man), &man), None);

    let cli = tcpbye::cli::Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    let help = serve.get_about().expect("serve has help text").to_string();
    assert!(
        man.contains(&help),
        "the man page lists `serve` with its help {help:?}"
    );
    let altered = man.replacen(&help, &format!("{help} (edited by hand)"), 1);

    let report = drift(&MAN, Some(&altered), &man).expect("an altered help string is drift");
    assert!(report.contains("docs/tcpbye.1"), "names the file: {report}");
    assert!(
        report.contains(REFRESH),
        "names the refresh command: {report}"
    );
    assert!(
        report.contains("(edited by hand)"),
        "shows the differing line: {report}"
    );

    let half = man.lines().count() / 2;
    let truncated = man.split_inclusive('\n').take(half).collect::<String>();
    assert!(
        drift(&MAN, Some(&truncated), &man).is_some(),
        "a truncated file is drift"
    );
    assert!(drift(&MAN, None, &man).is_some(), "a missing file is drift");
    let crlf = man.replace('\n', "\r\n");
    assert!(
        drift(&MAN, Some(&crlf), &man).is_some(),
        "CRLF line endings are drift"
    );
}

/// Long flags in clap's help output that have no help text after the flag and its value name.
///
/// A flag line is one indented into the flag column (at most 8 spaces) that starts with
/// `--` or `-x, --`; deeper-indented lines are wrapped help text, even when they start
/// with `--`. The help text is either on the same line, separated from the flag by two or
/// more spaces (`-h` layout), or on the next, deeper-indented line (`--help` layout).
fn flags_without_help(help: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<&str> = help.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let flag_of = |l: &str| -> Option<String> {
        let text = l.trim_start();
        if indent(l) == 0 || indent(l) > 8 {
            return None;
        }
        let long = match text.strip_prefix('-') {
            Some(rest) if rest.starts_with('-') => text,
            Some(rest) if rest.get(1..3) == Some(", ") => &rest[3..],
            _ => return None,
        };
        long.starts_with("--")
            .then(|| long.split([' ', '=']).next().unwrap_or(long).to_owned())
    };
    let (mut flags, mut missing) = (Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        let Some(flag) = flag_of(line) else { continue };
        let inline = line
            .trim()
            .split_once("  ")
            .is_some_and(|(_, rest)| !rest.trim().is_empty());
        let below = lines.get(i + 1).is_some_and(|next| {
            !next.trim().is_empty() && indent(next) > indent(line) && flag_of(next).is_none()
        });
        if !inline && !below {
            missing.push(flag.clone());
        }
        flags.push(flag);
    }
    (flags, missing)
}

#[test]
fn every_long_flag_has_help_text() {
    for command in ["serve", "connect", "lab"] {
        for help_flag in ["--help", "-h"] {
            let help = tcpbye(&[command, help_flag]);
            let (flags, missing) = flags_without_help(&help);
            assert!(
                flags.iter().any(|f| f == "--json"),
                "no flags parsed from `tcpbye {command} {help_flag}` (found {flags:?}):\n{help}"
            );
            assert!(
                missing.is_empty(),
                "`tcpbye {command} {help_flag}`: {missing:?} have no help text; add a doc comment in src/cli.rs:\n{help}"
            );
        }
    }
}

#[test]
fn the_help_parser_finds_a_flag_without_help() {
    let help = "\
Options:
      --once           Exit after the first connection's report
      --bare <N>
      --quiet
  -h, --help           Print help
      --hold <DUR>     How long to stay silent [default: until
                       --timeout]
      --next <DUR>
          Help on the next line
";
    let (flags, missing) = flags_without_help(help);
    assert_eq!(
        flags,
        ["--once", "--bare", "--quiet", "--help", "--hold", "--next"]
    );
    assert_eq!(missing, ["--bare", "--quiet"]);
}

/// `check --modes` offers the endings `check` takes, in its own words, and nothing
/// it would refuse (`rst-unread`, `none`): in `--help` and in every completion.
#[test]
fn check_offers_only_the_endings_it_takes() {
    let help = tcpbye(&["check", "--help"]);
    let modes = help
        .split_once("--modes <MODES>")
        .and_then(|(_, rest)| rest.split_once("--request"))
        .expect("check --help describes --modes")
        .0;
    for ending in ["fin:", "half:", "rst:", "drop:", "reboot:", "hang:"] {
        assert!(modes.contains(ending), "no {ending} in {modes}");
    }
    assert!(modes.contains("does the program read EOF"), "{modes}");
    for refused in ["rst-unread", "none:"] {
        assert!(
            !modes.contains(refused),
            "check --help offers {refused}: {modes}"
        );
    }
    let fish = tcpbye(&["completions", "fish"]);
    // The entry runs from its `complete` line to the next one (values span lines).
    let entry = fish
        .split("\ncomplete ")
        .find(|e| e.contains("using_subcommand check") && e.contains("-l modes"))
        .expect("fish completes check --modes");
    assert!(entry.contains("hang\\t"), "{entry}");
    assert!(
        !entry.contains("rst-unread") && !entry.contains("none\\t"),
        "{entry}"
    );
}
