//! Bounded retries with exponential backoff and jitter.
//!
//! Why: a Tahoe node drops idle keep-alive connections, restarts, and
//! answers "not enough shares" while storage servers reconnect. Those are
//! worth a few quick retries inside one operation. Anything longer is the
//! caller's business (the error stays [`GridError::is_transient`]), so the
//! total delay here is capped at a few seconds by default.
//!
//! [`GridError::is_transient`]: crate::GridError::is_transient

use std::time::Duration;

/// How often and how patiently an operation is retried on transient errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (1 = never retry).
    pub max_attempts: u32,
    /// The delay before the first retry; each later one doubles it.
    pub initial_delay: Duration,
    /// The longest single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 200 ms then doubling, at most 2 s per wait (≈ 1.4 s in all,
    /// less with jitter).
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Never retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The wait before attempt number `attempt + 1` (so `attempt` ≥ 1):
    /// "equal jitter", uniformly in [d/2, d] where d = initial·2^(attempt−1)
    /// capped at `max_delay`. Half the delay is random so that several clients
    /// that failed together do not retry in lockstep.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let d = self
            .initial_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let half = d / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A uniform number in [0, 1) from the OS; jitter needs no seeded RNG.
fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::getrandom(&mut buf).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            let d = p.delay(attempt);
            let full = (p.initial_delay * (1 << (attempt - 1))).min(p.max_delay);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        assert_eq!(RetryPolicy::NONE.delay(1), Duration::ZERO);
    }
}
