//! The login logic: synchronous, given the time, and unaware of the bus.
//! Callers have already decided that the caller may act for `user`.

use crate::audit::{self, Level, field};
use crate::backup::{self, Found, HashParams, HexHash};
use crate::config::Config;
use crate::email::{EmailCheck, EmailCodes};
use crate::mail::{Mailer, Outbox};
use crate::policy::Policy;
use crate::policy::{Methods, Mode};
use crate::store::{ENROLLMENT_VERSION, Enrollment, Event, Loaded, SecretBytes, Store, StoreError};
use crate::throttle::{self, Source, SourceTable};
use crate::totp::{self, TotpCheck, TotpParams};
use crate::users::Account;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use twofold_protocol::code::{self, Code};
use twofold_protocol::text::human_duration;
use twofold_protocol::{
    EnrollmentOffer, SELF_SERVICE, SecretString, TwofoldError, VerifyOutcome, VerifyReply,
};
use zeroize::Zeroizing;

/// Lock stripes: logins of one user are serialized (a backup code or a step
/// is spent once), logins of different users mostly are not.
const LOCK_STRIPES: usize = 64;
/// Journal records after which the state is folded into a new enrollment file.
const COMPACT_AFTER_RECORDS: u64 = 512;
/// How long a code from an existing method allows adding another method.
const PROOF_SECS: u64 = 120;
/// A wrong code, with what to do about it.
const WRONG_CODE: &str = "Wrong code. Try again with the code your app shows now.";
const WRONG_EMAIL_CODE: &str = "Wrong code. Try again with the code from the latest e-mail.";

/// Wrong codes allowed while confirming one enrollment offer.
const MAX_CONFIRM_ATTEMPTS: u32 = 10;
/// Used backup codes remembered per user (the most a user can hold at once).
const MAX_SPENT_PER_USER: usize = 20;
/// Enrollment offers held at once (one per uid at most); each holds a secret.
const MAX_PENDING_OFFERS: usize = 10_000;

pub const NOT_ENROLLED_NOTICE: &str = "Two-factor authentication is not set up for your account. \
Run `twofold setup` to protect it with codes from an authenticator app.";

/// Where a login comes from, for the log.
#[derive(Debug, Clone, Default)]
pub struct LoginContext {
    pub service: String,
    pub rhost: String,
    /// Who asked: 0 for the PAM stacks of sshd, login, su, sudo.
    pub caller_uid: u32,
    /// The real uid of the asking process (read by the daemon from /proc):
    /// who ran su or sudo. Only for counting wrong codes.
    pub invoker: Option<u32>,
}

impl LoginContext {
    /// The remote host, when it can be trusted to be one: only the PAM stack
    /// (root) names it; a program running as a user could claim any.
    pub fn trusted_rhost(&self) -> Option<&str> {
        (self.caller_uid == 0 && !self.rhost.is_empty()).then_some(self.rhost.as_str())
    }

    /// Where wrong codes are counted: the remote host only when it can be
    /// trusted (as for `trusted_rhost`), else the local login's invoker, or
    /// the calling user.
    pub fn source(&self) -> Source {
        match self.trusted_rhost() {
            Some(rhost) => Source::remote(rhost),
            None if self.caller_uid == 0 => Source::Local(self.invoker),
            None => Source::Caller(self.caller_uid),
        }
    }
}

/// Why a code is not checked now: wrong codes from this source (`own`
/// seconds left), or from everywhere for this account (the account-wide
/// ceiling, `ceiling` seconds left). While only the ceiling holds, backup
/// codes are still checked: the owner always has a way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    pub own: u64,
    pub ceiling: u64,
}

impl Hold {
    pub fn wait(self) -> u64 {
        self.own.max(self.ceiling)
    }

    /// Only the ceiling holds: a backup code is checked, nothing else.
    pub fn backup_only(self) -> bool {
        self.own == 0
    }

    /// The refusal, the same from every path. A source under its own
    /// back-off is told only that wait (once over, a backup code is checked).
    pub fn text(self) -> String {
        if self.backup_only() {
            format!(
                "Too many wrong codes for this account from several places, so only a backup code \
is accepted here for now (other codes again in {}). Type one of your backup codes, or ask your \
administrator to unlock the account.",
                human_duration(self.ceiling)
            )
        } else {
            format!(
                "Too many wrong codes. Try again in {}.",
                human_duration(self.own)
            )
        }
    }

    pub fn outcome(self) -> &'static str {
        if self.backup_only() {
            "throttled-account"
        } else {
            "throttled"
        }
    }
}

struct Pending {
    secret: Zeroizing<Vec<u8>>,
    params: TotpParams,
    expires_at: u64,
    attempts: u32,
    /// Begun (after a proof) as a second method of an existing enrollment.
    adds: bool,
}

pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) store: Box<dyn Store>,
    pub(crate) backup_params: HashParams,
    pub(crate) hostname: String,
    pub(crate) outbox: Box<dyn Outbox>,
    pub(crate) email_codes: Mutex<EmailCodes>,
    /// The stored hashes of backup codes used since the daemon started, per
    /// user (at most `MAX_SPENT_PER_USER`), so that a used code (a race's
    /// loser, a code typed twice) is told apart from a wrong guess and not
    /// counted as one. Each entry needed a right code, so the map stays small.
    spent_backup: Mutex<HashMap<String, Vec<HexHash>>>,
    /// Users who proved themselves with their existing method moments ago,
    /// until when: adding a method to an enrollment needs one.
    proofs: Mutex<HashMap<String, u64>>,
    stripes: Vec<Mutex<()>>,
    pending: Mutex<HashMap<u32, Pending>>,
    /// Wrong codes in a row per account and source (the account-wide
    /// ceiling is in each enrollment, on disk).
    sources: Mutex<SourceTable>,
    /// Replaced whole on reload; a login uses the policy it started with.
    pub(crate) policy: RwLock<Arc<Policy>>,
}

pub(crate) fn internal(e: impl std::fmt::Display) -> TwofoldError {
    audit::log(Level::Error, &format!("state error: {e}"));
    TwofoldError::Internal(
        "twofold cannot read or write its state, so the code cannot be checked. Ask your administrator.".into(),
    )
}

impl From<StoreError> for TwofoldError {
    fn from(e: StoreError) -> Self {
        internal(e)
    }
}

impl Engine {
    pub fn new(
        cfg: Config,
        store: impl Store + 'static,
        backup_params: HashParams,
        policy: Policy,
    ) -> Self {
        let hostname = crate::users::hostname();
        Self {
            policy: RwLock::new(Arc::new(policy)),
            outbox: Box::new(Mailer::new(&cfg.email, &hostname)),
            email_codes: Mutex::default(),
            proofs: Mutex::default(),
            spent_backup: Mutex::default(),
            cfg,
            store: Box::new(store),
            backup_params,
            hostname,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
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

    /// The methods `user`'s rule accepts now, and its mode. Only asked of
    /// NSS when some rule restricts the methods (so the usual login pays
    /// nothing for it; the mode only matters then). An account NSS cannot
    /// resolve gets the strictest rule, as in `plan`.
    fn rule_today(
        &self,
        user: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<(Methods, Mode), TwofoldError> {
        let policy = self.policy();
        if !policy.restricts_methods() {
            return Ok((Methods::ANY, Mode::Optional));
        }
        let groups = match crate::users::by_name(user) {
            Ok(Some(account)) => self.groups(&account, &policy),
            Ok(None) => Err("no such account".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let meta = self.store.load_meta(user)?;
        let subject = crate::policy::Subject {
            user,
            groups,
            service: &ctx.service,
        };
        let decision = policy.decide(&subject, meta.override_mode, crate::policy::date_of(now));
        Ok((decision.methods, decision.mode))
    }

    /// The methods an enrollment can use on this host now.
    pub(crate) fn methods_of(&self, e: &Enrollment) -> Methods {
        Methods {
            totp: e.secret.is_some(),
            email: self.email_enabled() && e.email.is_some(),
        }
    }

    /// Remember that `user` just proved themselves with their existing
    /// method, so that a second method may be added (for `PROOF_SECS`).
    fn record_proof(&self, user: &str, now: u64) {
        let mut proofs = self.proofs.lock().unwrap_or_else(|p| p.into_inner());
        proofs.retain(|_, until| *until > now);
        proofs.insert(user.to_string(), now.saturating_add(PROOF_SECS));
    }

    /// Spend `user`'s proof, if a live one is there.
    pub(crate) fn take_proof(&self, user: &str, now: u64) -> bool {
        let mut proofs = self.proofs.lock().unwrap_or_else(|p| p.into_inner());
        proofs.remove(user).is_some_and(|until| until > now)
    }

    pub(crate) fn lock(&self, user: &str) -> MutexGuard<'_, ()> {
        let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let stripe = &self.stripes[(hash % LOCK_STRIPES as u64) as usize];
        // A poisoned stripe only means another call panicked; the state on disk is the truth.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn params_of(&self, e: &Enrollment) -> TotpParams {
        TotpParams {
            digits: e.digits,
            period: e.period,
            window: self.cfg.totp.window,
        }
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

    /// Seconds the account-wide ceiling stays reached (0: not reached).
    pub(crate) fn ceiling_reached_for(&self, e: &Enrollment, now: u64) -> u64 {
        throttle::ceiling_wait(&self.cfg.throttle, e.ceiling_tat, now)
    }

    fn spent_backup(&self) -> MutexGuard<'_, HashMap<String, Vec<HexHash>>> {
        self.spent_backup.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forget `user`'s used backup codes (a new set, or a new enrollment).
    pub(crate) fn forget_spent_backup(&self, user: &str) {
        self.spent_backup().remove(user);
    }

    /// The longest wait anywhere for `user`, for status and reports.
    pub(crate) fn longest_wait(&self, user: &str, e: &Enrollment, now: u64) -> u64 {
        let cfg = &self.cfg.throttle;
        let own = self.source_table().longest_wait(cfg, user, now);
        own.max(throttle::ceiling_wait(cfg, e.ceiling_tat, now))
    }

    /// A wrong code from `source`: on disk (with the account-wide bucket),
    /// then in the source's count.
    pub(crate) fn record_failure(
        &self,
        user: &str,
        source: &Source,
        loaded: &mut Loaded,
        now: u64,
    ) -> Result<(), TwofoldError> {
        let cfg = &self.cfg.throttle;
        let before = loaded.enrollment.ceiling_tat;
        let ceiling = throttle::ceiling_after_failure(cfg, before, now);
        self.record(user, loaded, Event::Failure { at: now, ceiling })?;
        self.source_table().failed(cfg, user, source, now);
        if throttle::ceiling_wait(cfg, before, now) == 0 {
            let wait = throttle::ceiling_wait(cfg, ceiling, now);
            if wait > 0 {
                // Loud: from now on the owner needs a backup code at any
                // address that has not logged them in recently.
                audit::log(
                    Level::Error,
                    &format!(
                        "account-ceiling-reached {} source={source} wait={wait}s: too many wrong codes \
from several places; app and e-mail codes from new addresses are not checked until a token is back, \
backup codes still are (`twofold admin unlock` clears it)",
                        field("user", user)
                    ),
                );
            }
        }
        Ok(())
    }

    /// A wrong backup code while the ceiling is reached: counted for the
    /// source and on disk, but it spends no token (a bucket pushed ever
    /// further ahead would read as a clock set back, and full).
    fn record_backup_only_failure(
        &self,
        user: &str,
        source: &Source,
        loaded: &mut Loaded,
        now: u64,
    ) -> Result<(), TwofoldError> {
        let ceiling = loaded.enrollment.ceiling_tat;
        self.record(user, loaded, Event::Failure { at: now, ceiling })?;
        self.source_table()
            .failed(&self.cfg.throttle, user, source, now);
        Ok(())
    }

    pub(crate) fn log_login(&self, user: &str, ctx: &LoginContext, outcome: &str) {
        let level = if outcome.starts_with("accepted") {
            Level::Info
        } else {
            Level::Warning
        };
        // A caller other than root names its own service and host: say who it was.
        let caller = match ctx.caller_uid {
            0 => String::new(),
            uid => format!(" caller_uid={uid}"),
        };
        audit::log(
            level,
            &format!(
                "login {} {} {} outcome={outcome}{caller}",
                field("user", user),
                field("service", &ctx.service),
                field("rhost", &ctx.rhost)
            ),
        );
    }

    /// Verify a code; the outcome is durable before it is returned.
    pub fn verify(
        &self,
        user: &str,
        input: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<VerifyReply, TwofoldError> {
        let code = code::parse(input.as_bytes()).map_err(|e| {
            self.log_login(user, ctx, "refused-malformed-input");
            TwofoldError::InvalidInput(e.user_message().into())
        })?;
        let source = ctx.source();
        // NSS (when needed) before the user's lock, as in `plan`.
        let (accepted, mode) = self.rule_today(user, ctx, now)?;
        let _guard = self.lock(user);
        let Some(mut loaded) = self.store.load(user)? else {
            self.log_login(user, ctx, "not-enrolled");
            return Ok(VerifyReply {
                outcome: VerifyOutcome::NotEnrolled,
                message: NOT_ENROLLED_NOTICE.into(),
            });
        };
        let hold = self.hold(user, &source, &loaded.enrollment, now);
        // While only the ceiling holds, a backup code is still checked: 50
        // bits, so it gives a guesser nothing, and the owner a way in.
        let backup_only = hold.is_some_and(Hold::backup_only);
        if let Some(hold) = hold
            && !(backup_only && matches!(code, Code::Backup(_)))
        {
            self.log_login(user, ctx, hold.outcome());
            return Ok(VerifyReply {
                outcome: VerifyOutcome::Throttled,
                message: self.refusal(&hold.text()),
            });
        }
        let e = &loaded.enrollment;
        let factors = crate::policy::factors(self.methods_of(e), accepted, mode);
        let methods = factors.check;
        let email_ok = methods.email;
        let (outcome, accepted) = match &code {
            Code::Totp(c)
                if email_ok && self.check_login_email_code(user, c, now) == EmailCheck::Match =>
            {
                (
                    VerifyOutcome::Accepted,
                    Some(Event::EmailAccepted { at: now }),
                )
            }
            Code::Totp(c) => match e.secret.as_ref().filter(|_| methods.totp) {
                Some(secret) => {
                    match totp::check(&secret.0, self.params_of(e), c, now, e.last_step)
                        .map_err(internal)?
                    {
                        TotpCheck::Valid(step) => (
                            VerifyOutcome::Accepted,
                            Some(Event::TotpAccepted { step, at: now }),
                        ),
                        TotpCheck::Replayed => (VerifyOutcome::Replayed, None),
                        TotpCheck::Wrong => (VerifyOutcome::Wrong, None),
                    }
                }
                None => (VerifyOutcome::Wrong, None),
            },
            Code::Backup(c) => {
                let spent = self.spent_backup().get(user).cloned().unwrap_or_default();
                match e.backup.find_or_spent(c, &spent).map_err(internal)? {
                    Found::Unused(index) => (
                        VerifyOutcome::AcceptedBackupCode,
                        Some(Event::BackupUsed {
                            index: index as u64,
                            at: now,
                        }),
                    ),
                    Found::Spent => (VerifyOutcome::Replayed, None),
                    Found::Wrong => (VerifyOutcome::Wrong, None),
                }
            }
        };
        match accepted {
            Some(event) => {
                if let Event::BackupUsed { index, .. } = event
                    && let Some(Some(hash)) = usize::try_from(index)
                        .ok()
                        .and_then(|i| loaded.enrollment.backup.hashes.get(i))
                {
                    let mut spent = self.spent_backup();
                    let list = spent.entry(user.to_string()).or_default();
                    if list.len() >= MAX_SPENT_PER_USER {
                        list.remove(0);
                    }
                    list.push(hash.clone());
                }
                self.record(user, &mut loaded, event)?;
                self.source_table()
                    .succeeded(&self.cfg.throttle, user, &source, now);
            }
            // A used code (a replayed step, a spent backup code, the losers
            // of a race) is no guess: only someone who had the code can type
            // it, and the throttle was passed to check it.
            None if outcome == VerifyOutcome::Replayed => {}
            None if backup_only => {
                self.record_backup_only_failure(user, &source, &mut loaded, now)?;
            }
            None => self.record_failure(user, &source, &mut loaded, now)?,
        }
        let e = &loaded.enrollment;
        let message = match outcome {
            VerifyOutcome::AcceptedBackupCode => {
                let left = e.backup.remaining();
                let mut m = format!(
                    "Backup code accepted. {left} backup code{} left.",
                    if left == 1 { "" } else { "s" }
                );
                if left <= 3 {
                    m.push_str(" Run `twofold backup-codes` to get new ones.");
                }
                m
            }
            VerifyOutcome::Replayed if matches!(code, Code::Backup(_)) => {
                self.refusal("That backup code was already used. Type another one.")
            }
            VerifyOutcome::Replayed => {
                self.refusal("That code was already used. Wait for the next code from your app.")
            }
            VerifyOutcome::Wrong => match self.hold(user, &source, e, now) {
                None if e.secret.is_none() => self.refusal(WRONG_EMAIL_CODE),
                None => self.refusal(WRONG_CODE),
                Some(hold) if hold.backup_only() => self.refusal(&format!(
                    "Wrong {}. Only a backup code is accepted here for the next {}: type one, \
or ask your administrator to unlock the account.",
                    if matches!(code, Code::Backup(_)) {
                        "backup code"
                    } else {
                        "code"
                    },
                    human_duration(hold.ceiling)
                )),
                Some(hold) => self.refusal(&format!(
                    "Wrong code. Wait {} before trying again.",
                    human_duration(hold.wait())
                )),
            },
            _ => String::new(),
        };
        let logged = match (outcome, accepted) {
            (VerifyOutcome::Accepted, Some(Event::EmailAccepted { .. })) => "accepted-email-code",
            (VerifyOutcome::Accepted, _) => "accepted-totp",
            (VerifyOutcome::AcceptedBackupCode, _) => "accepted-backup-code",
            (VerifyOutcome::Replayed, _) if matches!(code, Code::Backup(_)) => {
                "refused-used-backup-code"
            }
            (VerifyOutcome::Replayed, _) => "refused-replayed-code",
            _ => "refused-wrong-code",
        };
        if outcome.is_accepted() && factors.must_enroll {
            // Proved with a method the rule no longer accepts: the login
            // goes on to add one, and grants nothing by itself.
            self.log_login(user, ctx, "proved-must-enroll");
            self.record_proof(user, now);
            return Ok(VerifyReply {
                outcome: VerifyOutcome::MustEnroll,
                message: String::new(),
            });
        }
        self.log_login(user, ctx, logged);
        if outcome.is_accepted() {
            // `twofold setup` run by the user, proving themselves to add a
            // method (a PAM stack run as the user, such as a screen locker,
            // names its own service).
            if ctx.caller_uid != 0 && ctx.service == SELF_SERVICE {
                self.record_proof(user, now);
            }
            self.remember_device(user, ctx, now);
        }
        Ok(VerifyReply { outcome, message })
    }

    /// Append `event` durably, fold it in, and compact a long journal.
    pub(crate) fn record(
        &self,
        user: &str,
        loaded: &mut Loaded,
        event: Event,
    ) -> Result<(), TwofoldError> {
        loaded.journal_len = self.store.append(user, loaded, event)?;
        loaded.enrollment.apply(event).map_err(internal)?;
        if loaded.journal_records() >= COMPACT_AFTER_RECORDS {
            let mut folded = loaded.enrollment.clone();
            folded.generation = new_generation(folded.generation);
            // The event is already durable; a failed compaction only postpones it.
            match self.store.write_enrollment(user, &folded) {
                Ok(()) => {
                    loaded.enrollment = folded;
                    loaded.journal_len = 0;
                }
                Err(e) => audit::log(Level::Error, &format!("compaction postponed: {e}")),
            }
        }
        Ok(())
    }

    /// Offer `user` (whose uid is `uid`) a fresh secret; nothing is stored yet.
    pub fn begin_enrollment(
        &self,
        uid: u32,
        user: &str,
        now: u64,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        let adds = match self.store.load(user)? {
            Some(l) if l.enrollment.secret.is_some() => {
                return Err(TwofoldError::AlreadyEnrolled(
                    "You are already enrolled. Ask an administrator to reset your enrollment to start over.".into(),
                ));
            }
            Some(_) => {
                self.require_proof(user, now)?;
                true
            }
            None => false,
        };
        let mut secret = Zeroizing::new(vec![0u8; 20]); // 160 bits, as RFC 4226 recommends
        rand::rng().fill(&mut secret[..]);
        let params = TotpParams {
            digits: self.cfg.totp.digits,
            period: self.cfg.totp.period,
            window: self.cfg.totp.window,
        };
        let account = format!("{user}@{}", self.hostname);
        let uri =
            totp::key_uri(&secret, params, &self.cfg.totp.issuer, &account).map_err(internal)?;
        let qr = crate::qr::render(&uri).map_err(internal)?;
        let secret_base32 = totp_rs::Secret::from(&secret[..]).to_base32();
        let timeout = self.cfg.enrollment.offer_timeout_secs;
        let mut pending = self.pending_map();
        if pending.len() >= MAX_PENDING_OFFERS && !pending.contains_key(&uid) {
            pending.retain(|_, p| p.expires_at > now);
            if pending.len() >= MAX_PENDING_OFFERS {
                return Err(TwofoldError::Busy(
                    "Too many enrollments are in progress on this host. Try again in a few minutes."
                        .into(),
                ));
            }
        }
        pending.insert(
            uid,
            Pending {
                secret,
                params,
                expires_at: now.saturating_add(timeout),
                attempts: 0,
                adds,
            },
        );
        drop(pending);
        audit::log(
            Level::Info,
            &format!("enrollment-offered {}", field("user", user)),
        );
        Ok(EnrollmentOffer {
            qr_code: qr.unicode.into(),
            qr_code_ascii: qr.ascii.into(),
            uri: uri.into(),
            secret_base32: secret_base32.into(),
            expires_in_secs: timeout,
        })
    }

    fn pending_map(&self) -> MutexGuard<'_, HashMap<u32, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store the pending enrollment if `input` is a current code for it.
    pub fn confirm_enrollment(
        &self,
        uid: u32,
        user: &str,
        input: &str,
        now: u64,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let Ok(Code::Totp(code)) = code::parse(input.as_bytes()) else {
            return Err(TwofoldError::InvalidInput(
                "Type the 6-digit code your app shows for this account.".into(),
            ));
        };
        let (secret, step, params, adds) = {
            let mut pending = self.pending_map();
            let no_offer = || {
                TwofoldError::NoPendingEnrollment(
                    "No enrollment is in progress (or it expired). Run `twofold setup` again."
                        .into(),
                )
            };
            let offer = pending.get_mut(&uid).ok_or_else(no_offer)?;
            if offer.expires_at <= now {
                pending.remove(&uid);
                return Err(no_offer());
            }
            match totp::check(&offer.secret, offer.params, &code, now, None).map_err(internal)? {
                TotpCheck::Valid(step) => {
                    let offer = pending.remove(&uid).ok_or_else(no_offer)?;
                    (offer.secret.clone(), step, offer.params, offer.adds)
                }
                _ => {
                    offer.attempts += 1;
                    if offer.attempts >= MAX_CONFIRM_ATTEMPTS {
                        pending.remove(&uid);
                    }
                    audit::log(
                        Level::Warning,
                        &format!("enrollment-code-wrong {}", field("user", user)),
                    );
                    return Err(TwofoldError::InvalidInput(
                        "That code does not match. Check that the phone's clock is right and type the current code.".into(),
                    ));
                }
            }
        };
        let secret = SecretBytes(secret.to_vec());
        self.store_method(user, adds, twofold_protocol::Method::Totp, now, |e| {
            if e.secret.is_some() {
                return false;
            }
            e.secret = Some(secret);
            e.digits = params.digits;
            e.period = params.period;
            // The confirming code cannot log anyone in.
            e.last_step = Some(step);
            true
        })
    }

    /// Store a method just confirmed for `user`: as their first, with new
    /// backup codes (returned), or, when `adds` (begun after a proof), beside
    /// the one they have, whose backup codes stay. `set` fills the method in
    /// and says false when the user has it already.
    pub(crate) fn store_method(
        &self,
        user: &str,
        adds: bool,
        method: twofold_protocol::Method,
        now: u64,
        set: impl FnOnce(&mut Enrollment) -> bool,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let already =
            || TwofoldError::AlreadyEnrolled(format!("You already have {method} set up."));
        let _guard = self.lock(user);
        let codes = match self.store.load(user)? {
            // Only an offer begun after a proof joins an enrollment.
            Some(_) if !adds => return Err(already()),
            Some(loaded) => {
                let mut next = loaded.enrollment.clone();
                if !set(&mut next) {
                    return Err(already());
                }
                next.generation = new_generation(next.generation);
                self.store.write_enrollment(user, &next)?;
                Vec::new()
            }
            None => {
                let (codes, backup) =
                    backup::generate(self.cfg.enrollment.backup_codes, self.backup_params)
                        .map_err(internal)?;
                let mut enrollment = Enrollment {
                    version: ENROLLMENT_VERSION,
                    generation: new_generation(0),
                    secret: None,
                    digits: self.cfg.totp.digits,
                    period: self.cfg.totp.period,
                    enrolled_at: now,
                    email: None,
                    last_step: None,
                    backup,
                    failures: 0,
                    last_failure: 0,
                    ceiling_tat: 0,
                    last_login: None,
                };
                set(&mut enrollment);
                self.store.write_enrollment(user, &enrollment)?;
                self.source_table().forget_user(user);
                self.forget_spent_backup(user);
                codes
            }
        };
        audit::log(
            Level::Info,
            &format!("enrolled {} method={method}", field("user", user)),
        );
        Ok(codes)
    }

    /// For what a user confirms with a current TOTP code (new backup codes,
    /// turning two-factor off): parse, throttle, verify, and count a wrong or
    /// replayed code as a failure. The caller holds the user's lock. Returns
    /// the state and the step the code was for.
    pub(crate) fn prove_with_code(
        &self,
        account: &Account,
        input: &str,
        now: u64,
        action: &str,
    ) -> Result<(Loaded, u64), TwofoldError> {
        let user = account.name.as_str();
        // The user's own program: counted as that uid, like a screen locker.
        let source = Source::Caller(account.uid);
        let Ok(Code::Totp(code)) = code::parse(input.as_bytes()) else {
            return Err(TwofoldError::InvalidInput(
                "Type the current code from your authenticator app.".into(),
            ));
        };
        let Some(mut loaded) = self.store.load(user)? else {
            return Err(TwofoldError::NotEnrolled(
                "Two-factor authentication is not set up for you. Run `twofold setup` first."
                    .into(),
            ));
        };
        if let Some(hold) = self.hold(user, &source, &loaded.enrollment, now) {
            // Backup codes do not prove a user here: only the wait helps.
            return Err(TwofoldError::Throttled(if hold.backup_only() {
                format!(
                    "Too many wrong codes for this account from several places. Try again in {}, \
or ask your administrator to unlock the account.",
                    human_duration(hold.ceiling)
                )
            } else {
                hold.text()
            }));
        }
        let e = &loaded.enrollment;
        // A user with e-mail codes may prove themselves with a live one.
        let check = if e.email.is_some()
            && self.has_login_email_code(user, now)
            && self.check_login_email_code(user, &code, now) == EmailCheck::Match
        {
            TotpCheck::Valid(e.last_step.unwrap_or(0))
        } else {
            match &e.secret {
                Some(secret) => totp::check(&secret.0, self.params_of(e), &code, now, e.last_step)
                    .map_err(internal)?,
                None => TotpCheck::Wrong,
            }
        };
        match check {
            TotpCheck::Valid(step) => {
                self.source_table()
                    .succeeded(&self.cfg.throttle, user, &source, now);
                Ok((loaded, step))
            }
            other => {
                // A used code is no guess (as at login).
                if other != TotpCheck::Replayed {
                    self.record_failure(user, &source, &mut loaded, now)?;
                }
                audit::log(
                    Level::Warning,
                    &format!("{action}-refused {}", field("user", user)),
                );
                Err(TwofoldError::InvalidInput(
                    if other == TotpCheck::Replayed {
                        "That code was already used. Wait for the next code from your app.".into()
                    } else {
                        WRONG_CODE.into()
                    },
                ))
            }
        }
    }

    /// New backup codes for `user`, after a current TOTP code (throttled like a login).
    pub fn regenerate_backup_codes(
        &self,
        account: &Account,
        input: &str,
        now: u64,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let user = account.name.as_str();
        let _guard = self.lock(user);
        let (loaded, step) = self.prove_with_code(account, input, now, "backup-codes")?;
        let (codes, backup) =
            backup::generate(self.cfg.enrollment.backup_codes, self.backup_params)
                .map_err(internal)?;
        let mut next = loaded.enrollment.clone();
        next.generation = new_generation(next.generation);
        next.last_step = Some(step);
        next.failures = 0;
        next.backup = backup;
        self.store.write_enrollment(user, &next)?;
        self.forget_spent_backup(user);
        audit::log(
            Level::Info,
            &format!("backup-codes-replaced {}", field("user", user)),
        );
        Ok(codes)
    }

    /// Clear `user`'s throttle (an administrator's action, by `admin_uid`).
    pub fn unlock(&self, user: &str, admin_uid: u32, now: u64) -> Result<(), TwofoldError> {
        let _guard = self.lock(user);
        let Some(mut loaded) = self.store.load(user)? else {
            return Err(TwofoldError::NotEnrolled(format!(
                "{user} is not enrolled."
            )));
        };
        self.record(user, &mut loaded, Event::Unlock { at: now })?;
        self.source_table().forget_streaks(user);
        audit::log(
            Level::Info,
            &format!("admin-unlock {} admin_uid={admin_uid}", field("user", user)),
        );
        Ok(())
    }
}

impl Engine {
    /// Adding a method to an enrollment needs a proof with the existing one.
    pub(crate) fn require_proof(&self, user: &str, now: u64) -> Result<(), TwofoldError> {
        if self.take_proof(user, now) {
            Ok(())
        } else {
            Err(TwofoldError::AccessDenied(
                "Adding a second method needs a current code from the one you have first \
(`twofold setup` asks for it)."
                    .into(),
            ))
        }
    }
}

pub(crate) fn new_generation(old: u64) -> u64 {
    loop {
        let g: u64 = rand::random();
        if g != old && g != 0 {
            return g;
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
