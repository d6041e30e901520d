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
//! is async, so the store owns a small tokio runtime and each call blocks on
//! it under one deadline (pool wait, connection, statement): a database that
//! is down or stuck costs a login a bounded time, never a hang.

use super::seal::{FleetKey, KeyError};
use super::{
    ENROLLMENT_VERSION, Enrollment, Event, Loaded, SecretBytes, Store, StoreError, UserMeta,
};
use crate::backup::BackupSet;
use crate::config::StoreConfig;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// The schema this daemon reads and writes. `--init` creates it or migrates
/// an older one; a newer one (a newer twofoldd elsewhere) is refused.
pub const SCHEMA_VERSION: i32 = 1;
/// What the key check row seals, to tell a wrong fleet key at start.
const KEY_CHECK: &[u8] = b"twofold fleet key check";
/// Names listed per query when walking every user.
const PAGE: i64 = 1000;

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

const COLUMNS: &str = "revision, generation, version, secret, email, digits, period, enrolled_at, \
last_step, backup, backup_used, failures, last_failure, ceiling_tat, last_login";

pub struct PgStore {
    rt: tokio::runtime::Runtime,
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

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A tokio-postgres error with its cause (its own text is often just "db error").
fn pg(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Database(format!("{}: {}", d.severity(), d.message())),
        None => match std::error::Error::source(e) {
            Some(cause) => StoreError::Database(format!("{e}: {cause}")),
            None => StoreError::Database(e.to_string()),
        },
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(&e),
        other => db(format!("cannot connect: {other}")),
    }
}

/// The connection settings: the administrator's connection string, with
/// the password from its file, the timeouts, and TLS that verifies the
/// server's certificate and name.
fn connection(
    cfg: &StoreConfig,
) -> Result<
    (
        tokio_postgres::Config,
        postgres_native_tls::MakeTlsConnector,
    ),
    StoreError,
> {
    let mut pg_cfg = tokio_postgres::Config::from_str(&cfg.connection)
        .map_err(|e| db(format!("store.connection: {e}")))?;
    if !cfg.password_file.as_os_str().is_empty() {
        let text =
            zeroize::Zeroizing::new(std::fs::read_to_string(&cfg.password_file).map_err(|e| {
                db(format!(
                    "store.password_file {}: {e}",
                    cfg.password_file.display()
                ))
            })?);
        let password = text.lines().next().unwrap_or_default();
        pg_cfg.password(password);
    }
    let connect = Duration::from_secs(cfg.connect_timeout_secs);
    pg_cfg
        .connect_timeout(connect)
        .tcp_user_timeout(connect)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("twofoldd");
    let statement_ms = cfg.statement_timeout_secs * 1000;
    let options = format!(
        "{} -c statement_timeout={statement_ms} -c lock_timeout={statement_ms} -c idle_in_transaction_session_timeout={statement_ms}",
        pg_cfg.get_options().unwrap_or_default()
    );
    pg_cfg.options(options.trim());
    let mut tls = native_tls::TlsConnector::builder();
    if !cfg.ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(&cfg.ca_file)
            .map_err(|e| db(format!("store.ca_file {}: {e}", cfg.ca_file.display())))?;
        let ca = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| db(format!("store.ca_file {}: {e}", cfg.ca_file.display())))?;
        tls.add_root_certificate(ca);
    }
    if !cfg.client_cert_file.as_os_str().is_empty() {
        let cert = std::fs::read(&cfg.client_cert_file).map_err(|e| {
            db(format!(
                "store.client_cert_file {}: {e}",
                cfg.client_cert_file.display()
            ))
        })?;
        let key = zeroize::Zeroizing::new(std::fs::read(&cfg.client_key_file).map_err(|e| {
            db(format!(
                "store.client_key_file {}: {e}",
                cfg.client_key_file.display()
            ))
        })?);
        let identity = native_tls::Identity::from_pkcs8(&cert, &key)
            .map_err(|e| db(format!("store.client_cert_file/client_key_file: {e}")))?;
        tls.identity(identity);
    }
    let tls = tls.build().map_err(|e| db(format!("TLS: {e}")))?;
    Ok((pg_cfg, postgres_native_tls::MakeTlsConnector::new(tls)))
}

impl PgStore {
    /// Read the fleet key and set up the pool; nothing is asked of the
    /// database yet (`check` or `init` does).
    pub fn new(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let key = FleetKey::load(&cfg.fleet_key_file)?;
        let (pg_cfg, tls) = connection(cfg)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("twofoldd-db")
            .enable_all()
            .build()
            .map_err(|e| db(format!("cannot start the database client: {e}")))?;
        let connect = Duration::from_secs(cfg.connect_timeout_secs);
        let deadline = connect + Duration::from_secs(cfg.statement_timeout_secs);
        let pool = || {
            let manager = Manager::from_config(
                pg_cfg.clone(),
                tls.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(cfg.pool_size as usize)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(deadline))
                .create_timeout(Some(connect))
                .recycle_timeout(Some(connect))
                .build()
                .map_err(db)
        };
        Ok(Self {
            rt,
            pool: pool()?,
            lock_pool: pool()?,
            key,
            deadline,
            host: crate::users::hostname(),
        })
    }

    pub fn key_id(&self) -> String {
        self.key.id()
    }

    /// Run `op` on a pooled connection, all of it within the deadline. A
    /// connection that timed out or broke is dropped, not pooled: the next
    /// call connects anew (so the store recovers by itself).
    fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, StoreError>)>,
    {
        self.run_on(&self.pool, op)
    }

    fn run_on<T, F, Fut>(&self, pool: &Pool, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, StoreError>)>,
    {
        let deadline = self.deadline;
        self.rt.block_on(async {
            let work = async {
                let client = pool.get().await.map_err(pool_error)?;
                let (mut conn, result) = op(Conn(Some(client), false)).await;
                conn.1 = !conn.is_closed();
                result
            };
            // On a timeout the connection, in the dropped future, is not kept.
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or_else(|_| Err(self.timed_out()))
        })
    }

    fn timed_out(&self) -> StoreError {
        db(format!(
            "no answer within {} s (database down or unreachable?)",
            self.deadline.as_secs()
        ))
    }

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

    fn check_version_and_key(&self, version: i32, check: &[u8]) -> Result<(), StoreError> {
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

    fn decode(&self, user: &str, r: &tokio_postgres::Row) -> Result<Loaded, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: format!("twofold_enrollment/{user}").into(),
            reason,
        };
        let unseal = |field: &'static str, value: Option<Vec<u8>>| {
            value
                .map(|v| {
                    self.key
                        .open(user, field, &v)
                        .map_err(|e| StoreError::Sealed {
                            user: user.to_string(),
                            field,
                            reason: e.to_string(),
                        })
                })
                .transpose()
        };
        let version: i32 = r.get(2);
        if u32::try_from(version).ok() != Some(ENROLLMENT_VERSION) {
            return Err(corrupt(format!("unsupported version {version}")));
        }
        let secret = unseal("secret", r.get(3))?.map(|s| SecretBytes(s.to_vec()));
        let email = match unseal("email", r.get(4))? {
            Some(bytes) => Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| corrupt("e-mail address is not UTF-8".into()))?,
            ),
            None => None,
        };
        let mut backup: BackupSet = serde_json::from_str(&r.get::<_, String>(9))
            .map_err(|e| corrupt(format!("backup codes: {e}")))?;
        let used = r.get::<_, i64>(10) as u64;
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
        let failures = u32::try_from(r.get::<_, i64>(11)).unwrap_or(u32::MAX);
        Ok(Loaded {
            enrollment: Enrollment {
                version: ENROLLMENT_VERSION,
                generation: r.get::<_, i64>(1) as u64,
                secret,
                digits,
                period: r.get::<_, i64>(6) as u64,
                enrolled_at: r.get::<_, i64>(7) as u64,
                email,
                last_step: r.get::<_, Option<i64>>(8).map(|s| s as u64),
                backup,
                failures,
                last_failure: r.get::<_, i64>(12) as u64,
                ceiling_tat: r.get::<_, i64>(13) as u64,
                last_login: r.get::<_, Option<i64>>(14).map(|s| s as u64),
                // One unnamed app per user (`keeps_apps`).
                apps: Default::default(),
            },
            journal_len: 0,
            revision: r.get::<_, i64>(0) as u64,
        })
    }

    /// The sealed and encoded columns of an enrollment.
    fn encode(&self, user: &str, e: &Enrollment) -> Result<Encoded, StoreError> {
        let secret = e
            .secret
            .as_ref()
            .map(|s| self.key.seal(user, "secret", &s.0));
        let email = e
            .email
            .as_ref()
            .map(|m| self.key.seal(user, "email", m.as_bytes()));
        if !e.apps.more.is_empty() || !e.apps.burned.is_empty() || e.apps.first.name.is_some() {
            return Err(db(
                "several or named authenticators, or burned steps, are not supported with the postgresql store yet",
            ));
        }
        if e.backup.hashes.len() > 64 {
            return Err(db("more than 64 backup codes"));
        }
        let backup = serde_json::to_string(&e.backup).map_err(db)?;
        Ok((secret, email, backup))
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

type Params = Vec<Box<dyn ToSql + Sync + Send>>;
/// The sealed key, the sealed address, the backup set's JSON.
type Encoded = (Option<Vec<u8>>, Option<Vec<u8>>, String);

/// A pooled connection that goes back to the pool only when a call on it
/// finished and it is still open (`.1`); dropped otherwise (a timeout drops
/// the call's future with it), so a stuck connection is never handed out again.
struct Conn(Option<Object>, bool);

impl Conn {
    /// Whether the connection goes back to the pool when dropped.
    fn keep(&mut self, keep: bool) {
        self.1 = keep;
    }
}

impl std::ops::Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        // Some until dropped.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.0.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(object) = self.0.take()
            && !self.1
        {
            drop(Object::take(object));
        }
    }
}

/// The advisory lock's first key: twofold's, apart from any other
/// application's locks in the same database.
const LOCK_CLASS: i32 = 0x7466_6c74; // "tflt"

/// The second key: a hash of the user name (two users with the same hash
/// only wait for each other).
fn lock_key(user: &str) -> i32 {
    let h = user.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h as i32
}

/// A user's advisory lock, on a connection of `lock_pool` kept for it.
struct PgUserLock<'a> {
    store: &'a PgStore,
    conn: Option<Conn>,
    key: i32,
}

impl super::UserLock for PgUserLock<'_> {}

impl Drop for PgUserLock<'_> {
    /// The unlock is sent, not waited for: the login's answer does not wait
    /// for it. The connection goes back to the pool once unlocked; if the
    /// unlock fails or takes past the deadline, it is closed instead, which
    /// ends its session and the lock with it.
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let (key, deadline) = (self.key, self.store.deadline);
        self.store.rt.spawn(async move {
            let unlocked = tokio::time::timeout(deadline, async {
                conn.execute("SELECT pg_advisory_unlock($1, $2)", &[&LOCK_CLASS, &key])
                    .await
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            let open = !conn.is_closed();
            conn.keep(unlocked && open);
        });
    }
}

impl Store for PgStore {
    /// A session advisory lock per user. Waiting for it is bounded like any
    /// call (the server's `lock_timeout`, and the deadline); a daemon that
    /// dies holding it loses its session, and the lock with it.
    fn lock_user(&self, user: &str) -> Result<Box<dyn super::UserLock + '_>, StoreError> {
        let key = lock_key(user);
        let conn = self.rt.block_on(async {
            let locked = async {
                let client = self.lock_pool.get().await.map_err(pool_error)?;
                // Discarded (closed) unless the lock is surely held.
                let mut conn = Conn(Some(client), false);
                conn.execute("SELECT pg_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])
                    .await
                    .map_err(|e| pg(&e))?;
                conn.1 = true;
                Ok(conn)
            };
            tokio::time::timeout(self.deadline, locked)
                .await
                .unwrap_or_else(|_| Err(self.timed_out()))
        })?;
        Ok(Box::new(PgUserLock {
            store: self,
            conn: Some(conn),
            key,
        }))
    }

    fn load(&self, user: &str) -> Result<Option<Loaded>, StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let row = self.run(|c| async move {
            let r = async {
                let stmt = c
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM twofold_enrollment WHERE user_name = $1"
                    ))
                    .await
                    .map_err(|e| pg(&e))?;
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
            // Only the first app is stored here, and no burned step: the
            // engine adds no other app and makes no `StepBurned` with this
            // store (`keeps_apps`); one reaching here is refused, not lost.
            Event::TotpAccepted { app, .. } if app != 0 => {
                return Err(db(format!(
                    "authenticator {app}: several authenticators are not supported with the postgresql store yet"
                )));
            }
            Event::StepBurned { .. } => {
                return Err(db(
                    "a burned step: drift diagnosis is not supported with the postgresql store yet",
                ));
            }
            // The app's clock offset (`drift`) is not kept in this schema.
            Event::TotpAccepted { step, at, .. } => (
                "UPDATE twofold_enrollment SET last_step = $3, \
                 last_login = GREATEST(COALESCE(last_login, $4), $4), failures = 0, \
                 last_host = $5, revision = revision + 1 \
                 WHERE user_name = $1 AND generation = $2 AND (last_step IS NULL OR last_step < $3) \
                 RETURNING revision",
                vec![
                    Box::new(name),
                    Box::new(generation),
                    Box::new(step as i64),
                    Box::new(at as i64),
                    Box::new(host),
                ],
            ),
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
        let (secret, email, backup) = self.encode(user, e)?;
        let mut params: Params = vec![
            Box::new(user.to_string()),
            Box::new(e.generation as i64),
            Box::new(e.version as i32),
            Box::new(secret),
            Box::new(email),
            Box::new(i16::from(e.digits)),
            Box::new(e.period as i64),
            Box::new(e.enrolled_at as i64),
            Box::new(e.last_step.map(|s| s as i64)),
            Box::new(backup),
            Box::new(i64::from(e.failures)),
            Box::new(e.last_failure as i64),
            Box::new(e.ceiling_tat as i64),
            Box::new(e.last_login.map(|s| s as i64)),
        ];
        let sql = match replaces {
            None => {
                "INSERT INTO twofold_enrollment (user_name, generation, version, secret, email, digits, \
                 period, enrolled_at, last_step, backup, failures, last_failure, ceiling_tat, last_login, \
                 revision, backup_used) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1, 0) \
                 ON CONFLICT (user_name) DO NOTHING RETURNING revision"
            }
            Some(old) => {
                params.push(Box::new(old.revision as i64));
                params.push(Box::new(old.enrollment.generation as i64));
                "UPDATE twofold_enrollment SET generation = $2, version = $3, secret = $4, email = $5, \
                 digits = $6, period = $7, enrolled_at = $8, last_step = $9, backup = $10, \
                 failures = $11, last_failure = $12, ceiling_tat = $13, last_login = $14, \
                 backup_used = 0, revision = revision + 1 \
                 WHERE user_name = $1 AND revision = $15 AND generation = $16 RETURNING revision"
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

    fn keeps_apps(&self) -> bool {
        false
    }

    fn load_meta(&self, user: &str) -> Result<UserMeta, StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let text: Option<String> = self.run(|c| async move {
            let r = async {
                let stmt = c
                    .prepare_cached("SELECT meta FROM twofold_meta WHERE user_name = $1")
                    .await
                    .map_err(|e| pg(&e))?;
                let row = c.query_opt(&stmt, &[&name]).await.map_err(|e| pg(&e))?;
                Ok(row.map(|r| r.get(0)))
            }
            .await;
            (c, r)
        })?;
        match text {
            None => Ok(UserMeta::default()),
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                path: format!("twofold_meta/{user}").into(),
                reason: e.to_string(),
            }),
        }
    }

    fn write_meta(&self, user: &str, meta: &UserMeta) -> Result<(), StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let text = serde_json::to_string(meta).map_err(db)?;
        self.run(|c| async move {
            let r = c
                .execute(
                    "INSERT INTO twofold_meta (user_name, meta) VALUES ($1, $2) \
                     ON CONFLICT (user_name) DO UPDATE SET meta = EXCLUDED.meta",
                    &[&name, &text],
                )
                .await
                .map_err(|e| pg(&e));
            (c, r)
        })
        .map(|_| ())
    }

    fn for_each_user(&self, visit: &mut dyn FnMut(&str)) -> Result<(), StoreError> {
        self.walk("twofold_enrollment", visit)?;
        self.walk("twofold_meta", visit)
    }
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::Key(e.to_string())
    }
}
