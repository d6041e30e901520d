//! What the login flow and the enrollment at login both do: the code
//! prompt, refusing on a daemon's error or a conversation without an answer,
//! and naming the login in log lines. Both import this; neither imports the
//! other's internals back.

use crate::host::{Host, NoAnswer, Priority, Shown};
use pam::constants::PamResultCode;
use twofold_protocol::{Login, TwofoldError};

pub const PROMPT: &str = "Verification code: ";
pub const UNAVAILABLE_MESSAGE: &str = "The two-factor verification service is not available, so you cannot log in now. \
Try again later, or contact your administrator.";

/// Shown when the running twofoldd does not understand this module's call:
/// an upgrade installed a new module while the old daemon kept running.
pub const VERSION_MISMATCH_MESSAGE: &str = "The two-factor service on this host is a different \
version from the login module, so you cannot log in now. Ask your administrator to restart it \
(systemctl restart twofoldd).";

/// Whether `e` says the daemon does not know the method or its arguments
/// (or answered in a shape this module does not know): another version.
pub fn version_mismatch(e: &zbus::Error) -> bool {
    const NAMES: [&str; 3] = [
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.freedesktop.DBus.Error.InvalidSignature",
    ];
    match e {
        zbus::Error::MethodError(name, _, _) => NAMES.contains(&name.as_str()),
        zbus::Error::FDO(e) => matches!(
            **e,
            zbus::fdo::Error::UnknownMethod(_)
                | zbus::fdo::Error::InvalidArgs(_)
                | zbus::fdo::Error::InvalidSignature(_)
        ),
        zbus::Error::SignatureMismatch(..) => true,
        _ => false,
    }
}

/// The daemon answered with an error, or the call failed after it was made:
/// the login is refused whatever the failmode.
pub fn refused_by<H: Host>(host: &mut H, error: TwofoldError) -> PamResultCode {
    match error {
        TwofoldError::ZBus(e) if version_mismatch(&e) => {
            host.log(
                Priority::Error,
                &format!(
                    "twofoldd does not understand this module's call ({e}): it is another \
version; restart twofoldd after an upgrade; refusing the login"
                ),
            );
            host.show(Shown::Error, VERSION_MISMATCH_MESSAGE);
            PamResultCode::PAM_AUTH_ERR
        }
        TwofoldError::ZBus(e) => {
            host.log(
                Priority::Error,
                &format!("twofoldd did not answer: {e}; refusing the login"),
            );
            host.show(Shown::Error, UNAVAILABLE_MESSAGE);
            PamResultCode::PAM_AUTH_ERR
        }
        TwofoldError::UnknownUser(_) => PamResultCode::PAM_USER_UNKNOWN,
        TwofoldError::AccessDenied(message) => {
            host.log(
                Priority::Error,
                &format!("twofoldd refused this caller: {message}"),
            );
            PamResultCode::PAM_CRED_INSUFFICIENT
        }
        TwofoldError::InvalidInput(message)
        | TwofoldError::Throttled(message)
        | TwofoldError::Internal(message)
        | TwofoldError::NotEnrolled(message)
        | TwofoldError::AlreadyEnrolled(message)
        | TwofoldError::NoPendingEnrollment(message)
        | TwofoldError::DeliveryFailed(message)
        | TwofoldError::Busy(message) => {
            host.show(Shown::Error, &message);
            PamResultCode::PAM_AUTH_ERR
        }
    }
}

/// A conversation that ended without an answer refuses the login, logged
/// with whom it was for: it is a login decision like any other.
pub fn no_answer<H: Host>(
    host: &mut H,
    during: &str,
    login: &Login,
    NoAnswer(code): NoAnswer,
) -> PamResultCode {
    host.log(
        Priority::Warning,
        &format!(
            "conversation ended {during} without an answer ({code:?}) {}; login refused",
            who(login)
        ),
    );
    PamResultCode::PAM_CONV_ERR
}

/// "for user U from R", for log lines, with both made printable.
pub fn who(login: &Login) -> String {
    let rhost = if login.rhost.is_empty() {
        "(no remote host)".to_string()
    } else {
        twofold_protocol::user::loggable(login.rhost.as_bytes())
    };
    format!(
        "for user {} from {rhost}",
        twofold_protocol::user::loggable(login.user.as_bytes())
    )
}
