//! twofoldd: the only process that reads twofold's secrets. The login logic
//! (`engine`) is synchronous and takes the time as an argument; `bus` puts it
//! on the system D-Bus and decides who is calling.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::disallowed_methods
    )
)]

pub mod admin;
pub mod audit;
pub mod authz;
pub mod backup;
pub mod bucket;
pub mod bus;
pub mod calls;
pub mod clock;
pub mod config;
pub mod email_codes;
pub mod engine;
pub mod error;
pub mod limits;
pub mod login;
pub mod mail;
pub mod offers;
pub mod policy;
pub mod privilege;
pub mod qr;
pub mod store;
pub mod throttle;
pub mod totp;
pub mod users;

pub use clock::{now, now_ms};
