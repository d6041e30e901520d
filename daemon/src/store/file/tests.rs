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
    std::os::unix::fs::symlink(&target, d.path().join("state/users/mallory.enrollment")).unwrap();
    assert!(matches!(s.load("mallory"), Err(StoreError::Io { .. })));
    std::os::unix::fs::symlink(&target, d.path().join("state/users/.eve.enrollment.tmp")).unwrap();
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
