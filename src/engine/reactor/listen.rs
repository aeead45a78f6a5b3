//! The listener: `serve`'s socket, accepting in batches, pausing on a descriptor
//! limit, and watching its accept queue.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Emit, Flow, Listener, Reactor, TOKEN_LISTENER};
use crate::engine::timers::{TimerKind, later};
use crate::plan::EndPlan;
use crate::report::Role;
use crate::sys;

/// Most connections accepted in one loop turn: those already open get their turn
/// (and end, freeing their memory) however fast new ones arrive.
const ACCEPT_BATCH: usize = 64;
/// How long accepting pauses after EMFILE/ENFILE before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often connections closed for `--max-conns` are told, at most.
pub(super) const CAP_NOTICE_EVERY: Duration = Duration::from_secs(10);

impl Reactor {
    /// Starts listening; every accepted connection follows `plan`.
    pub fn listen(
        &mut self,
        addr: SocketAddr,
        plan: EndPlan,
        max_conns: Option<usize>,
    ) -> anyhow::Result<SocketAddr> {
        let sock = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )
        .context("socket")?;
        sock.set_reuse_address(true).context("SO_REUSEADDR")?;
        if addr.is_ipv6() {
            sock.set_only_v6(true).context("IPV6_V6ONLY")?;
        }
        sock.bind(&addr.into())
            .with_context(|| format!("bind {addr}"))?;
        // The longest accept queue the kernel allows (net.core.somaxconn, 4096 by
        // default): when it overflows during a burst of connects, the kernel drops
        // handshakes that the clients believe complete, and serve never sees them.
        sock.listen(i32::MAX)
            .with_context(|| format!("listen {addr}"))?;
        let local = sock
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        self.epoll
            .add(
                sock.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
            )
            .context("epoll_ctl(listener)")?;
        self.listener = Some(Listener {
            sock,
            local: Some(local).filter(|a| !a.ip().is_unspecified()),
            plan: Arc::new(plan),
            queued: VecDeque::new(),
            order: Vec::new(),
            tell: false,
            max_conns,
            paused: false,
            emfile_told: false,
            capped: 0,
            capped_told: None,
        });
        Ok(local)
    }

    /// The next accepted connections follow these plans, one each in order; the
    /// listener's own plan applies again after them. A connection that ends
    /// before its plan's action gives the plan back to the next one.
    pub fn queue_plans(&mut self, plans: impl IntoIterator<Item = EndPlan>) {
        if let Some(listener) = &mut self.listener {
            let plans: Vec<_> = plans.into_iter().map(Arc::new).collect();
            listener.queued.extend(plans.iter().cloned());
            listener.order.extend(plans);
        }
    }

    /// Hands the caller an [`Emit::Accepted`] for every accepted connection.
    pub fn tell_accepts(&mut self) {
        if let Some(listener) = &mut self.listener {
            listener.tell = true;
        }
    }

    /// How many times accepting found the listener's accept queue full: each time,
    /// the kernel may have dropped handshakes that their clients believe complete.
    pub fn accept_queue_full(&self) -> u64 {
        self.queue_full
    }

    pub(super) fn accept_all(
        &mut self,
        now: Instant,
        sink: &mut dyn FnMut(Emit) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<Flow> {
        // A listener's TCP_INFO holds its accept queue's length and limit: a full
        // queue means handshakes that the clients believe complete are being dropped.
        if let Some(listener) = &self.listener
            && let Ok(info) = self.os.tcp_info(listener.sock.as_fd())
            && info.sacked > 0
            && info.unacked >= info.sacked
        {
            self.queue_full += 1;
        }
        // The listener is level-triggered: what is left in the backlog wakes the next turn.
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = &mut self.listener else {
                return Ok(Flow::Continue);
            };
            // Non-blocking from accept4() on: no fcntl() pair per connection.
            match sys::accept_nonblocking(&listener.sock) {
                Ok((sock, addr)) => {
                    let peer = addr.as_socket().context("accept: not an IP peer")?;
                    if listener
                        .max_conns
                        .is_some_and(|max| self.conns.len() >= max)
                    {
                        let max = listener.max_conns.unwrap_or(0);
                        drop(sock);
                        // The first at once, then a count at most every 10 s: a
                        // flood of connections must not become a flood of lines.
                        listener.capped += 1;
                        let due = listener
                            .capped_told
                            .is_none_or(|at| now.saturating_duration_since(at) >= CAP_NOTICE_EVERY);
                        if due {
                            let what = match listener.capped {
                                1 => format!("the connection from {peer}"),
                                n => format!("{n} connections (the last from {peer})"),
                            };
                            listener.capped = 0;
                            listener.capped_told = Some(now);
                            if sink(Emit::Notice(format!(
                                "closed {what}: --max-conns {max} reached"
                            )))? == Flow::Stop
                            {
                                return Ok(Flow::Stop);
                            }
                        }
                        continue;
                    }
                    let plan = listener
                        .queued
                        .pop_front()
                        .unwrap_or_else(|| Arc::clone(&listener.plan));
                    let (tell, close) = (listener.tell, plan.close);
                    // A listener on one address is every accepted socket's local
                    // address: no getsockname() per connection then.
                    let local = match listener.local {
                        Some(local) => Some(local),
                        None => sock.local_addr().ok().and_then(|a| a.as_socket()),
                    };
                    self.adopt(sock, Role::Serve, (local, peer), plan, now)?;
                    if tell
                        && sink(Emit::Accepted {
                            peer,
                            at: now,
                            close,
                        })? == Flow::Stop
                    {
                        return Ok(Flow::Stop);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Flow::Continue),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if sys::is_fd_limit(&e) => {
                    let _ = self.epoll.delete(listener.sock.as_fd());
                    listener.paused = true;
                    let first = !listener.emfile_told;
                    listener.emfile_told = true;
                    self.timers.at(
                        later(now, ACCEPT_BACKOFF),
                        TOKEN_LISTENER,
                        TimerKind::Sample,
                    );
                    if first {
                        let open = self.conns.len();
                        sink(Emit::Notice(format!(
                            "accept: {e}; holding {open} connections, pausing accept() for {}ms at a time until one closes (raise `ulimit -n`)",
                            ACCEPT_BACKOFF.as_millis()
                        )))?;
                    }
                    return Ok(Flow::Continue);
                }
                Err(e) => return Err(e).context("accept"),
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) fn resume_accepting(&mut self) {
        if let Some(listener) = &mut self.listener
            && listener.paused
            && self
                .epoll
                .add(
                    listener.sock.as_fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_LISTENER),
                )
                .is_ok()
        {
            listener.paused = false;
        }
    }
}
