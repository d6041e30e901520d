//! How a login step ended, as the log says it: one word each, and the level
//! that word is logged at.

use crate::audit::Level;

/// The `outcome=` word of a login's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    AllowedExempt,
    AllowedTrustedNetwork,
    AllowedRememberedDevice,
    AllowedNotEnrolled,
    AllowedGracePeriod,
    AskedForCode,
    AskedForEmailCode,
    ThrottledAccountAskedForBackupCode,
    EnrollingAtLogin,
    RefusedNoMethod,
    RefusedNotEnrolled,
    Throttled,
    ThrottledAccount,
    NotEnrolled,
    RefusedMalformedInput,
    AcceptedTotp,
    AcceptedEmailCode,
    AcceptedBackupCode,
    RefusedUsedBackupCode,
    RefusedReplayedCode,
    RefusedWrongCode,
    ProvedMustEnroll,
    RefusedEmailNotOffered,
    EmailCodeSent,
    EnrollmentOfferedAtLogin,
    EmailEnrollmentOfferedAtLogin,
    EnrolledAtLogin,
    /// The daemon could not check: its store, the database or NSS failed.
    RefusedInternalError,
    /// Root asked for a name that is no account on this host.
    RefusedUnknownUser,
}

impl LoginOutcome {
    /// The word in the log line.
    pub fn word(self) -> &'static str {
        match self {
            Self::AllowedExempt => "allowed-exempt",
            Self::AllowedTrustedNetwork => "allowed-trusted-network",
            Self::AllowedRememberedDevice => "allowed-remembered-device",
            Self::AllowedNotEnrolled => "allowed-not-enrolled",
            Self::AllowedGracePeriod => "allowed-grace-period",
            Self::AskedForCode => "asked-for-code",
            Self::AskedForEmailCode => "asked-for-email-code",
            Self::ThrottledAccountAskedForBackupCode => "throttled-account-asked-for-backup-code",
            Self::EnrollingAtLogin => "enrolling-at-login",
            Self::RefusedNoMethod => "refused-no-method",
            Self::RefusedNotEnrolled => "refused-not-enrolled",
            Self::Throttled => "throttled",
            Self::ThrottledAccount => "throttled-account",
            Self::NotEnrolled => "not-enrolled",
            Self::RefusedMalformedInput => "refused-malformed-input",
            Self::AcceptedTotp => "accepted-totp",
            Self::AcceptedEmailCode => "accepted-email-code",
            Self::AcceptedBackupCode => "accepted-backup-code",
            Self::RefusedUsedBackupCode => "refused-used-backup-code",
            Self::RefusedReplayedCode => "refused-replayed-code",
            Self::RefusedWrongCode => "refused-wrong-code",
            Self::ProvedMustEnroll => "proved-must-enroll",
            Self::RefusedEmailNotOffered => "refused-email-not-offered",
            Self::EmailCodeSent => "email-code-sent",
            Self::EnrollmentOfferedAtLogin => "enrollment-offered-at-login",
            Self::EmailEnrollmentOfferedAtLogin => "email-enrollment-offered-at-login",
            Self::EnrolledAtLogin => "enrolled-at-login",
            Self::RefusedInternalError => "refused-internal-error",
            Self::RefusedUnknownUser => "refused-unknown-user",
        }
    }

    /// A code accepted is routine; everything else is worth a look.
    pub fn level(self) -> Level {
        match self {
            Self::AcceptedTotp | Self::AcceptedEmailCode | Self::AcceptedBackupCode => Level::Info,
            Self::RefusedInternalError => Level::Error,
            _ => Level::Warning,
        }
    }
}

impl std::fmt::Display for LoginOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_codes_are_info() {
        assert_eq!(LoginOutcome::AcceptedTotp.level(), Level::Info);
        assert_eq!(LoginOutcome::AcceptedBackupCode.level(), Level::Info);
        assert_eq!(LoginOutcome::AcceptedEmailCode.level(), Level::Info);
        assert_eq!(LoginOutcome::AllowedExempt.level(), Level::Warning);
        assert_eq!(LoginOutcome::ProvedMustEnroll.level(), Level::Warning);
        assert_eq!(LoginOutcome::RefusedWrongCode.level(), Level::Warning);
        assert_eq!(LoginOutcome::RefusedInternalError.level(), Level::Error);
    }
}
