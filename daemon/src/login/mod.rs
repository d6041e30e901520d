//! A login: what it must do (`plan.rs` decides, `Engine::plan` gathers the
//! facts), then the code (`verify.rs`), enrollment (`enroll.rs`), e-mailed
//! codes (`email.rs`) and the user's own account (`account.rs`).

mod account;
pub mod apps;
mod email;
mod enroll;
mod outcome;
pub mod plan;
mod verify;

use crate::error::Error;
pub use outcome::LoginOutcome;
use plan::Action;

use crate::audit::{self, Level, field};
use crate::engine::Engine;
use crate::policy::{self, Methods, Subject};
use crate::store::{Remembered, update_meta};
use crate::throttle::{Hold, Source};
use crate::users::Account;
use twofold_protocol::text::human_duration;
use twofold_protocol::{LoginAction, LoginPlan, TwofoldError};

pub const NOT_ENROLLED_NOTICE: &str = "Two-factor authentication is not set up for your account. \
Run `twofold setup` to protect it with codes from an authenticator app.";

/// A plan, with the reasons for `explain` and the word for the log.
pub(crate) struct Planned {
    pub plan: LoginPlan,
    pub outcome: LoginOutcome,
    pub reasons: Vec<String>,
    /// Where a login code may be e-mailed (the proven address), when this
    /// login may use one.
    pub email_to: Option<String>,
}

/// What the user must set up after their current method proved them.
fn add_method(plan: &mut LoginPlan, to_add: Option<Methods>) {
    if let Some(add) = to_add {
        plan.message = format!(
            "Your account's rule now requires {}. First confirm it is you with your current method; \
then set it up.",
            if add.email && !add.totp {
                "codes sent by e-mail"
            } else {
                "an authenticator app"
            }
        );
        plan.methods = add.list();
    }
}

/// Why a code is not checked now, the same from every path. A source under
/// its own back-off is told only that wait (once over, a backup code is
/// checked).
pub(crate) fn hold_text(hold: Hold) -> String {
    if hold.backup_only() {
        format!(
            "Too many wrong codes for this account from several places, so only a backup code \
is accepted here for now (other codes again in {}). Type one of your backup codes, or ask your \
administrator to unlock the account.",
            human_duration(hold.ceiling)
        )
    } else {
        format!(
            "Too many wrong codes. Try again in {}.",
            human_duration(hold.own)
        )
    }
}

/// The prompt when e-mail codes are the user's only method and are off.
const BACKUP_ONLY_PROMPT: &str = "E-mail codes are not available on this host now. Backup code: ";

/// The prompt while the account-wide ceiling is reached.
const BACKUP_PROMPT: &str = "Backup code: ";

/// The prompt when the user may type an app code or ask for one by e-mail.
const EITHER_PROMPT: &str = "Verification code (or press Enter to get one by e-mail): ";

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

impl Engine {
    /// Refuse with `refusal` unless this login must set `method` up now:
    /// the plan names methods only where a login must (a user not enrolled,
    /// or, after a proof, one whose rule wants another).
    pub(crate) fn ensure_offered_at_login(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
        method: twofold_protocol::Method,
        refusal: &str,
    ) -> Result<(), Error> {
        let planned = self.plan(account, ctx, now, false)?;
        if planned.plan.methods.contains(&method) {
            Ok(())
        } else {
            Err(TwofoldError::InvalidInput(refusal.into()).into())
        }
    }

    /// What the module should do for this login.
    pub fn begin_login(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<LoginPlan, Error> {
        let planned = self
            .plan(account, ctx, now, true)
            .map_err(|e| self.login_fault(&account.name, ctx, e))?;
        self.log_login(&account.name, ctx, planned.outcome);
        Ok(planned.plan)
    }

    /// The plan and why. With `record`, a first prompt under a grace period is stored.
    pub(crate) fn plan(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
        record: bool,
    ) -> Result<Planned, Error> {
        let user = account.name.as_str();
        let policy = self.policy();
        // NSS first, outside the user's lock: a slow directory must not hold
        // up other logins that share the lock stripe.
        let groups = self.groups(account, &policy);
        let _guard = self.lock(user);
        let (meta, loaded) = self.store().load_meta_and_state(user)?;
        let subject = Subject {
            user,
            groups,
            service: &ctx.service,
        };
        let decision = policy.decide(&subject, meta.override_mode, policy::date_of(now));
        let enrollment = loaded.as_ref().map(|l| &l.enrollment);
        let planned = plan::plan(&plan::Facts {
            decision: &decision,
            policy: &policy,
            enrollment,
            meta: &meta,
            hold: enrollment.and_then(|e| self.hold(user, &ctx.source(), e, now)),
            ctx,
            email_on: self.email_enabled(),
            now,
        });
        if record && planned.starts_grace {
            // Rare (once per user): under the store's lock, on the metadata
            // as it is now, so that an administrator's change made on
            // another host meanwhile is kept.
            let _fleet = self.store().lock_user(user)?;
            update_meta(self.store(), user, &mut |fresh| {
                let first = fresh.first_prompt.is_none();
                if first {
                    fresh.first_prompt = Some(now);
                }
                first
            })?;
        }
        Ok(self.render(planned))
    }

    /// The plan as the module gets it: the action, the wording, the prompt.
    fn render(&self, planned: plan::Plan) -> Planned {
        let outcome = planned.action.outcome();
        let (action, message) = match &planned.action {
            Action::AllowExempt
            | Action::AllowTrustedNetwork
            | Action::AllowRememberedDevice
            | Action::AllowNotEnrolled => (LoginAction::Allow, String::new()),
            Action::AllowRecommended {
                enforcement: Some(date),
                days_left,
            } => (
                LoginAction::Allow,
                format!(
                    "Two-factor authentication will be required for your account from {date} \
({days_left} day{} from now). Run `twofold setup` to set it up now with an authenticator app.",
                    if *days_left == 1 { "" } else { "s" }
                ),
            ),
            Action::AllowRecommended {
                enforcement: None, ..
            } => (LoginAction::Allow, NOT_ENROLLED_NOTICE.to_string()),
            Action::AllowGrace { days, until } => (
                LoginAction::Allow,
                format!(
                    "Two-factor authentication is required for your account. You have {days} more day{} \
(until {until}) to set it up: run `twofold setup`.",
                    if *days == 1 { "" } else { "s" },
                ),
            ),
            Action::RefuseThrottled(hold) => (LoginAction::Refuse, self.refusal(&hold_text(*hold))),
            Action::RefuseNoMethod => (
                LoginAction::Refuse,
                self.refusal(
                    "Your account's rule requires a kind of two-factor code that this host cannot provide. \
Ask your administrator.",
                ),
            ),
            Action::RefuseNotEnrolled => (
                LoginAction::Refuse,
                self.refusal(
                    "Two-factor authentication is required for your account and is not set up, \
so you cannot log in. Ask your administrator to help you enroll.",
                ),
            ),
            Action::AskBackupCode { hold, .. } => (LoginAction::AskCode, hold_text(*hold)),
            Action::AskCode { .. } => (LoginAction::AskCode, String::new()),
            Action::SendEmail { .. } => (LoginAction::SendEmail, String::new()),
            Action::Enroll { methods } if methods.email => (
                LoginAction::Enroll,
                "Two-factor authentication is required for your account and is not set up yet. \
Set it up now."
                    .to_string(),
            ),
            Action::Enroll { .. } => (
                LoginAction::Enroll,
                "Two-factor authentication is required for your account and is not set up yet. \
Set it up now: scan the QR code below with an authenticator app (Google Authenticator, Microsoft \
Authenticator, or a password manager), or enter the key by hand, then type the code it shows."
                    .to_string(),
            ),
        };
        let mut plan = LoginPlan::new(action, message);
        let mut email_to = None;
        let method_names = Methods::list;
        match planned.action {
            Action::Enroll { methods } => plan.methods = method_names(methods),
            Action::AskBackupCode { to_add, .. } => {
                plan.prompt = BACKUP_PROMPT.into();
                if let Some(add) = to_add {
                    plan.methods = method_names(add);
                }
            }
            Action::AskCode {
                check,
                email_to: to,
                to_add,
            } => {
                if check.totp && check.email {
                    plan.prompt = EITHER_PROMPT.into();
                    plan.email = to.as_deref().map(crate::mail::mask).unwrap_or_default();
                } else if check.is_empty() {
                    plan.prompt = BACKUP_ONLY_PROMPT.into();
                }
                add_method(&mut plan, to_add);
                email_to = to;
            }
            Action::SendEmail {
                email_to: to,
                to_add,
            } => {
                add_method(&mut plan, to_add);
                email_to = to;
            }
            _ => {}
        }
        Planned {
            plan,
            outcome,
            reasons: planned.reasons,
            email_to,
        }
    }

    /// After a login with a code: remember the remote host, if the policy says so.
    pub(crate) fn remember_device(&self, user: &str, ctx: &LoginContext, now: u64) {
        let secs = self.policy().remember_device_secs;
        let Some(rhost) = ctx.trusted_rhost().filter(|_| secs > 0) else {
            return;
        };
        let result = update_meta(self.store(), user, &mut |meta| {
            meta.remembered
                .retain(|r| r.until > now && r.rhost != rhost);
            meta.remembered.push(Remembered {
                rhost: rhost.to_string(),
                until: now.saturating_add(secs),
            });
            true
        });
        if let Err(e) = result {
            // The login itself is recorded; only the convenience is lost.
            audit::log(
                Level::Error,
                &format!("cannot remember the device of {}: {e}", field("user", user)),
            );
        }
    }

    /// A login the daemon could not decide (its store, the database or NSS
    /// failed): logged as a login, with whose and what failed, once; the
    /// caller is told to ask the administrator. A refusal passes as it is.
    pub(crate) fn login_fault(&self, user: &str, ctx: &LoginContext, e: Error) -> Error {
        if matches!(e, Error::Refused(_)) {
            return e;
        }
        let outcome = LoginOutcome::RefusedInternalError;
        audit::log(
            outcome.level(),
            &format!("{}: {e}", login_line(user, ctx, outcome, None)),
        );
        e.logged()
    }

    /// A login for a name that is no account here: a decision like any
    /// other, logged with the name's length only, since the name is often
    /// a password typed at `login:`.
    pub(crate) fn log_unknown_user(&self, user: &str, ctx: &LoginContext) {
        let outcome = LoginOutcome::RefusedUnknownUser;
        let who = format!("user-argument-bytes={}", user.len());
        audit::log(outcome.level(), &line_of(&who, ctx, outcome, None));
    }

    pub(crate) fn log_login(&self, user: &str, ctx: &LoginContext, outcome: LoginOutcome) {
        self.log_login_app(user, ctx, outcome, None);
    }

    /// As `log_login`, naming the authenticator app whose code was accepted.
    pub(crate) fn log_login_app(
        &self,
        user: &str,
        ctx: &LoginContext,
        outcome: LoginOutcome,
        app: Option<&str>,
    ) {
        audit::log(outcome.level(), &login_line(user, ctx, outcome, app));
    }
}

/// A login's log line: whose, from where, the outcome.
fn login_line(user: &str, ctx: &LoginContext, outcome: LoginOutcome, app: Option<&str>) -> String {
    line_of(&field("user", user), ctx, outcome, app)
}

/// A login's log line with `who` (a `user=` field, or what stands for one).
fn line_of(who: &str, ctx: &LoginContext, outcome: LoginOutcome, app: Option<&str>) -> String {
    // A caller other than root names its own service and host: say who it was.
    let mut caller = match ctx.caller_uid {
        0 => String::new(),
        uid => format!(" caller_uid={uid}"),
    };
    if let Some(app) = app {
        caller = format!(" {}{caller}", field("app", app));
    }
    format!(
        "login {who} {} {} outcome={outcome}{caller}",
        field("service", &ctx.service),
        field("rhost", &ctx.rhost)
    )
}

#[cfg(test)]
mod apps_tests;
#[cfg(test)]
mod email_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod throttle_tests;
