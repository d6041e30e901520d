//! pam_twofold.so: asks for a second-factor code through the PAM conversation
//! and lets twofoldd decide. It holds no secret and no policy; all unsafe code
//! is in `ffi.rs`, all decisions come from the daemon.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod args;
pub mod authenticate;
mod clock;
pub mod conn;
pub mod daemon;
mod enroll;
mod ffi;
mod host;
mod steps;

use pam::constants::{PamFlag, PamResultCode};
use pam::module::{PamHandle, PamHooks};
use std::ffi::CStr;

pub struct PamTwofold;

pam::pam_hooks!(PamTwofold);

impl PamHooks for PamTwofold {
    /// Read the items, then run the flow against twofoldd on its socket or
    /// the bus, with blocking calls on this thread: no runtime, no thread
    /// of the module's, and the connection closed before this returns.
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        let (mut host, options, items) = match host::prepare(pamh, &args, flags) {
            Ok(prepared) => prepared,
            Err(code) => return code,
        };
        let secure = host::secure_execution();
        let address = daemon::bus_address(secure, std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS"));
        let socket = daemon::socket_path(secure, std::env::var_os("TWOFOLD_SOCKET"));
        authenticate::run(&mut host, &options, &items, || {
            daemon::connect(&socket, &address)
        })
    }

    /// No credentials to set; succeed so `auth` stacks that call setcred work.
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}
