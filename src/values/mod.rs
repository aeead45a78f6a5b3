//! Values as given on the command line, typed: addresses, keepalive and heartbeat
//! settings, byte strings, expectation limits, and in [`parse`] the parsers clap
//! calls for them. Below both `cli` (which parses) and `plan` (which checks how
//! they combine).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::vocab::CloseMode;

pub mod parse;

/// The port `serve` listens on and `connect` dials when ADDR names none.
pub const DEFAULT_PORT: u16 = 7007;
/// The host used when ADDR names none: loopback, never all interfaces.
pub const DEFAULT_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// `SO_KEEPALIVE` with `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepAlive {
    #[serde(serialize_with = "ser_secs")]
    pub idle: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    pub count: u32,
}

/// Application-level ping/pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    #[serde(serialize_with = "ser_ms")]
    pub interval: Duration,
    pub misses: u32,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An address as given: an IP address with its port, or a host name resolved
/// when the command runs (every address it has is tried in turn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl Target {
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(addr) => addr.port(),
            Self::Host { port, .. } => *port,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(addr) => write!(f, "{addr}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Bytes given on the command line with escapes (`--request 'PING\r\n'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request(pub Vec<u8>);

/// `check --pid --peer`: the peer whose connections may be ended, by IP and,
/// when given, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerFilter {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl PeerFilter {
    /// Whether a connection's peer `addr` is this one (an IPv4 address and its
    /// v4-mapped IPv6 form are the same peer).
    pub fn matches(self, addr: SocketAddr) -> bool {
        addr.ip().to_canonical() == self.ip.to_canonical()
            && self.port.is_none_or(|p| p == addr.port())
    }
}

impl std::fmt::Display for PeerFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}", SocketAddr::new(self.ip, port)),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// `--expect-noticed-within`: a limit for every mode judged, or per mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoticeLimits {
    pub every: Option<Duration>,
    pub per_mode: Vec<(CloseMode, Duration)>,
}

impl NoticeLimits {
    /// The limit for `mode`, if any: its own, else the one for every mode.
    pub fn limit(&self, mode: CloseMode) -> Option<Duration> {
        self.per_mode
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, d)| *d)
            .or(self.every)
    }

    /// Whether `mode` was named on its own (a mode that cannot be judged then misses).
    pub fn names(&self, mode: CloseMode) -> bool {
        self.per_mode.iter().any(|(m, _)| *m == mode)
    }
}
