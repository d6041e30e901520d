//! Real SSH logins: OpenSSH's `ssh` against a throwaway sshd on 127.0.0.1
//! using the shipped pam.d stacks, the built module, a private bus and
//! twofoldd; codes from oathtool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use twofold_e2e::ssh::{ClientKey, SshClient, SshLogin, Sshd, SshdSetup, packaged_stack};
use twofold_e2e::*;

const PASSWORD: &str = "ssh horse 42";
const ANN: &str = "tf-ssh-ann";
const BEN: &str = "tf-ssh-ben";
const FTP: &str = "tf-ssh-ftp";
const CODE_PROMPT: &str = "Verification code: ";
const PUBLICKEY_METHODS: &str = "AuthenticationMethods publickey,keyboard-interactive";

struct Host {
    bus: Bus,
    daemon: Daemon,
    sshd: Sshd,
}

/// The accounts exist on the host (nologin, no password); the throwaway
/// sshd gives them a shell and PASSWORD in its own namespace only.
fn users() {
    for user in [ANN, BEN, FTP] {
        test_user(user).unwrap();
    }
    test_group("tf-ftp", &[FTP]).unwrap();
}

const ACCOUNTS: &[(&str, &str)] = &[(ANN, PASSWORD), (BEN, PASSWORD), (FTP, PASSWORD)];

/// A host with `policy`, the shipped `stack` (`sshd` or `sshd-publickey`).
fn host_with(policy: &str, stack: &str, module_args: &str, sshd_config: &str) -> Host {
    users();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start_with_policy(&bus, "", policy).unwrap();
    let sshd = Sshd::start(
        &bus,
        &SshdSetup {
            pam_stack: packaged_stack(stack, module_args).unwrap(),
            extra_config: sshd_config,
            accounts: ACCOUNTS,
        },
    )
    .unwrap();
    Host { bus, daemon, sshd }
}

fn host(policy: &str) -> Host {
    host_with(policy, "sshd", "", "")
}

const REQUIRE: &str = "[default]\nmode = \"require\"\n\
[[rule]]\nname = \"ftp\"\ngroups = [\"tf-ftp\"]\nmode = \"exempt\"\n";

/// Someone who knows the password and types `codes` in turn at the code
/// prompts (an empty string once they run out), Enter at anything else.
fn person(password: &str, codes: &[&str]) -> impl FnMut(&str) -> String + use<> {
    let password = password.to_string();
    let mut codes: VecDeque<String> = codes.iter().map(|c| c.to_string()).collect();
    move |prompt: &str| {
        if prompt.ends_with("Password: ") {
            password.clone()
        } else if prompt.ends_with(CODE_PROMPT) {
            codes.pop_front().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

fn explain(h: &Host, login: &SshLogin) -> String {
    format!(
        "{login:#?}\n--- sshd ---\n{}\n--- twofoldd ---\n{}",
        h.sshd.log(),
        h.daemon.log()
    )
}

/// The messages issue 22 added reach the SSH client as written: the backup
/// codes left (and, at 3, the command for new ones), a used backup code says
/// so (not "wrong code"), and an app code for three minutes ago says the
/// device's clock looks behind.
#[test]
fn backup_codes_left_a_used_one_and_a_clock_off_are_named_over_ssh() {
    let h = host(REQUIRE);
    let ann = enroll(&h.bus, ANN).unwrap();
    let backup = ann.backup_codes[0].clone();
    let first = SshClient::new(ANN)
        .login(&h.sshd, person(PASSWORD, &[&backup]))
        .unwrap();
    assert!(first.logged_in(), "{}", explain(&h, &first));
    // The notice of an accepted backup code reaches the user too.
    let shown = format!("{}{}", first.stdout, first.stderr);
    assert!(
        shown.contains("9 backup codes left"),
        "{}",
        explain(&h, &first)
    );
    // And, with 3 left, how to get new ones.
    let mut last = None;
    for code in &ann.backup_codes[1..7] {
        let ok = SshClient::new(ANN)
            .login(&h.sshd, person(PASSWORD, &[code]))
            .unwrap();
        assert!(ok.logged_in(), "{}", explain(&h, &ok));
        last = Some(ok);
    }
    let last = last.unwrap();
    let shown = format!("{}{}", last.stdout, last.stderr);
    assert!(
        shown.contains("3 backup codes left. Run `twofold backup-codes` to get new ones."),
        "{}",
        explain(&h, &last)
    );
    let behind = oathtool(&ann.secret, -6).unwrap();
    for (input, why) in [
        (backup.as_str(), "that backup code was already used"),
        (behind.as_str(), "its clock looks about 3 minutes behind"),
    ] {
        let bad = SshClient::new(ANN)
            .login(&h.sshd, person(PASSWORD, &[input]))
            .unwrap();
        assert!(!bad.logged_in(), "{input:?}: {}", explain(&h, &bad));
        assert!(
            bad.stderr.to_lowercase().contains(why),
            "{input:?} should say {why:?}: {}",
            explain(&h, &bad)
        );
    }
}

#[test]
fn password_then_code() {
    let h = host(REQUIRE);
    let ann = enroll(&h.bus, ANN).unwrap();
    let code = oathtool(&ann.secret, 0).unwrap();
    let ok = SshClient::new(ANN)
        .login(&h.sshd, person(PASSWORD, &[&code]))
        .unwrap();
    assert!(ok.logged_in() && ok.status == 0, "{}", explain(&h, &ok));
    assert_eq!(
        ok.prompts,
        ["Password: ", CODE_PROMPT],
        "{}",
        explain(&h, &ok)
    );

    // Bad codes, each in its own connection: refused, with a message that
    // says what was wrong, shown before the client gives up.
    let long = "1".repeat(200);
    // The replay first, while its step is still inside the daemon's window
    // (pam_unix pauses about 2 s after each failed login).
    let cases = [
        (code.as_str(), "already used"),
        ("", "no code"),
        (long.as_str(), "too long"),
        ("12ab56", "not a code"),
        ("000000", "wrong code"),
    ];
    for (input, why) in cases {
        let bad = SshClient::new(ANN)
            .login(&h.sshd, person(PASSWORD, &[input]))
            .unwrap();
        assert!(!bad.logged_in(), "{input:?}: {}", explain(&h, &bad));
        assert_eq!(bad.asked(CODE_PROMPT), 1, "{}", explain(&h, &bad));
        assert!(
            bad.stderr.to_lowercase().contains(why),
            "{input:?} should say {why:?}: {}",
            explain(&h, &bad)
        );
        // sshd offers no plain password method that would skip the code.
        assert!(
            bad.stderr
                .contains("Permission denied (publickey,keyboard-interactive)"),
            "{}",
            bad.stderr
        );
    }
}

#[test]
fn a_wrong_password_never_reaches_the_code_or_enrollment() {
    let h = host(REQUIRE);
    // Ben is not enrolled: a right password would lead to enrollment.
    let wrong = SshClient {
        rounds: 3,
        ..SshClient::new(BEN)
    }
    .login(&h.sshd, person("not the password", &["123456"]))
    .unwrap();
    assert!(!wrong.logged_in(), "{}", explain(&h, &wrong));
    assert_eq!(wrong.prompts, ["Password: "; 3], "{}", explain(&h, &wrong));
    let everything = format!("{wrong:?}");
    for secret_sign in ["otpauth://", "Key URI", "key by hand", "█"] {
        assert!(!everything.contains(secret_sign), "{everything}");
    }
    assert!(
        !h.daemon.log().contains("enrollment-offered"),
        "the daemon was asked to enroll: {}",
        h.daemon.log()
    );
    let status = bus_status(&h, BEN);
    assert!(status.contains("not set up"), "{status}");
}

fn bus_status(h: &Host, user: &str) -> String {
    let out = h.bus.twofold(&["admin", "status", user]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The key and backup codes shown in an enrollment, read off the prompts.
fn shown_enrollment(login: &SshLogin) -> (String, Vec<String>) {
    let offer = login
        .prompts
        .iter()
        .find(|p| p.contains("Key URI: "))
        .expect("a prompt with the Key URI");
    let uri = offer
        .lines()
        .find_map(|l| l.strip_prefix("Key URI: "))
        .unwrap();
    let secret = uri_secret(uri).unwrap();
    let by_hand = offer
        .lines()
        .find_map(|l| l.strip_prefix("Or enter this key by hand: "))
        .unwrap();
    assert_eq!(by_hand.replace(' ', ""), secret);
    let saved = login
        .prompts
        .iter()
        .find(|p| p.contains("written them down"))
        .expect("a prompt with the backup codes");
    let codes = saved
        .lines()
        .filter_map(|l| l.trim().split_once(". ").map(|(_, c)| c.to_string()))
        .filter(|c| c.len() == 11 && c.as_bytes()[5] == b'-')
        .collect::<Vec<String>>();
    for c in &codes {
        used_secret(c);
        used_secret(&c.replace('-', ""));
    }
    used_secret(by_hand);
    (secret, codes)
}

#[test]
fn a_required_user_enrolls_inside_the_ssh_login() {
    let h = host(REQUIRE);
    let mut secret_seen = None;
    let enrolling = SshClient::new(BEN)
        .login(&h.sshd, |prompt: &str| {
            if prompt.ends_with("Password: ") {
                PASSWORD.into()
            } else if let Some(uri) = prompt.lines().find_map(|l| l.strip_prefix("Key URI: ")) {
                let secret = uri_secret(uri).unwrap();
                let code = oathtool(&secret, 0).unwrap();
                secret_seen = Some(secret);
                code
            } else {
                String::new()
            }
        })
        .unwrap();
    assert!(
        enrolling.logged_in() && enrolling.status == 0,
        "{}",
        explain(&h, &enrolling)
    );
    assert_eq!(enrolling.prompts.len(), 3, "{}", explain(&h, &enrolling));
    let offer = &enrolling.prompts[1];
    // What the user must read comes with the prompt, in this order.
    let order = [
        "required for your account",
        "▀",
        "Key URI: otpauth://totp/",
        "Or enter this key by hand: ",
        CODE_PROMPT,
    ];
    let positions: Vec<usize> = order.iter().map(|t| offer.find(t).unwrap()).collect();
    assert!(positions.is_sorted(), "{offer}");
    assert!(offer.ends_with(CODE_PROMPT));
    assert!(enrolling.prompts[2].contains("Two-factor authentication is now set up"));
    let (secret, backup) = shown_enrollment(&enrolling);
    assert_eq!(Some(secret.clone()), secret_seen);
    assert_eq!(backup.len(), 10, "{}", enrolling.prompts[2]);
    // Shown to the user, logged nowhere: not by twofoldd, not by sshd.
    let logs = h.daemon.log() + &h.sshd.log();
    let shown = backup.iter().flat_map(|c| [c.clone(), c.replace('-', "")]);
    for secret in shown.chain([secret.clone()]) {
        assert!(!logs.contains(&secret), "a secret is in the logs:\n{logs}");
    }

    // The next login asks for a code; a backup code from the screen works.
    let again = SshClient::new(BEN)
        .login(&h.sshd, person(PASSWORD, &[&backup[0]]))
        .unwrap();
    assert!(again.logged_in(), "{}", explain(&h, &again));
    assert_eq!(again.prompts[..2], ["Password: ", CODE_PROMPT]);
    assert!(again.asked("Key URI") == 0);
    // And the TOTP key from the screen works too.
    let totp = SshClient::new(BEN)
        .login(&h.sshd, person(PASSWORD, &[&oathtool(&secret, 1).unwrap()]))
        .unwrap();
    assert!(totp.logged_in(), "{}", explain(&h, &totp));
}

#[test]
fn public_key_then_code() {
    let h = host_with(REQUIRE, "sshd-publickey", "", PUBLICKEY_METHODS);
    let key = ClientKey::new().unwrap();
    for user in [ANN, FTP] {
        h.sshd.authorize(user, &key.public()).unwrap();
    }
    let ann = enroll(&h.bus, ANN).unwrap();
    let with_key = SshClient {
        key: Some(&key.private()),
        ..SshClient::new(ANN)
    };
    // The key, then only the code: no password.
    let ok = with_key
        .login(&h.sshd, person("", &[&oathtool(&ann.secret, 0).unwrap()]))
        .unwrap();
    assert!(ok.logged_in() && ok.status == 0, "{}", explain(&h, &ok));
    assert_eq!(ok.prompts, [CODE_PROMPT], "{}", explain(&h, &ok));
    // The key and a wrong code: refused.
    let wrong = with_key.login(&h.sshd, person("", &["000000"])).unwrap();
    assert!(!wrong.logged_in(), "{}", explain(&h, &wrong));
    // A right code without the key: never asked, refused.
    let no_key = SshClient::new(ANN)
        .login(
            &h.sshd,
            person(PASSWORD, &[&oathtool(&ann.secret, 1).unwrap()]),
        )
        .unwrap();
    assert!(!no_key.logged_in(), "{}", explain(&h, &no_key));
    assert!(no_key.prompts.is_empty(), "{}", explain(&h, &no_key));
    // An exempt account: the key alone.
    let ftp = SshClient {
        key: Some(&key.private()),
        ..SshClient::new(FTP)
    }
    .login(&h.sshd, person("", &[]))
    .unwrap();
    assert!(ftp.logged_in() && ftp.status == 0, "{}", explain(&h, &ftp));
    assert!(ftp.prompts.is_empty(), "{}", explain(&h, &ftp));
}

#[test]
fn an_exempt_user_gets_in_with_the_password_alone() {
    let h = host(REQUIRE);
    let ftp = SshClient::new(FTP)
        .login(&h.sshd, person(PASSWORD, &[]))
        .unwrap();
    assert!(ftp.logged_in() && ftp.status == 0, "{}", explain(&h, &ftp));
    assert_eq!(ftp.prompts, ["Password: "], "{}", explain(&h, &ftp));
    let wrong = SshClient::new(FTP)
        .login(&h.sshd, person("nope", &[]))
        .unwrap();
    assert!(!wrong.logged_in(), "{}", explain(&h, &wrong));
}

#[test]
fn a_recommend_user_sees_the_days_left_and_gets_in() {
    let in_ten_days = String::from_utf8(
        output({
            let mut c = std::process::Command::new("date");
            c.args(["-u", "-d", "+10 days", "+%F"]);
            c
        })
        .unwrap()
        .stdout,
    )
    .unwrap();
    let policy = format!(
        "[default]\nmode = \"recommend\"\nschedule = [ {{ from = {}, mode = \"require\" }} ]\n",
        in_ten_days.trim()
    );
    let h = host(&policy);
    // An interactive session: sshd shows PAM's notices when it starts, as
    // it does the message of the day.
    let login = SshClient {
        command: None,
        ..SshClient::new(BEN)
    }
    .login(&h.sshd, person(PASSWORD, &[]))
    .unwrap();
    assert!(login.logged_in(), "{}", explain(&h, &login));
    assert_eq!(login.prompts, ["Password: "], "{}", explain(&h, &login));
    assert!(
        login.stdout.contains(&format!(
            "required for your account from {} (10 days from now)",
            in_ten_days.trim()
        )) && login.stdout.contains("twofold setup"),
        "{}",
        explain(&h, &login)
    );
}

#[test]
fn a_device_is_remembered_by_its_remote_address() {
    let policy = "remember_device_secs = 3600\n[default]\nmode = \"require\"\n";
    let h = host(policy);
    let ann = enroll(&h.bus, ANN).unwrap();
    let first = SshClient::new(ANN)
        .login(
            &h.sshd,
            person(PASSWORD, &[&oathtool(&ann.secret, 0).unwrap()]),
        )
        .unwrap();
    assert!(first.logged_in(), "{}", explain(&h, &first));
    assert_eq!(first.prompts, ["Password: ", CODE_PROMPT]);
    // Same address: the password alone.
    let same = SshClient::new(ANN)
        .login(&h.sshd, person(PASSWORD, &[]))
        .unwrap();
    assert!(same.logged_in(), "{}", explain(&h, &same));
    assert_eq!(same.prompts, ["Password: "], "{}", explain(&h, &same));
    // Another address: asked again.
    let other = SshClient {
        from: Some("127.0.0.2"),
        ..SshClient::new(ANN)
    }
    .login(&h.sshd, person(PASSWORD, &["000000"]))
    .unwrap();
    assert!(!other.logged_in(), "{}", explain(&h, &other));
    assert_eq!(other.prompts, ["Password: ", CODE_PROMPT]);
}

#[test]
fn the_connection_closes_after_maxauthtries() {
    let h = host_with(REQUIRE, "sshd", "", "MaxAuthTries 3");
    enroll(&h.bus, ANN).unwrap();
    // The client would try ten times; the server ends it after three.
    let login = SshClient {
        rounds: 10,
        ..SshClient::new(ANN)
    }
    .login(&h.sshd, person(PASSWORD, &["000000"; 10]))
    .unwrap();
    assert!(!login.logged_in(), "{}", explain(&h, &login));
    assert_eq!(login.asked(CODE_PROMPT), 3, "{}", explain(&h, &login));
    assert!(
        login.stderr.contains("Too many authentication failures"),
        "{}",
        explain(&h, &login)
    );
}

/// With `UseDNS yes`, sshd names the client by its host name in PAM_RHOST;
/// the module gives the daemon the numeric address sshd puts in the PAM
/// environment instead, so trusted networks (and the throttle's count per
/// address) still see an address.
#[test]
fn with_usedns_the_daemon_still_sees_the_address() {
    let policy = "trusted_networks = [\"127.0.0.0/8\"]\n[default]\nmode = \"require\"\n";
    let h = host_with(policy, "sshd", "", "UseDNS yes");
    enroll(&h.bus, ANN).unwrap();
    let login = SshClient::new(ANN)
        .login(&h.sshd, person(PASSWORD, &["000000"]))
        .unwrap();
    assert!(login.logged_in(), "{}", explain(&h, &login));
    assert_eq!(login.prompts, ["Password: "], "{}", explain(&h, &login));
    assert!(
        h.daemon
            .log()
            .contains("rhost=127.0.0.1 outcome=allowed-trusted-network"),
        "{}",
        explain(&h, &login)
    );
}

/// MaxAuthTries bounds the tries in one connection, but it is the daemon's
/// count, per account and address, that bounds an attacker: ten wrong codes
/// cost the same in one connection as in ten.
#[test]
fn codes_cost_the_same_in_one_connection_or_in_many() {
    let allowed = twofoldd::config::ThrottleConfig::default().free_failures as usize + 1;
    let one = host_with(REQUIRE, "sshd", "", "MaxAuthTries 10");
    enroll(&one.bus, ANN).unwrap();
    let login = SshClient {
        rounds: 10,
        ..SshClient::new(ANN)
    }
    .login(&one.sshd, person(PASSWORD, &["000000"; 10]))
    .unwrap();
    assert!(!login.logged_in(), "{}", explain(&one, &login));
    assert_eq!(login.asked("Password: "), 10, "{}", explain(&one, &login));
    assert_eq!(
        login.asked(CODE_PROMPT),
        allowed,
        "{}",
        explain(&one, &login)
    );
    let checked = |h: &Host| h.daemon.log().matches("outcome=refused-wrong-code").count();
    assert_eq!(checked(&one), allowed);

    let many = host_with(REQUIRE, "sshd", "", "MaxAuthTries 1");
    enroll(&many.bus, ANN).unwrap();
    let mut asked = 0;
    for _ in 0..10 {
        let login = SshClient::new(ANN)
            .login(&many.sshd, person(PASSWORD, &["000000"]))
            .unwrap();
        assert!(!login.logged_in(), "{}", explain(&many, &login));
        asked += login.asked(CODE_PROMPT);
    }
    assert_eq!(asked, allowed);
    assert_eq!(checked(&many), allowed);
}

/// Whether a prompt carries a QR code drawn in ASCII (rows of `#` and spaces).
fn ascii_qr(prompt: &str) -> bool {
    let rows = prompt
        .lines()
        .filter(|l| l.len() > 40 && l.chars().all(|c| c == '#' || c == ' '))
        .count();
    rows > 20 && !prompt.contains('█') && !prompt.contains('▀')
}

/// An enrollment at login answered by `pick(prompt)` until the Key URI is
/// shown, then with oathtool's code.
fn enroll_over_ssh(h: &Host, mut pick: impl FnMut(&str) -> Option<String>) -> SshLogin {
    let login = SshClient::new(BEN)
        .login(&h.sshd, |prompt: &str| {
            if prompt.ends_with("Password: ") {
                return PASSWORD.into();
            }
            if let Some(answer) = pick(prompt) {
                return answer;
            }
            match prompt.lines().find_map(|l| l.strip_prefix("Key URI: ")) {
                Some(uri) => oathtool(&uri_secret(uri).unwrap(), 0).unwrap(),
                None => String::new(),
            }
        })
        .unwrap();
    assert!(login.logged_in(), "{}", explain(h, &login));
    login
}

#[test]
fn the_qr_code_is_redrawn_in_ascii_when_the_user_types_a() {
    let h = host(REQUIRE);
    let mut asked = false;
    let login = enroll_over_ssh(&h, |prompt| {
        (prompt.contains("Type A at the prompt") && !asked).then(|| {
            asked = true;
            "a".into()
        })
    });
    // Password, Unicode offer, ASCII offer, backup codes.
    assert_eq!(login.prompts.len(), 4, "{}", explain(&h, &login));
    assert!(login.prompts[1].contains('▀') && !ascii_qr(&login.prompts[1]));
    assert!(ascii_qr(&login.prompts[2]), "{}", login.prompts[2]);
    assert!(login.prompts[2].contains("Key URI: otpauth://"));
    assert!(login.prompts[3].contains("now set up"));
}

#[test]
fn the_admin_can_ask_for_ascii_qr_codes() {
    let h = host_with(REQUIRE, "sshd", "qr=ascii", "");
    let login = enroll_over_ssh(&h, |_| None);
    assert_eq!(login.prompts.len(), 3, "{}", explain(&h, &login));
    assert!(ascii_qr(&login.prompts[1]), "{}", login.prompts[1]);
    assert!(!login.prompts[1].contains("Type A"));
}

#[test]
fn the_qr_code_reaches_a_terminal_intact() {
    let h = host(REQUIRE);
    // ssh on a pseudo-terminal, as a person runs it: the prompt goes
    // through the client's terminal path, not through askpass.
    let screen = SshClient::new(BEN)
        .terminal_until(&h.sshd, PASSWORD, CODE_PROMPT)
        .unwrap();
    let offer = &screen[screen.find("required for your account").unwrap()..];
    let qr_rows = offer
        .lines()
        .filter(|l| l.chars().count() > 40 && l.chars().all(|c| " █▀▄\r".contains(c)))
        .count();
    assert!(qr_rows > 20, "{screen}");
    // Not escaped by the client (as \342\226\200 or the like).
    assert!(!screen.contains("\\342"), "{screen}");
    for text in [
        "Key URI: otpauth://totp/",
        "Or enter this key by hand: ",
        "Type A",
    ] {
        assert!(offer.contains(text), "{screen}");
    }
    // Hanging up stored nothing.
    assert!(bus_status(&h, BEN).contains("not set up"));
}
