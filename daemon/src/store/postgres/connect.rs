//! Reaching the database: the connection settings (the administrator's
//! string, the password file, TLS that verifies the server), and the one
//! deadline every call runs under (the pools are `pool.rs`).

use super::super::StoreError;
use super::super::seal::{FleetKey, KeyError};
use super::PgStore;
use super::pool::{Conn, Link, Pool};
use crate::config::StoreConfig;
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
    /// Read the fleet key and set up the pools; nothing is asked of the
    /// database yet (`check` or `init` does).
    pub fn new(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let key = FleetKey::load(&cfg.fleet_key_file)?;
        let (pg_cfg, tls) = connection(cfg)?;
        let connect = Duration::from_secs(cfg.connect_timeout_secs);
        let deadline = connect + Duration::from_secs(cfg.statement_timeout_secs);
        let pool = || Pool::new(pg_cfg.clone(), tls.clone(), connect, cfg.pool_size as usize);
        Ok(Self {
            pool: pool(),
            lock_pool: pool(),
            key,
            deadline,
            host: crate::users::hostname(),
        })
    }

    /// Run `op` on a pooled connection, all of it within the deadline, on
    /// this thread (`pool.rs`). A connection that timed out, broke or
    /// answered with an error is dropped, not pooled: the next call
    /// connects anew (so the store recovers by itself), and nothing the
    /// failed call left behind (an open transaction) waits on it.
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
        let until = crate::clock::monotonic() + self.deadline;
        let (Link { rt, conn }, place) = pool.get(until)?;
        // On a timeout the connection, in the dropped future, is dropped.
        // (The timer is made inside: it needs the runtime's context.)
        let done = rt.block_on(async { tokio::time::timeout_at(until.into(), op(conn)).await });
        match done {
            Ok((conn, result)) => {
                if result.is_ok() && !conn.is_closed() {
                    place.put(Link { rt, conn });
                } else {
                    drop((conn, rt));
                    drop(place);
                }
                result
            }
            Err(_) => {
                drop(rt);
                drop(place);
                Err(self.timed_out())
            }
        }
    }

    pub(super) fn timed_out(&self) -> StoreError {
        db(format!(
            "no answer within {} s (database down or unreachable?)",
            self.deadline.as_secs()
        ))
    }
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::Key(e.to_string())
    }
}
