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

use serde::Deserialize;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use time::Date;

pub const DEFAULT_PATH: &str = "/etc/twofold/policy.toml";

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

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleEntryFile {
    from: toml::value::Datetime,
    mode: Mode,
    /// From this date on; unset keeps the methods in force before it.
    #[serde(default)]
    methods: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultFile {
    mode: Mode,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    schedule: Vec<ScheduleEntryFile>,
    #[serde(default)]
    grace_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    groups: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    mode: Mode,
    #[serde(default)]
    methods: Option<Vec<String>>,
    #[serde(default)]
    schedule: Vec<ScheduleEntryFile>,
    #[serde(default)]
    grace_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    support: String,
    #[serde(default)]
    unenrolled_require: Unenrolled,
    #[serde(default)]
    trusted_networks: Vec<String>,
    #[serde(default)]
    remember_device_secs: u64,
    default: DefaultFile,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
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

impl Policy {
    /// The rule that applies, by the precedence at the top of this file.
    pub fn decide(&self, subject: &Subject<'_>, user_override: Override, today: Date) -> Decision {
        let mut steps = Vec::new();
        if let Some(mode) = user_override {
            steps.push(format!(
                "per-user override: {} (set by an administrator; it comes first)",
                mode.as_str()
            ));
            return Decision {
                rule: "override".into(),
                mode,
                methods: Methods::ANY,
                enforcement: None,
                grace_days: 0,
                steps,
            };
        }
        steps.push("per-user override: none".into());
        let groups = match &subject.groups {
            Ok(groups) => groups,
            Err(why) => {
                // Never weaker because a directory service is down: the strictest
                // mode any rule for this service (or the default) could give.
                let candidates = self.rules.iter().filter(|r| {
                    r.services.is_empty() || r.services.iter().any(|s| s == subject.service)
                });
                let strictest = candidates
                    .chain(std::iter::once(&self.default))
                    .max_by_key(|r| r.mode_on(today))
                    .unwrap_or(&self.default);
                steps.push(format!(
                    "groups: unknown ({why}); the strictest applicable rule is used"
                ));
                steps.push(format!(
                    "rule \"{}\": {}",
                    strictest.name,
                    strictest.describe()
                ));
                return Decision {
                    rule: "strictest".into(),
                    mode: strictest.mode_on(today),
                    methods: strictest.methods_on(today),
                    enforcement: strictest.enforcement_after(today),
                    grace_days: 0,
                    steps,
                };
            }
        };
        let mut listed: Vec<&str> = groups.iter().map(String::as_str).collect();
        listed.sort_unstable();
        steps.push(format!(
            "groups: {}",
            if listed.is_empty() {
                "none".into()
            } else {
                listed.join(", ")
            }
        ));
        for rule in &self.rules {
            let member = rule.groups.iter().find(|g| groups.contains(*g));
            let service_ok =
                rule.services.is_empty() || rule.services.iter().any(|s| s == subject.service);
            match (member, service_ok) {
                (None, _) => steps.push(format!(
                    "rule \"{}\": needs group {} (not a member), skipped",
                    rule.name,
                    rule.groups.join(" or ")
                )),
                (Some(_), false) => steps.push(format!(
                    "rule \"{}\": only for service {} (this is {}), skipped",
                    rule.name,
                    rule.services.join(" or "),
                    if subject.service.is_empty() {
                        "no service"
                    } else {
                        subject.service
                    }
                )),
                (Some(group), true) => {
                    steps.push(format!(
                        "rule \"{}\": group {group} matches: {}",
                        rule.name,
                        rule.describe()
                    ));
                    return self.decision(rule, today, steps);
                }
            }
        }
        steps.push(format!(
            "no rule matched: default rule, {}",
            self.default.describe()
        ));
        self.decision(&self.default, today, steps)
    }

    fn decision(&self, rule: &Rule, today: Date, mut steps: Vec<String>) -> Decision {
        let mode = rule.mode_on(today);
        let methods = rule.methods_on(today);
        let enforcement = rule.enforcement_after(today);
        steps.push(match enforcement {
            Some(date) => format!(
                "mode today ({today}): {}; require from {date}",
                mode.as_str()
            ),
            None => format!("mode today ({today}): {}", mode.as_str()),
        });
        if methods != Methods::ANY {
            steps.push(format!("methods today: {} only", methods.names()));
        }
        Decision {
            rule: rule.name.clone(),
            mode,
            methods,
            enforcement,
            grace_days: rule.grace_days,
            steps,
        }
    }

    /// The strictest mode any rule could give this user today, whatever the
    /// service: what `twofold disable` must respect.
    pub fn strictest_for(
        &self,
        groups: &Result<HashSet<String>, String>,
        user_override: Override,
        today: Date,
    ) -> Mode {
        if let Some(mode) = user_override {
            return mode;
        }
        let default = self.default.mode_on(today);
        match groups {
            Err(_) => self
                .rules
                .iter()
                .map(|r| r.mode_on(today))
                .fold(default, Mode::max),
            Ok(groups) => self
                .rules
                .iter()
                .filter(|r| r.groups.iter().any(|g| groups.contains(g)))
                .map(|r| r.mode_on(today))
                .fold(default, Mode::max),
        }
    }

    /// Whether any rule, on any date, accepts fewer than every method: only
    /// then must a code be checked against the rule at `Verify` too.
    pub fn restricts_methods(&self) -> bool {
        self.rules
            .iter()
            .chain(std::iter::once(&self.default))
            .any(|r| {
                r.methods != Methods::ANY || r.schedule.iter().any(|s| s.methods != Methods::ANY)
            })
    }

    /// Whether `rhost` is an address inside a trusted network.
    pub fn trusted(&self, rhost: &str) -> Option<ipnet::IpNet> {
        let ip: IpAddr = rhost.parse().ok()?;
        self.trusted_networks
            .iter()
            .find(|n| n.contains(&ip))
            .copied()
    }

    /// Every group a rule names (for resolving a user's memberships).
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.groups.iter().map(String::as_str))
    }

    /// One line for `twofold admin check-config` and the log.
    pub fn summary(&self) -> String {
        format!(
            "{} rule{}, default {}{}{}{}",
            self.rules.len(),
            if self.rules.len() == 1 { "" } else { "s" },
            self.default.describe(),
            if self.trusted_networks.is_empty() {
                String::new()
            } else {
                format!(", {} trusted networks", self.trusted_networks.len())
            },
            if self.remember_device_secs > 0 {
                format!(", devices remembered {} s", self.remember_device_secs)
            } else {
                String::new()
            },
            match self.unenrolled_require {
                Unenrolled::Enroll => ", enrollment at login under require",
                Unenrolled::Refuse => ", refusal under require when not enrolled",
            }
        )
    }
}

/// Which of an enrolled user's methods a login checks, and whether the
/// login must go on to set up one the rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Factors {
    pub check: Methods,
    pub must_enroll: bool,
}

/// A user enrolled only with methods the rule does not accept still proves
/// themselves with those (never with the password alone); under `require`
/// the login then adds an accepted one.
pub fn factors(has: Methods, accepted: Methods, mode: Mode) -> Factors {
    let usable = has.both(accepted);
    if usable.is_empty() {
        Factors {
            check: has,
            must_enroll: mode == Mode::Require,
        }
    } else {
        Factors {
            check: usable,
            must_enroll: false,
        }
    }
}

/// Today's date (UTC) for a Unix time.
pub fn date_of(unix: u64) -> Date {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .map(|t| t.date())
        .unwrap_or(Date::MIN)
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The policy file's text; `None` when it is missing and need not exist.
/// Bytes that are not UTF-8 are refused at their line and column.
fn read(path: &Path, must_exist: bool) -> Result<Option<String>, PolicyError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(None),
        Err(source) => {
            return Err(PolicyError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let before = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        let (line, column) = crate::config::line_column(&before, valid);
        PolicyError::Invalid {
            path: path.display().to_string(),
            line,
            column,
            message: "the file is not UTF-8 text".into(),
        }
    })
}

/// Load the policy; a missing file at the default path means `Policy::default()`.
/// Its groups are not looked up (see `load_checked`).
pub fn load(path: &Path, must_exist: bool) -> Result<(Policy, bool), PolicyError> {
    match read(path, must_exist)? {
        Some(text) => parse(&text, path).map(|p| (p, true)),
        None => Ok((Policy::default(), false)),
    }
}

/// The one check of a policy file, for every entry point (`twofoldd
/// --check-config`, `twofold admin check-config`, reload): `load`, and every
/// group a rule names must exist. A rule naming an unknown group would treat
/// everyone as of unknown groups (the strictest rule) until the name is fixed.
pub fn load_checked(path: &Path, must_exist: bool) -> Result<(Policy, bool), PolicyError> {
    let Some(text) = read(path, must_exist)? else {
        return Ok((Policy::default(), false));
    };
    let policy = parse(&text, path)?;
    let missing = crate::users::missing_groups(policy.group_names());
    if let Some(first) = missing.first() {
        let offset = text.find(&format!("\"{first}\"")).unwrap_or(0);
        let (line, column) = crate::config::line_column(&text, offset);
        return Err(PolicyError::Invalid {
            path: path.display().to_string(),
            line,
            column,
            message: format!(
                "the policy names groups that do not exist: {} (check the names, or the directory service)",
                missing.join(", ")
            ),
        });
    }
    Ok((policy, true))
}

pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
    let invalid = |offset: usize, message: String| {
        let (line, column) = crate::config::line_column(text, offset);
        PolicyError::Invalid {
            path: path.display().to_string(),
            line,
            column,
            message,
        }
    };
    let file: PolicyFile = toml::from_str(text).map_err(|e| {
        invalid(
            e.span().map_or(0, |s| s.start),
            e.message().trim().to_string(),
        )
    })?;
    // Semantic errors point at the first line that names the offending value.
    let at = |needle: &str| text.find(needle).unwrap_or(0);
    let methods = |names: &Option<Vec<String>>, owner: &str, default: Methods| match names {
        None => Ok(default),
        Some(names) => Methods::from_names(names)
            .map_err(|why| invalid(at("methods"), format!("{owner}: {why}"))),
    };
    let schedule = |entries: Vec<ScheduleEntryFile>,
                    owner: &str,
                    first: Methods|
     -> Result<Vec<Step>, PolicyError> {
        let mut steps: Vec<Step> = Vec::new();
        for entry in entries {
            let from = to_date(&entry.from).ok_or_else(|| {
                invalid(
                    at(&entry.from.to_string()),
                    format!("{owner}: schedule dates must be plain dates like 2026-07-31"),
                )
            })?;
            if steps.last().is_some_and(|last| last.from >= from) {
                return Err(invalid(
                    at(&entry.from.to_string()),
                    format!("{owner}: schedule dates must be in increasing order"),
                ));
            }
            let before = steps.last().map_or(first, |s| s.methods);
            steps.push(Step {
                from,
                mode: entry.mode,
                methods: methods(&entry.methods, owner, before)?,
            });
        }
        Ok(steps)
    };
    let grace = |days: u32, owner: &str| {
        if days > 365 {
            Err(invalid(
                at("grace_days"),
                format!("{owner}: grace_days must be at most 365"),
            ))
        } else {
            Ok(days)
        }
    };
    let default_methods = methods(&file.default.methods, "default", Methods::ANY)?;
    let default = Rule {
        name: "default".into(),
        groups: Vec::new(),
        services: Vec::new(),
        mode: file.default.mode,
        methods: default_methods,
        schedule: schedule(file.default.schedule, "default", default_methods)?,
        grace_days: grace(file.default.grace_days, "default")?,
    };
    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for r in file.rules {
        let quoted = format!("\"{}\"", r.name);
        if r.name.is_empty()
            || matches!(r.name.as_str(), "default" | "override" | "strictest")
            || !names.insert(r.name.clone())
        {
            return Err(invalid(
                at(&quoted),
                format!("rule name {quoted} is empty, reserved or used twice"),
            ));
        }
        if r.groups.is_empty() || r.groups.iter().any(|g| g.is_empty()) {
            return Err(invalid(
                at(&quoted),
                format!("rule {quoted} must name at least one group"),
            ));
        }
        let first = methods(&r.methods, &r.name, Methods::ANY)?;
        rules.push(Rule {
            methods: first,
            schedule: schedule(r.schedule, &r.name, first)?,
            grace_days: grace(r.grace_days, &r.name)?,
            name: r.name,
            groups: r.groups,
            services: r.services,
            mode: r.mode,
        });
    }
    let mut trusted_networks = Vec::new();
    for net in &file.trusted_networks {
        let parsed = net
            .parse::<ipnet::IpNet>()
            .or_else(|_| net.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                invalid(
                    at(&format!("\"{net}\"")),
                    format!("trusted_networks: {net:?} is not an address or CIDR network"),
                )
            })?;
        trusted_networks.push(parsed);
    }
    if file.support.contains(['\n', '\r']) || file.support.len() > 200 {
        return Err(invalid(
            at("support"),
            "support must be one line of at most 200 characters".into(),
        ));
    }
    Ok(Policy {
        support: file.support,
        unenrolled_require: file.unenrolled_require,
        trusted_networks,
        remember_device_secs: file.remember_device_secs,
        default,
        rules,
    })
}

fn to_date(value: &toml::value::Datetime) -> Option<Date> {
    if value.time.is_some() || value.offset.is_some() {
        return None;
    }
    let d = value.date?;
    Date::from_calendar_date(
        i32::from(d.year),
        time::Month::try_from(d.month).ok()?,
        d.day,
    )
    .ok()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
