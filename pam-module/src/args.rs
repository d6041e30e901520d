//! Module arguments from the pam.d line.

use std::ffi::CStr;

/// What to do when twofoldd cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse the login (PAM_AUTHINFO_UNAVAIL). The default.
    #[default]
    Secure,
    /// Let the login through without a code, with a logged warning.
    Safe,
}

/// How the QR code of an enrollment at login is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QrStyle {
    /// Unicode half blocks, unless the process's locale says the terminal
    /// is not UTF-8 (console logins, su); under sshd the client's locale is
    /// unknown during authentication, so Unicode, with plain ASCII one
    /// answer away. The default.
    #[default]
    Auto,
    Unicode,
    Ascii,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    pub failmode: FailMode,
    pub debug: bool,
    pub qr: QrStyle,
}

/// Every option the module understands (the man page is checked against this list).
pub const OPTION_NAMES: &[&str] = &[
    "failmode=secure",
    "failmode=safe",
    "debug",
    "qr=auto",
    "qr=unicode",
    "qr=ascii",
];

/// Parse arguments; unknown or malformed ones are returned as problems to
/// log and otherwise ignored, leaving the secure defaults in place.
pub fn parse(args: &[&CStr]) -> (Options, Vec<String>) {
    let mut options = Options::default();
    let mut problems = Vec::new();
    for arg in args {
        match arg.to_bytes() {
            b"failmode=secure" => options.failmode = FailMode::Secure,
            b"failmode=safe" => options.failmode = FailMode::Safe,
            b"debug" => options.debug = true,
            b"qr=auto" => options.qr = QrStyle::Auto,
            b"qr=unicode" => options.qr = QrStyle::Unicode,
            b"qr=ascii" => options.qr = QrStyle::Ascii,
            other => problems.push(format!(
                "ignoring unknown module option '{}' (known: {})",
                twofold_protocol::user::loggable(other),
                OPTION_NAMES.join(", ")
            )),
        }
    }
    (options, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_secure() {
        assert_eq!(
            parse(&[]).0,
            Options {
                failmode: FailMode::Secure,
                debug: false,
                qr: QrStyle::Auto,
            }
        );
    }

    #[test]
    fn known_options() {
        let (o, p) = parse(&[c"failmode=safe", c"debug", c"qr=ascii"]);
        assert_eq!(
            o,
            Options {
                failmode: FailMode::Safe,
                debug: true,
                qr: QrStyle::Ascii,
            }
        );
        assert!(p.is_empty());
    }

    #[test]
    fn a_typo_keeps_the_secure_default_and_is_reported() {
        let (o, p) = parse(&[c"failmode=sfae", c"failmode"]);
        assert_eq!(o.failmode, FailMode::Secure);
        assert_eq!(p.len(), 2);
        assert!(p[0].contains("failmode=sfae"));
    }
}
