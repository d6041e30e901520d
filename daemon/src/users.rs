//! Accounts and groups through NSS (so LDAP and SSSD users count).

use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("account lookup failed: {0}")]
pub struct NssError(#[from] nix::Error);

fn account(user: User) -> Account {
    Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }
}

pub fn by_name(name: &str) -> Result<Option<Account>, NssError> {
    Ok(User::from_name(name)?.map(account))
}

pub fn by_uid(uid: u32) -> Result<Option<Account>, NssError> {
    Ok(User::from_uid(Uid::from_raw(uid))?.map(account))
}

/// Whether `account` belongs to `group` (primary or supplementary).
/// A group that does not exist has no members.
pub fn in_group(account: &Account, group: &str) -> Result<bool, NssError> {
    let Some(group) = Group::from_name(group)? else {
        return Ok(false);
    };
    let name = CString::new(account.name.as_str()).map_err(|_| NssError(nix::Error::EINVAL))?;
    let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(account.gid))?;
    Ok(groups.contains(&group.gid))
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_both_ways() {
        let root = by_name("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(by_uid(0).unwrap().unwrap().name, "root");
        assert!(in_group(&root, "root").unwrap());
        assert!(!in_group(&root, "no-such-group-twofold").unwrap());
        assert!(by_name("no-such-user-twofold").unwrap().is_none());
    }
}
