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

/// The effective uid: the one the kernel reports to a socket's peer, and
/// so the one to authenticate as.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A stream connected to the Unix socket at `path`, waiting at most
/// `timeout` while the listener's backlog is full (connect(2) on a Unix
/// socket honours `SO_SNDTIMEO`, and then fails with `EAGAIN`).
pub fn connect_unix(
    path: &std::path::Path,
    timeout: std::time::Duration,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a usable socket path (empty, too long or with a NUL byte)",
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, &from) in address.sun_path.iter_mut().zip(bytes) {
        *to = from as libc::c_char;
    }
    // SAFETY: socket has no memory preconditions; a non-negative result is
    // a new descriptor that nothing else owns.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let stream = std::os::unix::net::UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    stream.set_write_timeout(Some(timeout))?;
    let length = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    loop {
        // SAFETY: `address` is a valid sockaddr_un that outlives the call,
        // and `length` covers its family, the path and the path's NUL.
        let r = unsafe {
            libc::connect(
                stream.as_raw_fd(),
                (&raw const address).cast(),
                length as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(stream);
        }
        let e = Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A message zbus parses from bytes read off a connection.
pub fn message_from_bytes(
    bytes: zbus::wire::serialized::Data<'static, 'static>,
) -> zbus::Result<zbus::Message> {
    // SAFETY: zbus marks this unsafe because the bytes come from outside;
    // it checks the header and the body's framing as it does for every
    // message its own connections receive (the same `from_raw_parts`), and
    // `bytes` holds one whole message read under the size bounds, with no
    // file descriptors.
    unsafe { zbus::Message::from_bytes(bytes) }
}
