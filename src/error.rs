//! Exit codes and the few errors the code branches on. Everything else is an
//! `anyhow` error with context, reported as a runtime failure.

/// The process exit codes (a public contract, see docs/json.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Ran, and every `--expect` was met.
    Ok = 0,
    /// Ran, and an `--expect` was not met.
    ExpectationMissed = 1,
    /// Bad command line.
    Usage = 2,
    /// tcpbye could not run the experiment (bind, connect, …).
    Runtime = 3,
    /// A needed privilege is missing.
    Privilege = 4,
    /// Interrupted by SIGINT, SIGTERM or SIGHUP (after printing what it had).
    Interrupted = 130,
}

/// How a run went, as a driver tells it; [`Outcome::exit_code`] is the one place
/// that turns it into the process's exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// A signal (SIGINT, SIGTERM, SIGHUP) cut the run short, after what it had was printed.
    pub interrupted: bool,
    /// A measurement tcpbye could not make (a `path` test without the far end's account).
    pub failed: bool,
    /// An expectation (`--expect…`) was not met; its misses were told.
    pub missed: bool,
}

impl Outcome {
    /// A run that did what it was asked, with nothing to expect.
    pub const DONE: Self = Self {
        interrupted: false,
        failed: false,
        missed: false,
    };

    /// Interrupted before anything else; a measurement that failed before a
    /// verdict (a failed test can also miss an expectation); then the verdict.
    pub fn exit_code(self) -> ExitCode {
        if self.interrupted {
            ExitCode::Interrupted
        } else if self.failed {
            ExitCode::Runtime
        } else if self.missed {
            ExitCode::ExpectationMissed
        } else {
            ExitCode::Ok
        }
    }
}

/// A capability some features need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Socket filters and TCP_REPAIR (`--close drop`, `--close reboot`).
    NetAdmin,
    /// Packet capture (`--pcap`).
    NetRaw,
    /// Listening on a port below `net.ipv4.ip_unprivileged_port_start` (1024).
    NetBindService,
    /// Another user's process: its descriptors (`/proc/PID/fd`, `pidfd_getfd(2)`).
    SysPtrace,
    /// Entering another network namespace (`setns(2)`).
    SysAdmin,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::NetRaw => "CAP_NET_RAW",
            Self::NetBindService => "CAP_NET_BIND_SERVICE",
            Self::SysPtrace => "CAP_SYS_PTRACE",
            Self::SysAdmin => "CAP_SYS_ADMIN",
        }
    }

    fn setcap(self) -> &'static str {
        match self {
            Self::NetAdmin => "cap_net_admin",
            Self::NetRaw => "cap_net_raw",
            Self::NetBindService => "cap_net_bind_service",
            Self::SysPtrace => "cap_sys_ptrace",
            Self::SysAdmin => "cap_sys_admin",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Self::NetAdmin => "; `tcpbye lab` runs these modes in a namespace of its own",
            Self::NetRaw => "",
            Self::NetBindService => "; or use a port above 1023",
            Self::SysPtrace => {
                "; or run it as the program's own user, where ptrace is allowed (kernel.yama.ptrace_scope)"
            }
            Self::SysAdmin => "",
        }
    }
}

/// Errors that map to their own exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{what} needs {}: run as root, or grant it with `sudo setcap {}+ep $(command -v tcpbye)`{}", capability.name(), capability.setcap(), capability.hint())]
    Privilege {
        what: String,
        capability: Capability,
    },
    #[error("{0}")]
    Runtime(String),
    #[error("unsupported on this platform: tcpbye needs Linux (TCP_INFO, epoll, TCP_REPAIR)")]
    Unsupported,
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) => ExitCode::Usage,
            Self::Privilege { .. } => ExitCode::Privilege,
            Self::Runtime(_) | Self::Unsupported => ExitCode::Runtime,
        }
    }
}

/// The exit code for an error returned by [`crate::run`].
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    err.downcast_ref::<Failure>()
        .map_or(ExitCode::Runtime, Failure::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_outcome_one_exit_code() {
        let code = |interrupted, failed, missed| {
            Outcome {
                interrupted,
                failed,
                missed,
            }
            .exit_code()
        };
        assert_eq!(Outcome::DONE.exit_code(), ExitCode::Ok);
        assert_eq!(code(false, false, true), ExitCode::ExpectationMissed);
        // A measurement that failed outranks a missed expectation it caused…
        assert_eq!(code(false, true, true), ExitCode::Runtime);
        // …and an interruption outranks both: what was printed is partial.
        assert_eq!(code(true, true, true), ExitCode::Interrupted);
        assert_eq!(code(true, false, false), ExitCode::Interrupted);
    }

    #[test]
    fn privileged_port_hint() {
        let err = Failure::Privilege {
            what: "bind 127.0.0.1:80".into(),
            capability: Capability::NetBindService,
        };
        assert_eq!(
            err.to_string(),
            "bind 127.0.0.1:80 needs CAP_NET_BIND_SERVICE: run as root, or grant it with \
             `sudo setcap cap_net_bind_service+ep $(command -v tcpbye)`; or use a port above 1023"
        );
        assert_eq!(err.exit_code(), ExitCode::Privilege);
    }
}
