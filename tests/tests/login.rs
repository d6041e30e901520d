//! Enroll with `twofold setup` and log in through real libpam, against a real
//! twofoldd on a private bus that loads the shipped D-Bus policy. Codes come
//! from oathtool. Each test has its own bus, daemon and state directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
use twofold_e2e::*;

const ALICE: &str = "tf-alice";
const BOB: &str = "tf-bob";
const CAROL: &str = "tf-carol";

struct World {
    bus: Bus,
    daemon: Daemon,
    pam: PamService,
}

fn world(extra_config: &str, module_args: &str) -> World {
    for user in [ALICE, BOB, CAROL] {
        test_user(user).unwrap();
    }
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, extra_config).unwrap();
    let pam = PamService::new(module_args).unwrap();
    World { bus, daemon, pam }
}

fn line(code: &str) -> Vec<u8> {
    format!("{code}\n").into_bytes()
}

fn status_json(w: &World, user: &str) -> String {
    let out = output({
        let mut c = w.bus.command_as(user, artifacts().twofold());
        c.args(["status", "--json"]);
        c
    })
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn enroll_then_log_in_with_a_code_from_oathtool() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    assert!(
        e.uri.starts_with("otpauth://totp/twofold:tf-alice%40"),
        "{}",
        e.uri
    );
    assert!(e.uri.contains("&issuer=twofold"), "{}", e.uri);
    // The Key URI format's defaults are left out (a smaller QR code).
    for part in ["algorithm=", "digits=", "period="] {
        assert!(!e.uri.contains(part), "{} has {part}", e.uri);
    }
    assert_eq!(e.secret.len(), 32, "160-bit secret in base32");
    assert_eq!(e.backup_codes.len(), 10);
    let status = status_json(&w, ALICE);
    assert!(
        status.contains("\"enrolled\":true") && status.contains("\"backup_codes_left\":10"),
        "{status}"
    );

    let ok = w
        .pam
        .login(&w.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}");
    assert!(ok.stderr.contains("Verification code: "), "{ok:?}");
    assert!(w.daemon.log().contains(
        "login user=tf-alice service=twofold-test rhost=192.0.2.10 outcome=accepted-totp"
    ));
}

#[test]
fn wrong_code_is_refused() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let right = oathtool(&e.secret, 0).unwrap();
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    let r = w.pam.login(&w.bus, ALICE, &line(&wrong)).unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("Wrong code."), "{r:?}");
}

#[test]
fn replayed_code_is_refused_also_after_a_daemon_restart() {
    let mut w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    // The code that confirmed the enrollment cannot log in.
    let confirming = oathtool(&e.secret, -1).unwrap();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&confirming)).unwrap().code,
        pam::AUTH_ERR
    );

    let code = oathtool(&e.secret, 0).unwrap();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&code)).unwrap().code,
        pam::SUCCESS
    );
    let again = w.pam.login(&w.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(again.code, pam::AUTH_ERR);
    assert!(again.stderr.contains("already used"), "{again:?}");

    w.daemon.restart().unwrap();
    let after_restart = w.pam.login(&w.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(after_restart.code, pam::AUTH_ERR, "{after_restart:?}");
    // Killed with SIGKILL right after a success: the step was durable before the answer.
    let next = oathtool(&e.secret, 1).unwrap();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&next)).unwrap().code,
        pam::SUCCESS
    );
    w.daemon.kill();
    w.daemon.restart().unwrap();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&next)).unwrap().code,
        pam::AUTH_ERR
    );
}

#[test]
fn codes_two_steps_away_are_refused() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    wait_for_step_margin(5);
    for steps in [-2, 2, 3, -10] {
        let r = w
            .pam
            .login(&w.bus, ALICE, &line(&oathtool(&e.secret, steps).unwrap()))
            .unwrap();
        assert_eq!(r.code, pam::AUTH_ERR, "{steps} steps away: {r:?}");
    }
    let unlock = output({
        let mut c = w.bus.command(artifacts().twofold());
        c.args(["admin", "unlock", ALICE]);
        c
    })
    .unwrap();
    assert!(unlock.status.success());
    assert_eq!(
        w.pam
            .login(&w.bus, ALICE, &line(&oathtool(&e.secret, 1).unwrap()))
            .unwrap()
            .code,
        pam::SUCCESS
    );
}

#[test]
fn backup_code_works_once() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let code = &e.backup_codes[0];
    assert!(
        code.len() == 11 && code.as_bytes()[5] == b'-',
        "shown as xxxxx-xxxxx: {code}"
    );
    let first = w.pam.login(&w.bus, ALICE, &line(code)).unwrap();
    assert_eq!(first.code, pam::SUCCESS, "{first:?}");
    assert!(first.stdout.contains("9 backup codes left"), "{first:?}");
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(code)).unwrap().code,
        pam::AUTH_ERR
    );
    // Typed without the dash and in capitals, another code still works.
    let typed = e.backup_codes[1].replace('-', "").to_uppercase();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&typed)).unwrap().code,
        pam::SUCCESS
    );
    assert!(status_json(&w, ALICE).contains("\"backup_codes_left\":8"));
}

#[test]
fn a_used_backup_code_says_so_also_after_a_restart() {
    let mut w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let code = &e.backup_codes[0];
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(code)).unwrap().code,
        pam::SUCCESS
    );
    let again = w.pam.login(&w.bus, ALICE, &line(code)).unwrap();
    assert_eq!(again.code, pam::AUTH_ERR);
    assert!(
        again.stderr.contains("That backup code was already used"),
        "{again:?}"
    );
    w.daemon.restart().unwrap();
    let after = w.pam.login(&w.bus, ALICE, &line(code)).unwrap();
    assert_eq!(after.code, pam::AUTH_ERR);
    assert!(
        after.stderr.contains("That backup code was already used"),
        "{after:?}"
    );
    // A code that never existed gets the usual text, and counts as a guess.
    let never = w.pam.login(&w.bus, ALICE, &line("00000-00000")).unwrap();
    assert_eq!(never.code, pam::AUTH_ERR);
    assert!(!never.stderr.contains("already used"), "{never:?}");
    assert!(never.stderr.contains("Wrong code"), "{never:?}");
    assert!(status_json(&w, ALICE).contains("\"consecutive_failures\":1"));
}

#[test]
fn setup_offers_no_email_where_email_is_off() {
    let w = world("", "");
    let status = status_json(&w, ALICE);
    assert!(status.contains("\"setup_methods\":\"totp\""), "{status}");
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.args(["setup", "--method", "email"]);
    let r = run_with_input(c, b"alice@example.com\n").unwrap();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("not available"), "{r:?}");
    assert!(r.stderr.contains("--method totp"), "{r:?}");
    // Refused before the address was asked for.
    assert!(!r.stderr.contains("E-mail address"), "{r:?}");
    assert!(status_json(&w, ALICE).contains("\"enrolled\":false"));
}

#[test]
fn few_backup_codes_left_are_announced_at_every_login() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    // 10 codes; at 4 left nothing is said yet, at 3 (the default
    // enrollment.low_backup_codes) every login says it.
    for (i, code) in e.backup_codes[..6].iter().enumerate() {
        let r = w.pam.login(&w.bus, ALICE, &line(code)).unwrap();
        assert_eq!(r.code, pam::SUCCESS, "{r:?}");
        assert!(
            r.stdout.contains(&format!("{} backup codes left.", 9 - i)),
            "{r:?}"
        );
        assert!(!r.stdout.contains("twofold backup-codes"), "{r:?}");
    }
    let r = w
        .pam
        .login(&w.bus, ALICE, &line(&e.backup_codes[6]))
        .unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    assert!(
        r.stdout
            .contains("3 backup codes left. Run `twofold backup-codes` to get new ones."),
        "{r:?}"
    );
    // A login with the app says it too.
    let code = oathtool(&e.secret, 0).unwrap();
    let r = w.pam.login(&w.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    assert!(
        r.stdout
            .contains("You have 3 backup codes left. Run `twofold backup-codes`"),
        "{r:?}"
    );
    let status = output({
        let mut c = w.bus.command_as(ALICE, artifacts().twofold());
        c.arg("status");
        c
    })
    .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("Only 3 backup codes left: run `twofold backup-codes`"),
        "{text}"
    );
    assert!(status_json(&w, ALICE).contains("\"low_backup_codes\":true"));
    let report = output({
        let mut c = w.bus.command(artifacts().twofold());
        c.args(["admin", "report"]);
        c
    })
    .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(ALICE))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(" 3 low "), "{text}");
    assert!(text.contains("low: few backup codes left"), "{text}");
}

#[test]
fn clock_drift_is_recorded_and_a_clock_minutes_off_is_diagnosed() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    wait_for_step_margin(8);
    // The device's clock one step (30 s) ahead: accepted, and recorded.
    let ahead = oathtool(&e.secret, 1).unwrap();
    let r = w.pam.login(&w.bus, ALICE, &line(&ahead)).unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    let status = output({
        let mut c = w.bus.command_as(ALICE, artifacts().twofold());
        c.arg("status");
        c
    })
    .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("app (totp, added "), "{text}");
    assert!(text.contains("clock about 30 seconds ahead"), "{text}");
    let explain = output({
        let mut c = w.bus.command(artifacts().twofold());
        c.args(["admin", "explain", ALICE]);
        c
    })
    .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains("authenticator app: clock about 30 seconds ahead"),
        "{text}"
    );
    // Three minutes behind: refused with the diagnosis, counted, and the
    // same code is never accepted.
    let behind = oathtool(&e.secret, -6).unwrap();
    for _ in 0..2 {
        let r = w.pam.login(&w.bus, ALICE, &line(&behind)).unwrap();
        assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
        assert!(
            r.stderr.contains("3 minutes ago") && r.stderr.contains("about 3 minutes behind"),
            "{r:?}"
        );
    }
    assert!(status_json(&w, ALICE).contains("\"consecutive_failures\":2"));
    assert!(w.daemon.log().contains("outcome=refused-wrong-code"));
}

#[test]
fn several_authenticators_each_log_in_and_one_can_be_removed() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    wait_for_step_margin(20);
    // The first app confirmed step -1; its step 0 proves ALICE for the new one.
    let phone = add_app(&w.bus, ALICE, "phone", &oathtool(&e.secret, 0).unwrap(), -1);
    assert!(
        w.daemon
            .log()
            .contains("authenticator-added user=tf-alice app=phone")
    );
    // Each app logs in with its own code; one never blocks the other.
    for (secret, app, steps) in [(&phone, "phone", 0), (&e.secret, "app", 1)] {
        let r = w
            .pam
            .login(&w.bus, ALICE, &line(&oathtool(secret, steps).unwrap()))
            .unwrap();
        assert_eq!(r.code, pam::SUCCESS, "{app}: {r:?}");
        let log = w.daemon.log();
        let accepted = log
            .lines()
            .rfind(|l| l.contains("outcome=accepted-totp"))
            .unwrap();
        assert!(accepted.contains(&format!("app={app}")), "{accepted}");
    }
    let list = output({
        let mut c = w.bus.command_as(ALICE, artifacts().twofold());
        c.arg("authenticators");
        c
    })
    .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("app (totp, added") && text.contains("phone (totp, added"),
        "{text}"
    );
    assert!(text.contains("clock about 30 seconds ahead"), "{text}");
    // Under `require`: one of two may go (with a current code), the last may not.
    let require = output({
        let mut c = w.bus.command(artifacts().twofold());
        c.args(["admin", "require", ALICE]);
        c
    })
    .unwrap();
    assert!(require.status.success());
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.args(["authenticators", "remove", "app"]);
    let r = run_with_input(c, &line(&oathtool(&phone, 1).unwrap())).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.args(["authenticators", "remove", "phone"]);
    let r = run_with_input(c, b"123456\n").unwrap();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("requires two-factor"), "{r:?}");
    let status = output({
        let mut c = w.bus.command(artifacts().twofold());
        c.args(["admin", "status", ALICE]);
        c
    })
    .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("phone (totp") && !text.contains("  app (totp"),
        "{text}"
    );
    // The removed app's codes no longer log in.
    let r = w
        .pam
        .login(&w.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
}

#[test]
fn racing_logins_with_one_backup_code_let_exactly_one_in() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let code = e.backup_codes[2].clone();
    let results: Vec<i32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| w.pam.login(&w.bus, ALICE, &line(&code)).unwrap().code))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|&&c| c == pam::SUCCESS).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|&c| c == pam::SUCCESS || c == pam::AUTH_ERR),
        "{results:?}"
    );
}

#[test]
fn throttling_engages_and_a_success_resets_it() {
    let w = world(
        "[throttle]\nfree_failures = 2\nbase_delay_secs = 3\nmax_delay_secs = 3\n",
        "",
    );
    let e = enroll(&w.bus, ALICE).unwrap();
    wait_for_step_margin(12);
    for _ in 0..3 {
        assert_eq!(
            w.pam.login(&w.bus, ALICE, &line("000000")).unwrap().code,
            pam::AUTH_ERR
        );
    }
    // Now even the right code is not checked, and no prompt is shown.
    let right = oathtool(&e.secret, 0).unwrap();
    let held = w.pam.login(&w.bus, ALICE, &line(&right)).unwrap();
    assert_eq!(held.code, pam::AUTH_ERR);
    assert!(
        held.stderr.contains("Too many wrong codes") && !held.stderr.contains("Verification code"),
        "{held:?}"
    );
    assert!(status_json(&w, ALICE).contains("\"consecutive_failures\":3"));
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&right)).unwrap().code,
        pam::SUCCESS
    );
    assert!(status_json(&w, ALICE).contains("\"consecutive_failures\":0"));
    assert!(w.daemon.log().contains("outcome=throttled"));
}

#[test]
fn admin_unlock_ends_a_lockout_and_is_refused_to_users() {
    let w = world("[throttle]\nfree_failures = 0\nbase_delay_secs = 600\n", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line("000000")).unwrap().code,
        pam::AUTH_ERR
    );
    let right = oathtool(&e.secret, 0).unwrap();
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&right)).unwrap().code,
        pam::AUTH_ERR
    );

    let mut by_bob = w.bus.command_as(BOB, artifacts().twofold());
    by_bob.args(["admin", "unlock", ALICE]);
    let refused = output(by_bob).unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Only root"),
        "{refused:?}"
    );

    let mut by_root = w.bus.command(artifacts().twofold());
    by_root.args(["admin", "unlock", ALICE]);
    assert!(output(by_root).unwrap().status.success());
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&right)).unwrap().code,
        pam::SUCCESS
    );
    assert!(
        w.daemon
            .log()
            .contains("admin-unlock user=tf-alice admin_uid=0")
    );
}

#[test]
fn user_not_enrolled_gets_the_notice() {
    let w = world("", "");
    let r = w.pam.login(&w.bus, CAROL, b"").unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    assert!(r.stdout.contains("twofold setup"), "{r:?}");
    assert!(
        !r.stderr.contains("Verification code"),
        "not prompted: {r:?}"
    );
}

#[test]
fn daemon_down_refuses_with_failmode_secure_and_allows_with_safe() {
    let mut w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    w.daemon.kill();
    let code = oathtool(&e.secret, 0).unwrap();
    let secure = w.pam.login(&w.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(secure.code, pam::AUTHINFO_UNAVAIL, "{secure:?}");
    assert!(secure.stderr.contains("not available"), "{secure:?}");
    let explicit = PamService::new("failmode=secure")
        .unwrap()
        .login(&w.bus, ALICE, &line(&code))
        .unwrap();
    assert_eq!(explicit.code, pam::AUTHINFO_UNAVAIL);
    let safe = PamService::new("failmode=safe")
        .unwrap()
        .login(&w.bus, ALICE, &line(&code))
        .unwrap();
    assert_eq!(safe.code, pam::SUCCESS, "{safe:?}");
    // No bus at all behaves the same.
    drop(w.daemon);
    drop(w.bus);
    let bus = Bus::start().unwrap();
    let none = PamService::new("")
        .unwrap()
        .login(&bus, ALICE, &line(&code))
        .unwrap();
    assert_eq!(none.code, pam::AUTHINFO_UNAVAIL);
}

/// No bus running (its socket missing, or nothing listening on it) is the
/// "no daemon to ask" that failmode decides; see also the tests of a bus
/// that is full or silent, which refuse whatever the failmode.
#[test]
fn no_bus_follows_failmode() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale_socket");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let missing = format!("unix:path={}", dir.path().join("missing").display());
    let stale = format!("unix:path={}", stale.display());
    let secure = PamService::new("").unwrap();
    let safe = PamService::new("failmode=safe").unwrap();
    for address in [missing, stale] {
        let a = secure.login_at(&address, ALICE, b"123456\n").unwrap();
        assert_eq!(a.code, pam::AUTHINFO_UNAVAIL, "{address}: {a:?}");
        assert!(a.stderr.contains("not available"), "{address}: {a:?}");
        let a = safe.login_at(&address, ALICE, b"").unwrap();
        assert_eq!(a.code, pam::SUCCESS, "{address}: {a:?}");
        assert!(!a.stderr.contains("Verification code"), "{address}: {a:?}");
    }
}

/// An application whose conversation answers a prompt with an odd code
/// (here PAM_IGNORE, 25) gets PAM_CONV_ERR from the module: passed on, its
/// PAM_IGNORE would have left this stack (`required` twofold, then
/// pam_permit) to succeed without a code.
#[test]
fn a_conversation_that_returns_pam_ignore_does_not_skip_the_code() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    for returned in ["25", "0"] {
        let a = w
            .pam
            .login_with(&w.bus, ALICE, &["--no-answer", returned], b"")
            .unwrap();
        assert_eq!(a.code, pam::CONV_ERR, "{returned}: {a:?}");
        assert!(a.stderr.contains("Verification code"), "{returned}: {a:?}");
    }
    // Nothing was spent: the code still works.
    let ok = w
        .pam
        .login(&w.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}");
}

/// An installed twofoldd that fails to start (here its activation file's
/// program exits at once, as a daemon with a broken configuration does) is
/// a daemon that is there but broken, not the "no daemon" of
/// `no_bus_follows_failmode`: the login is refused whatever the failmode.
#[test]
fn a_twofoldd_that_fails_to_start_refuses_even_with_failmode_safe() {
    let services = tempfile::tempdir().unwrap();
    std::fs::write(
        services
            .path()
            .join(format!("{}.service", twofold_protocol::BUS_NAME)),
        format!(
            "[D-BUS Service]\nName={}\nExec=/bin/false\nUser=root\n",
            twofold_protocol::BUS_NAME
        ),
    )
    .unwrap();
    let bus = Bus::start_with(&format!(
        "<servicedir>{}</servicedir>",
        services.path().display()
    ))
    .unwrap();
    for options in ["", "failmode=safe"] {
        let a = PamService::new(options)
            .unwrap()
            .login(&bus, ALICE, b"")
            .unwrap();
        assert_eq!(a.code, pam::AUTH_ERR, "{options}: {a:?}");
        assert!(a.stderr.contains("not available"), "{options}: {a:?}");
        assert!(!a.stderr.contains("Verification code"), "{options}: {a:?}");
    }
    // The bus did try to start it, twice: this is the failed start, not a
    // bus without twofoldd.
    let log = std::fs::read_to_string(bus.dir().join("dbus-daemon.log")).unwrap();
    assert_eq!(
        log.matches("Activated service 'org.twofold.Twofold1' failed")
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn a_user_cannot_verify_another_users_code_but_may_verify_their_own() {
    let w = world("", "");
    let alice = enroll(&w.bus, ALICE).unwrap();
    let bob = enroll(&w.bus, BOB).unwrap();
    let code = oathtool(&alice.secret, 0).unwrap();
    let r = w.pam.login_as(&w.bus, BOB, ALICE, &line(&code)).unwrap();
    assert_eq!(r.code, pam::CRED_INSUFFICIENT, "{r:?}");
    assert!(
        w.daemon.log().contains("access-denied caller_uid="),
        "{}",
        w.daemon.log()
    );
    // The refused attempt did not spend alice's code.
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&code)).unwrap().code,
        pam::SUCCESS
    );
    // A screen locker running as bob checks bob.
    let own = w
        .pam
        .login_as(&w.bus, BOB, BOB, &line(&oathtool(&bob.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(own.code, pam::SUCCESS, "{own:?}");

    // Straight on the bus, naming alice as bob: every per-user method refuses.
    for (method, args) in [
        (
            "Verify",
            vec!["string:tf-alice", "string:123456", "string:x", "string:y"],
        ),
        (
            "BeginLogin",
            vec!["string:tf-alice", "string:x", "string:y"],
        ),
        (
            "EnrollAtLogin",
            vec!["string:tf-alice", "string:x", "string:y"],
        ),
        ("ConfirmAtLogin", vec!["string:tf-alice", "string:123456"]),
        ("AdminStatus", vec!["string:tf-alice"]),
        ("AdminUnlock", vec!["string:tf-alice"]),
        ("AdminReport", vec![]),
        ("AdminReportHosts", vec![]),
        ("AdminReset", vec!["string:tf-alice"]),
        ("AdminSetOverride", vec!["string:tf-alice", "string:exempt"]),
    ] {
        let mut c = w.bus.command_as(BOB, "dbus-send");
        c.args([
            "--system",
            "--print-reply",
            "--dest=org.twofold.Twofold1",
            "/org/twofold/Twofold1",
        ])
        .arg(format!("org.twofold.Twofold1.{method}"))
        .args(args);
        let out = output(c).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("org.twofold.Error.AccessDenied"),
            "{method}: {err}"
        );
    }
}

#[test]
fn secrets_are_root_only_and_a_user_enrolls_only_themselves() {
    let w = world("", "");
    enroll(&w.bus, ALICE).unwrap();
    let state = w.daemon.state_dir();
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.mode() & 0o777)
    };
    assert_eq!(mode(&state), (0, 0o700));
    assert_eq!(mode(&state.join("users")), (0, 0o700));
    assert_eq!(mode(&state.join("users/tf-alice.enrollment")), (0, 0o600));
    assert_eq!(mode(&state.join("users/tf-alice.journal")), (0, 0o600));
    let mut cat = w.bus.command_as(BOB, "cat");
    cat.arg(state.join("users/tf-alice.enrollment"));
    let out = output(cat).unwrap();
    assert!(!out.status.success(), "bob read alice's secret");

    // Bob's setup enrolls bob, whatever he wishes; alice is untouched.
    let before = std::fs::read(state.join("users/tf-alice.enrollment")).unwrap();
    enroll(&w.bus, BOB).unwrap();
    assert!(status_json(&w, BOB).contains("\"user\":\"tf-bob\""));
    assert_eq!(
        std::fs::read(state.join("users/tf-alice.enrollment")).unwrap(),
        before
    );
}

#[test]
fn bad_code_input_gets_a_clear_refusal_and_costs_no_attempt() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let long = vec![b'1'; 10_000];
    let cases: [(&str, &[u8]); 6] = [
        ("empty", b"\n"),
        ("non-digit", b"12a456\n"),
        ("too short", b"12345\n"),
        ("long", &long),
        ("not UTF-8", b"\xff\xfe\xfd123\n"),
        ("control characters", b"12\x1b[2J3456\n"),
    ];
    for (what, input) in cases {
        let r = w.pam.login(&w.bus, ALICE, input).unwrap();
        assert_eq!(r.code, pam::AUTH_ERR, "{what}: {r:?}");
        assert!(r.stderr.contains("authenticator app"), "{what}: {r:?}");
    }
    assert!(status_json(&w, ALICE).contains("\"consecutive_failures\":0"));
    // The conversation ending without an answer is a conversation error.
    let eof = w.pam.login(&w.bus, ALICE, b"").unwrap();
    assert_eq!(eof.code, pam::CONV_ERR, "{eof:?}");
    assert_eq!(
        w.pam
            .login(&w.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
            .unwrap()
            .code,
        pam::SUCCESS
    );
}

#[test]
fn odd_user_names_are_unknown_users() {
    use std::os::unix::ffi::OsStrExt;
    let w = world("", "");
    for name in [
        "tf-nobody-here",
        "../../etc/shadow",
        "a b",
        "-rf",
        &"x".repeat(300),
    ] {
        let r = w.pam.login(&w.bus, name, b"123456\n").unwrap();
        assert_eq!(r.code, pam::USER_UNKNOWN, "{name:?}: {r:?}");
    }
    // Root's login for a name that is no account is a decision the daemon
    // logs, with the name's length only: it may be a password typed at
    // `login:`.
    let log = w.daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("outcome=refused-unknown-user"))
        .unwrap_or_else(|| panic!("no refused-unknown-user line in {log}"));
    assert!(
        line.contains("login user-argument-bytes=14 service="),
        "{line}"
    );
    assert!(!log.contains("tf-nobody-here"), "{log}");
    let non_utf8 = std::ffi::OsStr::from_bytes(b"tf-\xff\xfe");
    assert_eq!(
        w.pam.login(&w.bus, non_utf8, b"123456\n").unwrap().code,
        pam::USER_UNKNOWN
    );
}

#[test]
fn no_thread_is_left_in_the_host_after_pam_end() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let (r, before, after) = w
        .pam
        .login_counting_threads(&w.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    assert_eq!(before, after, "threads before pam_start and after pam_end");
}

#[test]
fn backup_codes_can_be_replaced_after_a_code() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.arg("backup-codes");
    let r = run_with_input(c, &line(&oathtool(&e.secret, 0).unwrap())).unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    let new: Vec<&str> = r.stdout.lines().filter(|l| l.len() == 11).collect();
    assert_eq!(new.len(), 10, "{r:?}");
    assert_eq!(
        w.pam
            .login(&w.bus, ALICE, &line(&e.backup_codes[0]))
            .unwrap()
            .code,
        pam::AUTH_ERR
    );
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(new[0])).unwrap().code,
        pam::SUCCESS
    );
}

#[test]
fn no_code_or_secret_reaches_the_log() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let code = oathtool(&e.secret, 0).unwrap();
    w.pam.login(&w.bus, ALICE, &line(&code)).unwrap();
    w.pam
        .login(&w.bus, ALICE, &line(&e.backup_codes[0]))
        .unwrap();
    w.pam.login(&w.bus, ALICE, b"999999\n").unwrap();
    let log = w.daemon.log();
    assert!(log.contains("outcome=accepted-backup-code"), "{log}");
    let confirming = oathtool(&e.secret, -1).unwrap();
    let plain_backup = e.backup_codes[0].replace('-', "");
    for secret in [
        e.secret.as_str(),
        &code,
        &confirming,
        &e.backup_codes[0],
        &plain_backup,
        "999999",
    ] {
        assert!(!log.contains(secret), "log holds {secret}");
    }
}

/// A caller other than root that passes codes where a user name goes (by
/// mistake or to plant them in the log) is refused, and the refusal's log
/// line holds its uid and the method, not the text it passed.
#[test]
fn codes_passed_as_a_user_name_do_not_reach_the_log() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let code = oathtool(&e.secret, 0).unwrap();
    let plain_backup = e.backup_codes[0].replace('-', "");
    for typed in [code.as_str(), &e.backup_codes[0], &plain_backup] {
        used_secret(typed);
        let rhost = "string:192.0.2.7";
        let service = "string:sshd";
        let user = format!("string:{typed}");
        for (method, args) in [
            ("BeginLogin", vec![user.as_str(), service, rhost]),
            (
                "Verify",
                vec![user.as_str(), "string:123456", service, rhost],
            ),
            ("EnrollAtLogin", vec![user.as_str(), service, rhost]),
        ] {
            let (ok, out) = w.bus.dbus_send(Some(BOB), method, &args);
            assert!(!ok && out.contains("AccessDenied"), "{method}: {out}");
        }
    }
    let log = w.daemon.log();
    let bob_uid = test_user(BOB).unwrap();
    assert!(
        log.contains(&format!(
            "access-denied caller_uid={bob_uid} method=BeginLogin user-argument-bytes=6"
        )),
        "{log}"
    );
    for secret in [code.as_str(), &e.backup_codes[0], &plain_backup] {
        assert!(!log.contains(secret), "log holds {secret}: {log}");
    }
}

#[test]
fn a_setuid_host_ignores_the_bus_address_its_caller_sets() {
    let w = world("", "");
    let bob = enroll(&w.bus, BOB).unwrap();
    // Bob runs a setuid program (like su) with DBUS_SYSTEM_BUS_ADDRESS pointing at a bus
    // of his choosing; here it is even the bus where a real twofoldd would accept his code.
    let r = w
        .pam
        .login_setuid(&w.bus, BOB, BOB, &line(&oathtool(&bob.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(
        r.code,
        pam::AUTHINFO_UNAVAIL,
        "the module must only use the real system bus: {r:?}"
    );
    assert!(
        !w.daemon.log().contains("outcome=accepted"),
        "{}",
        w.daemon.log()
    );
}

#[test]
fn a_sufficient_line_never_lets_in_a_user_without_a_verified_code() {
    let w = world("", "");
    let alice = enroll(&w.bus, ALICE).unwrap();
    let module = artifacts().module.display().to_string();
    let stack = format!("auth sufficient {module}\nauth required pam_deny.so\n");
    let sufficient = PamService::with_stack(&stack).unwrap();
    // Carol is not enrolled: the notice, then the rest of the stack decides (pam_deny).
    let carol = sufficient.login(&w.bus, CAROL, b"").unwrap();
    assert_eq!(carol.code, pam::AUTH_ERR, "{carol:?}");
    assert!(carol.stdout.contains("twofold setup"), "{carol:?}");
    // The daemon down with failmode=safe does not let anyone in either.
    let safe = PamService::with_stack(&format!(
        "auth sufficient {module} failmode=safe\nauth required pam_deny.so\n"
    ))
    .unwrap();
    // Alice with a valid code is let in by the sufficient line.
    let ok = sufficient
        .login(&w.bus, ALICE, &line(&oathtool(&alice.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}");
    drop(w.daemon);
    let down = safe
        .login(&w.bus, ALICE, &line(&oathtool(&alice.secret, 1).unwrap()))
        .unwrap();
    assert_eq!(down.code, pam::AUTH_ERR, "{down:?}");
}

#[test]
fn a_second_name_for_the_same_uid_shares_its_enrollment() {
    let w = world("", "");
    let alice = enroll(&w.bus, ALICE).unwrap();
    test_alias("tf-alice-alias", ALICE).unwrap();
    // Not "not enrolled": the alias is asked for alice's code, and only that works.
    let wrong = w.pam.login(&w.bus, "tf-alice-alias", b"000000\n").unwrap();
    assert_eq!(wrong.code, pam::AUTH_ERR, "{wrong:?}");
    let code = oathtool(&alice.secret, 0).unwrap();
    assert_eq!(
        w.pam
            .login(&w.bus, "tf-alice-alias", &line(&code))
            .unwrap()
            .code,
        pam::SUCCESS
    );
    // The same step is now spent for alice too.
    assert_eq!(
        w.pam.login(&w.bus, ALICE, &line(&code)).unwrap().code,
        pam::AUTH_ERR
    );
    assert!(
        w.daemon
            .log()
            .contains("alias user=tf-alice-alias canonical=tf-alice"),
        "{}",
        w.daemon.log()
    );
}

/// `twofold admin report` goes by uid, as logins do: the alias's row shows
/// the enrollment its login is asked for, marked as an alias.
#[test]
fn the_report_shows_an_alias_with_the_enrollment_of_its_uid() {
    let w = world("", "");
    enroll(&w.bus, ALICE).unwrap();
    test_alias("tf-alice-alias", ALICE).unwrap();
    let report = |args: &[&str]| {
        let out = w.bus.twofold(args).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let json = report(&["admin", "report", "--json"]);
    let row = |user: &str| {
        json.lines()
            .find(|l| l.contains(&format!("\"user\":\"{user}\"")))
            .unwrap_or_else(|| panic!("no {user} in {json}"))
            .to_string()
    };
    let alias = row("tf-alice-alias");
    assert!(alias.contains("\"enrolled\":true"), "{alias}");
    assert!(alias.contains("\"method\":\"totp\""), "{alias}");
    assert!(alias.contains("\"alias_of\":\"tf-alice\""), "{alias}");
    assert!(row(ALICE).contains("\"alias_of\":\"\""), "{}", row(ALICE));
    let table = report(&["admin", "report"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("tf-alice-alias "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(" yes, as tf-alice "), "{table}");
    assert!(
        table.contains(" alias"),
        "the summary counts aliases apart: {table}"
    );
}

#[test]
fn an_admin_group_member_may_unlock_users_but_not_root() {
    test_group("tf-admins", &[CAROL]).unwrap();
    let w = world(
        "admin_group = \"tf-admins\"\n[throttle]\nfree_failures = 0\nbase_delay_secs = 600\n",
        "",
    );
    enroll(&w.bus, BOB).unwrap();
    assert_eq!(
        w.pam.login(&w.bus, BOB, b"000000\n").unwrap().code,
        pam::AUTH_ERR
    );
    let unlock = |as_user: &str, target: &str| {
        let mut c = w.bus.command_as(as_user, artifacts().twofold());
        c.args(["admin", "unlock", target]);
        output(c).unwrap()
    };
    let by_carol = unlock(CAROL, BOB);
    assert!(by_carol.status.success(), "{by_carol:?}");
    let root = unlock(CAROL, "root");
    assert!(!root.status.success());
    assert!(
        String::from_utf8_lossy(&root.stderr)
            .contains("Only root may unlock, reset or set an override for root"),
        "{root:?}"
    );
    let by_bob = unlock(BOB, BOB);
    assert!(!by_bob.status.success());
}

/// Every sshd login is root's, so a burst of logins can fill the bus's
/// connections per uid for a moment. A login then waits for a free slot
/// (bounded by `BUS_FULL_WAIT`) instead of refusing a correct code; a bus
/// that stays full fails closed after that bound.
#[test]
fn a_login_waits_while_the_bus_is_full_and_fails_closed_if_it_stays_full() {
    use pam_twofold::daemon::BUS_FULL_WAIT;
    test_user(ALICE).unwrap();
    // Root's slots: twofoldd's connection and the two the test holds.
    let bus = Bus::start_with(r#"<limit name="max_connections_per_user">3</limit>"#).unwrap();
    let _daemon = Daemon::start(&bus, "").unwrap();
    // The bus path (logins on the socket never meet the bus's limits).
    bus.remove_login_socket().unwrap();
    let pam = PamService::new("").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    let held = [
        bus.hold_connection().unwrap(),
        bus.hold_connection().unwrap(),
    ];
    assert!(
        bus.hold_connection().is_err(),
        "the bus took a fourth connection from root: the limit is not in force"
    );

    // Full for longer than the bound: refused as "service unavailable", and
    // only after waiting out the bound.
    let t = std::time::Instant::now();
    let a = pam.login(&bus, ALICE, &line(&e.backup_codes[0])).unwrap();
    assert_eq!(a.code, pam::AUTHINFO_UNAVAIL, "{a:?}");
    assert!(
        t.elapsed() >= BUS_FULL_WAIT / 2,
        "gave up after {:?}, without waiting for a slot",
        t.elapsed()
    );

    // Full for a moment: the same code gets in once a slot is free.
    let [first, second] = held;
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        drop(first);
    });
    let a = pam.login(&bus, ALICE, &line(&e.backup_codes[0])).unwrap();
    release.join().unwrap();
    drop(second);
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
}

/// A bus that takes the connection and then says nothing (here the real
/// dbus-daemon, stopped) holds a login for `HANDSHAKE_TIMEOUT`, not for good,
/// and refuses it even under failmode=safe: something is there, so this is
/// not the "no daemon" that failmode=safe lets in on the password alone.
#[test]
fn a_silent_bus_refuses_the_login_after_the_handshake_timeout() {
    use pam_twofold::daemon::HANDSHAKE_TIMEOUT;
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    // The bus path: on the socket a stopped bus is not in the way (socket.rs).
    w.bus.remove_login_socket().unwrap();
    let safe = PamService::new("failmode=safe").unwrap();
    let bus_pid = w.bus.pid() as libc::pid_t;
    let signal = move |sig| {
        // SAFETY: kill(2) on the pid of the dbus-daemon this test started.
        let rc = unsafe { libc::kill(bus_pid, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    };
    signal(libc::SIGSTOP);
    // Should the module wait for good, the bus wakes up later and the
    // login ends (in time to be seen as late) instead of hanging the suite.
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let _ = wait.recv_timeout(HANDSHAKE_TIMEOUT * 3);
        signal(libc::SIGCONT);
    });
    let t = std::time::Instant::now();
    let a = safe.login_counting_threads(&w.bus, ALICE, &line(&e.backup_codes[0]));
    let waited = t.elapsed();
    drop(done);
    watchdog.join().unwrap();
    let (a, threads_before, threads_after) = a.unwrap();
    assert_eq!(a.code, pam::AUTHINFO_UNAVAIL, "{a:?}");
    // The abandoned handshake and its timer leave nothing running in the host.
    assert_eq!(
        threads_before, threads_after,
        "threads before pam_start and after pam_end"
    );
    assert!(a.stderr.contains("not available"), "{a:?}");
    assert!(
        waited >= HANDSHAKE_TIMEOUT && waited < HANDSHAKE_TIMEOUT * 3,
        "refused after {waited:?}"
    );
    // The same code gets in once the bus answers again: it was not spent.
    let a = safe
        .login(&w.bus, ALICE, &line(&e.backup_codes[0]))
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
}

/// A `BeginLogin` that fails forgets the account the connection's earlier
/// `BeginLogin` resolved: once the account is gone, the connection's next
/// `Verify` of that name finds no such user instead of reusing it.
#[test]
fn a_failed_begin_login_forgets_the_account_resolved_before() {
    use twofold_protocol::{TwofoldError, TwofoldProxy};
    const GONE: &str = "tf-gone";
    let w = world("", "");
    test_user(GONE).unwrap();
    let gone = enroll(&w.bus, GONE).unwrap();
    let (second, verify) = zbus::block_on(async {
        let conn = w.bus.connect().await?;
        let proxy = TwofoldProxy::new(&conn).await?;
        proxy
            .begin_login(GONE, "twofold-test", DEFAULT_RHOST)
            .await?;
        remove_test_user(GONE)?;
        let second = proxy.begin_login(GONE, "twofold-test", DEFAULT_RHOST).await;
        let verify = proxy
            .verify(GONE, &gone.backup_codes[0], "twofold-test", DEFAULT_RHOST)
            .await;
        drop(conn);
        anyhow::Ok((second, verify))
    })
    .unwrap();
    assert!(
        matches!(second, Err(TwofoldError::UnknownUser(_))),
        "{second:?}"
    );
    assert!(
        matches!(verify, Err(TwofoldError::UnknownUser(_))),
        "the Verify reused the forgotten account: {verify:?}"
    );
}

/// The account a root connection's `BeginLogin` resolved is that
/// connection's alone: while it is open, another user's `Verify` of the
/// same name is checked as any call, and refused.
#[test]
fn a_resolved_login_is_no_other_callers() {
    use twofold_protocol::TwofoldProxy;
    let w = world("", "");
    let alice = enroll(&w.bus, ALICE).unwrap();
    test_user(BOB).unwrap();
    let by_bob = zbus::block_on(async {
        let conn = w.bus.connect().await?;
        let proxy = TwofoldProxy::new(&conn).await?;
        proxy
            .begin_login(ALICE, "twofold-test", DEFAULT_RHOST)
            .await?;
        // Bob, on his own connection, verifies as Alice while root's is
        // open: straight on the bus, as the module would ask BeginLogin first.
        let code = format!("string:{}", alice.backup_codes[0]);
        let by_bob = w.bus.dbus_send(
            Some(BOB),
            "Verify",
            &[
                &format!("string:{ALICE}"),
                &code,
                "string:twofold-test",
                "string:",
            ],
        );
        drop(conn);
        anyhow::Ok(by_bob)
    })
    .unwrap();
    let (ok, reply) = by_bob;
    assert!(
        !ok && reply.contains("org.twofold.Error.AccessDenied"),
        "{reply}"
    );
    // Alice's code was not spent by the refused call.
    let a = w
        .pam
        .login(&w.bus, ALICE, &line(&alice.backup_codes[0]))
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
}

/// The module calls twofoldd's login methods by name (no proxy): each of
/// those names is a method twofoldd serves. So is every other name the
/// protocol lists (the daemon logs by them), and it serves no other.
#[test]
fn twofoldd_serves_every_method_the_module_calls() {
    use twofold_protocol::method::{ALL, LOGIN};
    let w = world("", "");
    let xml = zbus::block_on(async {
        let conn = w.bus.connect().await?;
        let introspectable = zbus::fdo::IntrospectableProxy::builder(&conn)
            .destination(twofold_protocol::BUS_NAME)
            .path(twofold_protocol::OBJECT_PATH)
            .build()
            .await?;
        anyhow::Ok(introspectable.introspect().await?)
    })
    .unwrap();
    for method in LOGIN.iter().chain(ALL) {
        assert!(
            xml.contains(&format!(r#"<method name="{method}">"#)),
            "{method} is not in twofoldd's interface:\n{xml}"
        );
    }
    let interface = format!(r#"<interface name="{}">"#, twofold_protocol::INTERFACE);
    let ours = xml.split(&interface).nth(1).unwrap_or_default();
    let ours = ours.split("</interface>").next().unwrap_or_default();
    assert_eq!(ours.matches("<method name=").count(), ALL.len(), "{xml}");
}

/// What a module meets when the running twofoldd is of another version: a
/// method it does not serve, or one it serves with other arguments, come
/// back as UnknownMethod and InvalidArgs, which the module names as a
/// version mismatch (`pam-module/src/steps.rs` `version_mismatch`, and the
/// message it shows, in the module's unit tests).
#[test]
fn another_versions_calls_come_back_as_unknown_method_or_invalid_args() {
    let w = world("", "");
    let names = zbus::block_on(async {
        let conn = w.bus.connect().await?;
        let mut names = Vec::new();
        for (method, body) in [
            ("EnrollAtLoginV0", ("a", "b")),
            (twofold_protocol::method::ENROLL_AT_LOGIN, ("a", "b")),
        ] {
            let reply = conn
                .call_method(
                    Some(twofold_protocol::BUS_NAME),
                    twofold_protocol::OBJECT_PATH,
                    Some(twofold_protocol::INTERFACE),
                    method,
                    &body,
                )
                .await;
            match reply {
                Err(zbus::Error::MethodError(name, _, _)) => names.push(name.to_string()),
                Err(zbus::Error::FDO(e)) => {
                    names.push(zbus::DBusError::name(&*e).to_string());
                }
                other => anyhow::bail!("{method}: {other:?}"),
            }
        }
        anyhow::Ok(names)
    })
    .unwrap();
    assert_eq!(
        names,
        [
            "org.freedesktop.DBus.Error.UnknownMethod",
            "org.freedesktop.DBus.Error.InvalidArgs"
        ]
    );
}

/// twofoldd reuses the account a connection's `BeginLogin` resolved for that
/// connection's `Verify` of the same user (one login), and for nothing else:
/// on one root connection, a `Verify` that names another user is that user's.
#[test]
fn one_connection_verifies_only_the_user_each_call_names() {
    use twofold_protocol::{TwofoldProxy, VerifyOutcome};
    let w = world("", "");
    let alice = enroll(&w.bus, ALICE).unwrap();
    let bob = enroll(&w.bus, BOB).unwrap();
    let outcomes = zbus::block_on(async {
        let conn = w.bus.connect().await?;
        let proxy = TwofoldProxy::new(&conn).await?;
        let verify = async |user: &str, code: &str| {
            proxy
                .verify(user, code, "twofold-test", DEFAULT_RHOST)
                .await
                .map(|reply| reply.outcome)
        };
        proxy
            .begin_login(ALICE, "twofold-test", DEFAULT_RHOST)
            .await?;
        // Bob's backup code, named as Bob after Alice's BeginLogin: Bob's.
        let as_bob = verify(BOB, &bob.backup_codes[0]).await?;
        // Bob's next code, named as Alice: not Alice's, so wrong.
        let as_alice = verify(ALICE, &bob.backup_codes[1]).await?;
        let own = verify(ALICE, &alice.backup_codes[0]).await?;
        drop(conn);
        anyhow::Ok([as_bob, as_alice, own])
    })
    .unwrap();
    assert_eq!(
        outcomes,
        [
            VerifyOutcome::AcceptedBackupCode,
            VerifyOutcome::Wrong,
            VerifyOutcome::AcceptedBackupCode
        ]
    );
}

/// A state the daemon cannot read refuses the login (never lets it in,
/// never reads as "not enrolled"), and the daemon logs the fault once, with
/// its detail for the administrator and without the code typed.
#[test]
fn a_damaged_state_refuses_the_login_and_is_logged_once() {
    let w = world("", "");
    let e = enroll(&w.bus, ALICE).unwrap();
    let file = w
        .daemon
        .state_dir()
        .join(format!("users/{ALICE}.enrollment"));
    std::fs::write(&file, b"not an enrollment").unwrap();
    let code = oathtool(&e.secret, 0).unwrap();
    let r = w.pam.login(&w.bus, ALICE, &line(&code)).unwrap();
    assert_ne!(r.code, pam::SUCCESS, "{r:?}");
    assert!(r.stderr.contains("Ask your administrator"), "{r:?}");
    let log = w.daemon.log();
    let faults: Vec<&str> = log.lines().filter(|l| l.contains("state error")).collect();
    assert_eq!(faults.len(), 1, "{log}");
    assert!(faults[0].contains(ALICE), "{log}");
    assert!(!log.contains(&code), "{log}");
}
