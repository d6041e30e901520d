//! A login: what it must do (`plan.rs` decides, `Engine::plan` gathers the
//! facts), then the code (`verify.rs`), enrollment (`enroll.rs`), e-mailed
//! codes (`email.rs`) and the user's own account (`account.rs`).

mod account;
mod email;
mod enroll;
mod verify;

use crate::audit::{self, Level, field};
use crate::engine::Engine;
use crate::policy::{self, Methods, Mode, Subject, Unenrolled};
use crate::store::{Loaded, Remembered};
use crate::throttle::Source;
use crate::users::Account;
use twofold_protocol::text::human_duration;
use twofold_protocol::{LoginAction, LoginPlan, TwofoldError};

pub const NOT_ENROLLED_NOTICE: &str = "Two-factor authentication is not set up for your account. \
Run `twofold setup` to protect it with codes from an authenticator app.";

/// A plan, with the reasons for `explain` and the word for the log.
pub(crate) struct Planned {
    pub plan: LoginPlan,
    pub outcome: &'static str,
    pub reasons: Vec<String>,
    /// Where a login code may be e-mailed (the proven address), when this
    /// login may use one.
    pub email_to: Option<String>,
}

fn planned(
    action: LoginAction,
    message: String,
    outcome: &'static str,
    reasons: Vec<String>,
) -> Planned {
    Planned {
        plan: LoginPlan::new(action, message),
        outcome,
        reasons,
        email_to: None,
    }
}

fn allow(outcome: &'static str, message: String, reasons: Vec<String>) -> Planned {
    planned(LoginAction::Allow, message, outcome, reasons)
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
    /// What the module should do for this login.
    pub fn begin_login(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<LoginPlan, TwofoldError> {
        let planned = self.plan(account, ctx, now, true)?;
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
    ) -> Result<Planned, TwofoldError> {
        let user = account.name.as_str();
        let policy = self.policy();
        let today = policy::date_of(now);
        // NSS first, outside the user's lock: a slow directory must not hold
        // up other logins that share the lock stripe.
        let groups = self.groups(account, &policy);
        let _guard = self.lock(user);
        let mut meta = self.store.load_meta(user)?;
        let loaded = self.store.load(user)?;
        let subject = Subject {
            user,
            groups,
            service: &ctx.service,
        };
        let decision = policy.decide(&subject, meta.override_mode, today);
        let mut reasons = decision.steps.clone();
        if decision.mode == Mode::Exempt {
            return Ok(allow("allowed-exempt", String::new(), reasons));
        }
        let rhost = ctx.trusted_rhost();
        if let Some(net) = rhost.and_then(|r| policy.trusted(r)) {
            reasons.push(format!(
                "remote host {} is in the trusted network {net}",
                ctx.rhost
            ));
            return Ok(allow("allowed-trusted-network", String::new(), reasons));
        }
        let email_on = self.email_enabled();
        if let Some(Loaded { enrollment, .. }) = &loaded {
            let has = self.methods_of(enrollment);
            let factors = policy::factors(has, decision.methods, decision.mode);
            reasons.push(format!(
                "enrolled: yes ({}; {} backup codes left)",
                if has.is_empty() {
                    "no method available".into()
                } else {
                    has.names()
                },
                enrollment.backup.remaining()
            ));
            let hold = self.hold(user, &ctx.source(), enrollment, now);
            if let Some(hold) = hold {
                if hold.backup_only() {
                    reasons.push(format!(
                        "account-wide ceiling reached (wrong codes from several places): \
only a backup code is checked for {}",
                        human_duration(hold.ceiling)
                    ));
                } else {
                    reasons.push(format!(
                        "throttled for {} (wrong codes from {})",
                        human_duration(hold.own),
                        ctx.source()
                    ));
                    let message = self.refusal(&hold.text());
                    return Ok(planned(
                        LoginAction::Refuse,
                        message,
                        hold.outcome(),
                        reasons,
                    ));
                }
            }
            let backup_only = hold.filter(|h| h.backup_only());
            // What the user must add once their existing method proved them.
            let to_add = if factors.must_enroll {
                let add = decision.methods.both(Methods {
                    totp: enrollment.secret.is_none(),
                    email: email_on && enrollment.email.is_none(),
                });
                if add.is_empty() {
                    reasons.push(format!(
                        "refuse: the rule accepts only {}, which cannot be set up here",
                        decision.methods.names()
                    ));
                    let message = self.refusal(
                        "Your account's rule requires a kind of two-factor code that this host cannot provide. \
Ask your administrator.",
                    );
                    return Ok(planned(
                        LoginAction::Refuse,
                        message,
                        "refused-no-method",
                        reasons,
                    ));
                }
                reasons.push(format!(
                    "the rule accepts only {}: after a code from the existing method, set up {}",
                    decision.methods.names(),
                    add.names()
                ));
                Some(add)
            } else {
                None
            };
            if to_add.is_none()
                && backup_only.is_none()
                && policy.remember_device_secs > 0
                && rhost.is_some_and(|h| {
                    meta.remembered
                        .iter()
                        .any(|r| r.rhost == h && r.until > now)
                })
            {
                reasons.push(format!("remote host {} is a remembered device", ctx.rhost));
                return Ok(allow("allowed-remembered-device", String::new(), reasons));
            }
            let check = factors.check;
            if let Some(hold) = backup_only {
                reasons.push("ask for a backup code".into());
                let mut plan = planned(
                    LoginAction::AskCode,
                    hold.text(),
                    "throttled-account-asked-for-backup-code",
                    reasons,
                );
                plan.plan.prompt = BACKUP_PROMPT.into();
                if let Some(add) = to_add {
                    plan.plan.methods = add.names().split(',').map(str::to_string).collect();
                }
                return Ok(plan);
            }
            let address = enrollment.email.clone().filter(|_| check.email);
            let masked = address
                .as_deref()
                .map(crate::mail::mask)
                .unwrap_or_default();
            let mut plan = if check.totp || !check.email {
                reasons.push("ask for a code".into());
                planned(
                    LoginAction::AskCode,
                    String::new(),
                    "asked-for-code",
                    reasons,
                )
            } else {
                reasons.push(format!("send a code by e-mail to {masked}"));
                planned(
                    LoginAction::SendEmail,
                    String::new(),
                    "asked-for-email-code",
                    reasons,
                )
            };
            if check.totp && check.email {
                plan.plan.prompt = EITHER_PROMPT.into();
                plan.plan.email = masked;
            } else if check.is_empty() {
                plan.plan.prompt = BACKUP_ONLY_PROMPT.into();
            }
            if let Some(add) = to_add {
                plan.plan.message = format!(
                    "Your account's rule now requires {}. First confirm it is you with your current method; \
then set it up.",
                    if add.email && !add.totp {
                        "codes sent by e-mail"
                    } else {
                        "an authenticator app"
                    }
                );
                plan.plan.methods = add.names().split(',').map(str::to_string).collect();
            }
            plan.email_to = address;
            return Ok(plan);
        }
        // What this user may set up to satisfy the rule.
        let can_enroll = decision.methods.both(Methods {
            totp: true,
            email: email_on,
        });
        reasons.push("enrolled: no".into());
        match decision.mode {
            Mode::Exempt | Mode::Optional => {
                Ok(allow("allowed-not-enrolled", String::new(), reasons))
            }
            Mode::Recommend => {
                let message = match decision.enforcement {
                    Some(date) => {
                        let days = decision.days_left(today);
                        format!(
                            "Two-factor authentication will be required for your account from {date} \
({days} day{} from now). Run `twofold setup` to set it up now with an authenticator app.",
                            if days == 1 { "" } else { "s" }
                        )
                    }
                    None => NOT_ENROLLED_NOTICE.to_string(),
                };
                Ok(allow("allowed-not-enrolled", message, reasons))
            }
            Mode::Require => {
                if decision.grace_days > 0 {
                    let first = meta.first_prompt.unwrap_or(now);
                    if record && meta.first_prompt.is_none() {
                        meta.first_prompt = Some(now);
                        self.store.write_meta(user, &meta)?;
                    }
                    let ends = first.saturating_add(u64::from(decision.grace_days) * 86_400);
                    if now < ends {
                        let days = (ends - now).div_ceil(86_400);
                        reasons.push(format!(
                            "grace period: {days} days left (until {})",
                            policy::date_of(ends)
                        ));
                        let message = format!(
                            "Two-factor authentication is required for your account. You have {days} more day{} \
(until {}) to set it up: run `twofold setup`.",
                            if days == 1 { "" } else { "s" },
                            policy::date_of(ends)
                        );
                        return Ok(allow("allowed-grace-period", message, reasons));
                    }
                    reasons.push("grace period: over".into());
                }
                match policy.unenrolled_require {
                    Unenrolled::Enroll if !can_enroll.is_empty() => {
                        reasons.push(format!("enroll during the login ({})", can_enroll.names()));
                        let message = if can_enroll.email {
                            "Two-factor authentication is required for your account and is not set up yet. \
Set it up now."
                        } else {
                            "Two-factor authentication is required for your account and is not set up yet. \
Set it up now: scan the QR code below with an authenticator app (Google Authenticator, Microsoft \
Authenticator, or a password manager), or enter the key by hand, then type the code it shows."
                        };
                        let mut plan = planned(
                            LoginAction::Enroll,
                            message.to_string(),
                            "enrolling-at-login",
                            reasons,
                        );
                        plan.plan.methods =
                            can_enroll.names().split(',').map(str::to_string).collect();
                        Ok(plan)
                    }
                    Unenrolled::Enroll | Unenrolled::Refuse => {
                        reasons.push("refuse: not enrolled".into());
                        let message = self.refusal(
                            "Two-factor authentication is required for your account and is not set up, \
so you cannot log in. Ask your administrator to help you enroll.",
                        );
                        Ok(planned(
                            LoginAction::Refuse,
                            message,
                            "refused-not-enrolled",
                            reasons,
                        ))
                    }
                }
            }
        }
    }

    /// After a login with a code: remember the remote host, if the policy says so.
    pub(crate) fn remember_device(&self, user: &str, ctx: &LoginContext, now: u64) {
        let secs = self.policy().remember_device_secs;
        let Some(rhost) = ctx.trusted_rhost().filter(|_| secs > 0) else {
            return;
        };
        let result = self.store.load_meta(user).and_then(|mut meta| {
            meta.remembered
                .retain(|r| r.until > now && r.rhost != rhost);
            meta.remembered.push(Remembered {
                rhost: rhost.to_string(),
                until: now.saturating_add(secs),
            });
            self.store.write_meta(user, &meta)
        });
        if let Err(e) = result {
            // The login itself is recorded; only the convenience is lost.
            audit::log(
                Level::Error,
                &format!("cannot remember the device of {}: {e}", field("user", user)),
            );
        }
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
}

#[cfg(test)]
mod tests;
