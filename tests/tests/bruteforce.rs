//! An attacker guessing one account's codes as fast as twofoldd lets them,
//! through PAM and straight over the bus, with the throttle scaled down to
//! seconds. The number of codes the daemon actually checks must be what
//! `throttle::guesses_within` (the model behind docs/security.md's ten-year
//! figures) predicts for the same settings and time, and the account's owner,
//! logging in from another address meanwhile, must get in at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::time::{Duration, Instant};
use twofold_e2e::*;
use twofoldd::config::ThrottleConfig;
use twofoldd::throttle;

const ALICE: &str = "tf-alice";
/// Seconds each attack lasts.
const HORIZON: u64 = 16;

/// The defaults' shape (free guesses, doubling, a cap, a lockout, an
/// account-wide bucket) in seconds instead of minutes and days.
fn scaled() -> (ThrottleConfig, String) {
    let cfg = ThrottleConfig {
        free_failures: 2,
        base_delay_secs: 1,
        max_delay_secs: 2,
        lockout_after: 5,
        lockout_secs: 4,
        account_burst: 4,
        account_interval_secs: 2,
    };
    let text = format!(
        "[throttle]\nfree_failures = {}\nbase_delay_secs = {}\nmax_delay_secs = {}\n\
         lockout_after = {}\nlockout_secs = {}\naccount_burst = {}\naccount_interval_secs = {}\n",
        cfg.free_failures,
        cfg.base_delay_secs,
        cfg.max_delay_secs,
        cfg.lockout_after,
        cfg.lockout_secs,
        cfg.account_burst,
        cfg.account_interval_secs
    );
    (cfg, text)
}

/// The daemon's answer to one guess.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Checked,
    Held,
}

/// The daemon's reply to `code` from `rhost`, straight over the bus as root
/// (the PAM stack's place).
fn verify_over_bus(bus: &Bus, rhost: &str, code: &str) -> String {
    let (ok, text) = bus.dbus_send(
        None,
        "Verify",
        &[
            "string:tf-alice",
            &format!("string:{code}"),
            "string:sshd",
            &format!("string:{rhost}"),
        ],
    );
    assert!(ok, "{text}");
    text
}

/// One wrong guess over the bus.
fn guess_over_bus(bus: &Bus, rhost: &str) -> Answer {
    let text = verify_over_bus(bus, rhost, "000000");
    if text.contains("Too many wrong codes") {
        Answer::Held
    } else {
        assert!(text.contains("Wrong code"), "{text}");
        Answer::Checked
    }
}

/// One wrong guess through the PAM module.
fn guess_through_pam(bus: &Bus, pam: &PamService, rhost: &str) -> Answer {
    let a = pam.login_from(bus, ALICE, rhost, b"000000\n").unwrap();
    assert_eq!(a.code, pam::AUTH_ERR, "{a:?}");
    if a.stderr.contains("Verification code") {
        Answer::Checked
    } else {
        assert!(a.stderr.contains("Too many wrong codes"), "{a:?}");
        Answer::Held
    }
}

/// Guess from `sources` in turn, without pause, for `HORIZON` seconds of the
/// daemon's clock (whole seconds, as the daemon counts); returns the codes
/// the daemon checked. `between` runs after each guess (the owner's turn).
fn attack(
    sources: &[String],
    mut guess: impl FnMut(&str) -> Answer,
    mut between: impl FnMut(),
) -> u64 {
    let start = unix_now();
    let (mut checked, mut tries) = (0, 0u64);
    while unix_now() < start + HORIZON {
        let source = &sources[(tries % sources.len() as u64) as usize];
        if guess(source) == Answer::Checked {
            checked += 1;
        }
        tries += 1;
        between();
    }
    eprintln!(
        "{} source(s): {tries} guesses sent in {HORIZON} s, {checked} checked",
        sources.len()
    );
    checked
}

fn world() -> (Bus, Daemon, PamService, Enrolled, ThrottleConfig) {
    test_user(ALICE).unwrap();
    let (cfg, text) = scaled();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, &text).unwrap();
    let pam = PamService::new("").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    (bus, daemon, pam, e, cfg)
}

/// Guess from new addresses until the account-wide bucket is empty for the
/// next two seconds.
fn drain_bucket(bus: &Bus) {
    // A token comes back every 2 s: keep spending until the wait is a whole 2 s.
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let rhost = format!("192.0.2.{}", 100 + n % 100);
        if verify_over_bus(bus, &rhost, "000000").contains("(other codes again in 2 seconds)") {
            return;
        }
    }
    panic!("the account-wide bucket never ran dry");
}

fn owner_logs_in(
    bus: &Bus,
    pam: &PamService,
    e: &Enrolled,
    rhost: &str,
    step: i64,
) -> (i32, Duration, String) {
    let code = oathtool(&e.secret, step).unwrap();
    let t = Instant::now();
    let a = pam
        .login_from(bus, ALICE, rhost, format!("{code}\n").as_bytes())
        .unwrap();
    (a.code, t.elapsed(), a.stderr)
}

#[test]
fn one_address_gets_what_the_model_says_and_never_holds_up_the_owner() {
    let (bus, _daemon, pam, e, cfg) = world();
    let sources = ["198.51.100.7".to_string()];
    // The owner logs in from elsewhere every 4 s of the attack: with a
    // backup code each time (a TOTP step is accepted once).
    let mut owner = Vec::new();
    let mut next_owner_login = Instant::now() + Duration::from_secs(2);
    let mut backup = e.backup_codes.iter();
    let checked = attack(
        &sources,
        |s| guess_through_pam(&bus, &pam, s),
        || {
            if Instant::now() < next_owner_login {
                return;
            }
            next_owner_login += Duration::from_secs(4);
            let code = backup.next().expect("enough backup codes");
            let t = Instant::now();
            let a = pam
                .login_from(&bus, ALICE, "203.0.113.5", format!("{code}\n").as_bytes())
                .unwrap();
            owner.push((a.code, t.elapsed(), a.stderr));
        },
    );
    let model = throttle::guesses_within(&cfg, HORIZON, 1);
    assert!(
        checked.abs_diff(model) <= 1,
        "checked {checked}, model {model}"
    );
    assert!(!owner.is_empty());
    for (code, took, stderr) in &owner {
        assert_eq!(*code, pam::SUCCESS, "the owner was held up: {stderr}");
        eprintln!("owner's login during the attack: {} ms", took.as_millis());
    }
}

#[test]
fn many_addresses_get_what_the_ceiling_allows_and_known_addresses_stay_open() {
    let (bus, _daemon, pam, e, cfg) = world();
    // The owner's usual address: a login with a code before the attack.
    let (code, _, stderr) = owner_logs_in(&bus, &pam, &e, "203.0.113.5", 0);
    assert_eq!(code, pam::SUCCESS, "{stderr}");
    let sources: Vec<String> = (1..=4).map(|i| format!("198.51.100.{i}")).collect();
    let checked = attack(&sources, |s| guess_over_bus(&bus, s), || {});
    let model = throttle::guesses_within(&cfg, HORIZON, sources.len() as u32);
    assert!(
        checked.abs_diff(model) <= 1,
        "checked {checked}, model {model}"
    );
    let one_address = throttle::guesses_within(&cfg, HORIZON, 1);
    assert!(
        model < sources.len() as u64 * one_address,
        "the ceiling must bind in this setting ({model} vs {one_address} per address)"
    );

    // With the bucket empty (spent again now, so that no token comes back
    // in the next second), a new address is held even with a right code,
    // and the owner's usual address is not.
    drain_bucket(&bus);
    let (code, took, stderr) = owner_logs_in(&bus, &pam, &e, "203.0.113.5", 1);
    assert_eq!(
        code,
        pam::SUCCESS,
        "the owner's usual address was held up: {stderr}"
    );
    eprintln!(
        "owner's login from a known address after the attack: {} ms",
        took.as_millis()
    );
    drain_bucket(&bus);
    let a = pam
        .login_from(
            &bus,
            ALICE,
            "192.0.2.201",
            format!("{}\n", oathtool(&e.secret, -1).unwrap()).as_bytes(),
        )
        .unwrap();
    assert_eq!(a.code, pam::AUTH_ERR, "{a:?}");
    assert!(a.stderr.contains("from several places"), "{a:?}");
}

/// su and sudo run the PAM stack as root with no remote host; wrong codes
/// typed through `su tf-alice` by another local user are counted by who ran
/// su (the real uid of the process, which twofoldd reads itself), apart
/// from tf-alice's own local logins.
#[test]
fn guessing_through_su_does_not_hold_up_the_owners_own_local_logins() {
    test_user(ALICE).unwrap();
    test_user("tf-bob").unwrap();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    let free = ThrottleConfig::default().free_failures as usize;
    let mut asked = 0;
    for _ in 0..free + 3 {
        let a = pam.login_su(&bus, "tf-bob", ALICE, b"000000\n").unwrap();
        assert_eq!(a.code, pam::AUTH_ERR, "{a:?}");
        asked += usize::from(a.stderr.contains("Verification code"));
    }
    // 3 free, the 4th checked, then a 30 s wait for this count.
    assert_eq!(asked, free + 1, "{}", daemon.log());
    // The owner's own local login (run by root here) is another count.
    let code = oathtool(&e.secret, 0).unwrap();
    let a = pam
        .login_from(&bus, ALICE, "", format!("{code}\n").as_bytes())
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}\n{}", daemon.log());
    // And the owner's success did not reset the guesser's count.
    let a = pam.login_su(&bus, "tf-bob", ALICE, b"000000\n").unwrap();
    assert!(a.stderr.contains("Too many wrong codes"), "{a:?}");
}

/// The PAM module's messages while the account-wide ceiling is reached.
const BACKUP_ONLY: &str = "only a backup code is accepted here for now";

/// A distributed guesser spends the account-wide ceiling and keeps it spent;
/// meanwhile other addresses send wrong backup codes, and the owner logs in
/// with a backup code from a new address and from the console, each time
/// let in, and asked for a backup code while the ceiling holds. Backup guesses while the ceiling is reached spend no
/// token, so the app codes the daemon checks stay within what
/// `throttle::guesses_within` says, the backup guesses stay under
/// `throttle::backup_guesses_within`, and with both the model keeps a
/// guesser under an even chance for ten years.
#[test]
fn many_addresses_leave_the_owner_a_backup_code_at_a_new_address_and_the_console() {
    let (bus, daemon, pam, e, cfg) = world();
    let guessers: Vec<String> = (1..=4).map(|i| format!("198.51.100.{i}")).collect();
    let backup_guessers: Vec<String> = (1..=4).map(|i| format!("198.51.100.{}", 100 + i)).collect();
    let reached = Cell::new(false);
    let (backup_sent, backup_checked) = (Cell::new(0u64), Cell::new(0u64));
    let mut owner = Vec::new();
    let mut codes = e.backup_codes.iter();
    let mut next_owner_login = Instant::now() + Duration::from_secs(2);
    let checked = attack(
        &guessers,
        |s| {
            let text = verify_over_bus(&bus, s, "000000");
            if text.contains(BACKUP_ONLY) {
                reached.set(true);
            }
            if text.contains("Too many wrong codes") {
                Answer::Held
            } else {
                assert!(text.contains("Wrong code"), "{text}");
                Answer::Checked
            }
        },
        || {
            if !reached.get() {
                return;
            }
            let n = backup_sent.get();
            backup_sent.set(n + 1);
            let from = &backup_guessers[(n % backup_guessers.len() as u64) as usize];
            let text = verify_over_bus(&bus, from, "0000000000");
            if text.contains("string \"Wrong\"") {
                backup_checked.set(backup_checked.get() + 1);
            } else {
                // This address's own back-off.
                assert!(text.contains("Too many wrong codes. Try again"), "{text}");
            }
            if Instant::now() < next_owner_login {
                return;
            }
            next_owner_login += Duration::from_secs(4);
            // In turn a new address each time, and the console (no remote host).
            let rhost = if owner.len() % 2 == 0 {
                format!("203.0.113.{}", 10 + owner.len())
            } else {
                String::new()
            };
            let code = codes.next().expect("enough backup codes");
            let t = Instant::now();
            let a = pam
                .login_from(&bus, ALICE, &rhost, format!("{code}\n").as_bytes())
                .unwrap();
            // The notice comes as information (stdout), the prompt on stderr.
            owner.push((
                rhost,
                a.code,
                t.elapsed(),
                format!("{}{}", a.stdout, a.stderr),
            ));
        },
    );
    // Whenever a token is back, a backup guess is an ordinary one and may
    // take it: the app codes checked are at most what the model gives the
    // app-code guessers alone, and with the backup guesses, at least as many
    // (every token was spent by someone).
    let model = throttle::guesses_within(&cfg, HORIZON, guessers.len() as u32);
    assert!(
        checked <= model + 1 && checked + backup_checked.get() + 1 >= model,
        "app codes checked {checked}, backup codes {}, model {model}\n{}",
        backup_checked.get(),
        daemon.log()
    );
    let backup_model = throttle::backup_guesses_within(
        &cfg,
        HORIZON,
        backup_guessers.len() as u32,
        throttle::BACKUP_CHECK_FLOOR_MS,
    );
    eprintln!(
        "backup guesses: {} sent, {} checked (model: at most {backup_model})",
        backup_sent.get(),
        backup_checked.get()
    );
    assert!(
        backup_checked.get() > 0,
        "backup codes were not checked at all"
    );
    assert!(
        backup_checked.get() <= backup_model,
        "{} backup guesses checked, the model allows {backup_model}",
        backup_checked.get()
    );
    assert!(owner.len() >= 2, "the owner did not get a turn: {owner:?}");
    // Every owner's login gets in. Most come while the guessers keep the
    // ceiling spent, and those are told why and asked for a backup code; a
    // login that comes just as a token is back (a slow, loaded machine
    // lets the guessers fall behind) is asked for a code as usual, and its
    // backup code works there too.
    let mut told = 0;
    for (rhost, code, took, stderr) in &owner {
        let place = if rhost.is_empty() {
            "the console"
        } else {
            rhost.as_str()
        };
        assert_eq!(
            *code,
            pam::SUCCESS,
            "the owner was kept out at {place}: {stderr}"
        );
        if stderr.contains(BACKUP_ONLY) {
            assert!(
                stderr.contains("Backup code: "),
                "{place}: not prompted: {stderr}"
            );
            told += 1;
        } else {
            assert!(
                stderr.contains("Verification code: "),
                "{place}: neither told why nor prompted: {stderr}"
            );
        }
        eprintln!(
            "owner's backup-code login at {place} during the attack: {} ms",
            took.as_millis()
        );
    }
    assert!(
        told > 0,
        "no owner's login came while the ceiling was reached: {owner:?}"
    );

    // The administrator is told, loudly, in the log, the status and the report.
    drain_bucket(&bus);
    let status = bus.twofold(&["admin", "status", ALICE]).unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("ACCOUNT-WIDE CEILING REACHED"), "{status}");
    let report = bus.twofold(&["admin", "report", "--json"]).unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    let row = report.lines().find(|l| l.contains(ALICE)).unwrap();
    assert!(!row.contains("\"ceiling_reached_for_secs\":0,"), "{row}");
    assert!(
        daemon
            .log()
            .contains("account-ceiling-reached user=tf-alice"),
        "{}",
        daemon.log()
    );

    // The figure at the defaults, with the backup way in: any number of
    // addresses, one backup code checked per millisecond for ten years.
    let defaults = ThrottleConfig::default();
    let ten_years = 10 * 365 * 86_400;
    let app = throttle::guesses_within(&defaults, ten_years, 256);
    let backup = throttle::backup_guesses_within(
        &defaults,
        ten_years,
        u32::MAX,
        throttle::BACKUP_CHECK_FLOOR_MS,
    );
    let p = throttle::chance(app, 3e-6, backup, throttle::backup_code_p(10));
    eprintln!(
        "ten years at the defaults: {app} app-code + {backup} backup-code guesses, chance {p:.4}"
    );
    assert!(p < 0.5, "{p}");
}

/// A right code typed at once from 10 places (a TOTP step, then a backup
/// code): one login wins, and the 9 others are told the code was used, and
/// are not counted as wrong guesses (for the account or their address).
#[test]
fn the_losers_of_a_race_are_not_counted_as_guesses() {
    let (bus, daemon, _pam, e, _cfg) = world();
    wait_for_step_margin(8);
    for code in [
        oathtool(&e.secret, 0).unwrap(),
        e.backup_codes[0].to_string(),
    ] {
        let replies: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|i| {
                    let (bus, code) = (&bus, &code);
                    s.spawn(move || verify_over_bus(bus, &format!("198.51.100.{i}"), code))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let used = replies
            .iter()
            .filter(|r| r.contains("already used"))
            .count();
        assert_eq!(used, 9, "{replies:#?}");
    }
    let status = bus.twofold(&["admin", "status", ALICE, "--json"]).unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("\"consecutive_failures\":0"),
        "{status}\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("outcome=refused-used-backup-code"));
}
