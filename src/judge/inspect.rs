//! The judgement of `inspect`: one socket of a running program (sock_diag's
//! view, and the options read from the socket itself) turned into what would
//! notice each silent ending from now, and whether it is a leak.

use std::net::SocketAddr;

use super::keepalive::{UserTimeout, first_probe_after_us, gives_up_after_us};
use crate::report::check::{KeepaliveSettings, ProgramSettings};
use crate::report::inspect::{Endings, InspectConn, Leak};
use crate::report::{SCHEMA, fmt_secs};
use crate::sys::{DiagSocket, DiagTimerKind, SocketSettings, TcpInfo, TcpState};

/// `TCP_RTO_MIN` and `TCP_RTO_MAX` (include/net/tcp.h), in µs.
const RTO_MIN_US: u64 = 200_000;
const RTO_MAX_US: u64 = 120_000_000;

/// What the judge knows of the program's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// `net.ipv4.tcp_retries2`: how many retransmissions before giving up.
    pub tcp_retries2: u64,
}

/// One socket of the program, as sock_diag lists it, with the options read
/// through a duplicate of its descriptor (`None`: it closed before they could be).
pub fn connection(
    pid: u32,
    fd: i32,
    socket: &DiagSocket,
    settings: Option<SocketSettings>,
    ns: Namespace,
) -> InspectConn {
    let own = settings.map(|s| ProgramSettings::from_socket(pid, fd, s));
    let keepalive = own.and_then(|o| o.keepalive);
    let user_timeout_ms = own.and_then(|o| o.user_timeout_ms);
    let (would, prediction) = predict(socket, settings.is_some(), keepalive, user_timeout_ms, ns);
    let info = socket.tcp_info.as_ref();
    let close_wait = socket.state == TcpState::CloseWait;
    let close_wait_ms = info.filter(|_| close_wait).map(|i| i.last_ack_recv);
    InspectConn {
        schema: SCHEMA,
        kind: "inspect-conn",
        pid,
        fd,
        inode: socket.inode,
        local: Some(socket.local),
        remote: Some(socket.remote),
        state: socket.state,
        recv_q: socket.recv_q,
        send_q: socket.send_q,
        timer: socket.timer,
        options_read: settings.is_some(),
        keepalive,
        user_timeout_ms,
        rcvtimeo_ms: own.and_then(|o| o.rcvtimeo_ms),
        sndtimeo_ms: own.and_then(|o| o.sndtimeo_ms),
        last_data_recv_ms: info.map(|i| i.last_data_recv),
        last_ack_recv_ms: info.map(|i| i.last_ack_recv),
        would_notice_after_us: would,
        prediction,
        leak: close_wait.then_some(Leak::CloseWait),
        close_wait_ms,
        leak_detail: close_wait.then(|| {
            let since = close_wait_ms.map_or(String::new(), |ms| {
                format!(
                    " for {} at least (the peer's last ACK, which its FIN carried, tcpi_last_ack_recv)",
                    fmt_secs(u64::from(ms) * 1_000)
                )
            });
            format!(
                "CLOSE_WAIT{since}: the peer closed, the program has not; the kernel keeps the socket until it does"
            )
        }),
    }
}

/// A TCP socket the program holds that is no longer in the kernel's tables:
/// `info` is read through a duplicate of its descriptor. `Some` when it was a
/// connection that ended (state CLOSE, segments exchanged); `None` for a socket
/// never connected (or one that appeared after the tables were read).
pub fn dead_descriptor(
    pid: u32,
    fd: i32,
    inode: u32,
    local: Option<SocketAddr>,
    info: &TcpInfo,
    settings: Option<SocketSettings>,
) -> Option<InspectConn> {
    let exchanged = info.segs_in.unwrap_or(0) > 0 || info.bytes_received.unwrap_or(0) > 0;
    if info.state != TcpState::Close || !exchanged {
        return None;
    }
    let gone = "the connection is over: nothing left to notice".to_owned();
    let own = settings.map(|s| ProgramSettings::from_socket(pid, fd, s));
    Some(InspectConn {
        schema: SCHEMA,
        kind: "inspect-conn",
        pid,
        fd,
        inode,
        local: local.filter(|a| a.port() != 0),
        remote: None,
        state: info.state,
        recv_q: 0,
        send_q: 0,
        timer: None,
        options_read: settings.is_some(),
        keepalive: own.and_then(|o| o.keepalive),
        user_timeout_ms: own.and_then(|o| o.user_timeout_ms),
        rcvtimeo_ms: own.and_then(|o| o.rcvtimeo_ms),
        sndtimeo_ms: own.and_then(|o| o.sndtimeo_ms),
        last_data_recv_ms: Some(info.last_data_recv),
        last_ack_recv_ms: Some(info.last_ack_recv),
        would_notice_after_us: Endings {
            drop: None,
            reboot: None,
            hang: None,
        },
        prediction: Endings {
            drop: gone.clone(),
            reboot: gone.clone(),
            hang: gone,
        },
        leak: Some(Leak::DeadDescriptor),
        close_wait_ms: None,
        leak_detail: Some(format!(
            "socket:[{inode}] is CLOSE and gone from the kernel's tables: the kernel ended the connection (an RST, or a timeout; {} since the peer's last ACK), the program still holds the descriptor",
            fmt_secs(u64::from(info.last_ack_recv) * 1_000)
        )),
    })
}

/// µs until retransmissions give up after `retries2` (the kernel's
/// `tcp_model_timeout` with `TCP_RTO_MIN` as the base: exponential back-off up
/// to `TCP_RTO_MAX`, then linear).
pub fn retransmissions_give_up_after_us(retries2: u64) -> u64 {
    let linear_from = (RTO_MAX_US / RTO_MIN_US).ilog2() as u64;
    if retries2 <= linear_from {
        ((2u64 << retries2) - 1) * RTO_MIN_US
    } else {
        ((2u64 << linear_from) - 1) * RTO_MIN_US + (retries2 - linear_from) * RTO_MAX_US
    }
}

/// From now: what would notice a pulled cable (`drop`), a rebooted peer that
/// answers with an RST (`reboot`) and a hung peer whose kernel still ACKs
/// (`hang`), and when; in words, what each rests on.
fn predict(
    socket: &DiagSocket,
    options_read: bool,
    keepalive: Option<KeepaliveSettings>,
    user_timeout_ms: Option<u64>,
    ns: Namespace,
) -> (Endings<Option<u64>>, Endings<String>) {
    let none = |words: String| {
        (
            Endings {
                drop: None,
                reboot: None,
                hang: None,
            },
            Endings {
                drop: words.clone(),
                reboot: words.clone(),
                hang: words,
            },
        )
    };
    match socket.state {
        TcpState::Established => {}
        TcpState::CloseWait => {
            return none(
                "the peer has closed already (its FIN came): the connection ends when the program closes it".into(),
            );
        }
        other => {
            return none(format!(
                "{other}: predictions are made for ESTABLISHED connections"
            ));
        }
    }
    if !options_read {
        return none("its options could not be read (the socket closed meanwhile)".into());
    }
    let timer = socket.timer;
    let in_flight = socket.send_q > 0
        || timer
            .is_some_and(|t| matches!(t.kind, DiagTimerKind::Retransmit | DiagTimerKind::Persist));
    let info = socket.tcp_info.as_ref();
    // Time since the peer's last segment: what keepalive's idle time counts
    // from. Unknown without TCP_INFO: the timer's expiry stands alone then.
    let silent = info.map(|i| u64::from(i.last_data_recv.min(i.last_ack_recv)) * 1_000);
    let silent_us = silent.unwrap_or(0);
    let ut_us = user_timeout_ms.map(|ms| ms * 1_000);
    let ut_words = |ut: u64| format!("TCP_USER_TIMEOUT {}", fmt_secs(ut));
    let timer_words = timer.map_or(String::new(), |t| format!("; timer {t} (sock_diag)"));
    let app_only = "only an application timeout can";
    let send_hint = match ut_us {
        Some(ut) => format!(
            "; {}: its next send() is cut off within that if unanswered",
            ut_words(ut)
        ),
        None => String::new(),
    };

    // Keepalive's probes: only while nothing is in flight.
    let probing = keepalive.filter(|_| !in_flight).map(|k| {
        let expires_us = timer
            .filter(|t| t.kind == DiagTimerKind::KeepAlive)
            .map(|t| (u64::from(t.expires_ms) * 1_000, u64::from(t.retransmits)));
        let (first, sent) = match expires_us {
            Some((expires, sent)) => (
                first_probe_after_us(
                    expires,
                    sent,
                    k.idle_s * 1_000_000,
                    silent.unwrap_or(u64::MAX),
                ),
                sent,
            ),
            None => ((k.idle_s * 1_000_000).saturating_sub(silent_us), 0),
        };
        (k, first, sent)
    });

    let retrans_us = retransmissions_give_up_after_us(ns.tcp_retries2);
    let (drop, drop_words) = match (in_flight, probing, ut_us) {
        (true, _, Some(ut)) => (
            Some(ut),
            format!(
                "≤ {}: {} with {} bytes unacknowledged: retransmissions give up once the oldest has waited that long{timer_words}",
                fmt_secs(ut),
                ut_words(ut),
                socket.send_q
            ),
        ),
        (true, _, None) => (
            Some(retrans_us),
            format!(
                "≈ {}: {} bytes unacknowledged, retransmissions give up after tcp_retries2={} (keepalive waits while data is in flight){timer_words}",
                fmt_secs(retrans_us),
                socket.send_q,
                ns.tcp_retries2
            ),
        ),
        (false, Some((k, first, sent)), ut) => {
            let ends = gives_up_after_us(
                first,
                sent,
                k.intvl_s * 1_000_000,
                k.cnt,
                ut.map(|timeout_us| UserTimeout {
                    timeout_us,
                    silent_us,
                }),
            );
            let how = match ut {
                Some(ut) => format!(
                    "then a probe every {}s until the first that finds {} of silence ({} replaces TCP_KEEPCNT)",
                    k.intvl_s,
                    fmt_secs(ut),
                    ut_words(ut)
                ),
                None => format!("then {} × {}s", k.cnt.saturating_sub(sent), k.intvl_s),
            };
            (
                Some(ends),
                format!(
                    "≈ {}: next keepalive probe +{}, {how} (keepalive {}s/{}s×{}, read from its socket{}){timer_words}",
                    fmt_secs(ends),
                    fmt_secs(first),
                    k.idle_s,
                    k.intvl_s,
                    k.cnt,
                    silent.map_or(String::new(), |us| format!(
                        "; the peer's last segment {} ago",
                        fmt_secs(us)
                    ))
                ),
            )
        }
        (false, None, _) => (
            None,
            format!(
                "no kernel mechanism will notice: keepalive off, nothing in flight; {app_only}{send_hint}"
            ),
        ),
    };

    let (reboot, reboot_words) = match (in_flight, probing) {
        (true, _) => {
            let next = timer.map_or(0, |t| u64::from(t.expires_ms) * 1_000);
            (
                Some(next),
                format!(
                    "≈ {}: the next retransmission meets an RST{timer_words}",
                    fmt_secs(next)
                ),
            )
        }
        (false, Some((_, first, _))) => (
            Some(first),
            format!(
                "≈ {}: its first keepalive probe meets an RST",
                fmt_secs(first)
            ),
        ),
        (false, None) => (
            None,
            format!(
                "not until the program sends: its next write meets an RST; keepalive off, so no kernel mechanism will before; {app_only}"
            ),
        ),
    };

    let (hang, hang_words) = match (in_flight, ut_us) {
        (true, Some(ut)) => (
            Some(ut),
            format!(
                "≤ {}: {} with {} bytes unacknowledged, if they stay so (a hung peer's kernel ACKs until its buffer is full)",
                fmt_secs(ut),
                ut_words(ut),
                socket.send_q
            ),
        ),
        _ => (
            None,
            format!(
                "no kernel mechanism will notice: a hung peer's kernel ACKs data and answers keepalive probes; {app_only}{send_hint}"
            ),
        ),
    };
    (
        Endings { drop, reboot, hang },
        Endings {
            drop: drop_words,
            reboot: reboot_words,
            hang: hang_words,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::DiagTimer;

    const S: u64 = 1_000_000;
    const NS: Namespace = Namespace { tcp_retries2: 15 };

    fn socket(state: TcpState, timer: Option<DiagTimer>, send_q: u32) -> DiagSocket {
        DiagSocket {
            local: "127.0.0.1:6379".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            state,
            timer,
            recv_q: 0,
            send_q,
            uid: 0,
            inode: 7,
            tcp_info: None,
        }
    }

    fn keepalive(expires_ms: u32, retransmits: u8) -> Option<DiagTimer> {
        Some(DiagTimer {
            kind: DiagTimerKind::KeepAlive,
            expires_ms,
            retransmits,
        })
    }

    fn settings(keepalive: bool, user_timeout_ms: u64) -> SocketSettings {
        SocketSettings {
            keepalive,
            keepidle_s: 300,
            keepintvl_s: 100,
            keepcnt: 3,
            user_timeout_ms,
            rcvtimeo_ms: 0,
            sndtimeo_ms: 0,
        }
    }

    #[test]
    fn redis_keepalive_300_from_its_timer() {
        let s = socket(TcpState::Established, keepalive(299_000, 0), 0);
        let c = connection(42, 8, &s, Some(settings(true, 0)), NS);
        assert_eq!(
            c.keepalive,
            Some(KeepaliveSettings {
                idle_s: 300,
                intvl_s: 100,
                cnt: 3
            })
        );
        assert_eq!(c.would_notice_after_us.drop, Some(299 * S + 300 * S));
        assert_eq!(c.would_notice_after_us.reboot, Some(299 * S));
        assert_eq!(c.would_notice_after_us.hang, None);
        assert!(
            c.prediction.drop.contains("then 3 × 100s"),
            "{}",
            c.prediction.drop
        );
        assert!(
            c.prediction
                .hang
                .contains("only an application timeout can")
        );
        assert_eq!(c.leak, None);
    }

    #[test]
    fn without_keepalive_no_kernel_mechanism_notices() {
        let s = socket(TcpState::Established, None, 0);
        let c = connection(42, 8, &s, Some(settings(false, 0)), NS);
        assert_eq!(
            c.would_notice_after_us,
            Endings {
                drop: None,
                reboot: None,
                hang: None
            }
        );
        assert!(
            c.prediction
                .drop
                .starts_with("no kernel mechanism will notice"),
            "{}",
            c.prediction.drop
        );
        assert!(
            c.prediction
                .drop
                .ends_with("only an application timeout can")
        );
        assert!(
            c.prediction
                .reboot
                .starts_with("not until the program sends")
        );
    }

    #[test]
    fn data_in_flight_is_for_retransmissions_and_the_user_timeout() {
        let on = Some(DiagTimer {
            kind: DiagTimerKind::Retransmit,
            expires_ms: 400,
            retransmits: 1,
        });
        let s = socket(TcpState::Established, on, 1000);
        let c = connection(42, 8, &s, Some(settings(true, 0)), NS);
        assert_eq!(c.would_notice_after_us.drop, Some(924_600_000));
        assert_eq!(c.would_notice_after_us.reboot, Some(400_000));
        assert_eq!(c.would_notice_after_us.hang, None);
        let c = connection(42, 8, &s, Some(settings(false, 30_000)), NS);
        assert_eq!(c.would_notice_after_us.drop, Some(30 * S));
        assert_eq!(c.would_notice_after_us.hang, Some(30 * S));
    }

    #[test]
    fn close_wait_is_a_leak_with_its_age() {
        let mut s = socket(TcpState::CloseWait, None, 0);
        let mut info = crate::sys::fake::idle_info();
        info.state = TcpState::CloseWait;
        info.last_ack_recv = 12_000;
        s.tcp_info = Some(info);
        let c = connection(42, 8, &s, Some(settings(false, 0)), NS);
        assert_eq!(c.leak, Some(Leak::CloseWait));
        assert_eq!(c.close_wait_ms, Some(12_000));
        assert!(
            c.leak_detail
                .as_deref()
                .is_some_and(|d| d.starts_with("CLOSE_WAIT for 12.000s at least")),
            "{:?}",
            c.leak_detail
        );
    }

    #[test]
    fn tcp_retries2_15_is_about_15_minutes() {
        assert_eq!(retransmissions_give_up_after_us(15), 924_600_000);
        assert_eq!(retransmissions_give_up_after_us(3), 3_000_000);
    }
}
