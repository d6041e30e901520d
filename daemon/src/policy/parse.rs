//! `policy.toml` to a typed `Policy`: strict (unknown keys, bad dates and
//! unknown groups are errors at `path:line:column`), read once per load.

use super::{Methods, Mode, Policy, Rule, Step, Unenrolled};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use time::Date;

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
    if let Err(unknown) = known_groups(&policy) {
        let first = unknown.0.first().map_or("", String::as_str);
        let offset = text.find(&format!("\"{first}\"")).unwrap_or(0);
        let (line, column) = crate::config::line_column(&text, offset);
        return Err(PolicyError::Invalid {
            path: path.display().to_string(),
            line,
            column,
            message: unknown.to_string(),
        });
    }
    Ok((policy, true))
}

/// Groups a policy's rules name that NSS does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "the policy names groups that do not exist: {} (check the names, or the directory service)",
    .0.join(", ")
)]
pub struct UnknownGroups(pub Vec<String>);

/// Whether NSS knows every group the rules name. At start an unknown one
/// is only warned about (a directory service may still be coming up);
/// reload and check-config refuse it (`load_checked`).
pub fn known_groups(policy: &Policy) -> Result<(), UnknownGroups> {
    let missing = crate::users::missing_groups(policy.group_names());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(UnknownGroups(missing))
    }
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
