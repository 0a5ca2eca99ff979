//! A token bucket for anti-entropy's keys-per-second limit: pure, with the time passed in.

use std::time::{Duration, Instant};

/// Allows `rate` units per second on average, in bursts of up to one second's worth.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` units per second (at least 1).
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = rate.max(1) as f64;
        TokenBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` units at `now`; returns how long to wait before using them (zero if
    /// they were available). Taking more than a burst is allowed: the wait grows.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        assert_eq!(
            b.take(100, t0),
            Duration::ZERO,
            "one second's burst is free"
        );
        let wait = b.take(50, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // After the wait the debt is paid.
        let t1 = t0 + wait;
        assert_eq!(b.take(0, t1), Duration::ZERO);
        // Tokens never accumulate beyond one second's worth.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.take(100, t2), Duration::ZERO);
        assert!(b.take(1, t2) > Duration::ZERO);
    }
}
