//! Named recipes for one connection's [`EndPlan`]: a `check` case, a `path`
//! ending or idle test, a `lab` closer and observer. Drivers pick a recipe; they
//! do not assemble plans field by field.

use std::time::Duration;

use super::{CheckPlan, Detection, EndPlan, KeepAlive};
use crate::vocab::{CloseMode, Direction, PathTest, Setting};

/// How often the near end sends a little data while the far end waits to end a
/// `rst-unread` test (its close needs data left unread).
pub const UNREAD_FEED: Duration = Duration::from_millis(50);
/// How long an idle connection is watched beyond its send and `--wait`.
pub const IDLE_MARGIN: Duration = Duration::from_secs(1);

/// `check`: the connection of one case. tcpbye acts `after` it is up (or once
/// the answer to `--request`/`--send` arrived), holds a silent ending for
/// `--wait`, and follows the program's socket for as long; where a `drop` or
/// `reboot` left the connection is kept, to reset it for the program later.
pub fn check_case(plan: &CheckPlan, mode: CloseMode, after: Duration, answer: bool) -> EndPlan {
    let wait = plan.wait_for(mode);
    EndPlan {
        send: plan.send,
        request: plan.request.clone(),
        close: mode,
        after,
        close_on_answer: answer,
        hold: mode.holds_socket().then_some(wait),
        probe: false,
        timeout: Some(after + wait),
        peer_side: true,
        linger_watch: wait,
        follow_peer: true,
        keep_vanished: true,
        ..EndPlan::default()
    }
}

/// `path`: the near end of one ending test, whose first bytes are `request` (its
/// greeting). The near end acts only after the far end's answer to the greeting
/// arrived: by then the far end has read the greeting, so an RST cannot destroy
/// it unread. Near to far, it first sends `mark` on that answer and acts on the
/// answer to the mark: the mark's trip, through a path that is connected end to
/// end by then, is the baseline the ending's is measured against.
pub fn path_ending(
    direction: Direction,
    test: PathTest,
    request: Vec<u8>,
    mark: Vec<u8>,
    wait: Duration,
) -> EndPlan {
    let mode = test.mode().unwrap_or(CloseMode::Fin);
    match direction {
        // `rst-unread` needs the answers left unread: it acts once the answer to
        // the mark is there too (or after 1s without data, with a FIN, and says so).
        Direction::NearToFar if mode == CloseMode::RstUnread => EndPlan {
            request,
            mark,
            close: mode,
            probe: false,
            timeout: Some(wait * 2),
            ..EndPlan::default()
        },
        Direction::NearToFar => EndPlan {
            request,
            mark,
            close: mode,
            after: wait,
            close_on_answer: true,
            probe: false,
            // `half` reads on after its FIN, until the far end's data and FIN.
            timeout: Some(wait * 2),
            ..EndPlan::default()
        },
        // The far end ends; the near end observes. After a half-close it sends a
        // little data (the probe writes); for `rst-unread` it keeps sending a
        // little so that the far end has data to leave unread.
        Direction::FarToNear => EndPlan {
            request,
            close: CloseMode::None,
            probe: mode == CloseMode::Half,
            detection: Detection {
                send_every: (mode == CloseMode::RstUnread).then_some(UNREAD_FEED),
                ..Detection::default()
            },
            timeout: Some(wait),
            ..EndPlan::default()
        },
    }
}

/// `path`: the near end of one idle connection, whose first bytes are `request`
/// (its greeting): keepalive off, quiet for `idle`, then a little data;
/// TCP_USER_TIMEOUT (`wait`) ends a connection whose data is never acknowledged
/// (black-holed) instead of retransmitting for 15 min. `keepalive`: the advice
/// being confirmed (else keepalive stays off).
pub fn path_idle(
    request: Vec<u8>,
    idle: Duration,
    wait: Duration,
    keepalive: Option<KeepAlive>,
) -> EndPlan {
    EndPlan {
        request,
        close: CloseMode::None,
        probe: false,
        detection: Detection {
            send_every: Some(idle),
            user_timeout: Some(wait),
            keepalive,
            ..Detection::default()
        },
        // Time for the ACK, or for the user timeout (the kernel's retransmission
        // timer is clamped to it, so it fires about `wait` after the send). Steps
        // shorter than that send again every `idle`: each send still follows an
        // idle period of `idle`.
        timeout: Some(idle + wait + IDLE_MARGIN),
        ..EndPlan::default()
    }
}

/// `serve`: a connection whose greeting named a `path` test; it ends in `close`
/// (or observes, probing after a FIN when `probe`), and keeps the listener's
/// timeout, sock_diag following and address reading.
pub fn far_test(close: CloseMode, probe: bool, listener: &EndPlan) -> EndPlan {
    EndPlan {
        close,
        probe,
        timeout: listener.timeout,
        peer_side: listener.peer_side,
        linger_watch: listener.linger_watch,
        local_addr: listener.local_addr,
        ..EndPlan::default()
    }
}

/// `serve`: a test greeting whose token was used before: refused, closed with a FIN.
pub fn far_refused(listener: &EndPlan) -> EndPlan {
    EndPlan {
        close: CloseMode::Fin,
        probe: false,
        timeout: listener.timeout,
        local_addr: listener.local_addr,
        ..EndPlan::default()
    }
}

/// `lab`: the closer of one case, acting `after` the connection is up and
/// watched for `observe` and a second more.
pub fn lab_closer(mode: CloseMode, after: Duration, observe: Duration) -> EndPlan {
    EndPlan {
        close: mode,
        after,
        probe: false,
        timeout: Some(observe + Duration::from_secs(1)),
        ..EndPlan::default()
    }
}

/// `lab`: the observer of one case, with the detection `setting` and, for
/// `rst-unread`, data for the closer to leave unread.
pub fn lab_observer(mode: CloseMode, setting: Setting, observe: Duration) -> EndPlan {
    EndPlan {
        send: if mode == CloseMode::RstUnread { 64 } else { 0 },
        detection: setting.detection(),
        timeout: Some(observe),
        ..EndPlan::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_case_holds_what_only_a_silent_peer_holds_and_follows_the_program() {
        use clap::Parser;
        let argv = ["tcpbye", "check", "127.0.0.1:6379", "--wait", "3s"];
        let cli = crate::cli::Cli::try_parse_from(argv).expect("parses");
        let crate::cli::Command::Check(args) = cli.command else {
            panic!("not check")
        };
        let privileges = super::super::Privileges {
            net_admin: true,
            net_raw: true,
        };
        let plan = super::super::build::check_plan(args, privileges).expect("a plan");
        let after = Duration::from_millis(200);
        for (mode, held) in [
            (CloseMode::Fin, false),
            (CloseMode::Drop, true),
            (CloseMode::Reboot, false),
            (CloseMode::Hang, true),
        ] {
            let end = check_case(&plan, mode, after, false);
            assert_eq!(end.hold.is_some(), held, "{mode}");
            assert_eq!(end.timeout, Some(after + Duration::from_secs(3)), "{mode}");
            assert!(
                end.follow_peer && end.keep_vanished && end.peer_side,
                "{mode}"
            );
        }
    }

    #[test]
    fn a_path_ending_acts_on_the_answer_and_rst_unread_leaves_it_unread() {
        let wait = Duration::from_secs(2);
        let mark = || b"mark\n".to_vec();
        let fin = path_ending(
            Direction::NearToFar,
            PathTest::Fin,
            b"hi\n".to_vec(),
            mark(),
            wait,
        );
        assert!(fin.close_on_answer);
        assert_eq!(fin.request, b"hi\n");
        assert_eq!(fin.mark, b"mark\n");
        let unread = path_ending(
            Direction::NearToFar,
            PathTest::RstUnread,
            Vec::new(),
            mark(),
            wait,
        );
        assert!(
            !unread.close_on_answer,
            "acts once the answer is there, unread"
        );
        assert_eq!(unread.mark, b"mark\n");
        let far = path_ending(
            Direction::FarToNear,
            PathTest::RstUnread,
            Vec::new(),
            mark(),
            wait,
        );
        assert!(far.mark.is_empty(), "the far end acts: no mark");
        assert_eq!(far.close, CloseMode::None);
        assert_eq!(far.detection.send_every, Some(UNREAD_FEED));
    }
}
