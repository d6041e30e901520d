//! One line per decision to syslog (facility authpriv), and to stderr when
//! asked (tests, the demo). Values pass through `field`, which escapes
//! control characters; codes and secrets are never given to this module.

use std::sync::{Mutex, OnceLock};
use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

type Syslog = Logger<LoggerBackend, Formatter3164>;

struct Sink {
    /// `None` until connected, and again after a failed send: the next line
    /// reconnects (a restarted syslog daemon recreates /dev/log).
    syslog: Mutex<Option<Syslog>>,
    stderr: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warning,
    Error,
}

fn connect() -> Option<Syslog> {
    syslog::unix(Formatter3164 {
        facility: Facility::LOG_AUTHPRIV,
        hostname: None,
        process: "twofoldd".into(),
        pid: std::process::id(),
    })
    .ok()
}

/// Start logging; lines also go to stderr if `stderr`. Returns whether
/// syslog was reachable, so the caller can warn when it is not.
pub fn init(stderr: bool) -> bool {
    let syslog = connect();
    let reachable = syslog.is_some();
    let _ = SINK.set(Sink {
        syslog: Mutex::new(syslog),
        stderr,
    });
    reachable
}

fn send(logger: &mut Syslog, level: Level, line: &str) -> bool {
    match level {
        Level::Info => logger.info(line),
        Level::Warning => logger.warning(line),
        Level::Error => logger.err(line),
    }
    .is_ok()
}

pub fn log(level: Level, line: &str) {
    let Some(sink) = SINK.get() else { return };
    let mut syslog = sink.syslog.lock().unwrap_or_else(|p| p.into_inner());
    let sent = syslog.as_mut().is_some_and(|l| send(l, level, line));
    if !sent {
        *syslog = connect();
        let resent = syslog.as_mut().is_some_and(|l| send(l, level, line));
        if !resent && !sink.stderr {
            // Nowhere else to go: stderr reaches the journal under systemd.
            to_stderr(&format!("twofoldd: (syslog unreachable) {line}\n"));
        }
    }
    drop(syslog);
    if sink.stderr {
        to_stderr(&format!("twofoldd: {line}\n"));
    }
}

/// One write for the whole line (stderr is unbuffered: `eprintln!` would make
/// one system call per piece, and lines of concurrent calls could interleave).
fn to_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `key=value` with the value made safe for one log line.
pub fn field(key: &str, value: &str) -> String {
    let value = if value.is_empty() {
        "-".to_string()
    } else {
        twofold_protocol::user::loggable(value.as_bytes())
    };
    format!("{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_forge_lines() {
        assert_eq!(field("user", "a\nfake=entry"), "user=a\\x0afake=entry");
        assert_eq!(field("rhost", ""), "rhost=-");
    }
}
