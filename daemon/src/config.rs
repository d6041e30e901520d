//! `/etc/twofold/twofold.toml`: parsed strictly (unknown keys are errors),
//! checked for sane ranges, and reported as `path:line:column: message`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/twofold/twofold.toml";
/// Where the policy is read from unless `policy_file` says otherwise.
pub const DEFAULT_POLICY_PATH: &str = "/etc/twofold/policy.toml";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Root-owned directory (0700) holding enrollments and per-login journals.
    pub state_dir: PathBuf,
    /// Members of this Unix group may run `twofold admin` (root always may).
    pub admin_group: String,
    /// The enforcement policy; missing means everyone `recommend`.
    pub policy_file: PathBuf,
    /// The login socket twofoldd listens on when systemd does not hand it one.
    pub login_socket: PathBuf,
    /// Where log lines also go while syslog (`/dev/log`) cannot be reached,
    /// so an administrator finds them on a host without a syslog daemon
    /// (stderr of a daemon started by D-Bus activation is kept nowhere).
    /// Empty: stderr only.
    pub log_file: PathBuf,
    pub totp: TotpConfig,
    pub throttle: ThrottleConfig,
    pub enrollment: EnrollmentConfig,
    pub email: EmailConfig,
    pub store: StoreConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotpConfig {
    /// Shown in authenticator apps above the account name.
    pub issuer: String,
    /// Digits per code for new enrollments (6 to 8).
    pub digits: u8,
    /// Seconds per code for new enrollments (15 to 120).
    pub period: u64,
    /// Steps accepted on either side of now (0 to 2), for clock drift.
    pub window: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Wrong codes in a row that cost no wait: the next one is still
    /// checked, and starts the wait (at 3: 4 guesses before the first wait).
    pub free_failures: u32,
    /// Wait after the first failure past the free ones; doubles with each further one.
    pub base_delay_secs: u64,
    /// Ceiling of the doubling wait.
    pub max_delay_secs: u64,
    /// After this many failures in a row the wait becomes `lockout_secs` (NIST SP 800-63B: 100).
    pub lockout_after: u32,
    /// Wait after each failure past `lockout_after`; bounded, so no one is locked out for good.
    pub lockout_secs: u64,
    /// Wrong codes for one account, from anywhere, allowed at once by the
    /// account-wide ceiling (which bounds attackers with many addresses).
    pub account_burst: u32,
    /// The ceiling allows one more wrong code per this many seconds.
    pub account_interval_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// Backup codes issued at enrollment (5 to 20).
    pub backup_codes: u32,
    /// Seconds a `twofold setup` offer stays valid before it must be started again.
    pub offer_timeout_secs: u64,
    /// With this many backup codes left or fewer, every login with a code
    /// says how many are left and how to make new ones (0 to 20, below
    /// `backup_codes`; 0: only when none is left).
    pub low_backup_codes: u32,
}

/// Where enrollments and login state are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `state_dir` on this host (one host).
    File,
    /// A PostgreSQL database shared by a fleet of hosts.
    Postgresql,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// libpq-style key=value connection string (several hosts, `target_session_attrs`,
    /// `sslmode`); never a password (`password_file`).
    pub connection: String,
    /// A root-only file whose first line is the database password. Empty: none.
    pub password_file: PathBuf,
    /// PEM certificate(s) to verify the server with. Empty: the system's.
    pub ca_file: PathBuf,
    /// PEM client certificate and its PKCS#8 key, for certificate login. Empty: none.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    /// The fleet key sealing TOTP keys and e-mail addresses (root, 0600).
    pub fleet_key_file: PathBuf,
    /// Longest wait for a connection to the database, per host tried.
    pub connect_timeout_secs: u64,
    /// Longest a statement may run on the server.
    pub statement_timeout_secs: u64,
    /// Connections kept open to the database.
    pub pool_size: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::File,
            connection: String::new(),
            password_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            client_cert_file: PathBuf::new(),
            client_key_file: PathBuf::new(),
            fleet_key_file: PathBuf::from("/etc/twofold/fleet.key"),
            connect_timeout_secs: 3,
            statement_timeout_secs: 3,
            pool_size: 8,
        }
    }
}

/// What is wrong with `store.connection`, if anything: it must parse, name
/// no password, and ask for TLS towards any host reached over the network
/// (the TLS connector verifies the certificate and the host name).
fn connection_problem(text: &str) -> Option<String> {
    let cfg = match text.parse::<tokio_postgres::Config>() {
        Ok(c) => c,
        Err(e) => return Some(format!("store.connection does not parse: {e}")),
    };
    if cfg.get_password().is_some() {
        return Some(
            "store.connection must not hold the password: put it in store.password_file".into(),
        );
    }
    if cfg.get_hosts().is_empty() {
        return Some("store.connection must name a host (host=...)".into());
    }
    let tcp = cfg
        .get_hosts()
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)));
    if tcp && cfg.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Some(
            "store.connection must say sslmode=require for a host reached over the network (the server's certificate and name are then verified)".into(),
        );
    }
    None
}

fn absolute_or_empty(p: &Path) -> bool {
    p.as_os_str().is_empty() || p.is_absolute()
}

/// How e-mail codes leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// E-mail codes are off: nobody can register or receive one.
    None,
    /// An SMTP relay (`smtp_host`).
    Smtp,
    /// The local `sendmail` program (`sendmail_path`).
    Sendmail,
}

/// How the connection to the SMTP relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP, then STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this host (port 25).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub transport: Transport,
    pub smtp_host: String,
    /// 0: the usual port for `smtp_security` (587, 465 or 25).
    pub smtp_port: u16,
    pub smtp_security: Security,
    /// A root-only file (0600 or 0400): the user name on the first line,
    /// the password on the second. Empty: no authentication.
    pub smtp_credentials_file: PathBuf,
    pub sendmail_path: PathBuf,
    /// Sender address; empty: `twofold@` and the host name.
    pub from: String,
    /// `{host}`, `{user}`, `{code}` and `{minutes}` are replaced.
    pub subject: String,
    pub body: String,
    /// Seconds a code sent by e-mail stays valid.
    pub code_valid_secs: u64,
    /// Longest wait for the relay or sendmail, in seconds; past it the send
    /// is refused.
    pub timeout_secs: u64,
    /// Seconds between two codes sent to one user.
    pub resend_interval_secs: u64,
    /// Codes sent to one user in any hour.
    pub max_sends_per_hour: u32,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            transport: Transport::None,
            smtp_host: "localhost".into(),
            smtp_port: 0,
            smtp_security: Security::Starttls,
            smtp_credentials_file: PathBuf::new(),
            sendmail_path: PathBuf::from("/usr/sbin/sendmail"),
            from: String::new(),
            subject: "Your login code for {host}".into(),
            body: "Your code to log in to {host} as {user} is {code}.\n\
It is valid for {minutes} minutes and works once.\n\n\
If you did not try to log in, someone may know your password: change it and tell your administrator.\n"
                .into(),
            code_valid_secs: 300,
            timeout_secs: 10,
            resend_interval_secs: 30,
            max_sends_per_hour: 6,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/twofold"),
            admin_group: "twofold-admin".into(),
            policy_file: PathBuf::from(DEFAULT_POLICY_PATH),
            login_socket: PathBuf::from(twofold_protocol::LOGIN_SOCKET),
            log_file: PathBuf::from("/var/log/twofoldd.log"),
            totp: TotpConfig::default(),
            throttle: ThrottleConfig::default(),
            enrollment: EnrollmentConfig::default(),
            email: EmailConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for TotpConfig {
    fn default() -> Self {
        Self {
            issuer: "twofold".into(),
            digits: 6,
            period: 30,
            window: 1,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures: 3,
            base_delay_secs: 30,
            max_delay_secs: 1800,
            lockout_after: 100,
            lockout_secs: 86_400,
            account_burst: 30,
            account_interval_secs: 1800,
        }
    }
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            backup_codes: 10,
            offer_timeout_secs: 600,
            low_backup_codes: 3,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Where the configuration comes from.
pub enum Source<'a> {
    /// The default path: a missing file means the documented defaults.
    Default,
    /// A path the administrator named: it must exist.
    Explicit(&'a Path),
}

/// Load the configuration; `Ok((config, None))` means defaults were used
/// because the default file does not exist.
pub fn load(source: Source<'_>) -> Result<(Config, Option<PathBuf>), ConfigError> {
    let (path, must_exist) = match source {
        Source::Default => (PathBuf::from(DEFAULT_PATH), false),
        Source::Explicit(p) => (p.to_path_buf(), true),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path).map(|c| (c, Some(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            Ok((Config::default(), None))
        }
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// Parse and check configuration text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let (line, column) = line_column(text, offset);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    config.check().map_err(|(key, message)| {
        let (line, column) = find_key(text, key);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })?;
    Ok(config)
}

impl Config {
    /// Range checks; returns the offending key (`section.key`) and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let t = &self.totp;
        let th = &self.throttle;
        let e = &self.enrollment;
        let m = &self.email;
        let st = &self.store;
        let pg = st.backend == Backend::Postgresql;
        let connection = if pg {
            connection_problem(&st.connection)
        } else {
            None
        };
        let rules: [(bool, &'static str, String); 31] = [
            (self.state_dir.is_absolute(), "state_dir", "state_dir must be an absolute path".into()),
            (self.policy_file.is_absolute(), "policy_file", "policy_file must be an absolute path".into()),
            (self.login_socket.is_absolute(), "login_socket", "login_socket must be an absolute path".into()),
            (!self.admin_group.is_empty(), "admin_group", "admin_group must not be empty".into()),
            (
                self.log_file.as_os_str().is_empty() || self.log_file.is_absolute(),
                "log_file",
                "log_file must be an absolute path (or empty: stderr only)".into(),
            ),
            (
                !t.issuer.is_empty() && !t.issuer.contains(':') && t.issuer.len() <= 64,
                "totp.issuer",
                "totp.issuer must be 1 to 64 characters without ':'".into(),
            ),
            ((6..=8).contains(&t.digits), "totp.digits", format!("totp.digits must be 6, 7 or 8, not {}", t.digits)),
            ((15..=120).contains(&t.period), "totp.period", format!("totp.period must be 15 to 120 seconds, not {}", t.period)),
            (t.window <= 2, "totp.window", format!("totp.window must be 0, 1 or 2 steps, not {}", t.window)),
            (th.base_delay_secs >= 1, "throttle.base_delay_secs", "throttle.base_delay_secs must be at least 1".into()),
            (
                th.max_delay_secs >= th.base_delay_secs && th.max_delay_secs <= 86_400,
                "throttle.max_delay_secs",
                "throttle.max_delay_secs must be between base_delay_secs and 86400".into(),
            ),
            (
                (1..=100).contains(&th.lockout_after) && th.lockout_after > th.free_failures,
                "throttle.lockout_after",
                "throttle.lockout_after must be 1 to 100 and above free_failures".into(),
            ),
            (
                th.lockout_secs >= th.max_delay_secs && th.lockout_secs <= 7 * 86_400,
                "throttle.lockout_secs",
                "throttle.lockout_secs must be between max_delay_secs and 604800 (a week): a lockout must end".into(),
            ),
            (
                (1..=1000).contains(&th.account_burst),
                "throttle.account_burst",
                format!("throttle.account_burst must be 1 to 1000, not {}", th.account_burst),
            ),
            (
                (1..=86_400).contains(&th.account_interval_secs),
                "throttle.account_interval_secs",
                "throttle.account_interval_secs must be 1 to 86400".into(),
            ),
            (
                (5..=20).contains(&e.backup_codes) && e.offer_timeout_secs >= 60,
                "enrollment.backup_codes",
                "enrollment.backup_codes must be 5 to 20 and enrollment.offer_timeout_secs at least 60".into(),
            ),
            (
                e.low_backup_codes < e.backup_codes,
                "enrollment.low_backup_codes",
                format!(
                    "enrollment.low_backup_codes must be below enrollment.backup_codes ({}), not {}",
                    e.backup_codes, e.low_backup_codes
                ),
            ),
            (
                m.transport != Transport::Smtp || !m.smtp_host.is_empty(),
                "email.smtp_host",
                "email.smtp_host must name the SMTP relay".into(),
            ),
            (
                m.transport != Transport::Sendmail || m.sendmail_path.is_absolute(),
                "email.sendmail_path",
                "email.sendmail_path must be an absolute path".into(),
            ),
            (
                m.smtp_credentials_file.as_os_str().is_empty() || m.smtp_credentials_file.is_absolute(),
                "email.smtp_credentials_file",
                "email.smtp_credentials_file must be an absolute path (or empty)".into(),
            ),
            (
                (10..=3600).contains(&m.code_valid_secs),
                "email.code_valid_secs",
                "email.code_valid_secs must be 10 to 3600 (a few minutes)".into(),
            ),
            (
                (1..=15).contains(&m.timeout_secs),
                "email.timeout_secs",
                "email.timeout_secs must be 1 to 15 (the login waits at most 20 s for the daemon)".into(),
            ),
            (
                m.resend_interval_secs <= 3600,
                "email.resend_interval_secs",
                "email.resend_interval_secs must be at most 3600".into(),
            ),
            (
                (1..=100).contains(&m.max_sends_per_hour),
                "email.max_sends_per_hour",
                "email.max_sends_per_hour must be 1 to 100".into(),
            ),
            (
                !pg || !st.connection.is_empty(),
                "store.connection",
                "store.connection must be set for backend = \"postgresql\"".into(),
            ),
            (connection.is_none(), "store.connection", connection.unwrap_or_default()),
            (
                absolute_or_empty(&st.password_file)
                    && absolute_or_empty(&st.ca_file)
                    && absolute_or_empty(&st.client_cert_file)
                    && absolute_or_empty(&st.client_key_file),
                "store.password_file",
                "store.password_file, ca_file, client_cert_file and client_key_file must be absolute paths (or empty)".into(),
            ),
            (
                st.client_cert_file.as_os_str().is_empty() == st.client_key_file.as_os_str().is_empty(),
                "store.client_key_file",
                "store.client_cert_file and store.client_key_file go together".into(),
            ),
            (
                st.fleet_key_file.is_absolute(),
                "store.fleet_key_file",
                "store.fleet_key_file must be an absolute path".into(),
            ),
            (
                (1..=10).contains(&st.connect_timeout_secs) && (1..=10).contains(&st.statement_timeout_secs),
                "store.connect_timeout_secs",
                "store.connect_timeout_secs and store.statement_timeout_secs must be 1 to 10 (a login waits at most 20 s for the daemon)".into(),
            ),
            (
                (1..=64).contains(&st.pool_size),
                "store.pool_size",
                format!("store.pool_size must be 1 to 64, not {}", st.pool_size),
            ),
        ];
        for (ok, key, message) in rules {
            if !ok {
                return Err((key, message));
            }
        }
        Ok(())
    }
}

pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Line of `key` (given as `section.key` or `key`) in the text, for messages
/// about values that parsed but are out of range.
fn find_key(text: &str, key: &str) -> (usize, usize) {
    let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current = name.trim().to_string();
            continue;
        }
        if current == section
            && let Some(rest) = trimmed.strip_prefix(leaf)
            && rest.trim_start().starts_with('=')
        {
            return (n + 1, line.len() - line.trim_start().len() + 1);
        }
    }
    (1, 1)
}

#[cfg(test)]
mod tests;

/// Every key of `twofold.toml`, as `table.key` for keys inside a table. The
/// documentation tests (tests/tests/docs.rs) check that twofold.toml(5) and
/// the sample file name each; the test below keeps this list equal
/// to the fields of `Config`.
pub const KEYS: &[&str] = &[
    "state_dir",
    "admin_group",
    "policy_file",
    "login_socket",
    "log_file",
    "totp.issuer",
    "totp.digits",
    "totp.period",
    "totp.window",
    "throttle.free_failures",
    "throttle.base_delay_secs",
    "throttle.max_delay_secs",
    "throttle.lockout_after",
    "throttle.lockout_secs",
    "throttle.account_burst",
    "throttle.account_interval_secs",
    "enrollment.backup_codes",
    "enrollment.offer_timeout_secs",
    "enrollment.low_backup_codes",
    "email.transport",
    "email.smtp_host",
    "email.smtp_port",
    "email.smtp_security",
    "email.smtp_credentials_file",
    "email.sendmail_path",
    "email.from",
    "email.subject",
    "email.body",
    "email.code_valid_secs",
    "email.timeout_secs",
    "email.resend_interval_secs",
    "email.max_sends_per_hour",
    "store.backend",
    "store.connection",
    "store.password_file",
    "store.ca_file",
    "store.client_cert_file",
    "store.client_key_file",
    "store.fleet_key_file",
    "store.connect_timeout_secs",
    "store.statement_timeout_secs",
    "store.pool_size",
];

#[cfg(test)]
mod keys_tests;
