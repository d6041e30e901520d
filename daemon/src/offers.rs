//! What an enrollment in progress keeps in memory until it is confirmed or
//! expires: the key offered to each uid, the proofs that allow adding a
//! second method, and the login an enrollment at login began in. Nothing
//! here is written to the store: a daemon restart forgets an offer, and the
//! user runs `twofold setup` again.

use crate::error::Error;
use crate::totp::TotpParams;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

/// Wrong confirming codes before an offer is withdrawn.
const MAX_CONFIRM_ATTEMPTS: u32 = 10;
/// Offers kept at once (one per uid); a full table refuses new ones.
const MAX_PENDING_OFFERS: usize = 10_000;
/// Enrollments begun at login whose origin is kept at once (one per user).
const MAX_LOGIN_ORIGINS: usize = 10_000;
/// How long a code from an existing method allows adding another method.
const PROOF_SECS: u64 = 120;

/// A key offered to a uid, waiting for a code from it.
pub(crate) struct Pending {
    pub secret: Zeroizing<Vec<u8>>,
    pub params: TotpParams,
    pub expires_at: u64,
    /// Begun (after a proof) as a second method of an existing enrollment.
    pub adds: bool,
    /// Begun as another authenticator app with this name (`None`: the first).
    pub name: Option<String>,
}

/// The service and remote host of an enrollment begun inside a login: the
/// confirming call carries only the user and the code (its wire form is
/// fixed), and its log line names the login it ends.
pub(crate) struct LoginOrigin {
    pub service: String,
    pub rhost: String,
    until: u64,
}

/// What a confirming code came to.
pub(crate) enum Confirmed {
    /// The offer, taken: the code matched at `step`.
    Taken { offer: Pending, step: u64 },
    /// No live offer for this uid.
    NoOffer,
    /// The code did not match (the offer is withdrawn after too many).
    Wrong,
}

#[derive(Default)]
pub(crate) struct Offers {
    pending: Mutex<HashMap<u32, (Pending, u32)>>,
    /// Users who proved themselves with their existing method moments ago,
    /// until when.
    proofs: Mutex<HashMap<String, u64>>,
    origins: Mutex<HashMap<String, LoginOrigin>>,
}

/// A poisoned lock only means another call panicked; what it guards is
/// still whole (each change is one insert or remove).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Offers {
    /// Offer `pending` to `uid`, replacing its earlier offer. `false`: the
    /// table is full of live offers of other uids.
    pub(crate) fn offer(&self, uid: u32, pending: Pending, now: u64) -> bool {
        let mut offers = locked(&self.pending);
        if offers.len() >= MAX_PENDING_OFFERS && !offers.contains_key(&uid) {
            offers.retain(|_, (p, _)| p.expires_at > now);
            if offers.len() >= MAX_PENDING_OFFERS {
                return false;
            }
        }
        offers.insert(uid, (pending, 0));
        true
    }

    /// Check a confirming code for `uid`'s offer with `check` (the step it
    /// matches, if any), and take the offer if it matches.
    pub(crate) fn confirm(
        &self,
        uid: u32,
        now: u64,
        check: impl FnOnce(&Pending) -> Result<Option<u64>, Error>,
    ) -> Result<Confirmed, Error> {
        let mut offers = locked(&self.pending);
        let Some((offer, attempts)) = offers.get_mut(&uid) else {
            return Ok(Confirmed::NoOffer);
        };
        if offer.expires_at <= now {
            offers.remove(&uid);
            return Ok(Confirmed::NoOffer);
        }
        match check(offer)? {
            Some(step) => match offers.remove(&uid) {
                Some((offer, _)) => Ok(Confirmed::Taken { offer, step }),
                None => Ok(Confirmed::NoOffer),
            },
            None => {
                *attempts += 1;
                if *attempts >= MAX_CONFIRM_ATTEMPTS {
                    offers.remove(&uid);
                }
                Ok(Confirmed::Wrong)
            }
        }
    }

    /// Remember that `user` just proved themselves with their existing
    /// method, so that a second method may be added (for `PROOF_SECS`).
    pub(crate) fn record_proof(&self, user: &str, now: u64) {
        let mut proofs = locked(&self.proofs);
        proofs.retain(|_, until| *until > now);
        proofs.insert(user.to_string(), now.saturating_add(PROOF_SECS));
    }

    /// Spend `user`'s proof, if a live one is there.
    pub(crate) fn take_proof(&self, user: &str, now: u64) -> bool {
        locked(&self.proofs)
            .remove(user)
            .is_some_and(|until| until > now)
    }

    /// Keep where `user`'s enrollment at login comes from, until `until`.
    pub(crate) fn keep_origin(&self, user: &str, service: &str, rhost: &str, until: u64, now: u64) {
        let mut origins = locked(&self.origins);
        if origins.len() >= MAX_LOGIN_ORIGINS {
            origins.retain(|_, o| o.until > now);
            if origins.len() >= MAX_LOGIN_ORIGINS {
                // Only the log line's service and host would be lost.
                return;
            }
        }
        origins.insert(
            user.to_string(),
            LoginOrigin {
                service: service.to_string(),
                rhost: rhost.to_string(),
                until,
            },
        );
    }

    /// Where `user`'s enrollment at login came from, if it is still live.
    pub(crate) fn take_origin(&self, user: &str, now: u64) -> Option<LoginOrigin> {
        locked(&self.origins).remove(user).filter(|o| o.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expires_at: u64) -> Pending {
        Pending {
            secret: Zeroizing::new(vec![1; 20]),
            params: TotpParams {
                digits: 6,
                period: 30,
                window: 1,
            },
            expires_at,
            adds: false,
            name: None,
        }
    }

    #[test]
    fn an_offer_is_taken_once_by_a_matching_code_and_never_after_it_expires() {
        let offers = Offers::default();
        assert!(offers.offer(7, pending(100), 0));
        assert!(matches!(
            offers.confirm(7, 100, |_| Ok(Some(3))),
            Ok(Confirmed::NoOffer)
        ));
        assert!(offers.offer(7, pending(100), 0));
        assert!(matches!(
            offers.confirm(7, 10, |_| Ok(Some(3))),
            Ok(Confirmed::Taken { step: 3, .. })
        ));
        assert!(matches!(
            offers.confirm(7, 10, |_| Ok(Some(3))),
            Ok(Confirmed::NoOffer)
        ));
    }

    #[test]
    fn too_many_wrong_codes_withdraw_the_offer() {
        let offers = Offers::default();
        assert!(offers.offer(7, pending(100), 0));
        for _ in 0..MAX_CONFIRM_ATTEMPTS {
            assert!(matches!(
                offers.confirm(7, 1, |_| Ok(None)),
                Ok(Confirmed::Wrong)
            ));
        }
        assert!(matches!(
            offers.confirm(7, 1, |_| Ok(Some(1))),
            Ok(Confirmed::NoOffer)
        ));
    }

    #[test]
    fn a_full_table_refuses_new_uids_until_offers_expire() {
        let offers = Offers::default();
        for uid in 0..MAX_PENDING_OFFERS as u32 {
            assert!(offers.offer(uid, pending(50), 0));
        }
        assert!(!offers.offer(u32::MAX, pending(100), 10));
        // A uid already offered may be offered again.
        assert!(offers.offer(0, pending(100), 10));
        // Once the others expire, there is room.
        assert!(offers.offer(u32::MAX, pending(100), 60));
    }

    #[test]
    fn a_proof_is_spent_once_and_expires() {
        let offers = Offers::default();
        offers.record_proof("alice", 0);
        assert!(offers.take_proof("alice", 1));
        assert!(!offers.take_proof("alice", 1));
        offers.record_proof("alice", 0);
        assert!(!offers.take_proof("alice", PROOF_SECS));
    }
}
