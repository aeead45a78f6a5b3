//! `tcpbye bench` (hidden): the performance targets, measured side by side with
//! a bare baseline in the same run, on loopback. Method and results: docs/BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::Socket;

use super::print;
use crate::engine::{Emit, Flow, Reactor};
use crate::error::ExitCode;
use crate::plan::{BenchPlan, EndPlan};
use crate::report::bench::{BenchResult, Churn, Idle, Latency};
use crate::report::{Percentiles, Role};
use crate::vocab::CloseMode;

/// Runs `tcpbye bench` and prints its table.
pub fn bench(plan: &BenchPlan) -> anyhow::Result<ExitCode> {
    let result = run(plan, &mut |step| print::tell!("bench: {step}"))?;
    print::bench(&result, plan.format)?;
    Ok(ExitCode::Ok)
}

/// Runs the three comparisons. `progress` gets one line per step.
fn run(plan: &BenchPlan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<BenchResult> {
    crate::sys::raise_fd_limit().context("raise the open-file limit")?;
    let mut latency = Vec::new();
    for mode in [CloseMode::Fin, CloseMode::Rst] {
        progress(&format!(
            "detection latency, {mode}: {} rounds each",
            plan.samples
        ));
        let bare = Percentiles::of(&bare_detection(mode, plan.samples)?).context("no samples")?;
        let tcpbye =
            Percentiles::of(&tcpbye_detection(mode, plan.samples)?).context("no samples")?;
        latency.push(Latency {
            mode,
            ratio_p50: round2(tcpbye.p50 as f64 / bare.p50.max(1) as f64),
            bare_us: bare,
            tcpbye_us: tcpbye,
        });
    }
    progress(&format!("churn: {} connections each", plan.churn));
    let churn = churn(plan.churn)?;
    progress(&format!("serve: {} idle connections", plan.idle));
    let idle = idle(plan.idle)?;
    Ok(BenchResult {
        latency,
        churn,
        idle,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn pair(listener: &TcpListener) -> anyhow::Result<(Socket, Socket)> {
    let client = TcpStream::connect(listener.local_addr()?).context("connect")?;
    let (accepted, _) = listener.accept().context("accept")?;
    Ok((Socket::from(client), Socket::from(accepted)))
}

/// The baseline: close one end, time until epoll_wait returns for the other.
fn bare_detection(mode: CloseMode, rounds: u32) -> anyhow::Result<Vec<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut events = [EpollEvent::empty(); 4];
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let (closer, observer) = pair(&listener)?;
        observer.set_nonblocking(true)?;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        epoll.add(observer.as_fd(), EpollEvent::new(flags, 1))?;
        if mode == CloseMode::Rst {
            closer.set_linger(Some(Duration::ZERO))?;
        }
        let start = Instant::now();
        drop(closer);
        let n = epoll.wait(&mut events, EpollTimeout::from(1000u16))?;
        let seen = Instant::now();
        if n == 0 {
            bail!("the bare loop saw no event within 1 s");
        }
        samples.push(micros(seen - start));
        epoll.delete(observer.as_fd())?;
    }
    Ok(samples)
}

/// The same through tcpbye's event loop and observer (probe off, one pair at a time).
fn tcpbye_detection(mode: CloseMode, rounds: u32) -> anyhow::Result<Vec<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let (closer, observer) = pair(&listener)?;
        let mut reactor = Reactor::new()?;
        let closing = EndPlan {
            close: mode,
            after: Duration::ZERO,
            probe: false,
            ..EndPlan::default()
        };
        let observing = EndPlan {
            probe: false,
            timeout: Some(Duration::from_secs(1)),
            ..EndPlan::default()
        };
        reactor.add_pair((closer, closing), (observer, observing))?;
        reactor.run(&mut |emit| {
            if let Emit::Report(report) = emit
                && report.role == Role::Serve
            {
                samples.extend(report.detected_after_us);
            }
            Ok(Flow::Continue)
        })?;
    }
    Ok(samples)
}

/// A server that accepts and closes, for both churn runs.
fn accept_and_close() -> anyhow::Result<SocketAddr> {
    let sock = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    sock.listen(4096)?;
    let listener = TcpListener::from(sock);
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    Ok(addr)
}

fn churn(count: u64) -> anyhow::Result<Churn> {
    let addr = accept_and_close()?;
    let start = Instant::now();
    for _ in 0..count {
        let stream = TcpStream::connect(addr).context("bare connect")?;
        Socket::from(stream).set_linger(Some(Duration::ZERO))?;
    }
    let bare = count as f64 / start.elapsed().as_secs_f64();

    let addr = accept_and_close()?;
    let out = Command::new(std::env::current_exe()?)
        .args(["connect", &addr.to_string(), "--count", &count.to_string()])
        .args(["--close", "rst", "--no-probe", "--json"])
        .output()
        .context("run tcpbye connect --count")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["kind"] == "summary")
        .context("tcpbye connect --count printed no summary")?;
    let ours = summary["rate_per_sec"].as_f64().context("rate_per_sec")?;
    Ok(Churn {
        connections: count,
        bare_per_sec: bare.round(),
        tcpbye_per_sec: ours.round(),
        ratio: round2(ours / bare),
    })
}

/// A child process that is killed if the benchmark fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the comm they are at index 11 and 12.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn idle(count: usize) -> anyhow::Result<Idle> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "127.0.0.1:0", "--summary", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn tcpbye serve")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let server = Server(child);
    let pid = server.0.id();
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"))?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = proc_status_kib(pid, "VmRSS:")?;
    let base_fds = open_fds(pid);

    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(TcpStream::connect(addr).context("connect to serve")?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) < base_fds + count {
        if Instant::now() > deadline {
            bail!(
                "serve accepted {} of {count} in 30 s",
                open_fds(pid) - base_fds
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = proc_status_kib(pid, "VmRSS:")?;

    let idle_for = Duration::from_secs(5);
    let ticks_before = cpu_ticks(pid)?;
    std::thread::sleep(idle_for);
    let ticks = cpu_ticks(pid)? - ticks_before;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let cpu = ticks as f64 / hz / idle_for.as_secs_f64() * 100.0;

    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) > base_fds {
        if Instant::now() > deadline {
            bail!(
                "serve still holds {} connections 30 s after they closed",
                open_fds(pid) - base_fds
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let mut out = String::new();
    stdout.read_to_string(&mut out)?;
    let summary: serde_json::Value = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["kind"] == "summary")
        .context("serve printed no summary")?;
    Ok(Idle {
        connections: count,
        reported: summary["verdicts"]["fin"].as_u64().unwrap_or(0),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        bytes_per_connection: rss_after.saturating_sub(rss_before) * 1024 / count.max(1) as u64,
        idle_cpu_percent: round2(cpu),
        idle_seconds: idle_for.as_secs_f64(),
    })
}
