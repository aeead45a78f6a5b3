//! The names both sides of the pipeline use: how a connection is ended
//! ([`CloseMode`]), how its end was seen ([`Verdict`], [`DetectedBy`]), and the
//! observer's detection presets of `lab` ([`Setting`]). Depends on nothing else here.

use std::time::Duration;

use serde::Serialize;

/// How the closing end ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseMode {
    /// close(): a FIN; the peer reads EOF.
    Fin,
    /// shutdown(SHUT_WR), keep reading until the peer's FIN, then close.
    Half,
    /// SO_LINGER {on, 0} + close(): an RST; the peer gets ECONNRESET.
    Rst,
    /// close() with received data unread: Linux sends an RST, not a FIN. Needs data
    /// from the peer; without any it waits 1 s, then closes with a FIN.
    RstUnread,
    /// Vanish silently (pulled cable): no FIN, no RST, nothing answered. Needs CAP_NET_ADMIN.
    Drop,
    /// The host "reboots": the socket disappears without a packet; the peer's next segment meets an RST. Needs CAP_NET_ADMIN.
    Reboot,
    /// The process hangs: the socket stays open but is never read or written again.
    Hang,
    /// Do not close: observe until the peer ends the connection or --timeout passes.
    None,
}

impl CloseMode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Half => "half",
            Self::Rst => "rst",
            Self::RstUnread => "rst-unread",
            Self::Drop => "drop",
            Self::Reboot => "reboot",
            Self::Hang => "hang",
            Self::None => "none",
        }
    }

    /// Modes that need CAP_NET_ADMIN (socket filter, TCP_REPAIR).
    pub fn needs_net_admin(self) -> bool {
        matches!(self, Self::Drop | Self::Reboot)
    }

    /// Modes after which the closer sends nothing (drop, reboot, hang): no FIN
    /// or RST announces the end, only a detection mechanism or the peer's own
    /// send can notice it.
    pub fn is_silent(self) -> bool {
        matches!(self, Self::Drop | Self::Reboot | Self::Hang)
    }

    /// Silent modes whose socket stays open after the action (drop, hang): it
    /// is held, unwatched, until the hold ends.
    pub fn holds_socket(self) -> bool {
        matches!(self, Self::Drop | Self::Hang)
    }

    /// Every mode, in teaching order (`none` last).
    pub const ALL: [CloseMode; 8] = [
        Self::Fin,
        Self::Half,
        Self::Rst,
        Self::RstUnread,
        Self::Drop,
        Self::Reboot,
        Self::Hang,
        Self::None,
    ];

    /// What the peer of this mode observes, in one line (for `--help` and docs).
    pub fn summary(self) -> &'static str {
        match self {
            Self::Fin => "close(): a FIN; the peer reads EOF",
            Self::Half => "shutdown(SHUT_WR), keep reading until the peer's FIN, then close",
            Self::Rst => "SO_LINGER {on, 0} + close(): an RST; the peer gets ECONNRESET",
            Self::RstUnread => {
                "close() with received data unread: Linux sends an RST, not a FIN; needs data from the peer (`serve --send 1k`), else it waits 1s and sends a FIN"
            }
            Self::Drop => {
                "vanish silently like a pulled cable: nothing sent, nothing answered (CAP_NET_ADMIN)"
            }
            Self::Reboot => {
                "the socket disappears without a packet; the peer's next segment meets an RST (CAP_NET_ADMIN)"
            }
            Self::Hang => "the process hangs: socket open, never read or written again",
            Self::None => "do not close: observe until the peer ends it or --timeout passes",
        }
    }

    /// Every mode that ends a connection, in teaching order: all but `none`.
    pub const ENDINGS: &'static [CloseMode] = Self::ALL.split_at(Self::ALL.len() - 1).0;
}

/// An ending `check` tries on the program under test: the [`CloseMode`]s whose
/// reaction it can judge, in teaching order, told from the program's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckEnding(pub CloseMode);

impl CheckEnding {
    pub const ALL: [CheckEnding; 6] = [
        Self(CloseMode::Fin),
        Self(CloseMode::Half),
        Self(CloseMode::Rst),
        Self(CloseMode::Drop),
        Self(CloseMode::Reboot),
        Self(CloseMode::Hang),
    ];

    /// What tcpbye does and what the program meets, in one line (for `--help`).
    pub fn summary(self) -> &'static str {
        match self.0 {
            CloseMode::Fin => "tcpbye closes (FIN): does the program read EOF and close?",
            CloseMode::Half => "tcpbye shuts down its sending side (FIN) and keeps reading",
            CloseMode::Rst => "tcpbye resets (RST): does the program close after ECONNRESET?",
            CloseMode::Drop => {
                "tcpbye vanishes like a pulled cable: nothing sent or answered (CAP_NET_ADMIN)"
            }
            CloseMode::Reboot => {
                "tcpbye's host \"reboots\": the program's next segment meets an RST (CAP_NET_ADMIN)"
            }
            CloseMode::Hang => "tcpbye hangs: its kernel ACKs, nothing is read or written",
            CloseMode::RstUnread | CloseMode::None => "not an ending check tries",
        }
    }
}

impl std::fmt::Display for CloseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a connection ended, as the reporting side saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The peer sent a FIN: recv() returned 0 (EOF).
    Fin,
    /// The peer sent an RST: ECONNRESET (or EPIPE on send).
    Rst,
    /// The kernel gave up (ETIMEDOUT): see `detected_by`.
    Timeout,
    /// The application heartbeat missed too many pongs.
    Heartbeat,
    /// Nothing detected before --timeout.
    Open,
    /// connect(): ECONNREFUSED.
    Refused,
    /// connect(): EHOSTUNREACH / ENETUNREACH.
    Unreachable,
    /// connect() did not complete within --connect-timeout.
    ConnectTimeout,
    /// Any other socket error (named in the timeline).
    Error,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Timeout => "timeout",
            Self::Heartbeat => "heartbeat",
            Self::Open => "open",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
            Self::ConnectTimeout => "connect-timeout",
            Self::Error => "error",
        }
    }

    /// One line on what the verdict means.
    pub fn summary(self) -> &'static str {
        match self {
            Self::Fin => "the peer sent a FIN: recv() returned 0 (EOF)",
            Self::Rst => "the peer sent an RST: ECONNRESET (or EPIPE on send)",
            Self::Timeout => {
                "the kernel gave up (ETIMEDOUT) by keepalive, user timeout or retransmissions"
            }
            Self::Heartbeat => "the application heartbeat went unanswered",
            Self::Open => "nothing detected before --timeout",
            Self::Refused => "connect(): ECONNREFUSED",
            Self::Unreachable => "connect(): EHOSTUNREACH or ENETUNREACH",
            Self::ConnectTimeout => "connect() did not complete within --connect-timeout",
            Self::Error => "another socket error (named in the timeline)",
        }
    }

    pub const ALL: [Verdict; 9] = [
        Self::Fin,
        Self::Rst,
        Self::Timeout,
        Self::Heartbeat,
        Self::Open,
        Self::Refused,
        Self::Unreachable,
        Self::ConnectTimeout,
        Self::Error,
    ];

    /// Outcomes of a connect() that never got a connection.
    pub fn is_connect_failure(self) -> bool {
        matches!(
            self,
            Self::Refused | Self::Unreachable | Self::ConnectTimeout
        )
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The mechanism that noticed a silent ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectedBy {
    Keepalive,
    UserTimeout,
    Retransmit,
}

impl DetectedBy {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keepalive => "keepalive",
            Self::UserTimeout => "user-timeout",
            Self::Retransmit => "retransmit",
        }
    }
}

/// A detection setting of the observing side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    None,
    Keepalive,
    UserTimeout,
    Heartbeat,
}

impl Setting {
    pub const ALL: [Setting; 4] = [
        Self::None,
        Self::Keepalive,
        Self::UserTimeout,
        Self::Heartbeat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Keepalive => "keepalive",
            Self::UserTimeout => "user-timeout",
            Self::Heartbeat => "heartbeat",
        }
    }

    /// The values this setting gives the observer: the one source for its plan
    /// (`plan::Setting::detection`) and for its flags in words ([`Setting::summary`]).
    pub fn preset(self) -> Preset {
        let ms = Duration::from_millis;
        match self {
            Self::None => Preset::default(),
            Self::Keepalive => Preset {
                keepalive: Some((ms(1000), ms(1000), 2)),
                ..Preset::default()
            },
            Self::UserTimeout => Preset {
                user_timeout: Some(ms(1500)),
                send_every: Some(ms(200)),
                ..Preset::default()
            },
            Self::Heartbeat => Preset {
                heartbeat: Some((ms(200), 3)),
                ..Preset::default()
            },
        }
    }

    /// The setting as the flags that give it, e.g. `--keepalive 1s,1s,2`.
    pub fn summary(self) -> String {
        let p = self.preset();
        let d = |d: Duration| {
            if d.subsec_millis() == 0 {
                format!("{}s", d.as_secs())
            } else {
                format!("{}ms", d.as_millis())
            }
        };
        let mut flags = Vec::new();
        if let Some((idle, intvl, cnt)) = p.keepalive {
            flags.push(format!("--keepalive {},{},{cnt}", d(idle), d(intvl)));
        }
        if let Some(t) = p.user_timeout {
            flags.push(format!("--user-timeout {}", d(t)));
        }
        if let Some(t) = p.send_every {
            flags.push(format!("--send-every {}", d(t)));
        }
        if let Some((every, misses)) = p.heartbeat {
            flags.push(format!("--heartbeat {},{misses}", d(every)));
        }
        if flags.is_empty() {
            "plain reads only".to_owned()
        } else {
            flags.join(" ")
        }
    }
}

/// The values of a `lab` detection setting, as [`Setting::preset`] gives them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preset {
    /// Keepalive idle, interval and probe count.
    pub keepalive: Option<(Duration, Duration, u32)>,
    pub user_timeout: Option<Duration>,
    pub send_every: Option<Duration>,
    /// Heartbeat interval and misses.
    pub heartbeat: Option<(Duration, u32)>,
}

/// One test of `path`: an ending sent through the path, or an idle period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathTest {
    /// close(): does a FIN arrive as a FIN?
    Fin,
    /// SO_LINGER {on, 0} + close(): does an RST arrive as an RST?
    Rst,
    /// shutdown(SHUT_WR): does the FIN arrive, and does data still flow the other way after it?
    Half,
    /// close() with unread data (Linux sends an RST): does that RST arrive as an RST?
    RstUnread,
    /// Connections left idle on a ladder of durations: when does the path forget them?
    Idle,
}

impl PathTest {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Half => "half",
            Self::RstUnread => "rst-unread",
            Self::Idle => "idle",
        }
    }

    pub const ALL: [PathTest; 5] = [
        Self::Fin,
        Self::Rst,
        Self::Half,
        Self::RstUnread,
        Self::Idle,
    ];

    /// The close mode an ending test performs (`None` for `idle`).
    pub fn mode(self) -> Option<CloseMode> {
        match self {
            Self::Fin => Some(CloseMode::Fin),
            Self::Rst => Some(CloseMode::Rst),
            Self::Half => Some(CloseMode::Half),
            Self::RstUnread => Some(CloseMode::RstUnread),
            Self::Idle => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// What the test measures, in one line (for `--help`).
    pub fn summary(self) -> &'static str {
        match self {
            Self::Fin => "close(): does the FIN arrive as a FIN, both ways?",
            Self::Rst => "SO_LINGER {on, 0} + close(): does the RST arrive as an RST, both ways?",
            Self::Half => {
                "shutdown(SHUT_WR): the FIN arrives, and data still flows the other way after it"
            }
            Self::RstUnread => "close() with unread data (an RST on Linux): does the RST arrive?",
            Self::Idle => "idle connections on a ladder of durations: the path's idle timeout",
        }
    }
}

impl std::fmt::Display for PathTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which end of a `path` test acts: the near end (`path`) or the far end (`serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// The near end acts, the far end reports what arrived.
    NearToFar,
    /// The far end acts, the near end observes.
    FarToNear,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::NearToFar => "near-to-far",
            Self::FarToNear => "far-to-near",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::NearToFar, Self::FarToNear]
            .into_iter()
            .find(|d| d.name() == name)
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lab_setting_reads_as_the_flags_that_give_it() {
        let words: Vec<String> = Setting::ALL.iter().map(|s| s.summary()).collect();
        assert_eq!(
            words,
            [
                "plain reads only",
                "--keepalive 1s,1s,2",
                "--user-timeout 1500ms --send-every 200ms",
                "--heartbeat 200ms,3",
            ]
        );
    }
}
