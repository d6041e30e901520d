//! One user's enrollment as a row of `twofold_enrollment` (schema version
//! 2), both ways. Secrets are sealed per field (`seal.rs`). What changes at
//! each login is kept in per-authenticator arrays (index = app + 1), so a
//! login's write is one conditional statement on one element; what only a
//! rewrite changes (names, digits, when added) is one JSON column.

use super::PgStore;
use super::connect::db;
use crate::backup::BackupSet;
use crate::store::{
    App, AppUse, Apps, Burned, ENROLLMENT_VERSION, Enrollment, Loaded, MAX_APPS, SecretBytes,
    StoreError,
};
use serde::{Deserialize, Serialize};

/// The columns `decode` reads, in its order.
pub(super) const COLUMNS: &str = "revision, generation, version, secret, email, digits, period, \
enrolled_at, backup, backup_used, failures, last_failure, ceiling_tat, last_login, apps, \
app_secrets, app_last_step, app_last_used, app_drift, burned, last_host";

/// A burned step in one `bigint`: the app in the top byte, the step below.
const STEP_BITS: u32 = 56;

pub(super) fn burned_value(app: u8, step: u64) -> Result<i64, StoreError> {
    if step >> STEP_BITS != 0 {
        return Err(db(format!("burned step {step} out of range")));
    }
    Ok(((u64::from(app) << STEP_BITS) | step) as i64)
}

fn burned_from(value: i64) -> Burned {
    let v = value as u64;
    Burned {
        app: (v >> STEP_BITS) as u8,
        step: v & ((1 << STEP_BITS) - 1),
    }
}

/// The sealing label of an app's key: bound to its place, so a key moved
/// to another app (or user) does not open there.
pub(super) fn secret_field(app: usize) -> String {
    if app == 0 {
        "secret".into()
    } else {
        format!("secret.{app}")
    }
}

/// The `apps` column: what only a rewrite of the enrollment changes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsColumn {
    /// The first app's name and when it was added (`AppUse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more: Vec<MoreApp>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoreApp {
    name: String,
    digits: u8,
    period: u64,
    added: u64,
}

/// An enrollment's columns, sealed and encoded (`write_enrollment`).
pub(super) struct Encoded {
    pub secret: Option<Vec<u8>>,
    pub email: Option<Vec<u8>>,
    pub backup: String,
    pub apps: String,
    /// Sealed keys of apps 1.. (app 0's is `secret`).
    pub app_secrets: Vec<Vec<u8>>,
    /// Per app, index = app + 1 in SQL.
    pub last_step: Vec<Option<i64>>,
    pub last_used: Vec<Option<i64>>,
    pub drift: Vec<Option<i64>>,
    pub burned: Vec<i64>,
}

fn opt(v: Option<u64>) -> Option<i64> {
    v.map(|x| x as i64)
}

fn unopt(v: Option<i64>) -> Option<u64> {
    v.map(|x| x as u64)
}

impl PgStore {
    pub(super) fn decode(&self, user: &str, r: &tokio_postgres::Row) -> Result<Loaded, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: format!("twofold_enrollment/{user}").into(),
            reason,
        };
        let unseal = |field: &str, label: &'static str, value: Option<Vec<u8>>| {
            value
                .map(|v| {
                    self.key
                        .open(user, field, &v)
                        .map_err(|e| StoreError::Sealed {
                            user: user.to_string(),
                            field: label,
                            reason: e.to_string(),
                        })
                })
                .transpose()
        };
        let version: i32 = r.get(2);
        if u32::try_from(version).ok() != Some(ENROLLMENT_VERSION) {
            return Err(corrupt(format!("unsupported version {version}")));
        }
        let secret = unseal("secret", "secret", r.get(3))?.map(|s| SecretBytes(s.to_vec()));
        let email = match unseal("email", "email", r.get(4))? {
            Some(bytes) => Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| corrupt("e-mail address is not UTF-8".into()))?,
            ),
            None => None,
        };
        let mut backup: BackupSet = serde_json::from_str(&r.get::<_, String>(8))
            .map_err(|e| corrupt(format!("backup codes: {e}")))?;
        let used = r.get::<_, i64>(9) as u64;
        if backup.hashes.len() < 64 && used >> backup.hashes.len() != 0 {
            return Err(corrupt("a used backup code out of range".into()));
        }
        // A code used on any host reads as used, not wrong (as `spent` in
        // the file store; a rewrite keeps them in the set's JSON).
        for (i, slot) in backup.hashes.iter_mut().enumerate() {
            if i < 64 && used & (1 << i) != 0 {
                backup.spent.extend(slot.take());
            }
        }
        let digits = u8::try_from(r.get::<_, i16>(5)).map_err(|e| corrupt(e.to_string()))?;
        let failures = u32::try_from(r.get::<_, i64>(10)).unwrap_or(u32::MAX);

        let column: AppsColumn = serde_json::from_str(&r.get::<_, String>(14))
            .map_err(|e| corrupt(format!("authenticators: {e}")))?;
        let secrets: Vec<Vec<u8>> = r.get(15);
        let steps: Vec<Option<i64>> = r.get(16);
        let last_used: Vec<Option<i64>> = r.get(17);
        let drift: Vec<Option<i64>> = r.get(18);
        let burned: Vec<i64> = r.get(19);
        let n = 1 + column.more.len();
        if secrets.len() != column.more.len()
            || steps.len() != n
            || last_used.len() != n
            || drift.len() != n
        {
            return Err(corrupt(format!(
                "{n} authenticators but {} keys, {} last steps, {} last uses, {} offsets",
                secrets.len() + 1,
                steps.len(),
                last_used.len(),
                drift.len()
            )));
        }
        let mut more = Vec::with_capacity(column.more.len());
        for (i, (m, sealed)) in column.more.into_iter().zip(secrets).enumerate() {
            let app = i + 1;
            let key = unseal(&secret_field(app), "secret", Some(sealed))?.unwrap_or_default();
            more.push(App {
                name: m.name,
                secret: SecretBytes(key.to_vec()),
                digits: m.digits,
                period: m.period,
                added: m.added,
                last_step: unopt(steps[app]),
                used: AppUse {
                    last_used: unopt(last_used[app]),
                    drift: drift[app],
                    ..AppUse::default()
                },
            });
        }
        let burned: Vec<Burned> = burned.into_iter().map(burned_from).collect();
        if let Some(b) = burned.iter().find(|b| usize::from(b.app) >= n) {
            return Err(corrupt(format!(
                "a burned step of authenticator {}, which does not exist",
                b.app
            )));
        }
        Ok(Loaded {
            enrollment: Enrollment {
                version: ENROLLMENT_VERSION,
                generation: r.get::<_, i64>(1) as u64,
                secret,
                digits,
                period: r.get::<_, i64>(6) as u64,
                enrolled_at: r.get::<_, i64>(7) as u64,
                email,
                last_step: unopt(steps[0]),
                backup,
                failures,
                last_failure: r.get::<_, i64>(11) as u64,
                ceiling_tat: r.get::<_, i64>(12) as u64,
                last_login: unopt(r.get(13)),
                apps: Apps {
                    first: AppUse {
                        name: column.name,
                        added: column.added,
                        last_used: unopt(last_used[0]),
                        drift: drift[0],
                    },
                    more,
                    burned,
                },
            },
            journal_len: 0,
            revision: r.get::<_, i64>(0) as u64,
            last_host: r.get(20),
        })
    }

    /// The sealed and encoded columns of an enrollment.
    pub(super) fn encode(&self, user: &str, e: &Enrollment) -> Result<Encoded, StoreError> {
        if e.backup.hashes.len() > 64 {
            return Err(db("more than 64 backup codes"));
        }
        if e.apps.more.len() >= MAX_APPS {
            return Err(db(format!("more than {MAX_APPS} authenticators")));
        }
        let secret = e
            .secret
            .as_ref()
            .map(|s| self.key.seal(user, "secret", &s.0));
        let email = e
            .email
            .as_ref()
            .map(|m| self.key.seal(user, "email", m.as_bytes()));
        let backup = serde_json::to_string(&e.backup).map_err(db)?;
        let first = &e.apps.first;
        let column = AppsColumn {
            name: first.name.clone(),
            added: first.added,
            more: e
                .apps
                .more
                .iter()
                .map(|a| MoreApp {
                    name: a.name.clone(),
                    digits: a.digits,
                    period: a.period,
                    added: a.added,
                })
                .collect(),
        };
        let apps = serde_json::to_string(&column).map_err(db)?;
        let app_secrets = e
            .apps
            .more
            .iter()
            .enumerate()
            .map(|(i, a)| self.key.seal(user, &secret_field(i + 1), &a.secret.0))
            .collect();
        let uses = std::iter::once((e.last_step, first))
            .chain(e.apps.more.iter().map(|a| (a.last_step, &a.used)));
        let (mut last_step, mut last_used, mut drift) = (Vec::new(), Vec::new(), Vec::new());
        for (step, used) in uses {
            last_step.push(opt(step));
            last_used.push(opt(used.last_used));
            drift.push(used.drift);
        }
        let burned = e
            .apps
            .burned
            .iter()
            .map(|b| burned_value(b.app, b.step))
            .collect::<Result<_, _>>()?;
        Ok(Encoded {
            secret,
            email,
            backup,
            apps,
            app_secrets,
            last_step,
            last_used,
            drift,
            burned,
        })
    }
}
