//! The one place where command-line arguments become validated plans: every
//! cross-flag rule, default and privilege check lives here.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    BenchPlan, CheckPidPlan, CheckPlan, ConnectPlan, DEFAULT_HOST, DEFAULT_PORT, Detection,
    EndPlan, Family, Format, History, InspectPlan, InspectTarget, LabPlan, OutputPlan, PathPlan,
    PcapFile, Plan, Privileges, ServePlan, Target,
};
use crate::cli::{
    BenchArgs, CheckArgs, Command, ConnectArgs, DetectArgs, EndArgs, FamilyArgs, InspectArgs,
    LabArgs, OutputArgs, PathArgs, ServeArgs,
};
use crate::error::{Capability, Failure};
use crate::vocab::{CheckEnding, CloseMode, PathTest, Setting};

/// Turns a parsed command into its validated plan.
pub fn build(command: Command, privileges: Privileges) -> Result<Plan, Failure> {
    Ok(match command {
        Command::Serve(args) => Plan::Serve(serve_plan(args, privileges)?),
        Command::Connect(args) => Plan::Connect(connect_plan(args, privileges)?),
        Command::Lab(args) => Plan::Lab(lab_plan(args)?),
        Command::Bench(args) => Plan::Bench(bench_plan(args)),
        Command::Check(args) if args.pid.is_some() => Plan::CheckPid(check_pid_plan(args)?),
        Command::Check(args) => Plan::Check(check_plan(args, privileges)?),
        Command::Inspect(args) => Plan::Inspect(inspect_plan(args)?),
        Command::Path(args) => Plan::Path(path_plan(args)?),
        Command::Completions { shell } => Plan::Text(crate::cli::completions(shell)),
        Command::Man => Plan::Text(
            crate::cli::man_page().map_err(|e| Failure::Runtime(format!("the man page: {e}")))?,
        ),
    })
}

/// Validates `serve` arguments into a plan.
pub fn serve_plan(args: ServeArgs, privileges: Privileges) -> Result<ServePlan, Failure> {
    let addr = args.addr.unwrap_or(default_addr());
    let family = family(&args.family, &addr)?;
    let mut end = end_plan(args.end, args.detect, CloseMode::None, privileges)?;
    end.path_greetings = true;
    if args.summary {
        // Only the summary is printed: sock_diag readings would be read and thrown away.
        end.peer_side = false;
        end.linger_watch = Duration::ZERO;
    }
    let output = OutputPlan {
        summary_only: args.summary,
        ..output_plan(args.output, privileges)?
    };
    // Only JSON reports and ladders show a whole timeline: keep a few KB otherwise.
    if output.summary_only || !matches!(output.format, Format::Json | Format::Ladder) {
        end.history = History::Compact;
    }
    Ok(ServePlan {
        addr,
        family,
        once: args.once,
        max_conns: Some(args.max_conns as usize),
        end,
        output,
    })
}

/// Validates `connect` arguments into a plan.
pub fn connect_plan(args: ConnectArgs, privileges: Privileges) -> Result<ConnectPlan, Failure> {
    let addr = args.addr.unwrap_or(default_addr());
    let family = family(&args.family, &addr)?;
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
    if args.count > 1 && args.retry.is_some() {
        return Err(Failure::Usage(
            "--retry applies to one connection; with --count N refused connects are counted".into(),
        ));
    }
    if args.count > 1 && args.output.ladder {
        // Churn prints one summary, no per-connection report to draw.
        return Err(Failure::Usage(
            "--ladder draws one connection; it does not apply with --count N (N > 1)".into(),
        ));
    }
    // Churn reports only a summary: sock_diag readings and the local address
    // would be read and thrown away.
    let end = if args.count > 1 {
        EndPlan {
            peer_side: false,
            linger_watch: Duration::ZERO,
            local_addr: false,
            ..end
        }
    } else {
        end
    };
    Ok(ConnectPlan {
        addr,
        family,
        connect_timeout: args.connect_timeout,
        retry: args.retry,
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

fn default_addr() -> Target {
    Target::Addr(SocketAddr::new(DEFAULT_HOST, DEFAULT_PORT))
}

/// `-4`/`-6`: which addresses of a host name to use; an IP address of the other
/// family contradicts it.
fn family(args: &FamilyArgs, addr: &Target) -> Result<Family, Failure> {
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => Family::V4,
        (_, true) => Family::V6,
        _ => Family::Any,
    };
    match addr {
        Target::Addr(ip) if !family.admits(ip) => Err(Failure::Usage(format!(
            "{ip} is not an address of the family -{} asks for",
            if family == Family::V4 { 4 } else { 6 }
        ))),
        _ => Ok(family),
    }
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
    if end.hold.is_some() && !close.holds_socket() {
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
        local_addr: true,
        ..EndPlan::default()
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
        format: if args.json {
            Format::Json
        } else if args.ladder {
            Format::Ladder
        } else if args.brief {
            Format::Brief
        } else {
            Format::Table
        },
        pcap: args.pcap.map(|path| PcapFile {
            path,
            replace: args.force,
        }),
        summary_only: false,
        expect: args.expect,
        expect_within: args.expect_within,
    })
}

/// Validates `path` arguments into a plan.
pub fn path_plan(args: PathArgs) -> Result<PathPlan, Failure> {
    if args.addr.port() == 0 {
        return Err(Failure::Usage(format!(
            "path {}: port 0 cannot be connected to",
            args.addr
        )));
    }
    let tests = if args.tests.is_empty() {
        PathTest::ALL.to_vec()
    } else {
        args.tests
    };
    let mut endings = Vec::new();
    for test in tests.iter().filter(|t| **t != PathTest::Idle) {
        if !endings.contains(test) {
            endings.push(*test);
        }
    }
    let idle = tests.contains(&PathTest::Idle);
    if args.wait.is_zero() {
        return Err(Failure::Usage("--wait must be more than 0s".into()));
    }
    // TCP_USER_TIMEOUT (the black-hole bound) counts whole milliseconds.
    if args.wait < Duration::from_millis(100) {
        return Err(Failure::Usage("--wait must be at least 100ms".into()));
    }
    // `--max-idle` and `--idle-ladder` are at least 1 ms (`parse::parse_period`).
    let mut ladder = args.idle_ladder;
    if !ladder.is_empty() && !idle {
        return Err(Failure::Usage(
            "--idle-ladder needs the idle test (--tests …,idle)".into(),
        ));
    }
    if ladder.is_empty() {
        ladder = super::ladder::first_ladder(args.max_idle);
    }
    ladder.sort();
    ladder.dedup();
    if ladder.len() > 64 {
        return Err(Failure::Usage(
            "--idle-ladder: at most 64 idle periods".into(),
        ));
    }
    if args.expect_faithful && endings.is_empty() {
        return Err(Failure::Usage(
            "--expect-faithful needs an ending test (fin, rst, half or rst-unread)".into(),
        ));
    }
    if args.confirm_keepalive && !idle {
        return Err(Failure::Usage(
            "--confirm-keepalive needs the idle test (--tests …,idle)".into(),
        ));
    }
    if args.expect_idle_over.is_some() && !idle {
        return Err(Failure::Usage(
            "--expect-idle-over needs the idle test (--tests …,idle)".into(),
        ));
    }
    Ok(PathPlan {
        addr: args.addr,
        endings,
        idle,
        wait: args.wait,
        max_idle: ladder.last().copied().unwrap_or(args.max_idle),
        ladder,
        format: if args.json {
            Format::Json
        } else {
            Format::Table
        },
        expect_faithful: args.expect_faithful,
        expect_idle_over: args.expect_idle_over,
        confirm_keepalive: args.confirm_keepalive,
    })
}

/// Validates `check` arguments into a plan.
pub fn check_plan(args: CheckArgs, privileges: Privileges) -> Result<CheckPlan, Failure> {
    let addr = args
        .addr
        .clone()
        .ok_or_else(|| Failure::Usage("check: ADDR or --pid PID is needed".into()))?;
    // clap lets `requires = "pid"` pass when ADDR, which --pid conflicts with, is given.
    if args.peer.is_some() || args.dry_run {
        return Err(Failure::Usage(
            "check: --peer and --dry-run go with --pid PID (a running program), not with ADDR"
                .into(),
        ));
    }
    if addr.port() == 0 && !args.listen {
        return Err(Failure::Usage(format!(
            "check {addr}: port 0 cannot be connected to"
        )));
    }
    let modes_given = !args.modes.is_empty();
    let (modes, left_out): (Vec<CloseMode>, Vec<CloseMode>) = if args.modes.is_empty() {
        CheckEnding::ALL
            .into_iter()
            .map(|ending| ending.0)
            .partition(|m| privileges.net_admin || !m.needs_net_admin())
    } else {
        let mut modes = Vec::new();
        for &CheckEnding(mode) in &args.modes {
            if mode.needs_net_admin() && !privileges.net_admin {
                return Err(Failure::Privilege {
                    what: format!("check --modes {mode}"),
                    capability: Capability::NetAdmin,
                });
            }
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        (modes, Vec::new())
    };
    let limits = waits_and_limits(&args, &modes)?;
    Ok(CheckPlan {
        addr,
        listen: args.listen,
        wait_client: args.wait_client,
        modes,
        request: args.request.map(|r| r.0).unwrap_or_default(),
        send: args.send.unwrap_or(0),
        wait: args.wait,
        wait_silent: args.wait_silent,
        format: if args.json {
            Format::Json
        } else if args.brief {
            Format::Brief
        } else {
            Format::Table
        },
        expect_noticed: limits,
        expect_no_leak: args.expect_no_leak,
        capture: privileges.net_raw,
        modes_given,
        left_out,
        leave_open: args.leave_open,
    })
}

/// The endings `check --pid` can do to a running program's connection, in the
/// order connections are handed out when `--modes` is not given: every one but
/// `reboot` (its peer's socket cannot vanish without a packet) and `rst-unread`.
const PID_MODES: [CloseMode; 5] = [
    CloseMode::Fin,
    CloseMode::Half,
    CloseMode::Rst,
    CloseMode::Drop,
    CloseMode::Hang,
];

/// Validates `check --pid` arguments into a plan. No capability is checked here:
/// what is allowed depends on whose the program and its peer are, which only
/// trying tells (exit 4 then, with the step refused).
fn check_pid_plan(args: CheckArgs) -> Result<CheckPidPlan, Failure> {
    let pid = args
        .pid
        .ok_or_else(|| Failure::Usage("check: --pid PID is needed".into()))?;
    let mut modes = Vec::new();
    if args.modes.is_empty() {
        modes.extend(PID_MODES);
    }
    for &CheckEnding(mode) in &args.modes {
        if !PID_MODES.contains(&mode) {
            return Err(Failure::Usage(format!(
                "check --pid --modes {mode}: a running program's connection cannot end that way \
                 (its peer's socket cannot vanish without a packet while a program holds it); \
                 --pid takes {}",
                PID_MODES.map(CloseMode::name).join(",")
            )));
        }
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    let limits = waits_and_limits(&args, &modes)?;
    Ok(CheckPidPlan {
        pid,
        peer: args.peer,
        dry_run: args.dry_run,
        modes,
        wait: args.wait,
        wait_silent: args.wait_silent,
        format: if args.json {
            Format::Json
        } else if args.brief {
            Format::Brief
        } else {
            Format::Table
        },
        expect_noticed: limits,
        expect_no_leak: args.expect_no_leak,
        leave_open: args.leave_open,
    })
}

/// Validates `inspect` arguments into a plan: one of PID and `--port` (clap
/// already asks for exactly one).
fn inspect_plan(args: InspectArgs) -> Result<InspectPlan, Failure> {
    let target = match (args.pid, args.port) {
        (Some(pid), None) => InspectTarget::Pid(pid),
        (None, Some(port)) => InspectTarget::Port(port),
        _ => {
            return Err(Failure::Usage(
                "inspect: give a PID or --port PORT, not both".into(),
            ));
        }
    };
    Ok(InspectPlan {
        target,
        format: if args.json {
            Format::Json
        } else {
            Format::Table
        },
    })
}

/// Validates `lab` arguments into a plan.
fn lab_plan(args: LabArgs) -> Result<LabPlan, Failure> {
    if args.modes.contains(&CloseMode::None) {
        return Err(Failure::Usage(
            "lab --modes: `none` does not end a connection; name modes such as fin,rst,drop".into(),
        ));
    }
    let mut modes: Vec<CloseMode> = if args.modes.is_empty() {
        CloseMode::ENDINGS.to_vec()
    } else {
        args.modes.clone()
    };
    let mut seen = Vec::new();
    modes.retain(|m| {
        let first = !seen.contains(m);
        seen.push(*m);
        first
    });
    let mut settings = if args.settings.is_empty() {
        Setting::ALL.to_vec()
    } else {
        args.settings.clone()
    };
    settings.sort();
    settings.dedup();
    Ok(LabPlan {
        modes,
        settings,
        runs: args.runs,
        format: if args.json {
            Format::Json
        } else {
            Format::Table
        },
    })
}

/// Validates `bench` arguments into a plan.
fn bench_plan(args: BenchArgs) -> BenchPlan {
    BenchPlan {
        samples: args.samples,
        churn: args.churn,
        idle: args.idle as usize,
        idle_seconds: args.idle_seconds,
        fin_churn: args.fin_churn,
        runs: args.runs,
        slow: args.slow as usize,
        controls: args.controls as usize,
        hostile_seconds: args.hostile_seconds,
        only: args.only,
        exe: args.exe,
        format: if args.json {
            Format::Json
        } else {
            Format::Table
        },
    }
}

/// `check`'s waits (each more than 0s) and its `--expect-noticed-within`, which
/// may name only the modes checked.
fn waits_and_limits(
    args: &CheckArgs,
    modes: &[CloseMode],
) -> Result<crate::values::NoticeLimits, Failure> {
    if args.wait.is_zero()
        || args.wait_silent.is_some_and(|w| w.is_zero())
        || args.wait_client.is_zero()
    {
        return Err(Failure::Usage(
            "--wait, --wait-silent and --wait-client must be more than 0s".into(),
        ));
    }
    let limits = args.expect_noticed_within.clone().unwrap_or_default();
    if let Some((mode, _)) = limits.per_mode.iter().find(|(m, _)| !modes.contains(m)) {
        return Err(Failure::Usage(format!(
            "--expect-noticed-within names {mode}, which is not among the modes checked"
        )));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::vocab::Verdict;

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

    fn check(argv: &[&str], p: Privileges) -> Result<CheckPlan, Failure> {
        let cli = Cli::try_parse_from(["tcpbye", "check"].iter().chain(argv)).expect("parses");
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        check_plan(args, p)
    }

    #[test]
    fn check_pid_takes_a_running_program_and_its_own_modes() {
        let pid = |argv: &[&str]| {
            let cli = Cli::try_parse_from(["tcpbye", "check"].iter().chain(argv))?;
            let Command::Check(args) = cli.command else {
                panic!("not check")
            };
            Ok::<_, clap::Error>(build(Command::Check(args), USER))
        };
        // No capability is asked for up front: filters need none.
        let Ok(Ok(Plan::CheckPid(p))) = pid(&["--pid", "42"]) else {
            panic!("a check --pid plan")
        };
        assert_eq!(
            p.modes,
            [
                CloseMode::Fin,
                CloseMode::Half,
                CloseMode::Rst,
                CloseMode::Drop,
                CloseMode::Hang
            ]
        );
        assert!(!p.dry_run && p.peer.is_none());
        let Ok(Ok(Plan::CheckPid(p))) = pid(&[
            "--pid",
            "42",
            "--peer",
            "127.0.0.1:6379",
            "--modes",
            "rst,drop,rst",
            "--dry-run",
        ]) else {
            panic!("a check --pid plan")
        };
        assert_eq!(p.modes, [CloseMode::Rst, CloseMode::Drop]);
        assert!(p.dry_run);
        let peer = p.peer.expect("a peer");
        assert!(peer.matches("[::ffff:127.0.0.1]:6379".parse().unwrap()));
        assert!(!peer.matches("127.0.0.1:6380".parse().unwrap()));
        // An IP alone: any port.
        let Ok(Ok(Plan::CheckPid(p))) = pid(&["--pid", "42", "--peer", "10.0.0.1"]) else {
            panic!("a check --pid plan")
        };
        assert!(
            p.peer
                .expect("a peer")
                .matches("10.0.0.1:1".parse().unwrap())
        );
        // reboot: a usage error that says why.
        let Ok(Err(Failure::Usage(why))) = pid(&["--pid", "42", "--modes", "reboot"]) else {
            panic!("reboot refused")
        };
        assert!(why.contains("cannot end that way"), "{why}");
        // Flags that belong to --pid, or not with it: clap refuses them.
        for argv in [
            &["--pid", "42", "127.0.0.1:6379"][..],
            &["--pid", "42", "--listen"],
            &["--pid", "42", "--request", "PING"],
            &["--pid", "0"],
            &["127.0.0.1:6379", "--peer", "127.0.0.1:1"],
            &["127.0.0.1:6379", "--dry-run"],
            &["--pid", "42", "--peer", "localhost:1"],
            &[],
        ] {
            assert!(
                matches!(pid(argv), Err(_) | Ok(Err(Failure::Usage(_)))),
                "{argv:?} parsed"
            );
        }
    }

    #[test]
    fn check_modes_follow_privileges() {
        use CloseMode::*;
        let user = check(&["127.0.0.1:6379"], USER).unwrap();
        assert_eq!(user.modes, vec![Fin, Half, Rst, Hang]);
        assert_eq!(user.left_out, vec![Drop, Reboot]);
        assert_eq!(user.wait, Duration::from_secs(10));
        let root = check(&["127.0.0.1:6379"], ROOT).unwrap();
        assert_eq!(root.modes, vec![Fin, Half, Rst, Drop, Reboot, Hang]);
        assert!(root.left_out.is_empty());
        assert!(!root.leave_open);
        assert!(
            check(&["127.0.0.1:6379", "--leave-open"], ROOT)
                .unwrap()
                .leave_open
        );
        // Named modes are what was asked for: nothing is "left out" then.
        let named = check(&["127.0.0.1:6379", "--modes", "fin,hang"], USER).unwrap();
        assert!(named.left_out.is_empty());
        assert!(matches!(
            check(&["127.0.0.1:6379", "--modes", "fin,drop"], USER),
            Err(Failure::Privilege { .. })
        ));
        // `check --modes` offers only the endings it judges: clap itself refuses the rest.
        for other in ["rst-unread", "none"] {
            let argv = ["tcpbye", "check", "127.0.0.1:6379", "--modes", other];
            let err = Cli::try_parse_from(argv).expect_err(other);
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue, "{other}");
        }
        assert!(matches!(
            check(
                &[
                    "127.0.0.1:6379",
                    "--modes",
                    "fin",
                    "--expect-noticed-within",
                    "drop=1s"
                ],
                ROOT
            ),
            Err(Failure::Usage(_))
        ));
        let p = check(
            &[
                "127.0.0.1:6379",
                "--request",
                "PING\\r\\n",
                "--wait",
                "3s",
                "--expect-no-leak",
            ],
            USER,
        )
        .unwrap();
        assert_eq!(p.request, b"PING\r\n");
        assert_eq!(p.wait, Duration::from_secs(3));
        assert!(p.expect_no_leak);
    }

    #[test]
    fn defaults() {
        let s = serve(&[], USER).unwrap();
        assert_eq!(s.addr, Target::Addr("127.0.0.1:7007".parse().unwrap()));
        assert_eq!(s.end.close, CloseMode::None);
        assert!(s.end.probe && !s.once && s.max_conns == Some(10_000));
        assert_eq!(s.end.history, History::Compact);
        let c = connect(&[], USER).unwrap();
        assert_eq!(c.addr, Target::Addr("127.0.0.1:7007".parse().unwrap()));
        assert_eq!(c.end.close, CloseMode::Fin);
        assert_eq!(c.connect_timeout, std::time::Duration::from_secs(5));
        assert!(c.end.local_addr && c.end.peer_side);
        let churn = connect(&["--count", "3"], USER).unwrap();
        assert!(!churn.end.local_addr && !churn.end.peer_side && churn.output.summary_only);
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
        assert_eq!(c.addr, Target::Addr("[::1]:9".parse().unwrap()));
        assert_eq!(c.end.close, CloseMode::RstUnread);
        assert_eq!(c.end.after.as_millis(), 250);
        assert_eq!(c.end.send, 4096);
        assert_eq!(c.end.detection.keepalive.unwrap().interval.as_secs(), 2);
        let s = serve(&[":0", "--once", "--expect", "fin,rst", "--json"], USER).unwrap();
        assert_eq!(s.output.expect, vec![Verdict::Fin, Verdict::Rst]);
        assert!(s.output.format == Format::Json && s.once);
        assert_eq!(s.end.history, History::Full);
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
            connect(&["--retry", "1s", "--count", "2"], USER),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            connect(&["--user-timeout", "0s"], USER),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            connect(&["--count", "2", "--ladder"], USER),
            Err(Failure::Usage(m)) if m.contains("--ladder")
        ));
        assert!(connect(&["--count", "1", "--ladder"], USER).is_ok());
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
            // Periods below 1 ms (busy write loops) are refused by their parser.
            &["path", "127.0.0.1:7007", "--max-idle", "0s"],
            &["path", "127.0.0.1:7007", "--idle-ladder", "1s,0s"],
            &["connect", "--send-every", "0.0000001"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("tcpbye").chain(argv.iter().copied()))
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    fn path(argv: &[&str]) -> Result<PathPlan, Failure> {
        let cli = Cli::try_parse_from(["tcpbye", "path"].iter().chain(argv)).expect("parses");
        let Command::Path(args) = cli.command else {
            panic!("not path")
        };
        path_plan(args)
    }

    #[test]
    fn path_plans() {
        let s = Duration::from_secs;
        let plan = path(&["127.0.0.1:7007"]).expect("defaults");
        assert_eq!(
            plan.endings,
            vec![
                PathTest::Fin,
                PathTest::Rst,
                PathTest::Half,
                PathTest::RstUnread
            ]
        );
        assert!(plan.idle);
        assert_eq!(plan.wait, s(3));
        assert_eq!(plan.max_idle, s(600));
        assert_eq!(plan.ladder.len(), 8);
        assert_eq!(plan.ladder.last(), Some(&s(600)));
        assert_eq!(plan.format, Format::Table);

        let plan = path(&["127.0.0.1:7007", "--idle-ladder", "4s,1s,4s", "--json"])
            .expect("an explicit ladder");
        assert_eq!(plan.ladder, vec![s(1), s(4)]);
        assert_eq!(plan.max_idle, s(4));
        assert_eq!(plan.format, Format::Json);

        let plan = path(&["127.0.0.1:7007", "--tests", "rst,fin,rst"]).expect("endings only");
        assert_eq!(plan.endings, vec![PathTest::Rst, PathTest::Fin]);
        assert!(!plan.idle);

        for (argv, words) in [
            (&["127.0.0.1:0"][..], "port 0"),
            (&["127.0.0.1:7007", "--wait", "50ms"], "at least 100ms"),
            (
                &["127.0.0.1:7007", "--tests", "fin", "--idle-ladder", "1s"],
                "idle test",
            ),
            (
                &["127.0.0.1:7007", "--tests", "idle", "--expect-faithful"],
                "ending test",
            ),
            (
                &["127.0.0.1:7007", "--tests", "rst", "--confirm-keepalive"],
                "idle test",
            ),
        ] {
            match path(argv) {
                Err(Failure::Usage(text)) => assert!(text.contains(words), "{text}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }
}
