//! The timer sock_diag reports on a socket, typed: the same on every platform, so
//! that the report model can carry it.

use serde::{Serialize, Serializer};

/// The timer pending on a socket (`idiag_timer`, `idiag_expires`, `idiag_retrans`),
/// shown by `ss -o` as `timer:(on,200ms,0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiagTimer {
    pub kind: DiagTimerKind,
    /// Milliseconds until it fires (0 when already due).
    pub expires_ms: u32,
    /// Retransmissions so far for [`DiagTimerKind::Retransmit`]; probes sent
    /// without an answer for [`DiagTimerKind::KeepAlive`] and
    /// [`DiagTimerKind::Persist`]; 0 for [`DiagTimerKind::TimeWait`].
    pub retransmits: u8,
}

/// Which timer is pending, named as `ss -o` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DiagTimerKind {
    /// Retransmission, tail loss probe or reordering timer (`on`).
    #[serde(rename = "on")]
    Retransmit,
    /// The socket's `sk_timer`: keepalive, and also the `FIN_WAIT2` timeout of
    /// an orphan that stays a full socket (`keepalive`).
    #[serde(rename = "keepalive")]
    KeepAlive,
    /// The `TIME_WAIT` (or orphan `FIN_WAIT2`) minisocket's lifetime (`timewait`).
    #[serde(rename = "timewait")]
    TimeWait,
    /// Zero-window probe timer (`persist`).
    #[serde(rename = "persist")]
    Persist,
    /// A timer number this code does not know.
    #[serde(rename = "unknown")]
    Unknown,
}

impl DiagTimerKind {
    /// Maps the kernel's `idiag_timer`; 0 (no timer) is `None`.
    pub(crate) fn from_kernel(value: u8) -> Option<Self> {
        match value {
            0 => None,
            1 => Some(Self::Retransmit),
            2 => Some(Self::KeepAlive),
            3 => Some(Self::TimeWait),
            4 => Some(Self::Persist),
            _ => Some(Self::Unknown),
        }
    }

    /// The name `ss -o` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Retransmit => "on",
            Self::KeepAlive => "keepalive",
            Self::TimeWait => "timewait",
            Self::Persist => "persist",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for DiagTimerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for DiagTimer {
    /// As `ss -o` shows it, to a tenth of a second: `keepalive,297.0s,0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{:.1}s,{}",
            self.kind,
            f64::from(self.expires_ms) / 1000.0,
            self.retransmits
        )
    }
}

impl DiagTimer {
    /// Serializes as its text (`keepalive,297.0s,0`), the report's JSON form.
    pub fn serialize_as_text<S: Serializer>(
        timer: &Option<DiagTimer>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match timer {
            Some(t) => serializer.collect_str(t),
            None => serializer.serialize_none(),
        }
    }
}
