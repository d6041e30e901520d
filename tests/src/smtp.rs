//! A real SMTP server on 127.0.0.1 for the e-mail tests: Python's aiosmtpd
//! (Debian's python3-aiosmtpd), storing each message it receives in a
//! Maildir, from which the tests read the codes twofoldd sent.

use anyhow::{Context, Result, bail};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl Mail {
    /// The first run of exactly six digits in the body: the code.
    pub fn code(&self) -> Option<String> {
        let body = self
            .text
            .split_once("\n\n")
            .map_or(self.text.as_str(), |(_, b)| b);
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if run == 6 {
                return Some(body[i..i + 6].to_string());
            }
            i += run.max(1);
        }
        None
    }
}

/// A port nobody listens on now (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How the sink protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    None,
    /// STARTTLS offered and required before any mail.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

impl SmtpSink {
    pub fn start() -> Result<SmtpSink> {
        Self::start_with(SinkTls::None)
    }

    /// With TLS, the sink's certificate (for `localhost`, self-signed) is
    /// `cert_path()`: give it to twofoldd as `SSL_CERT_FILE` to trust it.
    pub fn start_with(tls: SinkTls) -> Result<SmtpSink> {
        let dir = tempfile::Builder::new().prefix("twofold-smtp-").tempdir()?;
        let maildir = dir.path().join("Maildir");
        let port = free_port()?;
        let mut command = Command::new("/usr/bin/python3");
        command.args(["-m", "aiosmtpd", "-n"]);
        if tls != SinkTls::None {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            let made = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("openssl req")?;
            if !made.success() {
                bail!("openssl could not make a certificate");
            }
            let (cert_flag, key_flag) = match tls {
                SinkTls::Implicit => ("--smtpscert", "--smtpskey"),
                _ => ("--tlscert", "--tlskey"),
            };
            command.arg(cert_flag).arg(&cert).arg(key_flag).arg(&key);
        }
        let child = command
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("/usr/bin/python3 -m aiosmtpd (install python3-aiosmtpd)")?;
        let sink = SmtpSink { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the SMTP sink did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(sink)
    }

    /// The sink's certificate (with TLS).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `[email]` settings for twofoldd that deliver here.
    pub fn config(&self) -> String {
        format!(
            "[email]\ntransport = \"smtp\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"none\"\nfrom = \"twofold@test.example\"\n",
            self.port
        )
    }

    fn new_dir(&self) -> PathBuf {
        self.dir.path().join("Maildir").join("new")
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.new_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .map(|raw| {
                let text = raw.replace("\r\n", "\n");
                let header = |name: &str| {
                    text.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                Mail {
                    to: header("To:"),
                    subject: header("Subject:"),
                    text: text.clone(),
                }
            })
            .collect()
    }

    /// Wait until more than `seen` messages arrived; the newest.
    pub fn wait_for(&self, seen: usize) -> Result<Mail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.messages();
            if all.len() > seen {
                return all.last().cloned().context("no message");
            }
            if Instant::now() > deadline {
                bail!("no new message after {seen} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
