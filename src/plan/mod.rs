//! The validated plan: what the command line asks for, checked and typed, before
//! any socket exists. Arguments become plans in [`build`] only; the values they
//! are made of, and the parsers clap calls for them, are in [`crate::values`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::report::Format;
use crate::vocab::{CloseMode, PathTest, Setting, Verdict};

pub mod build;
pub mod ladder;
pub mod recipe;

pub use crate::values::{
    DEFAULT_HOST, DEFAULT_PORT, Heartbeat, KeepAlive, NoticeLimits, Request, Target,
};
pub use build::build;

/// Detection settings applied to the observing socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detection {
    pub keepalive: Option<KeepAlive>,
    pub user_timeout: Option<Duration>,
    pub heartbeat: Option<Heartbeat>,
    pub send_every: Option<Duration>,
}

impl Detection {
    /// True when no mechanism beyond plain reads is enabled.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What one end of a connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndPlan {
    /// Bytes to send as soon as the connection is up.
    pub send: usize,
    /// How this end closes, or `None` to observe only.
    pub close: CloseMode,
    /// Delay from connection set-up to the close action.
    pub after: Duration,
    /// How long a `drop`/`hang` closer stays silent (`None`: until the observer is done).
    pub hold: Option<Duration>,
    pub detection: Detection,
    /// After the peer's FIN or RST, send twice to show what a writer meets.
    pub probe: bool,
    /// Give up observing after this long and report `open`.
    pub timeout: Option<Duration>,
    /// Read the other end's socket through sock_diag when it is local.
    pub peer_side: bool,
    /// After this side's close, follow its socket for at most this long.
    pub linger_watch: Duration,
    /// Read this side's own address (`getsockname`) for the report's `local`. Off
    /// when no report is printed (`connect --count`): one syscall per connection.
    pub local_addr: bool,
    /// Bytes sent first, as soon as the connection is up (before `send`'s filler):
    /// a protocol greeting such as `PING\r\n` (`check --request`).
    pub request: Vec<u8>,
    /// Close as soon as the peer's first bytes arrive (its answer to `request` or
    /// `send`); `after` still bounds the wait for them.
    pub close_on_answer: bool,
    /// `path` near-to-far endings: bytes sent once the peer's first answer has
    /// arrived; the close (`close_on_answer`, or `rst-unread`'s wait for data to
    /// leave unread) then waits for the answer to them too.
    pub mark: Vec<u8>,
    /// After this side's close, follow the other end's socket until it is gone (or
    /// in TIME_WAIT), not only until this side's own reaches TIME_WAIT or vanishes;
    /// `linger_watch` still bounds the watch (`check`: what the program does next).
    /// The other end's readings then also record each change of its timer's kind.
    pub follow_peer: bool,
    /// `serve`: a first line that is a `path` greeting makes the connection a
    /// `path` test or control connection (docs/path.md). Off for every other
    /// listener (`check --listen` judges whatever its client sends).
    pub path_greetings: bool,
    /// `check`: remember where a `drop` or `reboot` left the connection when its
    /// socket vanished, so that the program's side can be reset once it is judged.
    pub keep_vanished: bool,
    /// How much of the connection's timeline its report keeps.
    pub history: History,
}

/// How much of a connection's timeline (events, TCP_INFO snapshots) is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// Every event and snapshot, up to a cap of hundreds (`--json`, `--ladder`,
    /// and every command but a plain `serve`).
    #[default]
    Full,
    /// A few KB however long the connection lasts: the first and the last events,
    /// those between folded into one note by kind, and a few snapshots (`serve`'s
    /// table, `--brief` and `--summary`, which show no more).
    Compact,
}

impl Default for EndPlan {
    fn default() -> Self {
        Self {
            send: 0,
            close: CloseMode::None,
            after: Duration::ZERO,
            hold: None,
            detection: Detection::default(),
            probe: true,
            timeout: None,
            peer_side: false,
            linger_watch: Duration::ZERO,
            local_addr: true,
            request: Vec::new(),
            close_on_answer: false,
            mark: Vec::new(),
            follow_peer: false,
            path_greetings: false,
            keep_vanished: false,
            history: History::Full,
        }
    }
}

/// Which address family a host name may resolve to (`-4`, `-6`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Family {
    #[default]
    Any,
    V4,
    V6,
}

impl Family {
    pub fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Self::Any => true,
            Self::V4 => addr.is_ipv4(),
            Self::V6 => addr.is_ipv6(),
        }
    }
}

/// Where `--pcap` writes, and whether it may replace an existing file (`--force`).
/// It never writes through a symbolic link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapFile {
    pub path: PathBuf,
    pub replace: bool,
}

/// What to do with finished reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputPlan {
    pub format: Format,
    /// Capture packets into this pcap file.
    pub pcap: Option<PcapFile>,
    /// Only the summary, no per-connection reports.
    pub summary_only: bool,
    pub expect: Vec<Verdict>,
    pub expect_within: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServePlan {
    pub addr: Target,
    pub family: Family,
    pub once: bool,
    pub max_conns: Option<usize>,
    pub end: EndPlan,
    pub output: OutputPlan,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectPlan {
    pub addr: Target,
    pub family: Family,
    pub connect_timeout: Duration,
    /// Retry a refused connect for this long (one connection only).
    pub retry: Option<Duration>,
    /// Connections to make (`--count`); more than one prints a summary only.
    pub count: u64,
    pub concurrency: usize,
    /// New connections per second at most.
    pub rate: Option<f64>,
    pub end: EndPlan,
    pub output: OutputPlan,
}

/// `tcpbye lab`: which cases, how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    pub modes: Vec<CloseMode>,
    pub settings: Vec<Setting>,
    pub runs: u32,
    pub format: Format,
}

/// `tcpbye bench`: what to measure, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPlan {
    /// Close/detect rounds per mode for the latency comparison.
    pub samples: u32,
    /// Connections for the churn comparison.
    pub churn: u64,
    /// Idle connections held by `serve`, and TCP connections held for `inspect`.
    pub idle: usize,
    /// Seconds over which idle `serve`'s CPU is measured.
    pub idle_seconds: u64,
    /// Connections of the `--close fin` churn that `serve` observes (peak RSS).
    pub fin_churn: u64,
    /// Each churn rate is the best of this many runs.
    pub runs: u32,
    /// Slow clients held by `serve` (`hostile`).
    pub slow: usize,
    /// Control connections streaming after their question (`hostile`).
    pub controls: usize,
    /// How long each hostile load lasts.
    pub hostile_seconds: u64,
    /// Steps to run (`latency`, `churn`, `memory`, `idle`, `hostile`, `inspect`); empty: all.
    pub only: Vec<String>,
    /// The binary whose `connect` and `serve` are measured; `None`: this one.
    pub exe: Option<PathBuf>,
    pub format: Format,
}

impl BenchPlan {
    /// Whether `step` (`latency`, `churn`, `memory`, `idle`, `hostile`, `inspect`) is to run.
    pub fn includes(&self, step: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == step)
    }
}

/// `tcpbye check`: the program under test is the server at `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPlan {
    /// The server under test, or with `listen` the address to listen on.
    pub addr: Target,
    /// `--listen`: the program under test is a client; each accepted connection
    /// ends in the next mode.
    pub listen: bool,
    /// `--wait-client`: with `listen`, how long the first connection is waited for.
    pub wait_client: Duration,
    /// One fresh connection per mode, all at once.
    pub modes: Vec<CloseMode>,
    /// Sent first (`--request`), then `send` bytes of filler (`--send`); when
    /// either is set, tcpbye acts once the answer's first bytes arrive.
    pub request: Vec<u8>,
    pub send: usize,
    /// How long the program is watched after tcpbye's action.
    pub wait: Duration,
    /// `--wait-silent`: how long the silent endings (drop, reboot, hang) are watched.
    pub wait_silent: Option<Duration>,
    pub format: Format,
    pub expect_noticed: NoticeLimits,
    pub expect_no_leak: bool,
    /// CAP_NET_RAW: a program on another host is judged from its captured segments.
    pub capture: bool,
    /// `--modes` was given: a mode asked for by name that cannot be judged without
    /// a privilege is an error, not a `not-judged` row.
    pub modes_given: bool,
    /// Default endings left out for want of a privilege (drop and reboot without
    /// CAP_NET_ADMIN): said in one line, not silently skipped.
    pub left_out: Vec<CloseMode>,
    /// `--leave-open`: the silent endings the program never noticed stay open
    /// after the wait instead of being reset.
    pub leave_open: bool,
}

impl CheckPlan {
    /// How long the program is watched after `mode`: `--wait-silent` for a silent
    /// ending when given, else `--wait`.
    pub fn wait_for(&self, mode: CloseMode) -> Duration {
        match self.wait_silent {
            Some(silent) if mode.is_silent() => silent,
            _ => self.wait,
        }
    }

    /// The longest any case is watched.
    pub fn longest_wait(&self) -> Duration {
        self.wait.max(self.wait_silent.unwrap_or(Duration::ZERO))
    }
}

/// `tcpbye check --pid`: a running program's own connections, one per mode,
/// ended as their peer would end them.
#[derive(Debug, Clone)]
pub struct CheckPidPlan {
    pub pid: u32,
    /// `--peer`: only connections to this peer are candidates.
    pub peer: Option<crate::values::PeerFilter>,
    /// `--dry-run`: say which connection each mode would end, and touch nothing.
    pub dry_run: bool,
    /// In the order connections are handed out.
    pub modes: Vec<CloseMode>,
    pub wait: Duration,
    pub wait_silent: Option<Duration>,
    pub format: Format,
    pub expect_noticed: NoticeLimits,
    pub expect_no_leak: bool,
    /// `--leave-open`: the drop and hang filters stay on the sockets the program
    /// still holds after the wait (by default tcpbye takes them off).
    pub leave_open: bool,
}

impl CheckPidPlan {
    /// How long the program is watched after `mode`: `--wait-silent` for a silent
    /// ending when given, else `--wait`.
    pub fn wait_for(&self, mode: CloseMode) -> Duration {
        match self.wait_silent {
            Some(silent) if mode.is_silent() => silent,
            _ => self.wait,
        }
    }
}

/// `tcpbye inspect`: whose connections to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectTarget {
    /// One process, by its id.
    Pid(u32),
    /// The processes holding a TCP socket on this local port (in tcpbye's own
    /// network namespace).
    Port(u16),
}

/// `tcpbye inspect`: read-only, it sends nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectPlan {
    pub target: InspectTarget,
    pub format: Format,
}

/// `tcpbye path`: the far end is a `tcpbye serve` at `addr`, through the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPlan {
    pub addr: Target,
    /// Ending tests (each in both directions), in order.
    pub endings: Vec<PathTest>,
    /// Whether the idle ladder runs.
    pub idle: bool,
    /// How long an ending, an answer or an ACK may take.
    pub wait: Duration,
    pub max_idle: Duration,
    /// The first ladder's idle periods, shortest first.
    pub ladder: Vec<Duration>,
    pub format: Format,
    pub expect_faithful: bool,
    pub expect_idle_over: Option<Duration>,
    /// After the bracket: one connection with the advised keepalive, idle past it.
    pub confirm_keepalive: bool,
}

/// One validated command, ready for its driver in `app`.
#[derive(Debug, Clone)]
pub enum Plan {
    Serve(ServePlan),
    Connect(ConnectPlan),
    Lab(LabPlan),
    Bench(BenchPlan),
    Check(CheckPlan),
    CheckPid(CheckPidPlan),
    Inspect(InspectPlan),
    Path(PathPlan),
    /// Text generated from the command line's definition (completions, the man
    /// page), to print as it is.
    Text(Vec<u8>),
}

/// What the process is allowed to do; injected so plan building is testable without root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub net_admin: bool,
    pub net_raw: bool,
}

impl Privileges {
    #[cfg(target_os = "linux")]
    pub fn detect() -> Self {
        Self {
            net_admin: crate::sys::has_net_admin(),
            net_raw: crate::sys::has_net_raw(),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn detect() -> Self {
        Self {
            net_admin: false,
            net_raw: false,
        }
    }
}

impl Setting {
    /// The observer's settings for this row.
    pub fn detection(self) -> Detection {
        let p = self.preset();
        Detection {
            keepalive: p.keepalive.map(|(idle, interval, count)| KeepAlive {
                idle,
                interval,
                count,
            }),
            user_timeout: p.user_timeout,
            heartbeat: p
                .heartbeat
                .map(|(interval, misses)| Heartbeat { interval, misses }),
            send_every: p.send_every,
        }
    }
}
