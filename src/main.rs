//! The `tcpbye` binary: argv → [`tcpbye::run`] → exit code. Usage errors are
//! clap's own whole message (with its tips and usage); every other error is one
//! `tcpbye: …` line.

use clap::Parser;
use clap::error::ErrorKind;

fn main() {
    let cli = match tcpbye::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => std::process::exit(usage(&err)),
    };
    let code = match tcpbye::run(cli) {
        Ok(code) => code,
        Err(err) => {
            tell(&format!("{err:#}"));
            tcpbye::error::exit_code_of(&err)
        }
    };
    std::process::exit(code as i32);
}

/// Prints what clap has to say about the command line; returns the exit code.
fn usage(err: &clap::Error) -> i32 {
    if !err.use_stderr() {
        // --help, --version: on stdout as clap formats them.
        let _ = err.print();
        return tcpbye::ExitCode::Ok as i32;
    }
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // A bare `tcpbye`: the help, on stderr, as a usage error.
        let _ = err.print();
    } else {
        // The whole message (possible values, "a similar argument exists", usage),
        // its first line prefixed like every other tcpbye error.
        let text = err.to_string();
        tell(text.trim_end().trim_start_matches("error: "));
    }
    tcpbye::ExitCode::Usage as i32
}

/// Text on stderr after `tcpbye: `; a closed stderr is not worth a panic.
fn tell(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tcpbye: {text}");
}
