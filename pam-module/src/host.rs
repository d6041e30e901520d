//! The PAM side of a login: the `Host` the flow talks to (conversation and
//! log), the real one over libpam's handle, and the items read from it.

use crate::args;
use crate::ffi;
use pam::constants::{
    PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_SILENT, PAM_TEXT_INFO, PamFlag,
    PamMessageStyle, PamResultCode,
};
use pam::conv::Conv;
use pam::items::{RHost, Service, User};
use pam::module::PamHandle;
use std::ffi::CStr;
use zeroize::Zeroizing;

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

/// Who is logging in, from the PAM items. `user` is `Err` with the name's
/// length in bytes when the name is not UTF-8 (never the name itself: it
/// may be a password typed at the login prompt).
#[derive(Debug, Clone)]
pub struct PamItems {
    pub user: Result<String, usize>,
    pub service: String,
    pub rhost: String,
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

/// pam_get_user's failure as this module's result. Its own errors pass;
/// anything else (libpam hands back the conversation's code, PAM_IGNORE or
/// PAM_SUCCESS among them, when the application filled in an answer anyway)
/// is PAM_CONV_ERR, so the stack cannot go on as if this module had no say.
pub fn user_lookup_failed(code: PamResultCode) -> PamResultCode {
    use PamResultCode::{PAM_ABORT, PAM_BUF_ERR, PAM_CONV_ERR, PAM_SYSTEM_ERR};
    match code {
        PAM_SYSTEM_ERR | PAM_BUF_ERR | PAM_CONV_ERR | PAM_ABORT => code,
        _ => PAM_CONV_ERR,
    }
}

/// The real host: libpam's handle, conversation and syslog.
struct PamHost<'a> {
    pamh: &'a PamHandle,
    silent: bool,
    debug: bool,
}

impl PamHost<'_> {
    /// One prompt of `style` through the application's conversation.
    fn ask(&self, style: PamMessageStyle, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer> {
        let conv = self
            .pamh
            .get_item::<Conv>()
            .map_err(NoAnswer)?
            .ok_or(NoAnswer(PamResultCode::PAM_CONV_ERR))?;
        let answer = conv
            .send(style, prompt)
            .map_err(NoAnswer)?
            .ok_or(NoAnswer(PamResultCode::PAM_CONV_ERR))?;
        Ok(Zeroizing::new(answer.as_bytes().to_vec()))
    }
}

impl Host for PamHost<'_> {
    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer> {
        self.ask(PAM_PROMPT_ECHO_OFF, prompt)
    }

    fn prompt_visible(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, NoAnswer> {
        self.ask(PAM_PROMPT_ECHO_ON, prompt)
    }

    fn show(&mut self, kind: Shown, text: &str) {
        if text.is_empty() || (self.silent && kind == Shown::Info) {
            return;
        }
        let style = match kind {
            Shown::Info => PAM_TEXT_INFO,
            Shown::Error => PAM_ERROR_MSG,
        };
        if let Ok(Some(conv)) = self.pamh.get_item::<Conv>() {
            let _ = conv.send(style, text);
        }
    }

    fn shows_info(&self) -> bool {
        !self.silent
    }

    fn locale_is_utf8(&self) -> Option<bool> {
        twofold_protocol::text::locale_is_utf8(|name| std::env::var(name).ok())
    }

    fn log(&mut self, priority: Priority, text: &str) {
        let priority = match priority {
            Priority::Debug if !self.debug => return,
            Priority::Debug => libc::LOG_DEBUG,
            Priority::Warning => libc::LOG_WARNING,
            Priority::Error => libc::LOG_ERR,
        };
        ffi::syslog(self.pamh, priority, text);
    }
}

fn item_text(bytes: Option<&CStr>) -> String {
    bytes
        .map(|c| String::from_utf8_lossy(c.to_bytes()).into_owned())
        .unwrap_or_default()
}

/// `pam_sm_authenticate`'s first half: the options, the items and the host
/// the flow runs against; `Err` is the PAM code to return at once. (The flow
/// itself is started by `lib.rs`, so this room never calls into the flow.)
pub fn prepare<'a>(
    pamh: &'a mut PamHandle,
    raw_args: &[&CStr],
    flags: PamFlag,
) -> Result<(impl Host + 'a, args::Options, PamItems), PamResultCode> {
    let (options, problems) = args::parse(raw_args);
    // The user name: pam_get_user may prompt for it; a name that is not
    // UTF-8 cannot be anyone twofold knows.
    let user = match pamh.get_user(None) {
        Ok(user) => Ok(user),
        Err(PamResultCode::PAM_SYSTEM_ERR) => match pamh.get_item::<User>() {
            Ok(Some(raw)) => Err(raw.0.to_bytes().len()),
            _ => return Err(PamResultCode::PAM_SYSTEM_ERR),
        },
        Err(code) => return Err(user_lookup_failed(code)),
    };
    let service = item_text(pamh.get_item::<Service>().ok().flatten().map(|s| s.0));
    let rhost = remote_host(
        item_text(pamh.get_item::<RHost>().ok().flatten().map(|s| s.0)),
        ffi::pam_env(pamh, c"SSH_CONNECTION").as_deref(),
    );
    let mut host = PamHost {
        pamh,
        silent: flags & PAM_SILENT != 0,
        debug: options.debug,
    };
    for problem in problems {
        host.log(Priority::Error, &problem);
    }
    let items = PamItems {
        user,
        service,
        rhost,
    };
    Ok((host, options, items))
}

/// Whether the process runs set-uid or with raised privileges (then the
/// environment chooses no socket and no bus).
pub fn secure_execution() -> bool {
    ffi::secure_execution()
}
