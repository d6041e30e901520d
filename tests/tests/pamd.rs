//! The pam.d files shipped in packaging/, loaded through real libpam beside
//! the host's own common-* files: real passwords (pam_unix), then twofold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use twofold_e2e::*;

const ALICE: &str = "tf-alice";
const CAROL: &str = "tf-carol";
const DAVE: &str = "tf-dave";

struct World {
    bus: Bus,
    daemon: Daemon,
}

fn world(policy: &str) -> World {
    for user in [ALICE, CAROL, DAVE] {
        test_user(user).unwrap();
        set_password(user, test_password()).unwrap();
    }
    test_group("tf-robots", &[CAROL]).unwrap();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start_with_policy(&bus, "", policy).unwrap();
    World { bus, daemon }
}

fn answers(lines: &[&str]) -> Vec<u8> {
    lines
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

fn prompted_for_code(a: &Attempt) -> bool {
    a.stderr.contains("Verification code: ")
}

const POLICY: &str = "[default]\nmode = \"require\"\n[[rule]]\nname = \"automation\"\ngroups = [\"tf-robots\"]\nmode = \"exempt\"\n";

#[test]
fn password_then_code_for_sshd_login_and_sudo() {
    let w = world(POLICY);
    let alice = enroll(&w.bus, ALICE).unwrap();
    let dave = enroll(&w.bus, DAVE).unwrap();
    // Each success spends a step: two fresh steps per user are available.
    let successes = [
        ("sshd", ALICE, &alice.secret, 0),
        ("login", ALICE, &alice.secret, 1),
        ("sudo", DAVE, &dave.secret, 0),
    ];
    for (service, user, secret, step) in successes {
        let pam = PamService::packaged(service, service).unwrap();
        let ok = pam
            .login(
                &w.bus,
                user,
                &answers(&[test_password(), &oathtool(secret, step).unwrap()]),
            )
            .unwrap();
        assert_eq!(ok.code, pam::SUCCESS, "{service}: {ok:?}");
        assert!(
            ok.stderr.contains("Password: ") && prompted_for_code(&ok),
            "{service}: {ok:?}"
        );
        let wrong_code = pam
            .login(&w.bus, user, &answers(&[test_password(), "000000"]))
            .unwrap();
        assert_eq!(
            (wrong_code.code, prompted_for_code(&wrong_code)),
            (pam::AUTH_ERR, true),
            "{service}: {wrong_code:?}"
        );
        let wrong_password = pam
            .login(&w.bus, user, &answers(&["not the password", "000000"]))
            .unwrap();
        assert_eq!(
            wrong_password.code,
            pam::AUTH_ERR,
            "{service}: {wrong_password:?}"
        );
        assert!(
            !prompted_for_code(&wrong_password),
            "{service}: a wrong password reached twofold: {wrong_password:?}"
        );
    }
}

#[test]
fn a_wrong_password_never_reaches_enrollment_at_login() {
    let w = world(POLICY);
    let pam = PamService::packaged("sshd", "sshd").unwrap();
    let r = pam
        .login(&w.bus, DAVE, &answers(&["not the password", "123456"]))
        .unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(
        !r.stdout.contains("otpauth://") && !r.stdout.contains("QR"),
        "enrollment shown: {r:?}"
    );
    assert!(
        !w.daemon.log().contains("user=tf-dave"),
        "twofoldd was asked: {}",
        w.daemon.log()
    );
    // With the right password, the same user is offered enrollment.
    let r = pam
        .login(&w.bus, DAVE, &answers(&[test_password()]))
        .unwrap();
    assert!(r.stdout.contains("otpauth://totp/twofold:tf-dave"), "{r:?}");
}

#[test]
fn the_public_key_stack_asks_only_for_the_code_and_passes_exempt_users() {
    let w = world(POLICY);
    let e = enroll(&w.bus, ALICE).unwrap();
    let pam = PamService::packaged("sshd-publickey", "sshd").unwrap();
    let exempt = pam.login(&w.bus, CAROL, b"").unwrap();
    assert_eq!(exempt.code, pam::SUCCESS, "{exempt:?}");
    assert!(
        !exempt.stderr.contains("Password") && !prompted_for_code(&exempt),
        "{exempt:?}"
    );
    let ok = pam
        .login(&w.bus, ALICE, &answers(&[&oathtool(&e.secret, 0).unwrap()]))
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}");
    assert!(!ok.stderr.contains("Password"), "{ok:?}");
    let wrong = pam.login(&w.bus, ALICE, &answers(&["000000"])).unwrap();
    assert_eq!(wrong.code, pam::AUTH_ERR, "{wrong:?}");
    let down = {
        drop(w.daemon);
        pam.login(&w.bus, ALICE, &answers(&["123456"])).unwrap()
    };
    assert_ne!(
        down.code,
        pam::SUCCESS,
        "daemon down must not let the code-only stack through: {down:?}"
    );
}

#[test]
fn su_as_shipped_lets_root_through_without_password_or_code() {
    let w = world(POLICY);
    enroll(&w.bus, ALICE).unwrap();
    let pam = PamService::packaged("su", "su").unwrap();
    // pam-driver runs as root here: pam_rootok, as Debian ships su.
    let root = pam.login(&w.bus, ALICE, b"").unwrap();
    assert_eq!(root.code, pam::SUCCESS, "{root:?}");
    assert!(!root.stderr.contains("Password"), "{root:?}");
}
