//! Who may do what, in one place. The caller's uid always comes from the bus
//! daemon; these functions turn it and a user name argument into the account
//! to act on, or a refusal (logged). They use NSS, so the bus layer runs them
//! on a blocking thread.

use crate::audit::{self, Level, field};
use crate::users::{self, Account};
use twofold_protocol::TwofoldError;

fn nss_error(e: users::NssError) -> TwofoldError {
    audit::log(Level::Error, &format!("account lookup failed: {e}"));
    TwofoldError::Internal(
        "twofold cannot look up accounts right now. Ask your administrator.".into(),
    )
}

/// Log and return a refusal; `target` says what was asked for, as a log
/// field (never text the caller typed: it may be a code, see `login_target`).
fn denied(caller_uid: u32, method: &str, target: &str, why: String) -> TwofoldError {
    let target = if target.is_empty() {
        String::new()
    } else {
        format!(" {target}")
    };
    audit::log(
        Level::Warning,
        &format!("access-denied caller_uid={caller_uid} method={method}{target}"),
    );
    TwofoldError::AccessDenied(why)
}

/// What a refused caller's user-name argument may leave in the log: its
/// length only. It is text the caller chose (a code typed into the wrong
/// field, or one passed on purpose), and any digest of a 6-digit code is
/// reversed by trying the million codes.
fn user_argument(user: &str) -> String {
    format!("user-argument-bytes={}", user.len())
}

/// The account of `uid` under its canonical name (the first passwd entry for the uid).
pub fn own_account(uid: u32) -> Result<Account, TwofoldError> {
    let account = users::by_uid(uid).map_err(nss_error)?.ok_or_else(|| {
        TwofoldError::UnknownUser(format!("uid {uid} has no user name on this host."))
    })?;
    twofold_protocol::user::validate(&account.name).map_err(|e| {
        TwofoldError::UnknownUser(format!("This user name cannot be used with twofold: {e}."))
    })?;
    Ok(account)
}

/// The account a name argument stands for, under the uid's canonical name,
/// so that an alias (`toor` for root) shares the enrollment of its uid.
pub fn named_account(user: &str) -> Result<Account, TwofoldError> {
    twofold_protocol::user::validate(user)
        .map_err(|e| TwofoldError::UnknownUser(format!("No such user ({e}).")))?;
    let named = users::by_name(user)
        .map_err(nss_error)?
        .ok_or_else(|| TwofoldError::UnknownUser("No such user.".into()))?;
    let canonical = own_account(named.uid)?;
    if canonical.name != user {
        audit::log(
            Level::Info,
            &format!(
                "alias {} {} uid={}",
                field("user", user),
                field("canonical", &canonical.name),
                named.uid
            ),
        );
    }
    Ok(canonical)
}

/// The account a login of `user` concerns, if `caller_uid` may ask about it.
/// A caller other than root is only ever matched against its own account, so
/// it cannot make the daemon resolve arbitrary names.
pub fn login_target(caller_uid: u32, user: &str, method: &str) -> Result<Account, TwofoldError> {
    if caller_uid == 0 {
        return named_account(user);
    }
    let own = own_account(caller_uid)?;
    if own.name != user {
        return Err(denied(
            caller_uid,
            method,
            &user_argument(user),
            format!(
                "Only root may call {method} for another user; you may only for your own account."
            ),
        ));
    }
    Ok(own)
}

/// Ok if `caller_uid` is root or a member of `admin_group`.
/// Every administrative call, allowed or not, is logged with the caller's uid.
pub fn admin(caller_uid: u32, admin_group: &str, method: &str) -> Result<(), TwofoldError> {
    let is_admin = caller_uid == 0
        || match users::by_uid(caller_uid).map_err(nss_error)? {
            Some(account) => users::in_group(&account, admin_group).map_err(nss_error)?,
            None => false,
        };
    if is_admin {
        audit::log(
            Level::Info,
            &format!("admin-call method={method} admin_uid={caller_uid}"),
        );
        Ok(())
    } else {
        Err(denied(
            caller_uid,
            method,
            "",
            format!(
                "Only root or members of the group '{admin_group}' may run administrative commands."
            ),
        ))
    }
}

/// An administrator other than root may not clear the throttle of root or of
/// another administrator (it would give them unlimited guesses there).
pub fn may_unlock(
    admin_uid: u32,
    target: &Account,
    admin_group: &str,
    method: &str,
) -> Result<(), TwofoldError> {
    if admin_uid == 0 {
        return Ok(());
    }
    if target.uid == 0 || users::in_group(target, admin_group).map_err(nss_error)? {
        return Err(denied(
            admin_uid,
            method,
            &field("user", &target.name),
            "Only root may unlock, reset or set an override for root or a member of the admin group.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use twofold_protocol::method;

    #[test]
    fn root_asks_for_anyone_by_canonical_name() {
        assert_eq!(
            login_target(0, "root", method::VERIFY).unwrap().name,
            "root"
        );
        assert!(matches!(
            login_target(0, "no-such-user-twofold", method::VERIFY),
            Err(TwofoldError::UnknownUser(_))
        ));
        assert!(matches!(
            login_target(0, "../etc", method::VERIFY),
            Err(TwofoldError::UnknownUser(_))
        ));
    }

    #[test]
    fn others_only_for_themselves() {
        // uid 65534 is "nobody" on Debian.
        let nobody = own_account(65534).unwrap();
        assert_eq!(
            login_target(65534, &nobody.name, method::VERIFY)
                .unwrap()
                .uid,
            65534
        );
        assert!(matches!(
            login_target(65534, "root", method::VERIFY),
            Err(TwofoldError::AccessDenied(_))
        ));
        assert!(matches!(
            admin(65534, "root", "AdminUnlock"),
            Err(TwofoldError::AccessDenied(_))
        ));
        assert!(admin(0, "no-such-group", "AdminUnlock").is_ok());
    }

    #[test]
    fn only_root_unlocks_root() {
        let root = own_account(0).unwrap();
        assert!(may_unlock(0, &root, "twofold-admin", "AdminUnlock").is_ok());
        assert!(matches!(
            may_unlock(65534, &root, "twofold-admin", "AdminUnlock"),
            Err(TwofoldError::AccessDenied(_))
        ));
    }
}
