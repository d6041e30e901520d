//! One line per decision to syslog (facility authpriv), and to stderr when
//! asked (tests, the demo). While syslog cannot be reached, lines go to
//! stderr and are appended to the configured `log_file`, so they are kept
//! on a host without a syslog daemon. Values pass through `field`, which
//! escapes control characters; codes and secrets are never given to this
//! module.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

type Syslog = Logger<LoggerBackend, Formatter3164>;

/// How long to leave an unreachable syslog alone before connecting again:
/// without a pause every line would cost three failed connects (the crate
/// tries /dev/log, /var/run/syslog and /var/run/log) on a host without one.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

enum Syslogd {
    Connected(Syslog),
    /// Unreachable at `since`; a line after [`RECONNECT_PAUSE`] tries again
    /// (a restarted syslog daemon recreates /dev/log).
    Down {
        since: Instant,
    },
}

struct Sink {
    syslog: Mutex<Syslogd>,
    stderr: bool,
    /// Where lines go while syslog is down (`None`: stderr only), and the
    /// file once opened.
    fallback: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Start logging; lines also go to stderr if `stderr`, and to `fallback`
/// (unless empty) while syslog cannot be reached. Returns whether syslog
/// was reachable, so the caller can warn when it is not.
pub fn init(stderr: bool, fallback: &Path) -> bool {
    let syslog = connect().map_or(
        Syslogd::Down {
            since: crate::clock::monotonic(),
        },
        Syslogd::Connected,
    );
    let reachable = matches!(syslog, Syslogd::Connected(_));
    let _ = SINK.set(Sink {
        syslog: Mutex::new(syslog),
        stderr,
        fallback: (!fallback.as_os_str().is_empty()).then(|| fallback.to_path_buf()),
        file: Mutex::new(None),
    });
    reachable
}

/// Whether a line at `now` should try to reach a syslog that was down at `since`.
fn time_to_reconnect(since: Instant, now: Instant) -> bool {
    now.saturating_duration_since(since) >= RECONNECT_PAUSE
}

impl Syslogd {
    /// Send `line`: on the connection if there is one; else, or if that
    /// fails, on a new one, made at once after a failed send (the daemon may
    /// have restarted) and once the pause is over after a failed connect.
    fn send(&mut self, level: Level, line: &str) -> bool {
        let now = crate::clock::monotonic();
        match self {
            Syslogd::Connected(logger) => {
                if send(logger, level, line) {
                    return true;
                }
            }
            Syslogd::Down { since } => {
                if !time_to_reconnect(*since, now) {
                    return false;
                }
            }
        }
        if let Some(mut logger) = connect()
            && send(&mut logger, level, line)
        {
            *self = Syslogd::Connected(logger);
            return true;
        }
        *self = Syslogd::Down { since: now };
        false
    }
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
    let sent = sink
        .syslog
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(level, line);
    if !sent {
        if let Some(path) = &sink.fallback {
            let mut file = sink.file.lock().unwrap_or_else(|p| p.into_inner());
            append(&mut file, path, level, line);
        }
        if !sink.stderr {
            // Also stderr: it reaches the journal under systemd.
            to_stderr(&format!("twofoldd: (syslog unreachable) {line}\n"));
        }
    }
    if sink.stderr {
        to_stderr(&format!("twofoldd: {line}\n"));
    }
}

/// Append `line` to the fallback file at `path` (root's, 0600, created if
/// missing, never through a symbolic link), opening it on first use and
/// again after a failed write (it may have been rotated away).
fn append(file: &mut Option<File>, path: &Path, level: Level, line: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if file.is_none() {
        *file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .ok();
    }
    let Some(f) = file.as_mut() else { return };
    let text = fallback_line(crate::clock::now(), std::process::id(), level, line);
    if f.write_all(text.as_bytes()).is_err() {
        *file = None;
    }
}

/// A line of the fallback file: UTC time, process, level, the line.
fn fallback_line(now: u64, pid: u32, level: Level, line: &str) -> String {
    let when = i64::try_from(now)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| now.to_string());
    let level = match level {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "err",
    };
    format!("{when} twofoldd[{pid}]: {level}: {line}\n")
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
    fn an_unreachable_syslog_is_tried_again_only_after_the_pause() {
        let down = Instant::now();
        assert!(!time_to_reconnect(down, down));
        assert!(!time_to_reconnect(down, down + RECONNECT_PAUSE / 2));
        assert!(time_to_reconnect(down, down + RECONNECT_PAUSE));
        // An instant before `since` (not possible under the lock) saturates.
        assert!(!time_to_reconnect(down + RECONNECT_PAUSE, down));
    }

    #[test]
    fn a_fallback_line_says_when_and_what() {
        assert_eq!(
            fallback_line(1_700_000_000, 42, Level::Warning, "login user=a outcome=x"),
            "2023-11-14T22:13:20Z twofoldd[42]: warning: login user=a outcome=x\n"
        );
    }

    #[test]
    fn fields_cannot_forge_lines() {
        assert_eq!(field("user", "a\nfake=entry"), "user=a\\x0afake=entry");
        assert_eq!(field("rhost", ""), "rhost=-");
    }
}
