//! The observer's decisions, driven by a scripted kernel ([`FakeKernel`]) and
//! real loopback sockets where an action needs a socket to act on.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollFlags};
use socket2::Socket;

use super::close::{QUIET_GRACE, UNREAD_GRACE};
use super::parts::QUIET_DOUBLINGS;
use super::{Conn, Ctx, Phase};
use crate::engine::path::{self, Ledger, VERSION};
use crate::engine::predict::KernelTcp;
use crate::engine::timers::{TimerKind, Timers};
use crate::plan::{Detection, EndPlan, Heartbeat, KeepAlive};
use crate::report::{AfterlifeEnd, Closer, DetectedBy, DetectedFrom, EventKind, Role};
use crate::sys::fake::FakeKernel;
use crate::sys::{DiagSocket, TcpState};
use crate::vocab::{CloseMode, Direction, PathTest, Verdict};

const TOKEN: u64 = 7;
/// The sampling interval every test lends its connection.
const EVERY: Duration = Duration::from_millis(50);

/// What the event loop lends a connection, with a scripted kernel.
struct Rig {
    epoll: Epoll,
    timers: Timers,
    tokens: Ledger,
    buf: Vec<u8>,
    os: FakeKernel,
}

impl Rig {
    fn new() -> Self {
        Self {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap(),
            timers: Timers::default(),
            tokens: Ledger::default(),
            buf: vec![0; 4096],
            os: FakeKernel::established(),
        }
    }

    fn ctx(&mut self, now: Instant) -> Ctx<'_> {
        Ctx {
            epoll: &self.epoll,
            timers: &mut self.timers,
            tokens: &mut self.tokens,
            token: TOKEN,
            now,
            os: &self.os,
            buf: &mut self.buf,
            sample_every: EVERY,
            again: false,
            act_now: false,
        }
    }

    /// The timers armed for this connection that are due by `by`, taken out.
    fn due_by(&mut self, by: Instant) -> Vec<TimerKind> {
        let mut due = Vec::new();
        while let Some((token, kind)) = self.timers.pop_due(by) {
            if token == TOKEN {
                due.push(kind);
            }
        }
        due
    }
}

/// A connected loopback pair, non-blocking: (this side, the other end).
fn pair() -> (Socket, Socket) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs.set_nonblocking(true).unwrap();
    (Socket::from(ours), Socket::from(theirs))
}

/// An established connection following `plan`, started at `start` (not begun),
/// and the other end's socket, kept open for the test's length.
fn conn(plan: EndPlan, start: Instant) -> (Conn, Socket) {
    let (ours, theirs) = pair();
    let local = ours.local_addr().unwrap().as_socket();
    let peer = ours.peer_addr().unwrap().as_socket().unwrap();
    let conn = Conn::established(ours, Role::Connect, local, peer, Arc::new(plan), start);
    (conn, theirs)
}

/// A connection that closes in `close` when its Close timer fires, begun at `start`.
fn closer(rig: &mut Rig, close: CloseMode, start: Instant) -> (Conn, Socket) {
    let plan = EndPlan {
        close,
        ..EndPlan::default()
    };
    let (mut c, other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    (c, other)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn close_detail(c: &Conn) -> String {
    c.timeline
        .events
        .iter()
        .rev()
        .find(|e| matches!(e.kind, EventKind::Close | EventKind::Shutdown))
        .and_then(|e| e.detail.clone())
        .unwrap_or_default()
}

#[test]
fn drop_waits_until_nothing_is_in_flight() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::Drop, start);
    rig.os.unacked.set(1000);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::AwaitQuiet);
    assert!(c.action.is_none(), "dropped with data in flight");
    assert!(rig.due_by(start + ms(5)).contains(&TimerKind::Grace));
    c.on_timer(&mut rig.ctx(start + ms(5)), TimerKind::Grace);
    assert_eq!(c.phase(), Phase::AwaitQuiet);
    rig.os.unacked.set(0);
    c.on_timer(&mut rig.ctx(start + ms(10)), TimerKind::Grace);
    assert_eq!(c.phase(), Phase::Holding);
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::Drop));
    assert!(c.verdict().is_none(), "a holder has no verdict of its own");
}

#[test]
fn drop_acts_anyway_once_its_grace_is_over() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::Drop, start);
    rig.os.unacked.set(1000);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::AwaitQuiet);
    let past = start + QUIET_GRACE + ms(1);
    c.on_timer(&mut rig.ctx(past), TimerKind::Grace);
    assert_eq!(c.phase(), Phase::Holding);
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::Drop));
}

#[test]
fn rst_unread_waits_for_data_to_leave_unread() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::RstUnread, start);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::AwaitUnread);
    assert!(c.action.is_none());
    assert!(rig.due_by(start + UNREAD_GRACE).contains(&TimerKind::Grace));
    rig.os.unread.set(7);
    c.on_ready(&mut rig.ctx(start + ms(3)), EpollFlags::EPOLLIN);
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::RstUnread));
    assert_eq!(c.verdict(), Some(Verdict::Rst));
    assert_eq!(
        close_detail(&c),
        "close() with 7 bytes unread: Linux sends RST"
    );
}

#[test]
fn rst_unread_with_a_mark_sends_it_on_the_first_answer_and_acts_on_the_second() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let plan = EndPlan {
        close: CloseMode::RstUnread,
        mark: path::MARK.to_vec(),
        ..EndPlan::default()
    };
    let (mut c, other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::AwaitUnread);
    rig.os.unread.set(15);
    c.on_ready(&mut rig.ctx(start + ms(3)), EpollFlags::EPOLLIN);
    assert!(c.action.is_none(), "waits for the answer to the mark");
    assert_eq!(first_bytes(&other, path::MARK.len()), path::MARK);
    c.on_ready(&mut rig.ctx(start + ms(4)), EpollFlags::EPOLLIN);
    assert!(c.action.is_none(), "nothing more arrived");
    rig.os.unread.set(30);
    c.on_ready(&mut rig.ctx(start + ms(5)), EpollFlags::EPOLLIN);
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::RstUnread));
    assert_eq!(c.verdict(), Some(Verdict::Rst));
}

#[test]
fn a_close_on_answer_with_a_mark_acts_on_the_answer_to_the_mark() {
    use std::io::Write;
    let mut rig = Rig::new();
    let start = Instant::now();
    let plan = EndPlan {
        close: CloseMode::Fin,
        after: Duration::from_secs(60),
        close_on_answer: true,
        mark: path::MARK.to_vec(),
        ..EndPlan::default()
    };
    let (mut c, other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    // Waits (EPOLLIN) until the bytes written have arrived.
    let answer = |c: &mut Conn, rig: &mut Rig, at: Instant| {
        let before = c.bytes_received;
        (&other).write_all(path::ACK).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.bytes_received == before && Instant::now() < deadline {
            c.on_ready(&mut rig.ctx(at), EpollFlags::EPOLLIN);
        }
    };
    answer(&mut c, &mut rig, start + ms(2));
    assert!(c.action.is_none(), "the first answer sends the mark");
    assert_eq!(first_bytes(&other, path::MARK.len()), path::MARK);
    answer(&mut c, &mut rig, start + ms(4));
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::Fin));
}

#[test]
fn rst_unread_with_nothing_unread_after_its_grace_sends_a_fin() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::RstUnread, start);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::AwaitUnread);
    c.on_timer(&mut rig.ctx(start + UNREAD_GRACE), TimerKind::Grace);
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::RstUnread));
    assert_eq!(c.verdict(), Some(Verdict::Fin));
    assert_eq!(
        close_detail(&c),
        "close() with nothing unread: Linux sends FIN"
    );
}

#[test]
fn a_fin_close_with_data_unread_is_told_as_the_rst_it_becomes() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::Fin, start);
    rig.os.unread.set(3);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.action.map(|(_, m)| m), Some(CloseMode::Fin));
    assert!(
        close_detail(&c).starts_with("close() with 3 bytes unread"),
        "{}",
        close_detail(&c)
    );
    assert!(c.sock.is_none(), "fin releases the socket");
}

#[test]
fn half_keeps_reading_after_its_shutdown() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::Half, start);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::HalfClosed);
    assert!(c.sock.is_some() && c.verdict().is_none());
    assert_eq!(close_detail(&c), "shutdown(SHUT_WR): FIN, still reading");
}

#[test]
fn hang_holds_its_socket_unwatched_until_the_hold_ends() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::Hang, start);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert!(c.is_holding());
    assert!(c.sock.is_some(), "a hung process keeps its socket");
    assert!(c.interest().is_none(), "a holder is not watched");
    c.end_hold(start + ms(20));
    assert!(c.is_done() && c.sock.is_none());
    assert_eq!(c.verdict(), Some(Verdict::Open));
}

/// Runs the connection's sample timers one after another, each when it is due:
/// the intervals between them, and `quiet` after each.
fn sample_gaps(rig: &mut Rig, c: &mut Conn, n: usize) -> Vec<(Duration, u32)> {
    let mut gaps = Vec::new();
    for _ in 0..n {
        let now = c.sampler.next_sample().expect("a sample timer is armed");
        c.on_timer(&mut rig.ctx(now), TimerKind::Sample);
        let next = c.sampler.next_sample().unwrap();
        gaps.push((next - now, c.sampler.quiet()));
    }
    gaps
}

#[test]
fn sampling_backs_off_doubling_on_a_connection_at_rest() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    let gaps = sample_gaps(&mut rig, &mut c, 12);
    for (i, (gap, quiet)) in gaps.into_iter().enumerate() {
        let expect_quiet = (i as u32 + 1).min(QUIET_DOUBLINGS);
        assert_eq!(quiet, expect_quiet, "sample {i}");
        let every = EVERY * (1 << expect_quiet);
        // Late by at most a quarter (slack shared with other connections), never early.
        assert!(
            gap >= every && gap <= every + every / 4,
            "sample {i}: {gap:?}"
        );
    }
}

#[test]
fn sampling_keeps_its_pace_while_data_is_in_flight() {
    let mut rig = Rig::new();
    rig.os.set_info(|i| i.unacked = 1);
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    for (i, (gap, quiet)) in sample_gaps(&mut rig, &mut c, 5).into_iter().enumerate() {
        assert_eq!(quiet, 0, "sample {i}");
        assert!(gap <= EVERY + EVERY / 4, "sample {i}: {gap:?}");
    }
}

#[test]
fn sampling_never_rests_with_a_detection_setting() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let plan = EndPlan {
        detection: Detection {
            user_timeout: Some(Duration::from_secs(5)),
            ..Detection::default()
        },
        ..EndPlan::default()
    };
    let (mut c, _other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    let gaps = sample_gaps(&mut rig, &mut c, 4);
    assert!(gaps.iter().all(|(_, quiet)| *quiet == 0), "{gaps:?}");
}

#[test]
fn a_wake_up_sets_sampling_back_to_its_pace() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    sample_gaps(&mut rig, &mut c, 4);
    assert_eq!(c.sampler.quiet(), 4);
    let now = c.sampler.next_sample().unwrap() - ms(1);
    c.on_ready(&mut rig.ctx(now), EpollFlags::EPOLLIN);
    assert_eq!(c.sampler.quiet(), 0);
}

#[test]
fn a_replaced_sample_timer_reads_nothing() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    let due = c.sampler.next_sample().unwrap();
    let reads = rig.os.info_reads.get();
    c.on_timer(&mut rig.ctx(due - ms(1)), TimerKind::Sample);
    assert_eq!(
        rig.os.info_reads.get(),
        reads,
        "an early stale timer sampled"
    );
    c.on_timer(&mut rig.ctx(due), TimerKind::Sample);
    assert_eq!(rig.os.info_reads.get(), reads + 1);
}

#[test]
fn an_etimedout_is_blamed_on_the_mechanism_that_was_running() {
    let ka = KeepAlive {
        idle: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        count: 1,
    };
    let rows = [
        (
            Some(Duration::from_secs(1)),
            None,
            0,
            DetectedBy::UserTimeout,
        ),
        (
            Some(Duration::from_secs(1)),
            Some(ka),
            0,
            DetectedBy::UserTimeout,
        ),
        (None, Some(ka), 0, DetectedBy::Keepalive),
        // Keepalive never fires with data in flight: retransmissions gave up.
        (None, Some(ka), 5, DetectedBy::Retransmit),
        (None, None, 0, DetectedBy::Retransmit),
    ];
    for (user_timeout, keepalive, unacked, by) in rows {
        let mut rig = Rig::new();
        rig.os.set_info(|i| i.unacked = unacked);
        let start = Instant::now();
        let plan = EndPlan {
            detection: Detection {
                user_timeout,
                keepalive,
                ..Detection::default()
            },
            ..EndPlan::default()
        };
        let (mut c, _other) = conn(plan, start);
        c.begin(&mut rig.ctx(start), EventKind::Connect);
        c.detect_errno(
            start + ms(9),
            &io::Error::from_raw_os_error(libc::ETIMEDOUT),
        );
        assert_eq!(c.verdict(), Some(Verdict::Timeout));
        assert_eq!(
            c.detected_by,
            Some(by),
            "{user_timeout:?} {keepalive:?} {unacked}"
        );
        assert_eq!(c.detected_at, Some(start + ms(9)));
    }
}

#[test]
fn an_errno_names_the_verdict_and_the_first_one_stays() {
    let rows = [
        (libc::ECONNRESET, Verdict::Rst),
        (libc::EPIPE, Verdict::Rst),
        (libc::EHOSTUNREACH, Verdict::Unreachable),
        (libc::ENETUNREACH, Verdict::Unreachable),
        (libc::EIO, Verdict::Error),
    ];
    let start = Instant::now();
    for (errno, verdict) in rows {
        let (mut c, _other) = conn(EndPlan::default(), start);
        c.detect_errno(start, &io::Error::from_raw_os_error(errno));
        assert_eq!(c.verdict(), Some(verdict), "errno {errno}");
        assert_eq!(c.detected_by, None);
        c.detect_errno(start, &io::Error::from_raw_os_error(libc::ETIMEDOUT));
        assert_eq!(
            c.verdict(),
            Some(verdict),
            "a later errno replaced the first"
        );
    }
}

#[test]
fn a_failed_connect_names_its_verdict() {
    let rows = [
        (libc::ECONNREFUSED, Verdict::Refused),
        (libc::EHOSTUNREACH, Verdict::Unreachable),
        (libc::ETIMEDOUT, Verdict::ConnectTimeout),
        (libc::EACCES, Verdict::Error),
    ];
    let start = Instant::now();
    for (errno, verdict) in rows {
        let (sock, _other) = pair();
        let peer = sock.peer_addr().unwrap().as_socket().unwrap();
        let mut c = Conn::connecting(sock, peer, Arc::new(EndPlan::default()), start, true);
        c.fail_connect(start, &io::Error::from_raw_os_error(errno));
        assert_eq!(c.verdict(), Some(verdict), "errno {errno}");
        assert!(c.is_done() && c.sock.is_none());
    }
}

#[test]
fn detection_counts_from_the_partners_action() {
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.set_peer_action((start + ms(10), CloseMode::Fin));
    // A second partner action never replaces the first.
    c.set_peer_action((start + ms(11), CloseMode::Rst));
    c.detect(start + ms(12), Verdict::Fin, None);
    let report = c.into_report(KernelTcp { retries2: 15 });
    assert_eq!(report.closer, Some(Closer::Peer));
    assert_eq!(report.verdict, Verdict::Fin);
    assert_eq!(report.detected_from, Some(DetectedFrom::Close));
    assert_eq!(report.detected_after_us, Some(2000));
}

#[test]
fn a_silent_ending_counts_from_the_last_sign_of_life() {
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.detect(
        start + Duration::from_secs(3),
        Verdict::Timeout,
        Some(DetectedBy::Keepalive),
    );
    let report = c.into_report(KernelTcp { retries2: 15 });
    assert_eq!(report.closer, Some(Closer::Peer));
    assert_eq!(report.detected_by, Some(DetectedBy::Keepalive));
    assert_eq!(report.detected_from, Some(DetectedFrom::LastActivity));
    assert_eq!(report.detected_after_us, Some(3_000_000));
}

#[test]
fn a_fin_whose_arrival_nobody_timed_has_no_detection_time() {
    let start = Instant::now();
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.detect(start + ms(40), Verdict::Fin, None);
    let untimed = c.into_report(KernelTcp { retries2: 15 });
    assert_eq!(untimed.detected_after_us, None);
    assert_eq!(untimed.detected_from, None);
    // What is known instead: how long the peer had been quiet.
    assert_eq!(untimed.peer_idle_us, Some(40_000));

    // Captured: the FIN's arrival is the reference.
    let (mut c, _other) = conn(EndPlan::default(), start);
    c.peer_end_packet = Some(start + ms(39));
    c.detect(start + ms(40), Verdict::Fin, None);
    let timed = c.into_report(KernelTcp { retries2: 15 });
    assert_eq!(timed.detected_from, Some(DetectedFrom::Packet));
    assert_eq!(timed.detected_after_us, Some(1000));
}

#[test]
fn this_sides_own_close_is_not_a_detection() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = closer(&mut rig, CloseMode::Rst, start);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert!(c.is_done());
    let report = c.into_report(KernelTcp { retries2: 15 });
    assert_eq!(report.closer, Some(Closer::Local));
    assert_eq!(report.verdict, Verdict::Rst);
    assert_eq!(report.detected_after_us, None);
}

#[test]
fn missed_heartbeats_end_the_connection_and_a_pong_forgives() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let plan = EndPlan {
        detection: Detection {
            heartbeat: Some(Heartbeat {
                interval: ms(100),
                misses: 2,
            }),
            ..Detection::default()
        },
        ..EndPlan::default()
    };
    let (mut c, _other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    c.on_timer(&mut rig.ctx(start + ms(100)), TimerKind::Heartbeat);
    assert_eq!((c.heartbeat.misses(), c.verdict()), (1, None));
    // Something arrived in the next interval: the count starts over.
    c.heartbeat.hear(b"pong");
    c.on_timer(&mut rig.ctx(start + ms(200)), TimerKind::Heartbeat);
    assert_eq!((c.heartbeat.misses(), c.verdict()), (0, None));
    c.on_timer(&mut rig.ctx(start + ms(300)), TimerKind::Heartbeat);
    assert_eq!(c.verdict(), None);
    c.on_timer(&mut rig.ctx(start + ms(400)), TimerKind::Heartbeat);
    assert_eq!(c.verdict(), Some(Verdict::Heartbeat));
    assert_eq!(c.detected_at, Some(start + ms(400)));
}

/// A `serve` connection that takes `path` greetings, begun at `start`, with
/// serve's own plan (a FIN after a minute).
fn far_end(rig: &mut Rig, start: Instant) -> (Conn, Socket) {
    let plan = EndPlan {
        close: CloseMode::Fin,
        after: Duration::from_secs(60),
        path_greetings: true,
        ..EndPlan::default()
    };
    let (mut c, other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Accept);
    (c, other)
}

/// The first `n` bytes the other end receives (waiting at most 5 s).
fn first_bytes(other: &Socket, n: usize) -> Vec<u8> {
    use std::io::Read;
    other.set_nonblocking(false).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = vec![0; n];
    (&*other).read_exact(&mut got).unwrap();
    got
}

/// The far end reads `chunk` as its first bytes.
fn greet(rig: &mut Rig, c: &mut Conn, now: Instant, chunk: &[u8]) -> bool {
    c.bytes_received += chunk.len() as u64;
    let control = c.greet(now, chunk, &mut rig.tokens);
    c.follow_greeting(&mut rig.ctx(now));
    control
}

#[test]
fn a_greeting_turns_a_connection_into_the_test_it_names() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, other) = far_end(&mut rig, start);
    rig.due_by(start + ms(1));
    // As if serve's own data were still to be sent.
    c.queue.fill(1 << 30);
    let line = path::greeting("tok-1", Direction::FarToNear, PathTest::Rst);
    assert!(!greet(&mut rig, &mut c, start + ms(2), &line));
    assert_eq!(c.path_token(), Some("tok-1"));
    assert_eq!(c.plan.close, CloseMode::Rst);
    assert!(!c.plan.probe && !c.plan.path_greetings);
    assert_eq!(
        c.queue.fill_left(),
        0,
        "serve's own data is not sent on a test"
    );
    // The test's ending is due at once, not after serve's minute.
    assert!(rig.due_by(start + ms(2)).contains(&TimerKind::Close));
    assert_eq!(first_bytes(&other, path::ACK.len()), path::ACK);
}

#[test]
fn a_near_to_far_half_greeting_observes_and_probes() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = far_end(&mut rig, start);
    let line = path::greeting("tok-2", Direction::NearToFar, PathTest::Half);
    // The greeting may come in pieces.
    assert!(!greet(&mut rig, &mut c, start, &line[..5]));
    assert_eq!(c.path_token(), None);
    assert!(!greet(&mut rig, &mut c, start, &line[5..]));
    assert_eq!(c.path_token(), Some("tok-2"));
    assert_eq!(c.plan.close, CloseMode::None);
    assert!(c.plan.probe);
}

#[test]
fn a_near_to_far_ending_answers_the_mark_and_keeps_when_it_came() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, other) = far_end(&mut rig, start);
    let line = path::greeting("tok-m", Direction::NearToFar, PathTest::Fin);
    greet(&mut rig, &mut c, start, &line);
    assert_eq!(first_bytes(&other, path::ACK.len()), path::ACK);
    // The mark may come in pieces; it is answered once whole.
    let (head, tail) = path::MARK.split_at(6);
    greet(&mut rig, &mut c, start + ms(3), head);
    greet(&mut rig, &mut c, start + ms(5), tail);
    assert_eq!(first_bytes(&other, path::ACK.len()), path::ACK);
    let view = c.far_view().expect("a test");
    assert_eq!(view.mark_us, Some(5_000));
    assert_eq!(view.bytes_after_greeting, 0, "the mark is not data");
    // Bytes after it are data, and answered no more.
    greet(&mut rig, &mut c, start + ms(6), path::MARK);
    let view = c.far_view().expect("a test");
    assert_eq!(view.mark_us, Some(5_000));
    assert_eq!(view.bytes_after_greeting, path::MARK.len() as u64);
    assert_eq!(c.bytes_sent, 2 * path::ACK.len() as u64, "two answers");
}

#[test]
fn only_a_near_to_far_ending_has_a_mark_and_other_bytes_are_data() {
    let mut rig = Rig::new();
    let start = Instant::now();
    // Idle data that happens to begin like the mark is data.
    let (mut idle, _a) = far_end(&mut rig, start);
    let line = path::greeting("tok-i", Direction::NearToFar, PathTest::Idle);
    greet(&mut rig, &mut idle, start, &line);
    greet(&mut rig, &mut idle, start + ms(1), path::MARK);
    let view = idle.far_view().expect("a test");
    assert_eq!(view.mark_us, None);
    assert_eq!(view.bytes_after_greeting, path::MARK.len() as u64);
    // An ending test whose next bytes are something else has no mark.
    let (mut fin, _b) = far_end(&mut rig, start);
    let line = path::greeting("tok-o", Direction::NearToFar, PathTest::Fin);
    greet(&mut rig, &mut fin, start, &line);
    greet(&mut rig, &mut fin, start + ms(1), b"TCPBYE-PATH-MAX\n");
    greet(&mut rig, &mut fin, start + ms(2), path::MARK);
    let view = fin.far_view().expect("a test");
    assert_eq!(view.mark_us, None);
    assert_eq!(view.bytes_after_greeting, 16 + path::MARK.len() as u64);
}

#[test]
fn a_token_greeted_twice_is_refused_the_second_time() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let line = path::greeting("tok-3", Direction::NearToFar, PathTest::Fin);
    let (mut first, _a) = far_end(&mut rig, start);
    greet(&mut rig, &mut first, start, &line);
    let (mut second, b) = far_end(&mut rig, start);
    greet(&mut rig, &mut second, start + ms(1), &line);
    assert_eq!(first.path_token(), Some("tok-3"));
    assert_eq!(second.path_token(), None);
    assert_eq!(second.plan.close, CloseMode::Fin);
    assert_eq!(second.plan.after, Duration::ZERO);
    assert_eq!(first_bytes(&b, path::USED.len()), path::USED);
    assert!(
        second
            .timeline
            .events
            .iter()
            .any(|e| e.detail.as_deref().is_some_and(|d| d.contains("refused"))),
        "the refusal is in the timeline"
    );
}

#[test]
fn a_control_greeting_hands_its_socket_over_with_what_followed() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = far_end(&mut rig, start);
    let chunk = format!("TCPBYE-CONTROL {VERSION}\nREPORT tok\n");
    assert!(greet(&mut rig, &mut c, start, chunk.as_bytes()));
    let (_sock, rest) = c.take_control().expect("a control connection");
    assert_eq!(rest, b"REPORT tok\n");
    assert!(c.is_done() && c.sock.is_none());
}

#[test]
fn an_ordinary_first_line_is_not_a_greeting() {
    let mut rig = Rig::new();
    let start = Instant::now();
    let (mut c, _other) = far_end(&mut rig, start);
    assert!(!greet(&mut rig, &mut c, start, b"GET / HTTP/1.1\r\n"));
    assert!(c.far.is_none());
    assert_eq!(c.plan.close, CloseMode::Fin);
    assert_eq!(c.plan.after, Duration::from_secs(60));
    assert!(c.take_control().is_none());
}

/// What sock_diag shows of a socket in `state`.
fn diag(state: TcpState) -> DiagSocket {
    let addr = "127.0.0.1:1".parse().unwrap();
    DiagSocket {
        local: addr,
        remote: addr,
        state,
        timer: None,
        recv_q: 0,
        send_q: 0,
        uid: 0,
        inode: 0,
        tcp_info: None,
    }
}

/// A `fin` closer that follows its socket for `watch` after its close.
fn follower(rig: &mut Rig, start: Instant, watch: Duration) -> (Conn, Socket) {
    let plan = EndPlan {
        close: CloseMode::Fin,
        peer_side: true,
        linger_watch: watch,
        ..EndPlan::default()
    };
    let (mut c, other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    c.on_timer(&mut rig.ctx(start), TimerKind::Close);
    assert_eq!(c.phase(), Phase::Afterlife);
    (c, other)
}

#[test]
fn a_closer_follows_its_socket_until_time_wait() {
    let mut rig = Rig::new();
    *rig.os.diag.borrow_mut() = Some(diag(TcpState::FinWait2));
    let start = Instant::now();
    let (mut c, _other) = follower(&mut rig, start, Duration::from_secs(1));
    c.on_timer(&mut rig.ctx(start + ms(5)), TimerKind::Afterlife);
    assert_eq!(c.phase(), Phase::Afterlife, "FIN_WAIT2 is no end");
    assert!(rig.due_by(start + ms(10)).contains(&TimerKind::Afterlife));
    *rig.os.diag.borrow_mut() = Some(diag(TcpState::TimeWait));
    c.on_timer(&mut rig.ctx(start + ms(10)), TimerKind::Afterlife);
    assert!(c.is_done());
    let report = c.into_report(KernelTcp { retries2: 15 });
    let afterlife = report.afterlife.expect("the watch is reported");
    assert_eq!(afterlife.ended, AfterlifeEnd::TimeWait);
    let states: Vec<_> = afterlife.states.iter().map(|s| s.state).collect();
    assert_eq!(states, [Some(TcpState::FinWait2), Some(TcpState::TimeWait)]);
}

#[test]
fn a_closers_watch_ends_when_the_socket_is_gone_or_time_is_up() {
    let mut rig = Rig::new();
    let start = Instant::now();
    *rig.os.diag.borrow_mut() = Some(diag(TcpState::FinWait2));
    let (mut gone, _a) = follower(&mut rig, start, Duration::from_secs(1));
    *rig.os.diag.borrow_mut() = None;
    gone.on_timer(&mut rig.ctx(start + ms(5)), TimerKind::Afterlife);
    assert!(gone.is_done());
    assert_eq!(gone.afterlife.end(), Some(AfterlifeEnd::Gone));

    *rig.os.diag.borrow_mut() = Some(diag(TcpState::FinWait2));
    let watch = ms(100);
    let (mut held, _b) = follower(&mut rig, start, watch);
    held.on_timer(&mut rig.ctx(start + watch - ms(1)), TimerKind::Afterlife);
    assert!(!held.is_done());
    held.on_timer(&mut rig.ctx(start + watch + ms(1)), TimerKind::Afterlife);
    assert!(held.is_done());
    assert_eq!(held.afterlife.end(), Some(AfterlifeEnd::WatchEnded));
}

#[test]
fn the_other_end_is_read_at_each_state_change_else_at_most_every_10ms() {
    let mut rig = Rig::new();
    *rig.os.diag.borrow_mut() = Some(diag(TcpState::Established));
    let start = Instant::now();
    let plan = EndPlan {
        peer_side: true,
        ..EndPlan::default()
    };
    let (mut c, _other) = conn(plan, start);
    c.begin(&mut rig.ctx(start), EventKind::Connect);
    assert_eq!(rig.os.lookups.get(), 1);
    c.sample(&rig.os, start + ms(1), false);
    assert_eq!(rig.os.lookups.get(), 1, "read again within 10 ms");
    c.sample(&rig.os, start + ms(10), false);
    assert_eq!(rig.os.lookups.get(), 2);
    rig.os.set_info(|i| i.state = TcpState::CloseWait);
    c.sample(&rig.os, start + ms(11), false);
    assert_eq!(rig.os.lookups.get(), 3, "a state change is read at once");
}
