//! `twofold status`, and the status text shared with `twofold admin status`.

use std::fmt::Write as _;
use std::io::{self, Write};
use twofold_protocol::text::human_duration;

use twofold_protocol::{Method, Mode, UserStatus};

use crate::{bus, show};

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
    let mut text = if s.enrolled {
        format!(
            "Two-factor authentication: enrolled ({}). Backup codes left: {}.",
            methods_text(s),
            s.backup_codes_left
        )
    } else {
        "Two-factor authentication: not set up. Run `twofold setup` to enroll.".into()
    };
    if let Some(line) = mode_for_user(s) {
        let _ = write!(text, "\n{line}");
    }
    if let Some(when) = enforcement(s) {
        let _ = write!(
            text,
            "\nTwo-factor authentication becomes required for you on {when}."
        );
    }
    if !s.enrolled {
        return text;
    }
    text.push_str(&apps_text(s));
    if s.low_backup_codes {
        let _ = write!(
            text,
            "\nOnly {} left: run `twofold backup-codes` for a new set of backup codes.",
            show::count(s.backup_codes_left, "backup code", "backup codes")
        );
    }
    if s.ceiling_reached_for_secs > 0 {
        let _ = write!(
            text,
            "\nToo many wrong codes for your account from several places: for {}, only a backup \
code is accepted from places you have not logged in from lately.",
            human_duration(s.ceiling_reached_for_secs)
        );
    } else if s.throttled_for_secs > 0 {
        let _ = write!(
            text,
            "\nToo many wrong codes: codes are accepted again in {}.",
            human_duration(s.throttled_for_secs)
        );
    }
    text
}

/// One line per authenticator app: name, when added and last used, and its
/// clock in words. Empty without any.
pub fn apps_text(s: &UserStatus) -> String {
    let mut text = String::new();
    if s.authenticators.is_empty() {
        return text;
    }
    text.push_str("\nAuthenticator apps:");
    for a in &s.authenticators {
        let _ = write!(
            text,
            "\n  {} ({}, added {}, last used {}): {}",
            show::printable(&a.name),
            show::printable(&a.method),
            show::utc_date(a.added),
            match a.last_used {
                0 => "never".to_string(),
                t => show::utc_date(t),
            },
            twofold_protocol::text::clock_words(a.drift_known.then_some(a.drift_secs))
        );
    }
    text
}

/// Any user's status, for an administrator.
pub fn describe_for_admin(s: &UserStatus) -> String {
    let mut text = if s.enrolled {
        format!(
            "{}: two-factor authentication enrolled ({}). Backup codes left: {}.\n\
             Consecutive failed codes: {}.",
            s.user,
            methods_text(s),
            s.backup_codes_left,
            s.consecutive_failures
        )
    } else {
        format!("{}: two-factor authentication not set up.", s.user)
    };
    if !s.mode.is_empty() {
        let _ = write!(text, "\nRule: {}. Mode: {}.", or_unnamed(&s.rule), s.mode);
    }
    if let Some(when) = enforcement(s) {
        let _ = write!(
            text,
            "\nTwo-factor authentication becomes required for {} on {when}.",
            s.user
        );
    }
    if !s.enrolled {
        return text;
    }
    text.push_str(&apps_text(s));
    if s.low_backup_codes {
        let _ = write!(
            text,
            "\nFew backup codes left: {} should run `twofold backup-codes` for a new set.",
            s.user
        );
    }
    if s.ceiling_reached_for_secs > 0 {
        let _ = write!(
            text,
            "\nACCOUNT-WIDE CEILING REACHED: too many wrong codes from several places (an attack?). \
For {}, only backup codes are checked from addresses that have not logged {} in lately. \
`twofold admin unlock {}` clears this.",
            human_duration(s.ceiling_reached_for_secs),
            s.user,
            s.user
        );
    }
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

/// What the mode in force means for the caller, naming the rule.
fn mode_for_user(s: &UserStatus) -> Option<String> {
    let rule = or_unnamed(&s.rule);
    // The mode stays text on the wire so that an older daemon's (none) or a
    // newer one's (unknown) still reads.
    Some(match Mode::parse(&s.mode) {
        None if s.mode.is_empty() => return None,
        Some(Mode::Require) => {
            format!("Two-factor authentication is required for you (rule: {rule}).")
        }
        Some(Mode::Recommend) => {
            format!("Two-factor authentication is recommended for you (rule: {rule}).")
        }
        Some(Mode::Optional) => {
            format!("Two-factor authentication is optional for you (rule: {rule}).")
        }
        Some(Mode::Exempt) => {
            format!("You are exempt from two-factor authentication (rule: {rule}).")
        }
        None => format!(
            "Two-factor authentication mode for you: {} (rule: {rule}).",
            s.mode
        ),
    })
}

fn or_unnamed(rule: &str) -> &str {
    if rule.is_empty() { "unnamed" } else { rule }
}

/// "2026-09-01 (in 32 days)" when a date is set and `require` is not yet in force.
fn enforcement(s: &UserStatus) -> Option<String> {
    if s.enforcement_date.is_empty() || Mode::parse(&s.mode) == Some(Mode::Require) {
        return None;
    }
    let when = match s.days_left {
        0 => "today".to_string(),
        n => format!("in {}", show::count(n, "day", "days")),
    };
    Some(format!("{} ({when})", s.enforcement_date))
}

/// `TOTP`, `e-mail codes to a***@example.com`, or both.
pub fn methods_text(s: &UserStatus) -> String {
    let mut parts = Vec::new();
    for method in s.methods.split(',').filter_map(Method::parse) {
        match method {
            Method::Totp => parts.push("TOTP".to_string()),
            Method::Email => parts.push(format!("e-mail codes to {}", s.email)),
        }
    }
    if parts.is_empty() {
        "TOTP".into()
    } else {
        parts.join(" and ")
    }
}

/// One line of JSON, written by hand to keep the dependencies few.
pub fn to_json(s: &UserStatus) -> String {
    format!(
        "{{\"user\":{},\"enrolled\":{},\"methods\":{},\"email\":{},\"backup_codes_left\":{},\"throttled_for_secs\":{},\"consecutive_failures\":{},\
         \"low_backup_codes\":{},\"ceiling_reached_for_secs\":{},\"rule\":{},\"mode\":{},\"enforcement_date\":{},\"days_left\":{},\
         \"setup_methods\":{},\"authenticators\":[{}]}}",
        json_string(&s.user),
        s.enrolled,
        json_string(&s.methods),
        json_string(&s.email),
        s.backup_codes_left,
        s.throttled_for_secs,
        s.consecutive_failures,
        s.low_backup_codes,
        s.ceiling_reached_for_secs,
        json_string(&s.rule),
        json_string(&s.mode),
        json_string(&s.enforcement_date),
        s.days_left,
        json_string(&s.setup_methods.names()),
        s.authenticators
            .iter()
            .map(|a| format!(
                "{{\"name\":{},\"method\":{},\"added\":{},\"last_used\":{},\"drift_secs\":{},\"drift_known\":{}}}",
                json_string(&a.name),
                json_string(&a.method),
                a.added,
                a.last_used,
                a.drift_secs,
                a.drift_known
            ))
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// A JSON string literal, quotes included (also used by `twofold admin report --json`).
pub fn json_string(value: &str) -> String {
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
            methods: if enrolled {
                "totp".into()
            } else {
                String::new()
            },
            email: String::new(),
            backup_codes_left: left,
            throttled_for_secs: throttled,
            consecutive_failures: 3,
            low_backup_codes: left <= 3,
            ceiling_reached_for_secs: 0,
            rule: "default".into(),
            mode: "optional".into(),
            enforcement_date: String::new(),
            days_left: 0,
            setup_methods: twofold_protocol::Methods::ANY,
            host_methods: twofold_protocol::Methods::ANY,
            authenticators: Vec::new(),
        }
    }

    fn rolling_out(mode: &str, date: &str, days_left: u32) -> UserStatus {
        UserStatus {
            rule: "staff".into(),
            mode: mode.into(),
            enforcement_date: date.into(),
            days_left,
            ..status(true, 8, 0)
        }
    }

    #[test]
    fn describes_the_callers_status() {
        assert_eq!(
            describe_own(&status(false, 0, 0)),
            "Two-factor authentication: not set up. Run `twofold setup` to enroll.\n\
             Two-factor authentication is optional for you (rule: default)."
        );
        assert_eq!(
            describe_own(&status(true, 8, 0)),
            "Two-factor authentication: enrolled (TOTP). Backup codes left: 8.\n\
             Two-factor authentication is optional for you (rule: default)."
        );
        let throttled = describe_own(&status(true, 8, 300));
        assert!(
            throttled.ends_with("accepted again in 5 minutes."),
            "{throttled}"
        );
        assert!(describe_own(&status(true, 1, 0)).contains("twofold backup-codes"));
    }

    #[test]
    fn names_the_mode_in_force() {
        let text = |mode: &str| describe_own(&rolling_out(mode, "", 0));
        assert!(
            text("require")
                .contains("\nTwo-factor authentication is required for you (rule: staff).")
        );
        assert!(text("recommend").contains("is recommended for you (rule: staff)."));
        assert!(
            text("exempt")
                .contains("\nYou are exempt from two-factor authentication (rule: staff).")
        );
        assert!(text("future").contains("mode for you: future (rule: staff)."));
        let old_daemon = UserStatus {
            rule: String::new(),
            mode: String::new(),
            ..status(true, 8, 0)
        };
        assert_eq!(
            describe_own(&old_daemon),
            "Two-factor authentication: enrolled (TOTP). Backup codes left: 8."
        );
    }

    #[test]
    fn announces_the_enforcement_date() {
        assert_eq!(
            describe_own(&rolling_out("recommend", "2026-09-01", 32)),
            "Two-factor authentication: enrolled (TOTP). Backup codes left: 8.\n\
             Two-factor authentication is recommended for you (rule: staff).\n\
             Two-factor authentication becomes required for you on 2026-09-01 (in 32 days)."
        );
        let tomorrow = describe_own(&rolling_out("optional", "2026-09-01", 1));
        assert!(
            tomorrow.ends_with("on 2026-09-01 (in 1 day)."),
            "{tomorrow}"
        );
        let today = describe_own(&rolling_out("optional", "2026-09-01", 0));
        assert!(today.ends_with("on 2026-09-01 (today)."), "{today}");
        // Once `require` is in force, or without a date, nothing is announced.
        assert!(!describe_own(&rolling_out("require", "2026-09-01", 0)).contains("becomes"));
        assert!(!describe_own(&rolling_out("recommend", "", 0)).contains("becomes"));
    }

    #[test]
    fn describes_a_user_for_an_admin() {
        let text = describe_for_admin(&status(true, 8, 30));
        assert!(
            text.starts_with("alice: two-factor authentication enrolled"),
            "{text}"
        );
        assert!(text.contains("Consecutive failed codes: 3."), "{text}");
        assert!(text.contains("\nRule: default. Mode: optional."), "{text}");
        assert!(text.contains("twofold admin unlock alice"), "{text}");
        assert_eq!(
            describe_for_admin(&UserStatus {
                enrolled: false,
                ..rolling_out("recommend", "2026-09-01", 32)
            }),
            "alice: two-factor authentication not set up.\n\
             Rule: staff. Mode: recommend.\n\
             Two-factor authentication becomes required for alice on 2026-09-01 (in 32 days)."
        );
    }

    #[test]
    fn says_loudly_when_the_account_wide_ceiling_is_reached() {
        let s = UserStatus {
            ceiling_reached_for_secs: 1500,
            ..status(true, 8, 1500)
        };
        let admin = describe_for_admin(&s);
        assert!(
            admin.contains(
                "\nACCOUNT-WIDE CEILING REACHED: too many wrong codes from several places"
            ),
            "{admin}"
        );
        assert!(
            admin.contains("For 25 minutes, only backup codes are checked"),
            "{admin}"
        );
        let own = describe_own(&s);
        assert!(own.contains("only a backup code is accepted"), "{own}");
        assert!(to_json(&s).contains(r#""ceiling_reached_for_secs":1500,"#));
        assert!(!describe_for_admin(&status(true, 8, 30)).contains("CEILING"));
    }

    #[test]
    fn names_each_method() {
        let s = UserStatus {
            methods: "totp,email".into(),
            email: "a***@example.com".into(),
            ..status(true, 8, 0)
        };
        assert!(
            describe_own(&s).starts_with(
                "Two-factor authentication: enrolled (TOTP and e-mail codes to a***@example.com)."
            ),
            "{}",
            describe_own(&s)
        );
        let s = UserStatus {
            methods: "email".into(),
            ..s
        };
        assert!(describe_for_admin(&s).contains("enrolled (e-mail codes to a***@example.com)"));
    }

    #[test]
    fn writes_json() {
        assert_eq!(
            to_json(&status(true, 8, 0)),
            r#"{"user":"alice","enrolled":true,"methods":"totp","email":"","backup_codes_left":8,"throttled_for_secs":0,"consecutive_failures":3,"low_backup_codes":false,"ceiling_reached_for_secs":0,"rule":"default","mode":"optional","enforcement_date":"","days_left":0,"setup_methods":"totp,email","authenticators":[]}"#
        );
        assert!(
            to_json(&rolling_out("recommend", "2026-09-01", 32))
                .ends_with(r#""rule":"staff","mode":"recommend","enforcement_date":"2026-09-01","days_left":32,"setup_methods":"totp,email","authenticators":[]}"#)
        );
    }

    #[test]
    fn escapes_json_strings() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("dé@corp"), "\"dé@corp\"");
    }
}
