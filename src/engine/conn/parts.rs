//! The observer's owned parts, each with private fields: only its own methods
//! change it, whatever file of the connection asks.

/// The heartbeat request. Any bytes received count as a pong, so an echo
/// server answers too.
pub(super) const PING: &[u8] = b"tcpbye-ping\n";
/// The heartbeat answer.
pub(super) const PONG: &[u8] = b"tcpbye-pong\n";
/// The payload of `--send`, `--send-every` and the post-detection probe.
pub(super) const FILL: &[u8] = b"tcpbye-data-0123456789abcdefghijklmnopqrstuvwxyz\n";
/// FILL repeated, so `--send` writes up to 16 KiB per send() call.
static FILL_BLOCK: [u8; 16 * 1024] = {
    let mut block = [0u8; 16 * 1024];
    let mut i = 0;
    while i < block.len() {
        block[i] = FILL[i % FILL.len()];
        i += 1;
    }
    block
};
/// Most pongs waiting to be sent: a flood of pings does not grow the queue.
const MAX_PONGS: usize = 64;

/// Bytes queued for sending: answers (pongs, a greeting's) first, then the
/// filler bytes `--send` asked for.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    out: Vec<u8>,
    fill_left: usize,
    fill_pos: usize,
}

impl SendQueue {
    /// Queues `bytes` after what is queued, before the filler.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queues a pong, unless [`MAX_PONGS`] worth are queued already.
    pub(super) fn push_pong(&mut self) {
        if self.out.len() < MAX_PONGS * PONG.len() {
            self.out.extend_from_slice(PONG);
        }
    }

    /// `n` bytes of filler to send after what is queued, instead of any left.
    pub(super) fn fill(&mut self, n: usize) {
        self.fill_left = n;
    }

    /// Whether answers wait to be sent (the filler aside).
    pub(super) fn has_answers(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether nothing at all waits to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.out.is_empty() && self.fill_left == 0
    }

    /// The bytes to send next, if any: answers first, then up to 16 KiB of filler.
    pub(super) fn next(&self) -> Option<&[u8]> {
        if !self.out.is_empty() {
            Some(&self.out)
        } else if self.fill_left > 0 {
            let start = self.fill_pos % FILL.len();
            let n = self.fill_left.min(FILL_BLOCK.len() - start);
            Some(&FILL_BLOCK[start..start + n])
        } else {
            None
        }
    }

    /// `n` bytes of what [`SendQueue::next`] returned were sent.
    pub(super) fn sent(&mut self, n: usize) {
        if !self.out.is_empty() {
            self.out.drain(..n);
        } else {
            self.fill_left -= n;
            self.fill_pos += n;
        }
    }

    /// Forgets everything queued (a send failed).
    pub(super) fn clear(&mut self) {
        self.out.clear();
        self.fill_left = 0;
    }

    /// Filler bytes still to send.
    #[cfg(test)]
    pub(super) fn fill_left(&self) -> usize {
        self.fill_left
    }
}

/// The application heartbeat: pings found in what arrives, and the intervals
/// in a row in which nothing arrived.
#[derive(Debug, Default)]
pub(super) struct Heartbeat {
    /// How much of a ping the last bytes received matched.
    ping_match: usize,
    /// Bytes arrived since the last interval ended.
    heard: bool,
    misses: u32,
}

impl Heartbeat {
    /// Bytes arrived: returns how many whole pings ended in them.
    pub(super) fn hear(&mut self, bytes: &[u8]) -> usize {
        self.heard = true;
        let mut pings = 0;
        for &b in bytes {
            if b == PING[self.ping_match] {
                self.ping_match += 1;
                if self.ping_match == PING.len() {
                    self.ping_match = 0;
                    pings += 1;
                }
            } else {
                self.ping_match = usize::from(b == PING[0]);
            }
        }
        pings
    }

    /// An interval ended: returns the intervals in a row without a sign of life.
    pub(super) fn tick(&mut self) -> u32 {
        if self.heard {
            self.misses = 0;
        } else {
            self.misses += 1;
        }
        self.heard = false;
        self.misses
    }

    /// Intervals in a row without a sign of life so far.
    pub(super) fn misses(&self) -> u32 {
        self.misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_found_across_chunks_and_after_a_false_start() {
        let mut hb = Heartbeat::default();
        assert_eq!(hb.hear(b"xxtcpbye-pi"), 0);
        assert_eq!(hb.hear(b"ng\ntcpbye-ping\n"), 2);
        // A ping that starts inside a broken one is still found.
        assert_eq!(hb.hear(b"tcpbtcpbye-ping\n"), 1);
        assert_eq!(hb.tick(), 0);
        assert_eq!((hb.tick(), hb.tick()), (1, 2));
    }

    #[test]
    fn answers_go_before_the_filler_and_pongs_are_capped() {
        let mut q = SendQueue::default();
        q.fill(5);
        q.push(b"ok\n");
        assert_eq!(q.next(), Some(&b"ok\n"[..]));
        q.sent(2);
        assert_eq!(q.next(), Some(&b"\n"[..]));
        q.sent(1);
        assert_eq!(q.next(), Some(&FILL[..5]));
        q.sent(3);
        assert_eq!(q.next(), Some(&FILL[3..5]));
        q.sent(2);
        assert!(q.is_empty() && q.next().is_none());
        for _ in 0..100 {
            q.push_pong();
        }
        assert_eq!(q.next().map(<[u8]>::len), Some(MAX_PONGS * PONG.len()));
    }
}
