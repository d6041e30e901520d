//! What the self-service and administration calls answer: a user's status,
//! the report's rows (with the old row shape older commands still read),
//! remembered devices.

use crate::Methods;
use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct UserStatus {
    pub user: String,
    pub enrolled: bool,
    /// `totp`, `email` or `totp,email`; empty when not enrolled.
    pub methods: String,
    /// The e-mail address codes go to, masked (`a***@example.com`), or empty.
    pub email: String,
    pub backup_codes_left: u32,
    /// Seconds until a code will be verified again (0: not throttled).
    pub throttled_for_secs: u64,
    /// Consecutive failed codes since the last success.
    pub consecutive_failures: u32,
    /// Few backup codes are left (at most the configured
    /// `enrollment.low_backup_codes`): time for a new set.
    pub low_backup_codes: bool,
    /// Seconds until the account-wide ceiling (wrong codes from several
    /// places) checks app and e-mail codes from a new address again; until
    /// then only backup codes are checked there. 0: not reached.
    pub ceiling_reached_for_secs: u64,
    /// The effective rule's name (`default`, a rule's `name`, or `override`).
    pub rule: String,
    /// The mode in force today: `exempt`, `optional`, `recommend` or `require`.
    pub mode: String,
    /// When the rule becomes `require` (YYYY-MM-DD), or empty.
    pub enforcement_date: String,
    /// Days until then (0 when empty or past).
    pub days_left: u32,
    /// What `twofold setup` offers this user now: the methods the rule
    /// accepts that this host provides (no `email` while e-mail is off).
    pub setup_methods: Methods,
    /// What this host provides at all (`totp`, and `email` unless e-mail is off).
    pub host_methods: Methods,
    /// The user's authenticator apps, the first one first.
    pub authenticators: Vec<Authenticator>,
}

/// One authenticator app of a user (each has its own key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Authenticator {
    /// `app` for the first one unless it was named.
    pub name: String,
    /// `totp`.
    pub method: String,
    /// Unix time it was added.
    pub added: u64,
    /// Unix time of its last accepted code (0: never).
    pub last_used: u64,
    /// Its clock's offset from the host's at its last accepted code, in
    /// seconds (positive: ahead); meaningful only with `drift_known`.
    pub drift_secs: i64,
    pub drift_known: bool,
}

/// One line of `twofold admin report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ReportRow {
    pub user: String,
    pub uid: u32,
    pub enrolled: bool,
    /// `totp`, `email` or `totp,email`; empty when not enrolled.
    pub method: String,
    pub backup_codes_left: u32,
    /// As `UserStatus::low_backup_codes`.
    pub low_backup_codes: bool,
    /// Unix time of the last login with a code (0: never).
    pub last_login: u64,
    pub rule: String,
    pub mode: String,
    pub enforcement_date: String,
    pub days_left: u32,
    /// `require` or `exempt` when an administrator set one, else empty.
    pub override_mode: String,
    /// As `UserStatus::ceiling_reached_for_secs`.
    pub ceiling_reached_for_secs: u64,
    /// For a second name of an account's uid (like `toor` for root): the
    /// account's own name, whose enrollment and rule this row shows (a
    /// login under the alias is asked for that account's code). Empty
    /// for the account itself.
    pub alias_of: String,
    /// The host of the user's last login with a code: a fleet's database
    /// records it; one host's own files mean this host. Empty: never, or
    /// not recorded (an older daemon, or a login before it was recorded).
    pub last_host: String,
}

/// A `ReportRow` as `AdminReport` sends it, without `last_host`: the
/// wire's shape for `twofold` commands older than the last host, kept so
/// they still read a newer daemon's report (`AdminReportHosts` sends
/// `ReportRow`; a newer command asks it first, and this of an older daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ReportRowV1 {
    pub user: String,
    pub uid: u32,
    pub enrolled: bool,
    /// `totp`, `email` or `totp,email`; empty when not enrolled.
    pub method: String,
    pub backup_codes_left: u32,
    /// As `UserStatus::low_backup_codes`.
    pub low_backup_codes: bool,
    /// Unix time of the last login with a code (0: never).
    pub last_login: u64,
    pub rule: String,
    pub mode: String,
    pub enforcement_date: String,
    pub days_left: u32,
    /// `require` or `exempt` when an administrator set one, else empty.
    pub override_mode: String,
    /// As `UserStatus::ceiling_reached_for_secs`.
    pub ceiling_reached_for_secs: u64,
    /// For a second name of an account's uid (like `toor` for root): the
    /// account's own name, whose enrollment and rule this row shows (a
    /// login under the alias is asked for that account's code). Empty
    /// for the account itself.
    pub alias_of: String,
}

impl From<ReportRow> for ReportRowV1 {
    fn from(r: ReportRow) -> Self {
        Self {
            user: r.user,
            uid: r.uid,
            enrolled: r.enrolled,
            method: r.method,
            backup_codes_left: r.backup_codes_left,
            low_backup_codes: r.low_backup_codes,
            last_login: r.last_login,
            rule: r.rule,
            mode: r.mode,
            enforcement_date: r.enforcement_date,
            days_left: r.days_left,
            override_mode: r.override_mode,
            ceiling_reached_for_secs: r.ceiling_reached_for_secs,
            alias_of: r.alias_of,
        }
    }
}

impl From<ReportRowV1> for ReportRow {
    /// An older daemon's row: no host recorded.
    fn from(r: ReportRowV1) -> Self {
        Self {
            user: r.user,
            uid: r.uid,
            enrolled: r.enrolled,
            method: r.method,
            backup_codes_left: r.backup_codes_left,
            low_backup_codes: r.low_backup_codes,
            last_login: r.last_login,
            rule: r.rule,
            mode: r.mode,
            enforcement_date: r.enforcement_date,
            days_left: r.days_left,
            override_mode: r.override_mode,
            ceiling_reached_for_secs: r.ceiling_reached_for_secs,
            alias_of: r.alias_of,
            last_host: String::new(),
        }
    }
}

/// A remote host a user logged in from with a code, not asked again until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct RememberedDevice {
    pub rhost: String,
    pub until: u64,
}
