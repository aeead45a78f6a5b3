//! `tcpbye path`: what the network between two ends did to each ending and to
//! idle connections — the model (`path-far`, `path-case`, `path-summary` in
//! docs/json.md) and the tables for people. The judgement is in [`judge`].

use serde::{Deserialize, Serialize};

use super::{SCHEMA, fmt_us};
use crate::vocab::{CloseMode, Direction, PathTest, Verdict};

/// What one end of a `path` test sent, or saw arrive: an ending, data, or nothing.
/// In JSON its name: `fin`, `rst`, `data`, `nothing`, or the verdict of another
/// end (`timeout`, …); a name this version does not know reads as `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Fin,
    Rst,
    /// The `idle` test's data.
    Data,
    Nothing,
    /// The connection ended some other way (its verdict).
    Ended(Verdict),
    Unknown,
}

impl Ending {
    /// What a connection that ended with `verdict` saw arrive (`open`: nothing).
    pub fn of_verdict(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Fin => Self::Fin,
            Verdict::Rst => Self::Rst,
            Verdict::Open => Self::Nothing,
            other => Self::Ended(other),
        }
    }

    /// What a closer sent: an RST for `rst`, and for `rst-unread` when its close
    /// found data unread (`reset`); otherwise a FIN.
    pub fn sent_by(mode: CloseMode, reset: bool) -> Self {
        match mode {
            CloseMode::Rst => Self::Rst,
            CloseMode::RstUnread if reset => Self::Rst,
            _ => Self::Fin,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Data => "data",
            Self::Nothing => "nothing",
            Self::Ended(verdict) => verdict.name(),
            Self::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Self {
        match name {
            "fin" => Self::Fin,
            "rst" => Self::Rst,
            "data" => Self::Data,
            "nothing" => Self::Nothing,
            other => Verdict::ALL
                .into_iter()
                .find(|v| v.name() == other)
                .map_or(Self::Unknown, Self::of_verdict),
        }
    }
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn name_or_dash<S: serde::Serializer>(
    ending: &Option<Ending>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(ending.map_or("-", Ending::name))
}

impl Serialize for Ending {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Ending {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Self::from_name(&name))
    }
}

/// What the far end (`serve`) saw of one test connection: the answer to a
/// control connection's `REPORT` question. Times are µs from the arrival of the
/// connection's greeting at the far end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarView {
    /// `path-far`.
    pub kind: String,
    pub token: String,
    /// `<direction> <test>` as the greeting named them.
    pub test: String,
    /// The connection is still open at the far end.
    pub open: bool,
    /// What arrived from the near end: `fin`, `rst`, `nothing` (or another verdict).
    pub arrived: Ending,
    pub arrived_us: Option<u64>,
    /// Near-to-far endings: when the near end's mark arrived (its line after the
    /// answer to the greeting, whose trip is the baseline of `extra_us`); null
    /// without one (and from a far end older than the mark).
    #[serde(default)]
    pub mark_us: Option<u64>,
    /// What the far end itself sent to end the connection: `fin`, `rst`, or null.
    pub sent: Option<Ending>,
    pub sent_us: Option<u64>,
    /// Why the far end sent `sent`; null when it did not end the connection.
    #[serde(default)]
    pub ended_by: Option<FarEnding>,
    /// Bytes received after the greeting line.
    pub bytes_after_greeting: u64,
    /// Bytes received after the far end's own ending (its half-close).
    pub bytes_after_own_end: u64,
    /// Bytes sent after the near end's FIN arrived (the half-close test's data).
    pub sent_after_peer_end: u64,
    /// When the last data arrived.
    pub last_data_us: Option<u64>,
}

/// Why the far end ended a test connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FarEnding {
    /// The test asked it to (the far-to-near endings).
    Test,
    /// serve's own `--timeout` ran out.
    Timeout,
    /// serve was stopped (a signal, or `--once` done).
    Stopped,
    /// A reason this version does not know (a newer far end).
    #[serde(other)]
    Other,
}

impl FarEnding {
    /// In words, after "the far end ended the connection itself: ".
    pub fn words(self) -> &'static str {
        match self {
            Self::Test => "as the test asked",
            Self::Timeout => "its --timeout ran out",
            Self::Stopped => "it was stopped",
            Self::Other => "for a reason of its own",
        }
    }
}

/// Why there is no far end's report of a test connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarMissing {
    /// The far end knows no connection by that token: the greeting never
    /// reached it (the connection was refused, e.g. by serve's `--max-conns`), or
    /// it was restarted since.
    Unknown,
    /// Every control slot of the far end was taken, each time it was asked.
    Busy,
    /// No answer: the far end could not be reached, or answered something else.
    NoAnswer,
}

impl FarMissing {
    pub fn words(self) -> &'static str {
        match self {
            Self::Unknown => {
                "the far end has no record of this connection: it never saw the greeting \
                 (refused, e.g. by serve's --max-conns) or it restarted since"
            }
            Self::Busy => {
                "the far end was busy (all its control connections taken) each time it was asked"
            }
            Self::NoAnswer => {
                "no report from the far end: it could not be reached, or did not answer"
            }
        }
    }
}

/// How one test came through the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathResult {
    /// The ending arrived as it was sent (and, for `half`, data after the FIN too).
    Faithful,
    /// Something else arrived: an RST as a FIN, a FIN as an RST, or a half-close
    /// whose data after the FIN did not arrive.
    Rewritten,
    /// Nothing arrived within `--wait`.
    Lost,
    /// The ending arrived as sent, but later than data takes (`extra_us`).
    Delayed,
    /// `idle`: the data sent after the idle period arrived.
    Delivered,
    /// `idle`: an RST that the far end never sent: the path answered for it.
    Reset,
    /// `idle`: a FIN that the far end never sent: the path closed the connection.
    Closed,
    /// `idle`: nothing arrived and nothing answered; retransmissions until
    /// TCP_USER_TIMEOUT (`--wait`) gave up.
    BlackHoled,
    /// The test could not run (the connection failed, or no report from the far end).
    Failed,
    /// `tcpbye path` was interrupted before the test finished: nothing is judged.
    Interrupted,
}

impl PathResult {
    pub fn name(self) -> &'static str {
        match self {
            Self::Faithful => "faithful",
            Self::Rewritten => "rewritten",
            Self::Lost => "lost",
            Self::Delayed => "delayed",
            Self::Delivered => "delivered",
            Self::Reset => "reset",
            Self::Closed => "closed",
            Self::BlackHoled => "black-holed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }

    /// An idle connection that the path ended or forgot.
    pub fn idle_failure(self) -> bool {
        matches!(self, Self::Reset | Self::Closed | Self::BlackHoled)
    }
}

/// For `half`: data sent after the FIN by the end that did not half-close, and
/// how much of it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AfterFin {
    pub sent: u64,
    pub arrived: u64,
}

/// One test: `{"kind":"path-case", …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathCase {
    pub schema: u32,
    pub kind: &'static str,
    pub test: PathTest,
    pub direction: Direction,
    pub token: String,
    /// What the acting end sent: `fin`, `rst` (`data` for idle cases); `-` in
    /// JSON when the test failed before that was known.
    #[serde(serialize_with = "name_or_dash")]
    pub sent: Option<Ending>,
    /// What arrived at the other end: `fin`, `rst`, `nothing` (`data` for idle
    /// cases); `-` when not known.
    #[serde(serialize_with = "name_or_dash")]
    pub arrived: Option<Ending>,
    pub result: PathResult,
    /// How much later the ending arrived than data takes on this path (µs), when
    /// measured: the far end's time from the greeting to the ending minus the near
    /// end's, so the one-way trip of the greeting (or of the answer to it) is the baseline.
    pub extra_us: Option<u64>,
    /// `half`: data after the FIN, in the direction opposite to the FIN.
    pub after_fin: Option<AfterFin>,
    /// `idle`: how long the connection was idle before it sent.
    pub idle_us: Option<u64>,
    /// `idle`: from the first ladder (1), the refining one (2), or the keepalive
    /// confirmation (3, with the advised keepalive on).
    pub ladder: Option<u32>,
    /// The judgement in words.
    pub note: String,
    /// What the far end reported, as it answered.
    pub far: Option<FarView>,
}

/// Keepalive settings that keep a connection alive through the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepaliveAdvice {
    pub idle_s: u64,
    pub intvl_s: u64,
    pub cnt: u32,
}

/// After every case: `{"kind":"path-summary", …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathSummary {
    pub schema: u32,
    pub kind: &'static str,
    pub target: String,
    pub wait_us: u64,
    pub max_idle_us: u64,
    pub elapsed_us: u64,
    /// Ending cases, and how many came through faithful.
    pub endings: usize,
    pub faithful: usize,
    /// Cases that could not be judged (`failed`: no report from one end, or the far
    /// end ended the connection itself); they are left out of the bracket.
    pub failed: usize,
    /// The longest idle period that survived (0 when none did; null without idle cases).
    pub idle_timeout_min_us: Option<u64>,
    /// The shortest idle period the path did not survive; null when nothing failed
    /// up to `--max-idle`.
    pub idle_timeout_max_us: Option<u64>,
    /// What the path did after its idle timeout: `reset`, `closed`, `black-holed`, or null.
    pub idle_behaviour: Option<PathResult>,
    /// The TCP keepalive settings the advice names; null when it names none (the
    /// path closed idle connections with a FIN, so keepalive will not help; or
    /// even the shortest idle period failed).
    pub keepalive: Option<KeepaliveAdvice>,
    pub advice: Option<String>,
    /// `--confirm-keepalive`: the keepalive the confirming connection had (the
    /// advised one, or when none is advised, the one the bracket gives); null when
    /// not tried.
    pub keepalive_tried: Option<KeepaliveAdvice>,
    /// `--confirm-keepalive`: whether a connection with `keepalive_tried`, idle for
    /// twice `idle_timeout_max_us`, still delivered; null when not tried.
    pub keepalive_confirmed: Option<bool>,
    /// Each expectation missed, in words; empty when all were met.
    pub misses: Vec<String>,
    /// The run was interrupted (SIGINT, SIGTERM, SIGHUP): unfinished tests are
    /// `interrupted`, and left out of the bracket.
    pub interrupted: bool,
}

/// Every case and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathRun {
    pub cases: Vec<PathCase>,
    pub summary: PathSummary,
}

fn dash() -> String {
    "-".to_owned()
}

/// The tables: endings, then idle periods, then the summary and advice.
pub fn render(run: &PathRun, tty: bool, width: usize) -> String {
    let mut out = String::new();
    let endings: Vec<&PathCase> = run
        .cases
        .iter()
        .filter(|c| c.test != PathTest::Idle)
        .collect();
    if !endings.is_empty() {
        let mut t = super::table::table(tty);
        t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
            .set_width(u16::try_from(width).unwrap_or(u16::MAX));
        t.set_header(vec![
            "test",
            "direction",
            "sent",
            "arrived",
            "result",
            "extra",
            "note",
        ]);
        for c in endings {
            t.add_row(vec![
                c.test.to_string(),
                c.direction.to_string(),
                c.sent.map_or_else(dash, |e| e.name().to_owned()),
                c.arrived.map_or_else(dash, |e| e.name().to_owned()),
                c.result.name().to_owned(),
                c.extra_us.map_or_else(dash, fmt_us),
                c.note.clone(),
            ]);
        }
        out.push_str(&super::tidy(&t.to_string()));
        out.push('\n');
    }
    let idle: Vec<&PathCase> = run
        .cases
        .iter()
        .filter(|c| c.test == PathTest::Idle)
        .collect();
    if !idle.is_empty() {
        let mut t = super::table::table(tty);
        t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
            .set_width(u16::try_from(width).unwrap_or(u16::MAX));
        t.set_header(vec!["idle", "ladder", "result", "note"]);
        for c in idle {
            t.add_row(vec![
                c.idle_us.map_or_else(dash, fmt_us),
                c.ladder.map_or_else(dash, |l| l.to_string()),
                c.result.name().to_owned(),
                c.note.clone(),
            ]);
        }
        out.push_str(&super::tidy(&t.to_string()));
        out.push('\n');
    }
    let s = &run.summary;
    let mut lines = vec![if s.endings > 0 {
        format!(
            "{}: {} of {} endings faithful, in {}",
            s.target,
            s.faithful,
            s.endings,
            fmt_us(s.elapsed_us)
        )
    } else {
        format!("{}: measured in {}", s.target, fmt_us(s.elapsed_us))
    }];
    if s.interrupted {
        let unfinished = run
            .cases
            .iter()
            .filter(|c| c.result == PathResult::Interrupted)
            .count();
        let (tests, were) = if unfinished == 1 {
            ("test", "was")
        } else {
            ("tests", "were")
        };
        lines.push(format!(
            "interrupted: {unfinished} unfinished {tests} {were} not judged (left out of the bracket)"
        ));
    }
    if s.failed > 0 {
        let first = run
            .cases
            .iter()
            .find(|c| c.result == PathResult::Failed)
            .map_or("", |c| c.note.as_str());
        let were = if s.failed == 1 { "was" } else { "were" };
        lines.push(format!(
            "{} of {} tests failed and {were} not judged (left out of the bracket); first: {first}",
            s.failed,
            run.cases.len()
        ));
    }
    if let Some(line) = bracket_words(s) {
        lines.push(line);
    }
    if let Some(advice) = &s.advice {
        lines.push(format!("advice: {advice}"));
    }
    if let Some(line) = confirmation_words(s) {
        lines.push(line);
    }
    for line in lines {
        out.push_str(&super::wrap(&line, width.max(40)));
        out.push('\n');
    }
    super::tidy(&out)
}

/// A `path-case` with the fields every case has.
pub fn case(
    test: PathTest,
    direction: Direction,
    token: &str,
    result: PathResult,
    note: String,
) -> PathCase {
    PathCase {
        schema: SCHEMA,
        kind: "path-case",
        test,
        direction,
        token: token.to_owned(),
        sent: None,
        arrived: None,
        result,
        extra_us: None,
        after_fin: None,
        idle_us: None,
        ladder: None,
        note,
        far: None,
    }
}

/// What `--confirm-keepalive` showed, in words, measured against the advice: it
/// confirms advised keepalive that kept the connection, and advice against
/// keepalive (`keepalive` null after a `closed` path) when keepalive failed too.
pub fn confirmation_words(s: &PathSummary) -> Option<String> {
    let delivered = s.keepalive_confirmed?;
    let ka = s.keepalive_tried?;
    let with = format!(
        "with keepalive {}s,{}s,{} a connection idle past the timeout",
        ka.idle_s, ka.intvl_s, ka.cnt
    );
    let outcome = if delivered {
        "still delivered"
    } else {
        "failed too"
    };
    Some(match (s.keepalive.is_some(), s.idle_behaviour) {
        (true, _) if delivered => format!("confirmed: {with} {outcome}"),
        (true, _) => format!("not confirmed: {with} {outcome}"),
        (false, Some(PathResult::Closed)) if delivered => format!(
            "not confirmed: {with} {outcome}: keepalive does keep connections through this path"
        ),
        (false, Some(PathResult::Closed)) => {
            format!("confirmed: keepalive will not help here: {with} {outcome}")
        }
        (false, _) => format!("tried: {with} {outcome}"),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_far_view_reads_without_ended_by_and_with_a_reason_it_does_not_know() {
        let older = r#"{"kind":"path-far","token":"t","test":"near-to-far idle","open":false,
            "arrived":"fin","arrived_us":5,"sent":null,"sent_us":null,"bytes_after_greeting":16,
            "bytes_after_own_end":0,"sent_after_peer_end":0,"last_data_us":1}"#;
        let view: FarView = serde_json::from_str(older).expect("an older far end's answer");
        assert_eq!(view.ended_by, None);
        let newer = older.replace(r#""sent":null"#, r#""sent":"fin","ended_by":"idle-reaper""#);
        let view: FarView = serde_json::from_str(&newer).expect("a newer far end's answer");
        assert_eq!(view.ended_by, Some(FarEnding::Other));
        let own = older.replace(r#""sent":null"#, r#""sent":"fin","ended_by":"timeout""#);
        let view: FarView = serde_json::from_str(&own).expect("answer");
        assert_eq!(view.ended_by, Some(FarEnding::Timeout));
        assert_eq!(view.arrived, Ending::Fin);
        assert_eq!(view.sent, Some(Ending::Fin));
    }

    fn summary(
        keepalive: Option<KeepaliveAdvice>,
        tried: Option<KeepaliveAdvice>,
        behaviour: PathResult,
        confirmed: Option<bool>,
    ) -> PathSummary {
        PathSummary {
            schema: SCHEMA,
            kind: "path-summary",
            target: "10.0.0.1:7".into(),
            wait_us: 1_000_000,
            max_idle_us: 3_000_000,
            elapsed_us: 9_000_000,
            endings: 0,
            faithful: 0,
            failed: 0,
            idle_timeout_min_us: Some(1_800_000),
            idle_timeout_max_us: Some(2_100_000),
            idle_behaviour: Some(behaviour),
            keepalive,
            advice: Some("…".into()),
            keepalive_tried: tried,
            keepalive_confirmed: confirmed,
            misses: Vec::new(),
            interrupted: false,
        }
    }

    #[test]
    fn the_confirmation_is_read_against_the_advice() {
        let ka = KeepaliveAdvice {
            idle_s: 1,
            intvl_s: 1,
            cnt: 3,
        };
        let cases = [
            // Keepalive advised, and it kept the connection.
            (Some(ka), PathResult::BlackHoled, true, "confirmed: with"),
            (
                Some(ka),
                PathResult::BlackHoled,
                false,
                "not confirmed: with",
            ),
            // Data advised (a proxy closed with a FIN): keepalive failing confirms it.
            (
                None,
                PathResult::Closed,
                false,
                "confirmed: keepalive will not help here",
            ),
            (
                None,
                PathResult::Closed,
                true,
                "not confirmed: with keepalive 1s,1s,3 a connection idle past the timeout still \
                 delivered: keepalive does keep",
            ),
        ];
        for (keepalive, behaviour, delivered, words) in cases {
            let s = summary(keepalive, Some(ka), behaviour, Some(delivered));
            let line = confirmation_words(&s).expect("a line");
            assert!(line.starts_with(words), "{line:?} lacks {words:?}");
        }
        assert_eq!(
            confirmation_words(&summary(None, None, PathResult::Closed, None)),
            None
        );
        let json = serde_json::to_value(summary(None, Some(ka), PathResult::Closed, Some(false)))
            .expect("json");
        assert!(json["keepalive"].is_null(), "{json}");
        assert_eq!(json["keepalive_tried"]["idle_s"], 1, "{json}");
    }

    #[test]
    fn endings_keep_their_names_in_json() {
        for (ending, name) in [
            (Ending::Fin, "fin"),
            (Ending::Rst, "rst"),
            (Ending::Data, "data"),
            (Ending::Nothing, "nothing"),
            (Ending::Ended(Verdict::Timeout), "timeout"),
        ] {
            assert_eq!(
                serde_json::to_string(&ending).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(Ending::from_name(name), ending);
        }
        // A newer far end's word is read, not refused.
        assert_eq!(Ending::from_name("teleported"), Ending::Unknown);
        assert_eq!(Ending::of_verdict(Verdict::Open), Ending::Nothing);
        assert_eq!(Ending::sent_by(CloseMode::RstUnread, false), Ending::Fin);
        assert_eq!(Ending::sent_by(CloseMode::RstUnread, true), Ending::Rst);
        // A case that failed before anything was sent says `-`, as before.
        let failed = case(
            PathTest::Fin,
            Direction::NearToFar,
            "t",
            PathResult::Failed,
            String::new(),
        );
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json["sent"], "-");
        assert_eq!(json["arrived"], "-");
    }
}
