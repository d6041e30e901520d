//! twofoldd: the only process that reads twofold's secrets. The login logic
//! (`engine`) is synchronous and takes the time as an argument; `bus` puts it
//! on the system D-Bus and decides who is calling.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
pub mod authz;
pub mod backup;
pub mod bucket;
pub mod bus;
pub mod calls;
pub mod config;
pub mod email;
pub mod engine;
pub mod limits;
pub mod mail;
pub mod policy;
pub mod privilege;
pub mod qr;
pub mod rules;
pub mod store;
pub mod throttle;
pub mod totp;
pub mod users;

/// Seconds since the Unix epoch; with `now_ms`, the only places the daemon reads the clock.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, for the per-caller rate limits.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
