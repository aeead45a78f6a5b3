//! `TCP_INFO` as tcpbye reports it: kernel names without the `tcpi_` prefix,
//! kernel units (µs for rto/ato/rtt, ms for the `last_*` ages). Fields the
//! running kernel did not return are `None` ("not reported"), never zero.

use serde::Serialize;

/// The TCP state machine as `/proc/net/tcp` and `ss` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    BoundInactive,
    Unknown,
}

impl TcpState {
    /// Maps the kernel's `TCP_*` state number.
    pub fn from_kernel(value: u8) -> Self {
        match value {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            13 => Self::BoundInactive,
            _ => Self::Unknown,
        }
    }

    /// The name used in reports (`CLOSE_WAIT`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
            Self::BoundInactive => "BOUND_INACTIVE",
            Self::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for TcpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Congestion-avoidance state (`tcpi_ca_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CaState {
    Open,
    Disorder,
    Cwr,
    Recovery,
    Loss,
    Unknown,
}

impl CaState {
    pub fn from_kernel(value: u8) -> Self {
        match value {
            0 => Self::Open,
            1 => Self::Disorder,
            2 => Self::Cwr,
            3 => Self::Recovery,
            4 => Self::Loss,
            _ => Self::Unknown,
        }
    }
}

/// One `getsockopt(TCP_INFO)` reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpInfo {
    pub state: TcpState,
    pub ca_state: CaState,
    pub retransmits: u8,
    pub probes: u8,
    pub backoff: u8,
    /// Retransmission timeout, µs.
    pub rto: u32,
    /// Delayed-ACK timeout, µs.
    pub ato: u32,
    pub snd_mss: u32,
    pub rcv_mss: u32,
    pub unacked: u32,
    pub sacked: u32,
    pub lost: u32,
    pub retrans: u32,
    /// ms since data was last sent.
    pub last_data_sent: u32,
    /// ms since data was last received.
    pub last_data_recv: u32,
    /// ms since an ACK was last received.
    pub last_ack_recv: u32,
    pub pmtu: u32,
    /// Smoothed round-trip time, µs.
    pub rtt: u32,
    /// Round-trip time variance, µs.
    pub rttvar: u32,
    pub snd_ssthresh: u32,
    pub snd_cwnd: u32,
    pub advmss: u32,
    pub reordering: u32,
    pub rcv_space: u32,
    pub total_retrans: u32,
    pub bytes_acked: Option<u64>,
    pub bytes_received: Option<u64>,
    pub segs_out: Option<u32>,
    pub segs_in: Option<u32>,
    pub notsent_bytes: Option<u32>,
    /// µs.
    pub min_rtt: Option<u32>,
    pub data_segs_in: Option<u32>,
    pub data_segs_out: Option<u32>,
    pub delivered: Option<u32>,
    pub bytes_sent: Option<u64>,
    pub bytes_retrans: Option<u64>,
    pub snd_wnd: Option<u32>,
    pub rcv_wnd: Option<u32>,
    pub total_rto: Option<u16>,
    pub total_rto_recoveries: Option<u16>,
    /// ms spent in RTO recoveries.
    pub total_rto_time: Option<u32>,
}

impl TcpInfo {
    /// The rows shown in the table renderer: name and value, in kernel order.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        fn opt<T: ToString>(v: Option<T>) -> String {
            v.map_or_else(|| "-".to_owned(), |v| v.to_string())
        }
        vec![
            ("state", self.state.to_string()),
            ("ca_state", format!("{:?}", self.ca_state).to_lowercase()),
            ("retransmits", self.retransmits.to_string()),
            ("probes", self.probes.to_string()),
            ("backoff", self.backoff.to_string()),
            ("rto (µs)", self.rto.to_string()),
            ("rtt (µs)", self.rtt.to_string()),
            ("rttvar (µs)", self.rttvar.to_string()),
            ("snd_cwnd", self.snd_cwnd.to_string()),
            ("unacked", self.unacked.to_string()),
            ("lost", self.lost.to_string()),
            ("retrans", self.retrans.to_string()),
            ("total_retrans", self.total_retrans.to_string()),
            ("last_data_sent (ms)", self.last_data_sent.to_string()),
            ("last_data_recv (ms)", self.last_data_recv.to_string()),
            ("last_ack_recv (ms)", self.last_ack_recv.to_string()),
            ("bytes_acked", opt(self.bytes_acked)),
            ("bytes_received", opt(self.bytes_received)),
            ("notsent_bytes", opt(self.notsent_bytes)),
            ("snd_wnd", opt(self.snd_wnd)),
            ("rcv_wnd", opt(self.rcv_wnd)),
            ("total_rto", opt(self.total_rto)),
        ]
    }
}
