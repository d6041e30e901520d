//! On-disk state, one root-only directory (0700) with two files per user:
//!
//! * `NAME.enrollment` — JSON, replaced atomically (write a temporary file,
//!   fsync, rename, fsync the directory). Holds the secret, the backup code
//!   hashes and a snapshot of the per-login state, under a random `generation`.
//! * `NAME.journal` — fixed-size 32-byte records appended and `fdatasync`ed
//!   before a login is answered: accepted step, backup code used, failure,
//!   unlock. A record counts only if its generation is the enrollment's, so
//!   rewriting the enrollment (compaction, new backup codes) retires the old
//!   journal in the same atomic rename.
//!
//! A torn last record (a crash during an append, never acknowledged) is
//! ignored and cut off before the next append; anything else that does not
//! decode is `Corrupt`, which refuses the login: unreadable state is never
//! taken as "not enrolled". Every open uses `O_NOFOLLOW`.

use super::journal::{DecodeError, RECORD_LEN, decode_state};
use super::{Enrollment, Event, Loaded, Store, StoreError, UserMeta};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct FileStore {
    users_dir: PathBuf,
}

fn open_options(write: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(!write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600);
    o
}

/// Check that `path` is a real directory owned by us, tightening its mode to
/// 0700; with `create`, make it first if it is missing.
fn secure_dir(path: &Path, create: bool) -> Result<(), StoreError> {
    let unsafe_dir = |reason: String| StoreError::UnsafeDirectory {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(io_err(path))?;
        }
        Err(e) => return Err(io_err(path)(e)),
        Ok(meta) => {
            if !meta.file_type().is_dir() {
                return Err(unsafe_dir("not a directory (or a symbolic link)".into()));
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            if meta.uid() != euid {
                return Err(unsafe_dir(format!(
                    "owned by uid {}, not {euid}",
                    meta.uid()
                )));
            }
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err(path))?;
            }
        }
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

/// Proof that the state directory was initialized: without it an unmounted
/// or mistyped directory would read as "nobody is enrolled".
const MARKER: &str = ".twofold-state";

impl FileStore {
    /// Create `state_dir` and its `users` directory (0700) and mark them as
    /// twofold's state. Safe to repeat; done by `twofoldd --init` (packaging).
    pub fn init(state_dir: &Path) -> Result<Self, StoreError> {
        secure_dir(state_dir, true)?;
        let users_dir = state_dir.join("users");
        secure_dir(&users_dir, true)?;
        let marker = users_dir.join(MARKER);
        open_options(true)
            .create(true)
            .truncate(false)
            .open(&marker)
            .map_err(io_err(&marker))?;
        sync_dir(&users_dir)?;
        sync_dir(state_dir)?;
        Self::open(state_dir)
    }

    /// Open an initialized state directory; a missing one is an error, never
    /// an empty state.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        secure_dir(state_dir, false).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == ErrorKind::NotFound => {
                StoreError::NotInitialized {
                    path: state_dir.to_path_buf(),
                }
            }
            other => other,
        })?;
        let users_dir = state_dir.join("users");
        secure_dir(&users_dir, false)?;
        let store = Self { users_dir };
        store.check_marker()?;
        Ok(store)
    }

    fn check_marker(&self) -> Result<(), StoreError> {
        match std::fs::symlink_metadata(self.users_dir.join(MARKER)) {
            Ok(meta) if meta.file_type().is_file() => Ok(()),
            _ => Err(StoreError::NotInitialized {
                path: self.users_dir.clone(),
            }),
        }
    }

    fn path(&self, user: &str, suffix: &str) -> Result<PathBuf, StoreError> {
        twofold_protocol::user::validate(user)?;
        Ok(self.users_dir.join(format!("{user}.{suffix}")))
    }
}

impl Store for FileStore {
    /// The user's state, `None` if not enrolled. Any other problem is an error.
    fn load(&self, user: &str) -> Result<Option<Loaded>, StoreError> {
        let path = self.path(user, "enrollment")?;
        let text = match open_options(false).open(&path) {
            Ok(mut f) => {
                // The file holds the secret: wipe the copy when done.
                let mut text = zeroize::Zeroizing::new(String::new());
                f.read_to_string(&mut text).map_err(io_err(&path))?;
                text
            }
            // Not enrolled, provided the directory is still twofold's state
            // (not unmounted or removed since start-up).
            Err(e) if e.kind() == ErrorKind::NotFound => return self.check_marker().map(|()| None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let jpath = self.path(user, "journal")?;
        let mut bytes = Vec::new();
        open_options(false)
            .open(&jpath)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::Corrupt {
                    path: jpath.clone(),
                    reason: "journal missing".into(),
                },
                _ => io_err(&jpath)(e),
            })?;
        decode_state(&text, &bytes).map(Some).map_err(|e| match e {
            DecodeError::Enrollment(reason) => StoreError::Corrupt { path, reason },
            DecodeError::Journal(reason) => StoreError::Corrupt {
                path: jpath,
                reason: reason.to_string(),
            },
        })
    }

    /// Durably append `event` and move `loaded.journal_len` past it.
    fn append(&self, user: &str, loaded: &mut Loaded, event: Event) -> Result<(), StoreError> {
        let path = self.path(user, "journal")?;
        let mut f = open_options(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        if len != loaded.journal_len {
            // Cut off a torn tail so the new record starts on a record boundary.
            f.set_len(loaded.journal_len).map_err(io_err(&path))?;
        }
        f.write_all(&event.encode(loaded.enrollment.generation))
            .map_err(io_err(&path))?;
        f.sync_data().map_err(io_err(&path))?;
        loaded.journal_len += RECORD_LEN as u64;
        Ok(())
    }

    /// Atomically replace the user's enrollment (its generation must be new),
    /// then empty the journal, whose records the new generation retires.
    /// `replaces` is not checked: this host's lock already orders the calls.
    fn write_enrollment(
        &self,
        user: &str,
        _replaces: Option<&Loaded>,
        enrollment: &Enrollment,
    ) -> Result<(), StoreError> {
        let path = self.path(user, "enrollment")?;
        let jpath = self.path(user, "journal")?;
        // The journal must exist before the enrollment does; the directory
        // fsync in replace_file makes both names durable.
        open_options(true)
            .create(true)
            .truncate(false)
            .open(&jpath)
            .map_err(io_err(&jpath))?;
        let json = zeroize::Zeroizing::new(serde_json::to_vec(enrollment).map_err(|e| {
            StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?);
        self.replace_file(user, "enrollment", &json)?;
        // The rename committed the change; the old records no longer count
        // (their generation is retired), so emptying the journal is only
        // tidying and its failure is no reason to report the change as failed.
        if let Ok(j) = open_options(true).open(&jpath) {
            let _ = j.set_len(0).and_then(|()| j.sync_data());
        }
        Ok(())
    }

    fn remove_enrollment(&self, user: &str) -> Result<(), StoreError> {
        let path = self.path(user, "enrollment")?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return self.check_marker(),
            Err(e) => return Err(io_err(&path)(e)),
        }
        sync_dir(&self.users_dir)?;
        // Without its enrollment the journal counts for nothing; remove it too.
        let jpath = self.path(user, "journal")?;
        let _ = std::fs::remove_file(&jpath);
        Ok(())
    }

    fn load_meta_revision(&self, user: &str) -> Result<(UserMeta, u64), StoreError> {
        self.load_meta_file(user).map(|meta| (meta, 0))
    }

    /// Unconditional: see `Store::write_meta`.
    fn write_meta(&self, user: &str, meta: &UserMeta, _read: u64) -> Result<(), StoreError> {
        let json = serde_json::to_vec(meta).map_err(|e| StoreError::Corrupt {
            path: self.users_dir.clone(),
            reason: e.to_string(),
        })?;
        self.replace_file(user, "meta", &json)
    }

    fn for_each_user(&self, visit: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        let dir = &self.users_dir;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            // A user is named by their enrollment file and by their metadata
            // file (an override for a user not enrolled yet has only the
            // latter): a user with both is visited twice.
            let Some(user) = file
                .strip_suffix(".enrollment")
                .or_else(|| file.strip_suffix(".meta"))
            else {
                continue;
            };
            if twofold_protocol::user::validate(user).is_ok() {
                visit(user);
            }
        }
        Ok(())
    }
}

impl FileStore {
    /// `NAME.meta`, or empty if none.
    fn load_meta_file(&self, user: &str) -> Result<UserMeta, StoreError> {
        let path = self.path(user, "meta")?;
        match open_options(false).open(&path) {
            Ok(mut f) => {
                let mut text = String::new();
                f.read_to_string(&mut text).map_err(io_err(&path))?;
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.check_marker().map(|()| UserMeta::default())
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Replace `NAME.suffix` atomically: write a temporary file, fsync,
    /// rename, fsync the directory.
    fn replace_file(&self, user: &str, suffix: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(user, suffix)?;
        let tmp = self.users_dir.join(format!(".{user}.{suffix}.tmp"));
        {
            let mut f = open_options(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.users_dir)
    }
}

#[cfg(test)]
mod tests;
