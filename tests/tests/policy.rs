//! The enforcement policy end to end: a real twofoldd with a policy file, real
//! Unix groups, logins through libpam and the built module, `twofold admin`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;
use twofold_e2e::*;

const ALICE: &str = "tf-alice"; // tf-staff
const BOB: &str = "tf-bob"; // tf-staff, tf-ftp
const CAROL: &str = "tf-carol"; // tf-robots
const DAVE: &str = "tf-dave"; // no twofold group

/// Many wrong codes are used to show that a prompt came; do not throttle them.
const LENIENT: &str = "[throttle]\nfree_failures = 50\nlockout_after = 100\n";

fn setup_accounts() {
    for user in [ALICE, BOB, CAROL, DAVE] {
        test_user(user).unwrap();
    }
    test_group("tf-staff", &[ALICE, BOB]).unwrap();
    test_group("tf-ftp", &[BOB]).unwrap();
    test_group("tf-robots", &[CAROL]).unwrap();
}

struct World {
    bus: Bus,
    daemon: Daemon,
    pam: PamService,
}

fn world(policy: &str) -> World {
    setup_accounts();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start_with_policy(&bus, LENIENT, policy).unwrap();
    World {
        bus,
        daemon,
        pam: PamService::service("sshd").unwrap(),
    }
}

fn line(code: &str) -> Vec<u8> {
    format!("{code}\n").into_bytes()
}

fn prompted(a: &Attempt) -> bool {
    a.stderr.contains("Verification code: ")
}

/// `twofold ARGS` as `user` (root when `None`).
fn twofold(w: &World, user: Option<&str>, args: &[&str]) -> std::process::Output {
    match user {
        Some(u) => {
            let mut c = w.bus.command_as(u, artifacts().twofold());
            c.args(args);
            output(c).unwrap()
        }
        None => w.bus.twofold(args).unwrap(),
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn utc_date(relative: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "+%F", "-d", relative])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn reload(w: &World, policy: &str) -> std::process::Output {
    w.daemon.write_policy(policy).unwrap();
    twofold(w, None, &["admin", "reload"])
}

const SUPPORT: &str = "Help: call the desk on 555-0100.";

#[test]
fn every_mode_for_enrolled_and_unenrolled_users() {
    let w = world("[default]\nmode = \"exempt\"\n");
    enroll(&w.bus, ALICE).unwrap();
    for mode in ["exempt", "optional", "recommend", "require"] {
        let policy = format!(
            "support = \"{SUPPORT}\"\nunenrolled_require = \"refuse\"\n[default]\nmode = \"{mode}\"\n"
        );
        let out = reload(&w, &policy);
        assert!(out.status.success(), "{}", text(&out));
        // Enrolled: asked for a code, except when exempt (a wrong code shows the prompt was real).
        let enrolled = w.pam.login(&w.bus, ALICE, b"000000\n").unwrap();
        let unenrolled = w.pam.login(&w.bus, DAVE, b"").unwrap();
        match mode {
            "exempt" => {
                assert_eq!(
                    (enrolled.code, prompted(&enrolled)),
                    (pam::SUCCESS, false),
                    "{mode}: {enrolled:?}"
                );
                assert_eq!(
                    (unenrolled.code, prompted(&unenrolled)),
                    (pam::SUCCESS, false),
                    "{mode}: {unenrolled:?}"
                );
                assert!(unenrolled.stdout.is_empty(), "{unenrolled:?}");
            }
            _ => {
                assert_eq!(
                    (enrolled.code, prompted(&enrolled)),
                    (pam::AUTH_ERR, true),
                    "{mode}: {enrolled:?}"
                );
                assert!(
                    enrolled.stderr.contains(SUPPORT),
                    "support line on refusals: {enrolled:?}"
                );
            }
        }
        match mode {
            "optional" => {
                assert_eq!(unenrolled.code, pam::SUCCESS, "{unenrolled:?}");
                assert!(
                    unenrolled.stdout.is_empty() && !prompted(&unenrolled),
                    "{unenrolled:?}"
                );
            }
            "recommend" => {
                assert_eq!(unenrolled.code, pam::SUCCESS, "{unenrolled:?}");
                assert!(
                    unenrolled.stdout.contains("twofold setup"),
                    "{unenrolled:?}"
                );
            }
            "require" => {
                assert_eq!(unenrolled.code, pam::AUTH_ERR, "{unenrolled:?}");
                assert!(
                    unenrolled.stderr.contains("is required")
                        && unenrolled.stderr.contains(SUPPORT),
                    "{unenrolled:?}"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn a_host_whose_locale_is_not_utf8_gets_the_qr_code_in_ascii() {
    let w = world("[default]\nmode = \"require\"\n");
    let qr_rows = |text: &str, dark: char| {
        text.lines()
            .filter(|l| l.chars().count() > 40 && l.chars().all(|c| c == ' ' || c == dark))
            .count()
    };
    // No answer: the conversation ends at the code prompt, nothing is stored.
    let ascii = w.pam.login_in_locale(&w.bus, DAVE, "C", b"").unwrap();
    assert!(qr_rows(&ascii.stdout, '#') > 20, "{ascii:?}");
    assert!(!ascii.stdout.contains('█') && !ascii.stdout.contains("Type A"));
    assert!(ascii.stdout.contains("Key URI: otpauth://"), "{ascii:?}");
    let unicode = w.pam.login_in_locale(&w.bus, DAVE, "C.UTF-8", b"").unwrap();
    assert!(
        unicode.stdout.contains('█') && unicode.stdout.contains("Type A"),
        "{unicode:?}"
    );
    assert_eq!(qr_rows(&unicode.stdout, '#'), 0);
}

#[test]
fn require_enrolls_inside_the_login_and_the_next_login_asks_for_a_code() {
    let w = world("[default]\nmode = \"require\"\n");
    let (first, secret) = w.pam.login_enrolling(&w.bus, DAVE).unwrap();
    assert_eq!(first.code, pam::SUCCESS, "{first:?}");
    // Info messages go to stdout, prompts (which carry the backup codes) to stderr.
    let seen = format!("{}{}", first.stdout, first.stderr);
    for shown in [
        "is required",
        "otpauth://totp/twofold:tf-dave",
        "Or enter this key by hand",
        "now set up",
        "10. ",
        "Press Enter once you have written them down",
    ] {
        assert!(seen.contains(shown), "{shown:?} not shown: {first:?}");
    }
    assert!(first.stdout.contains('█'), "QR code shown");
    let status = twofold(&w, None, &["admin", "status", DAVE, "--json"]);
    assert!(
        text(&status).contains("\"enrolled\":true"),
        "{}",
        text(&status)
    );
    let next = w
        .pam
        .login(&w.bus, DAVE, &line(&oathtool(&secret, 1).unwrap()))
        .unwrap();
    assert_eq!(
        (next.code, prompted(&next)),
        (pam::SUCCESS, true),
        "{next:?}"
    );
    // The line that ends the enrollment names the login's service and remote
    // host, as the lines before it do.
    let log = w.daemon.log();
    let done = log
        .lines()
        .find(|l| l.contains("outcome=enrolled-at-login"))
        .expect("an enrolled-at-login line");
    assert!(
        done.contains("service=sshd") && done.contains(&format!("rhost={DEFAULT_RHOST}")),
        "{done}"
    );
    // The key and the backup codes went to the user only, never to the log.
    let log = w.daemon.log();
    assert!(!log.contains(&secret), "the key is in the log");
    let codes: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.trim().split_once(". "))
        .map(|(_, c)| c)
        .filter(|c| c.len() == 11)
        .collect();
    assert_eq!(codes.len(), 10, "{seen}");
    for code in codes {
        assert!(
            !log.contains(code) && !log.contains(&code.replace('-', "")),
            "backup code {code} in the log"
        );
    }
}

#[test]
fn enrollment_at_login_never_stores_a_wrong_code() {
    let w = world("[default]\nmode = \"require\"\n");
    let r = w
        .pam
        .login(&w.bus, DAVE, b"000000\n111111\n222222\n")
        .unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    let status = twofold(&w, None, &["admin", "status", DAVE, "--json"]);
    assert!(
        text(&status).contains("\"enrolled\":false"),
        "{}",
        text(&status)
    );
}

const RULES: &str = r#"
unenrolled_require = "refuse"

[default]
mode = "optional"

[[rule]]
name = "ftp"
groups = ["tf-ftp"]
services = ["vsftpd"]
mode = "exempt"

[[rule]]
name = "automation"
groups = ["tf-robots"]
mode = "exempt"

[[rule]]
name = "staff"
groups = ["tf-staff"]
mode = "require"
"#;

#[test]
fn precedence_first_matching_rule_and_a_vsftpd_only_exemption() {
    let w = world(RULES);
    let vsftpd = PamService::service("vsftpd").unwrap();
    // Bob is in tf-ftp and tf-staff: exempt for vsftpd, required (and not enrolled) for sshd.
    let ftp = vsftpd.login(&w.bus, BOB, b"").unwrap();
    assert_eq!((ftp.code, prompted(&ftp)), (pam::SUCCESS, false), "{ftp:?}");
    let ssh = w.pam.login(&w.bus, BOB, b"").unwrap();
    assert_eq!(ssh.code, pam::AUTH_ERR, "{ssh:?}");
    // Carol (tf-robots) is exempt everywhere; Dave falls to the default (optional).
    assert_eq!(w.pam.login(&w.bus, CAROL, b"").unwrap().code, pam::SUCCESS);
    assert_eq!(vsftpd.login(&w.bus, DAVE, b"").unwrap().code, pam::SUCCESS);
    // An override comes before every rule.
    assert!(
        twofold(&w, None, &["admin", "exempt", BOB])
            .status
            .success()
    );
    assert_eq!(w.pam.login(&w.bus, BOB, b"").unwrap().code, pam::SUCCESS);
    assert!(twofold(&w, None, &["admin", "clear", BOB]).status.success());
    assert_eq!(w.pam.login(&w.bus, BOB, b"").unwrap().code, pam::AUTH_ERR);
    assert!(
        w.daemon
            .log()
            .contains("admin-override user=tf-bob mode=exempt admin_uid=0")
    );

    let explain = text(&twofold(
        &w,
        None,
        &["admin", "explain", BOB, "--service", "sshd"],
    ));
    for expected in [
        "rule \"ftp\": only for service vsftpd",
        "rule \"staff\": group tf-staff matches",
        "outcome: refuse",
    ] {
        assert!(
            explain.contains(expected),
            "{expected:?} missing from:\n{explain}"
        );
    }
    let explain = text(&twofold(
        &w,
        None,
        &["admin", "explain", BOB, "--service", "vsftpd"],
    ));
    assert!(
        explain.contains("rule \"ftp\": group tf-ftp matches")
            && explain.contains("outcome: no code needed"),
        "{explain}"
    );
    let explain = text(&twofold(&w, None, &["admin", "explain", DAVE]));
    assert!(
        explain.contains("no rule matched: default rule") && explain.contains("mode today"),
        "{explain}"
    );
}

#[test]
fn the_schedule_switches_on_its_dates_and_counts_the_days() {
    let (yesterday, tomorrow) = (utc_date("yesterday"), utc_date("tomorrow"));
    let policy = format!(
        "unenrolled_require = \"refuse\"\n[default]\nmode = \"optional\"\nschedule = [ {{ from = {yesterday}, mode = \"recommend\" }}, {{ from = {tomorrow}, mode = \"require\" }} ]\n"
    );
    let w = world(&policy);
    let before = w.pam.login(&w.bus, DAVE, b"").unwrap();
    assert_eq!(before.code, pam::SUCCESS, "{before:?}");
    assert!(
        before
            .stdout
            .contains(&format!("from {tomorrow} (1 day from now)")),
        "{before:?}"
    );
    let status = text(&twofold(&w, Some(DAVE), &["status", "--json"]));
    assert!(
        status.contains(&format!("\"enforcement_date\":\"{tomorrow}\""))
            && status.contains("\"days_left\":1"),
        "{status}"
    );
    let policy = format!(
        "unenrolled_require = \"refuse\"\n[default]\nmode = \"optional\"\nschedule = [ {{ from = {yesterday}, mode = \"require\" }} ]\n"
    );
    assert!(reload(&w, &policy).status.success());
    assert_eq!(w.pam.login(&w.bus, DAVE, b"").unwrap().code, pam::AUTH_ERR);
}

#[test]
fn a_grace_period_starts_at_the_first_prompt() {
    let w =
        world("unenrolled_require = \"refuse\"\n[default]\nmode = \"require\"\ngrace_days = 3\n");
    for _ in 0..2 {
        let r = w.pam.login(&w.bus, DAVE, b"").unwrap();
        assert_eq!(r.code, pam::SUCCESS, "{r:?}");
        assert!(r.stdout.contains("You have 3 more days"), "{r:?}");
    }
    assert!(w.daemon.log().contains("outcome=allowed-grace-period"));
    // An admin override to require ends the grace at once (it has no grace days).
    assert!(
        twofold(&w, None, &["admin", "require", DAVE])
            .status
            .success()
    );
    assert_eq!(w.pam.login(&w.bus, DAVE, b"").unwrap().code, pam::AUTH_ERR);
}

#[test]
fn a_remembered_device_skips_the_code_for_its_host_only_until_it_expires() {
    let w = world("remember_device_secs = 4\n[default]\nmode = \"recommend\"\n");
    let e = enroll(&w.bus, ALICE).unwrap();
    let (a, b) = ("198.51.100.20", "198.51.100.21");
    let first = w
        .pam
        .login_from(&w.bus, ALICE, a, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(first.code, pam::SUCCESS, "{first:?}");
    let again = w.pam.login_from(&w.bus, ALICE, a, b"").unwrap();
    assert_eq!(
        (again.code, prompted(&again)),
        (pam::SUCCESS, false),
        "{again:?}"
    );
    let other = w.pam.login_from(&w.bus, ALICE, b, b"000000\n").unwrap();
    assert_eq!(
        (other.code, prompted(&other)),
        (pam::AUTH_ERR, true),
        "{other:?}"
    );
    let devices = text(&twofold(&w, Some(ALICE), &["devices"]));
    assert!(devices.contains(a) && !devices.contains(b), "{devices}");
    std::thread::sleep(Duration::from_millis(4200));
    let expired = w.pam.login_from(&w.bus, ALICE, a, b"000000\n").unwrap();
    assert_eq!(
        (expired.code, prompted(&expired)),
        (pam::AUTH_ERR, true),
        "{expired:?}"
    );
}

#[test]
fn admins_and_users_can_forget_remembered_devices() {
    let w = world("remember_device_secs = 600\n[default]\nmode = \"recommend\"\n");
    let e = enroll(&w.bus, ALICE).unwrap();
    let host = "198.51.100.30";
    w.pam
        .login_from(&w.bus, ALICE, host, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert!(!prompted(
        &w.pam.login_from(&w.bus, ALICE, host, b"").unwrap()
    ));
    let out = twofold(&w, None, &["admin", "forget-devices", ALICE]);
    assert!(text(&out).contains("Forgot 1"), "{}", text(&out));
    assert!(prompted(
        &w.pam.login_from(&w.bus, ALICE, host, b"000000\n").unwrap()
    ));
    w.pam
        .login_from(&w.bus, ALICE, host, &line(&oathtool(&e.secret, 1).unwrap()))
        .unwrap();
    assert!(text(&twofold(&w, Some(ALICE), &["devices", "--forget"])).contains("Forgot 1"));
    assert!(prompted(
        &w.pam.login_from(&w.bus, ALICE, host, b"000000\n").unwrap()
    ));
}

#[test]
fn a_trusted_network_skips_the_code() {
    let w = world("trusted_networks = [\"203.0.113.0/24\"]\n[default]\nmode = \"require\"\n");
    enroll(&w.bus, ALICE).unwrap();
    let inside = w.pam.login_from(&w.bus, ALICE, "203.0.113.9", b"").unwrap();
    assert_eq!(
        (inside.code, prompted(&inside)),
        (pam::SUCCESS, false),
        "{inside:?}"
    );
    let outside = w
        .pam
        .login_from(&w.bus, ALICE, "198.51.100.9", b"000000\n")
        .unwrap();
    assert_eq!(
        (outside.code, prompted(&outside)),
        (pam::AUTH_ERR, true),
        "{outside:?}"
    );
    // A host name never matches a network.
    let named = w
        .pam
        .login_from(&w.bus, ALICE, "trusted.example.com", b"000000\n")
        .unwrap();
    assert!(prompted(&named), "{named:?}");
}

#[test]
fn every_admin_call_is_refused_to_a_user_outside_the_admin_group() {
    let w = world(RULES);
    let commands: [&[&str]; 11] = [
        &["admin", "status", ALICE],
        &["admin", "report"],
        &["admin", "explain", ALICE],
        &["admin", "reset", ALICE, "--yes"],
        &["admin", "require", ALICE],
        &["admin", "exempt", ALICE],
        &["admin", "clear", ALICE],
        &["admin", "unlock", ALICE],
        &["admin", "forget-devices", ALICE],
        &["admin", "check-config"],
        &["admin", "reload"],
    ];
    for args in commands {
        let out = twofold(&w, Some(DAVE), args);
        assert!(
            !out.status.success() && text(&out).contains("Only root or members"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(w.daemon.log().matches("access-denied caller_uid=").count() >= commands.len());
}

#[test]
fn reset_makes_the_user_enroll_again() {
    let w = world("[default]\nmode = \"require\"\n");
    enroll(&w.bus, ALICE).unwrap();
    let out = twofold(&w, None, &["admin", "reset", ALICE, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&twofold(&w, Some(ALICE), &["status", "--json"])).contains("\"enrolled\":false"));
    let (again, _) = w.pam.login_enrolling(&w.bus, ALICE).unwrap();
    assert_eq!(again.code, pam::SUCCESS, "{again:?}");
    assert!(
        w.daemon
            .log()
            .contains("admin-reset user=tf-alice admin_uid=0")
    );
}

#[test]
fn an_invalid_policy_is_refused_on_reload_and_the_old_one_stays() {
    let w = world("[default]\nmode = \"exempt\"\n");
    let path = w
        .daemon
        .write_policy("[default]\nmode = \"sometimes\"\n")
        .unwrap();
    let out = twofold(&w, None, &["admin", "reload"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{}:2:", path.display())),
        "{}",
        text(&out)
    );
    assert_eq!(
        w.pam.login(&w.bus, DAVE, b"").unwrap().code,
        pam::SUCCESS,
        "still exempt"
    );
    // The same through SIGHUP.
    w.daemon.sighup().unwrap();
    assert!(
        w.daemon
            .log()
            .contains("policy-reload-refused signal=SIGHUP"),
        "{}",
        w.daemon.log()
    );
    let check = twofold(&w, None, &["admin", "check-config"]);
    assert!(
        !check.status.success() && text(&check).contains(":2:"),
        "{}",
        text(&check)
    );
    w.daemon
        .write_policy("unenrolled_require = \"refuse\"\n[default]\nmode = \"require\"\n")
        .unwrap();
    w.daemon.sighup().unwrap();
    assert_eq!(
        w.pam.login(&w.bus, DAVE, b"").unwrap().code,
        pam::AUTH_ERR,
        "the new policy applies"
    );
}

#[test]
fn disable_is_refused_under_require_and_needs_a_code_otherwise() {
    let w = world("[default]\nmode = \"optional\"\n");
    let e = enroll(&w.bus, ALICE).unwrap();
    assert!(
        twofold(&w, None, &["admin", "require", ALICE])
            .status
            .success()
    );
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.arg("disable");
    let refused = run_with_input(c, &line(&oathtool(&e.secret, 0).unwrap())).unwrap();
    assert!(
        refused.code != 0 && refused.stderr.contains("cannot turn it off"),
        "{refused:?}"
    );
    assert!(
        twofold(&w, None, &["admin", "clear", ALICE])
            .status
            .success()
    );
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.arg("disable");
    let wrong = run_with_input(c, b"000000\n").unwrap();
    assert!(wrong.code != 0, "{wrong:?}");
    let mut c = w.bus.command_as(ALICE, artifacts().twofold());
    c.arg("disable");
    let done = run_with_input(c, &line(&oathtool(&e.secret, 0).unwrap())).unwrap();
    assert_eq!(done.code, 0, "{done:?}");
    assert!(text(&twofold(&w, Some(ALICE), &["status", "--json"])).contains("\"enrolled\":false"));
}

#[test]
fn no_policy_outcome_lets_a_stack_through_without_the_first_factor() {
    let w = world(RULES);
    let e = enroll(&w.bus, ALICE).unwrap();
    let module = artifacts().module.display().to_string();
    // `sufficient` before a module that denies: only a verified code gets in.
    let sufficient = PamService::named(
        "sshd",
        &format!("auth sufficient {module}\nauth required pam_deny.so\n"),
    )
    .unwrap();
    assert_eq!(
        sufficient.login(&w.bus, CAROL, b"").unwrap().code,
        pam::AUTH_ERR,
        "exempt"
    );
    assert_eq!(
        sufficient.login(&w.bus, DAVE, b"").unwrap().code,
        pam::AUTH_ERR,
        "optional, not enrolled"
    );
    assert_eq!(
        sufficient
            .login(&w.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
            .unwrap()
            .code,
        pam::SUCCESS
    );
    // `required` after a password module that failed: nothing the module says helps.
    let failed_password = PamService::named(
        "sshd",
        &format!("auth requisite pam_deny.so\nauth required {module}\n"),
    )
    .unwrap();
    assert_eq!(
        failed_password.login(&w.bus, CAROL, b"").unwrap().code,
        pam::AUTH_ERR
    );
    // The documented code-only stack after a public key: exempt passes, a wrong code does not.
    let code_only = PamService::named(
        "sshd",
        &format!(
            "auth [success=done ignore=ignore default=die] {module}\nauth required pam_permit.so\n"
        ),
    )
    .unwrap();
    assert_eq!(
        code_only.login(&w.bus, CAROL, b"").unwrap().code,
        pam::SUCCESS
    );
    assert_eq!(
        code_only.login(&w.bus, ALICE, b"000000\n").unwrap().code,
        pam::AUTH_ERR
    );
}

#[test]
fn report_lists_every_user_with_their_rule() {
    let w = world(RULES);
    enroll(&w.bus, ALICE).unwrap();
    let out = twofold(&w, None, &["admin", "report"]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let row = |user: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("{user} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row(ALICE).contains("yes")
            && row(ALICE).contains("staff")
            && row(ALICE).contains("require"),
        "{report}"
    );
    assert!(
        row(CAROL).contains("automation") && row(CAROL).contains("exempt"),
        "{report}"
    );
    assert!(
        row(DAVE).contains("default") && row(DAVE).contains("optional"),
        "{report}"
    );
    let json = text(&twofold(&w, None, &["admin", "report", "--json"]));
    assert!(
        json.contains("\"user\":\"tf-alice\"") && json.contains("\"method\":\"totp\""),
        "{json}"
    );
}

#[test]
fn a_policy_file_that_disappeared_is_refused_on_reload() {
    let w = world("unenrolled_require = \"refuse\"\n[default]\nmode = \"require\"\n");
    let path = w
        .daemon
        .write_policy("unenrolled_require = \"refuse\"\n[default]\nmode = \"require\"\n")
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let out = twofold(&w, None, &["admin", "reload"]);
    assert!(
        !out.status.success() && text(&out).contains("cannot read"),
        "{}",
        text(&out)
    );
    assert_eq!(
        w.pam.login(&w.bus, DAVE, b"").unwrap().code,
        pam::AUTH_ERR,
        "require stays in force"
    );
}

#[test]
fn turning_remembering_off_asks_remembered_hosts_again() {
    let w = world("remember_device_secs = 600\n[default]\nmode = \"recommend\"\n");
    let e = enroll(&w.bus, ALICE).unwrap();
    let host = "198.51.100.40";
    w.pam
        .login_from(&w.bus, ALICE, host, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert!(!prompted(
        &w.pam.login_from(&w.bus, ALICE, host, b"").unwrap()
    ));
    assert!(
        reload(
            &w,
            "remember_device_secs = 0\n[default]\nmode = \"recommend\"\n"
        )
        .status
        .success()
    );
    assert!(prompted(
        &w.pam.login_from(&w.bus, ALICE, host, b"000000\n").unwrap()
    ));
}

const GHOST_GROUP: &str = "unenrolled_require = \"refuse\"\n[default]\nmode = \"exempt\"\n[[rule]]\nname = \"admins\"\ngroups = [\"tf-no-such-group\"]\nmode = \"require\"\n";

#[test]
fn a_rule_naming_a_group_that_does_not_exist_never_weakens_the_policy() {
    // At start only a warning (a directory may be coming up): logins use the strictest rule.
    let w = world(GHOST_GROUP);
    assert!(
        w.daemon
            .log()
            .contains("groups that do not exist: tf-no-such-group"),
        "{}",
        w.daemon.log()
    );
    let r = w.pam.login(&w.bus, DAVE, b"").unwrap();
    assert_eq!(
        r.code,
        pam::AUTH_ERR,
        "strictest (require), not exempt: {r:?}"
    );
    // Reload and check-config refuse it, naming the group; the policy in force stays.
    assert!(
        reload(&w, "[default]\nmode = \"exempt\"\n")
            .status
            .success()
    );
    assert_eq!(w.pam.login(&w.bus, DAVE, b"").unwrap().code, pam::SUCCESS);
    let out = reload(&w, GHOST_GROUP);
    assert!(
        !out.status.success() && text(&out).contains("tf-no-such-group"),
        "{}",
        text(&out)
    );
    assert_eq!(
        w.pam.login(&w.bus, DAVE, b"").unwrap().code,
        pam::SUCCESS,
        "the old policy stays"
    );
    let check = twofold(&w, None, &["admin", "check-config"]);
    assert!(
        !check.status.success() && text(&check).contains("tf-no-such-group"),
        "{}",
        text(&check)
    );
}

/// One check, one answer: `twofoldd --check-config` and `twofold admin
/// check-config` refuse the same bad files, each error at the file's path
/// and line.
#[test]
fn both_config_checks_refuse_the_same_files_at_their_line() {
    let w = world("[default]\nmode = \"optional\"\n");
    let dir = tempfile::Builder::new()
        .prefix("twofold-check-")
        .tempdir()
        .unwrap();
    let bad: [(&str, &[u8], usize, &str); 3] = [
        (
            "ghost.toml",
            b"[default]\nmode = \"exempt\"\n\n[[rule]]\nname = \"admins\"\ngroups = [\"tf-no-such-group\"]\nmode = \"require\"\n",
            6,
            "tf-no-such-group",
        ),
        (
            "latin1.toml",
            b"[default]\nmode = \"exempt\"\nsupport = \"Caf\xe9\"\n",
            3,
            "not UTF-8",
        ),
        ("syntax.toml", b"[default]\nmode = exempt\n", 2, ""),
    ];
    for (name, content, line, words) in bad {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let at = format!("{}:{line}:", path.display());
        let config = dir.path().join(format!("{name}.twofold.toml"));
        std::fs::write(&config, format!("policy_file = \"{}\"\n", path.display())).unwrap();
        let daemon_check = Command::new(artifacts().twofoldd())
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .unwrap();
        let admin_check = twofold(
            &w,
            None,
            &["admin", "check-config", &path.display().to_string()],
        );
        for (who, out) in [("twofoldd", &daemon_check), ("twofold admin", &admin_check)] {
            let said = text(out);
            assert!(!out.status.success(), "{who} accepted {name}: {said}");
            assert!(
                said.contains(&at) && said.contains(words),
                "{who} on {name}: {said}"
            );
        }
    }
}
