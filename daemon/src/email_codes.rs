//! E-mailed codes in flight: one live code per user, single use, voided
//! after too many misses; sends rationed per user. `CodeStore` is what the
//! flows in `login/email.rs` need; one host keeps them in memory
//! (`Mutex<EmailCodes>`), a fleet in its database (`store/postgres/email.rs`,
//! `Store::shared_email_codes`), so a code sent by one host works once on
//! any host.

use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// Wrong tries on one e-mailed code before it is void (the throttle counts them too).
pub const MAX_CODE_ATTEMPTS: u32 = 5;
/// Users whose send history is kept before old entries are pruned.
const MAX_TRACKED_USERS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Purpose {
    Login,
    /// Proving this address, for the enrollment of the uid; `adds`: begun
    /// (after a proof) as a second method of an existing enrollment.
    Enroll {
        uid: u32,
        address: String,
        adds: bool,
    },
}

pub struct SentCode {
    pub code: Zeroizing<String>,
    pub purpose: Purpose,
    pub expires_at: u64,
    pub attempts: u32,
}

/// What the engine keeps about e-mailed codes.
#[derive(Default)]
pub struct EmailCodes {
    pub codes: HashMap<String, SentCode>,
    /// When codes were sent, per user, within the last hour.
    sends: HashMap<String, VecDeque<u64>>,
}

/// The result of comparing a typed code with the one sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailCheck {
    Match,
    NoMatch,
    /// No live code for this purpose.
    None,
}

/// Where codes in flight live: every call for one user, each atomic (two
/// hosts checking one code at once: one match).
pub trait CodeStore: Send + Sync {
    /// Unless `user` must wait before another send (`Ok(Err(seconds))`),
    /// count a send at `now` and make `code` the user's live one for
    /// `purpose` until `expires_at`, voiding any older.
    fn put(
        &self,
        user: &str,
        code: &str,
        purpose: &Purpose,
        expires_at: u64,
        now: u64,
        limits: SendLimits,
    ) -> Result<Result<(), u64>, StoreError>;
    /// Void `user`'s live code if it is still `code` (its e-mail failed).
    fn void(&self, user: &str, code: &str) -> Result<(), StoreError>;
    /// Compare `typed` with the live code of `user` sent for `purpose`; a
    /// match spends it, and too many misses void it.
    fn check(
        &self,
        user: &str,
        purpose: &Purpose,
        typed: &str,
        now: u64,
    ) -> Result<(EmailCheck, Option<Purpose>), StoreError>;
    /// Whether `user` has a live login code.
    fn has_login_code(&self, user: &str, now: u64) -> Result<bool, StoreError>;
}

/// How often codes may be sent to one user.
#[derive(Debug, Clone, Copy)]
pub struct SendLimits {
    pub interval: u64,
    pub per_hour: u32,
}

/// Seconds until another send (0: now), from the sends of the last hour
/// (oldest first; older ones are dropped).
pub fn wait_after(times: &mut VecDeque<u64>, limits: SendLimits, now: u64) -> u64 {
    while times
        .front()
        .is_some_and(|&t| t.saturating_add(3600) <= now)
    {
        times.pop_front();
    }
    let after_last = times.back().map_or(0, |&t| {
        t.saturating_add(limits.interval).saturating_sub(now)
    });
    let after_hour = if times.len() >= limits.per_hour as usize {
        times
            .front()
            .map_or(0, |&t| t.saturating_add(3600).saturating_sub(now))
    } else {
        0
    };
    after_last.max(after_hour)
}

/// Whether a live code sent for `sent` answers a check for `asked`.
pub fn same_kind(sent: &Purpose, asked: &Purpose) -> bool {
    matches!(
        (sent, asked),
        (Purpose::Login, Purpose::Login) | (Purpose::Enroll { .. }, Purpose::Enroll { .. })
    )
}

impl CodeStore for Mutex<EmailCodes> {
    fn put(
        &self,
        user: &str,
        code: &str,
        purpose: &Purpose,
        expires_at: u64,
        now: u64,
        limits: SendLimits,
    ) -> Result<Result<(), u64>, StoreError> {
        let mut codes = self.lock().unwrap_or_else(|p| p.into_inner());
        let wait = codes.wait(user, limits.interval, limits.per_hour, now);
        if wait > 0 {
            return Ok(Err(wait));
        }
        codes.record_send(user, now);
        codes.codes.insert(
            user.to_string(),
            SentCode {
                code: Zeroizing::new(code.to_string()),
                purpose: purpose.clone(),
                expires_at,
                attempts: 0,
            },
        );
        Ok(Ok(()))
    }

    fn void(&self, user: &str, code: &str) -> Result<(), StoreError> {
        let mut codes = self.lock().unwrap_or_else(|p| p.into_inner());
        if codes
            .codes
            .get(user)
            .is_some_and(|c| same(c.code.as_bytes(), code.as_bytes()))
        {
            codes.codes.remove(user);
        }
        Ok(())
    }

    fn check(
        &self,
        user: &str,
        purpose: &Purpose,
        typed: &str,
        now: u64,
    ) -> Result<(EmailCheck, Option<Purpose>), StoreError> {
        let mut codes = self.lock().unwrap_or_else(|p| p.into_inner());
        Ok(codes.check(user, purpose, typed, now))
    }

    fn has_login_code(&self, user: &str, now: u64) -> Result<bool, StoreError> {
        let codes = self.lock().unwrap_or_else(|p| p.into_inner());
        Ok(codes.has_login_code(user, now))
    }
}

pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl EmailCodes {
    /// Seconds until another code may be sent to `user` (0: now).
    pub fn wait(&mut self, user: &str, interval: u64, per_hour: u32, now: u64) -> u64 {
        let Some(times) = self.sends.get_mut(user) else {
            return 0;
        };
        wait_after(times, SendLimits { interval, per_hour }, now)
    }

    pub fn record_send(&mut self, user: &str, now: u64) {
        if self.sends.len() >= MAX_TRACKED_USERS && !self.sends.contains_key(user) {
            self.sends.retain(|_, t| {
                t.back()
                    .is_some_and(|&last| last.saturating_add(3600) > now)
            });
            self.codes.retain(|_, c| c.expires_at > now);
        }
        self.sends
            .entry(user.to_string())
            .or_default()
            .push_back(now);
    }

    /// Compare `typed` with the live code of `user` sent for `purpose`; a
    /// match spends it, and too many misses void it.
    pub fn check(
        &mut self,
        user: &str,
        purpose: &Purpose,
        typed: &str,
        now: u64,
    ) -> (EmailCheck, Option<Purpose>) {
        let Some(sent) = self.codes.get_mut(user) else {
            return (EmailCheck::None, None);
        };
        if !same_kind(&sent.purpose, purpose) {
            return (EmailCheck::None, None);
        }
        if sent.expires_at <= now {
            self.codes.remove(user);
            return (EmailCheck::None, None);
        }
        if same(sent.code.as_bytes(), typed.as_bytes()) {
            let spent = self.codes.remove(user).map(|c| c.purpose);
            return (EmailCheck::Match, spent);
        }
        sent.attempts += 1;
        if sent.attempts >= MAX_CODE_ATTEMPTS {
            self.codes.remove(user);
        }
        (EmailCheck::NoMatch, None)
    }

    /// Whether `user` has a live login code.
    pub fn has_login_code(&self, user: &str, now: u64) -> bool {
        self.codes
            .get(user)
            .is_some_and(|c| c.purpose == Purpose::Login && c.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> EmailCodes {
        EmailCodes::default()
    }

    #[test]
    fn sends_are_spaced_and_rationed_per_hour() {
        let mut t = table();
        assert_eq!(t.wait("a", 30, 3, 1000), 0);
        t.record_send("a", 1000);
        assert_eq!(t.wait("a", 30, 3, 1010), 20);
        assert_eq!(t.wait("b", 30, 3, 1010), 0, "per user");
        t.record_send("a", 1030);
        t.record_send("a", 1060);
        // Three in the hour: the next when the first is an hour old.
        assert_eq!(t.wait("a", 30, 3, 1100), 1000 + 3600 - 1100);
        assert_eq!(t.wait("a", 30, 3, 4600), 0);
    }

    fn put(t: &mut EmailCodes, user: &str, code: &str, purpose: Purpose, expires_at: u64) {
        t.codes.insert(
            user.into(),
            SentCode {
                code: Zeroizing::new(code.into()),
                purpose,
                expires_at,
                attempts: 0,
            },
        );
    }

    #[test]
    fn a_code_works_once_and_not_after_it_expires() {
        let mut t = table();
        put(&mut t, "a", "123456", Purpose::Login, 500);
        assert_eq!(
            t.check("a", &Purpose::Login, "654321", 100).0,
            EmailCheck::NoMatch
        );
        assert_eq!(
            t.check("a", &Purpose::Login, "123456", 100).0,
            EmailCheck::Match
        );
        assert_eq!(
            t.check("a", &Purpose::Login, "123456", 100).0,
            EmailCheck::None
        );
        put(&mut t, "a", "123456", Purpose::Login, 500);
        assert_eq!(
            t.check("a", &Purpose::Login, "123456", 500).0,
            EmailCheck::None
        );
    }

    #[test]
    fn a_login_code_does_not_confirm_an_enrollment_nor_the_reverse() {
        let mut t = table();
        let enroll = Purpose::Enroll {
            uid: 7,
            address: "a@b.c".into(),
            adds: false,
        };
        put(&mut t, "a", "123456", Purpose::Login, 500);
        assert_eq!(t.check("a", &enroll, "123456", 1).0, EmailCheck::None);
        put(&mut t, "a", "123456", enroll.clone(), 500);
        assert_eq!(
            t.check("a", &Purpose::Login, "123456", 1).0,
            EmailCheck::None
        );
        assert_eq!(
            t.check("a", &enroll, "123456", 1),
            (EmailCheck::Match, Some(enroll))
        );
    }

    #[test]
    fn too_many_misses_void_the_code() {
        let mut t = table();
        put(&mut t, "a", "123456", Purpose::Login, 500);
        for _ in 0..MAX_CODE_ATTEMPTS {
            assert_eq!(
                t.check("a", &Purpose::Login, "000000", 1).0,
                EmailCheck::NoMatch
            );
        }
        assert_eq!(
            t.check("a", &Purpose::Login, "123456", 1).0,
            EmailCheck::None
        );
    }
}
