//! The store's connections, each with its own single-threaded tokio
//! runtime: the login thread that checks a connection out drives it itself
//! (`Runtime::block_on` runs the connection's task and the call's future
//! together on that thread), so a round trip to the database is the login
//! thread's write, its wait in `epoll_wait` and its read, with no hop to
//! another thread and back (a shared runtime's worker thread woke twice per
//! round trip, the login thread once more). No thread is started at all.
//!
//! A pool of them, bounded (`store.pool_size`): a caller waits for a free
//! connection until its deadline; a connection is checked before it is
//! handed out (still open), and one whose call failed to finish (a timeout,
//! a broken socket) is dropped with its runtime, so the next call connects
//! anew and the daemon recovers by itself when the database is back.

use super::super::StoreError;
use super::connect::{db, pg};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Statement};

/// Lets the runtime's tasks (the connection's) run on what the socket has
/// for them, without waiting: the first yield has the runtime poll its
/// sockets (a closed one wakes the connection's task), the second lets
/// that task run before this returns.
async fn settle() {
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
}

/// One connection and the runtime that drives it.
pub(super) struct Link {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) conn: Conn,
}

/// A connection's client, with its prepared statements: each statement is
/// parsed by the server once per connection, then only bound and run.
pub(super) struct Conn {
    client: Client,
    prepared: RefCell<HashMap<String, Statement>>,
}

impl Conn {
    /// `sql` prepared on this connection, once.
    pub(super) async fn prepare_cached(
        &self,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(stmt) = self.prepared.borrow().get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql).await?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

pub(super) struct Pool {
    cfg: tokio_postgres::Config,
    tls: postgres_native_tls::MakeTlsConnector,
    connect: Duration,
    max: usize,
    /// Idle connections, and how many exist (idle or checked out).
    state: Mutex<(Vec<Link>, usize)>,
    freed: Condvar,
}

impl Pool {
    pub(super) fn new(
        cfg: tokio_postgres::Config,
        tls: postgres_native_tls::MakeTlsConnector,
        connect: Duration,
        max: usize,
    ) -> Self {
        Pool {
            cfg,
            tls,
            connect,
            max: max.max(1),
            state: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, (Vec<Link>, usize)> {
        // A poisoned lock only means a caller panicked; the list is whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An open connection and its place: an idle one, a new one while
    /// fewer than `max` exist, or the first one freed before `until`.
    pub(super) fn get(&self, until: Instant) -> Result<(Link, Place<'_>), StoreError> {
        let mut state = self.state();
        loop {
            if let Some(link) = state.0.pop() {
                drop(state);
                let place = Place(self);
                // Nothing ran the connection while it was idle: let it
                // read what came meanwhile (the server's end of a session
                // that a restart closed) before trusting it.
                link.rt.block_on(settle());
                if !link.conn.is_closed() {
                    return Ok((link, place));
                }
                drop(link);
                drop(place);
                state = self.state();
                continue;
            }
            if state.1 < self.max {
                state.1 += 1;
                drop(state);
                let place = Place(self);
                return self.open(until).map(|link| (link, place));
            }
            let now = crate::clock::monotonic();
            if now >= until {
                return Err(db(format!(
                    "cannot connect: all {} connections stayed busy",
                    self.max
                )));
            }
            state = self
                .freed
                .wait_timeout(state, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A new connection, within the connect timeout and `until`.
    fn open(&self, until: Instant) -> Result<Link, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| db(format!("cannot start the database client: {e}")))?;
        let limit = until.min(crate::clock::monotonic() + self.connect);
        let connected = rt.block_on(async {
            tokio::time::timeout_at(limit.into(), self.cfg.connect(self.tls.clone())).await
        });
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(pg(&e)),
            Err(_) => {
                return Err(db(format!(
                    "cannot connect: no answer within {} s (database down or unreachable?)",
                    self.connect.as_secs()
                )));
            }
        };
        // Runs whenever a caller blocks on `rt`; ends when the client is
        // dropped or the socket closes.
        rt.spawn(async move {
            let _ = connection.await;
        });
        Ok(Link {
            rt,
            conn: Conn {
                client,
                prepared: RefCell::default(),
            },
        })
    }

    /// A connection that is gone (with its runtime): room for a new one.
    fn discard(&self) {
        self.state().1 -= 1;
        self.freed.notify_one();
    }
}

/// A checked-out connection's place in its pool. Given back with the
/// connection (`put`); dropped any other way (an error, a timeout, a panic
/// unwinding through the call), it frees the place for a new connection,
/// so no failed call ever shrinks the pool.
pub(super) struct Place<'p>(&'p Pool);

impl Place<'_> {
    /// `link` back into the pool, for the next caller. Nothing drives an
    /// idle connection, so what the call left queued (the ROLLBACK of a
    /// dropped transaction, which would keep its row locks while the
    /// connection waits for its next use) is sent first.
    pub(super) fn put(self, link: Link) {
        link.rt.block_on(settle());
        let pool = self.0;
        std::mem::forget(self);
        pool.state().0.push(link);
        pool.freed.notify_one();
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one whose database is a socket no one listens on.
    fn pool_of_one(dir: &std::path::Path) -> Pool {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(dir).user("nobody").dbname("nothing");
        let tls = native_tls::TlsConnector::new().unwrap();
        Pool::new(
            cfg,
            postgres_native_tls::MakeTlsConnector::new(tls),
            Duration::from_secs(1),
            1,
        )
    }

    #[test]
    fn a_call_that_panics_frees_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_of_one(dir.path());
        // A checked-out connection's place, held by a call that panics.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.state().1 += 1;
            let _place = Place(&pool);
            panic!("a row that does not decode");
        }));
        assert!(panicked.is_err());
        assert_eq!(pool.state().1, 0);
        // The next call may connect (and finds no server), rather than
        // waiting for a place no one will give back.
        let until = crate::clock::monotonic() + Duration::from_millis(300);
        let Err(e) = pool.get(until) else {
            panic!("connected to nothing")
        };
        assert!(!e.to_string().contains("stayed busy"), "{e}");
        // A failed connect frees its place too.
        assert_eq!(pool.state().1, 0);
    }
}
