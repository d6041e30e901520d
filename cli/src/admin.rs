//! `twofold admin`: other users' status and throttle. The daemon decides who
//! may; the name is checked here only to give a clear message early.

use anyhow::Context;
use twofold_protocol::user;

use crate::{bus, status};

pub fn status(name: &str, json: bool) -> anyhow::Result<()> {
    check_name(name)?;
    let st =
        bus::with_daemon(async |proxy| proxy.admin_status(name).await.map_err(bus::daemon_error))?;
    let text = if json {
        status::to_json(&st)
    } else {
        status::describe_for_admin(&st)
    };
    status::print(&text)
}

pub fn unlock(name: &str) -> anyhow::Result<()> {
    check_name(name)?;
    bus::with_daemon(async |proxy| proxy.admin_unlock(name).await.map_err(bus::daemon_error))?;
    status::print(&format!("Unlocked {name}."))
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
}
