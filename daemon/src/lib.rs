//! twofoldd: the only process that reads twofold's secrets. The login logic
//! (`engine`) is synchronous and takes the time as an argument; `bus` puts it
//! on the system D-Bus and decides who is calling.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
pub mod authz;
pub mod backup;
pub mod bus;
pub mod calls;
pub mod config;
pub mod engine;
pub mod policy;
pub mod privilege;
pub mod qr;
pub mod rules;
pub mod store;
pub mod throttle;
pub mod totp;
pub mod users;

/// Seconds since the Unix epoch; the only place the daemon reads the clock.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
