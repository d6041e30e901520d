//! `twofold status`, and the status text shared with `twofold admin status`.

use std::fmt::Write as _;
use std::io::{self, Write};
use twofold_protocol::text::human_duration;

use twofold_protocol::UserStatus;

use crate::bus;

/// Few enough backup codes left to suggest a new set.
const LOW_BACKUP_CODES: u32 = 2;

pub fn run(json: bool) -> anyhow::Result<()> {
    let status = bus::with_daemon(async |proxy| proxy.status().await.map_err(bus::daemon_error))?;
    let text = if json {
        to_json(&status)
    } else {
        describe_own(&status)
    };
    print(&text)
}

pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// The caller's own status, with what to do next.
pub fn describe_own(s: &UserStatus) -> String {
    if !s.enrolled {
        return "Two-factor authentication: not set up. Run `twofold setup` to enroll.".into();
    }
    let mut text = format!(
        "Two-factor authentication: enrolled (TOTP). Backup codes left: {}.",
        s.backup_codes_left
    );
    if s.backup_codes_left <= LOW_BACKUP_CODES {
        text.push_str("\nRun `twofold backup-codes` for a new set of backup codes.");
    }
    if s.throttled_for_secs > 0 {
        let _ = write!(
            text,
            "\nToo many wrong codes: codes are accepted again in {}.",
            human_duration(s.throttled_for_secs)
        );
    }
    text
}

/// Any user's status, for an administrator.
pub fn describe_for_admin(s: &UserStatus) -> String {
    if !s.enrolled {
        return format!("{}: two-factor authentication not set up.", s.user);
    }
    let mut text = format!(
        "{}: two-factor authentication enrolled (TOTP). Backup codes left: {}.\n\
         Consecutive failed codes: {}.",
        s.user, s.backup_codes_left, s.consecutive_failures
    );
    if s.throttled_for_secs > 0 {
        let _ = write!(
            text,
            "\nThrottled: codes are accepted again in {}. `twofold admin unlock {}` clears this.",
            human_duration(s.throttled_for_secs),
            s.user
        );
    } else {
        text.push_str("\nNot throttled.");
    }
    text
}

/// One line of JSON, written by hand to keep the dependencies few.
pub fn to_json(s: &UserStatus) -> String {
    format!(
        "{{\"user\":{},\"enrolled\":{},\"backup_codes_left\":{},\"throttled_for_secs\":{},\"consecutive_failures\":{}}}",
        json_string(&s.user),
        s.enrolled,
        s.backup_codes_left,
        s.throttled_for_secs,
        s.consecutive_failures
    )
}

fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(enrolled: bool, left: u32, throttled: u64) -> UserStatus {
        UserStatus {
            user: "alice".into(),
            enrolled,
            backup_codes_left: left,
            throttled_for_secs: throttled,
            consecutive_failures: 3,
        }
    }

    #[test]
    fn describes_the_callers_status() {
        assert_eq!(
            describe_own(&status(false, 0, 0)),
            "Two-factor authentication: not set up. Run `twofold setup` to enroll."
        );
        assert_eq!(
            describe_own(&status(true, 8, 0)),
            "Two-factor authentication: enrolled (TOTP). Backup codes left: 8."
        );
        let throttled = describe_own(&status(true, 8, 300));
        assert!(
            throttled.ends_with("accepted again in 5 minutes."),
            "{throttled}"
        );
        assert!(describe_own(&status(true, 1, 0)).contains("twofold backup-codes"));
    }

    #[test]
    fn describes_a_user_for_an_admin() {
        let text = describe_for_admin(&status(true, 8, 30));
        assert!(
            text.starts_with("alice: two-factor authentication enrolled"),
            "{text}"
        );
        assert!(text.contains("Consecutive failed codes: 3."), "{text}");
        assert!(text.contains("twofold admin unlock alice"), "{text}");
    }

    #[test]
    fn writes_json() {
        assert_eq!(
            to_json(&status(true, 8, 0)),
            r#"{"user":"alice","enrolled":true,"backup_codes_left":8,"throttled_for_secs":0,"consecutive_failures":3}"#
        );
    }

    #[test]
    fn escapes_json_strings() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("dé@corp"), "\"dé@corp\"");
    }
}
