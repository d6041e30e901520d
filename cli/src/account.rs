//! The caller's own account: `twofold disable` and `twofold devices`.

use std::fmt::Write as _;

use anyhow::bail;
use twofold_protocol::RememberedDevice;

use crate::status::print;
use crate::{bus, prompt, show};

const DISABLED: &str = "Two-factor authentication is now off for your account. \
                        Run `twofold setup` to turn it on again.";

/// `twofold disable`: a current code in, the enrollment removed. The daemon
/// refuses while the caller's rule requires two-factor authentication.
pub fn disable() -> anyhow::Result<()> {
    bus::with_daemon(async |proxy| {
        let Some(code) = prompt::current_code(proxy).await? else {
            bail!("no code was entered; two-factor authentication stays on");
        };
        proxy.disable(code.trim()).await.map_err(bus::daemon_error)
    })?;
    print(DISABLED)
}

/// `twofold authenticators`: the caller's apps, from their status.
pub fn authenticators() -> anyhow::Result<()> {
    let status = bus::with_daemon(async |proxy| proxy.status().await.map_err(bus::daemon_error))?;
    let text = crate::status::apps_text(&status);
    if text.is_empty() {
        return print("You have no authenticator app. Run `twofold setup` to add one.");
    }
    print(text.trim_start())
}

/// `twofold authenticators remove NAME`: a current code in, the app removed.
pub fn remove_authenticator(name: &str) -> anyhow::Result<()> {
    bus::with_daemon(async |proxy| {
        let Some(code) = prompt::current_code(proxy).await? else {
            bail!("no code was entered; nothing was removed");
        };
        proxy
            .remove_authenticator(name, code.trim())
            .await
            .map_err(bus::daemon_error)
    })?;
    print(&format!(
        "Removed the authenticator {}: its codes no longer work.",
        show::printable(name)
    ))
}

/// `twofold devices [--forget]`.
pub fn devices(forget: bool) -> anyhow::Result<()> {
    if forget {
        let n = bus::with_daemon(async |proxy| {
            proxy.forget_devices().await.map_err(bus::daemon_error)
        })?;
        return print(&forgot(n, None));
    }
    let devices = bus::with_daemon(async |proxy| proxy.devices().await.map_err(bus::daemon_error))?;
    print(&describe_devices(&devices))
}

/// "Forgot 2 remembered devices." or, for an administrator, "... of alice."
pub fn forgot(n: u32, owner: Option<&str>) -> String {
    let what = show::count(n, "remembered device", "remembered devices");
    match owner {
        Some(user) => format!("Forgot {what} of {user}."),
        None => format!("Forgot {what}."),
    }
}

fn describe_devices(devices: &[RememberedDevice]) -> String {
    if devices.is_empty() {
        return "You have no remembered devices.".into();
    }
    let hosts: Vec<_> = devices
        .iter()
        .map(|d| match d.rhost.as_str() {
            "" => "(no host name)".into(),
            rhost => show::printable(rhost),
        })
        .collect();
    let width = hosts.iter().map(|h| h.chars().count()).max().unwrap_or(0);
    let mut text =
        String::from("Logins from these hosts are not asked for a code until the time shown:\n");
    for (host, device) in hosts.iter().zip(devices) {
        let pad = width - host.chars().count();
        let _ = writeln!(
            text,
            "  {host}{:pad$}  until {}",
            "",
            show::utc_minute(device.until)
        );
    }
    text.push_str("Run `twofold devices --forget` to be asked again from all of them.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(rhost: &str, until: u64) -> RememberedDevice {
        RememberedDevice {
            rhost: rhost.into(),
            until,
        }
    }

    #[test]
    fn lists_remembered_devices_aligned() {
        let text = describe_devices(&[
            device("192.0.2.10", 1_785_456_000),
            device("laptop.example.org", 1_709_164_800),
            device("evil\x1b[2J", 0),
        ]);
        assert_eq!(
            text,
            "Logins from these hosts are not asked for a code until the time shown:\n  \
             192.0.2.10          until 2026-07-31 00:00 UTC\n  \
             laptop.example.org  until 2024-02-29 00:00 UTC\n  \
             evil\\u{1b}[2J       until 1970-01-01 00:00 UTC\n\
             Run `twofold devices --forget` to be asked again from all of them."
        );
        assert_eq!(describe_devices(&[]), "You have no remembered devices.");
    }

    #[test]
    fn says_how_many_were_forgotten() {
        assert_eq!(forgot(3, None), "Forgot 3 remembered devices.");
        assert_eq!(forgot(0, None), "Forgot 0 remembered devices.");
        assert_eq!(
            forgot(1, Some("alice")),
            "Forgot 1 remembered device of alice."
        );
    }
}
