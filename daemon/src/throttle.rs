//! Per-user back-off after wrong codes. Pure functions of the failure count
//! and the time, so the arithmetic in the README is checked by tests here.

use crate::config::ThrottleConfig;

/// Seconds a user must wait after their `failures`-th wrong code in a row.
pub fn wait_after(cfg: &ThrottleConfig, failures: u32) -> u64 {
    if failures <= cfg.free_failures {
        return 0;
    }
    if failures > cfg.lockout_after {
        return cfg.lockout_secs;
    }
    let doublings = failures - cfg.free_failures - 1;
    let factor = 1u64.checked_shl(doublings.min(63)).unwrap_or(u64::MAX);
    cfg.base_delay_secs
        .saturating_mul(factor)
        .min(cfg.max_delay_secs)
}

/// Seconds from `now` until a code may be verified again (0: now).
pub fn retry_after(cfg: &ThrottleConfig, failures: u32, last_failure: u64, now: u64) -> u64 {
    let allowed_at = last_failure.saturating_add(wait_after(cfg, failures));
    allowed_at.saturating_sub(now)
}

/// An attacker who guesses as soon as the throttle allows, for `horizon_secs`,
/// while the account owner logs in successfully every `reset_every_secs`
/// (resetting the count; `None`: never). Returns the number of guesses.
pub fn guesses_within(
    cfg: &ThrottleConfig,
    horizon_secs: u64,
    reset_every_secs: Option<u64>,
) -> u64 {
    let mut guesses = 0u64;
    let mut t = 0u64;
    let mut failures = 0u32;
    let mut next_reset = reset_every_secs.unwrap_or(u64::MAX);
    while t < horizon_secs {
        if t >= next_reset {
            failures = 0;
            next_reset = next_reset.saturating_add(reset_every_secs.unwrap_or(u64::MAX));
        }
        guesses += 1;
        failures = failures.saturating_add(1);
        // Free guesses cost no time here (the most favourable case for the
        // attacker); the count always reaches a wait, since lockout_after > free_failures.
        t = t.saturating_add(wait_after(cfg, failures));
    }
    guesses
}

/// Chance that at least one of `guesses` random codes is accepted when each
/// wins with probability `p` (3 in 10^6 for 6 digits and a window of 1).
pub fn success_probability(guesses: u64, p: f64) -> f64 {
    1.0 - (1.0 - p).powf(guesses as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_YEARS: u64 = 10 * 365 * 86_400;
    const P_SIX_DIGITS_WINDOW_1: f64 = 3.0 / 1_000_000.0;

    #[test]
    fn waits_grow_then_cap_then_lock() {
        let cfg = ThrottleConfig::default();
        let waits: Vec<u64> = (1..=9).map(|n| wait_after(&cfg, n)).collect();
        assert_eq!(waits, [0, 0, 0, 30, 60, 120, 240, 480, 960]);
        assert_eq!(wait_after(&cfg, 10), 1800);
        assert_eq!(wait_after(&cfg, 100), 1800);
        assert_eq!(wait_after(&cfg, 101), 86_400);
        assert_eq!(wait_after(&cfg, u32::MAX), 86_400);
    }

    #[test]
    fn retry_after_counts_down() {
        let cfg = ThrottleConfig::default();
        assert_eq!(retry_after(&cfg, 4, 1000, 1000), 30);
        assert_eq!(retry_after(&cfg, 4, 1000, 1029), 1);
        assert_eq!(retry_after(&cfg, 4, 1000, 1030), 0);
        assert_eq!(retry_after(&cfg, 2, 1000, 1000), 0);
    }

    /// The README's figure: at the defaults an attacker alone gets under 1 %
    /// in ten years, and even with the owner resetting the count by logging in
    /// every day, stays below 50 %.
    #[test]
    fn ten_years_is_not_enough_for_an_even_chance() {
        let cfg = ThrottleConfig::default();
        let alone = guesses_within(&cfg, TEN_YEARS, None);
        let p_alone = success_probability(alone, P_SIX_DIGITS_WINDOW_1);
        assert!(alone < 4_000, "{alone} guesses");
        assert!(p_alone < 0.02, "{p_alone}");

        let daily = guesses_within(&cfg, TEN_YEARS, Some(86_400));
        let p_daily = success_probability(daily, P_SIX_DIGITS_WINDOW_1);
        assert!(p_daily < 0.5, "{daily} guesses, p = {p_daily}");
    }
}
