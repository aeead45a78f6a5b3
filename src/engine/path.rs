//! The `path` line protocol (docs/path.md): the greeting that names a test
//! connection, the control questions and answers, and the near end's client.
//!
//! A test connection's first bytes are one line, `TCPBYE-PATH 1 <token>
//! <direction> <test>\n`; the far end (`serve`) answers it with
//! `TCPBYE-PATH-OK\n` and then behaves as the test needs. On a near-to-far
//! ending test the near end then sends `TCPBYE-PATH-MARK\n`, answered the same
//! way, and acts on that second answer: the mark's trip is the baseline of
//! `extra_us`. NAT rewrites
//! addresses, so the far end keeps what it saw by token, not by address. A
//! control connection starts with `TCPBYE-CONTROL 1\n`, asks one question and
//! gets one JSON line back; one connection per question, so the idle timeout it
//! measures cannot end a control connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::vocab::{CloseMode, Direction, PathTest};

/// The version of the line protocol, in both greetings.
pub const VERSION: u32 = 1;
/// The far end's answer to a test greeting, and to a [`MARK`].
pub const ACK: &[u8] = b"TCPBYE-PATH-OK\n";
/// A near-to-far ending test: the line the near end sends once the answer to its
/// greeting has arrived, and the far end answers with [`ACK`]. The connection is
/// through the path end to end by then (a proxy may have held the greeting while
/// it connected upstream), so the mark's one-way trip is what data takes: the
/// baseline of `extra_us`. The near end ends the connection on the second answer.
pub const MARK: &[u8] = b"TCPBYE-PATH-MARK\n";
/// The far end's answer to a test greeting whose token was used before; it then
/// closes the connection.
pub const USED: &[u8] = b"TCPBYE-PATH-USED\n";
/// How many tokens the far end remembers, and for how long: every token greeted
/// within the last 3 hours (as long as a report is kept), up to this many.
const LEDGER_MAX: usize = 16 * 1024;
const LEDGER_AGE: Duration = Duration::from_secs(3 * 60 * 60);
/// Every greeting starts with this; other first bytes are an ordinary connection.
const PREFIX: &[u8] = b"TCPBYE-";
/// The longest greeting line; longer first lines are ordinary connections.
pub const GREETING_MAX: usize = 128;
/// The longest token.
pub const TOKEN_MAX: usize = 32;
/// The longest question line a control connection may send.
pub const QUESTION_MAX: usize = 256;
/// The longest wait a `REPORT` question may ask for.
pub const REPORT_WAIT_MAX: Duration = Duration::from_secs(60);
/// The longest answer the near end reads.
const ANSWER_MAX: usize = 64 * 1024;

/// What a connection's first line says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// A test connection: the far end keeps its report under `token`.
    Test {
        token: String,
        direction: Direction,
        test: PathTest,
    },
    /// A control connection: one question follows.
    Control,
}

/// What the far end does on a test connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FarTask {
    /// Observe only; `data_after_fin`: after the near end's FIN, send a little
    /// data (the two probe writes) before closing — the half-close test.
    Observe { data_after_fin: bool },
    /// End the connection in this mode, at once.
    End(CloseMode),
}

/// What the far end does for a test.
pub fn far_task(direction: Direction, test: PathTest) -> FarTask {
    match (direction, test.mode()) {
        (Direction::FarToNear, Some(mode)) => FarTask::End(mode),
        _ => FarTask::Observe {
            data_after_fin: test == PathTest::Half,
        },
    }
}

/// The greeting line of a test connection.
pub fn greeting(token: &str, direction: Direction, test: PathTest) -> Vec<u8> {
    format!("TCPBYE-PATH {VERSION} {token} {direction} {test}\n").into_bytes()
}

/// Whether `line` (the first bytes so far) can still become a greeting.
pub fn may_be_greeting(line: &[u8]) -> bool {
    let n = line.len().min(PREFIX.len());
    line.len() <= GREETING_MAX && line[..n] == PREFIX[..n]
}

/// A token: 1 to 32 letters, digits, `-` or `_`.
pub fn valid_token(token: &str) -> bool {
    (1..=TOKEN_MAX).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses a whole first line (with its `\n`); `None`: not a greeting.
pub fn parse_greeting(line: &[u8]) -> Option<Greeting> {
    let line = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let words: Vec<&str> = line.split(' ').collect();
    let version = format!("{VERSION}");
    match words.as_slice() {
        ["TCPBYE-CONTROL", v] if *v == version => Some(Greeting::Control),
        ["TCPBYE-PATH", v, token, direction, test] if *v == version && valid_token(token) => {
            Some(Greeting::Test {
                token: (*token).to_owned(),
                direction: Direction::from_name(direction)?,
                test: PathTest::from_name(test)?,
            })
        }
        _ => None,
    }
}

/// The tokens the far end has seen in test greetings: a second greeting with one
/// is refused, so that nobody can take over another run's report by its token.
/// Bounded: [`LEDGER_MAX`] tokens, none older than [`LEDGER_AGE`].
#[derive(Debug, Default)]
pub struct Ledger {
    seen: HashMap<String, Instant>,
}

impl Ledger {
    /// Takes `token` for a new test connection: false when it was used before.
    pub fn claim(&mut self, token: &str, now: Instant) -> bool {
        if let Some(at) = self.seen.get(token)
            && now.saturating_duration_since(*at) < LEDGER_AGE
        {
            return false;
        }
        if self.seen.len() >= LEDGER_MAX {
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < LEDGER_AGE);
        }
        if self.seen.len() >= LEDGER_MAX {
            // Still full of recent tokens: forget the older half.
            let mut ages: Vec<Instant> = self.seen.values().copied().collect();
            let (_, middle, _) = ages.select_nth_unstable(LEDGER_MAX / 2);
            let middle = *middle;
            self.seen.retain(|_, at| *at >= middle);
        }
        self.seen.insert(token.to_owned(), now);
        true
    }

    /// Whether a test greeting carried `token`.
    pub fn knows(&self, token: &str) -> bool {
        self.seen.contains_key(token)
    }
}

/// One question on a control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// `HELLO`: is this a tcpbye serve that speaks the protocol?
    Hello,
    /// `REPORT <token> <timeout-ms>`: what the far end saw of `token`, once its
    /// connection has ended or `timeout` has passed (then what it saw so far).
    Report { token: String, timeout: Duration },
}

/// Parses one question line (without its `\n`).
pub fn parse_question(line: &str) -> Result<Question, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["HELLO"] => Ok(Question::Hello),
        ["REPORT", token, ms] if valid_token(token) => {
            let ms: u64 = ms.parse().map_err(|_| format!("bad timeout in {line:?}"))?;
            Ok(Question::Report {
                token: (*token).to_owned(),
                timeout: Duration::from_millis(ms).min(REPORT_WAIT_MAX),
            })
        }
        _ => Err(format!("unknown question {line:?}")),
    }
}

/// The answer to `HELLO`.
pub fn hello_answer() -> String {
    format!("{{\"kind\":\"path-hello\",\"version\":{VERSION}}}")
}

/// The answer when every control slot is taken: ask again a little later.
pub fn busy_answer() -> String {
    "{\"kind\":\"path-busy\"}".to_owned()
}

/// Whether an answer is [`busy_answer`].
pub fn is_busy(answer: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(answer).is_ok_and(|v| v["kind"] == "path-busy")
}

/// The answer for a token the far end has never seen (or no longer keeps).
pub fn unknown_answer(token: &str) -> String {
    format!("{{\"kind\":\"path-unknown\",\"token\":\"{token}\"}}")
}

/// The answer to a line that is no question.
pub fn error_answer(why: &str) -> String {
    let why = serde_json::to_string(why).unwrap_or_else(|_| "\"?\"".into());
    format!("{{\"kind\":\"path-error\",\"error\":{why}}}")
}

/// The near end's client: one control connection to `addr`, one question, the
/// one answer line. `wait` bounds the connect and the answer beyond what the
/// question itself asks the far end to wait.
pub fn ask(addr: SocketAddr, question: &str, wait: Duration) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, wait)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    stream.write_all(format!("TCPBYE-CONTROL {VERSION}\n{question}\n").as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.contains(&b'\n') || answer.len() > ANSWER_MAX {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if answer.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let end = answer
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(answer.len());
    Ok(String::from_utf8_lossy(&answer[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_round_trip_and_strangers_are_ordinary() {
        let line = greeting("a1-b_2", Direction::FarToNear, PathTest::RstUnread);
        assert_eq!(line, b"TCPBYE-PATH 1 a1-b_2 far-to-near rst-unread\n");
        assert_eq!(
            parse_greeting(&line),
            Some(Greeting::Test {
                token: "a1-b_2".into(),
                direction: Direction::FarToNear,
                test: PathTest::RstUnread
            })
        );
        assert_eq!(
            parse_greeting(b"TCPBYE-CONTROL 1\n"),
            Some(Greeting::Control)
        );
        for stranger in [
            &b"GET / HTTP/1.1\n"[..],
            b"TCPBYE-CONTROL 2\n",
            b"TCPBYE-PATH 1 tok sideways fin\n",
            b"TCPBYE-PATH 1 tok near-to-far drop\n",
            b"TCPBYE-PATH 1 bad/token near-to-far fin\n",
            b"TCPBYE-PATH 1 tok near-to-far fin",
        ] {
            assert_eq!(parse_greeting(stranger), None, "{stranger:?}");
        }
        assert!(may_be_greeting(b"TCP"));
        assert!(may_be_greeting(b"TCPBYE-PATH 1"));
        assert!(!may_be_greeting(b"tcpbye-ping\n"));
        assert!(!may_be_greeting(&[b'T'; 200]));
    }

    #[test]
    fn questions() {
        assert_eq!(parse_question("HELLO"), Ok(Question::Hello));
        assert_eq!(
            parse_question("REPORT abc 1500\r"),
            Ok(Question::Report {
                token: "abc".into(),
                timeout: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse_question("REPORT abc 99999999"),
            Ok(Question::Report {
                token: "abc".into(),
                timeout: REPORT_WAIT_MAX
            })
        );
        assert!(parse_question("REPORT abc soon").is_err());
        assert!(parse_question("BYE").is_err());
        assert!(error_answer("a \"q\"").contains("\\\"q\\\""));
    }

    #[test]
    fn a_token_is_claimed_once_and_the_ledger_stays_bounded() {
        let mut ledger = Ledger::default();
        let now = Instant::now();
        assert!(ledger.claim("a", now));
        assert!(!ledger.claim("a", now));
        assert!(ledger.knows("a") && !ledger.knows("b"));
        for i in 0..LEDGER_MAX + 10 {
            ledger.claim(&format!("t{i}"), now + Duration::from_micros(i as u64));
        }
        assert!(ledger.seen.len() <= LEDGER_MAX, "{}", ledger.seen.len());
        // The newest are kept.
        assert!(!ledger.claim(&format!("t{}", LEDGER_MAX + 9), now));
    }

    #[test]
    fn busy() {
        assert!(is_busy(&busy_answer()));
        assert!(!is_busy(&hello_answer()));
        assert!(!is_busy("path-busy"));
    }

    #[test]
    fn far_tasks() {
        assert_eq!(
            far_task(Direction::FarToNear, PathTest::Rst),
            FarTask::End(CloseMode::Rst)
        );
        assert_eq!(
            far_task(Direction::NearToFar, PathTest::Half),
            FarTask::Observe {
                data_after_fin: true
            }
        );
        assert_eq!(
            far_task(Direction::NearToFar, PathTest::Idle),
            FarTask::Observe {
                data_after_fin: false
            }
        );
    }
}
