//! tcpbye: make a real TCP connection end in a chosen way and report what the
//! other side observes, when, and through which mechanism.
//!
//! Data flows one way: CLI → validated plan ([`plan`]) → engine ([`engine`]) →
//! reports ([`report`]) → renderer → stdout.

#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

#[cfg(target_os = "linux")]
pub mod bench;
pub mod cli;
#[cfg(target_os = "linux")]
pub mod engine;
pub mod error;
#[cfg(target_os = "linux")]
pub mod lab;
#[cfg(not(target_os = "linux"))]
pub mod lab {
    //! `lab` needs Linux; the type is here so the CLI builds everywhere.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Setting {
        None,
    }
    impl Setting {
        pub const ALL: [Setting; 1] = [Setting::None];
        pub fn name(self) -> &'static str {
            "none"
        }
        pub fn summary(self) -> &'static str {
            "no detection setting"
        }
    }
}
pub mod manpage;
pub mod output;
pub mod plan;
pub mod report;
pub mod sys;

use std::net::SocketAddr;

use clap::CommandFactory;

use cli::{Cli, Command, ConnectArgs, DetectArgs, EndArgs, OutputArgs, ServeArgs};
pub use error::{Capability, ExitCode, Failure};
use plan::{CloseMode, ConnectPlan, Detection, EndPlan, OutputPlan, ServePlan};

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
            net_admin: sys::has_net_admin(),
            net_raw: sys::has_net_raw(),
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

/// Runs a parsed command line; the exit code says how it went.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let privileges = Privileges::detect();
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "tcpbye", &mut out);
            output::write_stdout(&out)?;
            Ok(ExitCode::Ok)
        }
        Command::Man => {
            output::write_stdout(&manpage::render()?)?;
            Ok(ExitCode::Ok)
        }
        #[cfg(target_os = "linux")]
        Command::Serve(args) => output::serve(serve_plan(args, privileges)?),
        #[cfg(target_os = "linux")]
        Command::Connect(args) => output::connect(connect_plan(args, privileges)?),
        #[cfg(target_os = "linux")]
        Command::Lab(args) => output::lab(lab::LabPlan::from_args(&args)?, args.json),
        #[cfg(target_os = "linux")]
        Command::Bench(args) => output::bench(
            &bench::BenchPlan {
                samples: args.samples,
                churn: args.churn,
                idle: args.idle as usize,
            },
            args.json,
        ),
        #[cfg(not(target_os = "linux"))]
        Command::Serve(_) | Command::Connect(_) | Command::Lab(_) | Command::Bench(_) => {
            let _ = privileges;
            Err(Failure::Unsupported.into())
        }
    }
}

/// Validates `serve` arguments into a plan.
pub fn serve_plan(args: ServeArgs, privileges: Privileges) -> Result<ServePlan, Failure> {
    let addr = args.addr.unwrap_or(default_addr());
    let mut end = end_plan(args.end, args.detect, CloseMode::None, privileges)?;
    if args.summary {
        // Only the summary is printed: sock_diag readings would be read and thrown away.
        end.peer_side = false;
        end.linger_watch = std::time::Duration::ZERO;
    }
    Ok(ServePlan {
        addr,
        once: args.once,
        max_conns: args.max_conns.map(|n| n as usize),
        end,
        output: OutputPlan {
            summary_only: args.summary,
            ..output_plan(args.output, privileges)?
        },
    })
}

/// Validates `connect` arguments into a plan.
pub fn connect_plan(args: ConnectArgs, privileges: Privileges) -> Result<ConnectPlan, Failure> {
    let addr = args.addr.unwrap_or(default_addr());
    if addr.port() == 0 {
        return Err(Failure::Usage(format!(
            "connect {addr}: port 0 cannot be connected to"
        )));
    }
    let end = end_plan(args.end, args.detect, CloseMode::Fin, privileges)?;
    if args.count == 1 && (args.concurrency > 1 || args.rate.is_some()) {
        return Err(Failure::Usage(
            "--concurrency and --rate apply with --count N (N > 1)".into(),
        ));
    }
    // Churn reports only a summary: sock_diag readings would be read and thrown away.
    let end = if args.count > 1 {
        EndPlan {
            peer_side: false,
            linger_watch: std::time::Duration::ZERO,
            ..end
        }
    } else {
        end
    };
    Ok(ConnectPlan {
        addr,
        connect_timeout: args.connect_timeout,
        count: args.count,
        concurrency: args.concurrency as usize,
        rate: args.rate,
        end,
        output: OutputPlan {
            summary_only: args.count > 1,
            ..output_plan(args.output, privileges)?
        },
    })
}

fn default_addr() -> SocketAddr {
    SocketAddr::new(plan::DEFAULT_HOST, plan::DEFAULT_PORT)
}

fn end_plan(
    end: EndArgs,
    detect: DetectArgs,
    default_close: CloseMode,
    privileges: Privileges,
) -> Result<EndPlan, Failure> {
    let close = end.close.unwrap_or(default_close);
    if close.needs_net_admin() && !privileges.net_admin {
        return Err(Failure::Privilege {
            what: format!("--close {close}"),
            capability: Capability::NetAdmin,
        });
    }
    if end.hold.is_some() && !matches!(close, CloseMode::Drop | CloseMode::Hang) {
        return Err(Failure::Usage(format!(
            "--hold applies to --close drop and --close hang, not --close {close}"
        )));
    }
    if detect
        .user_timeout
        .is_some_and(|ut| ut.as_millis() == 0 || ut.as_millis() > u128::from(u32::MAX))
    {
        return Err(Failure::Usage(
            "--user-timeout must be from 1ms to 49 days".into(),
        ));
    }
    Ok(EndPlan {
        send: end.send,
        close,
        after: end.after,
        hold: end.hold,
        detection: Detection {
            keepalive: detect.keepalive,
            user_timeout: detect.user_timeout,
            heartbeat: detect.heartbeat,
            send_every: detect.send_every,
        },
        probe: !end.no_probe,
        timeout: detect.timeout,
        peer_side: !end.no_peer_side,
        linger_watch: end.linger_watch,
    })
}

fn output_plan(args: OutputArgs, privileges: Privileges) -> Result<OutputPlan, Failure> {
    if args.pcap.is_some() && !privileges.net_raw {
        return Err(Failure::Privilege {
            what: "--pcap".into(),
            capability: Capability::NetRaw,
        });
    }
    Ok(OutputPlan {
        json: args.json,
        ladder: args.ladder,
        pcap: args.pcap,
        summary_only: false,
        expect: args.expect,
        expect_within: args.expect_within,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const ROOT: Privileges = Privileges {
        net_admin: true,
        net_raw: true,
    };
    const USER: Privileges = Privileges {
        net_admin: false,
        net_raw: false,
    };

    fn serve(argv: &[&str], p: Privileges) -> Result<ServePlan, Failure> {
        let cli = Cli::try_parse_from(["tcpbye", "serve"].iter().chain(argv)).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        serve_plan(args, p)
    }

    fn connect(argv: &[&str], p: Privileges) -> Result<ConnectPlan, Failure> {
        let cli = Cli::try_parse_from(["tcpbye", "connect"].iter().chain(argv)).expect("parses");
        let Command::Connect(args) = cli.command else {
            panic!("not connect")
        };
        connect_plan(args, p)
    }

    #[test]
    fn defaults() {
        let s = serve(&[], USER).unwrap();
        assert_eq!(s.addr, "127.0.0.1:7007".parse().unwrap());
        assert_eq!(s.end.close, CloseMode::None);
        assert!(s.end.probe && !s.once && s.max_conns.is_none());
        let c = connect(&[], USER).unwrap();
        assert_eq!(c.addr, "127.0.0.1:7007".parse().unwrap());
        assert_eq!(c.end.close, CloseMode::Fin);
        assert_eq!(c.connect_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn close_modes_and_detection() {
        let c = connect(
            &[
                "[::1]:9",
                "--close",
                "rst-unread",
                "--after",
                "250ms",
                "--send",
                "4k",
                "--keepalive",
                "1s,2s,3",
            ],
            USER,
        )
        .unwrap();
        assert_eq!(c.addr, "[::1]:9".parse().unwrap());
        assert_eq!(c.end.close, CloseMode::RstUnread);
        assert_eq!(c.end.after.as_millis(), 250);
        assert_eq!(c.end.send, 4096);
        assert_eq!(c.end.detection.keepalive.unwrap().interval.as_secs(), 2);
        let s = serve(&[":0", "--once", "--expect", "fin,rst", "--json"], USER).unwrap();
        assert_eq!(
            s.output.expect,
            vec![report::Verdict::Fin, report::Verdict::Rst]
        );
        assert!(s.output.json && s.once);
    }

    #[test]
    fn privileged_modes_need_net_admin() {
        for mode in ["drop", "reboot"] {
            assert!(matches!(
                connect(&["--close", mode], USER),
                Err(Failure::Privilege { .. })
            ));
            assert_eq!(
                connect(&["--close", mode], ROOT).unwrap().end.close.name(),
                mode
            );
        }
        assert!(connect(&["--close", "hang"], USER).is_ok());
    }

    #[test]
    fn inconsistent_flags_are_usage_errors() {
        assert!(matches!(
            connect(&["--hold", "1s"], ROOT),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(connect(&[":0"], USER), Err(Failure::Usage(_))));
        assert!(matches!(
            connect(&["--user-timeout", "0s"], USER),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        for argv in [
            &["connect", "--close", "bogus"][..],
            &["connect", "--after", "soon"],
            &["connect", "nowhere:99999"],
            &["serve", "--max-conns", "0"],
            &["connect", "--keepalive", "1,1"],
            &["lab", "--runs", "0"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("tcpbye").chain(argv.iter().copied()))
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }
}
