//! The contract between `pam_twofold.so`, `twofoldd` and `twofold`: bus names,
//! the D-Bus interface as a proxy trait, the types it carries, and the input
//! checks every side applies the same way.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod code;
mod mode;
mod request;
mod secret;
mod status;
pub mod text;
pub mod user;
pub mod wire;

use serde::{Deserialize, Serialize};
use zbus::{DBusError, zvariant::Type};

pub use mode::{Method, Methods, MethodsError, Mode, OptionalMode};
pub use request::{ConfirmArgs, EmailEnrollArgs, Login, VerifyArgs};
pub use secret::SecretString;
pub use status::{Authenticator, RememberedDevice, ReportRow, ReportRowV1, UserStatus};

/// Well-known name the daemon owns on the system bus.
pub const BUS_NAME: &str = "org.twofold.Twofold1";
/// Object path of the daemon's single object.
pub const OBJECT_PATH: &str = "/org/twofold/Twofold1";
/// Interface name (also the D-Bus policy's `send_interface`).
pub const INTERFACE: &str = "org.twofold.Twofold1";
/// twofoldd's own socket for logins: the same interface on a peer-to-peer
/// D-Bus connection, without the bus daemon in between (its directory is
/// root's, so only twofoldd, or systemd for it, can put a socket there).
pub const LOGIN_SOCKET: &str = "/run/twofold/login.sock";

/// The interface's method names, as the daemon serves them (zbus derives
/// each from the Rust name in `Twofold`; a unit test holds them together).
/// The module calls the login ones by name on its connection rather than
/// through `TwofoldProxy`; the daemon names them in its logs.
pub mod method {
    pub const BEGIN_LOGIN: &str = "BeginLogin";
    pub const VERIFY: &str = "Verify";
    pub const ENROLL_AT_LOGIN: &str = "EnrollAtLogin";
    pub const CONFIRM_AT_LOGIN: &str = "ConfirmAtLogin";
    pub const SEND_LOGIN_CODE: &str = "SendLoginCode";
    pub const EMAIL_ENROLL_AT_LOGIN: &str = "EmailEnrollAtLogin";
    pub const CONFIRM_EMAIL_AT_LOGIN: &str = "ConfirmEmailAtLogin";
    pub const BEGIN_ENROLLMENT: &str = "BeginEnrollment";
    pub const CONFIRM_ENROLLMENT: &str = "ConfirmEnrollment";
    pub const STATUS: &str = "Status";
    pub const REGENERATE_BACKUP_CODES: &str = "RegenerateBackupCodes";
    pub const DISABLE: &str = "Disable";
    pub const DEVICES: &str = "Devices";
    pub const FORGET_DEVICES: &str = "ForgetDevices";
    pub const ADMIN_STATUS: &str = "AdminStatus";
    pub const ADMIN_UNLOCK: &str = "AdminUnlock";
    pub const ADMIN_REPORT: &str = "AdminReport";
    pub const ADMIN_REPORT_HOSTS: &str = "AdminReportHosts";
    pub const ADMIN_EXPLAIN: &str = "AdminExplain";
    pub const ADMIN_RESET: &str = "AdminReset";
    pub const ADMIN_SET_OVERRIDE: &str = "AdminSetOverride";
    pub const ADMIN_FORGET_DEVICES: &str = "AdminForgetDevices";
    pub const ADMIN_CHECK_POLICY: &str = "AdminCheckPolicy";
    pub const ADMIN_RELOAD: &str = "AdminReload";
    pub const BEGIN_EMAIL_ENROLLMENT: &str = "BeginEmailEnrollment";
    pub const CONFIRM_EMAIL_ENROLLMENT: &str = "ConfirmEmailEnrollment";
    pub const BEGIN_AUTHENTICATOR: &str = "BeginAuthenticator";
    pub const REMOVE_AUTHENTICATOR: &str = "RemoveAuthenticator";
    pub const ADMIN_REMOVE_AUTHENTICATOR: &str = "AdminRemoveAuthenticator";
    /// The methods of a login, which the module calls (the test that
    /// twofoldd serves them all reads this).
    pub const LOGIN: &[&str] = &[
        BEGIN_LOGIN,
        VERIFY,
        ENROLL_AT_LOGIN,
        CONFIRM_AT_LOGIN,
        SEND_LOGIN_CODE,
        EMAIL_ENROLL_AT_LOGIN,
        CONFIRM_EMAIL_AT_LOGIN,
    ];
    /// Every method of the interface.
    pub const ALL: &[&str] = &[
        BEGIN_LOGIN,
        VERIFY,
        BEGIN_ENROLLMENT,
        CONFIRM_ENROLLMENT,
        STATUS,
        REGENERATE_BACKUP_CODES,
        ENROLL_AT_LOGIN,
        CONFIRM_AT_LOGIN,
        DISABLE,
        DEVICES,
        FORGET_DEVICES,
        ADMIN_STATUS,
        ADMIN_UNLOCK,
        ADMIN_REPORT,
        ADMIN_REPORT_HOSTS,
        ADMIN_EXPLAIN,
        ADMIN_RESET,
        ADMIN_SET_OVERRIDE,
        ADMIN_FORGET_DEVICES,
        ADMIN_CHECK_POLICY,
        ADMIN_RELOAD,
        SEND_LOGIN_CODE,
        BEGIN_EMAIL_ENROLLMENT,
        CONFIRM_EMAIL_ENROLLMENT,
        EMAIL_ENROLL_AT_LOGIN,
        CONFIRM_EMAIL_AT_LOGIN,
        BEGIN_AUTHENTICATOR,
        REMOVE_AUTHENTICATOR,
        ADMIN_REMOVE_AUTHENTICATOR,
    ];
}

/// zbus's `#[interface]` under the contract's interface name, for the
/// daemon's impl block: `twofold_protocol::serve_interface! { impl Service { ... } }`.
/// (zbus's attribute takes only a literal, so the name is spelled here, in
/// the contract, next to `INTERFACE`; a unit test keeps them equal.)
#[macro_export]
macro_rules! serve_interface {
    ($($item:tt)*) => {
        #[::zbus::interface(name = "org.twofold.Twofold1")]
        $($item)*
    };
}

/// What the module must do for a login, decided by the daemon from the
/// user's effective rule and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Type)]
#[zbus(signature = "s")]
pub enum LoginAction {
    /// Ask for a code and call `Verify`.
    AskCode,
    /// No code is needed (exempt, not enrolled under `optional` or
    /// `recommend`, trusted network, remembered device, grace period): show
    /// `message` if any and return PAM_IGNORE, leaving the decision to the stack.
    Allow,
    /// Not enrolled under `require` with enrollment at login: call
    /// `EnrollAtLogin`, show the offer, ask for a code, `ConfirmAtLogin`.
    Enroll,
    /// Refuse without asking (throttled, or not enrolled under `require`
    /// without enrollment at login): show `message`.
    Refuse,
    /// The user's code comes by e-mail: call `SendLoginCode`, ask with the
    /// prompt it returns, then `Verify`.
    SendEmail,
}

/// The service name `twofold setup` gives `Verify` when the user proves
/// themselves before adding a second method.
pub const SELF_SERVICE: &str = "twofold";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LoginPlan {
    pub action: LoginAction,
    /// Text for the user (may be empty).
    pub message: String,
    /// The prompt for `AskCode` (empty: the module's own).
    pub prompt: String,
    /// For `AskCode`: when not empty, an empty answer asks for a code by
    /// e-mail (`SendLoginCode`) to this (masked) address.
    pub email: String,
    /// For `Enroll`: the methods the user may set up.
    pub methods: Vec<Method>,
}

impl LoginPlan {
    /// A plan with only an action and a message.
    pub fn new(action: LoginAction, message: String) -> Self {
        Self {
            action,
            message,
            prompt: String::new(),
            email: String::new(),
            methods: Vec::new(),
        }
    }
}

/// Result of one verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Type)]
#[zbus(signature = "s")]
#[must_use]
pub enum VerifyOutcome {
    /// A TOTP code for a step newer than any accepted before.
    Accepted,
    /// An unused backup code, now spent.
    AcceptedBackupCode,
    /// Neither a valid code nor an unused backup code.
    Wrong,
    /// A valid TOTP code whose step was already used (or is older), or a
    /// backup code already spent (by an earlier login, or by the winner of
    /// a race). Not counted as a wrong guess: only someone who knew the
    /// code can type it.
    Replayed,
    /// Not verified: the user must wait (or, when the account-wide ceiling
    /// is reached, type a backup code: `message` says which).
    Throttled,
    /// The user has no enrollment.
    NotEnrolled,
    /// A right code for the user's existing method, which their rule no
    /// longer accepts: the login must go on to set up one it does accept
    /// (`LoginPlan::methods`). Not an acceptance: PAM_SUCCESS never follows.
    MustEnroll,
}

impl VerifyOutcome {
    pub fn is_accepted(self) -> bool {
        matches!(self, Self::Accepted | Self::AcceptedBackupCode)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct VerifyReply {
    pub outcome: VerifyOutcome,
    /// Text for the user (may be empty).
    pub message: String,
}

/// A fresh secret offered to the caller by `BeginEnrollment`; stored only
/// once `ConfirmEnrollment` proves the user's app computes the same codes.
#[derive(Debug, Clone, Serialize, Deserialize, Type)]
pub struct EnrollmentOffer {
    /// The Key URI as a QR code, text lines of Unicode half blocks (rendered
    /// by the daemon so that the command and the module show the same thing).
    pub qr_code: SecretString,
    /// The same QR code in plain ASCII (`#` and spaces, two characters per
    /// module), for terminals that cannot show Unicode.
    pub qr_code_ascii: SecretString,
    /// `otpauth://totp/...` Key URI.
    pub uri: SecretString,
    /// The same secret, base32, for manual entry.
    pub secret_base32: SecretString,
    /// Seconds before the offer is forgotten.
    pub expires_in_secs: u64,
}

/// Errors the daemon returns; the names are part of the contract.
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.twofold.Error")]
pub enum TwofoldError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not do this (checked by the caller's uid from the bus).
    AccessDenied(String),
    /// No such user on this host, or a name that cannot be one.
    UnknownUser(String),
    /// A code or argument that is malformed; nothing was verified.
    InvalidInput(String),
    /// The operation needs an enrollment the user does not have.
    NotEnrolled(String),
    /// `BeginEnrollment` for a user who is already enrolled.
    AlreadyEnrolled(String),
    /// `ConfirmEnrollment` without a live offer.
    NoPendingEnrollment(String),
    /// Too many failed codes: wait before trying again.
    Throttled(String),
    /// The daemon could not read or write its state; the login is refused.
    Internal(String),
    /// The caller (not root) has too many calls in flight or made too many
    /// too fast; nothing was done.
    Busy(String),
    /// A code could not be sent by e-mail (relay down, timeout, not configured).
    DeliveryFailed(String),
}

/// The daemon's interface. Every method identifies the caller by the uid the
/// bus reports for the sender, never by an argument.
/// (`TwofoldProxy`, with the `proxy` feature: the module calls the methods
/// on its connection instead, without zbus's proxy machinery.)
#[cfg(feature = "proxy")]
#[zbus::proxy(
    interface = "org.twofold.Twofold1",
    default_service = "org.twofold.Twofold1",
    default_path = "/org/twofold/Twofold1"
)]
pub trait Twofold {
    /// What a login of `user` must do. Root may ask for anyone; others only for themselves.
    fn begin_login(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<LoginPlan, TwofoldError>;

    /// Verify a TOTP or backup code for `user`. Root may verify anyone; others only themselves.
    fn verify(
        &self,
        user: &str,
        code: &str,
        service: &str,
        rhost: &str,
    ) -> Result<VerifyReply, TwofoldError>;

    /// Start enrolling the caller: a fresh secret, not stored yet.
    fn begin_enrollment(&self) -> Result<EnrollmentOffer, TwofoldError>;

    /// Store the caller's pending enrollment if `code` verifies; returns the backup codes.
    fn confirm_enrollment(&self, code: &str) -> Result<Vec<SecretString>, TwofoldError>;

    /// The caller's own status.
    fn status(&self) -> Result<UserStatus, TwofoldError>;

    /// Replace the caller's backup codes, after a valid TOTP code.
    fn regenerate_backup_codes(&self, code: &str) -> Result<Vec<SecretString>, TwofoldError>;

    /// Start enrolling `user` inside a login (root, or the user itself), when
    /// `BeginLogin` answered `Enroll`; the policy is checked again.
    fn enroll_at_login(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<EnrollmentOffer, TwofoldError>;

    /// Confirm an enrollment started by `EnrollAtLogin`; returns the backup codes.
    fn confirm_at_login(&self, user: &str, code: &str) -> Result<Vec<SecretString>, TwofoldError>;

    /// Remove the caller's own enrollment after a current code; refused while
    /// the caller's rule is `require`.
    fn disable(&self, code: &str) -> Result<(), TwofoldError>;

    /// The caller's remembered devices.
    fn devices(&self) -> Result<Vec<RememberedDevice>, TwofoldError>;

    /// Forget the caller's remembered devices; returns how many there were.
    fn forget_devices(&self) -> Result<u32, TwofoldError>;

    /// Any user's status (root or the admin group).
    fn admin_status(&self, user: &str) -> Result<UserStatus, TwofoldError>;

    /// Clear a user's throttle (root or the admin group).
    fn admin_unlock(&self, user: &str) -> Result<(), TwofoldError>;

    /// Every local account (uid >= 1000) and every enrolled user (root or the admin group).
    fn admin_report(&self) -> Result<Vec<ReportRowV1>, TwofoldError>;

    /// `AdminReport` with the host of each user's last login.
    fn admin_report_hosts(&self) -> Result<Vec<ReportRow>, TwofoldError>;

    /// Which rule applies to `user` for `service` from `rhost`, and why, step by step.
    fn admin_explain(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<Vec<String>, TwofoldError>;

    /// Remove `user`'s enrollment: they enroll again (root or the admin group).
    fn admin_reset(&self, user: &str) -> Result<(), TwofoldError>;

    /// Set (`require`, `exempt`) or clear (empty) a per-user override.
    fn admin_set_override(&self, user: &str, mode: OptionalMode) -> Result<(), TwofoldError>;

    /// Forget `user`'s remembered devices; returns how many there were.
    fn admin_forget_devices(&self, user: &str) -> Result<u32, TwofoldError>;

    /// Check a policy file (empty: the configured one; another path: root only);
    /// returns a summary, or `InvalidInput` with `path:line:column: reason`.
    fn admin_check_policy(&self, path: &str) -> Result<String, TwofoldError>;

    /// Read the policy file again (as SIGHUP does); an invalid one is refused
    /// and the old policy stays in force.
    fn admin_reload(&self) -> Result<String, TwofoldError>;

    /// E-mail a fresh login code to `user` (root, or the user itself), when
    /// `BeginLogin` answered `SendEmail` or offered e-mail; any older code is
    /// void. Returns the prompt, which names the masked address.
    fn send_login_code(
        &self,
        user: &str,
        service: &str,
        rhost: &str,
    ) -> Result<String, TwofoldError>;

    /// Start registering `address` for the caller's e-mail codes: a code is
    /// sent there; nothing is stored until `ConfirmEmailEnrollment`. Returns
    /// the masked address.
    fn begin_email_enrollment(&self, address: &str) -> Result<String, TwofoldError>;

    /// Store the caller's address if `code` is the one sent there; returns
    /// new backup codes when this is the caller's first method (else none).
    fn confirm_email_enrollment(&self, code: &str) -> Result<Vec<SecretString>, TwofoldError>;

    /// `BeginEmailEnrollment` inside a login (root, or the user itself), when
    /// `BeginLogin` answered `Enroll` with `email` among the methods.
    fn email_enroll_at_login(
        &self,
        user: &str,
        address: &str,
        service: &str,
        rhost: &str,
    ) -> Result<String, TwofoldError>;

    /// Confirm an e-mail enrollment started at login; returns the backup codes.
    fn confirm_email_at_login(
        &self,
        user: &str,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError>;

    /// Offer the caller a key for another authenticator app called `name`
    /// (after a current code proved them, as for a second method);
    /// `ConfirmEnrollment` stores it. At most 5 apps a user.
    fn begin_authenticator(&self, name: &str) -> Result<EnrollmentOffer, TwofoldError>;

    /// Remove the caller's app `name` after a current code; never their last
    /// method while their rule is `require`.
    fn remove_authenticator(&self, name: &str, code: &str) -> Result<(), TwofoldError>;

    /// Remove `user`'s app `name` (root or the admin group; not their last method).
    fn admin_remove_authenticator(&self, user: &str, name: &str) -> Result<(), TwofoldError>;
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use zbus::zvariant::Type;

    /// `AdminReport` answers in the shape twofold commands before the last
    /// host read (pinned here, not derived): changing it would make them
    /// fail with a signature mismatch. New fields go in `ReportRow`, which
    /// only `AdminReportHosts` sends.
    #[test]
    fn the_old_report_keeps_its_wire_shape() {
        assert_eq!(
            <Vec<ReportRowV1> as Type>::SIGNATURE.to_string(),
            "a(subsubtsssusts)"
        );
        assert_eq!(
            <Vec<ReportRow> as Type>::SIGNATURE.to_string(),
            "a(subsubtsssustss)"
        );
        let row = ReportRow {
            user: "alice".into(),
            uid: 1000,
            enrolled: true,
            method: "totp".into(),
            backup_codes_left: 9,
            low_backup_codes: false,
            last_login: 5,
            rule: "r".into(),
            mode: "require".into(),
            enforcement_date: String::new(),
            days_left: 0,
            override_mode: String::new(),
            ceiling_reached_for_secs: 0,
            alias_of: String::new(),
            last_host: "web-1".into(),
        };
        let old = ReportRowV1::from(row.clone());
        assert_eq!(
            ReportRow::from(old),
            ReportRow {
                last_host: String::new(),
                ..row
            }
        );
    }
}
