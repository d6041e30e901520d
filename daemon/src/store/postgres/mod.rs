//! The store shared by a fleet of hosts: one PostgreSQL database that every
//! host's twofoldd uses (`[store] backend = "postgresql"`).
//!
//! One row per enrolled user in `twofold_enrollment`, one per user with
//! metadata in `twofold_meta`. Every change is one statement, conditional on
//! what the caller loaded, so single use holds across hosts without a lock
//! between them: an accepted step is written only if it is newer than the
//! stored one, a backup code only if its bit is still clear, a failure only
//! if the account-wide bucket is still where it was read. The losing host
//! gets `StoreError::Conflict` and the engine answers "already used".
//! Each statement commits before the call returns (autocommit), so nothing
//! reported accepted is lost if the database restarts.
//!
//! TOTP keys and e-mail addresses are sealed with the fleet key (`seal.rs`).
//!
//! The engine is synchronous, on the bus's blocking threads; tokio-postgres
//! is async, so each pooled connection has its own single-threaded tokio
//! runtime, which the calling thread drives for the call (`pool.rs`),
//! under one deadline (pool wait, connection, statement): a database that
//! is down or stuck costs a login a bounded time, never a hang.

mod connect;
mod email;
mod lock;
mod pool;
mod row;
mod schema;

use super::seal::FleetKey;
use super::{Enrollment, Event, Loaded, MAX_BURNED, Store, StoreError, UserMeta};
use connect::{db, pg};
use pool::Pool;
use row::COLUMNS;
use std::time::Duration;
use tokio_postgres::types::ToSql;

pub use schema::{KEY_CHECK, SCHEMA_V1, SCHEMA_VERSION};

/// Names listed per query when walking every user.
const PAGE: i64 = 1000;

pub struct PgStore {
    pool: Pool,
    /// Connections that hold a user's advisory lock (`lock_user`), apart
    /// from `pool`: a lock holder's reads and writes never wait for a
    /// connection another lock holder keeps.
    lock_pool: Pool,
    key: FleetKey,
    /// The longest a call may take, all included.
    deadline: Duration,
    /// This host's name, recorded with each login (the report shows it).
    host: String,
}

impl PgStore {
    pub fn key_id(&self) -> String {
        self.key.id()
    }
    /// One statement that changes at most one row; `Conflict` if none.
    fn update_one(&self, user: &str, sql: &'static str, params: Params) -> Result<i64, StoreError> {
        let row = self.run(|c| async move {
            let r = async {
                let stmt = c.prepare_cached(sql).await.map_err(|e| pg(&e))?;
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                c.query_opt(&stmt, &refs).await.map_err(|e| pg(&e))
            }
            .await;
            (c, r)
        })?;
        match row {
            Some(r) => Ok(r.get(0)),
            None => Err(StoreError::Conflict {
                user: user.to_string(),
            }),
        }
    }

    /// Walk the names in `table` in pages, each page one bounded query.
    fn walk(&self, table: &'static str, visit: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        let sql: &'static str = match table {
            "twofold_meta" => {
                "SELECT user_name FROM twofold_meta WHERE user_name > $1 ORDER BY user_name LIMIT $2"
            }
            _ => {
                "SELECT user_name FROM twofold_enrollment WHERE user_name > $1 ORDER BY user_name LIMIT $2"
            }
        };
        let mut after = String::new();
        loop {
            let from = after.clone();
            let names: Vec<String> = self.run(|c| async move {
                let r = async {
                    let stmt = c.prepare_cached(sql).await.map_err(|e| pg(&e))?;
                    let rows = c.query(&stmt, &[&from, &PAGE]).await.map_err(|e| pg(&e))?;
                    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
                }
                .await;
                (c, r)
            })?;
            for name in &names {
                if twofold_protocol::user::validate(name).is_ok() {
                    visit(name);
                }
            }
            match names.last() {
                Some(last) if names.len() as i64 == PAGE => after.clone_from(last),
                _ => return Ok(()),
            }
        }
    }
}

/// A user's enrollment row (`load`, and `lock_and_load` on the lock's connection).
fn load_sql() -> String {
    format!("SELECT {COLUMNS} FROM twofold_enrollment WHERE user_name = $1")
}

fn parse_meta(user: &str, text: Option<String>) -> Result<UserMeta, StoreError> {
    match text {
        None => Ok(UserMeta::default()),
        Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            path: format!("twofold_meta/{user}").into(),
            reason: e.to_string(),
        }),
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

impl Store for PgStore {
    /// A session advisory lock per user. Waiting for it is bounded like any
    /// call (the server's `lock_timeout`, and the deadline); a daemon that
    /// dies holding it loses its session, and the lock with it.
    fn lock_user(&self, user: &str) -> Result<Box<dyn super::UserLock + '_>, StoreError> {
        self.lock(user)
    }

    /// One round trip for both (`lock_and_read`).
    fn lock_and_load(
        &self,
        user: &str,
    ) -> Result<(Box<dyn super::UserLock + '_>, Option<Loaded>), StoreError> {
        twofold_protocol::user::validate(user)?;
        let (lock, row) = self.lock_and_read(user, true)?;
        let loaded = row.map(|r| self.decode(user, &r)).transpose()?;
        Ok((lock, loaded))
    }

    fn load(&self, user: &str) -> Result<Option<Loaded>, StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let row = self.run(|c| async move {
            let r = async {
                let stmt = c.prepare_cached(&load_sql()).await.map_err(|e| pg(&e))?;
                c.query_opt(&stmt, &[&name]).await.map_err(|e| pg(&e))
            }
            .await;
            (c, r)
        })?;
        row.map(|r| self.decode(user, &r)).transpose()
    }

    fn append(&self, user: &str, loaded: &mut Loaded, event: Event) -> Result<(), StoreError> {
        twofold_protocol::user::validate(user)?;
        let generation = loaded.enrollment.generation as i64;
        let name = user.to_string();
        let host = self.host.clone();
        let (sql, params): (&'static str, Params) = match event {
            // The app's own last step (index app + 1) must be older: one
            // winner per step and app across hosts.
            Event::TotpAccepted {
                step,
                at,
                app,
                drift,
            } => {
                if usize::from(app) > loaded.enrollment.apps.more.len() {
                    return Err(db(format!("authenticator {app} does not exist")));
                }
                (
                    "UPDATE twofold_enrollment SET app_last_step[$3] = $4, \
                     app_last_used[$3] = GREATEST(COALESCE(app_last_used[$3], $5), $5), \
                     app_drift[$3] = COALESCE($6, app_drift[$3]), \
                     last_login = GREATEST(COALESCE(last_login, $5), $5), failures = 0, \
                     last_host = $7, revision = revision + 1 \
                     WHERE user_name = $1 AND generation = $2 AND $3 <= cardinality(app_last_step) \
                     AND (app_last_step[$3] IS NULL OR app_last_step[$3] < $4) \
                     RETURNING revision",
                    vec![
                        Box::new(name),
                        Box::new(generation),
                        Box::new(i32::from(app) + 1),
                        Box::new(step as i64),
                        Box::new(at as i64),
                        Box::new(drift.map(i64::from)),
                        Box::new(host),
                    ],
                )
            }
            // Added once, the oldest dropped past `MAX_BURNED` (as
            // `Enrollment::apply`), in the statement: two hosts burning at
            // once both keep theirs.
            Event::StepBurned { app, step, .. } => {
                if usize::from(app) > loaded.enrollment.apps.more.len() {
                    return Err(db(format!("authenticator {app} does not exist")));
                }
                (
                    "UPDATE twofold_enrollment SET burned = CASE WHEN $3 = ANY(burned) THEN burned \
                     ELSE (burned || $3::bigint)[GREATEST(1, cardinality(burned) + 2 - $4):] END, \
                     revision = revision + 1 \
                     WHERE user_name = $1 AND generation = $2 RETURNING revision",
                    vec![
                        Box::new(name),
                        Box::new(generation),
                        Box::new(row::burned_value(app, step)?),
                        Box::new(MAX_BURNED as i32),
                    ],
                )
            }
            Event::BackupUsed { index, at } => {
                if index >= 64 {
                    return Err(db(format!("backup code index {index} out of range")));
                }
                (
                    "UPDATE twofold_enrollment SET backup_used = backup_used | $3, \
                     last_login = GREATEST(COALESCE(last_login, $4), $4), failures = 0, \
                     last_host = $5, revision = revision + 1 \
                     WHERE user_name = $1 AND generation = $2 AND backup_used & $3 = 0 \
                     RETURNING revision",
                    vec![
                        Box::new(name),
                        Box::new(generation),
                        Box::new((1u64 << index) as i64),
                        Box::new(at as i64),
                        Box::new(host),
                    ],
                )
            }
            Event::Failure { at, ceiling } => (
                "UPDATE twofold_enrollment SET failures = failures + 1, \
                 last_failure = GREATEST(last_failure, $3), ceiling_tat = $4, revision = revision + 1 \
                 WHERE user_name = $1 AND generation = $2 AND ceiling_tat = $5 \
                 RETURNING revision",
                vec![
                    Box::new(name),
                    Box::new(generation),
                    Box::new(at as i64),
                    Box::new(ceiling as i64),
                    Box::new(loaded.enrollment.ceiling_tat as i64),
                ],
            ),
            Event::Unlock { .. } => (
                "UPDATE twofold_enrollment SET failures = 0, ceiling_tat = 0, revision = revision + 1 \
                 WHERE user_name = $1 AND generation = $2 RETURNING revision",
                vec![Box::new(name), Box::new(generation)],
            ),
            Event::EmailAccepted { at } => (
                "UPDATE twofold_enrollment SET last_login = GREATEST(COALESCE(last_login, $3), $3), \
                 failures = 0, last_host = $4, revision = revision + 1 \
                 WHERE user_name = $1 AND generation = $2 RETURNING revision",
                vec![
                    Box::new(name),
                    Box::new(generation),
                    Box::new(at as i64),
                    Box::new(host),
                ],
            ),
        };
        let revision = self.update_one(user, sql, params)? as u64;
        // Another host's change in between leaves our copy stale: a write
        // that replaces the enrollment must then load it again (0 matches
        // no row: revisions start at 1).
        loaded.revision = if revision == loaded.revision + 1 {
            revision
        } else {
            0
        };
        Ok(())
    }

    fn write_enrollment(
        &self,
        user: &str,
        replaces: Option<&Loaded>,
        e: &Enrollment,
    ) -> Result<(), StoreError> {
        twofold_protocol::user::validate(user)?;
        let c = self.encode(user, e)?;
        let mut params: Params = vec![
            Box::new(user.to_string()),
            Box::new(e.generation as i64),
            Box::new(e.version as i32),
            Box::new(c.secret),
            Box::new(c.email),
            Box::new(i16::from(e.digits)),
            Box::new(e.period as i64),
            Box::new(e.enrolled_at as i64),
            Box::new(c.backup),
            Box::new(i64::from(e.failures)),
            Box::new(e.last_failure as i64),
            Box::new(e.ceiling_tat as i64),
            Box::new(e.last_login.map(|s| s as i64)),
            Box::new(c.apps),
            Box::new(c.app_secrets),
            Box::new(c.last_step),
            Box::new(c.last_used),
            Box::new(c.drift),
            Box::new(c.burned),
        ];
        let sql = match replaces {
            None => {
                "INSERT INTO twofold_enrollment (user_name, generation, version, secret, email, digits, \
                 period, enrolled_at, backup, failures, last_failure, ceiling_tat, last_login, \
                 apps, app_secrets, app_last_step, app_last_used, app_drift, burned, \
                 revision, backup_used) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, 1, 0) \
                 ON CONFLICT (user_name) DO NOTHING RETURNING revision"
            }
            Some(old) => {
                params.push(Box::new(old.revision as i64));
                params.push(Box::new(old.enrollment.generation as i64));
                "UPDATE twofold_enrollment SET generation = $2, version = $3, secret = $4, email = $5, \
                 digits = $6, period = $7, enrolled_at = $8, backup = $9, \
                 failures = $10, last_failure = $11, ceiling_tat = $12, last_login = $13, \
                 apps = $14, app_secrets = $15, app_last_step = $16, app_last_used = $17, \
                 app_drift = $18, burned = $19, backup_used = 0, revision = revision + 1 \
                 WHERE user_name = $1 AND revision = $20 AND generation = $21 RETURNING revision"
            }
        };
        self.update_one(user, sql, params).map(|_| ())
    }

    fn remove_enrollment(&self, user: &str) -> Result<(), StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        self.run(|c| async move {
            let r = c
                .execute(
                    "DELETE FROM twofold_enrollment WHERE user_name = $1",
                    &[&name],
                )
                .await
                .map_err(|e| pg(&e));
            (c, r)
        })
        .map(|_| ())
    }

    /// One statement, one snapshot: both reads in one round trip.
    fn load_meta_and_state(&self, user: &str) -> Result<(UserMeta, Option<Loaded>), StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let row = self.run(|c| async move {
            let r = async {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS}, m.meta FROM (SELECT $1::text AS u) k \
                         LEFT JOIN twofold_enrollment e ON e.user_name = k.u \
                         LEFT JOIN twofold_meta m ON m.user_name = k.u"
                    ))
                    .await
                    .map_err(|e| pg(&e))?;
                c.query_one(&stmt, &[&name]).await.map_err(|e| pg(&e))
            }
            .await;
            (c, r)
        })?;
        let meta = parse_meta(user, row.get(row.len() - 1))?;
        // `revision` (the first column) is never NULL in a stored row.
        let loaded = match row.get::<_, Option<i64>>(0) {
            Some(_) => Some(self.decode(user, &row)?),
            None => None,
        };
        Ok((meta, loaded))
    }

    /// The row's revision is its `xmin` (the transaction that wrote it):
    /// the server gives every write of the row a new one, so no column of
    /// ours is needed for it (and the schema stays as it is). Never 0.
    fn load_meta_revision(&self, user: &str) -> Result<(UserMeta, u64), StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let row: Option<(String, i64)> = self.run(|c| async move {
            let r = async {
                let stmt = c
                    .prepare_cached(
                        "SELECT meta, xmin::text::bigint FROM twofold_meta WHERE user_name = $1",
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                let row = c.query_opt(&stmt, &[&name]).await.map_err(|e| pg(&e))?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            }
            .await;
            (c, r)
        })?;
        match row {
            None => Ok((UserMeta::default(), 0)),
            Some((text, revision)) => Ok((parse_meta(user, Some(text))?, revision as u64)),
        }
    }

    /// Conditional on the revision read: another host's write since then
    /// is a `Conflict`, never overwritten.
    fn write_meta(&self, user: &str, meta: &UserMeta, read: u64) -> Result<(), StoreError> {
        twofold_protocol::user::validate(user)?;
        let text = serde_json::to_string(meta).map_err(db)?;
        let (sql, params): (&'static str, Params) = if read == 0 {
            (
                "INSERT INTO twofold_meta (user_name, meta) VALUES ($1, $2) \
                 ON CONFLICT (user_name) DO NOTHING RETURNING 1::bigint",
                vec![Box::new(user.to_string()), Box::new(text)],
            )
        } else {
            (
                "UPDATE twofold_meta SET meta = $2 \
                 WHERE user_name = $1 AND xmin::text::bigint = $3 RETURNING 1::bigint",
                vec![
                    Box::new(user.to_string()),
                    Box::new(text),
                    Box::new(read as i64),
                ],
            )
        };
        self.update_one(user, sql, params).map(|_| ())
    }

    fn health(&self) -> Result<String, StoreError> {
        self.check()?;
        Ok(format!(
            "the PostgreSQL database answers; schema version {SCHEMA_VERSION}; this host's fleet key {} is the fleet's",
            self.key.id()
        ))
    }

    fn shared_email_codes(&self) -> Option<&dyn crate::email_codes::CodeStore> {
        Some(self)
    }

    fn for_each_user(&self, visit: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        self.walk("twofold_enrollment", visit)?;
        self.walk("twofold_meta", visit)
    }
}
