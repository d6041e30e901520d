//! The login flow, over a `Host` (the PAM conversation and log) and a
//! `Daemon` (twofoldd), so it can be tested with scripted fakes: ask the
//! daemon what this login must do, prompt as told, and turn the answer into
//! a PAM code. One connection per login, opened here and dropped before
//! returning.

use crate::args::{FailMode, Options, QrStyle};
use crate::daemon::{
    BUS_FULL_WAIT, Daemon, HANDSHAKE_TIMEOUT, bus_full, no_bus, no_daemon, timed_out,
};
use crate::enroll;
use crate::host::{Host, PamItems, Priority, Shown};
use crate::steps::{PROMPT, UNAVAILABLE_MESSAGE, no_answer, refused_by, who};
use pam::constants::PamResultCode;
use twofold_protocol::code;
use twofold_protocol::{Login, LoginAction, LoginPlan, TwofoldError, VerifyOutcome};

/// Asked when no e-mail could be sent now.
pub const NOT_SENT_PROMPT: &str = "Code from an earlier e-mail, or a backup code: ";

pub fn run<H: Host, D: Daemon>(
    host: &mut H,
    options: &Options,
    items: &PamItems,
    connect: impl FnOnce() -> zbus::Result<D>,
) -> PamResultCode {
    let user = match &items.user {
        Ok(user) => user.as_str(),
        // Only the length: a rejected name is often a password typed at
        // the login prompt, and this module runs after the password check.
        Err(len) => {
            host.log(
                Priority::Error,
                &format!("refusing a user name of {len} bytes that is not UTF-8"),
            );
            return PamResultCode::PAM_USER_UNKNOWN;
        }
    };
    if let Err(e) = twofold_protocol::user::validate(user) {
        host.log(
            Priority::Error,
            &format!("refusing a user name of {} bytes: {e}", user.len()),
        );
        return PamResultCode::PAM_USER_UNKNOWN;
    }
    let login = Login {
        user: user.to_string(),
        service: items.service.clone(),
        rhost: items.rhost.clone(),
    };
    let login = &login;
    let daemon = match connect() {
        Ok(d) => d,
        // No socket and no bus running: the one failure to connect that
        // failmode=safe covers. Anything else (a socket or bus that is
        // silent or drops the handshake, a bus full of root's connections;
        // no file descriptors left, which whoever runs su can arrange with
        // ulimit) means a daemon or bus that is there, or a host in
        // trouble: refused whatever the failmode, or whoever can cause it
        // could make the module skip the code.
        Err(e) if no_bus(&e) => return unreachable(host, options, login, &e),
        Err(e) => return not_connected(host, &e),
    };
    let plan = match daemon.begin_login(login) {
        Ok(plan) => plan,
        // The bus answered that twofoldd is neither running nor activatable
        // on it (not installed): no daemon to ask.
        Err(TwofoldError::ZBus(e)) if no_daemon(&e) => {
            return unreachable(host, options, login, &e);
        }
        // On twofoldd's socket the authentication goes out with this first
        // call: a socket that took the connection but not the handshake.
        Err(TwofoldError::ZBus(e @ zbus::Error::Handshake(_))) => {
            return not_connected(host, &e);
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
            ask_code(host, &daemon, login, &plan, &prompt, options.qr)
        }
        LoginAction::SendEmail => {
            if !plan.message.is_empty() {
                host.show(Shown::Info, &plan.message);
            }
            let prompt = match send_code(host, &daemon, login) {
                Ok(prompt) => prompt,
                Err(code) => return code,
            };
            ask_code(host, &daemon, login, &plan, &prompt, options.qr)
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
        LoginAction::Enroll => enroll::enroll(host, &daemon, login, &plan, options.qr),
    }
}

/// Have the daemon e-mail a code; the prompt to ask it with. When no code
/// can be sent now (too soon after the last, or the relay is down) the user
/// is told why and may still type a code sent before, or a backup code.
fn send_code<H: Host, D: Daemon>(
    host: &mut H,
    daemon: &D,
    login: &Login,
) -> Result<String, PamResultCode> {
    match daemon.send_login_code(login) {
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
fn ask_code<H: Host, D: Daemon>(
    host: &mut H,
    daemon: &D,
    login: &Login,
    plan: &LoginPlan,
    prompt: &str,
    qr: QrStyle,
) -> PamResultCode {
    let email_on_empty = plan.action == LoginAction::AskCode && !plan.email.is_empty();
    let mut answer = match host.prompt_hidden(prompt) {
        Ok(answer) => answer,
        Err(e) => return no_answer(host, "at the code prompt", login, e),
    };
    if email_on_empty && answer.trim_ascii().is_empty() {
        let prompt = match send_code(host, daemon, login) {
            Ok(prompt) => prompt,
            Err(code) => return code,
        };
        answer = match host.prompt_hidden(&prompt) {
            Ok(answer) => answer,
            Err(e) => return no_answer(host, "at the e-mailed code's prompt", login, e),
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
                    who(login)
                ),
            );
            return PamResultCode::PAM_AUTH_ERR;
        }
    };
    drop(answer);
    // Once the daemon has been asked, any failure refuses, even with
    // failmode=safe: a slow or dying daemon must not open the door.
    let reply = match daemon.verify(login, code.as_str()) {
        Ok(reply) => reply,
        Err(e) => return refused_by(host, e),
    };
    host.log(
        Priority::Debug,
        &format!("daemon answered {:?}", reply.outcome),
    );
    match reply.outcome {
        VerifyOutcome::Accepted => {
            // A notice such as few backup codes left (usually none).
            if !reply.message.is_empty() {
                host.show(Shown::Info, &reply.message);
            }
            PamResultCode::PAM_SUCCESS
        }
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
            enroll::enroll(host, daemon, login, &next, qr)
        }
    }
}

/// A socket or bus that is there but did not take the connection (full,
/// silent, dropping the handshake), or a host in trouble (no file
/// descriptors left, which whoever runs su can arrange with ulimit): refused
/// whatever the failmode, or whoever can cause it could make the module
/// skip the code.
fn not_connected<H: Host>(host: &mut H, e: &zbus::Error) -> PamResultCode {
    let why = if bus_full(e) {
        format!("the bus stayed full for {BUS_FULL_WAIT:?}")
    } else if timed_out(e) {
        format!(
            "twofoldd's socket or the bus did not take the connection within {HANDSHAKE_TIMEOUT:?}"
        )
    } else if let zbus::Error::Handshake(_) = e {
        "twofoldd's socket or the bus did not complete the authentication".to_string()
    } else {
        "cannot connect to twofoldd's socket or the bus".to_string()
    };
    host.log(Priority::Error, &format!("{why} ({e}); refusing the login"));
    host.show(Shown::Error, UNAVAILABLE_MESSAGE);
    PamResultCode::PAM_AUTHINFO_UNAVAIL
}

fn unreachable<H: Host>(
    host: &mut H,
    options: &Options,
    login: &Login,
    error: &zbus::Error,
) -> PamResultCode {
    match options.failmode {
        FailMode::Secure => {
            host.log(
                Priority::Error,
                &format!(
                    "cannot reach twofoldd ({error}); refusing the login {} (failmode=secure)",
                    who(login)
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
                    who(login)
                ),
            );
            PamResultCode::PAM_IGNORE
        }
    }
}

#[cfg(test)]
#[path = "authenticate_tests.rs"]
mod tests;
