//! serve's side of `path`: what the far end saw of each test connection, kept by
//! token (bounded in count and age), and the control connections that ask for it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::Reactor;
use crate::engine::path::{self, Question};
use crate::engine::timers::{TimerKind, later};
use crate::report::json;
use crate::report::path::FarView;
use crate::sys;

/// Most finished test reports kept; the oldest goes first. A `path` run makes a
/// few dozen test connections: this serves many runs at once.
const BOOK_MAX: usize = 4096;
/// A finished report is kept this long: longer than the longest sensible
/// `--max-idle` plus its refining ladder, so the near end can always ask.
const BOOK_AGE: Duration = Duration::from_secs(3 * 60 * 60);
/// Most control connections open at once; further ones are answered `path-busy`
/// and closed.
const CONTROLS_MAX: usize = 256;
/// Bytes a control connection may send after its question (the near end sends
/// none): more, and it is answered with an error and closed.
const AFTER_QUESTION_MAX: usize = path::QUESTION_MAX;
/// A control connection that has not asked its question by then is closed. The
/// near end sends its question with the greeting, in one write: a slot held
/// longer without one is held by something else.
const QUESTION_WAIT: Duration = Duration::from_secs(2);

/// Finished test connections' reports by token.
#[derive(Debug, Default)]
pub(super) struct Book {
    views: HashMap<String, (FarView, Instant)>,
    /// Every token greeted: a second greeting with one is refused.
    pub(super) tokens: path::Ledger,
}

impl Book {
    fn insert(&mut self, view: FarView, now: Instant) {
        self.views
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < BOOK_AGE);
        if self.views.len() >= BOOK_MAX
            && let Some(oldest) = self
                .views
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(token, _)| token.clone())
        {
            self.views.remove(&oldest);
        }
        self.views.insert(view.token.clone(), (view, now));
    }

    fn get(&self, token: &str) -> Option<&FarView> {
        self.views.get(token).map(|(view, _)| view)
    }
}

/// One control connection: its socket, the question read so far, and, once
/// asked, the token it waits for and until when.
pub(super) struct Control {
    sock: Socket,
    /// The question line so far: never more than [`path::QUESTION_MAX`] + 1 bytes.
    buf: Vec<u8>,
    waiting: Option<(String, Instant)>,
    /// Bytes that arrived after the question (read and dropped, never kept).
    after_question: usize,
    /// When it became a control connection.
    opened: Instant,
}

impl Reactor {
    /// A connection said it is a control connection: it leaves the observer.
    pub(super) fn open_control(
        &mut self,
        token: u64,
        sock: Socket,
        mut rest: Vec<u8>,
        now: Instant,
    ) {
        if self.controls.len() >= CONTROLS_MAX {
            let _ = self.epoll.delete(sock.as_fd());
            // One short line into an empty send buffer: it fits, or the asker is gone.
            let _ = sys::send_nosignal(&sock, format!("{}\n", path::busy_answer()).as_bytes());
            return;
        }
        // What does not fit the question line is counted, not kept.
        let beyond = rest.len().saturating_sub(path::QUESTION_MAX + 1);
        rest.truncate(path::QUESTION_MAX + 1);
        // The first read may have been a large chunk: keep no more room than that.
        rest.shrink_to_fit();
        self.controls.insert(
            token,
            Control {
                sock,
                buf: rest,
                waiting: None,
                after_question: beyond,
                opened: now,
            },
        );
        self.timers
            .at(later(now, QUESTION_WAIT), token, TimerKind::Timeout);
        self.control_ready(token, now);
    }

    /// A control connection is readable (or was just handed over): read its question.
    ///
    /// What it may cost is bounded in every state: the question line is kept up
    /// to [`path::QUESTION_MAX`] bytes (longer, and it is answered with an error);
    /// what arrives after the question is read and dropped, and past
    /// [`AFTER_QUESTION_MAX`] bytes the connection is answered with an error and
    /// closed. Each wake-up reads at most that much, so a client that streams
    /// cannot hold the loop either.
    pub(super) fn control_ready(&mut self, token: u64, now: Instant) {
        let Some(control) = self.controls.get_mut(&token) else {
            return;
        };
        let mut closed = false;
        let mut chunk = [0u8; 512];
        loop {
            match (&control.sock).read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) if control.waiting.is_some() => {
                    control.after_question = control.after_question.saturating_add(n);
                }
                Ok(n) => {
                    let room = (path::QUESTION_MAX + 1).saturating_sub(control.buf.len());
                    control.buf.extend_from_slice(&chunk[..n.min(room)]);
                    if n > room {
                        control.after_question = control.after_question.saturating_add(n - room);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            if control.buf.len() > path::QUESTION_MAX || control.after_question > AFTER_QUESTION_MAX
            {
                break;
            }
        }
        if control.waiting.is_some() {
            // Asked already: a close ends the wait, and a client that keeps
            // sending is told so and closed.
            if control.after_question > AFTER_QUESTION_MAX {
                let answer = path::error_answer("more bytes after the question");
                self.answer(token, &answer);
            } else if closed {
                self.close_control(token);
            }
            return;
        }
        let Some(end) = control.buf.iter().position(|&b| b == b'\n') else {
            if closed || control.buf.len() > path::QUESTION_MAX {
                let answer = path::error_answer("no question line");
                self.answer(token, &answer);
            }
            return;
        };
        let line = String::from_utf8_lossy(&control.buf[..end]).into_owned();
        // What followed the line counts as sent after the question; the line
        // itself is no longer needed.
        control.after_question = control
            .after_question
            .saturating_add(control.buf.len() - end - 1);
        control.buf = Vec::new();
        match path::parse_question(&line) {
            Ok(Question::Hello) => self.answer(token, &path::hello_answer()),
            Ok(Question::Report {
                token: tag,
                timeout,
            }) => {
                // Known and ended, not to wait for, or never seen (waiting for
                // a token no connection carries would only hold the slot).
                let open = self.conns.values().any(|c| c.path_token() == Some(&tag));
                if self.book.get(&tag).is_some() || timeout.is_zero() || !open {
                    self.answer_report(token, &tag);
                } else {
                    let deadline = later(now, timeout);
                    if let Some(control) = self.controls.get_mut(&token) {
                        control.waiting = Some((tag, deadline));
                    }
                    self.timers.at(deadline, token, TimerKind::Timeout);
                    // Bytes may wait behind the question, and no new edge would
                    // come for them: read on, now as bytes after the question
                    // (which also closes a client that already sent too many).
                    if !closed {
                        self.control_ready(token, now);
                    }
                }
            }
            Err(why) => self.answer(token, &path::error_answer(&why)),
        }
    }

    /// A timer of a control connection (or a stale one of the observer it was).
    pub(super) fn control_timer(&mut self, token: u64, now: Instant) {
        let mute = self.controls.get(&token).is_some_and(|c| {
            c.waiting.is_none() && now.saturating_duration_since(c.opened) >= QUESTION_WAIT
        });
        if mute {
            self.close_control(token);
            return;
        }
        let due = self
            .controls
            .get(&token)
            .and_then(|c| c.waiting.as_ref())
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(tag, _)| tag.clone());
        if let Some(tag) = due {
            self.answer_report(token, &tag);
        }
    }

    /// A test connection ended: keep its report, answer whoever waits for it.
    pub(super) fn book_report(&mut self, view: FarView, now: Instant) {
        let tag = view.token.clone();
        self.book.insert(view, now);
        let waiting: Vec<u64> = self
            .controls
            .iter()
            .filter(|(_, c)| c.waiting.as_ref().is_some_and(|(t, _)| *t == tag))
            .map(|(token, _)| *token)
            .collect();
        for token in waiting {
            self.answer_report(token, &tag);
        }
    }

    /// Answers `REPORT`: the finished report, else what the open connection saw
    /// so far, else `path-unknown`.
    fn answer_report(&mut self, token: u64, tag: &str) {
        let answer = match self.book.get(tag) {
            Some(view) => json::line(view),
            None => match self
                .conns
                .values()
                .find(|c| c.path_token() == Some(tag))
                .and_then(|c| c.far_view())
            {
                Some(view) => json::line(&view),
                None => path::unknown_answer(tag),
            },
        };
        self.answer(token, &answer);
    }

    /// Sends one answer line and closes the control connection.
    fn answer(&mut self, token: u64, line: &str) {
        if let Some(control) = self.controls.get(&token) {
            // One short line into an empty send buffer: it fits, or the asker is gone.
            let _ = sys::send_nosignal(&control.sock, format!("{line}\n").as_bytes());
        }
        self.close_control(token);
    }

    fn close_control(&mut self, token: u64) {
        if let Some(control) = self.controls.remove(&token) {
            let _ = self.epoll.delete(control.sock.as_fd());
        }
    }
}
