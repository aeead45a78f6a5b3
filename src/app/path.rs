//! `tcpbye path ADDR`: test connections to a `tcpbye serve` through the path,
//! all at once on one event loop — each ending in both directions, then the idle
//! ladders — and the far end's view of each, asked over control connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::print::{self, tell};
use crate::engine::path::{self as protocol};
use crate::engine::{Emit, Flow, Reactor, RunEnd};
use crate::error::{Failure, Outcome};
use crate::judge::path as judge;
use crate::plan::{EndPlan, Family, KeepAlive, PathPlan, recipe};
use crate::report::micros;
use crate::report::path::{self as model, FarMissing, FarView, PathCase, PathResult, PathRun};
use crate::report::{Report, SCHEMA};
use crate::vocab::{Direction, PathTest};

/// How often a question is asked while the far end answers `path-busy` (all its
/// control slots taken), and the first pause between tries (doubling after each):
/// 3.75 s in all, past the 2 s in which serve closes a slot held without a question.
const BUSY_TRIES: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_millis(250);

/// The least time a test connection's connect() is given.
const CONNECT_MIN: Duration = Duration::from_secs(4);

/// One test connection to make.
struct Spec {
    token: String,
    direction: Direction,
    test: PathTest,
    /// The idle period (`idle` only) and which ladder it is on.
    idle: Option<(Duration, u32)>,
    plan: EndPlan,
}

impl Spec {
    /// The test in the judge's plain values.
    fn which(&self) -> judge::Which<'_> {
        judge::Which {
            token: &self.token,
            direction: self.direction,
            test: self.test,
            idle: self.idle,
        }
    }
}

/// Runs `tcpbye path` and prints the tables or JSON Lines.
pub fn path(plan: &PathPlan) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let addr = super::serve::resolve(&plan.addr, Family::Any)?[0];
    hello(addr, plan.wait)?;
    let mut reactor = Reactor::new()?;
    reactor.catch_signals()?;
    let mut tokens = Tokens::new()?;
    let mut cases = Vec::new();
    let mut interrupted = false;

    // One direction at a time: a proxy's accept queue can be short (socat's
    // holds 5), and a handshake it drops costs a SYN retransmission (1 s).
    for direction in [Direction::NearToFar, Direction::FarToNear] {
        if plan.endings.is_empty() || interrupted {
            break;
        }
        let specs = plan
            .endings
            .iter()
            .map(|&test| {
                let token = tokens.next()?;
                let plan = recipe::path_ending(
                    direction,
                    test,
                    protocol::greeting(&token, direction, test),
                    protocol::MARK.to_vec(),
                    plan.wait,
                );
                Ok(Spec {
                    token,
                    direction,
                    test,
                    idle: None,
                    plan,
                })
            })
            .collect::<anyhow::Result<Vec<Spec>>>()?;
        let (reports, end) = run_specs(&mut reactor, addr, &specs, plan.wait)?;
        interrupted = end == RunEnd::Interrupted;
        // Interrupted: what the far end saw so far, without waiting for more.
        let far_wait = if interrupted {
            Duration::ZERO
        } else {
            plan.wait
        };
        let fars = ask_all(addr, &specs, far_wait, plan.wait);
        for spec in &specs {
            let near = reports.get(&spec.token);
            let case = judge::ending(spec.which(), near, far_of(&fars, &spec.token));
            cases.push(judge::cut_short(case, near, interrupted));
        }
    }

    let mut bracket = None;
    if plan.idle && !interrupted {
        let (first, end) =
            run_ladder(&mut reactor, addr, plan, &plan.ladder, 1, None, &mut tokens)?;
        interrupted = end == RunEnd::Interrupted;
        cases.extend(first);
        bracket = judge::bracket(&judge::idle_results(&cases));
        let second = bracket
            .and_then(|b| b.hi.map(|hi| crate::plan::ladder::refine(b.lo, hi)))
            .unwrap_or_default();
        if !second.is_empty() && !interrupted {
            let (more, end) = run_ladder(&mut reactor, addr, plan, &second, 2, None, &mut tokens)?;
            interrupted = end == RunEnd::Interrupted;
            cases.extend(more);
            bracket = judge::bracket(&judge::idle_results(&cases));
        }
    }

    let advice = bracket.as_ref().and_then(judge::advice);
    // `--confirm-keepalive`: the advice tried, past the timeout (ladder 3, which
    // the bracket leaves out): the advised keepalive, or where the advice says
    // keepalive will not help, the one the bracket gives.
    let mut confirmed = None;
    let mut tried = None;
    if let (true, false, Some(b), Some(advice)) = (
        plan.confirm_keepalive,
        interrupted,
        bracket,
        advice.as_ref(),
    ) && let Some(hi) = b.hi
    {
        let ka = judge::keepalive_to_try(&b, advice);
        tried = Some(ka);
        let keepalive = KeepAlive {
            idle: Duration::from_secs(ka.idle_s),
            interval: Duration::from_secs(ka.intvl_s),
            count: ka.cnt,
        };
        let (more, end) = run_ladder(
            &mut reactor,
            addr,
            plan,
            &[hi * 2],
            3,
            Some(keepalive),
            &mut tokens,
        )?;
        interrupted = end == RunEnd::Interrupted;
        confirmed = more.first().map(|c| c.result == PathResult::Delivered);
        cases.extend(more);
    }
    let endings = cases.iter().filter(|c| c.test != PathTest::Idle).count();
    let faithful = cases
        .iter()
        .filter(|c| c.test != PathTest::Idle && c.result == PathResult::Faithful)
        .count();
    let mut summary = model::PathSummary {
        schema: SCHEMA,
        kind: "path-summary",
        target: addr.to_string(),
        wait_us: micros(plan.wait),
        max_idle_us: micros(plan.max_idle),
        elapsed_us: micros(started.elapsed()),
        endings,
        faithful,
        failed: cases
            .iter()
            .filter(|c| c.result == PathResult::Failed)
            .count(),
        idle_timeout_min_us: bracket.map(|b| micros(b.lo)),
        idle_timeout_max_us: bracket.and_then(|b| b.hi).map(micros),
        idle_behaviour: bracket.and_then(|b| b.behaviour),
        keepalive: advice.as_ref().and_then(|a| a.keepalive),
        advice: advice.map(|a| a.text),
        keepalive_tried: tried,
        keepalive_confirmed: confirmed,
        misses: Vec::new(),
        interrupted,
    };
    summary.misses = judge::misses(
        &cases,
        &summary,
        plan.expect_faithful,
        plan.expect_idle_over,
    );
    for what in &summary.misses {
        print::miss(what);
    }
    let missed = !summary.misses.is_empty();
    let failed = summary.failed;
    if failed > 0 && !interrupted {
        let were = if failed == 1 { "was" } else { "were" };
        tell!(
            "path {addr}: {failed} of {} tests failed and {were} not judged (the notes say why)",
            cases.len()
        );
    }
    print::path(&PathRun { cases, summary }, plan.format)?;
    // A failed test is a measurement tcpbye could not make: that is exit 3, not
    // a verdict on the path (1), even where an expectation missed because of it.
    Ok(Outcome {
        interrupted,
        failed: failed > 0,
        missed,
    })
}

/// Asks the far end `HELLO` before anything else: nothing listening, or a
/// program that is not a tcpbye serve, is one clear line and exit 3.
fn hello(addr: SocketAddr, wait: Duration) -> Result<(), Failure> {
    let answer = ask_while_busy(addr, "HELLO", wait, true).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "nothing listens there".to_owned(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "no answer within {} (is `tcpbye serve` running there?)",
                print_us(wait)
            ),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                "not a tcpbye serve: it ended the control connection without answering (RST)"
                    .to_owned()
            }
            _ => e.to_string(),
        };
        Failure::Runtime(format!("path {addr}: {why}"))
    })?;
    let hello = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .filter(|v| v["kind"] == "path-hello");
    match hello {
        Some(v) if v["version"] == protocol::VERSION => Ok(()),
        Some(v) => {
            let theirs = match &v["version"] {
                serde_json::Value::Null => "no version".to_owned(),
                other => format!(
                    "version {}",
                    other.to_string().chars().take(20).collect::<String>()
                ),
            };
            Err(Failure::Runtime(format!(
                "path {addr}: the far end speaks {theirs} of the path protocol, this tcpbye \
                 speaks version {}: run the same tcpbye release at both ends",
                protocol::VERSION
            )))
        }
        None if protocol::is_busy(&answer) => Err(Failure::Runtime(format!(
            "path {addr}: the far end is busy: all its control connections were taken \
             each of {BUSY_TRIES} times it was asked; try again later"
        ))),
        None if answer.is_empty() => Err(Failure::Runtime(format!(
            "path {addr}: not a tcpbye serve: it ended the control connection without answering"
        ))),
        None => {
            let shown: String = answer.chars().take(40).collect();
            Err(Failure::Runtime(format!(
                "path {addr}: not a tcpbye serve: it answered the control greeting with {shown:?}"
            )))
        }
    }
}

/// Asks `question`, and again after a pause (doubling) while the far end
/// answers `path-busy`, at most [`BUSY_TRIES`] times; returns the last answer.
/// `say`: tell the user the first time the far end is busy.
fn ask_while_busy(
    addr: SocketAddr,
    question: &str,
    wait: Duration,
    say: bool,
) -> std::io::Result<String> {
    let mut pause = BUSY_PAUSE;
    let mut attempt = 1;
    loop {
        let answer = protocol::ask(addr, question, wait)?;
        if !protocol::is_busy(&answer) || attempt >= BUSY_TRIES {
            return Ok(answer);
        }
        if say && attempt == 1 {
            tell!(
                "path {addr}: the far end is busy (all its control connections taken); \
                 asking again, up to {} more times",
                BUSY_TRIES - 1
            );
        }
        std::thread::sleep(pause);
        pause *= 2;
        attempt += 1;
    }
}

fn print_us(d: Duration) -> String {
    crate::report::fmt_us(micros(d))
}

/// Tokens for test connections: 128 random bits each (32 hex digits, the
/// longest token), so that nobody who can reach the far end can guess one and
/// read or take over this run's reports.
struct Tokens {
    random: std::fs::File,
}

impl Tokens {
    fn new() -> anyhow::Result<Self> {
        let random = std::fs::File::open("/dev/urandom").context("open /dev/urandom")?;
        Ok(Self { random })
    }

    fn next(&mut self) -> anyhow::Result<String> {
        use std::io::Read;
        let mut bits = [0u8; 16];
        self.random
            .read_exact(&mut bits)
            .context("read /dev/urandom")?;
        Ok(bits.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Runs one idle ladder: a connection per step, all at once.
fn run_ladder(
    reactor: &mut Reactor,
    addr: SocketAddr,
    plan: &PathPlan,
    steps: &[Duration],
    ladder: u32,
    keepalive: Option<KeepAlive>,
    tokens: &mut Tokens,
) -> anyhow::Result<(Vec<PathCase>, RunEnd)> {
    let longest = steps.last().copied().unwrap_or_default();
    let count = match steps.len() {
        1 => "1 connection".to_owned(),
        n => format!("{n} connections"),
    };
    let with = keepalive.map_or_else(String::new, |ka| {
        format!(
            " with keepalive {}s,{}s,{}",
            ka.idle.as_secs(),
            ka.interval.as_secs(),
            ka.count
        )
    });
    tell!(
        "idle ladder {ladder}: {count}{with} idle for {}, takes about {}",
        steps
            .iter()
            .map(|d| print_us(*d))
            .collect::<Vec<_>>()
            .join(", "),
        print_us(longest + plan.wait + recipe::IDLE_MARGIN)
    );
    let specs = steps
        .iter()
        .map(|&idle| {
            let token = tokens.next()?;
            let plan = recipe::path_idle(
                protocol::greeting(&token, Direction::NearToFar, PathTest::Idle),
                idle,
                plan.wait,
                keepalive,
            );
            Ok(Spec {
                token,
                direction: Direction::NearToFar,
                test: PathTest::Idle,
                idle: Some((idle, ladder)),
                plan,
            })
        })
        .collect::<anyhow::Result<Vec<Spec>>>()?;
    let (reports, end) = run_specs(reactor, addr, &specs, plan.wait)?;
    let fars = ask_all(addr, &specs, Duration::ZERO, plan.wait);
    let interrupted = end == RunEnd::Interrupted;
    let cases = specs
        .iter()
        .map(|spec| {
            let near = reports.get(&spec.token);
            let case = judge::idle_case(spec.which(), near, far_of(&fars, &spec.token), plan.wait);
            judge::cut_short(case, near, interrupted)
        })
        .collect();
    Ok((cases, end))
}

/// Makes every connection, runs the loop until all have ended, and returns the
/// near end's report of each by token.
fn run_specs(
    reactor: &mut Reactor,
    addr: SocketAddr,
    specs: &[Spec],
    wait: Duration,
) -> anyhow::Result<(HashMap<String, Report>, RunEnd)> {
    // Room for a SYN or two lost to a full accept queue on the way.
    let connect_timeout = wait.max(CONNECT_MIN);
    let mut by_local: HashMap<SocketAddr, String> = HashMap::new();
    for spec in specs {
        if let Some(local) = reactor.connect_named(addr, spec.plan.clone(), connect_timeout)? {
            by_local.insert(local, spec.token.clone());
        }
    }
    let mut reports = HashMap::new();
    let mut failure = None;
    let end = reactor.run(&mut |emit| {
        match emit {
            Emit::Report(report) => {
                if report.verdict.is_connect_failure() && failure.is_none() {
                    failure = Some(format!("path {addr}: connect: {}", report.verdict));
                }
                if let Some(token) = report.local.and_then(|l| by_local.get(&l)) {
                    reports.insert(token.clone(), *report);
                }
            }
            Emit::Notice(text) => tell!("{text}"),
            Emit::Progress(_)
            | Emit::Accepted { .. }
            | Emit::Tick(_)
            | Emit::Acted { .. }
            | Emit::PeerKnown { .. } => {}
        }
        Ok(Flow::Continue)
    })?;
    if let Some(failure) = failure {
        return Err(Failure::Runtime(failure).into());
    }
    Ok((reports, end))
}

/// Asks the far end about every connection at once, one control connection each.
/// `timeout`: how long the far end may wait for the connection to end.
fn ask_all(
    addr: SocketAddr,
    specs: &[Spec],
    timeout: Duration,
    wait: Duration,
) -> HashMap<String, Result<FarView, FarMissing>> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = specs
            .iter()
            .map(|spec| {
                let token = spec.token.clone();
                scope.spawn(move || {
                    let question = format!("REPORT {token} {}", timeout.as_millis());
                    let view = ask_far(addr, &question, wait + timeout);
                    (token, view)
                })
            })
            .collect();
        asks.into_iter().filter_map(|ask| ask.join().ok()).collect()
    })
}

/// One `REPORT` question: the far end's view, or why there is none.
fn ask_far(addr: SocketAddr, question: &str, wait: Duration) -> Result<FarView, FarMissing> {
    let answer = ask_while_busy(addr, question, wait, false).map_err(|_| FarMissing::NoAnswer)?;
    let value: serde_json::Value =
        serde_json::from_str(&answer).map_err(|_| FarMissing::NoAnswer)?;
    match value["kind"].as_str() {
        Some("path-far") => serde_json::from_value(value).map_err(|_| FarMissing::NoAnswer),
        Some("path-unknown") => Err(FarMissing::Unknown),
        Some("path-busy") => Err(FarMissing::Busy),
        _ => Err(FarMissing::NoAnswer),
    }
}

/// The far end's answer about `token`.
fn far_of<'a>(
    fars: &'a HashMap<String, Result<FarView, FarMissing>>,
    token: &str,
) -> Result<&'a FarView, FarMissing> {
    match fars.get(token) {
        Some(Ok(view)) => Ok(view),
        Some(Err(missing)) => Err(*missing),
        None => Err(FarMissing::NoAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_random_bits_that_the_protocol_takes() {
        let mut tokens = Tokens::new().expect("/dev/urandom");
        let a = tokens.next().expect("token");
        let b = tokens.next().expect("token");
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert_eq!(t.len(), 32, "{t}");
            assert!(t.bytes().all(|c| c.is_ascii_hexdigit()), "{t}");
            assert!(protocol::valid_token(t), "{t}");
        }
    }
}
