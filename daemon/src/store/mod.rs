//! What the daemon keeps about each user, and the `Store` trait that every
//! read and write of it goes through. `file.rs` keeps it in a root-only
//! directory (one host); a database shared by a fleet of hosts implements the
//! same trait, and nothing above this folder knows which one it has.
//!
//! Across hosts the engine's per-user lock does not exist, so every write is
//! conditional on the state the caller loaded: a lost race comes back as
//! `StoreError::Conflict`, never as a success (see `Store::append`).

pub mod copy;
mod file;
pub mod postgres;
pub mod seal;
pub use file::{DecodeError, FileStore, RECORD_LEN, decode_state};
pub use postgres::PgStore;

/// The store `cfg` names, ready for logins: the file store opened (never
/// created: `twofoldd --init` does that), or the database's schema and the
/// fleet key checked.
pub fn open(cfg: &crate::config::Config) -> Result<Box<dyn Store>, StoreError> {
    match cfg.store.backend {
        crate::config::Backend::File => Ok(Box::new(FileStore::open(&cfg.state_dir)?)),
        crate::config::Backend::Postgresql => {
            let store = PgStore::new(&cfg.store)?;
            store.check()?;
            Ok(Box::new(store))
        }
    }
}

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
    /// The state changed since it was loaded (another host was first): the
    /// write did not happen. Only a shared store ever says this.
    #[error("the state of {user} changed meanwhile (another host wrote it first)")]
    Conflict { user: String },
    /// The database did not answer, or answered with an error.
    #[error("database: {0}")]
    Database(String),
    /// A sealed field does not open: never taken as "not enrolled".
    #[error("the {field} of {user} cannot be unsealed: {reason}")]
    Sealed {
        user: String,
        field: &'static str,
        reason: String,
    },
    /// This host's fleet key is not the one the database was set up with.
    #[error(
        "this host's fleet key is not the fleet's ({0}): copy the key file from a host of the fleet (store.fleet_key_file)"
    )]
    WrongKey(String),
    /// The fleet key file is missing or unusable.
    #[error("fleet key: {0}")]
    Key(String),
    /// The database's schema is missing, older or newer than this daemon's.
    #[error("database schema: {0}")]
    Schema(String),
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

/// Why a journal does not replay: the file is damaged, or written by
/// something that is not this version of twofold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("record {0} fails its checksum")]
    Checksum(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("backup code index {0} out of range")]
    BackupIndex(u64),
}

impl Enrollment {
    /// Fold one event into the snapshot.
    pub fn apply(&mut self, event: Event) -> Result<(), JournalError> {
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
                    .ok_or(JournalError::BackupIndex(index))?;
                *slot = None;
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

/// A user's state as read from the store, with where the next record goes.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub enrollment: Enrollment,
    /// File store: bytes of intact records; an append first cuts the file
    /// back to this (0 in a database, which needs no compaction).
    pub journal_len: u64,
    /// Database: the row's revision when loaded, which a replacing write is
    /// conditional on (0 in the file store).
    pub revision: u64,
    /// The hashes of the backup codes already used, where the store keeps
    /// them (a database: a code used on another host is told apart from a
    /// wrong guess); empty in the file store, whose one daemon remembers them.
    pub used_backup: Vec<crate::backup::HexHash>,
}

impl Loaded {
    pub fn journal_records(&self) -> u64 {
        self.journal_len / RECORD_LEN as u64
    }
}

/// Held while a user's code is checked and recorded (`Store::lock_user`);
/// dropping it lets the next host in.
pub trait UserLock {}
impl UserLock for () {}

/// What the login rules need from storage. Every call is for one user, made
/// under that user's lock on this host; `append` must be durable before it
/// returns. A store shared by several hosts (`postgres.rs`) sees calls from
/// other daemons between a load and a write, so its writes are conditional
/// and a lost race is `StoreError::Conflict`; the file store (`file.rs`) has
/// one daemon, whose lock already orders the calls, and never conflicts.
pub trait Store: Send + Sync {
    /// The user's state, `None` if not enrolled; unreadable state is an error.
    fn load(&self, user: &str) -> Result<Option<Loaded>, StoreError>;
    /// Durably record `event` after the state `loaded`, and move `loaded`'s
    /// position on (`journal_len`, `revision`; the engine folds the event
    /// into the enrollment). `Conflict`, with nothing written, when the event
    /// no longer holds for the stored state: the step is not newer than the
    /// stored last step, the backup code is already used, the enrollment was
    /// replaced or removed, or (a failure) the account-wide bucket moved.
    fn append(&self, user: &str, loaded: &mut Loaded, event: Event) -> Result<(), StoreError>;
    /// Atomically replace the enrollment (with a new generation). With
    /// `replaces`, only if the stored state is still that one; without, only
    /// if the user is not enrolled; else `Conflict`.
    fn write_enrollment(
        &self,
        user: &str,
        replaces: Option<&Loaded>,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError>;
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

    /// Order the checks of `user`'s codes with those of every other daemon
    /// sharing this store, until the guard is dropped: a code is checked and
    /// its outcome recorded by one daemon at a time, so the account-wide
    /// ceiling gives guesses spread over many hosts no more checks than one
    /// host would (conditional writes alone keep single use, not that). The
    /// file store has one daemon, whose own lock does it: nothing to hold.
    fn lock_user(&self, _user: &str) -> Result<Box<dyn UserLock + '_>, StoreError> {
        Ok(Box::new(()))
    }

    /// Every user with an enrollment or metadata, sorted, each once.
    fn users(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        self.for_each_user(&mut |name| names.push(name.to_string()))?;
        names.sort();
        names.dedup();
        Ok(names)
    }
}
