//! The engine's policy side: what a login must do (`begin_login`), and what
//! administrators and users change about it. Callers have already decided
//! that the caller may act for the account.

use crate::audit::{self, Level, field};
use crate::engine::{Engine, LoginContext, internal};
use crate::policy::{self, Methods, Mode, Policy, Subject, Unenrolled};
use crate::store::{Loaded, Remembered};
use crate::users::{self, Account};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use twofold_protocol::text::human_duration;
use twofold_protocol::{
    EnrollmentOffer, LoginAction, LoginPlan, RememberedDevice, ReportRow, SecretString,
    TwofoldError, UserStatus,
};

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

impl Engine {
    /// The policy in force (a reload replaces it for the logins that follow).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
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
                    plan.plan.methods = add.list();
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
                plan.plan.methods = add.list();
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
                    None => crate::engine::NOT_ENROLLED_NOTICE.to_string(),
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
                        plan.plan.methods = can_enroll.list();
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

    /// Start an enrollment inside a login, if the policy says this login must enroll.
    pub fn enroll_at_login(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        let planned = self.plan(account, ctx, now, false)?;
        // As for e-mail: a login that must set a method up (an enrolled
        // user also needs a proof, which `begin_enrollment` spends).
        if !planned
            .plan
            .methods
            .contains(&twofold_protocol::Method::Totp)
        {
            return Err(TwofoldError::InvalidInput(
                "Enrollment at login is not offered for this account now.".into(),
            ));
        }
        self.log_login(&account.name, ctx, "enrollment-offered-at-login");
        self.begin_enrollment(account.uid, &account.name, now)
    }

    /// Confirm an enrollment started at login.
    pub fn confirm_at_login(
        &self,
        account: &Account,
        code: &str,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let codes = self.confirm_enrollment(account.uid, &account.name, code, now)?;
        self.log_login(&account.name, ctx, "enrolled-at-login");
        Ok(codes)
    }

    /// The status of one account, with its effective rule (for logins in general).
    pub fn status(&self, account: &Account, now: u64) -> Result<UserStatus, TwofoldError> {
        let (row, throttle) = self.report_row(account, &self.policy(), None, now)?;
        let (throttled_for_secs, consecutive_failures) = throttle;
        let email = self
            .store
            .load(&account.name)?
            .and_then(|l| l.enrollment.email.as_deref().map(crate::mail::mask))
            .unwrap_or_default();
        Ok(UserStatus {
            user: row.user,
            enrolled: row.enrolled,
            methods: row.method.clone(),
            email,
            backup_codes_left: row.backup_codes_left,
            throttled_for_secs,
            consecutive_failures,
            ceiling_reached_for_secs: row.ceiling_reached_for_secs,
            rule: row.rule,
            mode: row.mode,
            enforcement_date: row.enforcement_date,
            days_left: row.days_left,
        })
    }

    /// One report line, with the seconds the user is throttled for and their
    /// failures in a row. `groups`: memberships already resolved (the report
    /// resolves all users at once), or `None` to ask NSS.
    fn report_row(
        &self,
        account: &Account,
        policy: &Policy,
        groups: Option<HashSet<String>>,
        now: u64,
    ) -> Result<(ReportRow, (u64, u32)), TwofoldError> {
        let user = account.name.as_str();
        let (meta, loaded) = {
            let _guard = self.lock(user);
            (self.store.load_meta(user)?, self.store.load(user)?)
        };
        let groups = groups.map_or_else(|| self.groups(account, policy), Ok);
        let subject = Subject {
            user,
            groups,
            service: "",
        };
        let today = policy::date_of(now);
        let decision = policy.decide(&subject, meta.override_mode, today);
        let e = loaded.as_ref().map(|l| &l.enrollment);
        let throttle = e.map_or((0, 0), |e| (self.longest_wait(user, e, now), e.failures));
        let row = ReportRow {
            user: user.to_string(),
            uid: account.uid,
            enrolled: e.is_some(),
            method: e.map_or_else(String::new, |e| {
                Methods {
                    totp: e.secret.is_some(),
                    email: e.email.is_some(),
                }
                .names()
            }),
            backup_codes_left: e.map_or(0, |e| e.backup.remaining()),
            last_login: e.and_then(|e| e.last_login).unwrap_or(0),
            rule: decision.rule.clone(),
            mode: decision.mode.as_str().into(),
            enforcement_date: decision
                .enforcement
                .map(|d| d.to_string())
                .unwrap_or_default(),
            days_left: decision.days_left(today),
            override_mode: meta
                .override_mode
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
            ceiling_reached_for_secs: e.map_or(0, |e| self.ceiling_reached_for(e, now)),
            alias_of: String::new(),
        };
        Ok((row, throttle))
    }

    /// Every local account (uid 1000 to 59999) and every user twofold knows.
    pub fn report(&self, now: u64) -> Result<Vec<ReportRow>, TwofoldError> {
        let policy = self.policy();
        let mut accounts = users::local_accounts().map_err(internal)?;
        // Only names that resolve to an account are kept, so memory follows
        // the accounts listed, not the names in the store.
        let mut known: HashSet<String> = accounts.iter().map(|a| a.name.clone()).collect();
        self.store.for_each_user(&mut |name| {
            if !known.contains(name)
                && let Ok(Some(account)) = users::by_name(name)
            {
                known.insert(name.to_string());
                accounts.push(account);
            }
        })?;
        // By uid, as logins go: every name of a uid is asked for the
        // enrollment of the uid's canonical name, so an alias shows that
        // one's row, marked as an alias.
        let canonical = canonical_names(&accounts);
        for (uid, name) in &canonical {
            if !known.contains(name)
                && let Ok(Some(account)) = users::by_uid(*uid)
            {
                known.insert(name.clone());
                accounts.push(account);
            }
        }
        accounts.sort_by(|a, b| a.name.cmp(&b.name));
        // Group memberships for all users from one pass over the policy's groups.
        let membership = users::Membership::of(policy.group_names());
        let is_alias = |a: &Account| canonical.get(&a.uid).is_some_and(|c| *c != a.name);
        let mut rows: HashMap<u32, ReportRow> = HashMap::new();
        for a in accounts.iter().filter(|a| !is_alias(a)) {
            let groups = membership.as_ref().ok().map(|m| m.groups_of(a));
            let (row, _) = self.report_row(a, &policy, groups, now)?;
            rows.insert(a.uid, row);
        }
        Ok(accounts
            .iter()
            .filter_map(|a| {
                let row = rows.get(&a.uid)?;
                Some(if is_alias(a) {
                    ReportRow {
                        user: a.name.clone(),
                        alias_of: row.user.clone(),
                        ..row.clone()
                    }
                } else {
                    row.clone()
                })
            })
            .collect())
    }

    /// Which rule applies and why, step by step, and what the login would do.
    pub fn explain(
        &self,
        account: &Account,
        ctx: &LoginContext,
        now: u64,
    ) -> Result<Vec<String>, TwofoldError> {
        let mut lines = vec![format!(
            "user {} (uid {}), service {}, remote host {}, date {} (UTC)",
            account.name,
            account.uid,
            if ctx.service.is_empty() {
                "-"
            } else {
                &ctx.service
            },
            if ctx.rhost.is_empty() {
                "-"
            } else {
                &ctx.rhost
            },
            policy::date_of(now)
        )];
        let planned = self.plan(account, ctx, now, false)?;
        lines.extend(planned.reasons);
        lines.push(format!(
            "outcome: {}",
            match planned.plan.action {
                LoginAction::AskCode => "ask for a code",
                LoginAction::Allow => "no code needed (PAM_IGNORE: the rest of the stack decides)",
                LoginAction::Enroll => "enroll during the login",
                LoginAction::SendEmail => "send a code by e-mail and ask for it",
                LoginAction::Refuse => "refuse the login",
            }
        ));
        Ok(lines)
    }

    /// Remove the caller's own enrollment after a current code, unless any of
    /// their rules requires a second factor.
    pub fn disable(&self, account: &Account, input: &str, now: u64) -> Result<(), TwofoldError> {
        let user = account.name.as_str();
        let meta = self.store.load_meta(user)?;
        let policy = self.policy();
        let groups = self.groups(account, &policy);
        if policy.strictest_for(&groups, meta.override_mode, policy::date_of(now)) == Mode::Require
        {
            return Err(TwofoldError::AccessDenied(
                "Your account's rule requires two-factor authentication, so you cannot turn it off. \
Ask your administrator if you lost your phone."
                    .into(),
            ));
        }
        let _guard = self.lock(user);
        let mut meta = self.store.load_meta(user)?;
        self.prove_with_code(account, input, now, "disable")?;
        self.store.remove_enrollment(user)?;
        self.source_table().forget_user(user);
        self.forget_spent_backup(user);
        // Hosts remembered for the old key must not skip the next one.
        if !meta.remembered.is_empty() {
            meta.remembered.clear();
            self.store.write_meta(user, &meta)?;
        }
        audit::log(Level::Info, &format!("disabled {}", field("user", user)));
        Ok(())
    }

    pub fn devices(&self, user: &str, now: u64) -> Result<Vec<RememberedDevice>, TwofoldError> {
        Ok(self
            .store
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
    pub fn forget_devices(&self, user: &str, by_uid: u32) -> Result<u32, TwofoldError> {
        let _guard = self.lock(user);
        let mut meta = self.store.load_meta(user)?;
        let count = u32::try_from(meta.remembered.len()).unwrap_or(u32::MAX);
        meta.remembered.clear();
        self.store.write_meta(user, &meta)?;
        audit::log(
            Level::Info,
            &format!(
                "forget-devices {} count={count} by_uid={by_uid}",
                field("user", user)
            ),
        );
        Ok(count)
    }

    /// Remove a user's enrollment (they enroll again), their grace start and devices.
    pub fn reset(&self, user: &str, admin_uid: u32) -> Result<(), TwofoldError> {
        let _guard = self.lock(user);
        // Read everything before changing anything: an unreadable file must
        // not leave a half-done reset behind.
        let mut meta = self.store.load_meta(user)?;
        self.store.remove_enrollment(user)?;
        self.source_table().forget_user(user);
        self.forget_spent_backup(user);
        meta.first_prompt = None;
        meta.remembered.clear();
        self.store.write_meta(user, &meta)?;
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
    ) -> Result<(), TwofoldError> {
        let _guard = self.lock(user);
        let mut meta = self.store.load_meta(user)?;
        meta.override_mode = mode;
        self.store.write_meta(user, &meta)?;
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
    pub fn reload_policy(&self, by_uid: Option<u32>) -> Result<String, TwofoldError> {
        let path = &self.cfg.policy_file;
        let who = by_uid.map_or_else(
            || "signal=SIGHUP".to_string(),
            |uid| format!("admin_uid={uid}"),
        );
        // A file that disappeared is refused like an invalid one: dropping to
        // the built-in policy would silently end enforcement.
        match policy::load_checked(path, true) {
            Ok((policy, _)) => {
                let summary = format!("{}: {}", path.display(), policy.summary());
                match self.policy.write() {
                    Ok(mut current) => *current = Arc::new(policy),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
                }
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
                )))
            }
        }
    }
}

/// The canonical name (the one NSS gives for the uid, as `authz` resolves
/// logins) of every uid that more than one of `accounts` share. Only those
/// are asked of NSS; a uid with one name is its own.
fn canonical_names(accounts: &[Account]) -> HashMap<u32, String> {
    let mut names: HashMap<u32, usize> = HashMap::new();
    for a in accounts {
        *names.entry(a.uid).or_default() += 1;
    }
    names
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .filter_map(|(uid, _)| {
            let name = users::by_uid(uid).ok()??.name;
            twofold_protocol::user::validate(&name)
                .is_ok()
                .then_some((uid, name))
        })
        .collect()
}

/// Check a policy file without applying it.
pub fn check_policy(path: &std::path::Path) -> Result<String, TwofoldError> {
    policy::load_checked(path, true)
        .map(|(p, _)| format!("{}: valid; {}", path.display(), p.summary()))
        .map_err(|e| TwofoldError::InvalidInput(e.to_string()))
}

/// At start, a policy whose rules name a group NSS does not know is only
/// warned about (a directory service may still be coming up); reload and
/// check-config refuse it (`policy::load_checked`).
pub fn known_groups(policy: Policy) -> Result<Policy, String> {
    let missing = users::missing_groups(policy.group_names());
    if missing.is_empty() {
        Ok(policy)
    } else {
        Err(format!(
            "the policy names groups that do not exist: {} (check the names, or the directory service)",
            missing.join(", ")
        ))
    }
}
