//! E-mail codes end to end: a real SMTP server on 127.0.0.1 (aiosmtpd), a
//! real twofoldd sending through it with lettre, `twofold setup --method
//! email`, and logins through libpam and the built module, with the codes
//! read out of the delivered messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use twofold_e2e::smtp::{Mail, SinkTls, SmtpSink};
use twofold_e2e::*;

/// Wrong codes are part of these tests; do not throttle them, and let codes
/// be sent back to back unless a test says otherwise.
const LENIENT: &str = "[throttle]\nfree_failures = 50\nlockout_after = 100\n";
const REQUIRE: &str = "[default]\nmode = \"require\"\n";
const RHOST: &str = "192.0.2.7";

fn address(user: &str) -> String {
    format!("{user}@test.example")
}

struct World {
    bus: Bus,
    daemon: Daemon,
    sink: SmtpSink,
    pam: PamService,
}

fn world(users: &[&str], email_extra: &str, policy: &str) -> World {
    for user in users {
        test_user(user).unwrap();
    }
    let sink = SmtpSink::start().unwrap();
    let bus = Bus::start().unwrap();
    let config = format!("{}{email_extra}{LENIENT}", sink.config());
    let daemon = Daemon::start_with_policy(&bus, &config, policy).unwrap();
    World {
        bus,
        daemon,
        sink,
        pam: PamService::service("sshd").unwrap(),
    }
}

fn code_of(mail: &Mail) -> String {
    let code = mail.code().unwrap_or_else(|| panic!("no code in {mail:?}"));
    used_secret(&code);
    code
}

/// `twofold ARGS` as `user`, piped: `first` is written at once, then the
/// code from the next message the sink receives. The output, and the mail.
fn twofold_mailed(w: &World, user: &str, args: &[&str], first: &str) -> (Output, Mail) {
    let seen = w.sink.messages().len();
    let mut child = w
        .bus
        .command_as(user, artifacts().twofold())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mail = w.sink.wait_for(seen);
    if let Ok(mail) = &mail {
        writeln!(stdin, "{}", code_of(mail)).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let mail =
        mail.unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, mail)
}

/// Backup codes printed one a line (registered as secrets for the log checks).
fn printed_codes(out: &Output) -> Vec<String> {
    let codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for c in &codes {
        used_secret(c);
        used_secret(&c.replace('-', ""));
    }
    codes
}

/// `twofold setup --method email` as `user`, piped: the code comes from the
/// message the sink received. Returns the backup codes printed and the mail.
fn setup_email(w: &World, user: &str) -> (Vec<String>, Mail) {
    let args = ["setup", "--method", "email", "--address", &address(user)];
    let (out, mail) = twofold_mailed(w, user, &args, "");
    (printed_codes(&out), mail)
}

/// A login whose code arrives by e-mail: `first` answers the prompts before
/// the mail, then `answer` turns the mail (if any came) into the rest.
fn mail_login(
    w: &World,
    user: &str,
    first: &[u8],
    answer: impl FnOnce(Option<Mail>) -> Vec<u8>,
) -> (Attempt, Option<Mail>) {
    let seen = w.sink.messages().len();
    let mut got = None;
    let attempt = w
        .pam
        .login_answering(&w.bus, user, RHOST, first, || {
            let mail = w.sink.wait_for(seen).ok();
            got.clone_from(&mail);
            answer(mail)
        })
        .unwrap();
    (attempt, got)
}

fn code_line(mail: Option<Mail>) -> Vec<u8> {
    match mail {
        Some(mail) => format!("{}\n", code_of(&mail)).into_bytes(),
        // The login's own assertions say what went wrong.
        None => b"no-mail\n".to_vec(),
    }
}

fn admin(w: &World, args: &[&str]) -> String {
    let out = w.bus.twofold(args).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn register_then_log_in_with_emailed_codes_each_once() {
    const USER: &str = "tf-mail-ann";
    let w = world(
        &[USER],
        "resend_interval_secs = 0\nmax_sends_per_hour = 20\n",
        REQUIRE,
    );
    let (backup, mail) = setup_email(&w, USER);
    assert_eq!(backup.len(), 10, "first method: backup codes {backup:?}");
    assert_eq!(mail.to, address(USER));
    assert!(mail.subject.contains("login code"), "{mail:?}");
    assert!(
        mail.text.contains(USER),
        "the message names the user: {mail:?}"
    );
    let report = admin(&w, &["admin", "report", "--json"]);
    let row = report.lines().find(|l| l.contains(USER)).unwrap();
    assert!(row.contains("\"method\":\"email\""), "{row}");

    // 1. The e-mailed code logs in; the prompt names the masked address.
    let (a, m1) = mail_login(&w, USER, b"", code_line);
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    assert!(a.stderr.contains("t***@test.example"), "{}", a.stderr);
    let code1 = code_of(&m1.unwrap());
    // 2. Single use: the same code again is refused (this login sent code 2).
    let (a, m2) = mail_login(&w, USER, b"", |_| format!("{code1}\n").into_bytes());
    assert_eq!(a.code, pam::AUTH_ERR, "a spent code: {a:?}");
    let code2 = code_of(&m2.expect("a second code"));
    // 3. A new code voids the older: code 2, unused, is refused once code 3 is out.
    let (a, m3) = mail_login(&w, USER, b"", |_| format!("{code2}\n").into_bytes());
    assert_eq!(a.code, pam::AUTH_ERR, "a replaced code: {a:?}");
    assert!(m3.is_some());
    // 4. The newest code works.
    let (a, _) = mail_login(&w, USER, b"", code_line);
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    // A backup code works too (it is typed at the same prompt).
    let (a, _) = mail_login(&w, USER, b"", |_| format!("{}\n", backup[0]).into_bytes());
    assert_eq!(a.code, pam::SUCCESS, "backup code: {a:?}");
    let log = w.daemon.log();
    assert!(log.contains("accepted-email-code"), "{log}");
    assert!(log.contains("refused-wrong-code"), "{log}");
    assert_no_secret_in("twofoldd's log", &log);

    // New backup codes for an e-mail-only user: proved with a code e-mailed now.
    let (out, _) = twofold_mailed(&w, USER, &["backup-codes"], "");
    let fresh = printed_codes(&out);
    assert_eq!(fresh.len(), 10, "{fresh:?}");

    // The app as a second method, after a code e-mailed now proves the user;
    // the backup codes stay, and the prompt then offers both.
    let seen = w.sink.messages().len();
    let mut child = w
        .bus
        .command_as(USER, artifacts().twofold())
        .args(["setup", "--method", "totp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", code_of(&w.sink.wait_for(seen).unwrap())).unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut uri = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut uri).unwrap();
    let secret = uri_secret(uri.trim()).unwrap_or_else(|| panic!("no key in {uri:?}"));
    writeln!(stdin, "{}", oathtool(&secret, -1).unwrap()).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(rest.trim().is_empty(), "no new backup codes: {rest:?}");
    let app = Enrolled {
        uri,
        secret,
        backup_codes: Vec::new(),
    };
    let status = admin(&w, &["admin", "status", USER, "--json"]);
    assert!(status.contains("totp,email"), "{status}");
    let a = w
        .pam
        .login_from(
            &w.bus,
            USER,
            RHOST,
            format!("{}\n", oathtool(&app.secret, 0).unwrap()).as_bytes(),
        )
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "app code: {a:?}");
    assert!(a.stderr.contains("press Enter"), "{}", a.stderr);
    // An empty answer there asks for an e-mail code.
    let (a, mail) = mail_login(&w, USER, b"\n", code_line);
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    assert!(mail.is_some());
}

#[test]
fn an_expired_code_is_refused() {
    const USER: &str = "tf-mail-ben";
    let w = world(
        &[USER],
        "code_valid_secs = 10\nresend_interval_secs = 0\n",
        REQUIRE,
    );
    setup_email(&w, USER);
    let (a, _) = mail_login(&w, USER, b"", |mail| {
        std::thread::sleep(Duration::from_secs(11));
        code_line(mail)
    });
    assert_eq!(a.code, pam::AUTH_ERR, "expired: {a:?}");
}

#[test]
fn sends_are_throttled_per_user() {
    const USER: &str = "tf-mail-cat";
    let w = world(
        &[USER],
        "resend_interval_secs = 0\nmax_sends_per_hour = 3\n",
        REQUIRE,
    );
    setup_email(&w, USER); // the first send of the hour
    for _ in 0..2 {
        let (a, mail) = mail_login(&w, USER, b"", |_| b"000000\n".to_vec());
        assert!(mail.is_some());
        assert_eq!(a.code, pam::AUTH_ERR);
    }
    let before = w.sink.messages().len();
    // Refused a new code, the user is told and may still type one sent before.
    let a = w.pam.login_from(&w.bus, USER, RHOST, b"000000\n").unwrap();
    assert_eq!(a.code, pam::AUTH_ERR, "{a:?}");
    assert!(
        a.stderr
            .contains("Code from an earlier e-mail, or a backup code"),
        "{}",
        a.stderr
    );
    assert!(
        a.stderr.contains("sent by e-mail a moment ago"),
        "{}",
        a.stderr
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.sink.messages().len(), before, "no fourth message");
    assert!(w.daemon.log().contains("email-send-throttled"));
}

#[test]
fn a_relay_that_is_down_or_silent_is_a_clear_refusal_within_the_timeout() {
    const USER: &str = "tf-mail-dan";
    let mut w = world(
        &[USER],
        "timeout_secs = 2\nresend_interval_secs = 0\n",
        REQUIRE,
    );
    let (backup, _) = setup_email(&w, USER);
    let port = w.sink.port;
    // Down: nobody listens any more. The user is told, and a backup code
    // still works at the prompt that follows.
    drop(std::mem::replace(&mut w.sink, SmtpSink::start().unwrap()));
    let a = w
        .pam
        .login_from(&w.bus, USER, RHOST, format!("{}\n", backup[0]).as_bytes())
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    assert!(
        a.stderr.contains("could not be sent by e-mail"),
        "{}",
        a.stderr
    );
    // Silent: connections are accepted and never answered.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(1) {
            open.push(stream);
            std::thread::sleep(Duration::from_secs(8));
        }
    });
    let start = Instant::now();
    let a = w.pam.login_from(&w.bus, USER, RHOST, b"000000\n").unwrap();
    let took = start.elapsed();
    assert_eq!(a.code, pam::AUTH_ERR, "{a:?}");
    assert!(
        a.stderr.contains("could not be sent by e-mail"),
        "{}",
        a.stderr
    );
    assert!(
        took < Duration::from_secs(6),
        "refused after {took:?} (timeout 2 s)"
    );
    assert!(w.daemon.log().contains("email-send-failed"));
    drop(held);
}

#[test]
fn an_unproven_address_is_never_mailed_and_never_stored() {
    const USER: &str = "tf-mail-eve";
    let w = world(&[USER], "", REQUIRE);
    let out = w
        .bus
        .command_as(USER, artifacts().twofold())
        .args([
            "setup",
            "--method",
            "email",
            "--address",
            "stranger@else.example",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "no code typed: nothing stored");
    let sent = w.sink.wait_for(0).unwrap();
    assert_eq!(sent.to, "stranger@else.example");
    let status = admin(&w, &["admin", "status", USER, "--json"]);
    assert!(status.contains("\"enrolled\":false"), "{status}");
    // A login enrolls (the address was never proven): no code goes out.
    let a = w.pam.login_from(&w.bus, USER, RHOST, b"000000\n").unwrap();
    assert_ne!(a.code, pam::SUCCESS);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.sink.messages().len(), 1, "only the registration message");
    // Nor can a user have a code sent for someone else.
    let (ok, reply) = w.bus.dbus_send(
        Some(USER),
        "SendLoginCode",
        &["string:tf-mail-ann", "string:sshd", "string:"],
    );
    assert!(!ok, "{reply}");
    assert_eq!(w.sink.messages().len(), 1);
}

/// A process running as an enrolled user cannot add a method (and so a
/// lasting way in) without a current code from the method the user has.
#[test]
fn a_second_method_needs_a_current_code() {
    const USER: &str = "tf-mail-ivy";
    let w = world(&[USER], "resend_interval_secs = 0\n", REQUIRE);
    let app = enroll(&w.bus, USER).unwrap();
    let before = w.sink.messages().len();
    let (ok, reply) = w.bus.dbus_send(
        Some(USER),
        "BeginEmailEnrollment",
        &["string:evil@else.example"],
    );
    assert!(!ok && reply.contains("AccessDenied"), "{reply}");
    // `twofold setup` asks for a current code first; a wrong one stops it.
    let out = {
        let mut c = w.bus.command_as(USER, artifacts().twofold());
        c.args([
            "setup",
            "--method",
            "email",
            "--address",
            "evil@else.example",
        ]);
        run_with_input(c, b"000000\n").unwrap()
    };
    assert_ne!(out.code, 0, "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.sink.messages().len(), before, "nothing was sent");
    let status = admin(&w, &["admin", "status", USER, "--json"]);
    assert!(status.contains("\"methods\":\"totp\""), "{status}");
    // With a current code it goes through.
    let proof = format!("{}\n", oathtool(&app.secret, 0).unwrap());
    let args = ["setup", "--method", "email", "--address", &address(USER)];
    twofold_mailed(&w, USER, &args, &proof);
    let status = admin(&w, &["admin", "status", USER, "--json"]);
    assert!(status.contains("\"methods\":\"totp,email\""), "{status}");
}

/// The seed's rollout: e-mail codes required from one date with the app
/// optional (an app code does not satisfy the rule), then either.
#[test]
fn email_required_with_the_app_optional() {
    const APP: &str = "tf-mail-fay";
    const BOTH: &str = "tf-mail-gus";
    let policy = "[default]\nmode = \"recommend\"\n\
        [[rule]]\nname = \"phase-2\"\ngroups = [\"tf-mailers\"]\nmode = \"recommend\"\n\
        [[rule.schedule]]\nfrom = 2020-01-01\nmode = \"require\"\nmethods = [\"email\"]\n\
        [[rule.schedule]]\nfrom = 2999-01-01\nmode = \"require\"\nmethods = [\"totp\", \"email\"]\n";
    for u in [APP, BOTH] {
        test_user(u).unwrap();
    }
    test_group("tf-mailers", &[APP, BOTH]).unwrap();
    let w = world(&[APP, BOTH], "resend_interval_secs = 0\n", policy);
    let explain = admin(&w, &["admin", "explain", APP, "--service", "sshd"]);
    assert!(explain.contains("methods today: email only"), "{explain}");

    // Enrolled with the app only: the password alone never adds a method.
    // The app code proves the user, then the login sets up e-mail codes.
    let app = enroll(&w.bus, APP).unwrap();
    let a = w
        .pam
        .login_from(
            &w.bus,
            APP,
            RHOST,
            format!("{}\nevil@else.example\n", "000000").as_bytes(),
        )
        .unwrap();
    assert_eq!(
        a.code,
        pam::AUTH_ERR,
        "a wrong app code adds nothing: {a:?}"
    );
    assert!(!a.stderr.contains("E-mail address"), "{}", a.stderr);
    let first = format!("{}\n{}\n", oathtool(&app.secret, 0).unwrap(), address(APP));
    let (a, mail) = mail_login(&w, APP, first.as_bytes(), |mail| {
        let mut rest = code_line(mail);
        rest.extend_from_slice(b"\n"); // "Press Enter to continue"
        rest
    });
    assert!(
        a.stdout.contains("now requires codes sent by e-mail"),
        "{}",
        a.stdout
    );
    assert!(a.stderr.contains("Verification code: "), "{}", a.stderr);
    assert!(a.stderr.contains("E-mail address"), "{}", a.stderr);
    assert_eq!(
        a.code,
        pam::SUCCESS,
        "enrolled; the stand-in password decides: {a:?}"
    );
    assert_eq!(mail.unwrap().to, address(APP));
    let status = admin(&w, &["admin", "status", APP, "--json"]);
    assert!(status.contains("totp,email"), "{status}");
    // Now an app code is refused and an e-mailed one accepted.
    let (a, _) = mail_login(&w, APP, b"", |_| {
        format!("{}\n", oathtool(&app.secret, 1).unwrap()).into_bytes()
    });
    assert_eq!(a.code, pam::AUTH_ERR, "app code under e-mail only: {a:?}");
    let (a, _) = mail_login(&w, APP, b"", code_line);
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");

    // Not enrolled at all: e-mail is the only choice offered.
    let (a, _) = mail_login(
        &w,
        BOTH,
        format!("{}\n", address(BOTH)).as_bytes(),
        |mail| {
            let mut rest = code_line(mail);
            rest.extend_from_slice(b"\n");
            rest
        },
    );
    assert!(
        !a.stderr.contains("(1) an authenticator app"),
        "{}",
        a.stderr
    );
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    let report = admin(&w, &["admin", "report", "--json"]);
    let row = report.lines().find(|l| l.contains(BOTH)).unwrap();
    assert!(row.contains("\"method\":\"email\""), "{row}");
}

/// Under `require` with both methods allowed, an unenrolled user chooses.
#[test]
fn enrollment_at_login_offers_the_choice() {
    const USER: &str = "tf-mail-hal";
    let w = world(&[USER], "", REQUIRE);
    let answers = format!("2\n{}\n", address(USER));
    let (a, mail) = mail_login(&w, USER, answers.as_bytes(), |mail| {
        let mut rest = code_line(mail);
        rest.extend_from_slice(b"\n");
        rest
    });
    assert!(
        a.stderr
            .contains("(1) an authenticator app or (2) codes sent by e-mail"),
        "{}",
        a.stderr
    );
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    assert!(mail.is_some());
    let status = admin(&w, &["admin", "status", USER, "--json"]);
    assert!(status.contains("\"methods\":\"email\""), "{status}");
}

/// STARTTLS and implicit TLS to a relay whose certificate twofoldd trusts
/// (`SSL_CERT_FILE`, as OpenSSL reads it), and a refusal when it does not.
#[test]
fn tls_to_the_relay_is_verified() {
    const USER: &str = "tf-mail-jo";
    test_user(USER).unwrap();
    let bus = Bus::start().unwrap();
    for (tls, security) in [(SinkTls::Starttls, "starttls"), (SinkTls::Implicit, "tls")] {
        let sink = SmtpSink::start_with(tls).unwrap();
        let config = format!(
            "[email]\ntransport = \"smtp\"\nsmtp_host = \"localhost\"\nsmtp_port = {}\nsmtp_security = \"{security}\"\ntimeout_secs = 5\n",
            sink.port
        );
        let cert = sink.cert_path();
        let trusted =
            Daemon::start_with_env(&bus, &config, &[("SSL_CERT_FILE", cert.to_str().unwrap())])
                .unwrap();
        let out = {
            let mut c = bus.command_as(USER, artifacts().twofold());
            c.args(["setup", "--method", "email", "--address", &address(USER)]);
            run_with_input(c, b"").unwrap()
        };
        let mail = sink.wait_for(0);
        assert!(
            mail.is_ok(),
            "{security}: nothing delivered: {out:?}\n{}",
            trusted.log()
        );
        assert_eq!(mail.unwrap().to, address(USER));
        drop(trusted);
        // The same relay, its certificate not trusted: refused, nothing sent.
        let untrusted = Daemon::start(&bus, &config).unwrap();
        let out = {
            let mut c = bus.command_as(USER, artifacts().twofold());
            c.args(["setup", "--method", "email", "--address", &address(USER)]);
            run_with_input(c, b"").unwrap()
        };
        assert_ne!(out.code, 0);
        assert!(
            out.stderr.contains("could not be sent by e-mail"),
            "{security}: {out:?}"
        );
        assert!(
            untrusted.log().contains("email-send-failed"),
            "{}",
            untrusted.log()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sink.messages().len(), 1, "{security}: one message only");
    }
}
