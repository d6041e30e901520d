//! The enforcement policy (`/etc/twofold/policy.toml`): which mode applies to
//! a user for a PAM service on a given day, and why.
//!
//! Precedence, in order, the first that applies wins:
//! 1. a per-user override set by an administrator (`require` or `exempt`);
//! 2. the `[[rule]]` tables in file order: a rule applies when the user is in
//!    one of its `groups` and, if it lists `services`, the PAM service is one
//!    of them (so put narrow rules, such as an FTP exemption, first);
//! 3. the `[default]` rule.
//!
//! When the user's groups cannot be resolved (NSS failure), the strictest
//! mode among the rules that could apply and the default is used instead.

mod decide;
mod parse;

pub use decide::{Factors, factors};
pub use parse::{PolicyError, UnknownGroups, known_groups, load, load_checked, parse};

use serde::Deserialize;
use std::collections::HashSet;
use time::Date;

pub use crate::config::DEFAULT_POLICY_PATH as DEFAULT_PATH;

/// The mode and the method set are the contract's types (the same words on
/// the wire, in `policy.toml` and in the state directory's meta files).
pub use twofold_protocol::{Methods, Mode};

/// What happens to a user who is not enrolled under `require`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unenrolled {
    /// Enroll inside the login conversation (QR code, key, code, backup codes).
    #[default]
    Enroll,
    /// Refuse the login with a message (and the support contact).
    Refuse,
}

/// A mode that takes effect on a date (00:00 UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub from: Date,
    pub mode: Mode,
    pub methods: Methods,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `default` for the default rule.
    pub name: String,
    /// Empty for the default rule.
    pub groups: Vec<String>,
    /// Empty: every service.
    pub services: Vec<String>,
    /// The mode before the first scheduled date.
    pub mode: Mode,
    /// The methods before the first scheduled date.
    pub methods: Methods,
    pub schedule: Vec<Step>,
    pub grace_days: u32,
}

impl Rule {
    /// The mode in force on `today`.
    pub fn mode_on(&self, today: Date) -> Mode {
        self.schedule
            .iter()
            .rev()
            .find(|s| s.from <= today)
            .map_or(self.mode, |s| s.mode)
    }

    /// The methods that satisfy the rule on `today`.
    pub fn methods_on(&self, today: Date) -> Methods {
        self.schedule
            .iter()
            .rev()
            .find(|s| s.from <= today)
            .map_or(self.methods, |s| s.methods)
    }

    /// The next date on which the rule becomes `require`, when it is not yet.
    pub fn enforcement_after(&self, today: Date) -> Option<Date> {
        if self.mode_on(today) == Mode::Require {
            return None;
        }
        self.schedule
            .iter()
            .find(|s| s.from > today && s.mode == Mode::Require)
            .map(|s| s.from)
    }

    fn describe(&self) -> String {
        let mut text = format!("mode {}", self.mode.as_str());
        if self.methods != Methods::ANY {
            text.push_str(&format!(" ({} only)", self.methods.names()));
        }
        let mut methods = self.methods;
        for step in &self.schedule {
            text.push_str(&format!(", {} from {}", step.mode.as_str(), step.from));
            if step.methods != methods {
                text.push_str(&format!(" ({})", step.methods.names()));
                methods = step.methods;
            }
        }
        if self.grace_days > 0 {
            text.push_str(&format!(
                ", {} days of grace for new users",
                self.grace_days
            ));
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub support: String,
    pub unenrolled_require: Unenrolled,
    pub trusted_networks: Vec<ipnet::IpNet>,
    pub remember_device_secs: u64,
    pub default: Rule,
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    /// Without a policy file: everyone `recommend`, which locks no one out.
    fn default() -> Self {
        Self {
            support: String::new(),
            unenrolled_require: Unenrolled::Enroll,
            trusted_networks: Vec::new(),
            remember_device_secs: 0,
            default: Rule {
                name: "default".into(),
                groups: Vec::new(),
                services: Vec::new(),
                mode: Mode::Recommend,
                methods: Methods::ANY,
                schedule: Vec::new(),
                grace_days: 0,
            },
            rules: Vec::new(),
        }
    }
}

/// A per-user override set with `twofold admin require|exempt`.
pub type Override = Option<Mode>;

/// Who is logging in, as far as the policy cares.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub user: &'a str,
    /// `Err` when NSS could not tell (then the strictest possible rule applies).
    pub groups: Result<HashSet<String>, String>,
    pub service: &'a str,
}

/// The effective rule for a subject on a day, with the reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `override`, `default`, or a rule's name (`strictest` after an NSS failure).
    pub rule: String,
    pub mode: Mode,
    /// The factors that satisfy the rule today.
    pub methods: Methods,
    pub enforcement: Option<Date>,
    pub grace_days: u32,
    pub steps: Vec<String>,
}

impl Decision {
    /// Whole days from `today` to the enforcement date (0 without one).
    pub fn days_left(&self, today: Date) -> u32 {
        self.enforcement
            .map_or(0, |d| u32::try_from((d - today).whole_days()).unwrap_or(0))
    }
}

/// Today's date (UTC) for a Unix time. A time past the last date `time`
/// can hold (9999-12-31) is that last date, so a clock set far ahead gets
/// the schedule's latest step (usually `require`), never its earliest.
pub fn date_of(unix: u64) -> Date {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .map(|t| t.date())
        .unwrap_or(Date::MAX)
}

#[cfg(test)]
mod tests;
