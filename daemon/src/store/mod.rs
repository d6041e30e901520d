//! What the daemon keeps about each user, and the `Store` trait that every
//! read and write of it goes through. `file.rs` is the one backend today (a
//! root-only directory); a shared database for fleets of hosts implements the
//! same trait, and nothing above this folder changes.

mod file;
pub use file::{DecodeError, FileStore, RECORD_LEN, decode_state};

use crate::backup::BackupSet;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const ENROLLMENT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: unsafe state directory: {reason}")]
    UnsafeDirectory { path: PathBuf, reason: String },
    #[error(
        "{path}: missing or not initialized (no .twofold-state file); if this is a new installation, run `twofoldd --init`"
    )]
    NotInitialized { path: PathBuf },
    #[error("user name refused for storage: {0}")]
    BadName(#[from] twofold_protocol::user::UserNameError),
}

/// A TOTP secret at rest: hex in the file, `***` in any debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(#[serde(with = "hex::serde")] pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub version: u32,
    pub generation: u64,
    /// The TOTP secret (`None`: enrolled with e-mail codes only).
    pub secret: Option<SecretBytes>,
    pub digits: u8,
    pub period: u64,
    pub enrolled_at: u64,
    /// The e-mail address codes are sent to, once proven (`None`: no e-mail method).
    #[serde(default)]
    pub email: Option<String>,
    /// Last TOTP step accepted (replay guard).
    pub last_step: Option<u64>,
    pub backup: BackupSet,
    /// Wrong codes in a row (from any source), and when the last one came.
    pub failures: u32,
    pub last_failure: u64,
    /// The account-wide throttle bucket: when it is full again (`throttle.rs`).
    #[serde(default)]
    pub ceiling_tat: u64,
    /// Last login with a code (TOTP or backup).
    #[serde(default)]
    pub last_login: Option<u64>,
}

/// What an administrator or the policy keeps about a user besides the
/// enrollment: `NAME.meta`, replaced atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserMeta {
    /// Per-user override (`twofold admin require|exempt USER`).
    #[serde(default)]
    pub override_mode: Option<crate::policy::Mode>,
    /// When the user was first told to enroll under `require` (grace period).
    #[serde(default)]
    pub first_prompt: Option<u64>,
    /// Remote hosts not asked again until a time (remember this device).
    #[serde(default)]
    pub remembered: Vec<Remembered>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remembered {
    pub rhost: String,
    pub until: u64,
}

/// One journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    TotpAccepted {
        step: u64,
        at: u64,
    },
    BackupUsed {
        index: u64,
        at: u64,
    },
    /// A wrong code, and the account-wide bucket after it (computed by the
    /// engine with the configured rate, so replaying needs no configuration).
    Failure {
        at: u64,
        ceiling: u64,
    },
    Unlock {
        at: u64,
    },
    /// A code sent by e-mail was accepted (the code itself lives in memory only).
    EmailAccepted {
        at: u64,
    },
}

impl Enrollment {
    /// Fold one event into the snapshot.
    pub fn apply(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::TotpAccepted { step, at } => {
                self.last_step = Some(self.last_step.map_or(step, |s| s.max(step)));
                self.last_login = Some(self.last_login.map_or(at, |l| l.max(at)));
                self.failures = 0;
            }
            Event::BackupUsed { index, at } => {
                let slot = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.backup.hashes.get_mut(i))
                    .ok_or_else(|| format!("backup code index {index} out of range"))?;
                // Kept aside, so the code typed again reads as used, not wrong.
                if let Some(hash) = slot.take() {
                    self.backup.spent.push(hash);
                }
                self.last_login = Some(self.last_login.map_or(at, |l| l.max(at)));
                self.failures = 0;
            }
            Event::Failure { at, ceiling } => {
                self.failures = self.failures.saturating_add(1);
                self.last_failure = self.last_failure.max(at);
                // The latest record's, even if the clock went back since.
                self.ceiling_tat = ceiling;
            }
            Event::Unlock { .. } => {
                self.failures = 0;
                self.ceiling_tat = 0;
            }
            Event::EmailAccepted { at } => {
                self.last_login = Some(self.last_login.map_or(at, |l| l.max(at)));
                self.failures = 0;
            }
        }
        Ok(())
    }
}

/// A user's state as read from disk, with where the next record goes.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub enrollment: Enrollment,
    /// Bytes of intact records; an append first cuts the file back to this.
    pub journal_len: u64,
}

impl Loaded {
    pub fn journal_records(&self) -> u64 {
        self.journal_len / RECORD_LEN as u64
    }
}

/// What the login rules need from storage. Every call is for one user, made
/// under that user's lock; `append` must be durable before it returns. The
/// file backend (`file.rs`) is the only one today; a shared database for fleets of
/// hosts would implement the same three calls.
pub trait Store: Send + Sync {
    /// The user's state, `None` if not enrolled; unreadable state is an error.
    fn load(&self, user: &str) -> Result<Option<Loaded>, StoreError>;
    /// Durably record `event` after the state `loaded`; returns the new `journal_len`.
    fn append(&self, user: &str, loaded: &Loaded, event: Event) -> Result<u64, StoreError>;
    /// Atomically replace the enrollment (with a new generation).
    fn write_enrollment(&self, user: &str, enrollment: &Enrollment) -> Result<(), StoreError>;
    /// Remove the enrollment (the user enrolls again); not enrolled is fine.
    fn remove_enrollment(&self, user: &str) -> Result<(), StoreError>;
    /// The user's metadata (empty if none).
    fn load_meta(&self, user: &str) -> Result<UserMeta, StoreError>;
    /// Atomically replace the user's metadata.
    fn write_meta(&self, user: &str, meta: &UserMeta) -> Result<(), StoreError>;
    /// Call `visit` for every user with an enrollment or metadata, in no
    /// particular order, without holding the list in memory (a store of a
    /// million users is walked, not collected). A user may be visited more
    /// than once (once per file, and files may come and go during the walk);
    /// none that exists throughout is missed.
    fn for_each_user(&self, visit: &mut dyn FnMut(&str)) -> Result<(), StoreError>;

    /// Every user with an enrollment or metadata, sorted, each once.
    fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        self.for_each_user(&mut |name| names.push(name.to_string()))?;
        names.sort();
        names.dedup();
        Ok(names)
    }
}
