//! Accounts and groups through NSS (so LDAP and SSSD users count).

use nix::unistd::{Gid, Group, Uid, User};
use std::collections::HashSet;
use std::ffi::CString;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum NssError {
    #[error("account lookup failed: {0}")]
    Lookup(#[from] nix::Error),
    #[error("group {0} does not exist")]
    NoSuchGroup(String),
}

/// Groups named in `groups` that NSS does not know.
pub fn missing_groups<'a>(groups: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut missing: Vec<String> = groups
        .filter(|g| !matches!(Group::from_name(g), Ok(Some(_))))
        .map(String::from)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

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
    let name =
        CString::new(account.name.as_str()).map_err(|_| NssError::Lookup(nix::Error::EINVAL))?;
    let groups = nix::unistd::getgrouplist(&name, Gid::from_raw(account.gid))?;
    Ok(groups.contains(&group.gid))
}

/// Which of `groups` (by name) `account` belongs to, through getgrouplist
/// (primary and supplementary groups, from every NSS source).
pub fn member_of<'a>(
    account: &Account,
    groups: impl Iterator<Item = &'a str>,
) -> Result<HashSet<String>, NssError> {
    let mut groups = groups.peekable();
    let mut found = HashSet::new();
    // A policy that names no group needs no lookup (one less NSS round per login).
    if groups.peek().is_none() {
        return Ok(found);
    }
    let name =
        CString::new(account.name.as_str()).map_err(|_| NssError::Lookup(nix::Error::EINVAL))?;
    let gids = nix::unistd::getgrouplist(&name, Gid::from_raw(account.gid))?;
    for group in groups {
        // A group the policy names but NSS does not know may be a directory
        // outage as well as a typo: never treat it as "no members".
        let g = Group::from_name(group)?.ok_or(NssError::NoSuchGroup(group.to_string()))?;
        if gids.contains(&g.gid) {
            found.insert(group.to_string());
        }
    }
    Ok(found)
}

/// Members of a set of groups, looked up once, for reports over many users
/// (per-user getgrouplist would read the group database once per user).
pub struct Membership {
    groups: Vec<(String, u32, HashSet<String>)>,
}

impl Membership {
    pub fn of<'a>(groups: impl Iterator<Item = &'a str>) -> Result<Self, NssError> {
        let mut out = Vec::new();
        for name in groups {
            if let Some(g) = Group::from_name(name)? {
                out.push((
                    name.to_string(),
                    g.gid.as_raw(),
                    g.mem.into_iter().collect(),
                ));
            }
        }
        Ok(Self { groups: out })
    }

    pub fn groups_of(&self, account: &Account) -> HashSet<String> {
        self.groups
            .iter()
            .filter(|(_, gid, members)| *gid == account.gid || members.contains(&account.name))
            .map(|(name, _, _)| name.clone())
            .collect()
    }
}

/// Accounts with uid 1000 to 59999 (Debian's range for people), enumerated
/// through NSS. Directory services that do not enumerate list only local users.
pub fn local_accounts() -> Result<Vec<Account>, NssError> {
    static ENUMERATION: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ENUMERATION.lock().unwrap_or_else(|p| p.into_inner());
    let mut accounts = Vec::new();
    // SAFETY: setpwent/getpwent/endpwent share process-wide state; the mutex
    // above keeps this the only enumeration, and each entry is copied out
    // before the next call overwrites it.
    unsafe {
        libc::setpwent();
        loop {
            let entry = libc::getpwent();
            if entry.is_null() {
                break;
            }
            let uid = (*entry).pw_uid;
            if (1000..60000).contains(&uid)
                && !(*entry).pw_name.is_null()
                && let Ok(name) = std::ffi::CStr::from_ptr((*entry).pw_name).to_str()
                && twofold_protocol::user::validate(name).is_ok()
            {
                accounts.push(Account {
                    name: name.to_string(),
                    uid,
                    gid: (*entry).pw_gid,
                });
            }
        }
        libc::endpwent();
    }
    Ok(accounts)
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
