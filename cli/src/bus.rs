//! The connection to twofoldd, and its errors turned into sentences.

use anyhow::anyhow;
use twofold_protocol::{TwofoldError, TwofoldProxy};
use zbus::fdo;

const UNREACHABLE: &str =
    "cannot reach twofoldd on the system bus: is the daemon running? (systemctl status twofoldd)";

/// Connect to the system bus, run `work` against the daemon, and close the
/// connection before returning. zbus is async only, so this is the one place
/// the program blocks on it.
pub fn with_daemon<T>(
    work: impl AsyncFnOnce(&TwofoldProxy<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    zbus::block_on(async {
        let conn = zbus::Connection::system().await.map_err(bus_error)?;
        let proxy = TwofoldProxy::new(&conn).await.map_err(bus_error)?;
        let result = work(&proxy).await;
        drop(proxy);
        drop(conn);
        result
    })
}

/// A daemon error as a sentence: the daemon's own message when it sent one.
pub fn daemon_error(e: TwofoldError) -> anyhow::Error {
    let (message, fallback) = match e {
        TwofoldError::ZBus(e) => return bus_error(e),
        TwofoldError::AccessDenied(m) => (m, "permission denied"),
        TwofoldError::UnknownUser(m) => (m, "no such user"),
        TwofoldError::InvalidInput(m) => (m, "invalid input"),
        TwofoldError::NotEnrolled(m) => (m, "not enrolled; run `twofold setup` first"),
        TwofoldError::AlreadyEnrolled(m) => (m, "already enrolled"),
        TwofoldError::NoPendingEnrollment(m) => {
            (m, "no enrollment in progress; run `twofold setup` again")
        }
        TwofoldError::Throttled(m) => (m, "too many wrong codes; try again later"),
        TwofoldError::Internal(m) => (m, "twofoldd failed; see its log"),
        TwofoldError::DeliveryFailed(m) => (m, "the code could not be sent by e-mail"),
        TwofoldError::Busy(m) => (
            m,
            "twofoldd is busy with this account's requests; try again",
        ),
    };
    if message.trim().is_empty() {
        anyhow!(fallback)
    } else {
        anyhow!(message)
    }
}

/// Whether the daemon does not know the method called: an older twofoldd,
/// whose older call the command then makes instead.
pub fn unknown_method(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => {
            name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod"
        }
        zbus::Error::FDO(f) => matches!(**f, zbus::fdo::Error::UnknownMethod(_)),
        _ => false,
    }
}

/// A failure of the bus itself, or a D-Bus error that is not the daemon's.
pub fn bus_error(e: zbus::Error) -> anyhow::Error {
    let what = match classify(&e) {
        Kind::Unreachable => UNREACHABLE,
        Kind::BusDenied => {
            "the system bus refused the call to twofoldd: is twofold's D-Bus policy installed?"
        }
        Kind::Other => "the call to twofoldd over the system bus failed",
    };
    anyhow::Error::new(e).context(what)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Unreachable,
    BusDenied,
    Other,
}

fn classify(e: &zbus::Error) -> Kind {
    match e {
        zbus::Error::InputOutput(_)
        | zbus::Error::Connection(..)
        | zbus::Error::Address(_)
        | zbus::Error::Handshake(_) => Kind::Unreachable,
        zbus::Error::FDO(f) => classify_fdo(f),
        _ => Kind::Other,
    }
}

fn classify_fdo(e: &fdo::Error) -> Kind {
    match e {
        fdo::Error::ZBus(inner) => classify(inner),
        fdo::Error::ServiceUnknown(_)
        | fdo::Error::NameHasNoOwner(_)
        | fdo::Error::NoReply(_)
        | fdo::Error::NoServer(_)
        | fdo::Error::Timeout(_)
        | fdo::Error::TimedOut(_)
        | fdo::Error::Disconnected(_)
        | fdo::Error::IOError(_)
        | fdo::Error::BadAddress(_)
        // Bus activation was tried and failed to start the daemon.
        | fdo::Error::SpawnExecFailed(_)
        | fdo::Error::SpawnChildExited(_)
        | fdo::Error::SpawnChildSignaled(_)
        | fdo::Error::SpawnFailed(_)
        | fdo::Error::SpawnServiceNotFound(_) => Kind::Unreachable,
        fdo::Error::AccessDenied(_) => Kind::BusDenied,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An older daemon's answer to a method it lacks, and only that, makes
    /// the command fall back to the older call.
    #[test]
    fn an_unknown_method_is_told_apart() {
        let unknown = zbus::fdo::Error::UnknownMethod("AdminReportHosts".into());
        assert!(unknown_method(&zbus::Error::FDO(Box::new(unknown))));
        let denied = zbus::fdo::Error::AccessDenied("no".into());
        assert!(!unknown_method(&zbus::Error::FDO(Box::new(denied))));
        assert!(!unknown_method(&zbus::Error::InvalidReply));
    }

    #[test]
    fn daemon_messages_pass_through() {
        let e = daemon_error(TwofoldError::AccessDenied("Only root may.".into()));
        assert_eq!(format!("{e:#}"), "Only root may.");
        let e = daemon_error(TwofoldError::Throttled(String::new()));
        assert_eq!(format!("{e:#}"), "too many wrong codes; try again later");
    }

    #[test]
    fn a_missing_daemon_says_how_to_check_it() {
        let e = zbus::Error::FDO(Box::new(fdo::Error::ServiceUnknown(
            "The name is not activatable".into(),
        )));
        let text = format!("{:#}", daemon_error(TwofoldError::ZBus(e)));
        assert!(text.starts_with(UNREACHABLE), "{text}");
        assert!(text.contains("not activatable"), "{text}");

        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = format!("{:#}", bus_error(zbus::Error::InputOutput(io.into())));
        assert!(text.starts_with(UNREACHABLE), "{text}");
    }

    #[test]
    fn other_bus_errors_are_not_blamed_on_the_daemon_being_down() {
        assert_eq!(classify(&zbus::Error::InvalidReply), Kind::Other);
        let denied = zbus::Error::FDO(Box::new(fdo::Error::AccessDenied("policy".into())));
        assert_eq!(classify(&denied), Kind::BusDenied);
    }
}
