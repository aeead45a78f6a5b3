//! The command line: the clap derive types (every doc comment here is `--help`
//! text), and the shell completions and man page generated from them.

use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::values::parse;
use crate::values::{Heartbeat, KeepAlive, Target};
use crate::vocab::{CheckEnding, CloseMode, PathTest, Setting, Verdict};

/// Shows how TCP connections end: what one side observes when the other side
/// disconnects, through which mechanism, and how fast.
#[derive(Debug, Parser)]
#[command(
    name = "tcpbye",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    max_term_width = 100
)]
#[command(
    after_help = "Start with `tcpbye lab`, or run `tcpbye serve` in one terminal and \
`tcpbye connect --close=rst` in another."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Listen, observe every connection, print one report per connection as it ends
    Serve(ServeArgs),
    /// Connect to any TCP server, end the connection in a chosen way (or observe), report
    Connect(ConnectArgs),
    /// Run both ends in one process for every close mode × detection setting; print the matrix
    Lab(LabArgs),
    /// Judge a program: end one connection to the server at ADDR per mode, report how it reacts
    Check(CheckArgs),
    /// Show a running program's TCP connections: their settings, and what would notice each silent ending
    Inspect(InspectArgs),
    /// Measure the path to a `tcpbye serve` at ADDR: what it does to each ending, and its idle timeout
    Path(PathArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout
    #[command(hide = true)]
    Man,
    /// Measure detection latency, churn rate and idle cost against bare baselines
    #[command(hide = true)]
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: HOST:PORT, [V6]:PORT, :PORT or PORT [default: 127.0.0.1:7007]
    ///
    /// Loopback unless asked: `tcpbye serve 0.0.0.0:7007` listens on all IPv4 interfaces.
    #[arg(value_name = "ADDR", value_parser = parse::parse_addr)]
    pub addr: Option<Target>,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// Exit after the first connection's report
    ///
    /// With --timeout DUR, also exit 3 when no client has connected within DUR, so
    /// that `serve --once` started by a script always ends.
    #[arg(long)]
    pub once: bool,

    /// Observe at most N connections at once; further ones are accepted and closed at once
    ///
    /// Each open connection costs serve a few KB (table, --brief, --summary) or up to
    /// about 100 KB with --json or --ladder, which keep every event: raise N with the
    /// memory for it (docs/BENCHMARKS.md).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,

    /// Print no per-connection reports, only the summary (at exit and on Ctrl-C)
    ///
    /// Counts by verdict and detection-time percentiles; for thousands of connections.
    #[arg(long)]
    pub summary: bool,

    #[command(flatten)]
    pub end: EndArgs,

    #[command(flatten)]
    pub detect: DetectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Server to connect to: HOST:PORT, [V6]:PORT, :PORT or PORT [default: 127.0.0.1:7007]
    #[arg(value_name = "ADDR", value_parser = parse::parse_addr)]
    pub addr: Option<Target>,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// Give up on connect() after DUR and report `connect-timeout`
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse::parse_duration)]
    pub connect_timeout: Duration,

    /// Retry a refused connect every 20ms for up to DUR, e.g. `--retry 5s` right after
    /// starting `tcpbye serve` in the background
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub retry: Option<Duration>,

    /// Make N connections in turn and print one summary instead of N reports, e.g. `--count 1000`
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// With --count: keep at most C connections open at once
    #[arg(long, value_name = "C", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// With --count: start at most R connections per second, e.g. `--rate 500`
    #[arg(long, value_name = "R", value_parser = parse::parse_rate)]
    pub rate: Option<f64>,

    #[command(flatten)]
    pub end: EndArgs,

    #[command(flatten)]
    pub detect: DetectArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Which addresses of a host name to use.
#[derive(Debug, Args)]
pub struct FamilyArgs {
    /// Use only the IPv4 addresses of a host name
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use only the IPv6 addresses of a host name
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
}

/// How this end behaves and closes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Closing")]
pub struct EndArgs {
    /// How this end closes the connection [default: fin for connect, none for serve]
    ///
    /// e.g. `--close rst` sends an RST (SO_LINGER 0); `--close none` only observes.
    #[arg(long, value_name = "MODE", value_enum)]
    pub close: Option<CloseMode>,

    /// Wait DUR after the connection is up before closing, e.g. `--after 500ms`
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse::parse_duration)]
    pub after: Duration,

    /// Send BYTES of data as soon as the connection is up, e.g. `--send 4k`
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse::parse_bytes)]
    pub send: usize,

    /// How long `drop`/`hang` stay silent before the socket is released [default: until --timeout]
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub hold: Option<Duration>,

    /// After the peer's FIN or RST, do not send the two probe writes that show what a writer meets
    #[arg(long)]
    pub no_probe: bool,

    /// Do not read the other end's socket through sock_diag (done when it is on this host)
    #[arg(long)]
    pub no_peer_side: bool,

    /// After closing, follow this side's socket (FIN_WAIT1/2, TIME_WAIT) for at most DUR
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = parse::parse_duration)]
    pub linger_watch: Duration,
}

/// How the observing end notices a silent peer.
#[derive(Debug, Args)]
#[command(next_help_heading = "Detection")]
pub struct DetectArgs {
    /// SO_KEEPALIVE with IDLE,INTVL,CNT in whole seconds, e.g. `--keepalive 1s,1s,3`
    #[arg(long, value_name = "IDLE,INTVL,CNT", value_parser = parse::parse_keepalive)]
    pub keepalive: Option<KeepAlive>,

    /// TCP_USER_TIMEOUT: abort when sent data stays unacknowledged this long, e.g. `1500ms`
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub user_timeout: Option<Duration>,

    /// Application ping every INTERVAL; give up after MISSES silent intervals, e.g. `200ms,3`
    ///
    /// tcpbye answers pings when it is the other end; any bytes received count as a pong,
    /// so an echo server works too.
    #[arg(long, value_name = "INTERVAL,MISSES", value_parser = parse::parse_heartbeat)]
    pub heartbeat: Option<Heartbeat>,

    /// Send a little data every DUR so that retransmission timeouts apply, e.g. `200ms`
    #[arg(long, value_name = "DUR", value_parser = parse::parse_period)]
    pub send_every: Option<Duration>,

    /// Stop observing after DUR and report `open` [default: no limit]
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub timeout: Option<Duration>,
}

/// Output and expectations.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// JSON Lines on stdout: one object per connection, then one summary object
    #[arg(long)]
    pub json: bool,

    /// Exit 1 unless every report has this verdict (repeat or comma-separate to allow several)
    ///
    /// e.g. `--expect rst`, `--expect fin,rst`.
    #[arg(long, value_name = "VERDICT", value_enum, value_delimiter = ',')]
    pub expect: Vec<Verdict>,

    /// Exit 1 unless every connection's end was detected within DUR, e.g. `--expect-within 5s`
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub expect_within: Option<Duration>,

    /// Draw each connection's ending as a ladder diagram: both ends, one time axis
    #[arg(long, conflicts_with = "json")]
    pub ladder: bool,

    /// One line per connection instead of its tables: verdict, who closed, detection time, errno, state
    #[arg(long, conflicts_with_all = ["json", "ladder"])]
    pub brief: bool,

    /// Capture the connection's packets (both directions) into a pcap file, e.g. `--pcap end.pcap`
    ///
    /// Needs CAP_NET_RAW. tcpdump, Wireshark and tshark read the file; with --ladder the
    /// packets (FIN, RST, keepalive probes, retransmissions) appear on the diagram. A
    /// FIFO or a socket is refused (exit 2): writing to it could block tcpbye.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,

    /// With --pcap: replace FILE if it exists (a symbolic link is never followed)
    #[arg(long, requires = "pcap")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The server under test: HOST:PORT, [V6]:PORT, :PORT or PORT (a program on this host);
    /// with --listen, the address to listen on for the client under test
    #[arg(value_name = "ADDR", value_parser = parse::parse_addr, required_unless_present = "pid")]
    pub addr: Option<Target>,

    /// Judge a running program on its own live connections instead: end one of them
    /// per mode as its peer would, e.g. `--pid $(pidof redis-server)`
    ///
    /// rst: an RST from its peer (the peer's socket, or a raw one for a peer on another
    /// host); drop: a socket filter on the program's socket discards all its peer
    /// sends; hang: one discards its peer's data and FIN, not its ACKs; fin and half: a
    /// FIN from the peer's socket when that is on this host. Needs root, or the
    /// program's own user where ptrace is allowed (kernel.yama.ptrace_scope).
    #[arg(
        long,
        value_name = "PID",
        conflicts_with_all = ["addr", "listen", "request", "send"],
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub pid: Option<u32>,

    /// With --pid: end only connections to this peer, IP:PORT or IP, e.g. `--peer 127.0.0.1:6379`
    #[arg(long, value_name = "ADDR", requires = "pid", value_parser = parse::parse_peer)]
    pub peer: Option<crate::values::PeerFilter>,

    /// With --pid: print which connection each mode would end, how and why, and touch nothing
    #[arg(long, requires = "pid")]
    pub dry_run: bool,

    /// The program under test is a client: listen on ADDR, end each connection it
    /// makes in the next mode (once its first bytes arrive, or after 2s), and see
    /// whether and when it connects again
    #[arg(long)]
    pub listen: bool,

    /// With --listen: how long to wait for the client's first connection
    /// before giving up (exit 3), e.g. `--wait-client 5m`
    #[arg(long, value_name = "DUR", default_value = "60s", requires = "listen", value_parser = parse::parse_duration)]
    pub wait_client: Duration,

    /// Endings to try, one fresh connection each, comma-separated, e.g. `--modes fin,rst`
    /// [default: fin,half,rst,hang, plus drop,reboot with CAP_NET_ADMIN]
    #[arg(long, value_name = "MODES", value_enum, value_delimiter = ',')]
    pub modes: Vec<CheckEnding>,

    /// Send STRING first and wait (up to 2s) for the answer's first bytes before ending,
    /// e.g. `--request 'PING\r\n'` (escapes: \r \n \t \0 \\ \xHH)
    #[arg(long, value_name = "STRING", value_parser = parse::parse_escapes)]
    pub request: Option<crate::values::Request>,

    /// Send BYTES of filler first (after --request) and wait (up to 2s) for an answer, e.g. `--send 1k`
    #[arg(long, value_name = "BYTES", value_parser = parse::parse_bytes)]
    pub send: Option<usize>,

    /// Watch the program for DUR after ending each connection, e.g. `--wait 3s`
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse::parse_duration)]
    pub wait: Duration,

    /// Watch the silent endings (drop, reboot, hang) for DUR instead of --wait, to
    /// find a timeout of the program's own, e.g. `--wait 3s --wait-silent 2m`
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub wait_silent: Option<Duration>,

    /// JSON Lines: one `check-case` object per mode, then one `check-summary`
    #[arg(long)]
    pub json: bool,

    /// One line per mode instead of the table: its reaction and when
    #[arg(long, conflicts_with = "json")]
    pub brief: bool,

    /// Exit 1 unless the program noticed every judged ending within DUR, or per mode: `drop=60s,fin=1s`
    #[arg(long, value_name = "DUR|MODE=DUR,...", value_parser = parse::parse_notice_limits)]
    pub expect_noticed_within: Option<crate::values::NoticeLimits>,

    /// Exit 1 if any connection was leaked: CLOSE_WAIT, or a dead socket's descriptor, still held at the end
    #[arg(long)]
    pub expect_no_leak: bool,

    /// Leave the drop and reboot connections that the program never noticed open
    /// after --wait, to watch them longer by hand (by default tcpbye resets them then);
    /// with --pid, leave the drop and hang filters on the sockets it still holds
    #[arg(long)]
    pub leave_open: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("program").required(true).args(["pid", "port"]))]
pub struct InspectArgs {
    /// The program's process id; its sockets are read, nothing is sent
    ///
    /// Needs root, or the program's own user where ptrace would be allowed
    /// (kernel.yama.ptrace_scope); a program in another network namespace (a
    /// container) needs root.
    #[arg(value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Inspect the processes that hold a TCP socket on this local port instead, e.g. `--port 6379`
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// JSON Lines: one `inspect-conn` object per connection, then one `inspect-summary`
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PathArgs {
    /// Where `tcpbye serve` runs, through the path: HOST:PORT, [V6]:PORT, :PORT or PORT
    #[arg(value_name = "ADDR", value_parser = parse::parse_addr)]
    pub addr: Target,

    /// Tests to run, comma-separated, e.g. `--tests fin,rst` [default: all]
    #[arg(long, value_name = "TESTS", value_enum, value_delimiter = ',')]
    pub tests: Vec<PathTest>,

    /// How long an ending, an answer from the far end, or an ACK of data sent after an
    /// idle period may take before it counts as lost
    #[arg(long, value_name = "DUR", default_value = "3s", value_parser = parse::parse_duration)]
    pub wait: Duration,

    /// The longest idle period tried: the first ladder doubles up to it, e.g. `--max-idle 8s`
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse::parse_period)]
    pub max_idle: Duration,

    /// The first ladder's idle periods instead of the doubling one, e.g. `--idle-ladder 1s,2s,4s`
    #[arg(long, value_name = "DUR,DUR,...", value_delimiter = ',', value_parser = parse::parse_period)]
    pub idle_ladder: Vec<Duration>,

    /// JSON Lines: one `path-case` object per test, then one `path-summary`
    #[arg(long)]
    pub json: bool,

    /// Exit 1 unless every ending arrived as it was sent, in both directions
    #[arg(long)]
    pub expect_faithful: bool,

    /// Exit 1 unless an idle period of at least DUR survived (and none shorter failed), e.g. `5m`
    #[arg(long, value_name = "DUR", value_parser = parse::parse_duration)]
    pub expect_idle_over: Option<Duration>,

    /// Once an idle timeout is found, try keepalive against it: one more connection with
    /// a keepalive shorter than the timeout (the advised one, if any) stays idle for
    /// twice the timeout, then sends (`path-summary.keepalive_tried`)
    #[arg(long)]
    pub confirm_keepalive: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Close/detect rounds per mode for the latency comparison
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub samples: u32,

    /// Connections for the churn comparison
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..=200_000))]
    pub churn: u64,

    /// Idle connections for serve to hold, and TCP connections held for `inspect`
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=25_000))]
    pub idle: u64,

    /// Seconds of idleness over which serve's CPU is measured
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub idle_seconds: u64,

    /// Connections of the `--close fin` churn (concurrency 32) during which serve's peak RSS is read
    #[arg(long, value_name = "N", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub fin_churn: u64,

    /// Each churn rate is the best of this many runs
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,

    /// Slow clients (one byte each every 0.2 s) for serve to hold in the hostile step
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..=25_000))]
    pub slow: u64,

    /// Control connections that stream data after their question, in the hostile step
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub controls: u64,

    /// Seconds each hostile load lasts
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub hostile_seconds: u64,

    /// Steps to run, comma-separated [default: all]
    #[arg(long, value_name = "STEPS", value_delimiter = ',', value_parser = ["latency", "churn", "memory", "idle", "hostile", "inspect"])]
    pub only: Vec<String>,

    /// The tcpbye binary whose `connect` and `serve` are measured [default: this one]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<std::path::PathBuf>,

    /// One JSON object with every figure
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LabArgs {
    /// Close modes to run, comma-separated, e.g. `--modes fin,rst,drop` [default: all but none]
    #[arg(long, value_name = "MODES", value_enum, value_delimiter = ',')]
    pub modes: Vec<CloseMode>,

    /// Detection settings of the observer to run, comma-separated [default: all]
    #[arg(long, value_name = "SETTINGS", value_enum, value_delimiter = ',')]
    pub settings: Vec<Setting>,

    /// Repetitions of each case, for the p50/p99 columns
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,

    /// JSON Lines: one object per case, then one summary object
    #[arg(long)]
    pub json: bool,
}

impl clap::ValueEnum for CloseMode {
    fn value_variants<'a>() -> &'a [Self] {
        &CloseMode::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.summary()))
    }
}

impl clap::ValueEnum for CheckEnding {
    fn value_variants<'a>() -> &'a [Self] {
        &CheckEnding::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name()).help(self.summary()))
    }
}

impl clap::ValueEnum for Verdict {
    fn value_variants<'a>() -> &'a [Self] {
        &Verdict::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.summary()))
    }
}

impl clap::ValueEnum for PathTest {
    fn value_variants<'a>() -> &'a [Self] {
        &PathTest::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.summary()))
    }
}

impl clap::ValueEnum for Setting {
    fn value_variants<'a>() -> &'a [Self] {
        &Setting::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.summary()))
    }
}

/// The completion script for `shell`: the visible subcommands only.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = visible_command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tcpbye", &mut out);
    out
}

/// [`Cli::command`] without its hidden subcommands (`man`, `bench`), which the
/// completion generators would offer otherwise. clap cannot remove a subcommand,
/// so the top level is rebuilt around the visible ones.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("tcpbye")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(true)
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
ran, and every \fB\-\-expect\fR was met
.TP
\fB1\fR
an \fB\-\-expect\fR or \fB\-\-expect\-within\fR was not met (one line on stderr says which); for \fBpath\fR, \fB\-\-expect\-faithful\fR or \fB\-\-expect\-idle\-over\fR
.TP
\fB2\fR
usage error: a bad flag, value, address or duration
.TP
\fB3\fR
runtime failure: bind, connect (refused unless \fB\-\-expect refused\fR), a \fBpath\fR far end that is not a \fBtcpbye serve\fR or speaks another version of the path protocol, a \fBpath\fR test that failed (no report from the far end, or the far end ended it itself), and the like
.TP
\fB4\fR
a needed privilege is missing: \fB\-\-close drop\fR and \fB\-\-close reboot\fR need CAP_NET_ADMIN, \fB\-\-pcap\fR needs CAP_NET_RAW, and \fBserve\fR on a port below 1024 needs CAP_NET_BIND_SERVICE; \fBinspect\fR of another user's program needs CAP_SYS_PTRACE, and of one in another network namespace CAP_SYS_ADMIN
.TP
\fB130\fR
interrupted by SIGINT, SIGTERM or SIGHUP, after printing what it had
"#;

const EXAMPLES: &str = r#".SH EXAMPLES
Every close mode against every detection setting, on loopback, with no setup:
.PP
.RS
.nf
tcpbye lab
.fi
.RE
.PP
What a server observes when its client resets the connection, in two terminals:
.PP
.RS
.nf
tcpbye serve
tcpbye connect \-\-close rst
.fi
.RE
.PP
How long keepalive takes to notice a client that vanished like a pulled cable
(\fB\-\-close drop\fR needs CAP_NET_ADMIN):
.PP
.RS
.nf
tcpbye serve \-\-keepalive 1s,1s,3 \-\-timeout 30s
tcpbye connect \-\-close drop \-\-hold 10s
.fi
.RE
.PP
\fB\-\-close rst\-unread\fR needs data from the peer to leave unread:
.PP
.RS
.nf
tcpbye serve \-\-send 1k
tcpbye connect \-\-close rst\-unread \-\-after 100ms
.fi
.RE
.PP
Does the redis server on port 6379 notice each kind of ending, and does it leak?
And does a client (here a redis replica pointed at port 7000) notice and reconnect?
.PP
.RS
.nf
tcpbye check 127.0.0.1:6379 \-\-request 'PING\er\en' \-\-wait 3s \-\-expect\-no\-leak
tcpbye check \-\-listen 127.0.0.1:7000 \-\-wait 5s
.fi
.RE
.PP
What would the redis server notice of each client vanishing now, and does it leak? Nothing is sent:
.PP
.RS
.nf
sudo tcpbye inspect $(pidof redis\-server)
.fi
.RE
.PP
What the network between two hosts does to each ending, and its idle timeout
(\fBtcpbye serve\fR on the far host, reachable through the path):
.PP
.RS
.nf
tcpbye serve 0.0.0.0:7007
tcpbye path far.example:7007 \-\-max\-idle 8s
.fi
.RE
.PP
In CI: exit 0 only if the server saw an RST, 1 if it saw another ending:
.PP
.RS
.nf
tcpbye serve 127.0.0.1:9000 \-\-once \-\-json \-\-expect rst &
tcpbye connect 127.0.0.1:9000 \-\-close rst
wait $!
.fi
.RE
"#;

const SEE_ALSO: &str = r#".SH "SEE ALSO"
\fBss\fR(8), \fBtcp\fR(7), \fBsocket\fR(7), \fBtcpdump\fR(1)
"#;

/// The complete man page (roff).
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tcpbye {}", sub.get_name());
        let sub = sub.clone().bin_name(name.clone());
        let page = clap_mangen::Man::new(sub);
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
    // man-pages(7) order: versions, then examples, and SEE ALSO last.
    top.render_version_section(&mut out)?;
    out.extend_from_slice(EXAMPLES.as_bytes());
    out.extend_from_slice(SEE_ALSO.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// The words of `text`, split at everything but letters and digits.
    fn words(text: &str) -> Vec<&str> {
        text.split(|c: char| !c.is_ascii_alphanumeric()).collect()
    }

    #[test]
    fn completions_offer_no_hidden_subcommand() {
        for shell in clap_complete::Shell::value_variants() {
            let script = String::from_utf8(completions(*shell)).expect("UTF-8");
            let words = words(&script);
            for hidden in ["bench", "man"] {
                assert!(!words.contains(&hidden), "{shell} offers `{hidden}`");
            }
            for visible in ["serve", "connect", "lab", "completions", "keepalive"] {
                assert!(words.contains(&visible), "{shell} lacks `{visible}`");
            }
        }
    }

    #[test]
    fn man_page_has_examples_and_see_also() {
        let page = String::from_utf8(man_page().expect("renders")).expect("UTF-8");
        let examples = page.find(".SH EXAMPLES").expect("an EXAMPLES section");
        let see_also = page.find(".SH \"SEE ALSO\"").expect("a SEE ALSO section");
        assert!(examples < see_also);
        for example in ["tcpbye lab", "tcpbye serve", "tcpbye connect"] {
            assert!(page[examples..see_also].contains(example), "{example}");
        }
        for page_ref in [
            r"\fBss\fR(8)",
            r"\fBtcp\fR(7)",
            r"\fBsocket\fR(7)",
            r"\fBtcpdump\fR(1)",
        ] {
            assert!(page[see_also..].contains(page_ref), "{page_ref}");
        }
    }

    #[test]
    fn rst_unread_help_says_it_needs_data_from_the_peer() {
        let mut cmd = Cli::command();
        let connect = cmd.find_subcommand_mut("connect").expect("connect");
        let help = connect.render_long_help().to_string();
        let start = help
            .find("- rst-unread:")
            .expect("rst-unread in --close's help");
        let rest = &help[start + 2..];
        let entry = &rest[..rest.find("- ").unwrap_or(rest.len())];
        let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(entry.contains("serve --send"), "{entry}");
    }
}
