//! What administrators change: unlock, reset, per-user overrides, the policy
//! in force (reload) and its check.

use crate::audit::{self, Level, field};
use crate::engine::Engine;
use crate::error::Error;
use crate::policy::{self, Mode};
use crate::store::{Event, update_meta};
use twofold_protocol::TwofoldError;

impl Engine {
    /// Clear `user`'s throttle (an administrator's action, by `admin_uid`).
    pub fn unlock(&self, user: &str, admin_uid: u32, now: u64) -> Result<(), Error> {
        let _guard = self.lock(user);
        let Some(mut loaded) = self.store().load(user)? else {
            return Err(TwofoldError::NotEnrolled(format!("{user} is not enrolled.")).into());
        };
        if !self.record_latest(user, &mut loaded, |_| Event::Unlock { at: now })? {
            return Err(TwofoldError::NotEnrolled(format!("{user} is not enrolled.")).into());
        }
        self.source_table().forget_streaks(user);
        audit::log(
            Level::Info,
            &format!("admin-unlock {} admin_uid={admin_uid}", field("user", user)),
        );
        Ok(())
    }

    /// Remove a user's enrollment (they enroll again), their grace start and devices.
    pub fn reset(&self, user: &str, admin_uid: u32) -> Result<(), Error> {
        // The store's lock too: a login on another host of a fleet must
        // not write back the metadata it read before this change.
        let _guard = self.lock_checks(user)?;
        // Read everything before changing anything: an unreadable file must
        // not leave a half-done reset behind.
        self.store().load_meta(user)?;
        self.store().remove_enrollment(user)?;
        self.source_table().forget_user(user);
        update_meta(self.store(), user, &mut |meta| {
            meta.first_prompt = None;
            meta.remembered.clear();
            true
        })?;
        audit::log(
            Level::Info,
            &format!("admin-reset {} admin_uid={admin_uid}", field("user", user)),
        );
        Ok(())
    }

    /// Set (`require`, `exempt`) or clear (`None`) a per-user override.
    pub fn set_override(
        &self,
        user: &str,
        mode: Option<Mode>,
        admin_uid: u32,
    ) -> Result<(), Error> {
        let _guard = self.lock_checks(user)?;
        update_meta(self.store(), user, &mut |meta| {
            meta.override_mode = mode;
            true
        })?;
        audit::log(
            Level::Info,
            &format!(
                "admin-override {} mode={} admin_uid={admin_uid}",
                field("user", user),
                mode.map_or("cleared", Mode::as_str)
            ),
        );
        Ok(())
    }

    /// Read the policy file again; an invalid one is refused and the old one stays.
    pub fn reload_policy(&self, by_uid: Option<u32>) -> Result<String, Error> {
        let path = &self.config().policy_file;
        let who = by_uid.map_or_else(
            || "signal=SIGHUP".to_string(),
            |uid| format!("admin_uid={uid}"),
        );
        // A file that disappeared is refused like an invalid one: dropping to
        // the built-in policy would silently end enforcement.
        match policy::load_checked(path, true) {
            Ok((policy, _)) => {
                let summary = format!("{}: {}", path.display(), policy.summary());
                self.set_policy(policy);
                audit::log(Level::Info, &format!("policy-reloaded {who} {summary}"));
                Ok(summary)
            }
            Err(e) => {
                audit::log(
                    Level::Error,
                    &format!("policy-reload-refused {who}: {e}; the policy in force stays"),
                );
                Err(TwofoldError::InvalidInput(format!(
                    "{e}\nThe policy in force was not changed."
                ))
                .into())
            }
        }
    }
}

/// Check a policy file without applying it.
pub fn check_policy(path: &std::path::Path) -> Result<String, TwofoldError> {
    policy::load_checked(path, true)
        .map(|(p, _)| format!("{}: valid; {}", path.display(), p.summary()))
        .map_err(|e| TwofoldError::InvalidInput(e.to_string()))
}
