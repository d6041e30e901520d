//! `twofold admin`: other users' status, enrollment and rule, and the
//! daemon's policy. The daemon decides who may (root or its admin group);
//! names are checked here only to give a clear message early.

use std::io::{self, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};
use twofold_protocol::{Mode, OptionalMode, ReportRow, TwofoldError, user};

use crate::status::{self, print};
use crate::{UsageError, account, bus, prompt};

pub fn status(name: &str, json: bool) -> anyhow::Result<()> {
    check_name(name)?;
    let st =
        bus::with_daemon(async |proxy| proxy.admin_status(name).await.map_err(bus::daemon_error))?;
    let text = if json {
        status::to_json(&st)
    } else {
        status::describe_for_admin(&st)
    };
    print(&text)
}

pub fn report(json: bool) -> anyhow::Result<()> {
    let rows = bus::with_daemon(async |proxy| {
        match proxy.admin_report_hosts().await {
            // A daemon older than the last host: its report, without it.
            Err(TwofoldError::ZBus(e)) if bus::unknown_method(&e) => Ok(proxy
                .admin_report()
                .await
                .map_err(bus::daemon_error)?
                .into_iter()
                .map(ReportRow::from)
                .collect()),
            rows => rows.map_err(bus::daemon_error),
        }
    })?;
    print(&if json {
        crate::report::json(&rows)
    } else {
        crate::report::table(&rows)
    })
}

pub fn explain(name: &str, service: &str, rhost: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let lines = bus::with_daemon(async |proxy| {
        proxy
            .admin_explain(name, service, rhost)
            .await
            .map_err(bus::daemon_error)
    })?;
    print(&lines.join("\n"))
}

pub fn reset(name: &str, yes: bool) -> anyhow::Result<()> {
    check_name(name)?;
    if !yes {
        confirm_reset(name)?;
    }
    bus::with_daemon(async |proxy| proxy.admin_reset(name).await.map_err(bus::daemon_error))?;
    print(&format!(
        "{name}'s enrollment is removed; they enroll again at their next login or with `twofold setup`."
    ))
}

fn confirm_reset(name: &str) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "not asking for confirmation without a terminal, so nothing was removed; \
             run `twofold admin reset {name} --yes` to remove {name}'s enrollment"
        ))
        .into());
    }
    let answer = prompt::ask(&format!("Remove {name}'s two-factor enrollment? [y/N] "))?;
    if answer.as_deref().is_some_and(|a| is_yes(a)) {
        Ok(())
    } else {
        bail!("not confirmed; {name}'s enrollment is unchanged")
    }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// A per-user override of the policy's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    Require,
    Exempt,
    Clear,
}

impl Override {
    /// The mode as the daemon takes it (none clears the override).
    fn mode(self) -> OptionalMode {
        OptionalMode(match self {
            Self::Require => Some(Mode::Require),
            Self::Exempt => Some(Mode::Exempt),
            Self::Clear => None,
        })
    }

    fn done(self, name: &str) -> String {
        match self {
            Self::Require => format!(
                "Two-factor authentication is now required for {name}, whatever the policy says. \
                 `twofold admin clear {name}` returns them to the policy."
            ),
            Self::Exempt => format!(
                "{name} is now exempt from two-factor authentication, whatever the policy says. \
                 `twofold admin clear {name}` returns them to the policy."
            ),
            Self::Clear => format!(
                "{name}'s override is removed; the policy's rules apply to them again \
                 (`twofold admin explain {name}` shows which)."
            ),
        }
    }
}

pub fn set_override(name: &str, what: Override) -> anyhow::Result<()> {
    check_name(name)?;
    bus::with_daemon(async |proxy| {
        proxy
            .admin_set_override(name, what.mode())
            .await
            .map_err(bus::daemon_error)
    })?;
    print(&what.done(name))
}

pub fn unlock(name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    bus::with_daemon(async |proxy| proxy.admin_unlock(name).await.map_err(bus::daemon_error))?;
    print(&format!("Unlocked {name}."))
}

pub fn forget_devices(name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    let n = bus::with_daemon(async |proxy| {
        proxy
            .admin_forget_devices(name)
            .await
            .map_err(bus::daemon_error)
    })?;
    print(&account::forgot(n, Some(name)))
}

/// `twofold admin remove-authenticator USER NAME`.
pub fn remove_authenticator(user: &str, app: &str) -> anyhow::Result<()> {
    check_name(user)?;
    bus::with_daemon(async |proxy| {
        proxy
            .admin_remove_authenticator(user, app)
            .await
            .map_err(bus::daemon_error)
    })?;
    print(&format!(
        "Removed the authenticator {} of {user}: its codes no longer work.",
        crate::show::printable(app)
    ))
}

/// Check the configured policy file, or the one at `path`. The daemon reads
/// it, so a relative path is made absolute here, where it was meant.
pub fn check_config(path: Option<&Path>) -> anyhow::Result<()> {
    let path = match path {
        None => String::new(),
        Some(path) => absolute_utf8(path)?,
    };
    let summary = bus::with_daemon(async |proxy| {
        proxy
            .admin_check_policy(&path)
            .await
            .map_err(bus::daemon_error)
    })?;
    print(&summary)
}

fn absolute_utf8(path: &Path) -> anyhow::Result<String> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot make {} an absolute path", path.display()))?;
    absolute.into_os_string().into_string().map_err(|p| {
        UsageError(format!(
            "{} is not valid UTF-8; twofoldd takes only UTF-8 paths",
            Path::new(&p).display()
        ))
        .into()
    })
}

pub fn reload() -> anyhow::Result<()> {
    let text =
        bus::with_daemon(async |proxy| proxy.admin_reload().await.map_err(bus::daemon_error))?;
    print(&text)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    user::validate(name).with_context(|| format!("{name:?} is not a user name twofold accepts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_names_before_calling_the_daemon() {
        assert!(check_name("alice").is_ok());
        let e = check_name("../etc").unwrap_err();
        assert!(format!("{e:#}").contains("not a user name"), "{e:#}");
    }

    #[test]
    fn only_yes_confirms() {
        for answer in ["y", "Y", "yes", " YES "] {
            assert!(is_yes(answer), "{answer:?}");
        }
        for answer in ["", "n", "no", "yep", "y es"] {
            assert!(!is_yes(answer), "{answer:?}");
        }
    }

    #[test]
    fn overrides_say_what_was_done() {
        assert_eq!(Override::Require.mode().as_str(), "require");
        assert_eq!(Override::Exempt.mode().as_str(), "exempt");
        assert_eq!(Override::Clear.mode().as_str(), "");
        assert!(
            Override::Require
                .done("alice")
                .starts_with("Two-factor authentication is now required for alice")
        );
        assert!(
            Override::Exempt
                .done("alice")
                .starts_with("alice is now exempt")
        );
        assert!(
            Override::Clear
                .done("alice")
                .contains("twofold admin explain alice")
        );
    }

    #[test]
    fn a_relative_policy_path_is_sent_absolute() {
        let sent = absolute_utf8(Path::new("policy.toml")).unwrap();
        assert!(
            sent.starts_with('/') && sent.ends_with("/policy.toml"),
            "{sent}"
        );
        assert_eq!(
            absolute_utf8(Path::new("/etc/twofold/twofold.toml")).unwrap(),
            "/etc/twofold/twofold.toml"
        );
    }

    #[test]
    fn a_path_that_is_not_utf8_is_a_usage_error() {
        use std::os::unix::ffi::OsStrExt;
        let e =
            absolute_utf8(Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff.toml"))).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some(), "{e:#}");
    }
}
