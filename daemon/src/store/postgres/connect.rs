//! Reaching the database: the connection settings (the administrator's
//! string, the password file, TLS that verifies the server), the pools, and
//! the one deadline every call runs under.

use super::super::StoreError;
use super::super::seal::{FleetKey, KeyError};
use super::PgStore;
use crate::config::StoreConfig;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

pub(super) fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A tokio-postgres error with its cause (its own text is often just "db error").
pub(super) fn pg(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Database(format!("{}: {}", d.severity(), d.message())),
        None => match std::error::Error::source(e) {
            Some(cause) => StoreError::Database(format!("{e}: {cause}")),
            None => StoreError::Database(e.to_string()),
        },
    }
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(&e),
        other => db(format!("cannot connect: {other}")),
    }
}

/// The connection settings: the administrator's connection string, with
/// the password from its file, the timeouts, and TLS that verifies the
/// server's certificate and name.
pub(super) fn connection(
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

    /// Run `op` on a pooled connection, all of it within the deadline. A
    /// connection that timed out or broke is dropped, not pooled: the next
    /// call connects anew (so the store recovers by itself).
    pub(super) fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, StoreError>)>,
    {
        self.run_on(&self.pool, op)
    }

    pub(super) fn run_on<T, F, Fut>(&self, pool: &Pool, op: F) -> Result<T, StoreError>
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

    pub(super) fn timed_out(&self) -> StoreError {
        db(format!(
            "no answer within {} s (database down or unreachable?)",
            self.deadline.as_secs()
        ))
    }
}

/// A pooled connection that goes back to the pool only when a call on it
/// finished and it is still open (`.1`); dropped otherwise (a timeout drops
/// the call's future with it), so a stuck connection is never handed out again.
pub(super) struct Conn(pub(super) Option<Object>, pub(super) bool);

impl Conn {
    /// Whether the connection goes back to the pool when dropped.
    pub(super) fn keep(&mut self, keep: bool) {
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

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::Key(e.to_string())
    }
}
