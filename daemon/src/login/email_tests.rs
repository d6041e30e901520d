//! E-mailed codes at login and at enrollment, with a recording outbox.

use super::tests::*;
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
