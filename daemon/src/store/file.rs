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
mod tests {
    use super::*;
    use crate::backup::{self, HashParams};
    use crate::store::{Remembered, SecretBytes};

    const FAST: HashParams = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn enrollment(generation: u64) -> Enrollment {
        let (_, backup) = backup::generate(3, FAST).unwrap();
        Enrollment {
            last_step: Some(5),
            ..Enrollment::new(
                generation,
                Some(SecretBytes(vec![7; 20])),
                (6, 30),
                backup,
                100,
            )
        }
    }

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::init(&dir.path().join("state")).unwrap();
        (dir, store)
    }

    #[test]
    fn round_trip_and_journal_fold() {
        let (_d, s) = store();
        assert!(s.load("alice").unwrap().is_none());
        s.write_enrollment("alice", None, &enrollment(1)).unwrap();
        let mut l = s.load("alice").unwrap().unwrap();
        for e in [
            Event::Failure { at: 10, ceiling: 0 },
            Event::Failure { at: 11, ceiling: 0 },
            Event::TotpAccepted {
                step: 9,
                at: 12,
                app: 0,
                drift: Some(-1),
            },
            Event::StepBurned {
                app: 2,
                step: 99,
                at: 13,
            },
            Event::BackupUsed { index: 1, at: 13 },
            Event::Failure { at: 14, ceiling: 0 },
        ] {
            s.append("alice", &mut l, e).unwrap();
        }
        let l = s.load("alice").unwrap().unwrap();
        assert_eq!(l.enrollment.last_step, Some(9));
        assert_eq!(l.enrollment.backup.remaining(), 2);
        assert_eq!((l.enrollment.failures, l.enrollment.last_failure), (1, 14));
        assert_eq!(l.enrollment.apps.first.drift, Some(-1));
        assert_eq!(l.enrollment.apps.first.last_used, Some(12));
        assert!(l.enrollment.is_burned(2, 99) && !l.enrollment.is_burned(0, 99));
        assert_eq!(l.journal_records(), 6);
    }

    #[test]
    fn files_are_private() {
        let (d, s) = store();
        s.write_enrollment("alice", None, &enrollment(1)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&d.path().join("state")), 0o700);
        assert_eq!(mode(&d.path().join("state/users")), 0o700);
        assert_eq!(mode(&d.path().join("state/users/alice.enrollment")), 0o600);
        assert_eq!(mode(&d.path().join("state/users/alice.journal")), 0o600);
    }

    #[test]
    fn new_generation_retires_old_records() {
        let (_d, s) = store();
        s.write_enrollment("alice", None, &enrollment(1)).unwrap();
        let mut l = s.load("alice").unwrap().unwrap();
        let event = Event::TotpAccepted {
            step: 50,
            at: 1,
            app: 0,
            drift: None,
        };
        s.append("alice", &mut l, event).unwrap();
        let mut folded = l.enrollment.clone();
        folded.apply(event).unwrap();
        folded.generation = 2;
        s.write_enrollment("alice", None, &folded).unwrap();
        // The old record (generation 1) is still there if the truncation was lost; it must not count twice.
        let l = s.load("alice").unwrap().unwrap();
        assert_eq!(l.enrollment.generation, 2);
        assert_eq!(l.enrollment.last_step, Some(50));
        assert_eq!(l.journal_len, 0);
    }

    #[test]
    fn torn_tail_is_ignored_and_cut_before_the_next_append() {
        let (d, s) = store();
        s.write_enrollment("alice", None, &enrollment(1)).unwrap();
        let mut l = s.load("alice").unwrap().unwrap();
        s.append(
            "alice",
            &mut l,
            Event::TotpAccepted {
                step: 6,
                at: 1,
                app: 0,
                drift: None,
            },
        )
        .unwrap();
        let jpath = d.path().join("state/users/alice.journal");
        // A half-written record, then a full-length one with a bad checksum.
        for tail in [vec![0xAB; 13], vec![0u8; RECORD_LEN]] {
            let mut f = OpenOptions::new().append(true).open(&jpath).unwrap();
            f.write_all(&tail).unwrap();
            let l = s.load("alice").unwrap().unwrap();
            assert_eq!(l.enrollment.last_step, Some(6));
            assert_eq!(l.journal_len, RECORD_LEN as u64);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&jpath)
                .unwrap()
                .set_len(RECORD_LEN as u64)
                .unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&jpath).unwrap();
        f.write_all(&[1u8; 7]).unwrap();
        let mut l = s.load("alice").unwrap().unwrap();
        s.append(
            "alice",
            &mut l,
            Event::TotpAccepted {
                step: 8,
                at: 2,
                app: 0,
                drift: None,
            },
        )
        .unwrap();
        let len = l.journal_len;
        assert_eq!(len, 2 * RECORD_LEN as u64);
        assert_eq!(std::fs::metadata(&jpath).unwrap().len(), len);
        assert_eq!(
            s.load("alice").unwrap().unwrap().enrollment.last_step,
            Some(8)
        );
    }

    #[test]
    fn damage_is_an_error_never_not_enrolled() {
        let (d, s) = store();
        s.write_enrollment("alice", None, &enrollment(1)).unwrap();
        let mut l = s.load("alice").unwrap().unwrap();
        for step in 6..9 {
            s.append(
                "alice",
                &mut l,
                Event::TotpAccepted {
                    step,
                    at: 1,
                    app: 0,
                    drift: None,
                },
            )
            .unwrap();
        }
        let jpath = d.path().join("state/users/alice.journal");
        let mut bytes = std::fs::read(&jpath).unwrap();
        bytes[3] ^= 1; // first record, not the last: damage, not a torn append
        std::fs::write(&jpath, &bytes).unwrap();
        assert!(matches!(s.load("alice"), Err(StoreError::Corrupt { .. })));

        let epath = d.path().join("state/users/alice.enrollment");
        std::fs::write(&epath, b"{\"version\":1,\"generat").unwrap();
        assert!(matches!(s.load("alice"), Err(StoreError::Corrupt { .. })));
        std::fs::write(&epath, b"").unwrap();
        assert!(matches!(s.load("alice"), Err(StoreError::Corrupt { .. })));

        s.write_enrollment("bob", None, &enrollment(1)).unwrap();
        std::fs::remove_file(d.path().join("state/users/bob.journal")).unwrap();
        assert!(matches!(s.load("bob"), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn symlinks_are_never_followed() {
        let (d, s) = store();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, b"{}").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("state/users/mallory.enrollment"))
            .unwrap();
        assert!(matches!(s.load("mallory"), Err(StoreError::Io { .. })));
        std::os::unix::fs::symlink(&target, d.path().join("state/users/.eve.enrollment.tmp"))
            .unwrap();
        assert!(s.write_enrollment("eve", None, &enrollment(1)).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"{}");

        let link = d.path().join("linked-state");
        std::os::unix::fs::symlink(d.path().join("state"), &link).unwrap();
        assert!(matches!(
            FileStore::open(&link),
            Err(StoreError::UnsafeDirectory { .. })
        ));
    }

    #[test]
    fn a_missing_or_unmarked_state_directory_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(matches!(
            FileStore::open(&state),
            Err(StoreError::NotInitialized { .. })
        ));
        std::fs::create_dir_all(state.join("users")).unwrap();
        assert!(matches!(
            FileStore::open(&state),
            Err(StoreError::NotInitialized { .. })
        ));
        let s = FileStore::init(&state).unwrap();
        FileStore::init(&state).unwrap(); // repeatable
        assert!(s.load("alice").unwrap().is_none());
        // The directory disappears under a running daemon (unmounted, removed).
        std::fs::remove_dir_all(&state).unwrap();
        assert!(matches!(
            s.load("alice"),
            Err(StoreError::NotInitialized { .. })
        ));
    }

    #[test]
    fn meta_round_trip_removal_and_listing() {
        let (_d, s) = store();
        assert_eq!(s.load_meta("alice").unwrap(), UserMeta::default());
        let meta = UserMeta {
            override_mode: Some(crate::policy::Mode::Require),
            first_prompt: Some(5),
            remembered: vec![Remembered {
                rhost: "192.0.2.1".into(),
                until: 99,
            }],
        };
        s.write_meta("alice", &meta, 0).unwrap();
        assert_eq!(s.load_meta("alice").unwrap(), meta);
        s.write_enrollment("bob", None, &enrollment(1)).unwrap();
        assert_eq!(s.users().unwrap(), ["alice", "bob"]);
        // Enrollment and metadata: still one name.
        s.write_enrollment("alice", None, &enrollment(1)).unwrap();
        s.write_meta("bob", &meta, 0).unwrap();
        assert_eq!(s.users().unwrap(), ["alice", "bob"]);
        s.remove_enrollment("alice").unwrap();
        s.remove_enrollment("bob").unwrap();
        assert_eq!(s.users().unwrap(), ["alice", "bob"]);
        std::fs::remove_file(s.users_dir.join("bob.meta")).unwrap();
        assert!(s.load("bob").unwrap().is_none());
        s.remove_enrollment("bob").unwrap(); // again: nothing to do
        assert_eq!(s.users().unwrap(), ["alice"]);
    }

    #[test]
    fn bad_names_never_reach_a_path() {
        let (_d, s) = store();
        for name in ["../x", "a/b", "", ".x", "-x"] {
            assert!(
                matches!(s.load(name), Err(StoreError::BadName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn records_round_trip() {
        for e in [
            Event::TotpAccepted {
                step: u64::MAX,
                at: 1,
                app: 4,
                drift: Some(-2),
            },
            Event::TotpAccepted {
                step: 7,
                at: 1,
                app: 0,
                drift: None,
            },
            Event::StepBurned {
                app: 1,
                step: 9,
                at: 1,
            },
            Event::BackupUsed { index: 3, at: 2 },
            Event::Failure { at: 3, ceiling: 0 },
            Event::Unlock { at: 4 },
            Event::EmailAccepted { at: 5 },
        ] {
            assert_eq!(Event::decode(&e.encode(42)).unwrap(), Some((42, e)));
        }
        let mut r = Event::Unlock { at: 4 }.encode(1);
        r[8] = 99;
        let crc = crc32fast::hash(&r[..28]);
        r[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(Event::decode(&r).is_err());
    }

    #[test]
    fn the_fuzz_seeds_are_real_state() {
        // fuzz/corpus/state_decoder: an enrollment file, 0xFF, a journal.
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/state_decoder/torn-tail"
        ))
        .unwrap();
        let split = seed.iter().position(|&b| b == 0xff).unwrap();
        let text = std::str::from_utf8(&seed[..split]).unwrap();
        let loaded = decode_state(text, &seed[split + 1..]).unwrap();
        // Five whole records (one of another generation), then a torn one.
        assert_eq!(loaded.journal_len, 5 * RECORD_LEN as u64);
        assert_eq!(loaded.enrollment.last_step, Some(59_833_333));
        assert_eq!(loaded.enrollment.backup.remaining(), 1);
    }

    /// An enrollment file and journal exactly as twofoldd wrote them before
    /// used backup codes were kept (and before several authenticators):
    /// they load, and the used code reads as used.
    pub(crate) const OLD_ENROLLMENT: &str = r#"{"version":1,"generation":77,"secret":"0707070707070707070707070707070707070707","digits":6,"period":30,"enrolled_at":1700000000,"email":null,"last_step":56666666,"backup":{"salt":"6b9a335da73d59635b198868a9e7f359","params":{"m_cost_kib":64,"t_cost":1,"p_cost":1},"hashes":["cd64cf5889d646966e892f75e6402abb8a215f231a5784e164dd912fdcab1c14","9cf3cc6318ec31a2716116371a62a305bd929e83ca5fb5ba52131a25b5c27272","59222605d8362060ce094f017e34952e0b905a3b9ba7bc3d89de5c62cff0f92b"]},"failures":0,"last_failure":0,"ceiling_tat":0,"last_login":1700000100}"#;
    /// One record of that generation: backup code 1 used at 1_700_000_200.
    pub(crate) const OLD_JOURNAL: &str =
        "4d00000000000000020000000100000000000000c8f1536500000000bed9e633";

    #[test]
    fn state_written_before_this_version_loads() {
        let journal = hex::decode(OLD_JOURNAL).unwrap();
        let loaded = decode_state(OLD_ENROLLMENT, &journal).unwrap();
        let e = &loaded.enrollment;
        assert_eq!(loaded.journal_len, RECORD_LEN as u64);
        assert_eq!(e.last_step, Some(56_666_666));
        assert_eq!(e.backup.remaining(), 2);
        assert_eq!(e.backup.spent.len(), 1, "the used code is kept aside");
        assert_eq!(e.last_login, Some(1_700_000_200));
        // Written again without change, it reads the same.
        let again = serde_json::to_string(e).unwrap();
        let reread = decode_state(&again, &[]).unwrap();
        assert_eq!(&reread.enrollment, e);
    }
}
