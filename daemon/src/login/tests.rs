//! The login flows with a fixed clock and a temporary state directory.

use super::*;
use crate::backup::HashParams;
use crate::config::{Config, ThrottleConfig, TotpConfig};
use crate::engine::{COMPACT_AFTER_RECORDS, Engine};
use crate::error::Error;
use crate::policy::Policy;
use crate::store::FileStore;
use crate::throttle::{self, Source};
use crate::totp::{self, TotpParams};
use std::sync::{Arc, Mutex};
use twofold_protocol::{
    EnrollmentOffer, LoginAction, SELF_SERVICE, SecretString, TwofoldError, VerifyOutcome,
};

const FAST: HashParams = HashParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};
const T0: u64 = 1_800_000_010; // 10 s into a step
const UID: u32 = 4242;

fn engine() -> (tempfile::TempDir, Engine) {
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

fn account(name: &str) -> crate::users::Account {
    crate::users::Account {
        name: name.into(),
        uid: UID,
        gid: UID,
    }
}

fn ctx() -> LoginContext {
    LoginContext {
        service: "test".into(),
        rhost: "192.0.2.1".into(),
        caller_uid: 0,
        invoker: None,
    }
}

fn secret_of(offer: &EnrollmentOffer) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(offer.secret_base32.expose())
        .unwrap()
        .as_ref()
        .to_vec()
}

const SIX: TotpParams = TotpParams {
    digits: 6,
    period: 30,
    window: 1,
};

/// Enroll "alice" at T0; returns her secret and backup codes.
fn enroll(e: &Engine) -> (Vec<u8>, Vec<SecretString>) {
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

fn from(rhost: &str) -> LoginContext {
    LoginContext {
        rhost: rhost.into(),
        ..ctx()
    }
}

fn reopen(d: &tempfile::TempDir, throttle: ThrottleConfig) -> Engine {
    let cfg = Config {
        state_dir: d.path().join("state"),
        throttle,
        ..Config::default()
    };
    Engine::new(
        cfg.clone(),
        FileStore::open(&cfg.state_dir).unwrap(),
        FAST,
        Policy::default(),
    )
}

#[test]
fn wrong_codes_are_counted_by_a_source_the_caller_cannot_choose() {
    let local = |invoker| LoginContext {
        rhost: String::new(),
        invoker,
        ..ctx()
    };
    assert_eq!(local(None).source(), Source::Local(None));
    // su and sudo: by who ran them.
    assert_ne!(local(Some(1000)).source(), local(Some(1001)).source());
    // A user's program names any host it likes: it is counted as itself.
    let program = LoginContext {
        caller_uid: 1000,
        ..from("192.0.2.7")
    };
    assert_eq!(program.source(), Source::Caller(1000));
    assert_eq!(from("192.0.2.7").source(), Source::remote("192.0.2.7"));
}

#[test]
fn an_attacker_from_one_address_never_holds_up_the_owner_from_another() {
    let (_d, e) = engine();
    let (secret, _) = enroll(&e);
    let attacker = from("198.51.100.7");
    let mut t = T0 + 30;
    // Guess as soon as allowed for a day: the owner from elsewhere is never held.
    let mut checked = 0;
    while t < T0 + 86_400 {
        let r = e.verify("alice", "000000", &attacker, t).unwrap();
        if r.outcome == VerifyOutcome::Wrong {
            checked += 1;
        }
        let owner = e
            .begin_login(&account("alice"), &from("203.0.113.5"), t)
            .unwrap();
        assert_eq!(owner.action, LoginAction::AskCode, "at {t}");
        t += 10;
    }
    let cfg = ThrottleConfig::default();
    assert_eq!(
        checked,
        throttle::guesses_within(&cfg, 86_400 - 30, 1),
        "10 s polling"
    );
    // The owner gets in, and that does not reset the attacker's count.
    let right = totp::code_at(&secret, SIX, t).unwrap();
    let r = e.verify("alice", &right, &from("203.0.113.5"), t).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Accepted);
    let r = e.verify("alice", "000000", &attacker, t).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Throttled);
    assert!(
        r.message.starts_with("Too many wrong codes. Try again in "),
        "the attacker's own back-off: {}",
        r.message
    );
}

#[test]
fn many_addresses_meet_the_account_ceiling_but_known_ones_do_not() {
    let (d, e) = engine();
    let (secret, _) = enroll(&e);
    let t = T0 + 30;
    let right = totp::code_at(&secret, SIX, t).unwrap();
    assert_eq!(
        e.verify("alice", &right, &from("203.0.113.5"), t)
            .unwrap()
            .outcome,
        VerifyOutcome::Accepted
    );
    let burst = ThrottleConfig::default().account_burst;
    for i in 0..burst {
        let r = e
            .verify("alice", "000000", &from(&format!("198.51.100.{i}")), t)
            .unwrap();
        assert_eq!(r.outcome, VerifyOutcome::Wrong, "guess {i}");
    }
    // A new address now waits, even with a right code; the owner's usual one does not.
    let next = totp::code_at(&secret, SIX, t + 30).unwrap();
    let r = e
        .verify("alice", &next, &from("192.0.2.99"), t + 30)
        .unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Throttled);
    assert!(r.message.contains("from several places"), "{}", r.message);
    assert_eq!(
        e.begin_login(&account("alice"), &from("203.0.113.5"), t + 30)
            .unwrap()
            .action,
        LoginAction::AskCode
    );
    assert_eq!(
        e.verify("alice", &next, &from("203.0.113.5"), t + 30)
            .unwrap()
            .outcome,
        VerifyOutcome::Accepted
    );
    // The ceiling is on disk: a restart keeps it (and forgets the known
    // address, which is now asked for a backup code like any other).
    drop(e);
    let e = reopen(&d, ThrottleConfig::default());
    assert_eq!(
        e.begin_login(&account("alice"), &from("203.0.113.5"), t + 31)
            .unwrap()
            .prompt,
        "Backup code: "
    );
    assert!(
        e.status(&account("alice"), t + 31)
            .unwrap()
            .throttled_for_secs
            > 0
    );
    e.unlock("alice", 0, t + 32).unwrap();
    assert_eq!(
        e.begin_login(&account("alice"), &from("192.0.2.99"), t + 32)
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

fn engine_with_policy(text: &str) -> (tempfile::TempDir, Engine) {
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

/// Messages an engine "sent", or a relay that is down.
#[derive(Clone, Default)]
struct Recorder {
    sent: Arc<Mutex<Vec<(String, String)>>>,
    down: bool,
}

impl crate::mail::Outbox for Recorder {
    fn send(&self, to: &str, _subject: &str, body: &str) -> Result<(), crate::mail::MailError> {
        if self.down {
            return Err(crate::mail::MailError::Smtp {
                relay: "relay:25".into(),
                reason: "connection refused".into(),
            });
        }
        self.sent.lock().unwrap().push((to.into(), body.into()));
        Ok(())
    }
}

fn email_engine(outbox: Recorder) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        state_dir: dir.path().join("state"),
        ..Config::default()
    };
    cfg.email.transport = crate::config::Transport::Smtp;
    cfg.email.resend_interval_secs = 0;
    let store = FileStore::init(&cfg.state_dir).unwrap();
    let engine = Engine::new(cfg, store, FAST, Policy::default()).with_outbox(outbox);
    (dir, engine)
}

fn last_code(r: &Recorder) -> String {
    let sent = r.sent.lock().unwrap();
    let body = &sent.last().unwrap().1;
    let at = body.find(" is ").unwrap() + 4;
    body[at..at + 6].to_string()
}

#[test]
fn email_codes_are_off_without_a_transport() {
    let (_d, e) = engine();
    let err = e
        .begin_email_enrollment(&account("alice"), "alice@example.com", T0)
        .unwrap_err();
    assert!(
        matches!(err, Error::Refused(TwofoldError::InvalidInput(_))),
        "{err:?}"
    );
}

#[test]
fn an_address_is_stored_only_once_its_code_comes_back() {
    let r = Recorder::default();
    let (_d, e) = email_engine(r.clone());
    let alice = account("alice");
    assert_eq!(
        e.begin_email_enrollment(&alice, "alice@example.com", T0)
            .unwrap(),
        "a***@example.com"
    );
    assert_eq!(r.sent.lock().unwrap()[0].0, "alice@example.com");
    assert!(!e.status(&alice, T0).unwrap().enrolled);
    let code = last_code(&r);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert!(matches!(
        e.confirm_email_enrollment(&alice, wrong, T0),
        Err(Error::Refused(TwofoldError::InvalidInput(_)))
    ));
    let backup = e.confirm_email_enrollment(&alice, &code, T0).unwrap();
    assert_eq!(backup.len(), 10);
    let status = e.status(&alice, T0).unwrap();
    assert_eq!(
        (status.methods.as_str(), status.email.as_str()),
        ("email", "a***@example.com")
    );
    // Spent: the same code confirms nothing again.
    assert!(e.confirm_email_enrollment(&alice, &code, T0).is_err());

    // A login: the plan sends by e-mail, the code works once.
    let plan = e.begin_login(&alice, &ctx(), T0).unwrap();
    assert_eq!(plan.action, LoginAction::SendEmail);
    e.send_login_code(&alice, &ctx(), T0).unwrap();
    let code = last_code(&r);
    assert_eq!(
        e.verify("alice", &code, &ctx(), T0).unwrap().outcome,
        VerifyOutcome::Accepted
    );
    assert_eq!(
        e.verify("alice", &code, &ctx(), T0).unwrap().outcome,
        VerifyOutcome::Wrong
    );

    // The app joins as a second method, only after a current code (from the
    // user's own `twofold setup`); the backup codes stay.
    assert!(matches!(
        e.begin_enrollment(UID, "alice", T0),
        Err(Error::Refused(TwofoldError::AccessDenied(_)))
    ));
    let own = LoginContext {
        service: SELF_SERVICE.into(),
        rhost: String::new(),
        caller_uid: UID,
        invoker: None,
    };
    e.send_login_code(&alice, &own, T0).unwrap();
    let proof = last_code(&r);
    assert!(
        e.verify("alice", &proof, &own, T0)
            .unwrap()
            .outcome
            .is_accepted()
    );
    let offer = e.begin_enrollment(UID, "alice", T0).unwrap();
    let totp_code = totp::code_at(&secret_of(&offer), SIX, T0).unwrap();
    assert!(
        e.confirm_enrollment(UID, "alice", &totp_code, T0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(e.status(&alice, T0).unwrap().methods, "totp,email");
    assert_eq!(e.status(&alice, T0).unwrap().backup_codes_left, 10);
    let plan = e.begin_login(&alice, &ctx(), T0 + 30).unwrap();
    assert_eq!(plan.action, LoginAction::AskCode);
    assert_eq!(plan.email, "a***@example.com");
    assert!(!plan.prompt.is_empty());
}

#[test]
fn a_failed_send_is_a_clear_refusal_and_leaves_no_code() {
    let r = Recorder::default();
    let (_d, e) = email_engine(r.clone());
    let alice = account("alice");
    e.begin_email_enrollment(&alice, "alice@example.com", T0)
        .unwrap();
    e.confirm_email_enrollment(&alice, &last_code(&r), T0)
        .unwrap();
    let down = Recorder {
        down: true,
        ..Recorder::default()
    };
    let e = e.with_outbox(down);
    let err = e.send_login_code(&alice, &ctx(), T0).unwrap_err();
    assert!(
        matches!(err, Error::Refused(TwofoldError::DeliveryFailed(_))),
        "{err:?}"
    );
    assert!(!e.has_login_email_code("alice", T0).unwrap());
}

#[test]
fn unproven_addresses_and_bad_ones_get_nothing() {
    let r = Recorder::default();
    let (_d, e) = email_engine(r.clone());
    let alice = account("alice");
    for bad in [
        "",
        "alice",
        "a@b@c",
        "alice@example.com\r\nBcc: eve@example.com",
    ] {
        assert!(
            matches!(
                e.begin_email_enrollment(&alice, bad, T0),
                Err(Error::Refused(TwofoldError::InvalidInput(_)))
            ),
            "{bad:?}"
        );
    }
    assert!(r.sent.lock().unwrap().is_empty());
    // Registration begun, never confirmed: a login has no address to send to.
    e.begin_email_enrollment(&alice, "alice@example.com", T0)
        .unwrap();
    assert!(matches!(
        e.send_login_code(&alice, &ctx(), T0),
        Err(Error::Refused(TwofoldError::InvalidInput(_)))
    ));
    assert_eq!(r.sent.lock().unwrap().len(), 1);
}

/// The password alone never adds a method: a user whose only method the
/// rule no longer accepts proves themselves with it first (MustEnroll, not
/// an acceptance), and only then may an e-mail address be registered.
#[test]
fn a_method_the_rule_no_longer_accepts_still_proves_the_user_first() {
    let r = Recorder::default();
    let (_d, e) = email_engine(r.clone());
    let (secret, _) = enroll(&e);
    let policy = crate::policy::parse(
        "[default]\nmode = \"require\"\nmethods = [\"email\"]\n",
        std::path::Path::new("p.toml"),
    )
    .unwrap();
    e.set_policy(policy);
    // Not a real account: the policy's decision falls back on the strictest
    // rule, which is the only one here.
    let alice = account("alice");
    let plan = e.begin_login(&alice, &ctx(), T0 + 60).unwrap();
    assert_eq!(plan.action, LoginAction::AskCode, "{plan:?}");
    assert_eq!(plan.methods, [twofold_protocol::Method::Email]);
    // Without a proof, no address is taken (not even at login, by root).
    assert!(matches!(
        e.email_enroll_at_login(&alice, "eve@example.com", &ctx(), T0 + 60),
        Err(Error::Refused(TwofoldError::AccessDenied(_)))
    ));
    assert!(r.sent.lock().unwrap().is_empty());
    // A wrong code proves nothing.
    let wrong = e.verify("alice", "000000", &ctx(), T0 + 60).unwrap();
    assert_ne!(wrong.outcome, VerifyOutcome::MustEnroll);
    // The right app code is no acceptance now, but lets the login go on.
    let code = totp::code_at(&secret, SIX, T0 + 60).unwrap();
    let reply = e.verify("alice", &code, &ctx(), T0 + 60).unwrap();
    assert_eq!(reply.outcome, VerifyOutcome::MustEnroll);
    assert!(!reply.outcome.is_accepted());
    e.email_enroll_at_login(&alice, "alice@example.com", &ctx(), T0 + 60)
        .unwrap();
    assert_eq!(r.sent.lock().unwrap().len(), 1);
    // The proof was spent.
    assert!(!e.offers().take_proof("alice", T0 + 60));
}

/// Spend the account-wide ceiling from `burst` new addresses at `t`.
fn reach_the_ceiling(e: &Engine, t: u64) {
    for i in 0..ThrottleConfig::default().account_burst {
        let r = e
            .verify("alice", "000000", &from(&format!("198.51.100.{i}")), t)
            .unwrap();
        assert_eq!(r.outcome, VerifyOutcome::Wrong, "guess {i}");
    }
}

fn tat(e: &Engine) -> u64 {
    e.store()
        .load("alice")
        .unwrap()
        .unwrap()
        .enrollment
        .ceiling_tat
}

#[test]
fn while_the_ceiling_is_reached_backup_codes_are_checked_and_spend_no_token() {
    let (_d, e) = engine();
    let (secret, codes) = enroll(&e);
    let t = T0 + 30;
    reach_the_ceiling(&e, t);
    let spent = tat(&e);
    let status = e.status(&account("alice"), t).unwrap();
    assert_eq!(status.ceiling_reached_for_secs, 1800, "{status:?}");
    // A new address and the console are prompted, for a backup code only.
    for place in [from("192.0.2.99"), from("")] {
        let plan = e.begin_login(&account("alice"), &place, t).unwrap();
        assert_eq!(plan.action, LoginAction::AskCode, "{plan:?}");
        assert_eq!(plan.prompt, "Backup code: ");
        assert!(plan.email.is_empty());
        assert!(
            plan.message.contains(
                "only a backup code is accepted here for now (other codes again in 30 minutes)"
            ),
            "{}",
            plan.message
        );
    }
    // A right app code is not checked there, and not counted.
    let right = totp::code_at(&secret, SIX, t).unwrap();
    let r = e.verify("alice", &right, &from("192.0.2.99"), t).unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Throttled);
    assert!(r.message.contains("only a backup code"), "{}", r.message);
    // A wrong backup code is checked and counted for its source, but spends no token.
    let r = e
        .verify("alice", "0000000000", &from("192.0.2.98"), t)
        .unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Wrong);
    assert!(
        r.message.starts_with(
            "Wrong backup code. Only a backup code is accepted here for the next 30 minutes"
        ),
        "{}",
        r.message
    );
    assert_eq!(tat(&e), spent, "a backup guess spent a token");
    // The owner gets in with a backup code from a new address, and at the console.
    for (place, code) in [(from("192.0.2.99"), &codes[0]), (from(""), &codes[1])] {
        let r = e.verify("alice", code.expose(), &place, t + 1).unwrap();
        assert_eq!(
            r.outcome,
            VerifyOutcome::AcceptedBackupCode,
            "{}",
            r.message
        );
    }
    // The ceiling stays reached: the owner's way in opened nothing else.
    let r = e
        .verify("alice", &right, &from("192.0.2.97"), t + 1)
        .unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Throttled);
}

#[test]
fn backup_guesses_while_the_ceiling_is_reached_keep_each_sources_back_off() {
    let (_d, e) = engine();
    let (_, codes) = enroll(&e);
    let t = T0 + 30;
    reach_the_ceiling(&e, t);
    let attacker = from("203.0.113.66");
    let free = ThrottleConfig::default().free_failures;
    for n in 0..=free {
        let r = e.verify("alice", "0000000000", &attacker, t).unwrap();
        assert_eq!(r.outcome, VerifyOutcome::Wrong, "guess {n}");
    }
    // 3 free, the 4th checked, then this source waits 30 s, even with a right code.
    let r = e
        .verify("alice", codes[0].expose(), &attacker, t + 1)
        .unwrap();
    assert_eq!(r.outcome, VerifyOutcome::Throttled);
    assert_eq!(r.message, "Too many wrong codes. Try again in 29 seconds.");
    let plan = e.begin_login(&account("alice"), &attacker, t + 1).unwrap();
    assert_eq!(plan.action, LoginAction::Refuse);
    // Another source is not held by it.
    let r = e
        .verify("alice", codes[0].expose(), &from("192.0.2.5"), t + 1)
        .unwrap();
    assert_eq!(r.outcome, VerifyOutcome::AcceptedBackupCode);
}

/// The 9 losers of a 10-way race with a right code (TOTP or backup) typed
/// them too: no wrong guess is counted, for the source or the account.
#[test]
fn used_codes_and_lost_races_are_not_counted_as_guesses() {
    let (_d, e) = engine();
    let (secret, codes) = enroll(&e);
    let e = std::sync::Arc::new(e);
    let t = T0 + 30;
    let race = |code: String, at: u64| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (e, code) = (e.clone(), code.clone());
                std::thread::spawn(move || {
                    let place = from(&format!("198.51.100.{i}"));
                    e.verify("alice", &code, &place, at).unwrap().outcome
                })
            })
            .collect();
        let mut outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        outcomes.sort_by_key(|o| format!("{o:?}"));
        outcomes
    };
    let totp = race(totp::code_at(&secret, SIX, t).unwrap(), t);
    assert_eq!(
        totp.iter().filter(|o| o.is_accepted()).count(),
        1,
        "{totp:?}"
    );
    assert_eq!(
        totp.iter()
            .filter(|o| **o == VerifyOutcome::Replayed)
            .count(),
        9
    );
    let backup = race(codes[0].expose().to_string(), t + 1);
    assert_eq!(
        backup.iter().filter(|o| o.is_accepted()).count(),
        1,
        "{backup:?}"
    );
    assert_eq!(
        backup
            .iter()
            .filter(|o| **o == VerifyOutcome::Replayed)
            .count(),
        9
    );
    let status = e.status(&account("alice"), t + 1).unwrap();
    assert_eq!(status.consecutive_failures, 0, "{status:?}");
    assert_eq!(tat(&e), 0, "a used code spent a token of the ceiling");
    // A replay is still refused, as before; a wrong code still counts.
    assert_eq!(
        e.verify("alice", "000000", &from("198.51.100.1"), t + 2)
            .unwrap()
            .outcome,
        VerifyOutcome::Wrong
    );
    assert_eq!(
        e.status(&account("alice"), t + 2)
            .unwrap()
            .consecutive_failures,
        1
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

/// Add the app `name` to "alice" at `now` (after a proof); returns its key.
fn add_app(e: &Engine, name: &str, now: u64) -> Vec<u8> {
    e.offers().record_proof("alice", now);
    let offer = e.begin_app(&account("alice"), name, now).unwrap();
    let secret = secret_of(&offer);
    let code = totp::code_at(&secret, SIX, now).unwrap();
    let codes = e.confirm_enrollment(UID, "alice", &code, now).unwrap();
    assert!(codes.is_empty(), "the backup codes stay");
    secret
}

/// Two apps, each with its own key and replay state: both log in, and a
/// code of one never blocks the other's code for the same step.
#[test]
fn several_apps_each_log_in_and_none_blocks_another() {
    let (_d, e) = engine();
    let (first, _) = enroll(&e);
    let phone = add_app(&e, "phone", T0);
    let now = T0 + 30;
    for secret in [&first, &phone] {
        let code = totp::code_at(secret, SIX, now).unwrap();
        assert_eq!(
            e.verify("alice", &code, &ctx(), now).unwrap().outcome,
            VerifyOutcome::Accepted
        );
        assert_eq!(
            e.verify("alice", &code, &ctx(), now).unwrap().outcome,
            VerifyOutcome::Replayed
        );
    }
    let status = e.status(&account("alice"), now).unwrap();
    let names: Vec<&str> = status
        .authenticators
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["app", "phone"]);
    assert!(status.authenticators.iter().all(|a| a.last_used == now));
    // A name twice, a bad name, and more than the limit are refused.
    e.offers().record_proof("alice", now);
    assert!(matches!(
        e.begin_app(&account("alice"), "phone", now),
        Err(Error::Refused(TwofoldError::AlreadyEnrolled(_)))
    ));
    assert!(e.begin_app(&account("alice"), "my phone", now).is_err());
    for n in 0..3 {
        add_app(&e, &format!("extra{n}"), now);
    }
    e.offers().record_proof("alice", now);
    let full = e.begin_app(&account("alice"), "sixth", now).unwrap_err();
    assert!(format!("{full:?}").contains("the most allowed"), "{full:?}");
    // State written with several apps loads again (a new engine).
    let loaded = e.store().load("alice").unwrap().unwrap();
    assert_eq!(loaded.enrollment.app_list().len(), crate::store::MAX_APPS);
}

/// Removing needs a current code; the last method cannot be removed under
/// `require`; the remaining app keeps working, the removed one does not.
#[test]
fn removing_an_app_keeps_the_others_and_never_the_last_under_require() {
    let (_d, e) = engine_with_policy("[default]\nmode = \"require\"\n");
    let (first, _) = enroll(&e);
    let phone = add_app(&e, "phone", T0);
    let now = T0 + 60;
    let code = |s: &[u8], t: u64| totp::code_at(s, SIX, t).unwrap();
    assert!(
        e.remove_app_of_own(&account("alice"), "phone", "000000", now)
            .is_err(),
        "a wrong code removes nothing"
    );
    e.remove_app_of_own(&account("alice"), "app", &code(&phone, now), now)
        .unwrap();
    let left = e.status(&account("alice"), now).unwrap().authenticators;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "phone");
    // The removed app's codes no longer log in; the other's still do.
    let later = now + 30;
    assert_eq!(
        e.verify("alice", &code(&first, later), &ctx(), later)
            .unwrap()
            .outcome,
        VerifyOutcome::Wrong
    );
    assert_eq!(
        e.verify("alice", &code(&phone, later), &ctx(), later)
            .unwrap()
            .outcome,
        VerifyOutcome::Accepted
    );
    let last = e
        .remove_app_of_own(
            &account("alice"),
            "phone",
            &code(&phone, later + 30),
            later + 30,
        )
        .unwrap_err();
    assert!(
        format!("{last:?}").contains("requires two-factor"),
        "{last:?}"
    );
    // Nor can an administrator remove the last method (reset is for that).
    assert!(e.admin_remove_app("alice", "phone", 0).is_err());
}
