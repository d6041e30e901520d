//! The real host of the flow: libpam's handle, conversation and syslog.

use crate::args;
use crate::authenticate::{self, Host, Login, NoAnswer, Shown};
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

    fn log(&mut self, priority: authenticate::Priority, text: &str) {
        let priority = match priority {
            authenticate::Priority::Debug if !self.debug => return,
            authenticate::Priority::Debug => libc::LOG_DEBUG,
            authenticate::Priority::Warning => libc::LOG_WARNING,
            authenticate::Priority::Error => libc::LOG_ERR,
        };
        ffi::syslog(self.pamh, priority, text);
    }
}

fn item_text(bytes: Option<&CStr>) -> String {
    bytes
        .map(|c| String::from_utf8_lossy(c.to_bytes()).into_owned())
        .unwrap_or_default()
}

pub fn authenticate(pamh: &mut PamHandle, raw_args: &[&CStr], flags: PamFlag) -> PamResultCode {
    let (options, problems) = args::parse(raw_args);
    // The user name: pam_get_user may prompt for it; a name that is not
    // UTF-8 cannot be anyone twofold knows.
    let user = match pamh.get_user(None) {
        Ok(user) => Ok(user),
        Err(PamResultCode::PAM_SYSTEM_ERR) => match pamh.get_item::<User>() {
            Ok(Some(raw)) => Err(twofold_protocol::user::loggable(raw.0.to_bytes())),
            _ => return PamResultCode::PAM_SYSTEM_ERR,
        },
        Err(code) => return authenticate::user_lookup_failed(code),
    };
    let service = item_text(pamh.get_item::<Service>().ok().flatten().map(|s| s.0));
    let rhost = authenticate::remote_host(
        item_text(pamh.get_item::<RHost>().ok().flatten().map(|s| s.0)),
        ffi::pam_env(pamh, c"SSH_CONNECTION").as_deref(),
    );
    let mut host = PamHost {
        pamh,
        silent: flags & PAM_SILENT != 0,
        debug: options.debug,
    };
    for problem in problems {
        host.log(authenticate::Priority::Error, &problem);
    }
    let login = Login {
        user,
        service,
        rhost,
    };
    let address = authenticate::bus_address(
        ffi::secure_execution(),
        std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS"),
    );
    zbus::block_on(authenticate::run(&mut host, &options, &login, async || {
        authenticate::connect(&address).await
    }))
}
