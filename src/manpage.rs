//! The man page, generated from the clap definition: the top-level page, then
//! each subcommand's synopsis and options, then the exit status.

use std::io;

use clap::CommandFactory;
use clap_mangen::Man;

use crate::cli::Cli;

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
ran, and every \fB\-\-expect\fR was met
.TP
\fB1\fR
an \fB\-\-expect\fR or \fB\-\-expect\-within\fR was not met (one line on stderr says which)
.TP
\fB2\fR
usage error: a bad flag, value, address or duration
.TP
\fB3\fR
runtime failure: bind, connect (refused unless \fB\-\-expect refused\fR), and the like
.TP
\fB4\fR
a needed privilege is missing: \fB\-\-close drop\fR and \fB\-\-close reboot\fR need CAP_NET_ADMIN
.TP
\fB130\fR
interrupted by SIGINT or SIGTERM, after printing what it had
"#;

/// Renders the complete roff page.
pub fn render() -> io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let top = Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tcpbye {}", sub.get_name());
        let sub = sub.clone().bin_name(name.clone());
        let page = Man::new(sub);
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let mut section = Vec::new();
        page.render_description_section(&mut section)?;
        page.render_synopsis_section(&mut section)?;
        page.render_options_section(&mut section)?;
        // The subcommand's own sections become subsections of its heading.
        let text = String::from_utf8_lossy(&section).replace(".SH ", ".SS ");
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(EXIT_STATUS.as_bytes());
    top.render_version_section(&mut out)?;
    Ok(out)
}
