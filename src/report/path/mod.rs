//! `tcpbye path`: what the network between two ends did to each ending and to
//! idle connections — the model (`path-far`, `path-case`, `path-summary` in
//! docs/json.md) and the tables for people. The judgement is in [`judge`].

use serde::{Deserialize, Serialize};

use super::{SCHEMA, fmt_us};
use crate::vocab::{Direction, PathTest};

pub mod judge;

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
    pub arrived: String,
    pub arrived_us: Option<u64>,
    /// What the far end itself sent to end the connection: `fin`, `rst`, or null.
    pub sent: Option<String>,
    pub sent_us: Option<u64>,
    /// Bytes received after the greeting line.
    pub bytes_after_greeting: u64,
    /// Bytes received after the far end's own ending (its half-close).
    pub bytes_after_own_end: u64,
    /// Bytes sent after the near end's FIN arrived (the half-close test's data).
    pub sent_after_peer_end: u64,
    /// When the last data arrived.
    pub last_data_us: Option<u64>,
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
    /// What the acting end sent: `fin`, `rst` (`data` for idle cases).
    pub sent: String,
    /// What arrived at the other end: `fin`, `rst`, `nothing` (`data` for idle cases).
    pub arrived: String,
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
    /// The longest idle period that survived (0 when none did; null without idle cases).
    pub idle_timeout_min_us: Option<u64>,
    /// The shortest idle period the path did not survive; null when nothing failed
    /// up to `--max-idle`.
    pub idle_timeout_max_us: Option<u64>,
    /// What the path did after its idle timeout: `reset`, `closed`, `black-holed`, or null.
    pub idle_behaviour: Option<PathResult>,
    pub keepalive: Option<KeepaliveAdvice>,
    pub advice: Option<String>,
    /// `--confirm-keepalive`: whether a connection with that keepalive, idle for twice
    /// `idle_timeout_max_us`, still delivered; null when not tried.
    pub keepalive_confirmed: Option<bool>,
    /// Each expectation missed, in words; empty when all were met.
    pub misses: Vec<String>,
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
                c.sent.clone(),
                c.arrived.clone(),
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
    if let Some(line) = judge::bracket_words(s) {
        lines.push(line);
    }
    if let Some(advice) = &s.advice {
        lines.push(format!("advice: {advice}"));
    }
    match (s.keepalive_confirmed, s.keepalive) {
        (Some(true), Some(ka)) => lines.push(format!(
            "confirmed: with keepalive {}s,{}s,{} a connection idle past the timeout still delivered",
            ka.idle_s, ka.intvl_s, ka.cnt
        )),
        (Some(false), Some(ka)) => lines.push(format!(
            "not confirmed: with keepalive {}s,{}s,{} a connection idle past the timeout failed too",
            ka.idle_s, ka.intvl_s, ka.cnt
        )),
        _ => {}
    }
    for miss in &s.misses {
        lines.push(format!("expectation not met: {miss}"));
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
        sent: dash(),
        arrived: dash(),
        result,
        extra_us: None,
        after_fin: None,
        idle_us: None,
        ladder: None,
        note,
        far: None,
    }
}
