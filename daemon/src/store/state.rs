//! A user's state as the store keeps it: the enrollment (its apps, their
//! keys and use, burned steps, backup codes), the administrator's and the
//! policy's metadata, the journal's events and how they fold into the
//! enrollment, and what a load returns. `mod.rs` holds the `Store` trait
//! that reads and writes these.

use super::{ENROLLMENT_VERSION, RECORD_LEN};
use crate::backup::BackupSet;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

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
    /// The authenticators beyond the first one's key (`secret`), their use
    /// and clock offsets. Absent in state written before them, and not
    /// written while empty.
    #[serde(default, skip_serializing_if = "Apps::is_empty")]
    pub apps: Apps,
}

/// An authenticator index the enrollment does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authenticator {0} does not exist")]
pub struct NoSuchApp(pub u8);

impl Enrollment {
    /// A new enrollment with a key of `digits` and `period` (or none yet:
    /// e-mail only) and its backup codes: no step used, no failure, no login.
    pub fn new(
        generation: u64,
        secret: Option<SecretBytes>,
        (digits, period): (u8, u64),
        backup: BackupSet,
        enrolled_at: u64,
    ) -> Self {
        Self {
            version: ENROLLMENT_VERSION,
            generation,
            secret,
            digits,
            period,
            enrolled_at,
            email: None,
            last_step: None,
            backup,
            failures: 0,
            last_failure: 0,
            ceiling_tat: 0,
            last_login: None,
            apps: Apps::default(),
        }
    }
}

/// The most authenticators (apps with a key of their own) a user may have.
pub const MAX_APPS: usize = 5;
/// Steps disclosed by clock diagnoses that are kept (the oldest go first;
/// each is burned only until its time is past).
pub const MAX_BURNED: usize = 16;

/// Authenticators, by index: 0 is the first (`Enrollment::secret`), `i` is
/// `more[i - 1]`. A journal record names one by index; removing one rewrites
/// the enrollment under a new generation, so an index never outlives its app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apps {
    /// The first authenticator's name, last use and offset.
    #[serde(default)]
    pub first: AppUse,
    /// Added since, each with its own key and replay state.
    #[serde(default)]
    pub more: Vec<App>,
    /// Future steps whose code a clock diagnosis told a typist: refused
    /// when their time comes, so the diagnosis never hands out a code.
    #[serde(default)]
    pub burned: Vec<Burned>,
}

impl Apps {
    pub fn is_empty(&self) -> bool {
        *self == Apps::default()
    }
}

/// How an authenticator was used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUse {
    /// `None`: the first app of an enrollment made before names (shown as `app`).
    #[serde(default)]
    pub name: Option<String>,
    /// When it was added (`None` for the first app: `enrolled_at`).
    #[serde(default)]
    pub added: Option<u64>,
    #[serde(default)]
    pub last_used: Option<u64>,
    /// The last accepted code's offset from this host's clock, in steps
    /// (positive: the device's clock is ahead).
    #[serde(default)]
    pub drift: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub name: String,
    pub secret: SecretBytes,
    pub digits: u8,
    pub period: u64,
    pub added: u64,
    /// Last step accepted from this app (its own replay guard).
    pub last_step: Option<u64>,
    #[serde(default)]
    pub used: AppUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burned {
    pub app: u8,
    pub step: u64,
}

/// One authenticator as the login checks it.
#[derive(Debug, Clone, Copy)]
pub struct AppRef<'a> {
    pub index: u8,
    pub name: &'a str,
    pub secret: &'a SecretBytes,
    pub digits: u8,
    pub period: u64,
    pub added: u64,
    pub last_step: Option<u64>,
    pub used: &'a AppUse,
}

/// The name the first app goes by when it was never given one.
pub const FIRST_APP_NAME: &str = "app";

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
    /// A code of authenticator `app` (0 in records written before several
    /// apps) for `step`, which was `drift` steps from this host's clock
    /// (`None` in records written before drift was kept).
    TotpAccepted {
        step: u64,
        at: u64,
        app: u8,
        drift: Option<i8>,
    },
    /// A clock diagnosis told a typist that their code is app `app`'s for
    /// the future `step`: that step is refused when its time comes.
    StepBurned {
        app: u8,
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
    #[error("authenticator {0} does not exist")]
    UnknownApp(u8),
}

impl Enrollment {
    /// Every authenticator with a key, the first one first.
    pub fn app_list(&self) -> Vec<AppRef<'_>> {
        let first = self.secret.as_ref().map(|secret| AppRef {
            index: 0,
            name: self.apps.first.name.as_deref().unwrap_or(FIRST_APP_NAME),
            secret,
            digits: self.digits,
            period: self.period,
            added: self.apps.first.added.unwrap_or(self.enrolled_at),
            last_step: self.last_step,
            used: &self.apps.first,
        });
        first
            .into_iter()
            .chain(self.apps.more.iter().enumerate().map(|(i, a)| AppRef {
                index: u8::try_from(i + 1).unwrap_or(u8::MAX),
                name: &a.name,
                secret: &a.secret,
                digits: a.digits,
                period: a.period,
                added: a.added,
                last_step: a.last_step,
                used: &a.used,
            }))
            .collect()
    }

    /// Remove authenticator `index`: the next one (if any) moves up into
    /// the first's place, and burned steps follow their apps. The caller
    /// writes the result under a new generation (journal indices retire).
    pub fn remove_app(&mut self, index: u8) -> Result<(), NoSuchApp> {
        let more = self.apps.more.len();
        match usize::from(index) {
            0 if more > 0 => {
                let next = self.apps.more.remove(0);
                self.secret = Some(next.secret);
                self.digits = next.digits;
                self.period = next.period;
                self.last_step = next.last_step;
                self.apps.first = AppUse {
                    name: Some(next.name),
                    added: Some(next.added),
                    ..next.used
                };
            }
            0 if self.secret.is_some() => {
                self.secret = None;
                self.last_step = None;
                self.apps.first = AppUse::default();
            }
            i if i >= 1 && i <= more => {
                self.apps.more.remove(i - 1);
            }
            _ => return Err(NoSuchApp(index)),
        }
        self.apps.burned.retain(|b| b.app != index);
        for b in &mut self.apps.burned {
            if b.app > index {
                b.app -= 1;
            }
        }
        Ok(())
    }

    /// Whether the code of app `app` for `step` was disclosed by a diagnosis.
    pub fn is_burned(&self, app: u8, step: u64) -> bool {
        self.apps.burned.contains(&Burned { app, step })
    }

    /// Fold one event into the snapshot.
    pub fn apply(&mut self, event: Event) -> Result<(), JournalError> {
        match event {
            Event::TotpAccepted {
                step,
                at,
                app,
                drift,
            } => {
                let (last_step, used) = match app {
                    0 => (&mut self.last_step, &mut self.apps.first),
                    i => {
                        let more = self
                            .apps
                            .more
                            .get_mut(usize::from(i) - 1)
                            .ok_or(JournalError::UnknownApp(i))?;
                        (&mut more.last_step, &mut more.used)
                    }
                };
                *last_step = Some(last_step.map_or(step, |s| s.max(step)));
                used.last_used = Some(used.last_used.map_or(at, |l| l.max(at)));
                if let Some(drift) = drift {
                    used.drift = Some(i64::from(drift));
                }
                self.last_login = Some(self.last_login.map_or(at, |l| l.max(at)));
                self.failures = 0;
            }
            Event::StepBurned { app, step, .. } => {
                let burned = &mut self.apps.burned;
                if !burned.contains(&Burned { app, step }) {
                    if burned.len() >= MAX_BURNED {
                        burned.remove(0);
                    }
                    burned.push(Burned { app, step });
                }
            }
            Event::BackupUsed { index, at } => {
                let slot = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.backup.hashes.get_mut(i))
                    .ok_or(JournalError::BackupIndex(index))?;
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
    /// Database: the host of the last login with a code, as recorded by
    /// whichever host it was (`None` in the file store: this host).
    pub last_host: Option<String>,
}

impl Loaded {
    pub fn journal_records(&self) -> u64 {
        self.journal_len / RECORD_LEN as u64
    }
}
