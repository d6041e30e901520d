//! Several authenticator apps per user: add one with a name after proving a
//! current code, list them (in the status), remove one with a current code
//! (never the last method while the rule is `require`), or an
//! administrator removes one.

use crate::audit::{self, Level, field};
use crate::engine::Engine;
use crate::error::Error;
use crate::policy::{self, Mode};
use crate::store::{Enrollment, MAX_APPS, StoreError, new_generation};
use crate::users::Account;
use twofold_protocol::{EnrollmentOffer, TwofoldError};

/// The longest name of an authenticator.
pub const MAX_NAME_LEN: usize = 32;

/// A name is 1 to 32 letters, digits, `.`, `_` or `-` (it shows in logs and tables).
pub fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(TwofoldError::InvalidInput(format!(
            "An authenticator's name is 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-' \
(for example phone or keepassxc)."
        ))
        .into());
    }
    Ok(())
}

/// Whether `e` may take one more app called `name`; the reason if not.
pub(crate) fn room_for(e: &Enrollment, name: &str) -> Result<(), Error> {
    let apps = e.app_list();
    if apps.iter().any(|a| a.name == name) {
        return Err(TwofoldError::AlreadyEnrolled(format!(
            "You already have an authenticator called {name}. Choose another name."
        ))
        .into());
    }
    if apps.len() >= MAX_APPS {
        return Err(TwofoldError::InvalidInput(format!(
            "You have {MAX_APPS} authenticators, the most allowed. Remove one first \
(`twofold authenticators remove NAME`)."
        ))
        .into());
    }
    Ok(())
}

/// Index of the app called `name` in `e`.
fn index_of(e: &Enrollment, name: &str) -> Result<u8, TwofoldError> {
    e.app_list()
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.index)
        .ok_or_else(|| {
            TwofoldError::InvalidInput(format!(
                "No authenticator is called {name}. `twofold status` lists them."
            ))
        })
}

/// Whether removing app `index` would leave `e` with no method at all.
fn is_last_method(e: &Enrollment) -> bool {
    e.app_list().len() <= 1 && e.email.is_none()
}

impl Engine {
    /// Offer the caller a key for another authenticator app named `name`;
    /// needs a proof made moments ago with a current code (as `twofold setup`
    /// does first). `ConfirmEnrollment` stores it.
    pub fn begin_app(
        &self,
        account: &Account,
        name: &str,
        now: u64,
    ) -> Result<EnrollmentOffer, Error> {
        check_name(name)?;
        let user = account.name.as_str();
        // Not enrolled yet: this is the first app, under that name.
        let Some(loaded) = self.store().load(user)? else {
            return self.offer(account.uid, user, Some(name.to_string()), false, now);
        };
        room_for(&loaded.enrollment, name)?;
        self.require_proof(user, now)?;
        self.offer(account.uid, user, Some(name.to_string()), true, now)
    }

    /// Remove the caller's app `name` after a current code; refused for
    /// their last method while any rule for them is `require` (and otherwise
    /// pointed at `twofold disable`).
    pub fn remove_app_of_own(
        &self,
        account: &Account,
        name: &str,
        input: &str,
        now: u64,
    ) -> Result<(), Error> {
        check_name(name)?;
        let user = account.name.as_str();
        let meta = self.store().load_meta(user)?;
        let policy = self.policy();
        let groups = self.groups(account, &policy);
        let required = policy.strictest_for(&groups, meta.override_mode, policy::date_of(now))
            == Mode::Require;
        let _guard = self.lock_checks(user)?;
        if let Some(loaded) = self.store().load(user)? {
            let e = &loaded.enrollment;
            index_of(e, name)?;
            if is_last_method(e) {
                return Err(TwofoldError::AccessDenied(if required {
                    "That is your only method and your account's rule requires two-factor \
authentication, so it cannot be removed. Add another first (`twofold setup --name NAME`)."
                        .into()
                } else {
                    "That is your only method: `twofold disable` turns two-factor \
authentication off."
                        .into()
                })
                .into());
            }
        }
        let (loaded, spent) = self.prove_with_code(account, input, now, "remove-authenticator")?;
        let mut next = loaded.enrollment.clone();
        if let Some(event) = spent {
            next.apply(event).map_err(Error::fault)?;
        }
        let index = index_of(&next, name)?;
        next.remove_app(index).map_err(Error::fault)?;
        next.generation = new_generation(next.generation);
        self.write_proved(user, &loaded, &next)?;
        audit::log(
            Level::Info,
            &format!(
                "authenticator-removed {} {}",
                field("user", user),
                field("app", name)
            ),
        );
        Ok(())
    }

    /// An administrator removes `user`'s app `name` (not their last method:
    /// `twofold admin reset` is for that).
    pub fn admin_remove_app(&self, user: &str, name: &str, admin_uid: u32) -> Result<(), Error> {
        check_name(name)?;
        let _guard = self.lock_checks(user)?;
        let Some(loaded) = self.store().load(user)? else {
            return Err(TwofoldError::NotEnrolled(format!("{user} is not enrolled.")).into());
        };
        let mut next = loaded.enrollment.clone();
        let index = index_of(&next, name)?;
        if is_last_method(&next) {
            return Err(TwofoldError::AccessDenied(format!(
                "{name} is {user}'s only method; `twofold admin reset {user}` removes the \
enrollment instead."
            ))
            .into());
        }
        next.remove_app(index).map_err(Error::fault)?;
        next.generation = new_generation(next.generation);
        match self.store().write_enrollment(user, Some(&loaded), &next) {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(TwofoldError::InvalidInput(format!(
                    "{user}'s state changed meanwhile (a login on another host?): run the command again."
                )).into());
            }
            Err(e) => return Err(e.into()),
        }
        audit::log(
            Level::Info,
            &format!(
                "authenticator-removed {} {} admin_uid={admin_uid}",
                field("user", user),
                field("app", name)
            ),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        for good in ["phone", "keepassxc", "old-phone_2", "a.b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "x\ny", "caf\u{e9}", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
