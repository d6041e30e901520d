//! A code typed at login, or to confirm an action on the user's own
//! account: parsed, throttled, checked (TOTP, backup, e-mail), and recorded
//! durably before the answer.

use crate::audit::{self, Level, field};
use crate::backup::Found;
use crate::email_codes::EmailCheck;
use crate::engine::Engine;
use crate::error::Error;
use crate::login::LoginOutcome;
use crate::login::hold_text;
use crate::login::{LoginContext, NOT_ENROLLED_NOTICE};
use crate::policy::{Methods, Mode};
use crate::store::{Event, Loaded};
use crate::throttle::{self, Hold, Source};
use crate::totp::{self, TotpCheck, TotpParams};
use crate::users::Account;
use twofold_protocol::code::{self, Code};
use twofold_protocol::text::human_duration;
use twofold_protocol::{SELF_SERVICE, TwofoldError, VerifyOutcome, VerifyReply};

/// A wrong code, with what to do about it.
const WRONG_CODE: &str = "Wrong code. Try again with the code your app shows now.";
/// Said while few backup codes are left (`enrollment.low_backup_codes`).
const NEW_BACKUP_CODES: &str = " Run `twofold backup-codes` to get new ones.";
const WRONG_EMAIL_CODE: &str = "Wrong code. Try again with the code from the latest e-mail.";

/// How far either way a wrong app code is looked for, to tell a user that
/// their device's clock looks wrong (never to accept it).
const DIAGNOSIS_SECS: u64 = 600;

/// A TOTP code checked against every authenticator of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AppCheck {
    Valid {
        app: u8,
        step: u64,
        drift: i8,
    },
    Replayed,
    /// Wrong for every app; `Some` when it is one app's code for a time
    /// `offset` steps away (`period` s each) beyond the window.
    Wrong(Option<Diagnosis>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diagnosis {
    pub app: u8,
    pub name: String,
    pub offset: i64,
    pub period: u64,
    /// The step whose code it is.
    pub step: u64,
}

impl Diagnosis {
    /// What the refusal adds: which device, how far off, what to do.
    pub fn text(&self) -> String {
        let secs = self.offset.unsigned_abs().saturating_mul(self.period);
        format!(
            "That code is the one your authenticator \"{}\" shows for {} {}: its clock looks \
about {} {} this host's. Set the device to automatic (network) time, then type the code it shows \
then.",
            twofold_protocol::user::loggable(self.name.as_bytes()),
            human_duration(secs),
            if self.offset > 0 { "from now" } else { "ago" },
            human_duration(secs),
            if self.offset > 0 {
                "ahead of"
            } else {
                "behind"
            }
        )
    }
}

impl Engine {
    /// Check `code` against each of `e`'s authenticators (all of them, each
    /// with its own replay state; a code already accepted, or one a
    /// diagnosis disclosed, is `Replayed`), and diagnose a wrong one.
    pub(crate) fn check_apps(
        &self,
        e: &crate::store::Enrollment,
        code: &str,
        now: u64,
        diagnose: bool,
    ) -> Result<AppCheck, Error> {
        let apps = e.app_list();
        let mut result = AppCheck::Wrong(None);
        for app in &apps {
            let params = TotpParams {
                digits: app.digits,
                period: app.period,
                window: self.config().totp.window,
            };
            let check = totp::check(&app.secret.0, params, code, now, app.last_step)
                .map_err(Error::fault)?;
            match check {
                TotpCheck::Valid(step) if e.is_burned(app.index, step) => {
                    if matches!(result, AppCheck::Wrong(_)) {
                        result = AppCheck::Replayed;
                    }
                }
                TotpCheck::Valid(step) if !matches!(result, AppCheck::Valid { .. }) => {
                    let here = now / app.period;
                    let drift = i8::try_from(i128::from(step) - i128::from(here)).unwrap_or(0);
                    result = AppCheck::Valid {
                        app: app.index,
                        step,
                        drift,
                    };
                }
                TotpCheck::Replayed if matches!(result, AppCheck::Wrong(_)) => {
                    result = AppCheck::Replayed;
                }
                _ => {}
            }
        }
        if result != AppCheck::Wrong(None) || !diagnose {
            return Ok(result);
        }
        let mut nearest: Option<Diagnosis> = None;
        for app in &apps {
            let params = TotpParams {
                digits: app.digits,
                period: app.period,
                window: self.config().totp.window,
            };
            let span = (DIAGNOSIS_SECS / app.period).max(1);
            if let Some(offset) =
                totp::diagnose(&app.secret.0, params, code, now, span).map_err(Error::fault)?
                && nearest
                    .as_ref()
                    .is_none_or(|n| offset.abs() < n.offset.abs())
            {
                let here = now / app.period;
                nearest = Some(Diagnosis {
                    app: app.index,
                    name: app.name.to_string(),
                    offset,
                    period: app.period,
                    step: here.saturating_add_signed(offset),
                });
            }
        }
        Ok(AppCheck::Wrong(nearest))
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
    ) -> Result<(Methods, Mode), Error> {
        let policy = self.policy();
        if !policy.restricts_methods() {
            return Ok((Methods::ANY, Mode::Optional));
        }
        let groups = match crate::users::by_name(user) {
            Ok(Some(account)) => self.groups(&account, &policy),
            Ok(None) => Err("no such account".to_string()),
            Err(e) => Err(e.to_string()),
        };
        let meta = self.store().load_meta(user)?;
        let subject = crate::policy::Subject {
            user,
            groups,
            service: &ctx.service,
        };
        let decision = policy.decide(&subject, meta.override_mode, crate::policy::date_of(now));
        Ok((decision.methods, decision.mode))
    }

    /// A wrong code from `source`: on disk (with the account-wide bucket
    /// when it `spends_token`), then in the source's count. A wrong backup
    /// code while the ceiling is reached spends no token: a bucket pushed
    /// ever further ahead would read as a clock set back, and full.
    pub(crate) fn record_failure(
        &self,
        user: &str,
        source: &Source,
        loaded: &mut Loaded,
        now: u64,
        spends_token: bool,
    ) -> Result<(), Error> {
        let cfg = &self.config().throttle;
        let (mut before, mut ceiling) = (0, 0);
        // Another host may move the bucket between our load and our write:
        // the token is then taken from the bucket as it is.
        self.record_latest(user, loaded, |e| {
            before = e.ceiling_tat;
            ceiling = if spends_token {
                throttle::ceiling_after_failure(cfg, before, now)
            } else {
                before
            };
            Event::Failure { at: now, ceiling }
        })?;
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

    /// Verify a code; the outcome is durable before it is returned. A fault
    /// is logged as this login's (`login_fault`).
    pub fn verify(
        &self,
        user: &str,
        input: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<VerifyReply, Error> {
        self.verify_code(user, input, ctx, now)
            .map_err(|e| self.login_fault(user, ctx, e))
    }

    fn verify_code(
        &self,
        user: &str,
        input: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<VerifyReply, Error> {
        let code = code::parse(input.as_bytes()).map_err(|e| {
            self.log_login(user, ctx, LoginOutcome::RefusedMalformedInput);
            TwofoldError::InvalidInput(e.user_message().into())
        })?;
        let source = ctx.source();
        // NSS (when needed) before the user's lock, as in `plan`.
        let (accepted, mode) = self.rule_today(user, ctx, now)?;
        // As `lock_checks`, with the state read in the same round trip.
        let local = self.lock(user);
        let (fleet, loaded) = self.store().lock_and_load(user)?;
        let _guard = (local, fleet);
        let Some(mut loaded) = loaded else {
            self.log_login(user, ctx, LoginOutcome::NotEnrolled);
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
            self.log_login(
                user,
                ctx,
                if backup_only {
                    LoginOutcome::ThrottledAccount
                } else {
                    LoginOutcome::Throttled
                },
            );
            return Ok(VerifyReply {
                outcome: VerifyOutcome::Throttled,
                message: self.refusal(&hold_text(hold)),
            });
        }
        let e = &loaded.enrollment;
        let factors = crate::policy::factors(
            super::plan::methods_of(e, self.email_enabled()),
            accepted,
            mode,
        );
        let methods = factors.check;
        let email_ok = methods.email;
        let mut diagnosis: Option<Diagnosis> = None;
        let (mut outcome, mut accepted) = match &code {
            Code::Totp(c)
                if email_ok && self.check_login_email_code(user, c, now)? == EmailCheck::Match =>
            {
                (
                    VerifyOutcome::Accepted,
                    Some(Event::EmailAccepted { at: now }),
                )
            }
            Code::Totp(_) if !methods.totp => (VerifyOutcome::Wrong, None),
            // The wider span's refusal burns the step it discloses.
            Code::Totp(c) => match self.check_apps(e, c, now, true)? {
                AppCheck::Valid { app, step, drift } => (
                    VerifyOutcome::Accepted,
                    Some(Event::TotpAccepted {
                        step,
                        at: now,
                        app,
                        drift: Some(drift),
                    }),
                ),
                AppCheck::Replayed => (VerifyOutcome::Replayed, None),
                AppCheck::Wrong(found) => {
                    diagnosis = found;
                    (VerifyOutcome::Wrong, None)
                }
            },
            Code::Backup(c) => {
                // A used code (a race's loser, a code typed twice, also after
                // a restart, or with a shared store on another host) is told
                // apart from a wrong guess: the set keeps the hashes of its
                // used codes.
                match e.backup.find_or_spent(c).map_err(Error::fault)? {
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
                if self.record(user, &mut loaded, event)? {
                    self.source_table()
                        .succeeded(&self.config().throttle, user, &source, now);
                } else {
                    // Another host recorded this step or this backup code
                    // (or replaced the enrollment) first: the code was used.
                    (outcome, accepted) = (VerifyOutcome::Replayed, None);
                }
            }
            // A used code (a replayed step, a spent backup code, the losers
            // of a race) is no guess: only someone who had the code can type
            // it, and the throttle was passed to check it.
            None if outcome == VerifyOutcome::Replayed => {}
            None if backup_only => {
                self.record_failure(user, &source, &mut loaded, now, false)?;
            }
            None => self.record_failure(user, &source, &mut loaded, now, true)?,
        }
        if let Some(d) = diagnosis.as_ref().filter(|d| d.offset > 0) {
            // The typist now knows a future code: it must not work then
            // (a lost race is tried again on the state as it now is).
            self.record_latest(user, &mut loaded, |_| Event::StepBurned {
                app: d.app,
                step: d.step,
                at: now,
            })?;
        }
        let e = &loaded.enrollment;
        let message = match outcome {
            VerifyOutcome::AcceptedBackupCode => {
                let left = e.backup.remaining();
                let mut m = format!(
                    "Backup code accepted. {left} backup code{} left.",
                    if left == 1 { "" } else { "s" }
                );
                if self.low_backup_codes(e) {
                    m.push_str(NEW_BACKUP_CODES);
                }
                m
            }
            // Any other login while few are left says so too.
            VerifyOutcome::Accepted if self.low_backup_codes(e) => {
                let left = e.backup.remaining();
                format!(
                    "You have {} backup code{} left.{NEW_BACKUP_CODES}",
                    if left == 0 {
                        "no".to_string()
                    } else {
                        left.to_string()
                    },
                    if left == 1 { "" } else { "s" }
                )
            }
            VerifyOutcome::Replayed if matches!(code, Code::Backup(_)) => {
                self.refusal("That backup code was already used. Type another one.")
            }
            VerifyOutcome::Replayed => {
                self.refusal("That code was already used. Wait for the next code from your app.")
            }
            VerifyOutcome::Wrong => match self.hold(user, &source, e, now) {
                None if e.secret.is_none() => self.refusal(WRONG_EMAIL_CODE),
                None => match &diagnosis {
                    Some(d) => self.refusal(&format!("Wrong code. {}", d.text())),
                    None => self.refusal(WRONG_CODE),
                },
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
            (VerifyOutcome::Accepted, Some(Event::EmailAccepted { .. })) => {
                LoginOutcome::AcceptedEmailCode
            }
            (VerifyOutcome::Accepted, _) => LoginOutcome::AcceptedTotp,
            (VerifyOutcome::AcceptedBackupCode, _) => LoginOutcome::AcceptedBackupCode,
            (VerifyOutcome::Replayed, _) if matches!(code, Code::Backup(_)) => {
                LoginOutcome::RefusedUsedBackupCode
            }
            (VerifyOutcome::Replayed, _) => LoginOutcome::RefusedReplayedCode,
            _ => LoginOutcome::RefusedWrongCode,
        };
        if outcome.is_accepted() && factors.must_enroll {
            // Proved with a method the rule no longer accepts: the login
            // goes on to add one, and grants nothing by itself.
            self.log_login(user, ctx, LoginOutcome::ProvedMustEnroll);
            self.offers().record_proof(user, now);
            return Ok(VerifyReply {
                outcome: VerifyOutcome::MustEnroll,
                message: String::new(),
            });
        }
        let app = match accepted {
            Some(Event::TotpAccepted { app, .. }) => loaded
                .enrollment
                .app_list()
                .iter()
                .find(|a| a.index == app)
                .map(|a| a.name.to_string()),
            _ => None,
        };
        self.log_login_app(user, ctx, logged, app.as_deref());
        if outcome.is_accepted() {
            // `twofold setup` run by the user, proving themselves to add a
            // method (a PAM stack run as the user, such as a screen locker,
            // names its own service).
            if ctx.caller_uid != 0 && ctx.service == SELF_SERVICE {
                self.offers().record_proof(user, now);
            }
            self.remember_device(user, ctx, now);
        }
        Ok(VerifyReply { outcome, message })
    }

    /// For what a user confirms with a current TOTP code (new backup codes,
    /// turning two-factor off): parse, throttle, verify, and count a wrong or
    /// replayed code as a failure. The caller holds the user's lock. Returns
    /// the state and, for an app's code, the record that spends it (the
    /// caller records it, or folds it into the state it writes).
    pub(crate) fn prove_with_code(
        &self,
        account: &Account,
        input: &str,
        now: u64,
        action: &str,
    ) -> Result<(Loaded, Option<Event>), Error> {
        let user = account.name.as_str();
        // The user's own program: counted as that uid, like a screen locker.
        let source = Source::Caller(account.uid);
        let Ok(Code::Totp(code)) = code::parse(input.as_bytes()) else {
            return Err(TwofoldError::InvalidInput(
                "Type the current code from your authenticator app.".into(),
            )
            .into());
        };
        let Some(mut loaded) = self.store().load(user)? else {
            return Err(TwofoldError::NotEnrolled(
                "Two-factor authentication is not set up for you. Run `twofold setup` first."
                    .into(),
            )
            .into());
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
                hold_text(hold)
            })
            .into());
        }
        let e = &loaded.enrollment;
        // A user with e-mail codes may prove themselves with a live one.
        let check = if e.email.is_some()
            && self.has_login_email_code(user, now)?
            && self.check_login_email_code(user, &code, now)? == EmailCheck::Match
        {
            None
        } else {
            Some(self.check_apps(e, &code, now, false)?)
        };
        match check {
            None => {
                self.source_table()
                    .succeeded(&self.config().throttle, user, &source, now);
                Ok((loaded, None))
            }
            Some(AppCheck::Valid { app, step, drift }) => {
                self.source_table()
                    .succeeded(&self.config().throttle, user, &source, now);
                Ok((
                    loaded,
                    Some(Event::TotpAccepted {
                        step,
                        at: now,
                        app,
                        drift: Some(drift),
                    }),
                ))
            }
            Some(other) => {
                let replayed = other == AppCheck::Replayed;
                // A used code is no guess (as at login).
                if !replayed {
                    self.record_failure(user, &source, &mut loaded, now, true)?;
                }
                audit::log(
                    Level::Warning,
                    &format!("{action}-refused {}", field("user", user)),
                );
                Err(TwofoldError::InvalidInput(if replayed {
                    "That code was already used. Wait for the next code from your app.".into()
                } else {
                    WRONG_CODE.into()
                })
                .into())
            }
        }
    }
}
