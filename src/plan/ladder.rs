//! `path`'s idle ladders: which idle periods are tried, first doubling up to
//! `--max-idle`, then evenly between the last period that survived and the first
//! that failed.

use std::time::Duration;

/// The first ladder has at most this many steps…
pub const LADDER_STEPS: usize = 8;
/// …none shorter than this (shorter idle periods say nothing about a middlebox).
pub const LADDER_FLOOR: Duration = Duration::from_secs(1);
/// The refining ladder: this many steps evenly between the last survivor and the first failure…
pub const REFINE_STEPS: u32 = 4;
/// …unless the two are already this close.
pub const REFINE_RESOLUTION: Duration = Duration::from_millis(200);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
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
}
