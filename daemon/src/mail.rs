//! Sending a code by e-mail: the message from the configured templates, and
//! its delivery through an SMTP relay (lettre) or the local `sendmail`
//! program, each within `email.timeout_secs`. Nothing here logs the code.

use crate::clock;
use crate::config::{EmailConfig, Security, Transport};
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use zeroize::Zeroizing;

/// Longest address accepted (RFC 5321's path limit).
const MAX_ADDRESS_LEN: usize = 254;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("e-mail codes are not configured (email.transport = \"none\")")]
    NotConfigured,
    #[error("not an e-mail address")]
    BadAddress,
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("{path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("SMTP relay {relay}: {reason}")]
    Smtp { relay: String, reason: String },
    #[error("{path}: {reason}")]
    Sendmail { path: String, reason: String },
}

/// Where messages go; the engine's tests put a recorder in its place.
pub trait Outbox: Send + Sync {
    fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError>;
}

/// An address as typed by a user, checked: one mailbox, no display name.
pub fn parse_address(text: &str) -> Result<lettre::Address, MailError> {
    if text.len() > MAX_ADDRESS_LEN || text.chars().any(char::is_control) {
        return Err(MailError::BadAddress);
    }
    text.trim().parse().map_err(|_| MailError::BadAddress)
}

/// `a***@example.com`: enough for the user to recognise, little for anyone
/// who reads over their shoulder.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// Fill `{host}`, `{user}`, `{code}` and `{minutes}` in one pass, so that
/// nothing a value contains is replaced again.
pub fn fill(template: &str, host: &str, user: &str, code: &str, minutes: u64) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(template.len() + 32));
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let (value, len) = if after.starts_with("{host}") {
            (host.to_string(), 6)
        } else if after.starts_with("{user}") {
            (user.to_string(), 6)
        } else if after.starts_with("{code}") {
            (code.to_string(), 6)
        } else if after.starts_with("{minutes}") {
            (minutes.to_string(), 9)
        } else {
            ("{".to_string(), 1)
        };
        out.push_str(&value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The configured transport.
pub struct Mailer {
    cfg: EmailConfig,
    from: String,
}

impl Mailer {
    pub fn new(cfg: &EmailConfig, hostname: &str) -> Self {
        let from = if cfg.from.is_empty() {
            format!("twofold@{hostname}")
        } else {
            cfg.from.clone()
        };
        Self {
            cfg: cfg.clone(),
            from,
        }
    }

    fn message(&self, to: &str, subject: &str, body: &str) -> Result<Message, MailError> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| MailError::Build(format!("sender {:?}: {e}", self.from)))?;
        let to = Mailbox::new(None, parse_address(to)?);
        Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| MailError::Build(e.to_string()))
    }

    /// Send the `formatted` message (held until the send ends, then wiped).
    fn smtp(&self, envelope: Envelope, formatted: Zeroizing<Vec<u8>>) -> Result<(), MailError> {
        let c = &self.cfg;
        let port = match (c.smtp_port, c.smtp_security) {
            (0, Security::Starttls) => 587,
            (0, Security::Tls) => 465,
            (0, Security::None) => 25,
            (port, _) => port,
        };
        let relay = format!("{}:{port}", c.smtp_host);
        let failed = |reason: String| MailError::Smtp {
            relay: relay.clone(),
            reason,
        };
        let tls = || TlsParameters::new(c.smtp_host.clone()).map_err(|e| failed(e.to_string()));
        let tls = match c.smtp_security {
            Security::Starttls => Tls::Required(tls()?),
            Security::Tls => Tls::Wrapper(tls()?),
            Security::None => Tls::None,
        };
        let mut builder = SmtpTransport::builder_dangerous(&c.smtp_host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(c.timeout_secs)));
        if !c.smtp_credentials_file.as_os_str().is_empty() {
            builder = builder.credentials(read_credentials(&c.smtp_credentials_file)?);
        }
        // lettre's timeout bounds each step (connect, each command), not the
        // whole send: one deadline for all of it, on a thread of its own that
        // ends by lettre's own timeouts if it outlives the deadline.
        let transport = builder.build();
        let (sent, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let done = lettre::Transport::send_raw(&transport, &envelope, &formatted);
            let _ = sent.send(done.map(drop));
        });
        match outcome.recv_timeout(Duration::from_secs(c.timeout_secs)) {
            Ok(result) => result.map_err(|e| failed(describe(&e))),
            Err(_) => Err(failed(format!("no answer within {} s", c.timeout_secs))),
        }
    }

    /// `sendmail -i -- ADDRESS`, fed the message, killed past the timeout.
    fn sendmail(&self, to: &str, formatted: &[u8]) -> Result<(), MailError> {
        let path = &self.cfg.sendmail_path;
        let failed = |reason: String| MailError::Sendmail {
            path: path.display().to_string(),
            reason,
        };
        let mut child = Command::new(path)
            .args(["-i", "--", to])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        let deadline = clock::monotonic() + Duration::from_secs(self.cfg.timeout_secs);
        if let Some(mut stdin) = child.stdin.take() {
            // A full pipe blocks the write; sendmail reads its input before it
            // does anything slow, and the wait below bounds the rest.
            if let Err(e) = stdin.write_all(formatted) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("writing the message: {e}")));
            }
        }
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                // Its words are not logged: they often quote the recipient.
                Ok(Some(status)) => return Err(failed(status.to_string())),
                Ok(None) if clock::monotonic() < deadline => {
                    clock::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed(format!(
                        "no answer within {} s; stopped",
                        self.cfg.timeout_secs
                    )));
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    }
}

impl Outbox for Mailer {
    fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        if self.cfg.transport == Transport::None {
            return Err(MailError::NotConfigured);
        }
        // The message's text (with the code) once, in memory wiped when the
        // send ends; lettre's `Message`, whose copy of the body cannot be
        // wiped, is dropped at once instead of being cloned for the send.
        let message = self.message(to, subject, body)?;
        let formatted = Zeroizing::new(message.formatted());
        let envelope = message.envelope().clone();
        drop(message);
        match self.cfg.transport {
            Transport::Smtp => self.smtp(envelope, formatted),
            Transport::Sendmail => self.sendmail(to, &formatted),
            Transport::None => Err(MailError::NotConfigured),
        }
    }
}

/// What went wrong, for the log, without the relay's own words (a refusal
/// usually quotes the recipient's address): its status code, or the kind of
/// failure on this side.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    if let Some(code) = e.status() {
        format!("the relay answered {code}")
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_tls() {
        "TLS failed".into()
    } else {
        "connection failed".into()
    }
}

/// The relay's user name and password from a root-only file, read at each
/// send so that a changed password needs no restart.
fn read_credentials(path: &Path) -> Result<Credentials, MailError> {
    let failed = |reason: String| MailError::Credentials {
        path: path.display().to_string(),
        reason,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| failed(e.to_string()))?;
    let meta = file.metadata().map_err(|e| failed(e.to_string()))?;
    if meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(failed(
            "must belong to root and be readable by root alone (chmod 600)".into(),
        ));
    }
    let mut text = Zeroizing::new(String::new());
    Read::by_ref(&mut file)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| failed(e.to_string()))?;
    let mut lines = text.lines();
    match (lines.next(), lines.next()) {
        (Some(user), Some(password)) if !user.is_empty() => {
            Ok(Credentials::new(user.to_string(), password.to_string()))
        }
        _ => Err(failed(
            "expected the user name on the first line and the password on the second".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_first_letter_and_the_domain() {
        assert_eq!(mask("alice@example.com"), "a***@example.com");
        assert_eq!(mask("x@y"), "x***@y");
        assert_eq!(mask("nonsense"), "***");
    }

    #[test]
    fn templates_fill_each_name_once() {
        let out = fill(
            "{user} on {host}: {code} ({minutes} min) {other} {",
            "h",
            "{code}",
            "123456",
            5,
        );
        assert_eq!(out.as_str(), "{code} on h: 123456 (5 min) {other} {");
    }

    #[test]
    fn addresses_are_checked() {
        assert!(parse_address("alice@example.com").is_ok());
        for bad in [
            "",
            "alice",
            "a@b@c",
            "alice@example.com\r\nBcc: x@y",
            "Alice <a@b.c>",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
        assert!(parse_address(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    /// The sendmail transport with a real program in sendmail's place,
    /// which keeps its arguments and the message it is fed.
    #[test]
    fn sendmail_is_fed_the_whole_message_and_given_the_recipient() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("sendmail");
        let out = dir.path().join("out");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\necho \"$@\" > '{0}.args'\ncat > '{0}'\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = EmailConfig {
            transport: Transport::Sendmail,
            sendmail_path: program,
            ..EmailConfig::default()
        };
        let m = Mailer::new(&cfg, "host.example");
        m.send("bob@example.com", "Your code", "Code 424242\n")
            .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("To: bob@example.com"), "{text}");
        assert!(text.contains("Subject: Your code"), "{text}");
        assert!(text.contains("Code 424242"), "{text}");
        let args = std::fs::read_to_string(dir.path().join("out.args")).unwrap();
        assert_eq!(args.trim(), "-i -- bob@example.com");
    }

    #[test]
    fn the_message_names_sender_recipient_and_subject() {
        let cfg = EmailConfig {
            transport: Transport::Smtp,
            ..EmailConfig::default()
        };
        let m = Mailer::new(&cfg, "host.example");
        let text = String::from_utf8(
            m.message("bob@example.com", "Subject here", "Body 123456\n")
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(text.contains("From: twofold@host.example"), "{text}");
        assert!(text.contains("To: bob@example.com"), "{text}");
        assert!(text.contains("Subject: Subject here"), "{text}");
        assert!(text.contains("Body 123456"), "{text}");
    }

    #[test]
    fn credentials_must_be_root_only_and_two_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, "user\nsecret\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(read_credentials(&path).is_err());
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(read_credentials(&path).is_ok());
            std::fs::write(&path, "only-one-line").unwrap();
            assert!(read_credentials(&path).is_err());
        }
    }

    #[test]
    fn no_transport_sends_nothing() {
        let m = Mailer::new(&EmailConfig::default(), "h");
        assert!(matches!(
            m.send("a@b.c", "s", "b"),
            Err(MailError::NotConfigured)
        ));
    }
}
