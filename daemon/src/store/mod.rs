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
mod journal;
pub mod postgres;
pub mod seal;
mod state;
pub use file::FileStore;
pub use journal::{DecodeError, RECORD_LEN, decode_state};
pub use postgres::PgStore;
pub use state::*;

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

use std::path::PathBuf;

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

/// Held while a user's code is checked and recorded (`Store::lock_user`);
/// dropping it lets the next host in.
pub trait UserLock {}
impl UserLock for () {}

/// What the login rules need from storage. Every call is for one user, made
/// under that user's lock on this host; `append` must be durable before it
/// returns. A store shared by several hosts (`postgres/`) sees calls from
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
    fn load_meta(&self, user: &str) -> Result<UserMeta, StoreError> {
        Ok(self.load_meta_revision(user)?.0)
    }
    /// The user's metadata and its revision, which `write_meta` is
    /// conditional on (0: none stored). The file store always says 0.
    fn load_meta_revision(&self, user: &str) -> Result<(UserMeta, u64), StoreError>;
    /// The user's metadata and state together (a login's plan reads both):
    /// a store over the network reads them in one round trip.
    fn load_meta_and_state(&self, user: &str) -> Result<(UserMeta, Option<Loaded>), StoreError> {
        Ok((self.load_meta(user)?, self.load(user)?))
    }
    /// Atomically replace the user's metadata, only if it is still at
    /// revision `read` (`load_meta_revision`; 0: only if none is stored);
    /// else `Conflict`, nothing written. Change it with `update_meta`, which
    /// reads again and retries. The file store has one daemon, whose
    /// per-user lock is held by every writer of a user's metadata: it
    /// writes unconditionally and never conflicts.
    fn write_meta(&self, user: &str, meta: &UserMeta, read: u64) -> Result<(), StoreError>;
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

    /// `lock_user`, then `load` under the lock (a code's check starts so):
    /// a store over the network sends both at once, one round trip, and
    /// still reads the state only once the lock is held.
    #[allow(clippy::type_complexity)]
    fn lock_and_load(
        &self,
        user: &str,
    ) -> Result<(Box<dyn UserLock + '_>, Option<Loaded>), StoreError> {
        let lock = self.lock_user(user)?;
        Ok((lock, self.load(user)?))
    }

    /// Whether the store is ready now, in words for `twofold admin
    /// check-config` (a database: that it answers, its schema version and
    /// that this host's key is the fleet's); what is wrong is the error.
    fn health(&self) -> Result<String, StoreError> {
        Ok("this host's state directory".into())
    }

    /// Where e-mailed codes in flight live when the store shares them with
    /// other hosts (a code sent by one works once on any); `None`: this
    /// daemon keeps them in memory (`email_codes.rs`).
    fn shared_email_codes(&self) -> Option<&dyn crate::email_codes::CodeStore> {
        None
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

/// How often `update_meta` reads and changes again after a conflict.
const META_TRIES: usize = 5;

/// Change `user`'s metadata: read it, let `change` change it (it says
/// whether it changed anything: if not, nothing is written), and write it
/// only if nobody wrote it since the read. A host that wrote it meanwhile
/// (an administrator's `require` or `forget-devices` on another host) is
/// never undone: the change is made again on what that host wrote. After
/// `META_TRIES` lost races the `Conflict` is the caller's.
pub fn update_meta(
    store: &dyn Store,
    user: &str,
    change: &mut dyn FnMut(&mut UserMeta) -> bool,
) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        let (mut meta, read) = store.load_meta_revision(user)?;
        if !change(&mut meta) {
            return Ok(());
        }
        match store.write_meta(user, &meta, read) {
            Err(StoreError::Conflict { .. }) if tries + 1 < META_TRIES => tries += 1,
            other => return other,
        }
    }
}

/// A fresh generation for a rewritten enrollment: never 0 (no enrollment)
/// and never the one it replaces, so a conditional write sees the change.
pub fn new_generation(old: u64) -> u64 {
    loop {
        let g: u64 = rand::random();
        if g != old && g != 0 {
            return g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{self, HashParams};

    /// A state printed with `{:?}` (a log line, a panic) shows no key and
    /// no backup code hash: the types that hold them print `***`.
    #[test]
    fn a_state_printed_for_debugging_holds_no_secret() {
        let fast = HashParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let (_, backup) = backup::generate(3, fast).unwrap();
        let hashes: Vec<String> = backup
            .hashes
            .iter()
            .flatten()
            .map(|h| hex::encode(&h.0))
            .collect();
        let key = vec![0xab; 20];
        let mut e = Enrollment::new(1, Some(SecretBytes(key.clone())), (6, 30), backup, 0);
        e.apps.more.push(App {
            name: "tablet".into(),
            secret: SecretBytes(vec![0xcd; 20]),
            digits: 6,
            period: 30,
            added: 0,
            last_step: None,
            used: AppUse::default(),
        });
        let printed = format!("{e:?}");
        assert!(printed.contains("SecretBytes(***)"), "{printed}");
        for secret in [
            "171, 171",
            "205, 205",
            &hex::encode(&key),
            &hex::encode([0xcd; 20]),
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
        for hash in &hashes {
            assert!(!printed.contains(hash.as_str()), "{printed}");
        }
    }
}
