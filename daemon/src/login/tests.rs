//! The login flows with a fixed clock and a temporary state directory.

pub(super) use super::*;
pub(super) use crate::backup::HashParams;
pub(super) use crate::config::{Config, ThrottleConfig, TotpConfig};
pub(super) use crate::engine::{COMPACT_AFTER_RECORDS, Engine};
pub(super) use crate::error::Error;
pub(super) use crate::policy::Policy;
pub(super) use crate::store::FileStore;
pub(super) use crate::throttle::{self, Source};
pub(super) use crate::totp::{self, TotpParams};
pub(super) use std::sync::{Arc, Mutex};
pub(super) use twofold_protocol::{
    EnrollmentOffer, LoginAction, SELF_SERVICE, SecretString, TwofoldError, VerifyOutcome,
};

pub(super) const FAST: HashParams = HashParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};
pub(super) const T0: u64 = 1_800_000_010; // 10 s into a step
pub(super) const UID: u32 = 4242;

pub(super) fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        state_dir: dir.path().join("state"),
        totp: TotpConfig::default(),
        throttle: ThrottleConfig::default(),
        ..Config::default()
    };
    let store = FileStore::init(&cfg.state_dir).unwrap();
    (dir, Engine::new(cfg, store, FAST, Policy::default()))
}

pub(super) fn account(name: &str) -> crate::users::Account {
    crate::users::Account {
        name: name.into(),
        uid: UID,
        gid: UID,
    }
}

pub(super) fn ctx() -> LoginContext {
    LoginContext {
        service: "test".into(),
        rhost: "192.0.2.1".into(),
        caller_uid: 0,
        invoker: None,
    }
}

pub(super) fn secret_of(offer: &EnrollmentOffer) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(offer.secret_base32.expose())
        .unwrap()
        .as_ref()
        .to_vec()
}

pub(super) const SIX: TotpParams = TotpParams {
    digits: 6,
    period: 30,
    window: 1,
};

/// Enroll "alice" at T0; returns her secret and backup codes.
pub(super) fn enroll(e: &Engine) -> (Vec<u8>, Vec<SecretString>) {
    let offer = e.begin_enrollment(UID, "alice", T0).unwrap();
    let secret = secret_of(&offer);
    assert_eq!(secret.len(), 20);
    let code = totp::code_at(&secret, SIX, T0).unwrap();
    let codes = e.confirm_enrollment(UID, "alice", &code, T0).unwrap();
    (secret, codes)
}

#[test]
fn nothing_is_stored_until_a_code_confirms() {
    let (_d, e) = engine();
    let offer = e.begin_enrollment(UID, "alice", T0).unwrap();
    assert!(
        offer
            .uri
            .expose()
            .starts_with("otpauth://totp/twofold:alice%40")
    );
    assert!(!e.status(&account("alice"), T0).unwrap().enrolled);
    let err = e
        .confirm_enrollment(UID, "alice", "000000", T0)
        .unwrap_err();
    assert!(
        matches!(err, Error::Refused(TwofoldError::InvalidInput(_))),
        "{err:?}"
    );
    assert!(!e.status(&account("alice"), T0).unwrap().enrolled);
    // Another uid cannot confirm alice's offer.
    let code = totp::code_at(&secret_of(&offer), SIX, T0).unwrap();
    assert!(matches!(
        e.confirm_enrollment(UID + 1, "alice", &code, T0),
        Err(Error::Refused(TwofoldError::NoPendingEnrollment(_)))
    ));
    assert_eq!(
        e.confirm_enrollment(UID, "alice", &code, T0).unwrap().len(),
        10
    );
    let status = e.status(&account("alice"), T0).unwrap();
    assert!(status.enrolled);
    assert_eq!(status.backup_codes_left, 10);
    assert!(matches!(
        e.begin_enrollment(UID, "alice", T0),
        Err(Error::Refused(TwofoldError::AlreadyEnrolled(_)))
    ));
}

#[test]
fn offers_expire() {
    let (_d, e) = engine();
    let offer = e.begin_enrollment(UID, "alice", T0).unwrap();
    let later = T0 + 601;
    let code = totp::code_at(&secret_of(&offer), SIX, later).unwrap();
    assert!(matches!(
        e.confirm_enrollment(UID, "alice", &code, later),
        Err(Error::Refused(TwofoldError::NoPendingEnrollment(_)))
    ));
}

#[test]
fn the_confirming_code_cannot_be_replayed_at_login() {
    let (_d, e) = engine();
    let (secret, _) = enroll(&e);
    let code = totp::code_at(&secret, SIX, T0).unwrap();
    assert_eq!(
        e.verify("alice", &code, &ctx(), T0).unwrap().outcome,
        VerifyOutcome::Replayed
    );
    let next = totp::code_at(&secret, SIX, T0 + 30).unwrap();
    assert_eq!(
        e.verify("alice", &next, &ctx(), T0 + 30).unwrap().outcome,
        VerifyOutcome::Accepted
    );
    assert_eq!(
        e.verify("alice", &next, &ctx(), T0 + 31).unwrap().outcome,
        VerifyOutcome::Replayed
    );
}

#[test]
fn backup_codes_work_once() {
    let (_d, e) = engine();
    let (_, codes) = enroll(&e);
    let code = twofold_protocol::code::display_backup(codes[3].expose());
    let r = e.verify("alice", &code, &ctx(), T0).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::AcceptedBackupCode);
    assert!(r.message.contains("9 backup codes left"), "{}", r.message);
    let again = e.verify("alice", &code, &ctx(), T0 + 1).unwrap();
    assert_eq!(again.outcome, VerifyOutcome::Replayed);
    assert!(again.message.contains("already used"), "{}", again.message);
    assert_eq!(
        e.status(&account("alice"), T0).unwrap().backup_codes_left,
        9
    );
}

#[test]
fn throttle_engages_blocks_even_right_codes_and_resets_on_success() {
    let (_d, e) = engine();
    let (secret, _) = enroll(&e);
    let mut t = T0 + 30;
    for _ in 0..4 {
        assert_eq!(
            e.verify("alice", "000000", &ctx(), t).unwrap().outcome,
            VerifyOutcome::Wrong
        );
    }
    // Fourth failure: 30 s wait, during which even the right code is not checked.
    let right = totp::code_at(&secret, SIX, t).unwrap();
    let r = e.verify("alice", &right, &ctx(), t + 5).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Throttled);
    assert!(r.message.contains("25 seconds"), "{}", r.message);
    assert_eq!(
        e.begin_login(&account("alice"), &ctx(), t + 5)
            .unwrap()
            .action,
        LoginAction::Refuse
    );
    assert_eq!(
        e.status(&account("alice"), t + 5)
            .unwrap()
            .throttled_for_secs,
        25
    );
    t += 30;
    let right = totp::code_at(&secret, SIX, t).unwrap();
    assert_eq!(
        e.verify("alice", &right, &ctx(), t).unwrap().outcome,
        VerifyOutcome::Accepted
    );
    assert_eq!(
        e.status(&account("alice"), t).unwrap().consecutive_failures,
        0
    );
}

#[test]
fn unlock_clears_the_wait() {
    let (_d, e) = engine();
    enroll(&e);
    for _ in 0..6 {
        let _ = e.verify("alice", "000000", &ctx(), T0 + 40).unwrap();
    }
    assert!(
        e.status(&account("alice"), T0 + 40)
            .unwrap()
            .throttled_for_secs
            > 0
    );
    e.unlock("alice", 0, T0 + 41).unwrap();
    assert_eq!(
        e.status(&account("alice"), T0 + 41)
            .unwrap()
            .throttled_for_secs,
        0
    );
    assert_eq!(
        e.begin_login(&account("alice"), &ctx(), T0 + 41)
            .unwrap()
            .action,
        LoginAction::AskCode
    );
}

#[test]
fn state_survives_a_new_engine() {
    let (d, e) = engine();
    let (secret, codes) = enroll(&e);
    let code = totp::code_at(&secret, SIX, T0 + 30).unwrap();
    assert_eq!(
        e.verify("alice", &code, &ctx(), T0 + 30).unwrap().outcome,
        VerifyOutcome::Accepted
    );
    assert_eq!(
        e.verify("alice", codes[0].expose(), &ctx(), T0 + 30)
            .unwrap()
            .outcome,
        VerifyOutcome::AcceptedBackupCode
    );
    drop(e);
    let cfg = Config {
        state_dir: d.path().join("state"),
        ..Config::default()
    };
    let e = Engine::new(
        cfg.clone(),
        FileStore::open(&cfg.state_dir).unwrap(),
        FAST,
        Policy::default(),
    );
    assert_eq!(
        e.verify("alice", &code, &ctx(), T0 + 31).unwrap().outcome,
        VerifyOutcome::Replayed
    );
    // The used backup code still reads as used (kept in the state, not in
    // memory), and is not counted as a guess; one that never existed is wrong.
    let again = e
        .verify("alice", codes[0].expose(), &ctx(), T0 + 31)
        .unwrap();
    assert_eq!(again.outcome, VerifyOutcome::Replayed);
    assert!(
        again.message.contains("That backup code was already used"),
        "{again:?}"
    );
    let never = e.verify("alice", "0000000000", &ctx(), T0 + 31).unwrap();
    assert_eq!(never.outcome, VerifyOutcome::Wrong);
    assert!(!never.message.contains("already used"), "{never:?}");
}

#[test]
fn compaction_keeps_the_state() {
    let (_d, e) = engine();
    let (secret, codes) = enroll(&e);
    assert_eq!(
        e.verify("alice", codes[1].expose(), &ctx(), T0)
            .unwrap()
            .outcome,
        VerifyOutcome::AcceptedBackupCode
    );
    let mut t = T0;
    for _ in 0..(COMPACT_AFTER_RECORDS + 5) {
        t += 30;
        let code = totp::code_at(&secret, SIX, t).unwrap();
        assert_eq!(
            e.verify("alice", &code, &ctx(), t).unwrap().outcome,
            VerifyOutcome::Accepted
        );
    }
    let code = totp::code_at(&secret, SIX, t).unwrap();
    assert_eq!(
        e.verify("alice", &code, &ctx(), t).unwrap().outcome,
        VerifyOutcome::Replayed
    );
    assert_eq!(
        e.verify("alice", codes[1].expose(), &ctx(), t)
            .unwrap()
            .outcome,
        VerifyOutcome::Replayed
    );
    assert_eq!(e.status(&account("alice"), t).unwrap().backup_codes_left, 9);
}

#[test]
fn regenerating_backup_codes_needs_a_fresh_code_and_retires_the_old_ones() {
    let (_d, e) = engine();
    let (secret, old) = enroll(&e);
    assert!(matches!(
        e.regenerate_backup_codes(&account("alice"), "000000", T0 + 30),
        Err(Error::Refused(TwofoldError::InvalidInput(_)))
    ));
    assert!(matches!(
        e.regenerate_backup_codes(&account("alice"), old[0].expose(), T0 + 30),
        Err(Error::Refused(TwofoldError::InvalidInput(_)))
    ));
    let code = totp::code_at(&secret, SIX, T0 + 30).unwrap();
    let new = e
        .regenerate_backup_codes(&account("alice"), &code, T0 + 30)
        .unwrap();
    assert_eq!(new.len(), 10);
    assert_eq!(
        e.verify("alice", old[0].expose(), &ctx(), T0 + 31)
            .unwrap()
            .outcome,
        VerifyOutcome::Wrong
    );
    assert_eq!(
        e.verify("alice", &code, &ctx(), T0 + 31).unwrap().outcome,
        VerifyOutcome::Replayed
    );
    assert_eq!(
        e.verify("alice", new[0].expose(), &ctx(), T0 + 32)
            .unwrap()
            .outcome,
        VerifyOutcome::AcceptedBackupCode
    );
}

#[test]
fn malformed_input_is_refused_unverified() {
    let (_d, e) = engine();
    enroll(&e);
    for bad in [
        "",
        "12345",
        "12a456",
        "1234567890123",
        &"9".repeat(10_000),
        "123456\u{0}",
    ] {
        assert!(
            matches!(
                e.verify("alice", bad, &ctx(), T0),
                Err(Error::Refused(TwofoldError::InvalidInput(_)))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        e.status(&account("alice"), T0)
            .unwrap()
            .consecutive_failures,
        0
    );
}

#[test]
fn not_enrolled_is_told_and_unreadable_state_is_an_error() {
    let (d, e) = engine();
    assert_eq!(
        e.begin_login(&account("bob"), &ctx(), T0).unwrap().action,
        LoginAction::Allow
    );
    assert_eq!(
        e.verify("bob", "123456", &ctx(), T0).unwrap().outcome,
        VerifyOutcome::NotEnrolled
    );
    enroll(&e);
    std::fs::write(d.path().join("state/users/alice.enrollment"), b"garbage").unwrap();
    // Logged by the engine as this login's (`login_fault`), then told to
    // the caller as the daemon's fault, not logged again.
    assert!(matches!(
        e.begin_login(&account("alice"), &ctx(), T0),
        Err(Error::Refused(TwofoldError::Internal(_)))
    ));
    assert!(matches!(
        e.verify("alice", "123456", &ctx(), T0),
        Err(Error::Refused(TwofoldError::Internal(_)))
    ));
}

#[test]
fn racing_logins_spend_a_backup_code_once() {
    let (_d, e) = engine();
    let (_, codes) = enroll(&e);
    let e = std::sync::Arc::new(e);
    let code = codes[0].expose().to_string();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (e, code) = (e.clone(), code.clone());
            std::thread::spawn(move || e.verify("alice", &code, &ctx(), T0).unwrap().outcome)
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.is_accepted()).count(),
        1,
        "{outcomes:?}"
    );
}

pub(super) fn engine_with_policy(text: &str) -> (tempfile::TempDir, Engine) {
    let (dir, e) = engine();
    let policy = crate::policy::parse(text, std::path::Path::new("policy.toml")).unwrap();
    let cfg = Config {
        state_dir: dir.path().join("state"),
        ..Config::default()
    };
    let store = FileStore::open(&cfg.state_dir).unwrap();
    drop(e);
    (dir, Engine::new(cfg, store, FAST, policy))
}

#[test]
fn grace_runs_from_the_first_prompt_then_enrollment_is_required() {
    let (_d, e) = engine_with_policy("[default]\nmode = \"require\"\ngrace_days = 3\n");
    let first = e.begin_login(&account("newbie"), &ctx(), T0).unwrap();
    assert_eq!(first.action, LoginAction::Allow);
    assert!(first.message.contains("3 more days"), "{}", first.message);
    // Two days later: still in grace, counted from the first prompt.
    let later = e
        .begin_login(&account("newbie"), &ctx(), T0 + 2 * 86_400)
        .unwrap();
    assert!(later.message.contains("1 more day "), "{}", later.message);
    // After three days: enroll now.
    let over = e
        .begin_login(&account("newbie"), &ctx(), T0 + 3 * 86_400 + 1)
        .unwrap();
    assert_eq!(over.action, LoginAction::Enroll);
}

#[test]
fn enrollment_at_login_is_offered_only_when_the_plan_says_so() {
    let (_d, e) = engine_with_policy("[default]\nmode = \"recommend\"\n");
    assert!(matches!(
        e.enroll_at_login(&account("alice"), &ctx(), T0),
        Err(Error::Refused(TwofoldError::InvalidInput(_)))
    ));
    let (_d, e) = engine_with_policy("[default]\nmode = \"require\"\n");
    let offer = e.enroll_at_login(&account("alice"), &ctx(), T0).unwrap();
    assert!(offer.qr_code.expose().contains('█'));
    let code = totp::code_at(&secret_of(&offer), SIX, T0).unwrap();
    assert_eq!(
        e.confirm_at_login(&account("alice"), &code, &ctx(), T0)
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        e.begin_login(&account("alice"), &ctx(), T0 + 30)
            .unwrap()
            .action,
        LoginAction::AskCode
    );
}

/// Each accepted app code records its offset from this host's clock; a code
/// for minutes away is refused with the diagnosis, counted as a failure, and
/// never accepted, not even when its time comes.
#[test]
fn drift_is_recorded_and_a_clock_minutes_off_is_diagnosed() {
    let (_d, e) = engine();
    let (secret, _) = enroll(&e);
    let now = T0 + 60;
    // A device one step ahead: accepted, drift +1 step.
    let ahead = totp::code_at(&secret, SIX, now + 30).unwrap();
    assert_eq!(
        e.verify("alice", &ahead, &ctx(), now).unwrap().outcome,
        VerifyOutcome::Accepted
    );
    let loaded = e.store().load("alice").unwrap().unwrap();
    assert_eq!(loaded.enrollment.apps.first.drift, Some(1));
    // Three minutes behind: refused, with the diagnosis, and counted.
    let later = now + 300;
    let behind = totp::code_at(&secret, SIX, later - 180).unwrap();
    let r = e.verify("alice", &behind, &ctx(), later).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Wrong);
    assert!(
        r.message.contains("3 minutes ago") && r.message.contains("about 3 minutes behind"),
        "{r:?}"
    );
    let loaded = e.store().load("alice").unwrap().unwrap();
    assert_eq!(loaded.enrollment.failures, 1);
    // Three minutes ahead: refused and diagnosed; when its time comes the
    // same code is refused as used, although it is right then.
    let future = totp::code_at(&secret, SIX, later + 180).unwrap();
    let r = e.verify("alice", &future, &ctx(), later).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Wrong);
    assert!(r.message.contains("about 3 minutes ahead of"), "{r:?}");
    let then = e.verify("alice", &future, &ctx(), later + 180).unwrap();
    assert_eq!(then.outcome, VerifyOutcome::Replayed, "{then:?}");
    // A code of no nearby time is the plain refusal.
    let far = totp::code_at(&secret, SIX, later + 3600).unwrap();
    let r = e.verify("alice", &far, &ctx(), later + 200).unwrap();
    assert!(!r.message.contains("clock"), "{r:?}");
}
