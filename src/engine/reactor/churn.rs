//! Making connections: one non-blocking connect() that the loop completes, and
//! `connect --count`'s churn of many, paced and bounded.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Churn, Emit, Flow, Reactor, TOKEN_CHURN};
use crate::engine::conn::Conn;
use crate::engine::timers::{TimerKind, later};
use crate::plan::EndPlan;
use crate::sys::{self, TcpState};

/// Most churn connections started in one loop turn: signals and events still
/// get a turn when every connection ends as soon as it starts.
const CHURN_BATCH: usize = 64;

impl Reactor {
    /// Starts a non-blocking connect() that the loop completes.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        plan: EndPlan,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.connect_with(addr, Arc::new(plan), timeout, false)
            .map(|_| ())
    }

    /// One connection, as [`Reactor::connect`], that returns its local address
    /// when connect() got as far as binding one: `path` tells reports apart by it.
    pub fn connect_named(
        &mut self,
        addr: SocketAddr,
        plan: EndPlan,
        timeout: Duration,
    ) -> anyhow::Result<Option<SocketAddr>> {
        self.connect_with(addr, Arc::new(plan), timeout, true)
    }

    pub(super) fn connect_with(
        &mut self,
        addr: SocketAddr,
        plan: Arc<EndPlan>,
        timeout: Duration,
        name: bool,
    ) -> anyhow::Result<Option<SocketAddr>> {
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )
        .context("socket")?;
        let start = Instant::now();
        let result = sock.connect(&SockAddr::from(addr));
        let local = name
            .then(|| sock.local_addr().ok().and_then(|a| a.as_socket()))
            .flatten();
        let token = self.token();
        // On loopback the handshake completes inside connect(); when TCP_INFO already
        // says ESTABLISHED, observing starts now instead of after an EPOLLOUT round.
        let in_progress = matches!(&result, Err(e) if sys::is_in_progress(e));
        let established = match &result {
            Ok(()) => None,
            Err(_) if in_progress => self
                .os
                .tcp_info(sock.as_fd())
                .ok()
                .filter(|i| i.state == TcpState::Established),
            Err(_) => None,
        };
        // Waiting for EPOLLOUT to say how connect() ended; a connect() that failed at
        // once, or whose connection is up already, needs no such wait.
        let waiting = established.is_none() && (result.is_ok() || in_progress);
        if waiting {
            let flags = EpollFlags::EPOLLIN
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET
                | EpollFlags::EPOLLOUT;
            self.epoll
                .add(sock.as_fd(), EpollEvent::new(flags, token))
                .context("epoll_ctl(connect)")?;
        }
        let mut conn = Conn::connecting(sock, addr, plan, start, waiting);
        if self.capture.is_some() {
            conn.keep_packets();
        }
        if let Err(e) = &result
            && !in_progress
        {
            conn.fail_connect(start, e);
        }
        if waiting {
            self.timers
                .at(later(start, timeout), token, TimerKind::Connect);
        }
        self.conns.insert(token, Box::new(conn));
        if self.capture.is_some() {
            self.place(token);
        }
        match established {
            Some(info) => {
                // A close action due at once runs now: nothing else waits on this turn.
                let now = Instant::now();
                self.dispatch_with(token, now, true, |conn, ctx| {
                    conn.connected(ctx, Some(info))
                });
                // Watched only if still open: an `rst` or `fin` closer is already gone.
                if let Some((sock, flags)) = self.conns.get(&token).and_then(|c| c.interest()) {
                    self.epoll
                        .add(sock.as_fd(), EpollEvent::new(flags, token))
                        .context("epoll_ctl(connect)")?;
                }
            }
            None if self.conns.get(&token).is_some_and(|c| c.is_done()) => self.done.push(token),
            None => {}
        }
        Ok(local)
    }

    /// Makes `count` connections to `addr`, `concurrency` at a time, at most
    /// `rate` new ones per second; each follows `plan`.
    pub fn churn(
        &mut self,
        addr: SocketAddr,
        plan: EndPlan,
        timeout: Duration,
        count: u64,
        concurrency: usize,
        rate: Option<f64>,
    ) {
        self.churn = Some(Churn {
            addr,
            plan: Arc::new(plan),
            timeout,
            left: count,
            concurrency: concurrency.max(1),
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next_at: Instant::now(),
            fd_limit_told: false,
        });
    }

    /// Starts churn connections while there is room; an fd limit pauses it until
    /// a connection ends (never a spin), and is fatal only when nothing is open.
    /// Connections that ended at once are reported here to make room, so a churn
    /// whose connections end as they start needs no loop turn per connection.
    pub(super) fn refill(
        &mut self,
        sink: &mut dyn FnMut(Emit) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<Flow> {
        let Some(mut churn) = self.churn.take() else {
            return Ok(Flow::Continue);
        };
        let mut started = 0;
        while churn.left > 0 && started < CHURN_BATCH {
            if self.conns.len() >= churn.concurrency {
                let unpartnered = !self.done.iter().any(|t| self.partners.contains_key(t));
                if self.done.is_empty() || !unpartnered {
                    break;
                }
                if self.reap(sink)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                continue;
            }
            let now = Instant::now();
            if now < churn.next_at {
                self.timers
                    .at(churn.next_at, TOKEN_CHURN, TimerKind::Sample);
                break;
            }
            match self.connect_with(churn.addr, Arc::clone(&churn.plan), churn.timeout, false) {
                Ok(_) => {
                    churn.left -= 1;
                    started += 1;
                    if let Some(interval) = churn.interval {
                        // Keep the pace without bursting to catch up after a stall.
                        churn.next_at = later(churn.next_at, interval).max(now);
                    }
                }
                Err(e) if e.downcast_ref::<io::Error>().is_some_and(sys::is_fd_limit) => {
                    if self.conns.is_empty() {
                        return Err(e.context("no connection is open to free a descriptor"));
                    }
                    if !churn.fd_limit_told {
                        churn.fd_limit_told = true;
                        sink(Emit::Notice(format!(
                            "{e:#}: holding {} connections; new ones wait until one ends (raise `ulimit -n` or lower --concurrency)",
                            self.conns.len()
                        )))?;
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if churn.left > 0 {
            self.churn = Some(churn);
        }
        Ok(Flow::Continue)
    }
}
