//! Moving a host into a fleet and out again: every user of one store copied
//! into another (`twofoldd --copy-store to-database|to-files`), through the
//! `Store` trait on both sides, so the same code runs either way.
//!
//! Safe to repeat: an enrollment already there (the same key, enrolled at
//! the same time) only takes what the source adds to its use (a later step,
//! a backup code used since), so a code used on either side stays used. An
//! enrollment made later in the destination is never overwritten: it is
//! reported, and left alone.

use super::{AppUse, Enrollment, MAX_BURNED, Store, StoreError, UserMeta};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Enrollments written where there was none, or an older one.
    pub copied: usize,
    /// The same enrollment, given the source's later use.
    pub merged: usize,
    /// The same enrollment, nothing to add.
    pub unchanged: usize,
    /// Users whose destination enrollment is newer (or differs, enrolled at
    /// the same second): not touched.
    pub refused_newer: Vec<String>,
    /// Metadata (overrides, remembered devices) written where there was none.
    pub meta_copied: usize,
}

impl std::fmt::Display for CopyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} enrollments copied, {} merged, {} already there, {} refused (newer at the destination{}{}), {} users' settings copied",
            self.copied,
            self.merged,
            self.unchanged,
            self.refused_newer.len(),
            if self.refused_newer.is_empty() {
                ""
            } else {
                ": "
            },
            self.refused_newer.join(", "),
            self.meta_copied
        )
    }
}

/// The same enrollment: same keys and app names, same address, same backup
/// set, same time.
fn same(a: &Enrollment, b: &Enrollment) -> bool {
    let apps = |e: &Enrollment| {
        e.app_list()
            .into_iter()
            .map(|x| (x.name.to_string(), x.secret.clone()))
            .collect::<Vec<_>>()
    };
    a.enrolled_at == b.enrolled_at
        && a.secret == b.secret
        && a.email == b.email
        && a.backup.salt == b.backup.salt
        && a.backup.hashes.len() == b.backup.hashes.len()
        && apps(a) == apps(b)
}

/// When the enrollment last took a new key: enrolled, or an app added.
fn changed_at(e: &Enrollment) -> u64 {
    e.app_list()
        .iter()
        .map(|a| a.added)
        .fold(e.enrolled_at, u64::max)
}

/// `to`'s use of an app merged with `from`'s: the later last use, and the
/// clock offset seen with it.
fn merge_use(to: &mut AppUse, from: &AppUse) {
    if from.last_used > to.last_used {
        to.last_used = from.last_used;
        if from.drift.is_some() {
            to.drift = from.drift;
        }
    }
}

/// `to` with what `from` adds to its use: later steps and logins, codes
/// used, the fuller throttle.
fn merged(to: &Enrollment, from: &Enrollment) -> Enrollment {
    let mut m = to.clone();
    m.last_step = to.last_step.max(from.last_step);
    merge_use(&mut m.apps.first, &from.apps.first);
    // `same` holds: the same apps in the same order.
    for (app, other) in m.apps.more.iter_mut().zip(&from.apps.more) {
        app.last_step = app.last_step.max(other.last_step);
        merge_use(&mut app.used, &other.used);
    }
    for b in &from.apps.burned {
        if !m.is_burned(b.app, b.step) {
            if m.apps.burned.len() >= MAX_BURNED {
                m.apps.burned.remove(0);
            }
            m.apps.burned.push(*b);
        }
    }
    m.last_login = to.last_login.max(from.last_login);
    for (slot, other) in m.backup.hashes.iter_mut().zip(&from.backup.hashes) {
        // Used there: used here too, and known as used (not wrong).
        if other.is_none()
            && let Some(hash) = slot.take()
        {
            m.backup.spent.push(hash);
        }
    }
    m.failures = to.failures.max(from.failures);
    m.last_failure = to.last_failure.max(from.last_failure);
    m.ceiling_tat = to.ceiling_tat.max(from.ceiling_tat);
    m
}

/// Copy every user of `from` into `to`.
pub fn copy(from: &dyn Store, to: &dyn Store) -> Result<CopyReport, StoreError> {
    let mut report = CopyReport::default();
    for user in from.users()? {
        if let Some(source) = from.load(&user)? {
            let source = source.enrollment;
            match to.load(&user)? {
                None => {
                    to.write_enrollment(&user, None, &source)?;
                    report.copied += 1;
                }
                Some(there) if same(&there.enrollment, &source) => {
                    let mut next = merged(&there.enrollment, &source);
                    if next == there.enrollment {
                        report.unchanged += 1;
                    } else {
                        next.generation = super::new_generation(next.generation);
                        to.write_enrollment(&user, Some(&there), &next)?;
                        report.merged += 1;
                    }
                }
                Some(there) if changed_at(&there.enrollment) < changed_at(&source) => {
                    let mut next = source.clone();
                    next.generation = super::new_generation(there.enrollment.generation);
                    to.write_enrollment(&user, Some(&there), &next)?;
                    report.copied += 1;
                }
                Some(_) => report.refused_newer.push(user.clone()),
            }
        }
        let meta = from.load_meta(&user)?;
        let (there, read) = to.load_meta_revision(&user)?;
        if meta != UserMeta::default() && there == UserMeta::default() {
            to.write_meta(&user, &meta, read)?;
            report.meta_copied += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{self, HashParams};
    use crate::store::{Event, FileStore, SecretBytes};

    const FAST: HashParams = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn enrollment(at: u64, key: u8) -> Enrollment {
        let (_, backup) = backup::generate(5, FAST).unwrap();
        Enrollment {
            last_step: Some(10),
            ..Enrollment::new(7, Some(SecretBytes(vec![key; 20])), (6, 30), backup, at)
        }
    }

    fn store(dir: &tempfile::TempDir, name: &str) -> FileStore {
        FileStore::init(&dir.path().join(name)).unwrap()
    }

    #[test]
    fn copies_merges_use_and_never_overwrites_a_newer_enrollment() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (store(&dir, "a"), store(&dir, "b"));
        a.write_enrollment("alice", None, &enrollment(100, 1))
            .unwrap();
        a.write_enrollment("bob", None, &enrollment(100, 2))
            .unwrap();
        a.write_enrollment("carol", None, &enrollment(300, 3))
            .unwrap();
        let meta = UserMeta {
            override_mode: Some(crate::policy::Mode::Exempt),
            ..UserMeta::default()
        };
        a.write_meta("dave", &meta, 0).unwrap();
        // bob enrolled again at the destination later; carol earlier.
        b.write_enrollment("bob", None, &enrollment(200, 9))
            .unwrap();
        b.write_enrollment("carol", None, &enrollment(250, 8))
            .unwrap();

        let r = copy(&a, &b).unwrap();
        assert_eq!(
            (r.copied, r.merged, r.unchanged, r.meta_copied),
            (2, 0, 0, 1)
        );
        assert_eq!(r.refused_newer, ["bob"]);
        assert_eq!(b.load("bob").unwrap().unwrap().enrollment.enrolled_at, 200);
        assert_eq!(
            b.load("carol").unwrap().unwrap().enrollment.enrolled_at,
            300
        );
        assert_eq!(b.load_meta("dave").unwrap(), meta);

        // Again: nothing new.
        let r = copy(&a, &b).unwrap();
        assert_eq!(
            (r.copied, r.merged, r.unchanged, r.meta_copied),
            (0, 0, 2, 0)
        );

        // Used at the source since: a later step, a backup code.
        let mut l = a.load("alice").unwrap().unwrap();
        a.append(
            "alice",
            &mut l,
            Event::TotpAccepted {
                step: 50,
                at: 1,
                app: 0,
                drift: None,
            },
        )
        .unwrap();
        a.append("alice", &mut l, Event::BackupUsed { index: 2, at: 2 })
            .unwrap();
        // And at the destination: another backup code.
        let mut l = b.load("alice").unwrap().unwrap();
        b.append("alice", &mut l, Event::BackupUsed { index: 0, at: 3 })
            .unwrap();
        let r = copy(&a, &b).unwrap();
        assert_eq!((r.copied, r.merged), (0, 1));
        let e = b.load("alice").unwrap().unwrap().enrollment;
        assert_eq!(e.last_step, Some(50));
        assert_eq!(e.backup.remaining(), 3);
        assert!(e.backup.hashes[0].is_none() && e.backup.hashes[2].is_none());
    }
}
