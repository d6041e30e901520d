//! The login logic: synchronous, given the time, and unaware of the bus.
//! Callers have already decided that the caller may act for `user`.

use crate::audit::{self, Level, field};
use crate::backup::HashParams;
use crate::config::Config;
use crate::email_codes::{CodeStore, EmailCodes};
use crate::error::Error;
use crate::mail::{Mailer, Outbox};
use crate::offers::Offers;
use crate::policy::Policy;
use crate::store::{Enrollment, Event, Loaded, Store, StoreError, UserLock, new_generation};
use crate::throttle::{self, Hold, Source, SourceTable};
use crate::users::{self, Account};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use twofold_protocol::TwofoldError;

/// Lock stripes: logins of one user are serialized (a backup code or a step
/// is spent once), logins of different users mostly are not.
const LOCK_STRIPES: usize = 64;
/// Journal records after which the state is folded into a new enrollment file.
pub(crate) const COMPACT_AFTER_RECORDS: u64 = 512;
/// Lost races in a row before a write gives up (each one means another host
/// wrote this user's state between our load and our write).
const RECORD_ATTEMPTS: usize = 16;
pub struct Engine {
    cfg: Config,
    store: Box<dyn Store>,
    backup_params: HashParams,
    hostname: String,
    outbox: Box<dyn Outbox>,
    email_codes: Mutex<EmailCodes>,
    stripes: Vec<Mutex<()>>,
    /// Enrollments in progress: the keys offered, proofs, origins.
    offers: Offers,
    /// Wrong codes in a row per account and source (the account-wide
    /// ceiling is in each enrollment, on disk).
    sources: Mutex<SourceTable>,
    /// Replaced whole on reload; a login uses the policy it started with.
    policy: RwLock<Arc<Policy>>,
}

impl Engine {
    pub fn new(
        cfg: Config,
        store: impl Store + 'static,
        backup_params: HashParams,
        policy: Policy,
    ) -> Self {
        Self::with_store(cfg, Box::new(store), backup_params, policy)
    }

    /// The same, with a store chosen at run time (`store::open`).
    pub fn with_store(
        cfg: Config,
        store: Box<dyn Store>,
        backup_params: HashParams,
        policy: Policy,
    ) -> Self {
        let hostname = crate::users::hostname();
        Self {
            policy: RwLock::new(Arc::new(policy)),
            outbox: Box::new(Mailer::new(&cfg.email, &hostname)),
            email_codes: Mutex::default(),
            cfg,
            store,
            backup_params,
            hostname,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            offers: Offers::default(),
            sources: Mutex::new(SourceTable::default()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Send e-mail through `outbox` instead of the configured transport.
    #[must_use]
    pub fn with_outbox(mut self, outbox: impl Outbox + 'static) -> Self {
        self.outbox = Box::new(outbox);
        self
    }

    pub(crate) fn lock(&self, user: &str) -> MutexGuard<'_, ()> {
        let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let stripe = &self.stripes[(hash % LOCK_STRIPES as u64) as usize];
        // A poisoned stripe only means another call panicked; the state on disk is the truth.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `lock` and, with a store shared by hosts, the user's lock in the
    /// store too: for checking a code and recording what came of it.
    pub(crate) fn lock_checks(
        &self,
        user: &str,
    ) -> Result<(MutexGuard<'_, ()>, Box<dyn UserLock + '_>), Error> {
        let local = self.lock(user);
        let fleet = self.store.lock_user(user)?;
        Ok((local, fleet))
    }

    pub(crate) fn source_table(&self) -> MutexGuard<'_, SourceTable> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a code from `source` for `user` (whose state is `e`) must wait.
    /// Addresses that logged the user in recently skip the account-wide
    /// ceiling, never their own back-off.
    pub(crate) fn hold(
        &self,
        user: &str,
        source: &Source,
        e: &Enrollment,
        now: u64,
    ) -> Option<Hold> {
        let cfg = &self.cfg.throttle;
        let table = self.source_table();
        let own = table.wait(cfg, user, source, now);
        let ceiling = if table.is_known(cfg, user, source, now) {
            0
        } else {
            throttle::ceiling_wait(cfg, e.ceiling_tat, now)
        };
        (own > 0 || ceiling > 0).then_some(Hold { own, ceiling })
    }

    /// Whether `e` has few enough backup codes left to be told so.
    pub(crate) fn low_backup_codes(&self, e: &Enrollment) -> bool {
        e.backup.remaining() <= self.cfg.enrollment.low_backup_codes
    }

    /// Seconds the account-wide ceiling stays reached (0: not reached).
    pub(crate) fn ceiling_reached_for(&self, e: &Enrollment, now: u64) -> u64 {
        throttle::ceiling_wait(&self.cfg.throttle, e.ceiling_tat, now)
    }

    /// The longest wait anywhere for `user`, for status and reports.
    pub(crate) fn longest_wait(&self, user: &str, e: &Enrollment, now: u64) -> u64 {
        let cfg = &self.cfg.throttle;
        let own = self.source_table().longest_wait(cfg, user, now);
        own.max(throttle::ceiling_wait(cfg, e.ceiling_tat, now))
    }

    /// Append `event` durably, fold it in, and compact a long journal.
    /// `Ok(false)`: another host changed the user's state first (the step
    /// accepted, the backup code used, the bucket moved, a new enrollment)
    /// and nothing was written: the caller treats it as a lost race.
    #[must_use = "a lost race must not be taken for a recorded event"]
    pub(crate) fn record(
        &self,
        user: &str,
        loaded: &mut Loaded,
        event: Event,
    ) -> Result<bool, Error> {
        match self.store.append(user, loaded, event) {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        loaded.enrollment.apply(event).map_err(Error::fault)?;
        if loaded.journal_records() >= COMPACT_AFTER_RECORDS {
            let mut folded = loaded.enrollment.clone();
            folded.generation = new_generation(folded.generation);
            // The event is already durable; a failed compaction only postpones it.
            match self.store.write_enrollment(user, Some(loaded), &folded) {
                Ok(()) => {
                    loaded.enrollment = folded;
                    loaded.journal_len = 0;
                }
                Err(e) => audit::log(Level::Error, &format!("compaction postponed: {e}")),
            }
        }
        Ok(true)
    }

    /// Replace `user`'s state `loaded` with `next`, which folds in the
    /// current code the user proved themselves with: a lost race (another
    /// host accepted that step, or changed the state, first) reads as the
    /// code already used, never as done.
    pub(crate) fn write_proved(
        &self,
        user: &str,
        loaded: &Loaded,
        next: &Enrollment,
    ) -> Result<(), Error> {
        match self.store.write_enrollment(user, Some(loaded), next) {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(TwofoldError::InvalidInput(
                "That code was already used. Wait for the next code from your app.".into(),
            )
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Record the event `event` makes of the latest state: after a lost
    /// race, load again and ask anew (a wrong code already checked is
    /// counted against the bucket as it now is). `Ok(false)`: the user is
    /// no longer enrolled (reset meanwhile).
    pub(crate) fn record_latest(
        &self,
        user: &str,
        loaded: &mut Loaded,
        mut event: impl FnMut(&Enrollment) -> Event,
    ) -> Result<bool, Error> {
        for _ in 0..RECORD_ATTEMPTS {
            if self.record(user, loaded, event(&loaded.enrollment))? {
                return Ok(true);
            }
            match self.store.load(user)? {
                Some(fresh) => *loaded = fresh,
                None => return Ok(false),
            }
        }
        Err(Error::fault(format!(
            "the state of {user} kept changing under {RECORD_ATTEMPTS} attempts to record an event"
        )))
    }

    /// Enrollments in progress.
    pub(crate) fn offers(&self) -> &Offers {
        &self.offers
    }

    /// Where every user's state is kept.
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// How backup codes are hashed.
    pub(crate) fn backup_params(&self) -> HashParams {
        self.backup_params
    }

    /// This host's name, as it appears in key URIs and e-mail.
    pub(crate) fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Where e-mail codes go.
    pub(crate) fn outbox(&self) -> &dyn Outbox {
        self.outbox.as_ref()
    }

    /// E-mail codes in flight: the fleet's if the store shares them, else
    /// this host's.
    pub(crate) fn email_codes(&self) -> &dyn CodeStore {
        self.store.shared_email_codes().unwrap_or(&self.email_codes)
    }
}

impl Engine {
    /// The policy in force (a reload replaces it for the logins that follow).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Put `policy` in force for the logins that follow.
    pub(crate) fn set_policy(&self, policy: Policy) {
        match self.policy.write() {
            Ok(mut current) => *current = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
        }
    }

    /// `message`, with the support contact on a line of its own when there is one.
    pub(crate) fn refusal(&self, message: &str) -> String {
        let policy = self.policy();
        if policy.support.is_empty() {
            message.to_string()
        } else {
            format!("{message}\n{}", policy.support)
        }
    }

    pub(crate) fn groups(
        &self,
        account: &Account,
        policy: &Policy,
    ) -> Result<HashSet<String>, String> {
        users::member_of(account, policy.group_names()).map_err(|e| {
            audit::log(
                Level::Warning,
                &format!(
                    "groups unknown for {}: {e}; using the strictest rule",
                    field("user", &account.name)
                ),
            );
            e.to_string()
        })
    }
}
