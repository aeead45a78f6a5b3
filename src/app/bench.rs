//! `tcpbye bench` (hidden): the performance targets, measured side by side with
//! a bare baseline in the same run, on loopback. Method and results: docs/BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::Socket;

use super::print;
use crate::engine::{Emit, Flow, Reactor};
use crate::error::Outcome;
use crate::plan::{BenchPlan, EndPlan};
use crate::report::bench::{BenchResult, Churn, FinChurn, Hostile, Idle, Inspect, Latency};
use crate::report::{Percentiles, Role, micros};
use crate::vocab::CloseMode;

/// Churn concurrencies compared, each against a bare loop with as many threads.
const CHURN_CONCURRENCY: [usize; 2] = [1, 32];
/// Concurrency of the fin churn client.
const FIN_CHURN_CONCURRENCY: usize = 32;
/// A hostile load stops once `serve`'s RSS passes this: the bench must not take
/// the host down with the very growth it measures.
const RSS_SAFETY_KIB: u64 = 1024 * 1024;
/// How often each slow client sends its byte.
const SLOW_EVERY: Duration = Duration::from_millis(200);

/// Runs `tcpbye bench` and prints its table.
pub fn bench(plan: &BenchPlan) -> anyhow::Result<Outcome> {
    let result = run(plan, &mut |step| print::tell!("bench: {step}"))?;
    print::bench(&result, plan.format)?;
    Ok(Outcome::DONE)
}

/// The binary whose `connect` and `serve` are measured: `--exe`, else this one.
fn exe(plan: &BenchPlan) -> anyhow::Result<PathBuf> {
    match &plan.exe {
        Some(path) => Ok(path.clone()),
        None => std::env::current_exe().context("the path of this tcpbye binary"),
    }
}

/// Runs the comparisons. `progress` gets one line per step.
fn run(plan: &BenchPlan, progress: &mut dyn FnMut(&str)) -> anyhow::Result<BenchResult> {
    crate::sys::raise_fd_limit().context("raise the open-file limit")?;
    let exe = exe(plan)?;
    let mut latency = Vec::new();
    for mode in [CloseMode::Fin, CloseMode::Rst] {
        if !plan.includes("latency") {
            break;
        }
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
    let mut churns = Vec::new();
    if plan.includes("churn") {
        progress(&format!(
            "churn: {} connections, concurrency {CHURN_CONCURRENCY:?}, best of {}",
            plan.churn, plan.runs
        ));
        churns = churn(&exe, plan.churn, plan.runs)?;
    }
    let mut fin_churn = Vec::new();
    if plan.includes("memory") {
        for summary in [false, true] {
            progress(&format!(
                "serve{} under a fin churn of {} connections",
                if summary {
                    " --summary --json"
                } else {
                    " (table to /dev/null)"
                },
                plan.fin_churn
            ));
            fin_churn.push(serve_under_fin_churn(&exe, plan.fin_churn, summary)?);
        }
    }
    let mut idle_result = None;
    if plan.includes("idle") {
        progress(&format!(
            "serve: {} idle connections, {} s",
            plan.idle, plan.idle_seconds
        ));
        idle_result = Some(idle(
            &exe,
            plan.idle,
            Duration::from_secs(plan.idle_seconds),
        )?);
    }
    let mut hostile = Vec::new();
    if plan.includes("hostile") {
        let seconds = Duration::from_secs(plan.hostile_seconds);
        // With --pcap too when the privilege allows: every segment is looked up then.
        let pcap = crate::sys::has_net_raw();
        for output in ["table", "json", "pcap"] {
            if output == "pcap" && !pcap {
                progress("serve --pcap: skipped (needs CAP_NET_RAW)");
                continue;
            }
            progress(&format!(
                "serve ({output}): {} slow clients, {} s",
                plan.slow, plan.hostile_seconds
            ));
            hostile.push(slow_clients(&exe, plan.slow, seconds, output)?);
        }
        progress(&format!(
            "serve: {} control connections streaming after REPORT, {} s",
            plan.controls, plan.hostile_seconds
        ));
        hostile.push(control_streams(&exe, plan.controls, seconds)?);
    }
    let mut inspect = None;
    if plan.includes("inspect") {
        progress(&format!(
            "inspect: a process holding {} TCP connections, best of {}",
            plan.idle, plan.runs
        ));
        inspect = Some(inspect_many(&exe, plan.idle, plan.runs)?);
    }
    Ok(BenchResult {
        latency,
        churn: churns,
        fin_churn,
        idle: idle_result,
        hostile,
        inspect,
    })
}

/// `tcpbye inspect` of this process while it holds `count` TCP connections
/// (`count / 2` loopback pairs): start to exit, best of `runs`.
fn inspect_many(exe: &Path, count: usize, runs: u32) -> anyhow::Result<Inspect> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind")?;
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(count);
    for _ in 0..count / 2 {
        let client = TcpStream::connect(addr).context("connect")?;
        let (accepted, _) = listener.accept().context("accept")?;
        held.push((client, accepted));
    }
    let pid = std::process::id().to_string();
    let (mut wall, mut elapsed, mut reported) = (Duration::MAX, 0.0, 0);
    for _ in 0..runs {
        let start = Instant::now();
        let out = Command::new(exe)
            .args(["inspect", &pid, "--json"])
            .stderr(Stdio::inherit())
            .output()
            .context("run tcpbye inspect")?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!("tcpbye inspect {pid}: {}", out.status);
        }
        let summary = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["kind"] == "inspect-summary")
            .context("inspect printed no summary")?;
        if took < wall {
            wall = took;
            elapsed = summary["elapsed_us"].as_f64().unwrap_or(0.0) / 1000.0;
            reported = summary["connections"].as_u64().unwrap_or(0);
        }
    }
    drop(held);
    Ok(Inspect {
        sockets: count / 2 * 2,
        reported,
        wall_ms: round2(wall.as_secs_f64() * 1000.0),
        elapsed_ms: round2(elapsed),
        runs,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
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

/// `count` blocking connect() + RST closes over `threads` threads; connections per second.
fn bare_churn(addr: SocketAddr, count: u64, threads: usize) -> anyhow::Result<f64> {
    let each = count / threads as u64;
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || -> anyhow::Result<()> {
                for _ in 0..each {
                    let stream = TcpStream::connect(addr).context("bare connect")?;
                    Socket::from(stream).set_linger(Some(Duration::ZERO))?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("bare churn thread panicked"))??;
    }
    Ok((each * threads as u64) as f64 / start.elapsed().as_secs_f64())
}

/// `tcpbye connect --count` at `concurrency`; its summary's rate.
fn tcpbye_churn(
    exe: &Path,
    addr: SocketAddr,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let out = Command::new(exe)
        .args(["connect", &addr.to_string(), "--count", &count.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--close", "rst", "--no-probe", "--json"])
        .output()
        .context("run tcpbye connect --count")?;
    let summary = summary_of(&String::from_utf8_lossy(&out.stdout))
        .context("tcpbye connect --count printed no summary")?;
    summary["rate_per_sec"].as_f64().context("rate_per_sec")
}

/// The `summary` object among JSON Lines.
fn summary_of(text: &str) -> Option<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["kind"] == "summary")
}

fn churn(exe: &Path, count: u64, runs: u32) -> anyhow::Result<Vec<Churn>> {
    let mut best = [(0.0f64, 0.0f64); CHURN_CONCURRENCY.len()];
    // Runs alternate between the two loops, so a change of load hits both alike,
    // and every other run goes in reverse order, so neither always comes right
    // after the 32 bare threads (whose stalled SYNs the kernel may still be
    // retrying).
    for run in 0..runs {
        let mut steps: Vec<(usize, bool)> = (0..CHURN_CONCURRENCY.len())
            .flat_map(|i| [(i, true), (i, false)])
            .collect();
        if run % 2 == 1 {
            steps.reverse();
        }
        for (i, bare) in steps {
            let c = CHURN_CONCURRENCY[i];
            if bare {
                best[i].0 = best[i].0.max(bare_churn(accept_and_close()?, count, c)?);
            } else {
                best[i].1 = best[i]
                    .1
                    .max(tcpbye_churn(exe, accept_and_close()?, count, c)?);
            }
        }
    }
    // The baseline is the bare loop at its best: with 32 threads it can outrun the
    // bench server's one accepting thread and stall on dropped SYNs.
    let bare_best = best.iter().map(|(bare, _)| *bare).fold(0.0, f64::max);
    Ok(CHURN_CONCURRENCY
        .iter()
        .zip(best)
        .map(|(&concurrency, (bare, ours))| Churn {
            connections: count,
            concurrency,
            bare_per_sec: bare.round(),
            bare_best_per_sec: bare_best.round(),
            tcpbye_per_sec: ours.round(),
            ratio: round2(ours / bare_best),
            ratio_same_threads: round2(ours / bare),
            runs,
        })
        .collect())
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

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Starts `serve 127.0.0.1:0 ARGS`; its address, and its stdout when piped.
fn spawn_serve(exe: &Path, args: &[&str], stdout: Stdio) -> anyhow::Result<(Server, SocketAddr)> {
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("127.0.0.1:0")
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn tcpbye serve")?;
    let stderr = child.stderr.take().context("stderr")?;
    let server = Server(child);
    let mut stderr = BufReader::new(stderr);
    let mut line = String::new();
    stderr.read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"))?;
    // Later notices must never fill the pipe and stall serve.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok((server, addr))
}

/// Waits until `pid` holds at most `fds` descriptors; how long that took.
fn wait_fds_at_most(pid: u32, fds: usize, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let open = open_fds(pid);
        if open <= fds {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "serve still holds {} connections {} s after they closed",
                open - fds,
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGINT, then the summary `serve` prints on exit.
fn interrupt_for_summary(
    server: &mut Server,
    stdout: Option<std::process::ChildStdout>,
) -> anyhow::Result<Option<serde_json::Value>> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let Some(mut stdout) = stdout else {
        return Ok(None);
    };
    let mut out = String::new();
    stdout.read_to_string(&mut out)?;
    Ok(summary_of(&out))
}

/// `serve` (table to /dev/null, or `--summary --json`) observing a fin churn of
/// `count` connections from `tcpbye connect`; its peak RSS and whether it kept up.
fn serve_under_fin_churn(exe: &Path, count: u64, summary: bool) -> anyhow::Result<FinChurn> {
    let (args, stdout): (&[&str], Stdio) = if summary {
        (&["--summary", "--json"], Stdio::piped())
    } else {
        (&[], Stdio::from(std::fs::File::create("/dev/null")?))
    };
    let (mut server, addr) = spawn_serve(exe, args, stdout)?;
    let serve_stdout = server.0.stdout.take();
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(200));
    let base_fds = open_fds(pid);
    let mut client = Command::new(exe)
        .args(["connect", &addr.to_string(), "--count", &count.to_string()])
        .args(["--concurrency", &FIN_CHURN_CONCURRENCY.to_string()])
        .args(["--close", "fin", "--no-probe", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn tcpbye connect")?;
    let mut client_out = client.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        client_out.read_to_string(&mut text).map(|_| text)
    });
    let cpu_before = cpu_ns(pid)?;
    let started = Instant::now();
    let mut peak_open = 0;
    // Bounded: a churn slower than 1000/s, plus a minute, is a failure.
    let deadline = started + Duration::from_secs(60 + count / 1000);
    loop {
        if client.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            let _ = client.wait();
            bail!("the fin churn client did not finish in time");
        }
        peak_open = peak_open.max(open_fds(pid).saturating_sub(base_fds));
        std::thread::sleep(Duration::from_millis(50));
    }
    let serve_cpu =
        (cpu_ns(pid)? - cpu_before) as f64 / started.elapsed().as_nanos() as f64 * 100.0;
    let text = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let client_summary = summary_of(&text).context("the fin churn client printed no summary")?;
    let drain = wait_fds_at_most(pid, base_fds, Duration::from_secs(60))?;
    let peak = proc_status_kib(pid, "VmHWM:")?;
    let summary = interrupt_for_summary(&mut server, serve_stdout)?;
    Ok(FinChurn {
        output: if summary.is_some() {
            "summary-json"
        } else {
            "table"
        },
        connections: count,
        concurrency: FIN_CHURN_CONCURRENCY,
        client_per_sec: client_summary["rate_per_sec"].as_f64().unwrap_or(0.0),
        reported: summary.and_then(|s| s["connections"].as_u64()),
        drain_ms: micros(drain) / 1000,
        peak_open,
        serve_cpu_percent: round2(serve_cpu),
        peak_rss_kib: peak,
    })
}

/// CPU time of all of a process's threads, ns (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .context("schedstat")?;
    }
    Ok(total)
}

fn idle(exe: &Path, count: usize, idle_for: Duration) -> anyhow::Result<Idle> {
    let cap = count.to_string();
    let (mut server, addr) = spawn_serve(
        exe,
        &["--summary", "--json", "--max-conns", &cap],
        Stdio::piped(),
    )?;
    let stdout = server.0.stdout.take();
    let pid = server.0.id();
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

    let cpu_before = cpu_ns(pid)?;
    let start = Instant::now();
    std::thread::sleep(idle_for);
    let cpu = (cpu_ns(pid)? - cpu_before) as f64 / start.elapsed().as_nanos() as f64 * 100.0;

    drop(clients);
    wait_fds_at_most(pid, base_fds, Duration::from_secs(30))?;
    let summary =
        interrupt_for_summary(&mut server, stdout)?.context("serve printed no summary")?;
    Ok(Idle {
        connections: count,
        reported: summary["verdicts"]["fin"].as_u64().unwrap_or(0),
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        bytes_per_connection: rss_after.saturating_sub(rss_before) * 1024 / count.max(1) as u64,
        idle_cpu_percent: round3(cpu),
        idle_seconds: idle_for.as_secs_f64(),
    })
}

/// The host's TCP buffer memory, KiB (`/proc/net/sockstat`, `TCP: … mem PAGES`):
/// what data waiting in sockets costs the kernel, which no RSS shows.
fn kernel_tcp_kib() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/net/sockstat") else {
        return 0;
    };
    let pages = stat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "mem")?;
            words.next()?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    pages * page / 1024
}

/// `count` connections to `addr`, non-blocking, each having first sent `first`.
fn hostile_clients(addr: SocketAddr, count: usize, first: &[u8]) -> anyhow::Result<Vec<TcpStream>> {
    use std::io::Write;
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).context("connect to serve")?;
        if !first.is_empty() {
            stream.write_all(first).context("send to serve")?;
        }
        stream.set_nonblocking(true)?;
        clients.push(stream);
    }
    Ok(clients)
}

/// Waits until serve holds `count` more descriptors than `base` (30 s at most).
fn wait_fds_at_least(pid: u32, fds: usize, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) < fds {
        if Instant::now() > deadline {
            bail!(
                "serve accepted {} of {count} in 30 s",
                open_fds(pid).saturating_sub(fds - count)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Writes `chunk` to every client once (non-blocking); drops the ones serve
/// closed. Bytes written, and how many were dropped.
fn write_round(clients: &mut Vec<TcpStream>, chunk: &[u8]) -> (u64, usize) {
    use std::io::Write;
    let (mut sent, before) = (0, clients.len());
    clients.retain_mut(|c| match c.write(chunk) {
        Ok(n) => {
            sent += n as u64;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        Err(_) => false,
    });
    (sent, before - clients.len())
}

/// `serve` (`output`: `table`, `json`, or `pcap`: a table and `--pcap`; stdout
/// to /dev/null) holding `count` clients that each send one byte every
/// [`SLOW_EVERY`] for `lasting`: its peak RSS and CPU, and what it still holds
/// once they left.
fn slow_clients(
    exe: &Path,
    count: usize,
    lasting: Duration,
    output: &'static str,
) -> anyhow::Result<Hostile> {
    let cap = count.to_string();
    let pcap = std::env::temp_dir().join(format!("tcpbye-bench-{}.pcap", std::process::id()));
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let mut args = vec!["--max-conns", &cap];
    match output {
        "json" => args.push("--json"),
        "pcap" => args.extend(["--pcap", &pcap_arg, "--force"]),
        _ => {}
    }
    let null = Stdio::from(std::fs::File::create("/dev/null")?);
    let spawned = spawn_serve(exe, &args, null);
    let result = spawned.and_then(|(server, addr)| slow_load(&server, addr, count, lasting));
    let _ = std::fs::remove_file(&pcap);
    let mut hostile = result?;
    hostile.output = output;
    Ok(hostile)
}

fn slow_load(
    server: &Server,
    addr: SocketAddr,
    count: usize,
    lasting: Duration,
) -> anyhow::Result<Hostile> {
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = proc_status_kib(pid, "VmRSS:")?;
    let base_fds = open_fds(pid);
    let mut clients = hostile_clients(addr, count, b"")?;
    wait_fds_at_least(pid, base_fds + count, count)?;
    let (mut bytes_sent, mut closed, mut stopped) = (0, 0, false);
    let kernel_before = kernel_tcp_kib();
    let mut kernel_peak = kernel_before;
    let cpu_before = cpu_ns(pid)?;
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < lasting && !clients.is_empty() {
        let (sent, gone) = write_round(&mut clients, b"x");
        bytes_sent += sent;
        closed += gone;
        kernel_peak = kernel_peak.max(kernel_tcp_kib());
        if proc_status_kib(pid, "VmRSS:")? > RSS_SAFETY_KIB {
            stopped = true;
            break;
        }
        next += SLOW_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let ran = Ran {
        start,
        cpu_before,
        bytes_sent,
        closed,
        stopped,
        kernel_growth_kib: kernel_peak.saturating_sub(kernel_before),
    };
    let gone = move || drop(clients);
    hostile_figures("slow-clients", pid, count, rss_before, base_fds, ran, gone)
}

/// What one hostile load did, as the bench saw it while it ran.
struct Ran {
    start: Instant,
    cpu_before: u64,
    bytes_sent: u64,
    closed: usize,
    stopped: bool,
    kernel_growth_kib: u64,
}

/// `serve`'s figures once a hostile load of `count` connections has run: its CPU
/// over the load and its peak RSS; then `end` closes the clients and, once `serve`
/// holds no more than `base_fds` descriptors, its RSS after they left.
fn hostile_figures(
    load: &'static str,
    pid: u32,
    count: usize,
    rss_before: u64,
    base_fds: usize,
    ran: Ran,
    end: impl FnOnce(),
) -> anyhow::Result<Hostile> {
    let elapsed = ran.start.elapsed();
    let cpu = (cpu_ns(pid)? - ran.cpu_before) as f64 / elapsed.as_nanos() as f64 * 100.0;
    let peak = proc_status_kib(pid, "VmHWM:")?;
    end();
    wait_fds_at_most(pid, base_fds, Duration::from_secs(60))?;
    let rss_after = proc_status_kib(pid, "VmRSS:")?;
    Ok(Hostile {
        load,
        output: "table",
        serve_cpu_percent: round2(cpu),
        connections: count,
        seconds: round2(elapsed.as_secs_f64()),
        bytes_sent: ran.bytes_sent,
        rss_before_kib: rss_before,
        peak_rss_kib: peak,
        rss_after_kib: rss_after,
        bytes_per_connection: peak.saturating_sub(rss_before) * 1024 / count.max(1) as u64,
        kernel_tcp_growth_kib: ran.kernel_growth_kib,
        stopped_at_limit: ran.stopped,
        closed_by_serve: ran.closed,
    })
}

/// `serve` facing `count` `path` control connections that ask `REPORT <token>
/// 60000` about a test connection each that stays open (so the answer waits) and
/// then stream data as fast as they can for `lasting`: its peak RSS.
fn control_streams(exe: &Path, count: usize, lasting: Duration) -> anyhow::Result<Hostile> {
    let null = Stdio::from(std::fs::File::create("/dev/null")?);
    let (server, addr) = spawn_serve(exe, &[], null)?;
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = proc_status_kib(pid, "VmRSS:")?;
    let base_fds = open_fds(pid);
    let mut clients = Vec::with_capacity(count);
    // The idle test connections the questions are about, held open throughout.
    let mut tests = Vec::with_capacity(count);
    for i in 0..count {
        let token = format!("bench-{}-{i}", std::process::id());
        let greeting = format!("TCPBYE-PATH 1 {token} near-to-far idle\n");
        tests.extend(hostile_clients(addr, 1, greeting.as_bytes())?);
        let question = format!("TCPBYE-CONTROL 1\nREPORT {token} 60000\n");
        clients.extend(hostile_clients(addr, 1, question.as_bytes())?);
    }
    wait_fds_at_least(pid, base_fds + 2 * count, 2 * count)?;
    // Small writes: each one is a wake-up of its own for serve.
    let chunk = vec![b'z'; 512];
    let (mut bytes_sent, mut closed, mut stopped) = (0, 0, false);
    let kernel_before = kernel_tcp_kib();
    let mut kernel_peak = kernel_before;
    let cpu_before = cpu_ns(pid)?;
    let start = Instant::now();
    let mut checked = start;
    while start.elapsed() < lasting && !clients.is_empty() {
        let (sent, gone) = write_round(&mut clients, &chunk);
        bytes_sent += sent;
        closed += gone;
        if checked.elapsed() >= Duration::from_millis(100) {
            checked = Instant::now();
            kernel_peak = kernel_peak.max(kernel_tcp_kib());
            if proc_status_kib(pid, "VmRSS:")? > RSS_SAFETY_KIB {
                stopped = true;
                break;
            }
        }
        if sent == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let ran = Ran {
        start,
        cpu_before,
        bytes_sent,
        closed,
        stopped,
        kernel_growth_kib: kernel_peak.saturating_sub(kernel_before),
    };
    let gone = move || drop((clients, tests));
    hostile_figures(
        "control-streams",
        pid,
        count,
        rss_before,
        base_fds,
        ran,
        gone,
    )
}
