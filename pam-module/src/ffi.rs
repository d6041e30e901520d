//! The only unsafe code of the module besides pam-bindings itself: the
//! libpam calls pam-bindings does not wrap.

use pam::module::PamHandle;
use std::ffi::{CStr, CString, c_char, c_int};

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    fn pam_getenv(pamh: *const PamHandle, name: *const c_char) -> *const c_char;
}

/// A variable of the PAM environment (what the application and modules put
/// there, not the process's environment), copied out.
pub fn pam_env(pamh: &PamHandle, name: &CStr) -> Option<String> {
    // SAFETY: `pamh` is the live handle libpam gave this hook and `name` is
    // NUL-terminated; the result is NULL or a NUL-terminated string owned by
    // libpam that stays valid until the environment changes, and it is
    // copied before this function returns.
    unsafe {
        let value = pam_getenv(pamh, name.as_ptr());
        (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned())
    }
}

/// Log through libpam, which prefixes the service and module name.
/// Facility authpriv; `text` must never contain a code or secret.
pub fn syslog(pamh: &PamHandle, priority: c_int, text: &str) {
    // Interior NULs cannot be passed to C; they never come from our own messages.
    let Ok(text) = CString::new(text.replace('\0', "\\0")) else {
        return;
    };
    // SAFETY: `pamh` is the live handle libpam gave this hook; the format is a
    // constant "%s" consuming exactly one NUL-terminated string argument.
    unsafe {
        pam_syslog(
            pamh,
            libc::LOG_AUTHPRIV | priority,
            c"%s".as_ptr(),
            text.as_ptr(),
        )
    };
}

/// True when the host runs with privileges its caller does not have (setuid
/// `su`, `sudo`, …): the environment then belongs to an untrusted user.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval, getuid, geteuid, getgid and getegid have no
    // preconditions and cannot fail.
    unsafe {
        libc::getauxval(libc::AT_SECURE) != 0
            || libc::getuid() != libc::geteuid()
            || libc::getgid() != libc::getegid()
    }
}
