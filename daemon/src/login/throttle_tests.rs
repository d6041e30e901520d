//! Throttling at login: each source's back-off, the account-wide
//! ceiling, and what does not count as a guess.

use super::tests::*;
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
