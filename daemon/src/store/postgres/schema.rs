//! The database's schema: its text, the version check at start, and
//! `twofoldd --init` (create, or bring an older one up to date), with the
//! fleet key's check row and `--reseal`.

use super::super::StoreError;
use super::PgStore;
use super::connect::pg;

/// The schema this daemon reads and writes. `--init` creates it or migrates
/// an older one; a newer one (a newer twofoldd elsewhere) is refused.
pub const SCHEMA_VERSION: i32 = 1;
/// What the key check row seals, to tell a wrong fleet key at start.
const KEY_CHECK: &[u8] = b"twofold fleet key check";

const SCHEMA_V1: &str = "
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
        if version > SCHEMA_VERSION {
            return Err(StoreError::Schema(format!(
                "the database's schema is version {version}, newer than this twofoldd knows ({SCHEMA_VERSION}): upgrade twofold on this host"
            )));
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::Schema(format!(
                "the database's schema is version {version}: run `twofoldd --init` to bring it to {SCHEMA_VERSION}"
            )));
        }
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
        let found = self.run(|mut c| async move {
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
                    Some((r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1)))
                } else {
                    tx.batch_execute(SCHEMA_V1).await.map_err(|e| pg(&e))?;
                    tx.execute(
                        "INSERT INTO twofold_schema (id, version, key_check) VALUES (1, $1, $2)",
                        &[&SCHEMA_VERSION, &sealed_check],
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                    None
                };
                tx.commit().await.map_err(|e| pg(&e))?;
                Ok(found)
            }
            .await;
            (c, r)
        })?;
        match found {
            None => Ok(None),
            Some((version, check)) => {
                // Version 1 is the first: no migration exists yet.
                self.check_version_and_key(version, &check)?;
                Ok(Some(version))
            }
        }
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
                            "SELECT secret, email FROM twofold_enrollment WHERE user_name = $1 FOR UPDATE",
                            &[&name],
                        )
                        .await
                        .map_err(|e| pg(&e))?
                    else {
                        return Ok(false);
                    };
                    let mut fields: Vec<Option<Vec<u8>>> = Vec::new();
                    let mut changed = false;
                    for (i, field) in ["secret", "email"].into_iter().enumerate() {
                        let value: Option<Vec<u8>> = row.get(i);
                        fields.push(match value {
                            Some(v) if !key.is_current(&v) => {
                                changed = true;
                                let plain = key.open(&name, field, &v).map_err(|e| {
                                    StoreError::Sealed {
                                        user: name.clone(),
                                        field,
                                        reason: e.to_string(),
                                    }
                                })?;
                                Some(key.seal(&name, field, &plain))
                            }
                            other => other,
                        });
                    }
                    if changed {
                        tx.execute(
                            "UPDATE twofold_enrollment SET secret = $2, email = $3 WHERE user_name = $1",
                            &[&name, &fields[0], &fields[1]],
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
