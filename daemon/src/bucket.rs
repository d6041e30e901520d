//! A rate bucket (GCRA): `burst` events at once, then one per `interval`.
//! Its whole state is one number, `tat`: when the bucket is full again. The
//! account-wide throttle keeps it in seconds, on disk; the per-caller limits
//! in milliseconds, in memory.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub burst: u64,
    pub interval: u64,
}

impl Bucket {
    fn size(self) -> u64 {
        self.burst.saturating_mul(self.interval)
    }

    /// A `tat` further ahead than a whole bucket cannot come from events:
    /// the clock was set back since (or ran ahead then). Taken as is, it
    /// would hold everyone until the clock catches up, so it counts as a
    /// full bucket; the next event writes a sane one.
    fn sane(self, tat: u64, now: u64) -> u64 {
        if tat > now.saturating_add(self.size()) {
            0
        } else {
            tat
        }
    }

    /// The earliest time one more event fits, for a clock that only goes
    /// forward (the throttle's model).
    pub fn fits_from(self, tat: u64) -> u64 {
        tat.saturating_sub(self.size().saturating_sub(self.interval))
    }

    /// How long from `now` until one more event fits (0: now).
    pub fn wait(self, tat: u64, now: u64) -> u64 {
        self.fits_from(self.sane(tat, now)).saturating_sub(now)
    }

    /// The state after one more event at `now`.
    pub fn spend(self, tat: u64, now: u64) -> u64 {
        self.sane(tat, now).max(now).saturating_add(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bucket = Bucket {
        burst: 3,
        interval: 10,
    };

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut tat = 0;
        for _ in 0..3 {
            assert_eq!(B.wait(tat, 100), 0);
            tat = B.spend(tat, 100);
        }
        assert_eq!(B.wait(tat, 100), 10);
        assert_eq!(B.wait(tat, 109), 1);
        assert_eq!(B.wait(tat, 110), 0);
        // Idle long enough: full again.
        assert_eq!(B.wait(tat, 1000), 0);
    }

    #[test]
    fn a_state_impossibly_far_ahead_counts_as_full() {
        assert_eq!(B.wait(u64::MAX, 5), 0);
        assert_eq!(B.spend(u64::MAX, 5), 15);
    }
}
