//! The `serve` and `connect` drivers: start the event loop on a plan, hand each
//! report to the printer, and say what went wrong in one line.

use std::io::{self, ErrorKind};
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::print::{Printer, StatusLine, tell};
use crate::engine::capture::Filter;
use crate::engine::timers::later;
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::{Capability, Failure, Outcome};
use crate::plan::{ConnectPlan, Family, OutputPlan, ServePlan, Target};
use crate::vocab::Verdict;

pub fn serve(plan: ServePlan) -> anyhow::Result<Outcome> {
    raise_fd_limit(plan.max_conns.unwrap_or(10_000));
    // A host name listens on its first address (of the family asked for).
    let addr = resolve(&plan.addr, plan.family)?[0];
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    // The capture is open (and its timestamps on) before anyone can connect.
    if let Some(file) = &plan.output.pcap {
        reactor.capture(Some(file), Filter { addr })?;
    }
    let local = reactor
        .listen(addr, plan.end.clone(), plan.max_conns)
        .map_err(|e| privileged_port(e, addr))?;
    reactor.set_capture_filter(Filter { addr: local })?;
    tell!("listening on {local}");
    let mut printer = Printer::new(plan.output.clone());
    let mut status = StatusLine::new();
    if status.wanted() {
        reactor.show_progress();
    }
    // `--once --timeout DUR`: no client within DUR ends the wait too, so that a
    // script that starts serve can never hang on it.
    let first_wait = plan.end.timeout.filter(|_| plan.once);
    let started = Instant::now();
    let mut accepted = false;
    let mut no_client = false;
    if let Some(wait) = first_wait {
        reactor.tell_accepts();
        // The clock keeps ticking after a client came: never more often than this.
        reactor.tick_every(wait.max(FIRST_WAIT_TICK_MIN));
    }
    let end = reactor.run(&mut |emit| {
        Ok(match emit {
            Emit::Accepted { .. } => {
                accepted = true;
                Flow::Continue
            }
            Emit::Tick(now) => {
                no_client =
                    !accepted && first_wait.is_some_and(|wait| now.duration_since(started) >= wait);
                if no_client {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
            Emit::Report(report) => {
                status.clear();
                if !printer.report(&report)? || plan.once {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
            Emit::Notice(text) => {
                status.clear();
                tell!("{text}");
                Flow::Continue
            }
            Emit::Acted { .. } | Emit::PeerKnown { .. } => Flow::Continue,
            Emit::Progress(line) => {
                status.show(&line);
                Flow::Continue
            }
        })
    })?;
    status.clear();
    tell_captured(&mut reactor, &plan.output, &mut printer);
    if no_client && let Some(wait) = first_wait {
        return Err(Failure::Runtime(format!(
            "serve --once: no client connected within {} (--timeout)",
            crate::report::fmt_us(crate::report::micros(wait))
        ))
        .into());
    }
    let full = reactor.accept_queue_full();
    if full > 0 {
        tell!(
            "the accept queue was full {full} times when serve came to accept: the kernel \
             drops handshakes then, so clients may have connected (and left) without \
             serve ever seeing them"
        );
    }
    Ok(printer.finish(end == RunEnd::Interrupted)?)
}

/// `--once --timeout`: the shortest period of the clock that ends the wait for
/// the first client.
const FIRST_WAIT_TICK_MIN: Duration = Duration::from_millis(10);

/// How long `--retry` waits between refused connects.
const RETRY_EVERY: Duration = Duration::from_millis(20);

pub fn connect(plan: ConnectPlan) -> anyhow::Result<Outcome> {
    let churn = plan.count > 1;
    if churn {
        raise_fd_limit(plan.concurrency);
    }
    let addrs = resolve(&plan.addr, plan.family)?;
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    if let Some(file) = &plan.output.pcap {
        // Whichever of the addresses answers: the port names the connection.
        let addr = match plan.addr {
            Target::Addr(addr) => addr,
            Target::Host { port, .. } => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
        };
        reactor.capture(Some(file), Filter { addr })?;
    }
    // The address being tried: a failed connect moves on to the next one.
    let mut next = 0;
    if churn {
        let (end, timeout) = (plan.end.clone(), plan.connect_timeout);
        reactor.churn(
            addrs[0],
            end,
            timeout,
            plan.count,
            plan.concurrency,
            plan.rate,
        );
    } else {
        reactor.connect(addrs[0], plan.end.clone(), plan.connect_timeout)?;
    }
    let mut printer = Printer::new(plan.output.clone());
    let mut failure = None;
    let mut status = StatusLine::new();
    if status.wanted() {
        reactor.show_progress();
    }
    // `--retry`: a refused connect is tried again until this deadline.
    let retry_until = plan.retry.map(|d| later(Instant::now(), d));
    let end = loop {
        let mut again = false;
        let more = next + 1 < addrs.len();
        let end = reactor.run(&mut |emit| {
            match emit {
                Emit::Progress(line) => status.show(&line),
                Emit::Report(report)
                    if !churn
                        && report.verdict.is_connect_failure()
                        && (more
                            || report.verdict == Verdict::Refused
                                && retry_until.is_some_and(|until| Instant::now() < until)) =>
                {
                    again = true;
                }
                Emit::Report(report) => {
                    status.clear();
                    let unexpected = !plan.output.expect.contains(&report.verdict);
                    if !churn && report.verdict.is_connect_failure() && unexpected {
                        let errno = report
                            .events
                            .iter()
                            .find_map(|e| e.errno.clone())
                            .unwrap_or_default();
                        failure = Some(format!(
                            "connect {}: {} ({errno}){}",
                            report.peer,
                            report.verdict,
                            other_family_hint(&report, &plan.addr)
                        ));
                    }
                    printer.report(&report)?;
                }
                Emit::Notice(text) => {
                    status.clear();
                    tell!("{text}");
                }
                Emit::Accepted { .. }
                | Emit::Tick(_)
                | Emit::Acted { .. }
                | Emit::PeerKnown { .. } => {}
            }
            Ok(Flow::Continue)
        })?;
        if !(again && end == RunEnd::Finished) {
            break end;
        }
        if more {
            next += 1;
        } else {
            // --retry: every address refused; start over after a pause.
            next = 0;
            std::thread::sleep(RETRY_EVERY);
        }
        reactor.connect(addrs[next], plan.end.clone(), plan.connect_timeout)?;
    };
    status.clear();
    tell_captured(&mut reactor, &plan.output, &mut printer);
    let code = printer.finish(end == RunEnd::Interrupted)?;
    if churn {
        let summary = &printer.summary;
        for errno in summary.connect_errors.keys() {
            if let Some(hint) = connect_error_hint(errno) {
                tell!("{errno}: {hint}");
            }
        }
        let expected = !plan.output.expect.is_empty() && summary.expect_met;
        if summary.established == 0
            && summary.connections > 0
            && end == RunEnd::Finished
            && !expected
        {
            let errors: Vec<String> = summary
                .connect_errors
                .iter()
                .map(|(e, n)| format!("{e} ×{n}"))
                .collect();
            failure = Some(format!(
                "connect {}: none of {} connections was established ({})",
                plan.addr,
                summary.connections,
                errors.join(", ")
            ));
        }
    }
    match failure {
        Some(failure) => Err(Failure::Runtime(failure).into()),
        None => Ok(code),
    }
}

/// For a connect refused on 127.0.0.1 while a server listens on the same port of
/// `[::1]` (`localhost` resolved to IPv4 only, say): where to find it instead.
fn other_family_hint(report: &crate::report::Report, target: &Target) -> String {
    let peer = report.peer;
    if report.verdict != Verdict::Refused
        || !(peer.is_ipv4() && peer.ip().is_loopback())
        || !crate::sys::listening_on_ipv6_loopback(peer.port())
    {
        return String::new();
    }
    match target {
        Target::Host { host, .. } => format!(
            "; something listens on [::1]:{port}: try -6 (`connect -6 {host}:{port}`)",
            port = peer.port()
        ),
        Target::Addr(_) => format!(
            "; something listens on [::1]:{port}: try `connect [::1]:{port}`",
            port = peer.port()
        ),
    }
}

/// EACCES from listening is a port below `net.ipv4.ip_unprivileged_port_start`
/// without CAP_NET_BIND_SERVICE: a missing privilege, not a runtime failure.
pub(super) fn privileged_port(err: anyhow::Error, addr: SocketAddr) -> anyhow::Error {
    let denied = err
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == ErrorKind::PermissionDenied);
    if denied {
        Failure::Privilege {
            what: format!("bind {addr}"),
            capability: Capability::NetBindService,
        }
        .into()
    } else {
        err
    }
}

/// Says where the capture went, and what the kernel dropped of it; the latter
/// goes to the summary too.
fn tell_captured(reactor: &mut Reactor, plan: &OutputPlan, printer: &mut Printer) {
    if let (Some(file), Some(n)) = (&plan.pcap, reactor.captured()) {
        let path = &file.path;
        tell!("wrote {n} packets to {}", path.display());
        let dropped = reactor.capture_dropped();
        if let Some(dropped) = dropped.filter(|d| *d > 0) {
            tell!(
                "the capture fell behind: the kernel dropped {dropped} packets, missing from {} and from the reports",
                path.display()
            );
        }
        printer.summary.pcap_dropped = dropped;
    }
}

/// What to do about a connect() error seen while churning.
fn connect_error_hint(errno: &str) -> Option<&'static str> {
    match errno {
        "EADDRNOTAVAIL" => Some(
            "ephemeral ports exhausted (TIME_WAIT builds up after many fin closes): lower --rate, close with --close rst, or widen net.ipv4.ip_local_port_range",
        ),
        "EMFILE" | "ENFILE" => {
            Some("out of file descriptors: raise `ulimit -n` or lower --concurrency")
        }
        "ECONNREFUSED" => Some("nothing listens there (or its backlog overflowed)"),
        _ => None,
    }
}

/// Raises the soft open-file limit to the hard one; says so when even that is low.
fn raise_fd_limit(wanted: usize) {
    // Descriptors tcpbye itself holds: stdio, epoll, signalfd, listener or capture.
    const OWN_FDS: u64 = 8;
    match crate::sys::raise_fd_limit() {
        Ok((_, hard)) if hard < wanted as u64 + OWN_FDS => tell!(
            "the open-file limit is {hard}: at most about {} connections at once (raise it with `ulimit -Hn`)",
            hard.saturating_sub(OWN_FDS)
        ),
        Ok(_) => {}
        Err(e) => tell!("cannot raise the open-file limit: {e}"),
    }
}

/// The addresses of `target` of `family`, in the resolver's order; a host name
/// that does not resolve (or has no address of the family) is a runtime failure.
pub(super) fn resolve(target: &Target, family: Family) -> Result<Vec<SocketAddr>, Failure> {
    let (host, port) = match target {
        Target::Addr(addr) => return Ok(vec![*addr]),
        Target::Host { host, port } => (host.as_str(), *port),
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Failure::Runtime(format!("cannot resolve '{host}': {e}")))?
        .filter(|a| family.admits(a))
        .collect();
    if addrs.is_empty() {
        let which = match family {
            Family::V4 => "no IPv4 address",
            Family::V6 => "no IPv6 address",
            Family::Any => "no address",
        };
        return Err(Failure::Runtime(format!("'{host}' has {which}")));
    }
    Ok(addrs)
}
