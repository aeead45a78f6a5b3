//! The kernel's keepalive as arithmetic (net/ipv4/tcp_timer.c,
//! `tcp_keepalive_timer`): when it sends its first probe to a peer that went
//! silent, and when it gives up. Pure functions of µs, shared by `check` and
//! `inspect`.

/// µs from now until keepalive's first probe to a peer that goes silent now.
///
/// `expires_us` is the keepalive timer's next firing (sock_diag's
/// `idiag_expires`). With probes already unanswered the timer is counting the
/// interval, and its firing is the next probe. Otherwise it was armed for the
/// idle time when the socket last armed it, and on firing it re-arms for what
/// is left of `idle_us` since the last segment received (`silent_us` ago now):
/// the first probe is the later of the two.
pub fn first_probe_after_us(
    expires_us: u64,
    probes_sent: u64,
    idle_us: u64,
    silent_us: u64,
) -> u64 {
    if probes_sent > 0 {
        expires_us
    } else {
        expires_us.max(idle_us.saturating_sub(silent_us))
    }
}

/// What ends keepalive's probing besides the probe count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserTimeout {
    /// `TCP_USER_TIMEOUT` in µs.
    pub timeout_us: u64,
    /// µs since the peer's last segment, now.
    pub silent_us: u64,
}

/// µs from now until keepalive gives up on a peer that went silent now: its
/// next firing is `first_us` from now, `probes_sent` probes are already
/// unanswered, and it fires every `intvl_us` after.
///
/// Each firing first checks whether to give up, then sends a probe: without a
/// user timeout it gives up at the firing that finds `cnt` probes unanswered,
/// `cnt − probes_sent` intervals after the next one. With `TCP_USER_TIMEOUT`
/// the count is ignored: it gives up at the first firing, after at least one
/// probe, that finds the peer silent for the user timeout or longer.
pub fn gives_up_after_us(
    first_us: u64,
    probes_sent: u64,
    intvl_us: u64,
    cnt: u64,
    user_timeout: Option<UserTimeout>,
) -> u64 {
    let firings = match user_timeout {
        None => cnt.saturating_sub(probes_sent),
        Some(UserTimeout {
            timeout_us,
            silent_us,
        }) => {
            // Silent at firing k: silent_us + first_us + k × intvl_us.
            let short = timeout_us.saturating_sub(silent_us.saturating_add(first_us));
            let needed = short.div_ceil(intvl_us.max(1));
            needed.max(u64::from(probes_sent == 0))
        }
    };
    first_us.saturating_add(firings.saturating_mul(intvl_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn the_first_probe_waits_for_the_idle_time_since_the_last_segment() {
        // redis's 300 s: armed at connect, data 100 s ago, the timer fires in 50 s
        // and re-arms: the probe goes when 300 s of silence are over, in 200 s.
        assert_eq!(first_probe_after_us(50 * S, 0, 300 * S, 100 * S), 200 * S);
        // Idle since before the timer was armed: its firing is the probe.
        assert_eq!(first_probe_after_us(50 * S, 0, 300 * S, 250 * S), 50 * S);
        // Probing already: the interval timer's firing is the next probe.
        assert_eq!(first_probe_after_us(7 * S, 2, 300 * S, 0), 7 * S);
    }

    #[test]
    fn it_gives_up_cnt_intervals_after_the_first_probe() {
        // 300 s / 100 s × 3, idle: probes at 300, 400, 500; gives up at 600.
        assert_eq!(gives_up_after_us(300 * S, 0, 100 * S, 3, None), 600 * S);
        // Two already unanswered, next firing in 30 s: one more probe, then give up.
        assert_eq!(gives_up_after_us(30 * S, 2, 100 * S, 3, None), 130 * S);
        // All unanswered: the next firing gives up.
        assert_eq!(gives_up_after_us(30 * S, 3, 100 * S, 3, None), 30 * S);
    }

    #[test]
    fn a_user_timeout_replaces_the_count() {
        let ut = |timeout_s: u64, silent_s: u64| {
            Some(UserTimeout {
                timeout_us: timeout_s * S,
                silent_us: silent_s * S,
            })
        };
        // 30 s user timeout, shorter than the idle time: the firing after the
        // first probe gives up (silent 400 s ≥ 30 s).
        assert_eq!(
            gives_up_after_us(300 * S, 0, 100 * S, 3, ut(30, 0)),
            400 * S
        );
        // 1000 s, longer than idle + cnt × intvl: it probes on past the count,
        // until a firing finds 1000 s of silence: 300, 400, …, 1000.
        assert_eq!(
            gives_up_after_us(300 * S, 0, 100 * S, 3, ut(1000, 0)),
            1000 * S
        );
        // Already silent 950 s with a probe out: the next firing gives up.
        assert_eq!(
            gives_up_after_us(20 * S, 1, 100 * S, 3, ut(960, 950)),
            20 * S
        );
    }
}
