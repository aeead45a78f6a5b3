//! Words the judges share: durations as people read them, the advice for a weak
//! reaction, and how a program on another host is seen.

use super::programs::Program;
use crate::report::check::{Descriptor, ProgramSettings, Reaction};
pub use crate::report::fmt_secs;
use crate::vocab::CloseMode;

/// How a program on another host is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// Its segments were captured (CAP_NET_RAW).
    pub captured: bool,
    /// `--wait`: what happens after it answers tcpbye's own end of the watch
    /// (the socket a `drop`/`hang` held is closed then), not the ending.
    pub wait_us: u64,
}

/// What the advice suggests for a silent peer: keepalive idle, interval, count.
const ADVISED_KEEPALIVE: (u64, u64, u64) = (30, 5, 3);
/// The program-specific settings advised give up within this.
const PROGRAM_ADVICE_US: u64 = 60_000_000;
/// A prediction within this is already quick: the advice is to watch longer.
const QUICK_ENOUGH_US: u64 = 45_000_000;

/// One line on how to close the gap. It never suggests a value slower than the
/// one in effect: a program whose own keepalive already notices within
/// [`QUICK_ENOUGH_US`] is told to watch longer, and each suggested setting is at
/// most the program's own.
pub fn advice(
    mode: CloseMode,
    reaction: Reaction,
    keepalive: bool,
    would: Option<u64>,
    settings: Option<&ProgramSettings>,
    descriptor: &Option<Descriptor>,
    program: Option<(&Program, Option<u32>)>,
) -> Option<String> {
    if reaction == Reaction::Unnoticed
        && matches!(mode, CloseMode::Drop | CloseMode::Reboot)
        && keepalive
        && let Some(would) = would.filter(|w| *w <= QUICK_ENOUGH_US)
    {
        let own = settings
            .and_then(|s| s.keepalive)
            .map(|k| {
                format!(
                    " (TCP_KEEPIDLE={}s, TCP_KEEPINTVL={}s, TCP_KEEPCNT={})",
                    k.idle_s, k.intvl_s, k.cnt
                )
            })
            .unwrap_or_default();
        return Some(format!(
            "its own keepalive{own} notices ≈ {} after the ending, later than --wait: watch longer (--wait) to see it",
            fmt_secs(would)
        ));
    }
    // A program tcpbye knows is told its own setting, when that is quicker than
    // its keepalive in effect (the suggestions give up within a minute).
    let own = settings.and_then(|s| s.keepalive);
    if reaction == Reaction::Unnoticed
        && own.is_none_or(|k| k.gives_up_after_us() > PROGRAM_ADVICE_US)
        && let Some((program, pid)) = program
        && let Some(text) = program.advice(mode, keepalive, pid)
    {
        return Some(
            match own.filter(|_| mode.is_silent() && mode != CloseMode::Hang) {
                Some(k) => format!(
                    "its keepalive (TCP_KEEPIDLE={}s, TCP_KEEPINTVL={}s, TCP_KEEPCNT={}: ≈{}) notices late. {text}",
                    k.idle_s,
                    k.intvl_s,
                    k.cnt,
                    fmt_secs(k.gives_up_after_us()),
                ),
                None => text,
            },
        );
    }
    if let Some(k) = own
        && reaction == Reaction::Unnoticed
        && matches!(mode, CloseMode::Drop | CloseMode::Reboot)
    {
        let (idle, intvl, cnt) = ADVISED_KEEPALIVE;
        let (idle, intvl, cnt) = (idle.min(k.idle_s), intvl.min(k.intvl_s), cnt.min(k.cnt));
        return Some(format!(
            "its keepalive (TCP_KEEPIDLE={}s, TCP_KEEPINTVL={}s, TCP_KEEPCNT={}: ≈{}) notices late: set TCP_KEEPIDLE={idle}s, TCP_KEEPINTVL={intvl}s, TCP_KEEPCNT={cnt} (≈{}s), plus TCP_USER_TIMEOUT=30s for data in flight",
            k.idle_s,
            k.intvl_s,
            k.cnt,
            fmt_secs(k.gives_up_after_us()),
            idle + intvl * cnt
        ));
    }
    match reaction {
        Reaction::Leaked if descriptor.as_ref().is_some_and(|d| d.held_at_end) => Some(
            "close the socket when recv()/send() fails (ECONNRESET, ETIMEDOUT, EPIPE): the kernel freed the connection, the descriptor is the program's to close".into(),
        ),
        Reaction::Leaked => Some(
            "close the socket when recv() returns 0 (EOF) or epoll reports EPOLLRDHUP: a CLOSE_WAIT socket is never freed by the kernel".into(),
        ),
        Reaction::Unnoticed => Some(match mode {
            CloseMode::Hang => "keepalive cannot see a hung peer: add an application heartbeat (e.g. a ping every 10s, give up after 3 misses), or TCP_USER_TIMEOUT=30s for data it sends".into(),
            CloseMode::Drop | CloseMode::Reboot if keepalive => "its keepalive notices only late: lower TCP_KEEPIDLE (e.g. 30s) with TCP_KEEPINTVL=5s, TCP_KEEPCNT=3 (≈45s), plus TCP_USER_TIMEOUT=30s for data in flight".into(),
            CloseMode::Drop | CloseMode::Reboot => "enable SO_KEEPALIVE with TCP_KEEPIDLE=30s, TCP_KEEPINTVL=5s, TCP_KEEPCNT=3 (≈45s), plus TCP_USER_TIMEOUT=30s for data in flight, or an application heartbeat".into(),
            _ => "read the socket (epoll EPOLLRDHUP/EPOLLIN) and close it at EOF or error".into(),
        }),
        _ => None,
    }
}
