//! The login flow, over a `Host` (the PAM conversation and log) and a
//! `Daemon` (twofoldd on the bus), so it can be tested with scripted fakes.
//! One bus connection per login, opened here and dropped before returning.

use crate::args::{FailMode, Options};
use crate::enroll;
use pam::constants::PamResultCode;
use std::time::Duration;
use twofold_protocol::code;
use twofold_protocol::{
    EnrollmentOffer, LoginAction, LoginPlan, SecretString, TwofoldError, VerifyOutcome,
    VerifyReply, login_method,
};
use zeroize::Zeroizing;

pub const PROMPT: &str = "Verification code: ";
/// Asked when no e-mail could be sent now.
pub const NOT_SENT_PROMPT: &str = "Code from an earlier e-mail, or a backup code: ";
/// The system bus. `DBUS_SYSTEM_BUS_ADDRESS` replaces it only for a host that
/// is not running setuid (tests, the demo), see [`bus_address`].
pub const SYSTEM_BUS_ADDRESS: &str = "unix:path=/run/dbus/system_bus_socket";
/// Longest wait for one daemon call; a daemon that takes longer refuses the
/// login, whatever the failmode.
const METHOD_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the bus to take a connection (authentication and
/// `Hello`). A working bus does it in well under a millisecond; one that
/// accepts the socket and never answers would otherwise hold su or sudo
/// for good, and an sshd login until `LoginGraceTime`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const UNAVAILABLE_MESSAGE: &str = "The two-factor verification service is not available, so you cannot log in now. \
Try again later, or contact your administrator.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Info,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Debug,
    Warning,
    Error,
}

/// The conversation gave no answer, with the code the application (or
/// libpam) returned. The flow answers `PAM_CONV_ERR` whatever that code
/// was: an application's `PAM_IGNORE` or `PAM_SUCCESS` passed on as this
/// module's result would let a stack go on as if no code had been asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct NoAnswer(pub PamResultCode);

/// What the module needs from its host application.
pub trait Host {
    /// Ask with echo off; the answer is wiped when dropped.
    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer>;
    /// Ask with echo on (an e-mail address, a choice).
    fn prompt_visible(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer>;
    fn show(&mut self, kind: Shown, text: &str);
    /// Whether `Shown::Info` reaches the user (not under PAM_SILENT).
    fn shows_info(&self) -> bool;
    /// Whether the host process's locale is UTF-8 (`None`: not set).
    fn locale_is_utf8(&self) -> Option<bool>;
    fn log(&mut self, priority: Priority, text: &str);
}

/// What a login asks twofoldd.
#[allow(async_fn_in_trait)] // used with static dispatch only
pub trait Daemon {
    async fn begin_login(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<LoginPlan, TwofoldError>;
    async fn verify(
        &self,
        user: &str,
        code: &str,
        service: &str,
        rhost: &str,
    ) -> Result<VerifyReply, TwofoldError>;
    async fn enroll_at_login(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<EnrollmentOffer, TwofoldError>;
    async fn confirm_at_login(
        &self,
        user: &str,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError>;
    async fn send_login_code(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<String, TwofoldError>;
    async fn email_enroll_at_login(
        &self,
        user: &str,
        address: &str,
        service: &str,
        rhost: &str,
    ) -> Result<String, TwofoldError>;
    async fn confirm_email_at_login(
        &self,
        user: &str,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError>;
}

/// twofoldd over the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`). Calls go
/// straight on the connection: a proxy would bring zbus's proxy machinery
/// (property caches, signal streams) into every login process for nothing.
pub struct BusDaemon {
    conn: zbus::Connection,
}

impl BusDaemon {
    async fn call<B, R>(&self, method: &'static str, args: &B) -> Result<R, TwofoldError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let mut full = FullBus::new();
        loop {
            let reply = self
                .conn
                .call_method(
                    Some(twofold_protocol::BUS_NAME),
                    twofold_protocol::OBJECT_PATH,
                    Some(twofold_protocol::INTERFACE),
                    method,
                    args,
                )
                .await;
            match reply {
                // The bus turned the call away undelivered (its queue to
                // twofoldd was full): sending it again cannot count twice.
                Err(e) if bus_full(&e) && full.wait() => continue,
                reply => return Ok(reply?.body().deserialize::<R>()?),
            }
        }
    }
}

/// The bus to use. Under setuid (`su`, `sudo`) the environment is the
/// invoking user's, who could point it at a bus where their own program
/// answers as twofoldd; libdbus and sd-bus ignore the variable there too.
pub fn bus_address(secure_execution: bool, from_env: Option<std::ffi::OsString>) -> String {
    match from_env.and_then(|v| v.into_string().ok()) {
        Some(address) if !secure_execution && !address.is_empty() => address,
        _ => SYSTEM_BUS_ADDRESS.to_string(),
    }
}

/// How long a login waits for a connection while the bus is at its limit of
/// connections per uid, or for a call while the bus's queue to twofoldd is
/// full. Every sshd login is root's, so a burst of logins at once can fill
/// dbus-daemon's `max_connections_per_user` (256 by default) for a moment,
/// and a local user sending large calls can fill twofoldd's queue (127 MB);
/// that is a wait, not a reason to refuse a correct code.
pub const BUS_FULL_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between two tries on a full bus.
const BUS_FULL_PAUSE_MAX: Duration = Duration::from_millis(200);

/// Connect to twofoldd's bus, waiting up to [`BUS_FULL_WAIT`] while the bus
/// refuses the connection for its per-uid limit, each try's handshake
/// bounded by [`HANDSHAKE_TIMEOUT`]. Any other failure returns at once.
pub async fn connect(address: &str) -> zbus::Result<BusDaemon> {
    let mut full = FullBus::new();
    loop {
        match connect_once(address).await {
            Err(e) if bus_full(&e) && full.wait() => {}
            other => return other,
        }
    }
}

/// The waits of one step (a connection, a call) on a bus that refuses it
/// for its limits: growing pauses, for at most [`BUS_FULL_WAIT`] in all.
struct FullBus {
    started: std::time::Instant,
    pause: Duration,
}

impl FullBus {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            pause: Duration::from_millis(5),
        }
    }

    /// Pause before the next try; false when the time is up.
    fn wait(&mut self) -> bool {
        let left = BUS_FULL_WAIT.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return false;
        }
        // Nothing else runs on this executor (one login, one connection),
        // so a plain sleep blocks no other task. The jitter keeps a burst of
        // waiting logins from retrying in step.
        std::thread::sleep(jitter(self.pause).min(left));
        self.pause = (self.pause * 2).min(BUS_FULL_PAUSE_MAX);
        true
    }
}

/// `pause` scaled by a factor in [0.5, 1.5), from the clock's nanoseconds
/// (unpredictability does not matter here, only spreading the retries).
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    pause.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

/// The bus's refusal of a connection for its resource limits.
fn bus_full(error: &zbus::Error) -> bool {
    bus_error_is(error, &["org.freedesktop.DBus.Error.LimitsExceeded"])
}

/// A bus that did not answer the handshake in time.
fn timed_out(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::InputOutput(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

async fn connect_once(address: &str) -> zbus::Result<BusDaemon> {
    // The runtime that zbus::block_on drives on this thread; its timer
    // wakes the login when the bus stays silent.
    let runtime = zruntime::SharedRuntime::current()?;
    let handshake = zbus::connection::Builder::address(address)
        .method_timeout(METHOD_TIMEOUT)
        .build();
    let conn = runtime
        .timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(std::io::Error::from)??;
    Ok(BusDaemon { conn })
}

impl Daemon for BusDaemon {
    async fn begin_login(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<LoginPlan, TwofoldError> {
        self.call(login_method::BEGIN_LOGIN, &(user, service, rhost))
            .await
    }

    async fn verify(
        &self,
        user: &str,
        code: &str,
        service: &str,
        rhost: &str,
    ) -> Result<VerifyReply, TwofoldError> {
        self.call(login_method::VERIFY, &(user, code, service, rhost))
            .await
    }

    async fn enroll_at_login(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        self.call(login_method::ENROLL_AT_LOGIN, &(user, service, rhost))
            .await
    }

    async fn confirm_at_login(
        &self,
        user: &str,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        self.call(login_method::CONFIRM_AT_LOGIN, &(user, code))
            .await
    }

    async fn send_login_code(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<String, TwofoldError> {
        self.call(login_method::SEND_LOGIN_CODE, &(user, service, rhost))
            .await
    }

    async fn email_enroll_at_login(
        &self,
        user: &str,
        address: &str,
        service: &str,
        rhost: &str,
    ) -> Result<String, TwofoldError> {
        self.call(
            login_method::EMAIL_ENROLL_AT_LOGIN,
            &(user, address, service, rhost),
        )
        .await
    }

    async fn confirm_email_at_login(
        &self,
        user: &str,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        self.call(login_method::CONFIRM_EMAIL_AT_LOGIN, &(user, code))
            .await
    }
}

/// The remote host to name to the daemon: PAM_RHOST, unless that is a name
/// (sshd with `UseDNS yes`) and sshd put the numeric peer address in the PAM
/// environment (`SSH_CONNECTION=CLIENT_IP CLIENT_PORT SERVER_IP
/// SERVER_PORT`). Names cannot be counted per host (anyone with their own DNS
/// has any number) nor matched against trusted networks.
pub fn remote_host(rhost: String, ssh_connection: Option<&str>) -> String {
    if rhost.is_empty() || rhost.parse::<std::net::IpAddr>().is_ok() {
        return rhost;
    }
    ssh_connection
        .and_then(|c| c.split(' ').next())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map_or(rhost, str::to_string)
}

/// Who is logging in, from the PAM items. `user` is `Err` with a printable
/// form of the name when the name is not UTF-8.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: Result<String, String>,
    pub service: String,
    pub rhost: String,
}

pub async fn run<H: Host, D: Daemon>(
    host: &mut H,
    options: &Options,
    login: &Login,
    connect: impl AsyncFnOnce() -> zbus::Result<D>,
) -> PamResultCode {
    let user = match &login.user {
        Ok(user) => user.as_str(),
        Err(printable) => {
            host.log(
                Priority::Error,
                &format!("refusing a user name that is not UTF-8: {printable}"),
            );
            return PamResultCode::PAM_USER_UNKNOWN;
        }
    };
    if let Err(e) = twofold_protocol::user::validate(user) {
        let printable = twofold_protocol::user::loggable(user.as_bytes());
        host.log(
            Priority::Error,
            &format!("refusing user name {printable}: {e}"),
        );
        return PamResultCode::PAM_USER_UNKNOWN;
    }
    let daemon = match connect().await {
        Ok(d) => d,
        // No bus running: the one failure to connect that failmode=safe
        // covers. Anything else (a bus full of root's connections, or silent,
        // or one that drops the handshake; no file descriptors left, which
        // whoever runs su can arrange with ulimit) means a bus that is
        // there, or a host in trouble: refused whatever the failmode, or
        // whoever can cause it could make the module skip the code.
        Err(e) if no_bus(&e) => return unreachable(host, options, user, login, &e),
        Err(e) => {
            let why = if bus_full(&e) {
                format!("the bus stayed full for {BUS_FULL_WAIT:?}")
            } else if timed_out(&e) {
                format!("the bus did not take the connection within {HANDSHAKE_TIMEOUT:?}")
            } else {
                "cannot connect to the bus".to_string()
            };
            host.log(Priority::Error, &format!("{why} ({e}); refusing the login"));
            host.show(Shown::Error, UNAVAILABLE_MESSAGE);
            return PamResultCode::PAM_AUTHINFO_UNAVAIL;
        }
    };
    let plan = match daemon.begin_login(user, &login.service, &login.rhost).await {
        Ok(plan) => plan,
        // The bus answered that twofoldd is neither running nor activatable
        // on it (not installed): no daemon to ask.
        Err(TwofoldError::ZBus(e)) if no_daemon(&e) => {
            return unreachable(host, options, user, login, &e);
        }
        Err(e) => return refused_by(host, e),
    };
    match plan.action {
        LoginAction::AskCode => {
            if !plan.message.is_empty() {
                host.show(Shown::Info, &plan.message);
            }
            let prompt = if plan.prompt.is_empty() {
                PROMPT.to_string()
            } else {
                plan.prompt.clone()
            };
            ask_code(host, &daemon, user, login, &plan, &prompt, options.qr).await
        }
        LoginAction::SendEmail => {
            if !plan.message.is_empty() {
                host.show(Shown::Info, &plan.message);
            }
            let prompt = match send_code(host, &daemon, user, login).await {
                Ok(prompt) => prompt,
                Err(code) => return code,
            };
            ask_code(host, &daemon, user, login, &plan, &prompt, options.qr).await
        }
        LoginAction::Allow => {
            // No code was verified, so this module must not be the one that
            // grants access: IGNORE leaves the decision to the rest of the stack.
            if !plan.message.is_empty() {
                host.show(Shown::Info, &plan.message);
            }
            PamResultCode::PAM_IGNORE
        }
        LoginAction::Refuse => {
            if !plan.message.is_empty() {
                host.show(Shown::Error, &plan.message);
            }
            PamResultCode::PAM_AUTH_ERR
        }
        LoginAction::Enroll => enroll::enroll(host, &daemon, user, login, &plan, options.qr).await,
    }
}

/// Have the daemon e-mail a code; the prompt to ask it with. When no code
/// can be sent now (too soon after the last, or the relay is down) the user
/// is told why and may still type a code sent before, or a backup code.
async fn send_code<H: Host, D: Daemon>(
    host: &mut H,
    daemon: &D,
    user: &str,
    login: &Login,
) -> Result<String, PamResultCode> {
    match daemon
        .send_login_code(user, &login.service, &login.rhost)
        .await
    {
        Ok(prompt) => Ok(prompt),
        Err(TwofoldError::Throttled(message) | TwofoldError::DeliveryFailed(message)) => {
            host.show(Shown::Error, &message);
            Ok(NOT_SENT_PROMPT.to_string())
        }
        Err(e) => Err(refused_by(host, e)),
    }
}

/// Ask for a code and let the daemon verify it. When the plan offers
/// e-mail, an empty answer has the daemon e-mail a code, which is then
/// asked for. A code that proves the user whose rule wants another method
/// leads into setting that method up.
async fn ask_code<H: Host, D: Daemon>(
    host: &mut H,
    daemon: &D,
    user: &str,
    login: &Login,
    plan: &LoginPlan,
    prompt: &str,
    qr: crate::args::QrStyle,
) -> PamResultCode {
    let email_on_empty = plan.action == LoginAction::AskCode && !plan.email.is_empty();
    let mut answer = match host.prompt_hidden(prompt) {
        Ok(answer) => answer,
        Err(e) => return no_answer(host, "at the code prompt", user, login, e),
    };
    if email_on_empty && answer.trim_ascii().is_empty() {
        let prompt = match send_code(host, daemon, user, login).await {
            Ok(prompt) => prompt,
            Err(code) => return code,
        };
        answer = match host.prompt_hidden(&prompt) {
            Ok(answer) => answer,
            Err(e) => return no_answer(host, "at the e-mailed code's prompt", user, login, e),
        };
    }
    let code = match code::parse(&answer) {
        Ok(code) => code,
        Err(e) => {
            host.show(Shown::Error, e.user_message());
            host.log(
                Priority::Warning,
                &format!(
                    "malformed code input ({e}) {}; not sent to the daemon, login refused",
                    who(user, login)
                ),
            );
            return PamResultCode::PAM_AUTH_ERR;
        }
    };
    drop(answer);
    // Once the daemon has been asked, any failure refuses, even with
    // failmode=safe: a slow or dying daemon must not open the door.
    let reply = match daemon
        .verify(user, code.as_str(), &login.service, &login.rhost)
        .await
    {
        Ok(reply) => reply,
        Err(e) => return refused_by(host, e),
    };
    host.log(
        Priority::Debug,
        &format!("daemon answered {:?}", reply.outcome),
    );
    match reply.outcome {
        VerifyOutcome::Accepted => PamResultCode::PAM_SUCCESS,
        VerifyOutcome::AcceptedBackupCode => {
            host.show(Shown::Info, &reply.message);
            PamResultCode::PAM_SUCCESS
        }
        // The enrollment was removed while the prompt was open (an admin
        // reset): the plan this login was given no longer holds, and under
        // `require` letting it through would skip the second factor.
        VerifyOutcome::NotEnrolled => {
            host.show(
                Shown::Error,
                "Your two-factor setup changed during this login. Log in again.",
            );
            PamResultCode::PAM_AUTH_ERR
        }
        VerifyOutcome::Wrong | VerifyOutcome::Replayed | VerifyOutcome::Throttled => {
            host.show(Shown::Error, &reply.message);
            PamResultCode::PAM_AUTH_ERR
        }
        // Never SUCCESS: the enrollment that follows returns IGNORE at best.
        VerifyOutcome::MustEnroll => {
            let mut next = plan.clone();
            next.message.clear();
            enroll::enroll(host, daemon, user, login, &next, qr).await
        }
    }
}

/// The daemon answered with an error, or the call failed after it was made:
/// the login is refused whatever the failmode.
pub(crate) fn refused_by<H: Host>(host: &mut H, error: TwofoldError) -> PamResultCode {
    match error {
        TwofoldError::ZBus(e) => {
            host.log(
                Priority::Error,
                &format!("twofoldd did not answer: {e}; refusing the login"),
            );
            host.show(Shown::Error, UNAVAILABLE_MESSAGE);
            PamResultCode::PAM_AUTH_ERR
        }
        TwofoldError::UnknownUser(_) => PamResultCode::PAM_USER_UNKNOWN,
        TwofoldError::AccessDenied(message) => {
            host.log(
                Priority::Error,
                &format!("twofoldd refused this caller: {message}"),
            );
            PamResultCode::PAM_CRED_INSUFFICIENT
        }
        TwofoldError::InvalidInput(message)
        | TwofoldError::Throttled(message)
        | TwofoldError::Internal(message)
        | TwofoldError::NotEnrolled(message)
        | TwofoldError::AlreadyEnrolled(message)
        | TwofoldError::NoPendingEnrollment(message)
        | TwofoldError::DeliveryFailed(message)
        | TwofoldError::Busy(message) => {
            host.show(Shown::Error, &message);
            PamResultCode::PAM_AUTH_ERR
        }
    }
}

fn unreachable<H: Host>(
    host: &mut H,
    options: &Options,
    user: &str,
    login: &Login,
    error: &zbus::Error,
) -> PamResultCode {
    match options.failmode {
        FailMode::Secure => {
            host.log(
                Priority::Error,
                &format!(
                    "cannot reach twofoldd ({error}); refusing the login {} (failmode=secure)",
                    who(user, login)
                ),
            );
            host.show(Shown::Error, UNAVAILABLE_MESSAGE);
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        }
        // IGNORE, not SUCCESS: the rest of the stack (the password) still decides.
        FailMode::Safe => {
            host.log(
                Priority::Warning,
                &format!(
                    "cannot reach twofoldd ({error}); the login {} goes on WITHOUT a second factor (failmode=safe)",
                    who(user, login)
                ),
            );
            PamResultCode::PAM_IGNORE
        }
    }
}

/// A conversation that ended without an answer refuses the login, logged
/// with whom it was for: it is a login decision like any other.
pub(crate) fn no_answer<H: Host>(
    host: &mut H,
    during: &str,
    user: &str,
    login: &Login,
    NoAnswer(code): NoAnswer,
) -> PamResultCode {
    host.log(
        Priority::Warning,
        &format!(
            "conversation ended {during} without an answer ({code:?}) {}; login refused",
            who(user, login)
        ),
    );
    PamResultCode::PAM_CONV_ERR
}

/// "for user U from R", for log lines, with both made printable.
pub(crate) fn who(user: &str, login: &Login) -> String {
    let rhost = if login.rhost.is_empty() {
        "(no remote host)".to_string()
    } else {
        twofold_protocol::user::loggable(login.rhost.as_bytes())
    };
    format!(
        "for user {} from {rhost}",
        twofold_protocol::user::loggable(user.as_bytes())
    )
}

/// pam_get_user's failure as this module's result. Its own errors pass;
/// anything else (libpam hands back the conversation's code, PAM_IGNORE or
/// PAM_SUCCESS among them, when the application filled in an answer anyway)
/// is PAM_CONV_ERR, so the stack cannot go on as if this module had no say.
pub(crate) fn user_lookup_failed(code: PamResultCode) -> PamResultCode {
    use PamResultCode::{PAM_ABORT, PAM_BUF_ERR, PAM_CONV_ERR, PAM_SYSTEM_ERR};
    match code {
        PAM_SYSTEM_ERR | PAM_BUF_ERR | PAM_CONV_ERR | PAM_ABORT => code,
        _ => PAM_CONV_ERR,
    }
}

/// No bus to connect to: its socket is missing, or nothing listens on it.
fn no_bus(error: &zbus::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(error, zbus::Error::Connection(e, _) if matches!(e.kind(), NotFound | ConnectionRefused))
}

/// The bus's answer that twofoldd is neither running nor activatable on it
/// (not installed). Not `NameHasNoOwner`: dbus-broker gives that when an
/// installed twofoldd fails to start (a bad configuration, a masked or
/// failed unit), as dbus-daemon gives its `Spawn.*` errors, and a daemon
/// that is there but broken must not open the door under failmode=safe.
fn no_daemon(error: &zbus::Error) -> bool {
    bus_error_is(error, &["org.freedesktop.DBus.Error.ServiceUnknown"])
}

/// Whether `error` is a D-Bus error reply with one of `names`, whether zbus
/// gave it as one of its `fdo::Error` variants or by name.
fn bus_error_is(error: &zbus::Error, names: &[&str]) -> bool {
    use zbus::DBusError;
    match error {
        zbus::Error::MethodError(name, _, _) => names.contains(&name.as_str()),
        zbus::Error::FDO(e) => names.contains(&e.name().as_str()),
        _ => false,
    }
}

#[cfg(test)]
#[path = "authenticate_tests.rs"]
mod tests;
