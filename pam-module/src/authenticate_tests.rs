//! The flow with a scripted host and daemon: each test lists what the user
//! sees and types, and the scripted host checks nothing is left over.

use super::*;
use crate::daemon::{SYSTEM_BUS_ADDRESS, bus_address};
use crate::host::{NoAnswer, remote_host, user_lookup_failed};
use std::cell::RefCell;
use std::collections::VecDeque;
use twofold_protocol::{EnrollmentOffer, SecretString, VerifyReply};
use zeroize::Zeroizing;

#[derive(Debug, PartialEq)]
enum Step {
    Prompt(&'static str, Result<&'static [u8], PamResultCode>),
    /// A prompt whose text contains the first field.
    PromptContaining(&'static str, Result<&'static [u8], PamResultCode>),
    /// Shown text containing this.
    Show(Shown, &'static str),
    /// Shown text equal to this.
    ShowExact(Shown, &'static str),
}

struct Scripted {
    steps: VecDeque<Step>,
    logs: Vec<(Priority, String)>,
    /// As under PAM_SILENT: info messages would be dropped.
    silent: bool,
    locale_is_utf8: Option<bool>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: steps.into(),
            logs: Vec::new(),
            silent: false,
            locale_is_utf8: None,
        }
    }
}

impl Scripted {
    /// Some warning was logged that contains every one of `parts`.
    fn assert_warned(&self, parts: &[&str]) {
        assert!(
            self.logs
                .iter()
                .any(|(p, l)| *p == Priority::Warning && parts.iter().all(|part| l.contains(part))),
            "no warning with {parts:?} in {:?}",
            self.logs
        );
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.steps.is_empty(), "steps not reached: {:?}", self.steps);
        }
    }
}

impl Host for Scripted {
    fn prompt_visible(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer> {
        self.prompt_hidden(prompt)
    }

    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer> {
        match self.steps.pop_front() {
            Some(Step::Prompt(expected, answer)) => {
                assert_eq!(prompt, expected);
                answer.map(|a| Zeroizing::new(a.to_vec())).map_err(NoAnswer)
            }
            Some(Step::PromptContaining(part, answer)) => {
                assert!(prompt.contains(part), "{prompt:?} lacks {part:?}");
                answer.map(|a| Zeroizing::new(a.to_vec())).map_err(NoAnswer)
            }
            other => panic!("prompt {prompt:?} where the script has {other:?}"),
        }
    }

    fn show(&mut self, kind: Shown, text: &str) {
        match self.steps.pop_front() {
            Some(Step::Show(k, expected)) => {
                assert_eq!(k, kind);
                assert!(text.contains(expected), "{text:?} lacks {expected:?}");
            }
            Some(Step::ShowExact(k, expected)) => {
                assert_eq!(k, kind);
                assert_eq!(text, expected);
            }
            other => panic!("show {kind:?} {text:?} where the script has {other:?}"),
        }
    }

    fn shows_info(&self) -> bool {
        !self.silent
    }

    fn locale_is_utf8(&self) -> Option<bool> {
        self.locale_is_utf8
    }

    fn log(&mut self, priority: Priority, text: &str) {
        self.logs.push((priority, text.to_string()));
    }
}

#[derive(Default)]
struct FakeDaemon {
    plan: Option<LoginPlan>,
    plan_error: Option<fn() -> zbus::Error>,
    reply: Option<Result<VerifyReply, &'static str>>,
    verified: RefCell<Vec<String>>,
    /// What `EnrollAtLogin` answers; `None`: it must not be called.
    offer: Option<Result<EnrollmentOffer, fn() -> TwofoldError>>,
    /// What each `ConfirmAtLogin` answers, in order; it must not be called more.
    confirm: RefCell<VecDeque<Result<Vec<SecretString>, TwofoldError>>>,
    enroll_asked: RefCell<Vec<(String, String, String)>>,
    confirmed: RefCell<Vec<(String, String)>>,
    /// What `SendLoginCode` answers; `None`: it must not be called.
    send: Option<Result<String, fn() -> TwofoldError>>,
    sends: RefCell<u32>,
}

impl FakeDaemon {
    /// A daemon whose `BeginLogin` fails with `error`.
    fn failing_begin_login(error: fn() -> zbus::Error) -> FakeDaemon {
        FakeDaemon {
            plan_error: Some(error),
            ..Default::default()
        }
    }
}

impl Daemon for FakeDaemon {
    fn begin_login(&self, _login: &Login) -> Result<LoginPlan, TwofoldError> {
        if let Some(error) = self.plan_error {
            return Err(TwofoldError::ZBus(error()));
        }
        self.plan
            .clone()
            .ok_or_else(|| TwofoldError::UnknownUser("no such user".into()))
    }

    fn verify(&self, _login: &Login, code: &str) -> Result<VerifyReply, TwofoldError> {
        self.verified.borrow_mut().push(code.to_string());
        match &self.reply {
            Some(Ok(r)) => Ok(r.clone()),
            Some(Err(m)) => Err(TwofoldError::Internal((*m).into())),
            None => Err(TwofoldError::ZBus(zbus::Error::InputOutput(
                std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            ))),
        }
    }

    fn enroll_at_login(&self, login: &Login) -> Result<EnrollmentOffer, TwofoldError> {
        self.enroll_asked.borrow_mut().push((
            login.user.clone(),
            login.service.clone(),
            login.rhost.clone(),
        ));
        match &self.offer {
            Some(Ok(offer)) => Ok(offer.clone()),
            Some(Err(error)) => Err(error()),
            None => panic!("EnrollAtLogin was not expected"),
        }
    }

    fn confirm_at_login(
        &self,
        login: &Login,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        self.confirmed
            .borrow_mut()
            .push((login.user.clone(), code.into()));
        match self.confirm.borrow_mut().pop_front() {
            Some(answer) => answer,
            None => panic!("ConfirmAtLogin was not expected"),
        }
    }
    fn send_login_code(&self, _login: &Login) -> Result<String, TwofoldError> {
        *self.sends.borrow_mut() += 1;
        match &self.send {
            Some(Ok(prompt)) => Ok(prompt.clone()),
            Some(Err(error)) => Err(error()),
            None => panic!("SendLoginCode was not expected"),
        }
    }
    fn email_enroll_at_login(
        &self,
        _login: &Login,
        _address: &str,
    ) -> Result<String, TwofoldError> {
        panic!("EmailEnrollAtLogin was not expected")
    }
    fn confirm_email_at_login(
        &self,
        _login: &Login,
        _code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        panic!("ConfirmEmailAtLogin was not expected")
    }
}

fn login(user: &str) -> PamItems {
    PamItems {
        user: Ok(user.into()),
        service: "sshd".into(),
        rhost: "192.0.2.7".into(),
    }
}

fn ask() -> Option<LoginPlan> {
    Some(LoginPlan::new(LoginAction::AskCode, String::new()))
}

fn reply(outcome: VerifyOutcome, message: &str) -> Option<Result<VerifyReply, &'static str>> {
    Some(Ok(VerifyReply {
        outcome,
        message: message.into(),
    }))
}

fn run_with(
    host: &mut Scripted,
    options: &Options,
    login: &PamItems,
    daemon: FakeDaemon,
) -> (PamResultCode, Vec<String>) {
    let (code, daemon) = run_fake(host, options, login, daemon);
    let verified = daemon.verified.borrow().clone();
    (code, verified)
}

/// Run, and give the daemon back to look at what it was asked.
fn run_fake(
    host: &mut Scripted,
    options: &Options,
    login: &PamItems,
    daemon: FakeDaemon,
) -> (PamResultCode, std::rc::Rc<FakeDaemon>) {
    let daemon = std::rc::Rc::new(daemon);
    let d = daemon.clone();
    let code = run(host, options, login, move || Ok(RcDaemon(d)));
    (code, daemon)
}

struct RcDaemon(std::rc::Rc<FakeDaemon>);

impl Daemon for RcDaemon {
    fn begin_login(&self, l: &Login) -> Result<LoginPlan, TwofoldError> {
        self.0.begin_login(l)
    }
    fn verify(&self, l: &Login, c: &str) -> Result<VerifyReply, TwofoldError> {
        self.0.verify(l, c)
    }
    fn enroll_at_login(&self, l: &Login) -> Result<EnrollmentOffer, TwofoldError> {
        self.0.enroll_at_login(l)
    }
    fn confirm_at_login(&self, l: &Login, c: &str) -> Result<Vec<SecretString>, TwofoldError> {
        self.0.confirm_at_login(l, c)
    }
    fn send_login_code(&self, l: &Login) -> Result<String, TwofoldError> {
        self.0.send_login_code(l)
    }
    fn email_enroll_at_login(&self, l: &Login, a: &str) -> Result<String, TwofoldError> {
        self.0.email_enroll_at_login(l, a)
    }
    fn confirm_email_at_login(
        &self,
        l: &Login,
        c: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        self.0.confirm_email_at_login(l, c)
    }
}

fn either() -> Option<LoginPlan> {
    let mut plan = LoginPlan::new(LoginAction::AskCode, String::new());
    plan.prompt = "Code (or Enter for e-mail): ".into();
    plan.email = "a***@example.com".into();
    Some(plan)
}

#[test]
fn an_empty_answer_asks_for_an_email_code_when_offered() {
    let mut host = Scripted::new(vec![
        Step::Prompt("Code (or Enter for e-mail): ", Ok(b"")),
        Step::Prompt("Sent to a***: ", Ok(b"654321")),
    ]);
    let daemon = FakeDaemon {
        plan: either(),
        send: Some(Ok("Sent to a***: ".into())),
        reply: reply(VerifyOutcome::Accepted, ""),
        ..Default::default()
    };
    let (code, daemon) = run_fake(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    assert_eq!(*daemon.sends.borrow(), 1);
    assert_eq!(*daemon.verified.borrow(), ["654321"]);
}

#[test]
fn an_empty_answer_is_an_error_when_no_email_is_offered() {
    let mut host = Scripted::new(vec![
        Step::Prompt(PROMPT, Ok(b"")),
        Step::Show(
            Shown::Error,
            twofold_protocol::code::CodeError::Empty.user_message(),
        ),
    ]);
    let daemon = FakeDaemon {
        plan: ask(),
        ..Default::default()
    };
    let (code, daemon) = run_fake(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    assert_eq!(*daemon.sends.borrow(), 0);
    assert!(daemon.verified.borrow().is_empty());
}

#[test]
fn send_email_plans_send_first_and_a_failed_send_still_asks() {
    let plan = Some(LoginPlan::new(LoginAction::SendEmail, String::new()));
    let mut host = Scripted::new(vec![Step::Prompt("Sent: ", Ok(b"111222"))]);
    let daemon = FakeDaemon {
        plan: plan.clone(),
        send: Some(Ok("Sent: ".into())),
        reply: reply(VerifyOutcome::Accepted, ""),
        ..Default::default()
    };
    let (code, _) = run_fake(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_SUCCESS);

    // No mail could go out: the user is told, and may still type a code
    // sent earlier or a backup code.
    let host = Scripted::new(vec![
        Step::Show(Shown::Error, "Relay down."),
        Step::Prompt(crate::authenticate::NOT_SENT_PROMPT, Ok(b"abcde-fghjk")),
        Step::Show(Shown::Info, "Backup code accepted."),
    ]);
    let daemon = FakeDaemon {
        plan: plan.clone(),
        send: Some(Err(|| TwofoldError::DeliveryFailed("Relay down.".into()))),
        reply: reply(VerifyOutcome::AcceptedBackupCode, "Backup code accepted."),
        ..Default::default()
    };
    let mut host_ok = host;
    let (code, daemon) = run_fake(&mut host_ok, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    assert_eq!(daemon.verified.borrow().len(), 1);

    // Any other error refuses without a prompt.
    let mut host = Scripted::new(vec![Step::Show(Shown::Error, "No.")]);
    let daemon = FakeDaemon {
        plan,
        send: Some(Err(|| TwofoldError::InvalidInput("No.".into()))),
        ..Default::default()
    };
    let (code, daemon) = run_fake(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    assert!(daemon.verified.borrow().is_empty());
}

#[test]
fn right_code_succeeds_and_is_sent_normalized() {
    let mut host = Scripted::new(vec![Step::Prompt(PROMPT, Ok(b"123 456"))]);
    let daemon = FakeDaemon {
        plan: ask(),
        reply: reply(VerifyOutcome::Accepted, ""),
        ..Default::default()
    };
    let (code, sent) = run_with(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    assert_eq!(sent, ["123456"]);
}

#[test]
fn wrong_and_replayed_codes_are_auth_errors_with_the_daemons_words() {
    for outcome in [
        VerifyOutcome::Wrong,
        VerifyOutcome::Replayed,
        VerifyOutcome::Throttled,
    ] {
        let mut host = Scripted::new(vec![
            Step::Prompt(PROMPT, Ok(b"654321")),
            Step::Show(Shown::Error, "Nope."),
        ]);
        let daemon = FakeDaemon {
            plan: ask(),
            reply: reply(outcome, "Nope."),
            ..Default::default()
        };
        let (code, _) = run_with(&mut host, &Options::default(), &login("alice"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{outcome:?}");
    }
}

#[test]
fn malformed_input_never_reaches_the_daemon() {
    let inputs: [&'static [u8]; 5] = [b"", b"12a456", b"\xff\xfe\x00", &[b'7'; 4096], b"12345"];
    for input in inputs {
        let mut host = Scripted::new(vec![
            Step::Prompt(PROMPT, Ok(input)),
            Step::Show(Shown::Error, "authenticator app"),
        ]);
        let daemon = FakeDaemon {
            plan: ask(),
            reply: reply(VerifyOutcome::Accepted, ""),
            ..Default::default()
        };
        let (code, sent) = run_with(&mut host, &Options::default(), &login("alice"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
        assert!(sent.is_empty());
    }
}

#[test]
fn refused_user_is_refused_without_a_prompt() {
    let mut host = Scripted::new(vec![Step::Show(Shown::Error, "Try again in")]);
    let plan = Some(LoginPlan::new(
        LoginAction::Refuse,
        "Try again in 5 minutes.".into(),
    ));
    let (code, _) = run_with(
        &mut host,
        &Options::default(),
        &login("bob"),
        FakeDaemon {
            plan,
            ..Default::default()
        },
    );
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
}

/// Whatever the application's conversation returned instead of an answer,
/// the module's result is PAM_CONV_ERR: an application's PAM_IGNORE (or
/// PAM_SUCCESS) passed on would let `[ignore=ignore]` stacks, and a
/// `required` line after pam_permit, go on as if no code had been asked for.
#[test]
fn a_conversation_without_an_answer_refuses_whatever_the_application_returned() {
    use PamResultCode::{PAM_BUF_ERR, PAM_CONV_ERR, PAM_IGNORE, PAM_SUCCESS};
    for returned in [PAM_CONV_ERR, PAM_IGNORE, PAM_SUCCESS, PAM_BUF_ERR] {
        let mut host = Scripted::new(vec![Step::Prompt(PROMPT, Err(returned))]);
        let daemon = FakeDaemon {
            plan: ask(),
            reply: reply(VerifyOutcome::Accepted, ""),
            ..Default::default()
        };
        let (code, sent) = run_with(&mut host, &Options::default(), &login("alice"), daemon);
        assert_eq!(code, PAM_CONV_ERR);
        assert!(sent.is_empty());
        // A refusal, logged with whom it was for.
        host.assert_warned(&["for user alice from 192.0.2.7", "login refused"]);
    }
}

#[test]
fn malformed_input_is_logged_with_the_user_and_the_remote_host() {
    let mut host = Scripted::new(vec![
        Step::Prompt(PROMPT, Ok(b"12x456")),
        Step::Show(Shown::Error, ""),
    ]);
    let daemon = FakeDaemon {
        plan: ask(),
        ..Default::default()
    };
    let (code, sent) = run_with(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    assert!(sent.is_empty());
    host.assert_warned(&["malformed", "for user alice from 192.0.2.7"]);
}

#[test]
fn unknown_and_odd_user_names() {
    let mut host = Scripted::new(vec![]);
    let (code, _) = run_with(
        &mut host,
        &Options::default(),
        &login("ghost"),
        FakeDaemon::default(),
    );
    assert_eq!(code, PamResultCode::PAM_USER_UNKNOWN);
    for name in ["", "../../etc/shadow", "a b", "x\ny", &"a".repeat(300)] {
        let mut host = Scripted::new(vec![]);
        let (code, _) = run_with(
            &mut host,
            &Options::default(),
            &login(name),
            FakeDaemon::default(),
        );
        assert_eq!(code, PamResultCode::PAM_USER_UNKNOWN, "{name:?}");
    }
    let mut host = Scripted::new(vec![]);
    let bad = PamItems {
        user: Err(1),
        ..login("x")
    };
    let (code, _) = run_with(&mut host, &Options::default(), &bad, FakeDaemon::default());
    assert_eq!(code, PamResultCode::PAM_USER_UNKNOWN);
}

#[test]
fn backup_code_success_shows_what_is_left() {
    let mut host = Scripted::new(vec![
        Step::Prompt(PROMPT, Ok(b"ABCDE-FGHJK")),
        Step::Show(Shown::Info, "9 backup codes left"),
    ]);
    let daemon = FakeDaemon {
        plan: ask(),
        reply: reply(
            VerifyOutcome::AcceptedBackupCode,
            "Backup code accepted. 9 backup codes left.",
        ),
        ..Default::default()
    };
    let (code, sent) = run_with(&mut host, &Options::default(), &login("alice"), daemon);
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    assert_eq!(sent, ["abcdefghjk"]);
}

const SAFE: Options = Options {
    failmode: FailMode::Safe,
    debug: false,
    qr: crate::args::QrStyle::Auto,
};

fn io_error(kind: std::io::ErrorKind) -> zbus::Error {
    zbus::Error::InputOutput(std::sync::Arc::new(std::io::Error::from(kind)))
}

/// A failed connect(2) to the bus's socket, as zbus reports it.
fn connect_error(error: std::io::Error) -> zbus::Error {
    let address = zbus::Address::try_from("unix:path=/run/dbus/system_bus_socket");
    match address {
        Ok(address) => zbus::Error::Connection(std::sync::Arc::new(error), Box::new(address)),
        Err(e) => e,
    }
}

/// dbus-daemon's and dbus-broker's answer for a name nobody owns and no
/// activation file names: twofoldd is not installed.
fn service_unknown() -> zbus::Error {
    zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown(
        "The name is not activatable".into(),
    )))
}

fn timed_out() -> zbus::Error {
    io_error(std::io::ErrorKind::TimedOut)
}

#[test]
fn allowed_without_a_code_gets_the_notice_and_no_prompt() {
    let allow = |message: &str| Some(LoginPlan::new(LoginAction::Allow, message.into()));
    let mut host = Scripted::new(vec![Step::Show(Shown::Info, "twofold setup")]);
    let (code, sent) = run_with(
        &mut host,
        &Options::default(),
        &login("bob"),
        FakeDaemon {
            plan: allow("Run `twofold setup`"),
            ..Default::default()
        },
    );
    // No code was verified: the module must not grant access on its own.
    assert_eq!(code, PamResultCode::PAM_IGNORE);
    assert!(sent.is_empty());

    // Nothing to say (exempt, trusted network): nothing shown.
    let mut host = Scripted::new(vec![]);
    let (code, _) = run_with(
        &mut host,
        &Options::default(),
        &login("bob"),
        FakeDaemon {
            plan: allow(""),
            ..Default::default()
        },
    );
    assert_eq!(code, PamResultCode::PAM_IGNORE);
}

#[test]
fn no_bus_or_no_daemon_follows_failmode() {
    // The bus's socket is missing, or nothing listens on it.
    for kind in [
        std::io::ErrorKind::NotFound,
        std::io::ErrorKind::ConnectionRefused,
    ] {
        let down = || -> zbus::Result<FakeDaemon> { Err(connect_error(kind.into())) };
        let mut host = Scripted::new(vec![Step::Show(Shown::Error, "not available")]);
        let code = run(&mut host, &Options::default(), &login("alice"), down);
        assert_eq!(code, PamResultCode::PAM_AUTHINFO_UNAVAIL, "{kind:?}");

        // failmode=safe lets the rest of the stack decide (IGNORE), never SUCCESS.
        let mut host = Scripted::new(vec![]);
        let code = run(&mut host, &SAFE, &login("alice"), down);
        assert_eq!(code, PamResultCode::PAM_IGNORE, "{kind:?}");
        assert!(
            host.logs
                .iter()
                .any(|(p, l)| *p == Priority::Warning && l.contains("WITHOUT a second factor"))
        );
    }

    // A bus on which twofoldd is neither running nor activatable is the
    // same as no daemon.
    let no_owner = || FakeDaemon::failing_begin_login(service_unknown);
    let mut host = Scripted::new(vec![Step::Show(Shown::Error, "not available")]);
    let (code, _) = run_with(&mut host, &Options::default(), &login("alice"), no_owner());
    assert_eq!(code, PamResultCode::PAM_AUTHINFO_UNAVAIL);
    let mut host = Scripted::new(vec![]);
    let (code, _) = run_with(&mut host, &SAFE, &login("alice"), no_owner());
    assert_eq!(code, PamResultCode::PAM_IGNORE);
}

/// An installed twofoldd that fails to start is a daemon that is there but
/// broken: dbus-broker answers `NameHasNoOwner` ("Could not activate remote
/// peer"), dbus-daemon a `Spawn.*` error. Under failmode=safe that must
/// refuse, or whoever can make the daemon fail at start skips the code.
#[test]
fn a_twofoldd_that_fails_to_start_refuses_even_with_failmode_safe() {
    let broker = || {
        zbus::Error::FDO(Box::new(zbus::fdo::Error::NameHasNoOwner(
            "Could not activate remote peer 'org.twofold.Twofold1': activation request failed: unit is invalid"
                .into(),
        )))
    };
    let dbus_daemon = || {
        zbus::Error::FDO(Box::new(zbus::fdo::Error::SpawnChildExited(
            "Process org.twofold.Twofold1 exited with status 1".into(),
        )))
    };
    let errors: [fn() -> zbus::Error; 2] = [broker, dbus_daemon];
    for error in errors {
        for options in [Options::default(), SAFE] {
            let mut host = Scripted::new(vec![Step::Show(Shown::Error, "")]);
            let daemon = FakeDaemon::failing_begin_login(error);
            let (code, sent) = run_with(&mut host, &options, &login("alice"), daemon);
            assert_ne!(code, PamResultCode::PAM_IGNORE);
            assert_ne!(code, PamResultCode::PAM_SUCCESS);
            assert!(sent.is_empty());
        }
    }
}

/// Every other failure to connect is a bus that is there (full, silent,
/// dropping the handshake), or a host in trouble (no file descriptors left,
/// which whoever runs su can arrange with `ulimit -n`): failmode=safe must
/// not skip the code for whoever can cause one.
#[test]
fn any_other_failure_to_connect_refuses_even_with_failmode_safe() {
    let full = || {
        zbus::Error::FDO(Box::new(zbus::fdo::Error::LimitsExceeded(
            "The maximum number of active connections for UID 0 has been reached".into(),
        )))
    };
    let no_fds = || connect_error(std::io::Error::from_raw_os_error(libc::EMFILE));
    let reset = || io_error(std::io::ErrorKind::ConnectionReset);
    let denied = || connect_error(std::io::ErrorKind::PermissionDenied.into());
    let handshake = || zbus::Error::Handshake("Unexpected command from server".into());
    let errors: [fn() -> zbus::Error; 6] = [full, timed_out, no_fds, reset, denied, handshake];
    for error in errors {
        for options in [Options::default(), SAFE] {
            let mut host = Scripted::new(vec![Step::Show(Shown::Error, "not available")]);
            let connect = || -> zbus::Result<FakeDaemon> { Err(error()) };
            let code = run(&mut host, &options, &login("alice"), connect);
            assert_eq!(
                code,
                PamResultCode::PAM_AUTHINFO_UNAVAIL,
                "{options:?} {}",
                error()
            );
            assert!(!logged(&host, "WITHOUT a second factor"), "{:?}", host.logs);
        }
    }
}

/// Whether the module logged a line containing `needle`.
fn logged(host: &Scripted, needle: &str) -> bool {
    host.logs.iter().any(|(_, l)| l.contains(needle))
}

/// On twofoldd's socket the handshake goes out with `BeginLogin`: a socket
/// that takes the connection but refuses or never answers the
/// authentication is a failure to connect, refused as above, not a failed call.
#[test]
fn a_handshake_failing_with_the_first_call_refuses_as_a_failure_to_connect() {
    let refused = || zbus::Error::Handshake("the peer refused the authentication: REJECTED".into());
    let silent =
        || zbus::Error::Handshake("no answer to the authentication in time (timed out)".into());
    let errors: [fn() -> zbus::Error; 2] = [refused, silent];
    for error in errors {
        for options in [Options::default(), SAFE] {
            let mut host = Scripted::new(vec![Step::Show(Shown::Error, "not available")]);
            let daemon = FakeDaemon::failing_begin_login(error);
            let (code, sent) = run_with(&mut host, &options, &login("alice"), daemon);
            assert_eq!(code, PamResultCode::PAM_AUTHINFO_UNAVAIL, "{options:?}");
            assert!(sent.is_empty());
            assert!(
                logged(&host, "did not complete the authentication"),
                "{:?}",
                host.logs
            );
            assert!(!logged(&host, "WITHOUT a second factor"), "{:?}", host.logs);
        }
    }
}

#[test]
fn a_daemon_that_is_slow_or_dies_after_being_asked_refuses_even_with_failmode_safe() {
    for options in [Options::default(), SAFE] {
        // BeginLogin times out: a daemon exists, so this is no reason to let anyone in.
        let mut host = Scripted::new(vec![Step::Show(Shown::Error, "not available")]);
        let daemon = FakeDaemon::failing_begin_login(timed_out);
        let (code, _) = run_with(&mut host, &options, &login("alice"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");

        // The connection is lost during Verify.
        let mut host = Scripted::new(vec![
            Step::Prompt(PROMPT, Ok(b"123456")),
            Step::Show(Shown::Error, "not available"),
        ]);
        let daemon = FakeDaemon {
            plan: ask(),
            reply: None,
            ..Default::default()
        };
        let (code, _) = run_with(&mut host, &options, &login("alice"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");

        // The daemon answers with an error (unreadable state).
        let mut host = Scripted::new(vec![
            Step::Prompt(PROMPT, Ok(b"123456")),
            Step::Show(Shown::Error, "administrator"),
        ]);
        let daemon = FakeDaemon {
            plan: ask(),
            reply: Some(Err("Ask your administrator.")),
            ..Default::default()
        };
        let (code, _) = run_with(&mut host, &options, &login("alice"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");
    }
}

#[test]
fn the_bus_address_from_the_environment_is_ignored_under_setuid() {
    let env = || Some(std::ffi::OsString::from("unix:path=/tmp/attacker-bus"));
    assert_eq!(bus_address(false, env()), "unix:path=/tmp/attacker-bus");
    assert_eq!(bus_address(true, env()), SYSTEM_BUS_ADDRESS);
    assert_eq!(bus_address(false, None), SYSTEM_BUS_ADDRESS);
    assert_eq!(bus_address(false, Some("".into())), SYSTEM_BUS_ADDRESS);
}

// Enrollment at login (`LoginAction::Enroll`).

const ENROLL_MESSAGE: &str = "Your administrator requires two-factor authentication. \
Scan this QR code with your authenticator app, then type the code it shows.";
const OFFER_TEXT: &str = "Your administrator requires two-factor authentication. \
Scan this QR code with your authenticator app, then type the code it shows.\n\
\n\
█▀▀▀▀▀█ ▄▀ █\n\
█ ███ █ ▀▄ █\n\
\n\
Key URI: otpauth://totp/twofold:carol?secret=JBSWY3DPEHPK3PXP&issuer=twofold\n\
Or enter this key by hand: JBSW Y3DP EHPK 3PXP\n\
QR code garbled? Type A at the prompt for a plain-text one. \
Light background? Type I for one drawn dark on light.";
const NO_MATCH: &str =
    "That code does not match. Check the time on your phone and type the current code.";

fn enroll_plan() -> Option<LoginPlan> {
    Some(LoginPlan::new(LoginAction::Enroll, ENROLL_MESSAGE.into()))
}

fn offer() -> Option<Result<EnrollmentOffer, fn() -> TwofoldError>> {
    Some(Ok(EnrollmentOffer {
        qr_code: SecretString::new("█▀▀▀▀▀█ ▄▀ █\n█ ███ █ ▀▄ █\n".into()),
        qr_code_ascii: SecretString::new("##  ##\n  ##  \n".into()),
        uri: SecretString::new(
            "otpauth://totp/twofold:carol?secret=JBSWY3DPEHPK3PXP&issuer=twofold".into(),
        ),
        secret_base32: SecretString::new("JBSWY3DPEHPK3PXP".into()),
        expires_in_secs: 600,
    }))
}

fn backup_codes() -> Result<Vec<SecretString>, TwofoldError> {
    Ok(["0123456789", "abcdefghjk", "mnpqrstvwx"]
        .into_iter()
        .map(|c| SecretString::new(c.into()))
        .collect())
}

fn no_match() -> Result<Vec<SecretString>, TwofoldError> {
    Err(TwofoldError::InvalidInput(NO_MATCH.into()))
}

fn enrolling(confirm: Vec<Result<Vec<SecretString>, TwofoldError>>) -> FakeDaemon {
    FakeDaemon {
        plan: enroll_plan(),
        offer: offer(),
        confirm: RefCell::new(confirm.into()),
        ..Default::default()
    }
}

fn confirmed_codes(daemon: &FakeDaemon) -> Vec<String> {
    daemon
        .confirmed
        .borrow()
        .iter()
        .map(|(user, code)| {
            assert_eq!(user, "carol");
            code.clone()
        })
        .collect()
}

#[test]
fn enrollment_at_login_shows_the_key_then_the_backup_codes_and_ignores() {
    let mut host = Scripted::new(vec![
        Step::ShowExact(Shown::Info, OFFER_TEXT),
        Step::Prompt(PROMPT, Ok(b"123 456")),
        // The codes come inside a prompt, so that OpenSSH shows them (and
        // does not only log them); an empty answer (Enter) ends it.
        Step::Prompt(
            "Two-factor authentication is now set up.\n\n\
             Your backup codes, for when you do not have your phone:\n\
             1. 01234-56789\n\
             2. abcde-fghjk\n\
             3. mnpqr-stvwx\n\n\
             Each backup code works once. They are shown only now: write them down.\n\n\
             Press Enter once you have written them down: ",
            Ok(b""),
        ),
    ]);
    let (code, daemon) = run_fake(
        &mut host,
        &Options::default(),
        &login("carol"),
        enrolling(vec![backup_codes()]),
    );
    // Enrolling proves who holds the phone, not who the user is: the first
    // factor decides, so never SUCCESS.
    assert_eq!(code, PamResultCode::PAM_IGNORE);
    assert_eq!(confirmed_codes(&daemon), ["123456"]);
    assert_eq!(
        *daemon.enroll_asked.borrow(),
        [("carol".into(), "sshd".into(), "192.0.2.7".into())]
    );
    assert!(daemon.verified.borrow().is_empty());
}

#[test]
fn enrollment_at_login_allows_another_try_without_showing_the_key_again() {
    let mut host = Scripted::new(vec![
        Step::Show(Shown::Info, "Key URI: otpauth://"),
        Step::Prompt(PROMPT, Ok(b"111111")),
        Step::ShowExact(Shown::Error, NO_MATCH),
        Step::Prompt(PROMPT, Ok(b"222222")),
        Step::PromptContaining("now set up", Err(PamResultCode::PAM_CONV_ERR)),
    ]);
    let (code, daemon) = run_fake(
        &mut host,
        &Options::default(),
        &login("carol"),
        enrolling(vec![no_match(), backup_codes()]),
    );
    assert_eq!(code, PamResultCode::PAM_IGNORE);
    // Stored, but the user may not have seen the backup codes: logged.
    host.assert_warned(&["backup codes were acknowledged"]);
    assert_eq!(confirmed_codes(&daemon), ["111111", "222222"]);
}

#[test]
fn enrollment_at_login_gives_up_after_three_tries() {
    let mut host = Scripted::new(vec![
        Step::Show(Shown::Info, "JBSW Y3DP EHPK 3PXP"),
        Step::Prompt(PROMPT, Ok(b"111111")),
        Step::ShowExact(Shown::Error, NO_MATCH),
        Step::Prompt(PROMPT, Ok(b"222222")),
        Step::ShowExact(Shown::Error, NO_MATCH),
        Step::Prompt(PROMPT, Ok(b"333333")),
        Step::Show(Shown::Error, "Nothing was stored"),
    ]);
    let (code, daemon) = run_fake(
        &mut host,
        &Options::default(),
        &login("carol"),
        enrolling(vec![no_match(), no_match(), no_match()]),
    );
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    assert_eq!(confirmed_codes(&daemon), ["111111", "222222", "333333"]);
    assert!(
        host.logs
            .iter()
            .any(|(p, l)| *p == Priority::Warning && l.contains("after 3 tries"))
    );
}

#[test]
fn enrollment_at_login_counts_malformed_answers_but_never_sends_them() {
    let mut host = Scripted::new(vec![
        Step::Show(Shown::Info, "Key URI"),
        Step::Prompt(PROMPT, Ok(b"12a456")),
        Step::Show(Shown::Error, "not a code from your authenticator app"),
        // A backup code cannot confirm a new key.
        Step::Prompt(PROMPT, Ok(b"ABCDE-FGHJK")),
        Step::Show(Shown::Error, "not a code from your authenticator app"),
        Step::Prompt(PROMPT, Ok(b"")),
        Step::Show(Shown::Error, "Nothing was stored"),
    ]);
    let (code, daemon) = run_fake(
        &mut host,
        &Options::default(),
        &login("carol"),
        enrolling(vec![]),
    );
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    assert!(confirmed_codes(&daemon).is_empty());
}

#[test]
fn enrollment_at_login_returns_a_conversation_failure() {
    let mut host = Scripted::new(vec![
        Step::Show(Shown::Info, "Key URI"),
        Step::Prompt(PROMPT, Ok(b"111111")),
        Step::Show(Shown::Error, "does not match"),
        Step::Prompt(PROMPT, Err(PamResultCode::PAM_CONV_ERR)),
    ]);
    let (code, daemon) = run_fake(
        &mut host,
        &Options::default(),
        &login("carol"),
        enrolling(vec![no_match()]),
    );
    assert_eq!(code, PamResultCode::PAM_CONV_ERR);
    assert_eq!(confirmed_codes(&daemon), ["111111"]);
}

/// The error zbus gives for a method the daemon does not serve (with these
/// arguments): an older or newer twofoldd.
fn unknown_method() -> zbus::Error {
    zbus::Error::FDO(Box::new(zbus::fdo::Error::UnknownMethod(
        "Unknown method 'EnrollAtLogin'".into(),
    )))
}

#[test]
fn a_daemon_of_another_version_is_named_as_such() {
    use crate::steps::version_mismatch;
    assert!(version_mismatch(&unknown_method()));
    assert!(version_mismatch(&zbus::Error::FDO(Box::new(
        zbus::fdo::Error::InvalidArgs("signature".into())
    ))));
    assert!(!version_mismatch(&timed_out()));
}

#[test]
fn enrollment_at_login_refuses_on_daemon_errors_whatever_the_failmode() {
    for options in [Options::default(), SAFE] {
        // EnrollAtLogin fails.
        let mut host = Scripted::new(vec![Step::Show(Shown::Error, "administrator")]);
        let daemon = FakeDaemon {
            plan: enroll_plan(),
            offer: Some(Err(|| {
                TwofoldError::Internal("Ask your administrator.".into())
            })),
            ..Default::default()
        };
        let (code, _) = run_fake(&mut host, &options, &login("carol"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");

        // EnrollAtLogin times out.
        let mut host = Scripted::new(vec![Step::Show(Shown::Error, "not available")]);
        let daemon = FakeDaemon {
            plan: enroll_plan(),
            offer: Some(Err(|| TwofoldError::ZBus(timed_out()))),
            ..Default::default()
        };
        let (code, _) = run_fake(&mut host, &options, &login("carol"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");

        // A daemon of another version (still running after an upgrade) does
        // not know the call: the message says so and what to do.
        let mut host = Scripted::new(vec![Step::Show(Shown::Error, "systemctl restart twofoldd")]);
        let daemon = FakeDaemon {
            plan: enroll_plan(),
            offer: Some(Err(|| TwofoldError::ZBus(unknown_method()))),
            ..Default::default()
        };
        let (code, _) = run_fake(&mut host, &options, &login("carol"), daemon);
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");

        // The offer expired before the code came: no further try.
        let mut host = Scripted::new(vec![
            Step::Show(Shown::Info, "Key URI"),
            Step::Prompt(PROMPT, Ok(b"123456")),
            Step::Show(Shown::Error, "expired"),
        ]);
        let expired = Err(TwofoldError::NoPendingEnrollment(
            "The key expired; log in again.".into(),
        ));
        let (code, daemon) = run_fake(
            &mut host,
            &options,
            &login("carol"),
            enrolling(vec![expired]),
        );
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{options:?}");
        assert_eq!(confirmed_codes(&daemon), ["123456"]);
    }
}

#[test]
fn enrollment_at_login_is_refused_when_info_messages_are_dropped() {
    // PAM_SILENT: the key could not be shown, so do not ask for a code from it.
    let mut host = Scripted::new(vec![Step::Show(Shown::Error, "Log in another way")]);
    host.silent = true;
    let daemon = FakeDaemon {
        plan: enroll_plan(),
        ..Default::default() // EnrollAtLogin must not be called
    };
    let (code, daemon) = run_fake(&mut host, &Options::default(), &login("carol"), daemon);
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    assert!(daemon.enroll_asked.borrow().is_empty());
}

#[test]
fn an_enrollment_removed_while_the_prompt_is_open_refuses() {
    // An admin reset between BeginLogin and Verify: the plan no longer holds.
    let mut host = Scripted::new(vec![
        Step::Prompt(PROMPT, Ok(b"123456")),
        Step::Show(Shown::Error, "Log in again"),
    ]);
    let daemon = FakeDaemon {
        plan: ask(),
        reply: reply(VerifyOutcome::NotEnrolled, "not set up"),
        ..Default::default()
    };
    let (code, _) = run_with(&mut host, &Options::default(), &login("bob"), daemon);
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
}

#[test]
fn answering_a_redraws_the_qr_code_in_ascii_without_costing_a_try() {
    let mut host = Scripted::new(vec![
        Step::Show(Shown::Info, "█▀▀▀▀▀█"),
        Step::Prompt(PROMPT, Ok(b" a ")),
        Step::ShowExact(
            Shown::Info,
            "##  ##\n  ##  \n\n\
             Key URI: otpauth://totp/twofold:carol?secret=JBSWY3DPEHPK3PXP&issuer=twofold\n\
             Or enter this key by hand: JBSW Y3DP EHPK 3PXP",
        ),
        Step::Prompt(PROMPT, Ok(b"111111")),
        Step::ShowExact(Shown::Error, NO_MATCH),
        // Already ASCII: "A" is no code, and counts.
        Step::Prompt(PROMPT, Ok(b"A")),
        Step::Show(Shown::Error, "not a code from your authenticator app"),
        Step::Prompt(PROMPT, Ok(b"222222")),
        Step::PromptContaining("now set up", Ok(b"")),
    ]);
    let (code, daemon) = run_fake(
        &mut host,
        &Options::default(),
        &login("carol"),
        enrolling(vec![no_match(), backup_codes()]),
    );
    assert_eq!(code, PamResultCode::PAM_IGNORE);
    assert_eq!(confirmed_codes(&daemon), ["111111", "222222"]);
}

#[test]
fn ascii_comes_first_when_asked_for_or_when_the_locale_is_not_utf8() {
    use crate::args::QrStyle;
    let ascii = "##  ##\n  ##  \n\nKey URI";
    let unicode = "█ ███ █ ▀▄ █\n\nKey URI";
    let cases = [
        (QrStyle::Ascii, Some(true), ascii),
        (QrStyle::Auto, Some(false), ascii),
        (QrStyle::Auto, Some(true), unicode),
        // sshd: no locale in the PAM process.
        (QrStyle::Auto, None, unicode),
        (QrStyle::Unicode, Some(false), unicode),
    ];
    for (qr, locale, drawing) in cases {
        let mut host = Scripted::new(vec![
            Step::Show(Shown::Info, drawing),
            Step::Prompt(PROMPT, Err(PamResultCode::PAM_CONV_ERR)),
        ]);
        host.locale_is_utf8 = locale;
        let options = Options {
            qr,
            ..Options::default()
        };
        let (code, _) = run_fake(&mut host, &options, &login("carol"), enrolling(vec![]));
        assert_eq!(code, PamResultCode::PAM_CONV_ERR);
    }
}

#[test]
fn a_host_name_gives_way_to_sshds_numeric_peer_address() {
    let conn = Some("192.0.2.7 50022 192.0.2.1 22");
    assert_eq!(remote_host("host.example".into(), conn), "192.0.2.7");
    assert_eq!(remote_host("198.51.100.1".into(), conn), "198.51.100.1");
    assert_eq!(remote_host("2001:db8::1".into(), conn), "2001:db8::1");
    // No remote host stays none; a name stays a name without a usable address.
    assert_eq!(remote_host(String::new(), conn), "");
    assert_eq!(remote_host("host.example".into(), None), "host.example");
    assert_eq!(
        remote_host("host.example".into(), Some("not-an-address 1 2 3")),
        "host.example"
    );
}

/// The enrollment prompts too (the key's, the choice of method, the
/// e-mail address): whatever the application returned instead of an
/// answer, PAM_CONV_ERR, and nothing is confirmed.
#[test]
fn enrollment_prompts_without_an_answer_refuse_whatever_the_application_returned() {
    use crate::enroll::{ADDRESS_PROMPT, CHOICE_PROMPT};
    use PamResultCode::{PAM_CONV_ERR, PAM_IGNORE, PAM_SUCCESS};
    use twofold_protocol::Method;
    let both_methods = || {
        let mut daemon = enrolling(vec![]);
        daemon.offer = None;
        if let Some(plan) = daemon.plan.as_mut() {
            plan.methods = vec![Method::Totp, Method::Email];
        }
        daemon
    };
    let codes: [fn() -> PamResultCode; 3] = [|| PAM_IGNORE, || PAM_SUCCESS, || PAM_CONV_ERR];
    for returned in codes {
        let scripts: [(Vec<Step>, FakeDaemon); 3] = [
            (
                vec![
                    Step::Show(Shown::Info, "Key URI"),
                    Step::Prompt(PROMPT, Err(returned())),
                ],
                enrolling(vec![]),
            ),
            (
                vec![
                    Step::Show(Shown::Info, ENROLL_MESSAGE),
                    Step::Prompt(CHOICE_PROMPT, Err(returned())),
                ],
                both_methods(),
            ),
            (
                vec![
                    Step::Show(Shown::Info, ENROLL_MESSAGE),
                    Step::Prompt(CHOICE_PROMPT, Ok(b"2")),
                    Step::Show(Shown::Info, ""),
                    Step::Prompt(ADDRESS_PROMPT, Err(returned())),
                ],
                both_methods(),
            ),
        ];
        for (steps, daemon) in scripts {
            let mut host = Scripted::new(steps);
            let (code, daemon) = run_fake(&mut host, &Options::default(), &login("carol"), daemon);
            assert_eq!(code, PAM_CONV_ERR, "{:?}", returned());
            assert!(daemon.confirmed.borrow().is_empty());
            host.assert_warned(&["for user carol"]);
        }
    }
}

#[test]
fn a_failed_user_lookup_never_passes_on_a_success_like_code() {
    use PamResultCode::{
        PAM_ABORT, PAM_BUF_ERR, PAM_CONV_ERR, PAM_IGNORE, PAM_SUCCESS, PAM_SYSTEM_ERR,
    };
    assert_eq!(user_lookup_failed(PAM_IGNORE), PAM_CONV_ERR);
    assert_eq!(user_lookup_failed(PAM_SUCCESS), PAM_CONV_ERR);
    assert_eq!(
        user_lookup_failed(PamResultCode::PAM_NEW_AUTHTOK_REQD),
        PAM_CONV_ERR
    );
    for own in [PAM_SYSTEM_ERR, PAM_BUF_ERR, PAM_CONV_ERR, PAM_ABORT] {
        let kept = user_lookup_failed(own);
        assert_ne!(kept, PAM_SUCCESS);
        assert_ne!(kept, PAM_IGNORE);
    }
    assert_eq!(user_lookup_failed(PAM_BUF_ERR), PAM_BUF_ERR);
}

/// No typed answer reaches the module's log, even with `debug` on: not an
/// accepted, wrong or backup code, and not malformed input (whose refusal
/// is logged, with the user and the remote host, but not what was typed).
#[test]
fn no_typed_code_reaches_the_log_even_with_debug() {
    let debug = Options {
        debug: true,
        ..Options::default()
    };
    // What was typed, the daemon's answer, what the user is then shown.
    let cases: [(&[u8], VerifyOutcome, Option<Shown>); 4] = [
        (b"123456", VerifyOutcome::Accepted, None),
        (b"654321", VerifyOutcome::Wrong, Some(Shown::Error)),
        (
            b"abcde-fghjk",
            VerifyOutcome::AcceptedBackupCode,
            Some(Shown::Info),
        ),
        (b"12x456", VerifyOutcome::Wrong, Some(Shown::Error)),
    ];
    for (typed, outcome, shown) in cases {
        let mut steps = vec![Step::Prompt(PROMPT, Ok(typed))];
        steps.extend(shown.map(|kind| Step::Show(kind, "")));
        let mut host = Scripted::new(steps);
        let daemon = FakeDaemon {
            plan: ask(),
            reply: reply(
                outcome,
                if shown.is_some() {
                    "The daemon's words."
                } else {
                    ""
                },
            ),
            ..Default::default()
        };
        run_with(&mut host, &debug, &login("alice"), daemon);
        let typed = String::from_utf8_lossy(typed);
        assert!(!host.logs.is_empty(), "debug logs nothing for {typed}");
        for (_, line) in &host.logs {
            assert!(!line.contains(typed.as_ref()), "{typed} logged: {line}");
            assert!(
                !line.contains(&typed.replace('-', "")),
                "{typed} logged: {line}"
            );
        }
    }
}

/// A rejected user name is often a password typed at the login prompt (the
/// module runs after the password check): the log says only its length.
#[test]
fn a_password_typed_as_the_user_name_is_not_logged() {
    let typed = "Tr0ub4dor&3 horse";
    let mut host = Scripted::new(vec![]);
    let (code, _) = run_with(
        &mut host,
        &Options::default(),
        &login(typed),
        FakeDaemon::default(),
    );
    assert_eq!(code, PamResultCode::PAM_USER_UNKNOWN);
    assert!(!host.logs.is_empty(), "the refusal is logged");
    for (_, line) in &host.logs {
        assert!(!line.contains("Tr0ub4dor"), "logged: {line}");
        assert!(!line.contains("horse"), "logged: {line}");
    }
    assert!(
        logged(&host, &format!("{} bytes", typed.len())),
        "{:?}",
        host.logs
    );
}
