//! **Where a login is decided.** A pure function of what is known about the
//! login (the policy's decision, the enrollment, the throttle's hold, where
//! the login comes from, the time) to what it must do. No I/O, no locks and
//! no wording for the user: `Engine::plan` (in `login/mod.rs`) gathers the
//! facts under the user's lock and turns the action into the module's
//! `LoginPlan`. The reasons are for `twofold admin explain`.

use super::LoginContext;
use super::outcome::LoginOutcome;
use crate::policy::{self, Decision, Methods, Mode, Policy, Unenrolled};
use crate::store::{Enrollment, UserMeta};
use crate::throttle::Hold;
use time::Date;
use twofold_protocol::text::human_duration;

/// Everything a login's plan depends on.
pub struct Facts<'a> {
    pub decision: &'a Decision,
    /// Trusted networks, remembered devices, what an unenrolled user does.
    pub policy: &'a Policy,
    pub enrollment: Option<&'a Enrollment>,
    pub meta: &'a UserMeta,
    /// The throttle's hold on this source (only asked for an enrolled user).
    pub hold: Option<Hold>,
    pub ctx: &'a LoginContext,
    /// Whether e-mail codes can be sent on this host.
    pub email_on: bool,
    pub now: u64,
}

/// What the login must do.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    AllowExempt,
    AllowTrustedNetwork,
    AllowRememberedDevice,
    /// Not enrolled, and the rule is `optional`.
    AllowNotEnrolled,
    /// Not enrolled, and the rule is `recommend`: a notice, with the date
    /// enforcement starts, if the schedule has one.
    AllowRecommended {
        enforcement: Option<Date>,
        days_left: u32,
    },
    /// Not enrolled under `require`, within the user's grace period.
    AllowGrace {
        days: u64,
        until: Date,
    },
    /// Wrong codes from this source: wait.
    RefuseThrottled(Hold),
    /// The rule accepts only methods this host cannot set up.
    RefuseNoMethod,
    RefuseNotEnrolled,
    /// Ask for a code of a method in `check` (none: a backup code only).
    /// `email_to`: the proven address a code may be sent to instead.
    /// `to_add`: what the user must set up once the code proves them.
    AskCode {
        check: Methods,
        email_to: Option<String>,
        to_add: Option<Methods>,
    },
    /// E-mail is the only method checked: send a code, then ask for it.
    SendEmail {
        email_to: Option<String>,
        to_add: Option<Methods>,
    },
    /// The account-wide ceiling holds: only a backup code is checked.
    AskBackupCode {
        hold: Hold,
        to_add: Option<Methods>,
    },
    /// Enroll inside the login, with one of `methods`.
    Enroll {
        methods: Methods,
    },
}

impl Action {
    pub fn outcome(&self) -> LoginOutcome {
        match self {
            Self::AllowExempt => LoginOutcome::AllowedExempt,
            Self::AllowTrustedNetwork => LoginOutcome::AllowedTrustedNetwork,
            Self::AllowRememberedDevice => LoginOutcome::AllowedRememberedDevice,
            Self::AllowNotEnrolled | Self::AllowRecommended { .. } => {
                LoginOutcome::AllowedNotEnrolled
            }
            Self::AllowGrace { .. } => LoginOutcome::AllowedGracePeriod,
            Self::RefuseThrottled(hold) if hold.backup_only() => LoginOutcome::ThrottledAccount,
            Self::RefuseThrottled(_) => LoginOutcome::Throttled,
            Self::RefuseNoMethod => LoginOutcome::RefusedNoMethod,
            Self::RefuseNotEnrolled => LoginOutcome::RefusedNotEnrolled,
            Self::AskCode { .. } => LoginOutcome::AskedForCode,
            Self::SendEmail { .. } => LoginOutcome::AskedForEmailCode,
            Self::AskBackupCode { .. } => LoginOutcome::ThrottledAccountAskedForBackupCode,
            Self::Enroll { .. } => LoginOutcome::EnrollingAtLogin,
        }
    }
}

/// The action, why (for `explain`), and whether this is the user's first
/// prompt under a grace period (which the caller stores when it records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    pub reasons: Vec<String>,
    pub starts_grace: bool,
}

/// What an enrollment can use on a host: app codes if it has a secret,
/// e-mail codes if it has an address and the host can send.
pub fn methods_of(e: &Enrollment, email_on: bool) -> Methods {
    Methods {
        totp: e.secret.is_some(),
        email: email_on && e.email.is_some(),
    }
}

/// The plan: exempt, trusted network, then enrolled (throttle, methods the
/// rule wants added, remembered device, the code) or not (mode, grace).
pub fn plan(f: &Facts<'_>) -> Plan {
    let decision = f.decision;
    let mut reasons = decision.steps.clone();
    let done = |action: Action, reasons: Vec<String>| Plan {
        action,
        reasons,
        starts_grace: false,
    };
    if decision.mode == Mode::Exempt {
        return done(Action::AllowExempt, reasons);
    }
    let rhost = f.ctx.trusted_rhost();
    if let Some(net) = rhost.and_then(|r| f.policy.trusted(r)) {
        reasons.push(format!(
            "remote host {} is in the trusted network {net}",
            f.ctx.rhost
        ));
        return done(Action::AllowTrustedNetwork, reasons);
    }
    match f.enrollment {
        Some(enrollment) => enrolled(f, enrollment, reasons),
        None => not_enrolled(f, reasons),
    }
}

fn enrolled(f: &Facts<'_>, enrollment: &Enrollment, mut reasons: Vec<String>) -> Plan {
    let decision = f.decision;
    let done = |action: Action, reasons: Vec<String>| Plan {
        action,
        reasons,
        starts_grace: false,
    };
    let has = methods_of(enrollment, f.email_on);
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
    if let Some(hold) = f.hold {
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
                f.ctx.source()
            ));
            return done(Action::RefuseThrottled(hold), reasons);
        }
    }
    let backup_only = f.hold.filter(|h| h.backup_only());
    // What the user must add once their existing method proved them.
    let to_add = if factors.must_enroll {
        let add = decision.methods.both(Methods {
            totp: enrollment.secret.is_none(),
            email: f.email_on && enrollment.email.is_none(),
        });
        if add.is_empty() {
            reasons.push(format!(
                "refuse: the rule accepts only {}, which cannot be set up here",
                decision.methods.names()
            ));
            return done(Action::RefuseNoMethod, reasons);
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
    let remembered = f.ctx.trusted_rhost().is_some_and(|h| {
        f.meta
            .remembered
            .iter()
            .any(|r| r.rhost == h && r.until > f.now)
    });
    if to_add.is_none() && backup_only.is_none() && f.policy.remember_device_secs > 0 && remembered
    {
        reasons.push(format!(
            "remote host {} is a remembered device",
            f.ctx.rhost
        ));
        return done(Action::AllowRememberedDevice, reasons);
    }
    if let Some(hold) = backup_only {
        reasons.push("ask for a backup code".into());
        return done(Action::AskBackupCode { hold, to_add }, reasons);
    }
    let check = factors.check;
    let email_to = enrollment.email.clone().filter(|_| check.email);
    if check.totp || !check.email {
        reasons.push("ask for a code".into());
        done(
            Action::AskCode {
                check,
                email_to,
                to_add,
            },
            reasons,
        )
    } else {
        reasons.push(format!(
            "send a code by e-mail to {}",
            email_to
                .as_deref()
                .map(crate::mail::mask)
                .unwrap_or_default()
        ));
        done(Action::SendEmail { email_to, to_add }, reasons)
    }
}

fn not_enrolled(f: &Facts<'_>, mut reasons: Vec<String>) -> Plan {
    let decision = f.decision;
    let done = |action: Action, reasons: Vec<String>| Plan {
        action,
        reasons,
        starts_grace: false,
    };
    // What this user may set up to satisfy the rule.
    let can_enroll = decision.methods.both(Methods {
        totp: true,
        email: f.email_on,
    });
    reasons.push("enrolled: no".into());
    match decision.mode {
        Mode::Exempt | Mode::Optional => done(Action::AllowNotEnrolled, reasons),
        Mode::Recommend => done(
            Action::AllowRecommended {
                enforcement: decision.enforcement,
                days_left: decision.days_left(policy::date_of(f.now)),
            },
            reasons,
        ),
        Mode::Require => {
            let mut starts_grace = false;
            if decision.grace_days > 0 {
                let first = f.meta.first_prompt.unwrap_or(f.now);
                starts_grace = f.meta.first_prompt.is_none();
                let ends = first.saturating_add(u64::from(decision.grace_days) * 86_400);
                if f.now < ends {
                    let days = (ends - f.now).div_ceil(86_400);
                    let until = policy::date_of(ends);
                    reasons.push(format!("grace period: {days} days left (until {until})"));
                    return Plan {
                        action: Action::AllowGrace { days, until },
                        reasons,
                        starts_grace,
                    };
                }
                reasons.push("grace period: over".into());
            }
            let action = match f.policy.unenrolled_require {
                Unenrolled::Enroll if !can_enroll.is_empty() => {
                    reasons.push(format!("enroll during the login ({})", can_enroll.names()));
                    Action::Enroll {
                        methods: can_enroll,
                    }
                }
                Unenrolled::Enroll | Unenrolled::Refuse => {
                    reasons.push("refuse: not enrolled".into());
                    Action::RefuseNotEnrolled
                }
            };
            Plan {
                action,
                reasons,
                starts_grace,
            }
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
