//! What administrators see: one account's status, the report of every
//! account, and why a login would go the way it does (`explain`). What they
//! change is in `change.rs`.

mod change;

pub use change::check_policy;

use crate::engine::Engine;
use crate::error::Error;
use crate::login::LoginContext;
use crate::policy::{self, Methods, Policy, Subject};
use crate::users::{self, Account};
use std::collections::{HashMap, HashSet};
use twofold_protocol::{LoginAction, ReportRow, UserStatus};

/// What a status shows beyond its report line.
struct Extra {
    /// Seconds the user is throttled for, and their failures in a row.
    throttle: (u64, u32),
    /// The methods the user's rule accepts today.
    methods: Methods,
}

impl Engine {
    /// The status of one account, with its effective rule (for logins in general).
    pub fn status(&self, account: &Account, now: u64) -> Result<UserStatus, Error> {
        let (row, extra) = self.report_row(account, &self.policy(), None, now)?;
        let Extra {
            throttle: (throttled_for_secs, consecutive_failures),
            methods,
        } = extra;
        let host = Methods {
            totp: true,
            email: self.email_enabled(),
        };
        let loaded = self.store().load(&account.name)?;
        let email = loaded
            .as_ref()
            .and_then(|l| l.enrollment.email.as_deref().map(crate::mail::mask))
            .unwrap_or_default();
        let authenticators = loaded
            .as_ref()
            .map(|l| authenticators(&l.enrollment))
            .unwrap_or_default();
        Ok(UserStatus {
            user: row.user,
            enrolled: row.enrolled,
            methods: row.method.clone(),
            email,
            backup_codes_left: row.backup_codes_left,
            throttled_for_secs,
            consecutive_failures,
            low_backup_codes: row.low_backup_codes,
            ceiling_reached_for_secs: row.ceiling_reached_for_secs,
            rule: row.rule,
            mode: row.mode,
            enforcement_date: row.enforcement_date,
            days_left: row.days_left,
            setup_methods: methods.both(host),
            host_methods: host,
            authenticators,
        })
    }

    /// One report line, with what a status adds. `groups`: memberships already resolved (the report
    /// resolves all users at once), or `None` to ask NSS.
    fn report_row(
        &self,
        account: &Account,
        policy: &Policy,
        groups: Option<HashSet<String>>,
        now: u64,
    ) -> Result<(ReportRow, Extra), Error> {
        let user = account.name.as_str();
        let (meta, loaded) = {
            let _guard = self.lock(user);
            (self.store().load_meta(user)?, self.store().load(user)?)
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
            low_backup_codes: e.is_some_and(|e| self.low_backup_codes(e)),
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
            // One host's own files: every login was here.
            last_host: match loaded.as_ref() {
                Some(l) if e.is_some_and(|e| e.last_login.is_some()) => l
                    .last_host
                    .clone()
                    .unwrap_or_else(|| self.hostname().to_string()),
                _ => String::new(),
            },
        };
        Ok((
            row,
            Extra {
                throttle,
                methods: decision.methods,
            },
        ))
    }

    /// Every local account (uid 1000 to 59999) and every user twofold knows.
    pub fn report(&self, now: u64) -> Result<Vec<ReportRow>, Error> {
        let policy = self.policy();
        let mut accounts = users::local_accounts().map_err(Error::fault)?;
        // Only names that resolve to an account are kept, so memory follows
        // the accounts listed, not the names in the store.
        let mut known: HashSet<String> = accounts.iter().map(|a| a.name.clone()).collect();
        self.store().for_each_user(&mut |name| {
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
    ) -> Result<Vec<String>, Error> {
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
        if let Some(loaded) = self.store().load(&account.name)? {
            for a in authenticators(&loaded.enrollment) {
                lines.push(format!(
                    "authenticator {}: {}",
                    a.name,
                    twofold_protocol::text::clock_words(a.drift_known.then_some(a.drift_secs))
                ));
            }
        }
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
}

/// `e`'s authenticator apps as status shows them.
pub(crate) fn authenticators(e: &crate::store::Enrollment) -> Vec<twofold_protocol::Authenticator> {
    e.app_list()
        .iter()
        .map(|a| twofold_protocol::Authenticator {
            name: a.name.to_string(),
            method: twofold_protocol::Method::Totp.as_str().into(),
            added: a.added,
            last_used: a.used.last_used.unwrap_or(0),
            drift_secs: a.used.drift.map_or(0, |d| {
                d.saturating_mul(i64::try_from(a.period).unwrap_or(30))
            }),
            drift_known: a.used.drift.is_some(),
        })
        .collect()
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
