//! Retry delays. **Pure**: the random numbers come from the caller.
//!
//! "Full jitter" exponential backoff: the n-th delay is uniform in `[0, min(cap, base·2ⁿ)]`.
//! Spreading retries over the whole window keeps a rack of agents that lost the appliance at the
//! same moment from reconnecting in lockstep when it comes back.

use std::time::Duration;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff starting at `base`, doubling per attempt up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    /// The upper bound of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The next delay, drawn with `random` from `[0, ceiling]`, and advances the attempt count.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        scale(ceiling, random, 0, 1000)
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `d × f`, with `f` drawn from `random` uniformly in `[lo_permille, hi_permille]` ‰.
pub fn scale(d: Duration, random: u64, lo_permille: u64, hi_permille: u64) -> Duration {
    let span = hi_permille.saturating_sub(lo_permille).saturating_add(1);
    let permille = lo_permille.saturating_add(random % span);
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms.saturating_mul(permille) / 1000)
}

/// The delay before re-polling after a `wait` order: `retry_after_secs` units (clamped to
/// `[1, max_units]`) with ±20 % jitter so polls from many agents spread out.
pub fn wait_delay(retry_after_secs: u32, unit: Duration, max_units: u32, random: u64) -> Duration {
    let units = retry_after_secs.clamp(1, max_units.max(1));
    scale(unit.saturating_mul(units), random, 800, 1200)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn ceilings_double_to_the_cap() {
        let mut b = Backoff::new(S(1), S(30));
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_secs();
                // the largest random value gives the ceiling itself
                assert_eq!(b.next_delay(1000).as_secs(), c);
                c
            })
            .collect();
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.ceiling(), S(1));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let mut b = Backoff::new(S(1), S(30));
        for _ in 0..4 {
            b.next_delay(0);
        }
        // attempt 4: ceiling 16 s
        let c = b.ceiling();
        assert_eq!(b.clone().next_delay(0), Duration::ZERO);
        assert_eq!(b.clone().next_delay(500), c / 2);
        assert_eq!(
            b.clone().next_delay(1001 + 250),
            c / 4,
            "random wraps modulo"
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(1500), S(30));
        for _ in 0..200 {
            assert!(b.next_delay(u64::MAX) <= S(30));
        }
        assert_eq!(b.ceiling(), S(30));
    }

    #[test]
    fn wait_delay_jitters_and_clamps() {
        assert_eq!(wait_delay(10, S(1), 300, 0), S(8));
        assert_eq!(wait_delay(10, S(1), 300, 400), S(12));
        assert_eq!(wait_delay(0, S(1), 300, 200), S(1), "0 means 1 unit");
        assert_eq!(wait_delay(u32::MAX, S(1), 300, 200), S(300));
    }
}
