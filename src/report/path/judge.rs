//! `tcpbye path`: the judgement — what was sent vs what arrived for each
//! ending, what happened to each idle connection, the idle ladders and the
//! bracket they give, and the advice that follows.

use std::time::Duration;

use super::{
    AfterFin, FarEnding, FarMissing, FarView, KeepaliveAdvice, PathCase, PathResult, PathSummary,
};
use crate::report::{fmt_us, micros};
use crate::vocab::{PathTest, Verdict};

/// An ending that arrives this much later than data takes is `delayed`. Far
/// above loopback's tens of µs and a proxy's own scheduling, far below a
/// retransmission timeout (200 ms at least on Linux): a path that holds an
/// ending back until some timer fires shows up, one that forwards it does not.
pub const DELAY_LIMIT_US: u64 = 100_000;
/// The first ladder has at most this many steps…
pub const LADDER_STEPS: usize = 8;
/// …none shorter than this (shorter idle periods say nothing about a middlebox).
pub const LADDER_FLOOR: Duration = Duration::from_secs(1);
/// The refining ladder: this many steps evenly between the last survivor and the first failure…
pub const REFINE_STEPS: u32 = 4;
/// …unless the two are already this close.
pub const REFINE_RESOLUTION: Duration = Duration::from_millis(200);

/// `fin`/`rst` in capitals, for "RST arrived as FIN".
fn loud(what: &str) -> String {
    what.to_uppercase()
}

/// Judges one ending: `sent` by one end, `arrived` at the other.
pub fn fidelity(
    sent: &str,
    arrived: &str,
    extra_us: Option<u64>,
    after_fin: Option<AfterFin>,
) -> (PathResult, String) {
    if arrived == "nothing" {
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

/// Judges one idle connection from the near end's verdict and the far end's
/// report. Without the far end's report, or when the far end ended the
/// connection itself (its `--timeout`, a stop), the step says nothing about the
/// path: `failed`, with the reason, and left out of the bracket.
pub fn idle(
    near: Verdict,
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
                loud(sent)
            ),
        );
    }
    let far_got = far.bytes_after_greeting;
    match near {
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

/// The first ladder: `max`, `max/2`, `max/4`, … while not below [`LADDER_FLOOR`],
/// at most [`LADDER_STEPS`], shortest first. Doubling steps find a timeout of any
/// size with few connections; the refining ladder then narrows it.
pub fn first_ladder(max: Duration) -> Vec<Duration> {
    let mut steps = vec![max];
    let mut step = max;
    while steps.len() < LADDER_STEPS {
        step /= 2;
        if step < LADDER_FLOOR {
            break;
        }
        steps.push(step);
    }
    steps.reverse();
    steps
}

/// The refining ladder: [`REFINE_STEPS`] steps evenly between `lo` (survived) and
/// `hi` (failed), none when they are already within [`REFINE_RESOLUTION`].
pub fn refine(lo: Duration, hi: Duration) -> Vec<Duration> {
    if hi <= lo || hi - lo <= REFINE_RESOLUTION {
        return Vec::new();
    }
    let gap = hi - lo;
    (1..=REFINE_STEPS)
        .map(|i| lo + gap * i / (REFINE_STEPS + 1))
        .collect()
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

/// The advice that follows from the bracket, in words.
pub fn advice(b: &Bracket) -> Option<(KeepaliveAdvice, String)> {
    let hi = b.hi?;
    if b.lo.is_zero() {
        let ka = keepalive_advice(Duration::ZERO);
        return Some((
            ka,
            format!(
                "even the shortest idle period tried ({}) failed: try a ladder of shorter steps (--idle-ladder)",
                fmt_us(micros(hi))
            ),
        ));
    }
    let ka = keepalive_advice(b.lo);
    if b.behaviour == Some(PathResult::Closed) {
        // Only a box that ends TCP itself can send a FIN in the far end's name: a
        // proxy, whose idle timer counts data. Its own kernel answers keepalive
        // probes, so they do not keep the connection through it alive.
        let text = format!(
            "send data on every connection more often than every {}: the FIN came from a \
             proxy, whose idle timer counts data, not TCP keepalive probes (its own kernel \
             answers them): an application heartbeat, or a longer idle timeout on the proxy",
            fmt_us(micros(b.lo))
        );
        return Some((ka, text));
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
    Some((ka, text))
}

/// The bracket in words, for the table.
pub fn bracket_words(s: &PathSummary) -> Option<String> {
    let lo = s.idle_timeout_min_us?;
    Some(match (s.idle_timeout_max_us, s.idle_behaviour) {
        (None, _) if lo >= s.max_idle_us => format!(
            "no idle timeout up to --max-idle {}: the longest idle period tried ({}) was delivered",
            fmt_us(s.max_idle_us),
            fmt_us(lo)
        ),
        // Longer steps failed (or never ran): nothing is said of them.
        (None, _) => format!(
            "no idle timeout up to {}, the longest idle period judged; none longer, up to \
             --max-idle {}, was judged",
            fmt_us(lo),
            fmt_us(s.max_idle_us)
        ),
        (Some(hi), behaviour) => {
            let after = match behaviour {
                Some(PathResult::Reset) => "the path answers with an RST",
                Some(PathResult::Closed) => "the path closes the connection with a FIN",
                Some(PathResult::BlackHoled) => "the path drops silently",
                _ => "the connection fails",
            };
            format!(
                "idle timeout between {} and {}; after it {after}",
                fmt_us(lo),
                fmt_us(hi)
            )
        }
    })
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
            let (got, note) = fidelity(sent, arrived, extra, after);
            assert_eq!(got, want, "{sent} → {arrived}: {note}");
            assert!(note.contains(words), "{note:?} lacks {words:?}");
        }
    }

    fn far(sent: Option<(&str, FarEnding)>, got: u64) -> FarView {
        FarView {
            kind: "path-far".into(),
            token: "t".into(),
            test: "near-to-far idle".into(),
            open: sent.is_none(),
            arrived: "nothing".into(),
            arrived_us: None,
            sent: sent.map(|(s, _)| s.to_owned()),
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
            let (got, note) = idle(verdict, far.as_ref().map_err(|m| *m), wait);
            assert_eq!(got, want, "{verdict}: {note}");
            assert!(note.contains(words), "{note:?} lacks {words:?}");
        }
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
    fn ladders() {
        assert_eq!(first_ladder(s(8.0)), vec![s(1.0), s(2.0), s(4.0), s(8.0)]);
        let long = first_ladder(s(600.0));
        assert_eq!(long.len(), LADDER_STEPS);
        assert_eq!(long[0], s(4.6875));
        assert_eq!(long[7], s(600.0));
        assert_eq!(first_ladder(s(0.5)), vec![s(0.5)]);
        assert_eq!(refine(s(2.0), s(4.0)), vec![s(2.4), s(2.8), s(3.2), s(3.6)]);
        assert!(refine(s(2.0), s(2.1)).is_empty());
        assert!(refine(s(4.0), s(2.0)).is_empty());
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
        let (ka, text) = advice(&b).expect("advice");
        assert_eq!(
            ka,
            KeepaliveAdvice {
                idle_s: 145,
                intvl_s: 72,
                cnt: 3
            }
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
        let (ka, text) = advice(&b).expect("advice");
        assert_eq!((ka.idle_s, ka.intvl_s), (1, 1));
        assert!(text.starts_with("send data on every connection more often than every 1.800s"));
        assert!(text.contains("application heartbeat"), "{text}");
        assert!(!text.contains("--keepalive"), "{text}");
        for behaviour in [PathResult::Reset, PathResult::BlackHoled] {
            let (_, text) = advice(&Bracket {
                behaviour: Some(behaviour),
                ..b
            })
            .expect("advice");
            assert!(
                text.contains("--keepalive 1s,1s,3"),
                "{behaviour:?}: {text}"
            );
        }
    }
}
