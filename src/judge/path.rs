//! `tcpbye path`: the judgement — what was sent vs what arrived for each
//! ending, what happened to each idle connection, the idle ladders and the
//! bracket they give, and the advice that follows.

use std::time::Duration;

use crate::report::path::{
    AfterFin, Ending, FarEnding, FarMissing, FarView, KeepaliveAdvice, PathCase, PathResult,
    PathSummary,
};
use crate::report::{Event, EventKind, Report, fmt_us, micros};
use crate::vocab::{CloseMode, Direction, PathTest, Verdict};

/// An ending that arrives this much later than data takes is `delayed`. Far
/// above loopback's tens of µs and a proxy's own scheduling, far below a
/// retransmission timeout (200 ms at least on Linux): a path that holds an
/// ending back until some timer fires shows up, one that forwards it does not.
pub const DELAY_LIMIT_US: u64 = 100_000;

/// `fin`/`rst` in capitals, for "RST arrived as FIN".
fn loud(what: Ending) -> String {
    what.name().to_uppercase()
}

/// Judges one ending: `sent` by one end, `arrived` at the other.
pub fn fidelity(
    sent: Ending,
    arrived: Ending,
    extra_us: Option<u64>,
    after_fin: Option<AfterFin>,
) -> (PathResult, String) {
    if arrived == Ending::Nothing {
        return (
            PathResult::Lost,
            format!("{} sent, nothing arrived within --wait", loud(sent)),
        );
    }
    if sent != arrived {
        return (
            PathResult::Rewritten,
            format!("{} arrived as {}", loud(sent), loud(arrived)),
        );
    }
    if let Some(a) = after_fin {
        if a.sent == 0 {
            return (
                PathResult::Rewritten,
                "FIN arrived, but no data could be sent after it".to_owned(),
            );
        }
        if a.arrived < a.sent {
            return (
                PathResult::Rewritten,
                format!(
                    "FIN arrived, but of {} bytes sent after it {} arrived: half-close not kept",
                    a.sent, a.arrived
                ),
            );
        }
    }
    if let Some(extra) = extra_us.filter(|us| *us > DELAY_LIMIT_US) {
        return (
            PathResult::Delayed,
            format!(
                "{} arrived {} later than data takes",
                loud(sent),
                fmt_us(extra)
            ),
        );
    }
    let mut note = format!("{} arrived as {}", loud(sent), loud(arrived));
    if let Some(a) = after_fin {
        note.push_str(&format!(", then {} bytes", a.arrived));
    }
    (PathResult::Faithful, note)
}

/// Judges one idle connection from the near end's verdict (and whether its
/// `rst` came right after a FIN, `fin_before_rst`) and the far end's report.
/// Without the far end's report, or when the far end ended the connection itself
/// (its `--timeout`, a stop), the step says nothing about the path: `failed`, with
/// the reason, and left out of the bracket.
///
/// A FIN and then an RST that the far end never sent is a proxy ending the
/// connection (HAProxy's `option nolinger` resets right after its FIN): `closed`,
/// like a FIN alone. Whether the near end's report says `rst` (FIN, then RST) or
/// `fin` depends only on whether the RST had arrived when it read the FIN, so
/// judging both alike gives the same result every run.
pub fn idle(
    near: Verdict,
    fin_before_rst: bool,
    far: Result<&FarView, FarMissing>,
    wait: Duration,
) -> (PathResult, String) {
    let far = match far {
        Ok(far) => far,
        Err(missing) => return (PathResult::Failed, missing.words().to_owned()),
    };
    if let Some(sent) = &far.sent {
        let why = far.ended_by.unwrap_or(FarEnding::Other).words();
        return (
            PathResult::Failed,
            format!(
                "the far end ended the connection itself ({why}; it sent {}): not the path's doing",
                loud(*sent)
            ),
        );
    }
    let far_got = far.bytes_after_greeting;
    match near {
        Verdict::Rst if fin_before_rst => (
            PathResult::Closed,
            "FIN, then RST, that the far end never sent: the path closed the connection \
             (and reset it right after its FIN)"
                .to_owned(),
        ),
        Verdict::Rst => (
            PathResult::Reset,
            "RST that the far end never sent: the path answered for it".to_owned(),
        ),
        Verdict::Fin => (
            PathResult::Closed,
            "FIN that the far end never sent: the path closed the connection".to_owned(),
        ),
        Verdict::Timeout => (
            PathResult::BlackHoled,
            format!(
                "no ACK within {}: TCP_USER_TIMEOUT gave up; {} bytes reached the far end",
                fmt_us(micros(wait)),
                far_got
            ),
        ),
        Verdict::Open if far_got > 0 => (
            PathResult::Delivered,
            format!("{far_got} bytes arrived at the far end"),
        ),
        Verdict::Open => (
            PathResult::BlackHoled,
            "acknowledged, but nothing arrived at the far end".to_owned(),
        ),
        other => (PathResult::Failed, format!("the connection ended: {other}")),
    }
}

/// Whether a test whose observation was cut short by an interruption has no
/// result: only what was seen in full stands (an ending that arrived, data that
/// was delivered, an RST or FIN from the path, a user timeout that fired); "lost",
/// "acknowledged but nothing arrived" and a failure need the whole wait.
pub fn unfinished(result: PathResult, near: Option<Verdict>) -> bool {
    match result {
        PathResult::Lost | PathResult::Failed | PathResult::Interrupted => true,
        PathResult::BlackHoled => near != Some(Verdict::Timeout),
        _ => false,
    }
}

/// What the idle cases say together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bracket {
    /// The longest idle that survived below the first failure (zero: none did).
    pub lo: Duration,
    /// The shortest idle that failed.
    pub hi: Option<Duration>,
    /// What that failure was.
    pub behaviour: Option<PathResult>,
}

/// The bracket from idle results (`failed` ones say nothing and are left out);
/// `None` without any judged idle case.
pub fn bracket(results: &[(Duration, PathResult)]) -> Option<Bracket> {
    let judged: Vec<&(Duration, PathResult)> = results
        .iter()
        .filter(|(_, r)| *r == PathResult::Delivered || r.idle_failure())
        .collect();
    if judged.is_empty() {
        return None;
    }
    let first_failure = judged
        .iter()
        .filter(|(_, r)| r.idle_failure())
        .min_by_key(|(d, _)| *d);
    let hi = first_failure.map(|(d, _)| *d);
    let lo = judged
        .iter()
        .filter(|(d, r)| *r == PathResult::Delivered && hi.is_none_or(|hi| *d < hi))
        .map(|(d, _)| *d)
        .max()
        .unwrap_or(Duration::ZERO);
    Some(Bracket {
        lo,
        hi,
        behaviour: first_failure.map(|(_, r)| *r),
    })
}

/// Keepalive settings that send something before the path forgets: the first
/// probe at half the longest idle that survived (whole seconds, at least 1 s),
/// the next ones at half that again.
pub fn keepalive_advice(lo: Duration) -> KeepaliveAdvice {
    let idle_s = (lo.as_secs() / 2).max(1);
    KeepaliveAdvice {
        idle_s,
        intvl_s: (idle_s / 2).max(1),
        cnt: 3,
    }
}

/// The advice that follows from the bracket: in words, and the TCP keepalive
/// settings it names (`None` when it names none: keepalive would not keep the
/// connection, or the bracket is too coarse to say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice {
    pub keepalive: Option<KeepaliveAdvice>,
    pub text: String,
}

/// The advice that follows from the bracket.
pub fn advice(b: &Bracket) -> Option<Advice> {
    let hi = b.hi?;
    if b.lo.is_zero() {
        return Some(Advice {
            keepalive: None,
            text: format!(
                "even the shortest idle period tried ({}) failed: try a ladder of shorter steps (--idle-ladder)",
                fmt_us(micros(hi))
            ),
        });
    }
    let ka = keepalive_advice(b.lo);
    if b.behaviour == Some(PathResult::Closed) {
        // Only a box that ends TCP itself can send a FIN in the far end's name: a
        // proxy, whose idle timer counts data. Its own kernel answers keepalive
        // probes, so they do not keep the connection through it alive: no
        // keepalive settings are advised.
        let text = format!(
            "send data on every connection more often than every {}: the FIN came from a \
             proxy, whose idle timer counts data, not TCP keepalive probes (its own kernel \
             answers them), so TCP keepalive will not help: an application heartbeat, or a \
             longer idle timeout on the proxy",
            fmt_us(micros(b.lo))
        );
        return Some(Advice {
            keepalive: None,
            text,
        });
    }
    let text = format!(
        "send something on every connection more often than every {}: e.g. TCP keepalive with \
         TCP_KEEPIDLE={}s TCP_KEEPINTVL={}s TCP_KEEPCNT={} (`--keepalive {}s,{}s,{}`), or an \
         application heartbeat",
        fmt_us(micros(b.lo)),
        ka.idle_s,
        ka.intvl_s,
        ka.cnt,
        ka.idle_s,
        ka.intvl_s,
        ka.cnt
    );
    Some(Advice {
        keepalive: Some(ka),
        text,
    })
}

/// The keepalive `--confirm-keepalive` tries: the advised one, or when the advice
/// names none, the one the bracket would give, so that the run shows whether
/// keepalive indeed does not keep the connection.
pub fn keepalive_to_try(b: &Bracket, advice: &Advice) -> KeepaliveAdvice {
    advice.keepalive.unwrap_or_else(|| keepalive_advice(b.lo))
}

/// The expectation misses, in words (empty: all met).
pub fn misses(
    cases: &[PathCase],
    summary: &PathSummary,
    faithful: bool,
    idle_over: Option<Duration>,
) -> Vec<String> {
    let mut out = Vec::new();
    if faithful {
        for c in cases.iter().filter(|c| c.test != PathTest::Idle) {
            if c.result != PathResult::Faithful {
                out.push(format!(
                    "{} {}: {} ({}), expected faithful",
                    c.test,
                    c.direction,
                    c.result.name(),
                    c.note
                ));
            }
        }
    }
    if let Some(over) = idle_over {
        let want = micros(over);
        match (summary.idle_timeout_min_us, summary.idle_timeout_max_us) {
            (Some(lo), _) if lo >= want => {}
            (Some(lo), Some(hi)) => out.push(format!(
                "idle timeout between {} and {}, expected over {}",
                fmt_us(lo),
                fmt_us(hi),
                fmt_us(want)
            )),
            (Some(lo), None) => out.push(format!(
                "an idle period of {} survived, but none of {} was tried (raise --max-idle)",
                fmt_us(lo),
                fmt_us(want)
            )),
            (None, _) => out.push(format!(
                "no idle period was judged, expected an idle timeout over {}",
                fmt_us(want)
            )),
        }
    }
    out
}

/// Which test a connection was: its token, direction and test, and for `idle`
/// its idle period and the ladder it was on.
#[derive(Debug, Clone, Copy)]
pub struct Which<'a> {
    pub token: &'a str,
    pub direction: Direction,
    pub test: PathTest,
    pub idle: Option<(Duration, u32)>,
}

/// A case of a batch that was interrupted: `interrupted` unless what it saw
/// stands without the rest of the wait.
pub fn cut_short(case: PathCase, near: Option<&Report>, interrupted: bool) -> PathCase {
    if !interrupted || !unfinished(case.result, near.map(|r| r.verdict)) {
        return case;
    }
    PathCase {
        result: PathResult::Interrupted,
        note: "interrupted before the test finished: not judged".into(),
        ..case
    }
}

/// The first event's time that matches.
fn first_t(report: &Report, f: impl Fn(&Event) -> bool) -> Option<u64> {
    report.events.iter().find(|e| f(e)).map(|e| e.t_us)
}

/// Bytes of successful events of `kind` at or after `from`.
fn bytes_after(report: &Report, kind: EventKind, from: u64) -> u64 {
    report
        .events
        .iter()
        .filter(|e| e.kind == kind && e.t_us >= from && e.errno.is_none())
        .filter_map(|e| e.bytes)
        .sum()
}

/// `extra_us` of a near-to-far ending: the far end's time to the ending's arrival
/// minus the near end's time to its action, both counted from one line's trip.
/// That line is the mark (`mark`: its arrival at the far end, µs from the
/// greeting's, and its sending at the near end): the path is connected end to
/// end when it leaves, so its trip is what data takes. Without a mark (a far end
/// that does not answer one) the greeting is the line, and its trip includes
/// whatever held the greeting back — a proxy's connect to its upstream.
/// `arrived`: the ending's arrival at the far end (µs from the greeting's);
/// `greeting_t`, `acted`: the near end's times of sending it and of acting.
pub fn near_to_far_extra(
    arrived: Option<u64>,
    mark: Option<(u64, u64)>,
    greeting_t: Option<u64>,
    acted: u64,
) -> Option<u64> {
    let arrived = arrived?;
    let (far_from, near_from) = match mark {
        Some((far_us, near_t)) => (far_us, near_t),
        None => (0, greeting_t?),
    };
    Some(
        arrived
            .saturating_sub(far_from)
            .saturating_sub(acted.saturating_sub(near_from)),
    )
}

/// Judges one ending test from the near end's report and the far end's.
pub fn ending(
    spec: Which<'_>,
    near: Option<&Report>,
    far: Result<&FarView, FarMissing>,
) -> PathCase {
    let fail = |why: &str| {
        crate::report::path::case(
            spec.test,
            spec.direction,
            spec.token,
            PathResult::Failed,
            why.into(),
        )
    };
    let Some(near) = near else {
        return fail("no report from the near end (interrupted?)");
    };
    let far = match far {
        Ok(far) => far,
        Err(missing) => return fail(missing.words()),
    };
    // The far end's own ending (its --timeout, a stop) is not the test's.
    if let Some(why) = far.ended_by.filter(|w| *w != FarEnding::Test) {
        return PathCase {
            far: Some(far.clone()),
            ..fail(&format!(
                "the far end ended the connection itself ({}): not the path's doing",
                why.words()
            ))
        };
    }
    let greeting_t = first_t(near, |e| {
        e.kind == EventKind::Send && e.bytes.is_some_and(|b| b > 0)
    });
    let ack_t = first_t(near, |e| {
        e.kind == EventKind::Recv && e.bytes.is_some_and(|b| b > 0)
    });
    let (sent, arrived, extra, after_fin) = match spec.direction {
        Direction::NearToFar => {
            let Some(acted) = near.close_t_us.filter(|_| near.close.is_some()) else {
                return fail("the near end never got to end the connection");
            };
            let sent = Ending::sent_by(
                near.close.unwrap_or(CloseMode::Fin),
                near.verdict == Verdict::Rst,
            );
            // The mark is the near end's first send after its greeting.
            let mark_t = near
                .events
                .iter()
                .filter(|e| e.kind == EventKind::Send && e.errno.is_none())
                .filter(|e| e.bytes.is_some_and(|b| b > 0))
                .nth(1)
                .map(|e| e.t_us);
            let extra =
                near_to_far_extra(far.arrived_us, far.mark_us.zip(mark_t), greeting_t, acted);
            let after_fin = (spec.test == PathTest::Half).then(|| AfterFin {
                sent: far.sent_after_peer_end,
                arrived: bytes_after(near, EventKind::Recv, acted),
            });
            (sent, far.arrived, extra, after_fin)
        }
        Direction::FarToNear => {
            let Some(sent) = far.sent else {
                return fail("the far end did not end the connection");
            };
            let end_t = first_t(near, |e| {
                (e.kind == EventKind::Recv && (e.bytes == Some(0) || e.errno.is_some()))
                    || (matches!(e.kind, EventKind::SoError | EventKind::Send) && e.errno.is_some())
            });
            // The far end ended this long after its answer to the greeting; the
            // answer's own trip is the baseline.
            let extra = match (end_t, ack_t, far.sent_us) {
                (Some(end), Some(ack), Some(far_us)) => {
                    Some(end.saturating_sub(ack).saturating_sub(far_us))
                }
                _ => None,
            };
            let after_fin = (spec.test == PathTest::Half).then(|| AfterFin {
                sent: end_t.map_or(0, |t| bytes_after(near, EventKind::Send, t)),
                arrived: far.bytes_after_own_end,
            });
            (sent, Ending::of_verdict(near.verdict), extra, after_fin)
        }
    };
    let (result, note) = fidelity(sent, arrived, extra, after_fin);
    PathCase {
        sent: Some(sent),
        arrived: Some(arrived),
        extra_us: extra,
        after_fin,
        far: Some(far.clone()),
        ..crate::report::path::case(spec.test, spec.direction, spec.token, result, note)
    }
}

/// Judges one idle connection.
pub fn idle_case(
    spec: Which<'_>,
    near: Option<&Report>,
    far: Result<&FarView, FarMissing>,
    wait: Duration,
) -> PathCase {
    let (period, ladder) = spec.idle.unwrap_or_default();
    let (result, note) = match near {
        Some(near) => idle(near.verdict, near.fin_before_rst == Some(true), far, wait),
        None => (
            PathResult::Failed,
            "no report from the near end (interrupted?)".into(),
        ),
    };
    let arrived = match far {
        Ok(f) if f.bytes_after_greeting > 0 => Ending::Data,
        _ => Ending::Nothing,
    };
    PathCase {
        sent: Some(Ending::Data),
        arrived: Some(arrived),
        idle_us: Some(micros(period)),
        ladder: Some(ladder),
        far: far.ok().cloned(),
        ..crate::report::path::case(spec.test, spec.direction, spec.token, result, note)
    }
}

/// Each idle case's period and result.
pub fn idle_results(cases: &[PathCase]) -> Vec<(Duration, PathResult)> {
    cases
        .iter()
        .filter(|c| c.ladder != Some(3))
        .filter_map(|c| c.idle_us.map(|us| (Duration::from_micros(us), c.result)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn fidelity_table() {
        use PathResult::*;
        let half = |sent, arrived| Some(AfterFin { sent, arrived });
        let cases = [
            ("fin", "fin", Some(40), None, Faithful, "FIN arrived as FIN"),
            (
                "rst",
                "fin",
                Some(40),
                None,
                Rewritten,
                "RST arrived as FIN",
            ),
            ("fin", "rst", None, None, Rewritten, "FIN arrived as RST"),
            ("rst", "nothing", None, None, Lost, "RST sent, nothing"),
            ("fin", "fin", Some(250_000), None, Delayed, "250.0ms later"),
            (
                "fin",
                "fin",
                Some(90),
                half(26, 26),
                Faithful,
                "then 26 bytes",
            ),
            (
                "fin",
                "fin",
                Some(90),
                half(26, 0),
                Rewritten,
                "half-close not kept",
            ),
            (
                "fin",
                "fin",
                None,
                half(0, 0),
                Rewritten,
                "no data could be sent",
            ),
        ];
        for (sent, arrived, extra, after, want, words) in cases {
            let (sent, arrived) = (Ending::from_name(sent), Ending::from_name(arrived));
            let (got, note) = fidelity(sent, arrived, extra, after);
            assert_eq!(got, want, "{sent} → {arrived}: {note}");
            assert!(note.contains(words), "{note:?} lacks {words:?}");
        }
    }

    #[test]
    fn the_mark_not_the_greeting_is_the_baseline_near_to_far() {
        // Through a proxy that connects upstream 250 ms after the greeting came and
        // holds the near end's FIN 400 ms (one-way trips of 1 ms). Near end: the
        // greeting sent at 0, its answer at 252 ms, the mark sent then, its answer
        // at 254 ms, the action then. Far end (µs from the greeting's arrival at
        // 251 ms): the mark at 2 ms, the FIN at 2 + 1 + 1 + 400 = 404 ms.
        let ms = |m: u64| m * 1000;
        let extra = near_to_far_extra(Some(ms(404)), Some((ms(2), ms(252))), Some(0), ms(254));
        assert_eq!(extra, Some(ms(400)));
        // From the greeting, the upstream connect hides 250 ms of the delay.
        let from_greeting = near_to_far_extra(Some(ms(404)), None, Some(0), ms(254));
        assert_eq!(from_greeting, Some(ms(150)));
        // Without anything to count from, nothing is measured.
        assert_eq!(near_to_far_extra(None, Some((1, 1)), Some(0), 5), None);
        assert_eq!(near_to_far_extra(Some(9), None, None, 5), None);
        // A negative difference (clock noise) is no delay.
        assert_eq!(
            near_to_far_extra(Some(10), Some((5, 0)), Some(0), 100),
            Some(0)
        );
    }

    fn far(sent: Option<(&str, FarEnding)>, got: u64) -> FarView {
        FarView {
            kind: "path-far".into(),
            token: "t".into(),
            test: "near-to-far idle".into(),
            open: sent.is_none(),
            arrived: Ending::Nothing,
            arrived_us: None,
            mark_us: None,
            sent: sent.map(|(s, _)| Ending::from_name(s)),
            sent_us: sent.map(|_| 1_500_000),
            ended_by: sent.map(|(_, why)| why),
            bytes_after_greeting: got,
            bytes_after_own_end: 0,
            sent_after_peer_end: 0,
            last_data_us: None,
        }
    }

    #[test]
    fn idle_table() {
        use PathResult::*;
        let wait = s(3.0);
        let cases = [
            (
                Verdict::Open,
                Ok(far(None, 16)),
                Delivered,
                "16 bytes arrived",
            ),
            (Verdict::Rst, Ok(far(None, 0)), Reset, "never sent"),
            (Verdict::Fin, Ok(far(None, 0)), Closed, "never sent"),
            (Verdict::Timeout, Ok(far(None, 0)), BlackHoled, "3.000s"),
            (Verdict::Open, Ok(far(None, 0)), BlackHoled, "acknowledged"),
            (Verdict::Refused, Ok(far(None, 0)), Failed, "refused"),
            // The far end's own ending is never the path's.
            (
                Verdict::Fin,
                Ok(far(Some(("fin", FarEnding::Timeout)), 16)),
                Failed,
                "its --timeout ran out; it sent FIN",
            ),
            (
                Verdict::Rst,
                Ok(far(Some(("rst", FarEnding::Stopped)), 0)),
                Failed,
                "it was stopped; it sent RST",
            ),
            (
                Verdict::Open,
                Ok(far(Some(("fin", FarEnding::Timeout)), 16)),
                Failed,
                "ended the connection itself",
            ),
            // Without the far end's account, nothing is judged.
            (
                Verdict::Fin,
                Err(FarMissing::Unknown),
                Failed,
                "--max-conns",
            ),
            (Verdict::Rst, Err(FarMissing::Unknown), Failed, "restarted"),
            (
                Verdict::Open,
                Err(FarMissing::NoAnswer),
                Failed,
                "no report",
            ),
            (Verdict::Timeout, Err(FarMissing::Busy), Failed, "busy"),
        ];
        for (verdict, far, want, words) in cases {
            let (got, note) = idle(verdict, false, far.as_ref().map_err(|m| *m), wait);
            assert_eq!(got, want, "{verdict}: {note}");
            assert!(note.contains(words), "{note:?} lacks {words:?}");
        }
    }

    #[test]
    fn a_fin_then_an_rst_from_the_path_is_closed_whichever_the_near_end_saw_first() {
        let wait = s(1.0);
        let quiet = far(None, 0);
        // The near end read the FIN with the RST already there (`rst`, FIN then
        // RST), or before it came (`fin`): the same ending of the path's.
        let (both, note) = idle(Verdict::Rst, true, Ok(&quiet), wait);
        assert_eq!(both, PathResult::Closed, "{note}");
        assert!(note.contains("FIN, then RST"), "{note}");
        assert!(!note.contains("answered for it"), "{note}");
        let (fin, _) = idle(Verdict::Fin, false, Ok(&quiet), wait);
        assert_eq!(fin, PathResult::Closed);
        // An RST alone is still the path answering for the far end.
        let (rst, note) = idle(Verdict::Rst, false, Ok(&quiet), wait);
        assert_eq!(rst, PathResult::Reset, "{note}");
        // The far end's own ending stays `failed`, FIN first or not.
        let own = far(Some(("rst", FarEnding::Timeout)), 0);
        let (failed, _) = idle(Verdict::Rst, true, Ok(&own), wait);
        assert_eq!(failed, PathResult::Failed);
    }

    #[test]
    fn an_interruption_leaves_only_what_was_seen_in_full() {
        use PathResult::*;
        for (result, near, cut) in [
            (Delivered, Some(Verdict::Open), false),
            (Reset, Some(Verdict::Rst), false),
            (Closed, Some(Verdict::Fin), false),
            (Faithful, Some(Verdict::Fin), false),
            (Rewritten, Some(Verdict::Fin), false),
            (BlackHoled, Some(Verdict::Timeout), false),
            (BlackHoled, Some(Verdict::Open), true),
            (Lost, Some(Verdict::Open), true),
            (Failed, None, true),
        ] {
            assert_eq!(unfinished(result, near), cut, "{result:?} {near:?}");
        }
    }

    #[test]
    fn brackets() {
        use PathResult::*;
        assert_eq!(bracket(&[]), None);
        assert_eq!(bracket(&[(s(1.0), Failed)]), None);
        let all = [
            (s(1.0), Delivered),
            (s(2.0), Delivered),
            (s(4.0), Delivered),
        ];
        assert_eq!(
            bracket(&all),
            Some(Bracket {
                lo: s(4.0),
                hi: None,
                behaviour: None
            })
        );
        // A survivor above the first failure (a flaky path) does not raise the floor.
        let mixed = [
            (s(1.0), Delivered),
            (s(2.8), Delivered),
            (s(3.2), BlackHoled),
            (s(4.0), Delivered),
            (s(8.0), Reset),
        ];
        assert_eq!(
            bracket(&mixed),
            Some(Bracket {
                lo: s(2.8),
                hi: Some(s(3.2)),
                behaviour: Some(BlackHoled)
            })
        );
        let none = [(s(1.0), Closed)];
        assert_eq!(bracket(&none).map(|b| b.lo), Some(Duration::ZERO));
    }

    #[test]
    fn advice_stays_below_the_bracket() {
        let b = Bracket {
            lo: s(290.0),
            hi: Some(s(300.0)),
            behaviour: Some(PathResult::BlackHoled),
        };
        let Advice { keepalive, text } = advice(&b).expect("advice");
        assert_eq!(
            keepalive,
            Some(KeepaliveAdvice {
                idle_s: 145,
                intvl_s: 72,
                cnt: 3
            })
        );
        assert!(text.contains("--keepalive 145s,72s,3"), "{text}");
        assert!(text.contains("TCP keepalive"), "{text}");
        let short = keepalive_advice(s(2.8));
        assert_eq!((short.idle_s, short.intvl_s), (1, 1));
        assert!(
            advice(&Bracket {
                lo: s(4.0),
                hi: None,
                behaviour: None
            })
            .is_none()
        );
    }

    #[test]
    fn advice_through_a_proxy_that_closes_is_data_not_keepalive() {
        let b = Bracket {
            lo: s(1.8),
            hi: Some(s(2.1)),
            behaviour: Some(PathResult::Closed),
        };
        let closed = advice(&b).expect("advice");
        let text = &closed.text;
        assert!(text.starts_with("send data on every connection more often than every 1.800s"));
        assert!(text.contains("application heartbeat"), "{text}");
        assert!(text.contains("keepalive will not help"), "{text}");
        assert!(!text.contains("--keepalive"), "{text}");
        // The summary's `keepalive` agrees with the words: none advised (nginx
        // `stream`, socat -T and HAProxy all close with a FIN).
        assert_eq!(closed.keepalive, None);
        // `--confirm-keepalive` still tries the keepalive the bracket gives, to
        // show that it fails.
        let tried = keepalive_to_try(&b, &closed);
        assert_eq!((tried.idle_s, tried.intvl_s, tried.cnt), (1, 1, 3));
        for behaviour in [PathResult::Reset, PathResult::BlackHoled] {
            let other = advice(&Bracket {
                behaviour: Some(behaviour),
                ..b
            })
            .expect("advice");
            assert!(
                other.text.contains("--keepalive 1s,1s,3"),
                "{behaviour:?}: {}",
                other.text
            );
            assert_eq!(other.keepalive, Some(tried), "{behaviour:?}");
            assert_eq!(keepalive_to_try(&b, &other), tried);
        }
    }

    #[test]
    fn keepalive_is_advised_exactly_when_the_words_name_it() {
        for lo in [0.0, 1.8, 290.0] {
            for behaviour in [
                PathResult::Reset,
                PathResult::Closed,
                PathResult::BlackHoled,
            ] {
                let b = Bracket {
                    lo: s(lo),
                    hi: Some(s(lo + 1.0)),
                    behaviour: Some(behaviour),
                };
                let a = advice(&b).expect("advice");
                assert_eq!(
                    a.keepalive.is_some(),
                    a.text.contains("--keepalive"),
                    "{lo} s {behaviour:?}: {a:?}"
                );
            }
        }
    }
}
