use clap::Parser;

fn main() {
    let cli = match tcpbye::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help, --version: print as clap formats them.
            let _ = err.print();
            std::process::exit(0);
        }
        Err(err) => {
            let text = err.to_string();
            let line = text.lines().next().unwrap_or("invalid command line");
            tell(line.trim_start_matches("error: "));
            std::process::exit(tcpbye::ExitCode::Usage as i32);
        }
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

/// One line on stderr; a closed stderr is not worth a panic.
fn tell(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tcpbye: {text}");
}
