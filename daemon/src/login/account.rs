//! What users do to their own account after proving themselves: new backup
//! codes, turning two-factor off, remembered devices.

use crate::audit::{self, Level, field};
use crate::backup::{self};
use crate::engine::Engine;
use crate::error::Error;
use crate::policy::{self, Mode};
use crate::store::{new_generation, update_meta};
use crate::users::Account;
use twofold_protocol::{RememberedDevice, SecretString, TwofoldError};

impl Engine {
    /// New backup codes for `user`, after a current TOTP code (throttled like a login).
    pub fn regenerate_backup_codes(
        &self,
        account: &Account,
        input: &str,
        now: u64,
    ) -> Result<Vec<SecretString>, Error> {
        let user = account.name.as_str();
        let _guard = self.lock_checks(user)?;
        let (loaded, spent) = self.prove_with_code(account, input, now, "backup-codes")?;
        let (codes, backup) =
            backup::generate(self.config().enrollment.backup_codes, self.backup_params())
                .map_err(Error::fault)?;
        let mut next = loaded.enrollment.clone();
        next.generation = new_generation(next.generation);
        // The proving code is spent in the state written below.
        if let Some(event) = spent {
            next.apply(event).map_err(Error::fault)?;
        }
        next.failures = 0;
        next.backup = backup;
        // Another host accepted this step (or changed the state) first:
        // "already used".
        self.write_proved(user, &loaded, &next)?;
        audit::log(
            Level::Info,
            &format!("backup-codes-replaced {}", field("user", user)),
        );
        Ok(codes)
    }

    /// Remove the caller's own enrollment after a current code, unless any of
    /// their rules requires a second factor.
    pub fn disable(&self, account: &Account, input: &str, now: u64) -> Result<(), Error> {
        let user = account.name.as_str();
        let meta = self.store().load_meta(user)?;
        let policy = self.policy();
        let groups = self.groups(account, &policy);
        if policy.strictest_for(&groups, meta.override_mode, policy::date_of(now)) == Mode::Require
        {
            return Err(TwofoldError::AccessDenied(
                "Your account's rule requires two-factor authentication, so you cannot turn it off. \
Ask your administrator if you lost your phone."
                    .into(),
            ).into());
        }
        let _guard = self.lock_checks(user)?;
        self.store().load_meta(user)?;
        self.prove_with_code(account, input, now, "disable")?;
        self.store().remove_enrollment(user)?;
        self.source_table().forget_user(user);
        // Hosts remembered for the old key must not skip the next one.
        update_meta(self.store(), user, &mut |meta| {
            let any = !meta.remembered.is_empty();
            meta.remembered.clear();
            any
        })?;
        audit::log(Level::Info, &format!("disabled {}", field("user", user)));
        Ok(())
    }

    pub fn devices(&self, user: &str, now: u64) -> Result<Vec<RememberedDevice>, Error> {
        Ok(self
            .store()
            .load_meta(user)?
            .remembered
            .into_iter()
            .filter(|r| r.until > now)
            .map(|r| RememberedDevice {
                rhost: r.rhost,
                until: r.until,
            })
            .collect())
    }

    /// Forget remembered devices; `by_uid` is logged.
    pub fn forget_devices(&self, user: &str, by_uid: u32) -> Result<u32, Error> {
        let _guard = self.lock_checks(user)?;
        let mut count = 0;
        update_meta(self.store(), user, &mut |meta| {
            count = u32::try_from(meta.remembered.len()).unwrap_or(u32::MAX);
            meta.remembered.clear();
            true
        })?;
        audit::log(
            Level::Info,
            &format!(
                "forget-devices {} count={count} by_uid={by_uid}",
                field("user", user)
            ),
        );
        Ok(count)
    }
}
