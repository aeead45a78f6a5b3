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
        show(err, std::io::stdout());
        return tcpbye::ExitCode::Ok as i32;
    }
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // A bare `tcpbye`: the help, on stderr, as a usage error.
        show(err, std::io::stderr());
    } else {
        // The whole message (possible values, "a similar argument exists", usage),
        // its first line prefixed like every other tcpbye error.
        let text = err.to_string();
        tell(text.trim_end().trim_start_matches("error: "));
    }
    tcpbye::ExitCode::Usage as i32
}

/// clap's help as it formats it (styled on a terminal that takes it), without the
/// spaces its blank lines carry, in ASCII where the locale is not UTF-8.
fn show(err: &clap::Error, mut to: impl std::io::Write + std::io::IsTerminal) {
    let styled = err.render();
    let color = to.is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let text = if color {
        styled.ansi().to_string()
    } else {
        styled.to_string()
    };
    let text = tcpbye::app::print::human(tcpbye::report::tidy(&text));
    let _ = to.write_all(text.as_bytes()).and_then(|()| to.flush());
}

/// Text on stderr after `tcpbye: `, as every notice is written; a closed stderr
/// is not worth a panic.
fn tell(text: &str) {
    tcpbye::app::print::tell_line(format_args!("{text}"));
}
