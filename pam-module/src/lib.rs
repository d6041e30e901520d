//! pam_twofold.so: asks for a second-factor code through the PAM conversation
//! and lets twofoldd decide. It holds no secret and no policy; all unsafe code
//! is in `ffi.rs`, all decisions come from the daemon.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod args;
pub mod authenticate;
mod clock;
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
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        host::authenticate(pamh, &args, flags)
    }

    /// No credentials to set; succeed so `auth` stacks that call setcred work.
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}
