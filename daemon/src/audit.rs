//! One line per decision to syslog (facility authpriv), and to stderr when
//! asked (tests, the demo). Values pass through `field`, which escapes
//! control characters; codes and secrets are never given to this module.

use std::sync::{Mutex, OnceLock};
use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

struct Sink {
    syslog: Option<Mutex<Logger<LoggerBackend, Formatter3164>>>,
    stderr: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// Start logging; without a reachable syslog, lines go to stderr only if `stderr`.
pub fn init(stderr: bool) {
    let formatter = Formatter3164 {
        facility: Facility::LOG_AUTHPRIV,
        hostname: None,
        process: "twofoldd".into(),
        pid: std::process::id(),
    };
    let syslog = syslog::unix(formatter).ok().map(Mutex::new);
    let _ = SINK.set(Sink { syslog, stderr });
}

pub fn log(level: Level, line: &str) {
    let Some(sink) = SINK.get() else { return };
    if let Some(Ok(mut logger)) = sink.syslog.as_ref().map(|l| l.lock()) {
        let _ = match level {
            Level::Info => logger.info(line),
            Level::Warning => logger.warning(line),
            Level::Error => logger.err(line),
        };
    }
    if sink.stderr {
        eprintln!("twofoldd: {line}");
    }
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
