//! The far end of `path` inside `serve`: an accepted connection whose first
//! line is a greeting follows the test it names (observe, or end in a mode)
//! instead of serve's own plan, or hands its socket over as a control connection.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;

use super::{Conn, Ctx, Phase};
use crate::engine::path::{self, FarTask, Greeting, Ledger};
use crate::engine::timers::TimerKind;
use crate::plan::recipe;
use crate::report::EventKind;
use crate::report::micros;
use crate::report::path::{Ending, FarEnding, FarView};
use crate::sys::Kernel;
use crate::vocab::{CloseMode, Direction, PathTest, Verdict};

/// A connection whose first bytes look like a greeting (boxed in [`Conn`]: an
/// ordinary connection carries one pointer, not this).
#[derive(Debug, Default)]
pub(super) struct Far {
    /// The first line so far.
    line: Vec<u8>,
    tag: Option<Tag>,
    /// Set when the greeting has just been read: the plan changes after the read.
    news: bool,
    /// A control connection: the bytes read after its greeting line.
    control: Option<Vec<u8>>,
    /// A test greeting whose token was used before: refused, and closed.
    refused: Option<String>,
    /// The far end closed a test connection itself, not as the test asked and
    /// before the near end's ending: when, what its close sent, and why.
    own_close: Option<(Instant, Ending, FarEnding)>,
}

/// The test a greeting named.
#[derive(Debug)]
struct Tag {
    token: String,
    direction: Direction,
    test: PathTest,
    /// When the greeting line arrived: the far end's times count from here.
    at: Instant,
    /// Bytes received up to the end of the greeting line (and of the mark).
    bytes_at: u64,
    /// The near end's mark after the greeting (near-to-far endings).
    mark: Mark,
}

/// Where a near-to-far ending test stands with the near end's [`path::MARK`].
#[derive(Debug)]
enum Mark {
    /// Its first bytes so far (none yet: an empty line).
    Awaited(Vec<u8>),
    /// It arrived then; answered once `answer` is false.
    Seen { at: Instant, answer: bool },
    /// Not for this test, or the bytes after the greeting were something else.
    None,
}

impl Conn {
    /// Looks for a greeting in a chunk just read (already counted). Returns true
    /// when the connection is a control connection: stop reading it then.
    /// `tokens`: the tokens greeted so far; a test greeting with one of them is
    /// refused.
    pub(super) fn greet(&mut self, now: Instant, chunk: &[u8], tokens: &mut Ledger) -> bool {
        let before = self.bytes_received - chunk.len() as u64;
        let far = self.far.get_or_insert_with(Box::default);
        if let Some(tag) = &mut far.tag {
            tag.look_for_mark(now, chunk);
            return false;
        }
        if far.control.is_some() || far.refused.is_some() {
            return false;
        }
        let take = chunk
            .iter()
            .position(|&b| b == b'\n')
            .map_or(chunk.len(), |i| i + 1);
        far.line.extend_from_slice(&chunk[..take]);
        if !path::may_be_greeting(&far.line) {
            self.far = None;
            return false;
        }
        if far.line.last() != Some(&b'\n') {
            return false;
        }
        match path::parse_greeting(&far.line) {
            Some(Greeting::Control) => {
                far.control = Some(chunk[take..].to_vec());
                far.line = Vec::new();
                true
            }
            Some(Greeting::Test {
                token,
                direction,
                test,
            }) => {
                if tokens.claim(&token, now) {
                    let ending = direction == Direction::NearToFar && test != PathTest::Idle;
                    let mut tag = Tag {
                        token,
                        direction,
                        test,
                        at: now,
                        bytes_at: before + take as u64,
                        mark: if ending {
                            Mark::Awaited(Vec::new())
                        } else {
                            Mark::None
                        },
                    };
                    tag.look_for_mark(now, &chunk[take..]);
                    far.tag = Some(tag);
                } else {
                    far.refused = Some(token);
                }
                far.line = Vec::new();
                far.news = true;
                false
            }
            None => {
                self.far = None;
                false
            }
        }
    }

    /// After a read that found a greeting: follow the test it names. serve's own
    /// plan (its `--close`, `--send`, keepalive, heartbeat) is for ordinary
    /// connections; a test connection must show the path, so keepalive is off
    /// and nothing is written but the answer to the greeting and what the test needs.
    pub(super) fn follow_greeting(&mut self, ctx: &mut Ctx<'_>) {
        self.answer_mark(ctx);
        let Some(far) = self.far.as_deref_mut().filter(|f| f.news) else {
            return;
        };
        far.news = false;
        if let Some(token) = &far.refused {
            // Another connection greeted with this token: this one may not take
            // over its report. Say so and end it.
            let note = format!("path test {token}: refused: another connection used this token");
            self.plan = Arc::new(recipe::far_refused(&self.plan));
            self.timeline.note(ctx.now, note);
            self.queue.push(path::USED);
            self.flush(ctx);
            ctx.at(ctx.now, TimerKind::Close);
            return;
        }
        let Some(tag) = &far.tag else { return };
        let task = path::far_task(tag.direction, tag.test);
        let note = format!("path test {}: {} {}", tag.token, tag.direction, tag.test);
        let old = &self.plan;
        let (close, probe) = match task {
            FarTask::End(mode) => (mode, false),
            FarTask::Observe { data_after_fin } => (CloseMode::None, data_after_fin),
        };
        self.plan = Arc::new(recipe::far_test(close, probe, old));
        self.queue.fill(0);
        if let Some(sock) = &self.sock {
            // Errors leave the socket as it was: serve applied no keepalive then.
            let _ = sock.set_keepalive(false);
            let _ = sock.set_tcp_user_timeout(None);
        }
        self.timeline.note(ctx.now, note);
        self.queue.push(path::ACK);
        self.flush(ctx);
        if close != CloseMode::None {
            ctx.at(ctx.now, TimerKind::Close);
        }
    }

    /// Answers the near end's mark once it has arrived (before any ending of
    /// its: a connection that has ended is answered no more).
    fn answer_mark(&mut self, ctx: &mut Ctx<'_>) {
        let Some(tag) = self.far.as_deref_mut().and_then(|f| f.tag.as_mut()) else {
            return;
        };
        let Mark::Seen { answer, .. } = &mut tag.mark else {
            return;
        };
        if !std::mem::take(answer) || self.verdict().is_some() {
            return;
        }
        self.queue.push(path::ACK);
        self.flush(ctx);
    }

    /// A control connection's socket and the bytes read after its greeting;
    /// the connection is done (and never reported) once they are taken.
    pub fn take_control(&mut self) -> Option<(Socket, Vec<u8>)> {
        let rest = self.far.as_deref_mut()?.control.take()?;
        let sock = self.sock.take()?;
        self.enter(Phase::Done);
        Some((sock, rest))
    }

    /// The far end is about to close a test connection on its own (`why`), before
    /// the near end ended it and not as the test asked: what its close() sends
    /// (an RST when data is left unread, else a FIN) is kept for the report, so
    /// that `path` never takes it for the path's doing.
    pub(super) fn far_closing(&mut self, os: &dyn Kernel, now: Instant, why: FarEnding) {
        let tagged = self.far.as_deref().is_some_and(|f| f.tag.is_some());
        if !tagged || self.action.is_some() || self.verdict().is_some() {
            return;
        }
        let unread = self
            .sock
            .as_ref()
            .and_then(|s| os.unread_bytes(s.as_fd()).ok())
            .unwrap_or(0);
        if let Some(far) = self.far.as_deref_mut() {
            let sent = if unread > 0 { Ending::Rst } else { Ending::Fin };
            far.own_close.get_or_insert((now, sent, why));
        }
    }

    /// The token of a test connection.
    pub fn path_token(&self) -> Option<&str> {
        Some(self.far.as_deref()?.tag.as_ref()?.token.as_str())
    }

    /// What this end saw of a test connection so far (or in the end).
    pub fn far_view(&self) -> Option<FarView> {
        let tag = self.far.as_deref()?.tag.as_ref()?;
        let since = |at: Instant| micros(at.saturating_duration_since(tag.at));
        let t_us = |at: Instant| self.timeline.t_us(at);
        // This side's own ending; `rst-unread` sent an RST only with data unread.
        // Either as the test asked, or on its own (its --timeout, or serve stopped).
        let own = self
            .action
            .map(|(at, mode)| {
                let sent = Ending::sent_by(mode, self.verdict() == Some(Verdict::Rst));
                (at, sent, FarEnding::Test)
            })
            .or_else(|| self.far.as_deref()?.own_close);
        // What arrived from the near end: an ending detected, not this side's own.
        let peer_end = self
            .detected_at
            .filter(|at| own.is_none_or(|(acted, _, _)| *at != acted));
        let arrived = match (peer_end, self.verdict()) {
            (Some(_), Some(verdict)) => Ending::of_verdict(verdict),
            _ => Ending::Nothing,
        };
        let after = |from: Option<Instant>, kind: EventKind| -> u64 {
            let Some(from) = from.map(t_us) else { return 0 };
            self.timeline
                .events
                .iter()
                .filter(|e| e.kind == kind && e.t_us >= from && e.errno.is_none())
                .filter_map(|e| e.bytes)
                .sum()
        };
        let got = self.bytes_received.saturating_sub(tag.bytes_at);
        Some(FarView {
            kind: "path-far".into(),
            token: tag.token.clone(),
            test: format!("{} {}", tag.direction, tag.test),
            open: self.phase() != Phase::Done,
            arrived,
            arrived_us: peer_end.map(since),
            mark_us: match tag.mark {
                Mark::Seen { at, .. } => Some(since(at)),
                _ => None,
            },
            sent: own.map(|(_, sent, _)| sent),
            sent_us: own.map(|(at, _, _)| since(at)),
            ended_by: own.map(|(_, _, why)| why),
            bytes_after_greeting: got,
            bytes_after_own_end: after(own.map(|(at, _, _)| at), EventKind::Recv),
            sent_after_peer_end: after(peer_end, EventKind::Send),
            last_data_us: (got > 0).then(|| since(self.last_data)),
        })
    }
}

impl Tag {
    /// Bytes after the greeting: while the mark is awaited, they are the mark
    /// (answered, and not counted as data), or the test has none.
    fn look_for_mark(&mut self, now: Instant, bytes: &[u8]) {
        let Mark::Awaited(line) = &mut self.mark else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        let take = bytes.len().min(path::MARK.len() - line.len());
        line.extend_from_slice(&bytes[..take]);
        if path::MARK[..line.len()] != line[..] {
            self.mark = Mark::None;
        } else if line.len() == path::MARK.len() {
            self.bytes_at += path::MARK.len() as u64;
            self.mark = Mark::Seen {
                at: now,
                answer: true,
            };
        }
    }
}
