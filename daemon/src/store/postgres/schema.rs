//! The database's schema: its text, the version check at start, and
//! `twofoldd --init` (create, or bring an older one up to date), with the
//! fleet key's check row and `--reseal`.

use super::super::StoreError;
use super::PgStore;
use super::connect::pg;

/// The schema this daemon reads and writes. `--init` creates it or migrates
/// an older one; a newer one (a newer twofoldd elsewhere) is refused.
pub const SCHEMA_VERSION: i32 = 2;
/// What the key check row seals, to tell a wrong fleet key at start.
pub const KEY_CHECK: &[u8] = b"twofold fleet key check";

/// Version 1, as twofold first created it: a new database is made as
/// version 1 and then migrated, so every database went through the same
/// steps. Public for the migration's test, which builds a version 1
/// database with real data.
pub const SCHEMA_V1: &str = "
CREATE TABLE twofold_schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL,
    key_check bytea NOT NULL
);
CREATE TABLE twofold_enrollment (
    user_name text PRIMARY KEY,
    revision bigint NOT NULL,
    generation bigint NOT NULL,
    version integer NOT NULL,
    secret bytea,
    email bytea,
    digits smallint NOT NULL,
    period bigint NOT NULL,
    enrolled_at bigint NOT NULL,
    last_step bigint,
    backup text NOT NULL,
    backup_used bigint NOT NULL DEFAULT 0,
    failures bigint NOT NULL,
    last_failure bigint NOT NULL,
    ceiling_tat bigint NOT NULL,
    last_login bigint,
    last_host text
);
CREATE TABLE twofold_meta (
    user_name text PRIMARY KEY,
    meta text NOT NULL
);
";

/// The steps from each version to the next (`MIGRATIONS[v - 1]` takes v to
/// v + 1), each run by `--init` inside the one transaction.
///
/// 2: several authenticators per user, their clock offsets and last use,
/// the steps a clock diagnosis burned, and e-mailed codes in flight
/// (`email.rs`: the code as a keyed hash, the purpose sealed). Per-app state changed at each
/// login is in arrays indexed by app + 1 (PostgreSQL arrays start at 1),
/// always as long as the user has apps, so one login changes one element
/// under a condition; the first app's `last_step` moves into them.
const MIGRATIONS: [&str; 1] = ["
ALTER TABLE twofold_enrollment
    ADD COLUMN apps text NOT NULL DEFAULT '{}',
    ADD COLUMN app_secrets bytea[] NOT NULL DEFAULT '{}',
    ADD COLUMN app_last_step bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN app_last_used bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN app_drift bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN burned bigint[] NOT NULL DEFAULT '{}';
UPDATE twofold_enrollment SET app_last_step = ARRAY[last_step],
    app_last_used = ARRAY[NULL::bigint], app_drift = ARRAY[NULL::bigint];
ALTER TABLE twofold_enrollment DROP COLUMN last_step;
CREATE TABLE twofold_email_code (
    user_name text PRIMARY KEY,
    code bytea,
    kind smallint NOT NULL DEFAULT 0,
    purpose bytea,
    expires_at bigint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    sends bigint[] NOT NULL DEFAULT '{}'
);
"];

impl PgStore {
    /// Check the schema version and that this host's key is the fleet's.
    pub fn check(&self) -> Result<(), StoreError> {
        let row = self.run(|c| async move {
            let r = async {
                let exists: Option<String> = c
                    .query_one("SELECT to_regclass('twofold_schema')::text", &[])
                    .await
                    .map_err(|e| pg(&e))?
                    .get(0);
                if exists.is_none() {
                    return Ok(None);
                }
                let row = c
                    .query_opt(
                        "SELECT version, key_check FROM twofold_schema WHERE id = 1",
                        &[],
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                Ok(row.map(|r| (r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1))))
            }
            .await;
            (c, r)
        })?;
        let Some((version, check)) = row else {
            return Err(StoreError::Schema(
                "the database has no twofold schema: run `twofoldd --init` once (on any host)"
                    .into(),
            ));
        };
        self.check_version_and_key(version, &check)
    }

    pub(super) fn check_version_and_key(
        &self,
        version: i32,
        check: &[u8],
    ) -> Result<(), StoreError> {
        self.check_newer(version)?;
        if version < SCHEMA_VERSION {
            return Err(StoreError::Schema(format!(
                "the database's schema is version {version}: run `twofoldd --init` to bring it to {SCHEMA_VERSION}"
            )));
        }
        self.check_key(check)
    }

    fn check_newer(&self, version: i32) -> Result<(), StoreError> {
        if version > SCHEMA_VERSION {
            return Err(StoreError::Schema(format!(
                "the database's schema is version {version}, newer than this twofoldd knows ({SCHEMA_VERSION}): upgrade twofold on this host"
            )));
        }
        if version < 1 {
            return Err(StoreError::Schema(format!(
                "the database's schema version {version} is not one of twofold's"
            )));
        }
        Ok(())
    }

    fn check_key(&self, check: &[u8]) -> Result<(), StoreError> {
        match self.key.open("", "key-check", check) {
            Ok(plain) if plain.as_slice() == KEY_CHECK => Ok(()),
            Ok(_) => Err(StoreError::Schema(
                "the fleet key check row is damaged".into(),
            )),
            Err(e) => Err(StoreError::WrongKey(e.to_string())),
        }
    }

    /// Create the schema (or bring an older one up to date) and return its
    /// version before (`None`: created). Several hosts may run it at once:
    /// a transaction-scoped advisory lock orders them.
    pub fn init(&self) -> Result<Option<i32>, StoreError> {
        let sealed_check = self.key.seal("", "key-check", KEY_CHECK);
        let this = self;
        self.run(|mut c| async move {
            let r = async {
                let tx = c.transaction().await.map_err(|e| pg(&e))?;
                tx.execute("SELECT pg_advisory_xact_lock(2062817)", &[])
                    .await
                    .map_err(|e| pg(&e))?;
                let exists: Option<String> = tx
                    .query_one("SELECT to_regclass('twofold_schema')::text", &[])
                    .await
                    .map_err(|e| pg(&e))?
                    .get(0);
                let found = if exists.is_some() {
                    let r = tx
                        .query_one(
                            "SELECT version, key_check FROM twofold_schema WHERE id = 1",
                            &[],
                        )
                        .await
                        .map_err(|e| pg(&e))?;
                    let version: i32 = r.get(0);
                    // Nothing changes unless this host may read the result.
                    this.check_newer(version)?;
                    this.check_key(&r.get::<_, Vec<u8>>(1))?;
                    Some(version)
                } else {
                    tx.batch_execute(SCHEMA_V1).await.map_err(|e| pg(&e))?;
                    tx.execute(
                        "INSERT INTO twofold_schema (id, version, key_check) VALUES (1, 1, $1)",
                        &[&sealed_check],
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                    None
                };
                let from = found.unwrap_or(1);
                for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize - 1) {
                    tx.batch_execute(step).await.map_err(|e| pg(&e))?;
                    tx.execute(
                        "UPDATE twofold_schema SET version = $1 WHERE id = 1",
                        &[&(i as i32 + 2)],
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                }
                // Dropped without a commit on any error: all or nothing.
                tx.commit().await.map_err(|e| pg(&e))?;
                Ok(found)
            }
            .await;
            (c, r)
        })
    }

    /// The second step of a key rotation: every sealed value not sealed
    /// with this host's sealing key is sealed again with it (one user per
    /// transaction, the row locked meanwhile), then the key check. Returns
    /// (users resealed, users already current). Safe to repeat, and to run
    /// while the fleet serves logins.
    pub fn reseal(&self) -> Result<(usize, usize), StoreError> {
        let mut names = Vec::new();
        self.walk("twofold_enrollment", &mut |n| names.push(n.to_string()))?;
        let (mut resealed, mut current) = (0, 0);
        for user in names {
            let name = user.clone();
            let key = &self.key;
            let changed = self.run(|mut c| async move {
                let r = async {
                    let tx = c.transaction().await.map_err(|e| pg(&e))?;
                    let Some(row) = tx
                        .query_opt(
                            "SELECT secret, email, app_secrets FROM twofold_enrollment \
                             WHERE user_name = $1 FOR UPDATE",
                            &[&name],
                        )
                        .await
                        .map_err(|e| pg(&e))?
                    else {
                        tx.rollback().await.map_err(|e| pg(&e))?;
                        return Ok(false);
                    };
                    let mut changed = false;
                    let mut again = |field: &str, label: &'static str, v: Vec<u8>| {
                        if key.is_current(&v) {
                            return Ok(v);
                        }
                        changed = true;
                        let plain = key.open(&name, field, &v).map_err(|e| StoreError::Sealed {
                            user: name.clone(),
                            field: label,
                            reason: e.to_string(),
                        })?;
                        Ok::<_, StoreError>(key.seal(&name, field, &plain))
                    };
                    let secret = row
                        .get::<_, Option<Vec<u8>>>(0)
                        .map(|v| again("secret", "secret", v))
                        .transpose()?;
                    let email = row
                        .get::<_, Option<Vec<u8>>>(1)
                        .map(|v| again("email", "email", v))
                        .transpose()?;
                    let apps = row
                        .get::<_, Vec<Vec<u8>>>(2)
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| again(&super::row::secret_field(i + 1), "secret", v))
                        .collect::<Result<Vec<_>, _>>()?;
                    if changed {
                        tx.execute(
                            "UPDATE twofold_enrollment SET secret = $2, email = $3, app_secrets = $4 \
                             WHERE user_name = $1",
                            &[&name, &secret, &email, &apps],
                        )
                        .await
                        .map_err(|e| pg(&e))?;
                    }
                    tx.commit().await.map_err(|e| pg(&e))?;
                    Ok(changed)
                }
                .await;
                (c, r)
            })?;
            if changed {
                resealed += 1;
            } else {
                current += 1;
            }
        }
        let check = self.key.seal("", "key-check", KEY_CHECK);
        self.run(|c| async move {
            let r = c
                .execute(
                    "UPDATE twofold_schema SET key_check = $1 WHERE id = 1",
                    &[&check],
                )
                .await
                .map_err(|e| pg(&e));
            (c, r)
        })?;
        Ok((resealed, current))
    }
}
