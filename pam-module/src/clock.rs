//! The module's only door to the clock: the deadlines of a connection and
//! the back-off on a full bus read the time (and sleep) through a `Clock`, so tests can run it on a fake
//! clock and a workspace-wide `disallowed-methods` rule can ban
//! `Instant::now`, `SystemTime::now` and `thread::sleep` everywhere else.
#![allow(clippy::disallowed_methods)] // this file is the one place allowed

use std::time::{Duration, Instant};

pub trait Clock {
    fn now(&self) -> Instant;
    /// Block the thread: a login runs on its host's thread alone, with
    /// blocking calls, so nothing else is held up.
    fn sleep(&self, pause: Duration);
    /// Nanoseconds of the wall clock, to spread retries (not secret, not
    /// needed to be unpredictable).
    fn subsec_nanos(&self) -> u32;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, pause: Duration) {
        std::thread::sleep(pause);
    }

    fn subsec_nanos(&self) -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    }
}
