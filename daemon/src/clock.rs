//! The only place the daemon reads the time or waits. Everything else takes
//! the time as an argument, so tests run the rules at any date; the
//! `disallowed-methods` list in `daemon/clippy.toml` keeps it that way.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 for a clock before it).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, for the per-caller rate limits.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The monotonic clock, for deadlines and pauses that must not follow a
/// change of the wall clock.
pub fn monotonic() -> Instant {
    Instant::now()
}

/// Block the calling thread for `duration`.
pub fn sleep(duration: Duration) {
    std::thread::sleep(duration);
}
