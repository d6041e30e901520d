//! The plan over every mode x enrollment x hold cell, and the roads around
//! it (trusted networks, remembered devices, grace, methods a rule wants).

use super::*;
use crate::backup::{BackupSet, HashParams};
use crate::policy::{Decision, Policy};
use crate::store::{ENROLLMENT_VERSION, Remembered, SecretBytes};
use LoginOutcome as O;

const NOW: u64 = 1_800_000_000;

#[derive(Debug, Clone, Copy)]
enum Enrolled {
    No,
    App,
    Email,
}

#[derive(Debug, Clone, Copy)]
enum Held {
    No,
    /// This source's own back-off.
    Own,
    /// Only the account-wide ceiling.
    Ceiling,
}

fn decision(mode: Mode) -> Decision {
    Decision {
        rule: "default".into(),
        mode,
        methods: Methods::ANY,
        enforcement: None,
        grace_days: 0,
        steps: vec!["step from the policy".into()],
    }
}

fn enrollment(kind: Enrolled) -> Option<Enrollment> {
    let (secret, email) = match kind {
        Enrolled::No => return None,
        Enrolled::App => (Some(SecretBytes(vec![1; 20])), None),
        Enrolled::Email => (None, Some("alice@example.com".to_string())),
    };
    Some(Enrollment {
        version: ENROLLMENT_VERSION,
        generation: 1,
        secret,
        digits: 6,
        period: 30,
        enrolled_at: 0,
        email,
        last_step: None,
        backup: BackupSet {
            salt: Vec::new(),
            params: HashParams {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 1,
            },
            hashes: Vec::new(),
            spent: Vec::new(),
        },
        failures: 0,
        last_failure: 0,
        ceiling_tat: 0,
        last_login: None,
        apps: Default::default(),
    })
}

fn hold(kind: Held) -> Option<Hold> {
    match kind {
        Held::No => None,
        Held::Own => Some(Hold {
            own: 60,
            ceiling: 0,
        }),
        Held::Ceiling => Some(Hold {
            own: 0,
            ceiling: 600,
        }),
    }
}

fn ssh_from(rhost: &str) -> LoginContext {
    LoginContext {
        service: "sshd".into(),
        rhost: rhost.into(),
        caller_uid: 0,
        invoker: None,
    }
}

struct Case {
    decision: Decision,
    policy: Policy,
    enrollment: Option<Enrollment>,
    meta: UserMeta,
    hold: Option<Hold>,
    ctx: LoginContext,
    email_on: bool,
}

impl Case {
    fn new(mode: Mode, enrolled: Enrolled, held: Held) -> Self {
        Self {
            decision: decision(mode),
            policy: Policy::default(),
            enrollment: enrollment(enrolled),
            meta: UserMeta::default(),
            // The throttle is asked only about an enrolled user.
            hold: hold(held).filter(|_| !matches!(enrolled, Enrolled::No)),
            ctx: ssh_from("192.0.2.9"),
            email_on: true,
        }
    }

    fn plan(&self) -> Plan {
        plan(&Facts {
            decision: &self.decision,
            policy: &self.policy,
            enrollment: self.enrollment.as_ref(),
            meta: &self.meta,
            hold: self.hold,
            ctx: &self.ctx,
            email_on: self.email_on,
            now: NOW,
        })
    }
}

#[test]
fn every_mode_enrollment_and_hold() {
    use Enrolled as E;
    use Held as H;
    use Mode as M;
    #[rustfmt::skip]
    let table = [
        (M::Exempt, E::No, H::No, O::AllowedExempt),
        (M::Exempt, E::No, H::Own, O::AllowedExempt),
        (M::Exempt, E::No, H::Ceiling, O::AllowedExempt),
        (M::Exempt, E::App, H::No, O::AllowedExempt),
        (M::Exempt, E::App, H::Own, O::AllowedExempt),
        (M::Exempt, E::App, H::Ceiling, O::AllowedExempt),
        (M::Exempt, E::Email, H::No, O::AllowedExempt),
        (M::Exempt, E::Email, H::Own, O::AllowedExempt),
        (M::Exempt, E::Email, H::Ceiling, O::AllowedExempt),
        (M::Optional, E::No, H::No, O::AllowedNotEnrolled),
        (M::Optional, E::No, H::Own, O::AllowedNotEnrolled),
        (M::Optional, E::No, H::Ceiling, O::AllowedNotEnrolled),
        (M::Optional, E::App, H::No, O::AskedForCode),
        (M::Optional, E::App, H::Own, O::Throttled),
        (M::Optional, E::App, H::Ceiling, O::ThrottledAccountAskedForBackupCode),
        (M::Optional, E::Email, H::No, O::AskedForEmailCode),
        (M::Optional, E::Email, H::Own, O::Throttled),
        (M::Optional, E::Email, H::Ceiling, O::ThrottledAccountAskedForBackupCode),
        (M::Recommend, E::No, H::No, O::AllowedNotEnrolled),
        (M::Recommend, E::No, H::Own, O::AllowedNotEnrolled),
        (M::Recommend, E::No, H::Ceiling, O::AllowedNotEnrolled),
        (M::Recommend, E::App, H::No, O::AskedForCode),
        (M::Recommend, E::App, H::Own, O::Throttled),
        (M::Recommend, E::App, H::Ceiling, O::ThrottledAccountAskedForBackupCode),
        (M::Recommend, E::Email, H::No, O::AskedForEmailCode),
        (M::Recommend, E::Email, H::Own, O::Throttled),
        (M::Recommend, E::Email, H::Ceiling, O::ThrottledAccountAskedForBackupCode),
        (M::Require, E::No, H::No, O::EnrollingAtLogin),
        (M::Require, E::No, H::Own, O::EnrollingAtLogin),
        (M::Require, E::No, H::Ceiling, O::EnrollingAtLogin),
        (M::Require, E::App, H::No, O::AskedForCode),
        (M::Require, E::App, H::Own, O::Throttled),
        (M::Require, E::App, H::Ceiling, O::ThrottledAccountAskedForBackupCode),
        (M::Require, E::Email, H::No, O::AskedForEmailCode),
        (M::Require, E::Email, H::Own, O::Throttled),
        (M::Require, E::Email, H::Ceiling, O::ThrottledAccountAskedForBackupCode),
    ];
    for (mode, enrolled, held, expected) in table {
        let plan = Case::new(mode, enrolled, held).plan();
        assert_eq!(
            plan.action.outcome(),
            expected,
            "{mode:?} x {enrolled:?} x {held:?}: {:?}",
            plan.action
        );
        assert!(!plan.starts_grace, "{mode:?} x {enrolled:?} x {held:?}");
        assert_eq!(plan.reasons[0], "step from the policy");
    }
}

#[test]
fn what_each_ask_carries() {
    let app = Case::new(Mode::Require, Enrolled::App, Held::No).plan();
    assert_eq!(
        app.action,
        Action::AskCode {
            check: Methods {
                totp: true,
                email: false
            },
            email_to: None,
            to_add: None,
        }
    );
    let email = Case::new(Mode::Require, Enrolled::Email, Held::No).plan();
    assert_eq!(
        email.action,
        Action::SendEmail {
            email_to: Some("alice@example.com".into()),
            to_add: None,
        }
    );
    let ceiling = Case::new(Mode::Optional, Enrolled::App, Held::Ceiling).plan();
    assert_eq!(
        ceiling.action,
        Action::AskBackupCode {
            hold: Hold {
                own: 0,
                ceiling: 600
            },
            to_add: None,
        }
    );
    // E-mail off on this host: an e-mail-only user is asked for a backup code.
    let mut off = Case::new(Mode::Optional, Enrolled::Email, Held::No);
    off.email_on = false;
    let nothing = Methods {
        totp: false,
        email: false,
    };
    assert_eq!(
        off.plan().action,
        Action::AskCode {
            check: nothing,
            email_to: None,
            to_add: None,
        }
    );
    // Under require, the backup code then leads to setting up an app.
    off.decision.mode = Mode::Require;
    assert_eq!(
        off.plan().action,
        Action::AskCode {
            check: nothing,
            email_to: None,
            to_add: Some(Methods {
                totp: true,
                email: false
            }),
        }
    );
    // Not enrolled, e-mail off: only an app can be set up.
    off.enrollment = None;
    assert_eq!(
        off.plan().action,
        Action::Enroll {
            methods: Methods {
                totp: true,
                email: false
            }
        }
    );
}

#[test]
fn trusted_networks_come_before_the_throttle_but_only_for_root_callers() {
    let mut case = Case::new(Mode::Require, Enrolled::App, Held::Own);
    case.policy.trusted_networks = vec!["192.0.2.0/24".parse().unwrap()];
    assert_eq!(case.plan().action, Action::AllowTrustedNetwork);
    // A user's own program could claim any host.
    case.ctx.caller_uid = 1000;
    assert_eq!(
        case.plan().action,
        Action::RefuseThrottled(case.hold.unwrap())
    );
}

#[test]
fn a_remembered_device_skips_the_code_unless_the_ceiling_holds() {
    let mut case = Case::new(Mode::Require, Enrolled::App, Held::No);
    case.meta.remembered = vec![Remembered {
        rhost: "192.0.2.9".into(),
        until: NOW + 1,
    }];
    assert_eq!(case.plan().outcome(), O::AskedForCode, "remembering is off");
    case.policy.remember_device_secs = 3600;
    assert_eq!(case.plan().outcome(), O::AllowedRememberedDevice);
    case.hold = hold(Held::Ceiling);
    assert_eq!(case.plan().outcome(), O::ThrottledAccountAskedForBackupCode);
    case.hold = None;
    case.meta.remembered[0].until = NOW;
    assert_eq!(case.plan().outcome(), O::AskedForCode, "expired");
}

#[test]
fn grace_starts_at_the_first_prompt_and_ends() {
    let mut case = Case::new(Mode::Require, Enrolled::No, Held::No);
    case.decision.grace_days = 14;
    let first = case.plan();
    assert!(first.starts_grace);
    assert!(matches!(first.action, Action::AllowGrace { days: 14, .. }));
    case.meta.first_prompt = Some(NOW - 13 * 86_400 - 1);
    let last = case.plan();
    assert!(!last.starts_grace);
    assert!(matches!(last.action, Action::AllowGrace { days: 1, .. }));
    case.meta.first_prompt = Some(NOW - 14 * 86_400);
    assert_eq!(case.plan().outcome(), O::EnrollingAtLogin);
    case.policy.unenrolled_require = Unenrolled::Refuse;
    assert_eq!(case.plan().outcome(), O::RefusedNotEnrolled);
}

#[test]
fn a_rule_that_wants_another_method_asks_for_the_old_one_first() {
    let mut case = Case::new(Mode::Require, Enrolled::App, Held::No);
    case.decision.methods = Methods {
        totp: false,
        email: true,
    };
    let plan = case.plan();
    assert_eq!(
        plan.action,
        Action::AskCode {
            check: Methods {
                totp: true,
                email: false
            },
            email_to: None,
            to_add: Some(Methods {
                totp: false,
                email: true
            }),
        }
    );
    // Nothing the rule accepts can be set up on this host.
    case.email_on = false;
    assert_eq!(case.plan().action, Action::RefuseNoMethod);
}

#[test]
fn recommend_carries_the_enforcement_date() {
    let mut case = Case::new(Mode::Recommend, Enrolled::No, Held::No);
    let date = policy::date_of(NOW + 3 * 86_400);
    case.decision.enforcement = Some(date);
    assert_eq!(
        case.plan().action,
        Action::AllowRecommended {
            enforcement: Some(date),
            days_left: 3
        }
    );
}

impl Plan {
    fn outcome(&self) -> LoginOutcome {
        self.action.outcome()
    }
}
