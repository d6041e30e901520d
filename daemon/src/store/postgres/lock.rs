//! The per-user advisory lock (`Store::lock_user`) that orders the checks
//! of one user's codes across every host of the fleet.

use super::super::StoreError;
use super::PgStore;
use super::connect::pg;
use super::pool::{Link, Place};
use futures_util::future::try_join;

/// The advisory lock's first key: twofold's, apart from any other
/// application's locks in the same database.
const LOCK_CLASS: i32 = 0x7466_6c74; // "tflt"

const LOCK: &str = "SELECT pg_advisory_lock($1, $2)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1, $2)";

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
    /// The connection and its place in `lock_pool`.
    link: Option<(Link, Place<'a>)>,
    key: i32,
}

impl super::super::UserLock for PgUserLock<'_> {}

impl Drop for PgUserLock<'_> {
    /// The connection goes back to the pool once unlocked; if the unlock
    /// fails or takes past the deadline, it is closed instead, which ends
    /// its session and the lock with it. (The unlock is waited for: no
    /// other thread drives the connection, `pool.rs`; a login's answer
    /// waits one round trip more, and no thread is woken for it.)
    fn drop(&mut self) {
        let Some((Link { rt, conn }, place)) = self.link.take() else {
            return;
        };
        let key = self.key;
        let until = crate::clock::monotonic() + self.store.deadline;
        let unlocked = rt
            .block_on(async {
                let unlock = async {
                    // Prepared once per connection: one round trip, not two.
                    match conn.prepare_cached(UNLOCK).await {
                        Ok(stmt) => conn.execute(&stmt, &[&LOCK_CLASS, &key]).await.is_ok(),
                        Err(_) => false,
                    }
                };
                tokio::time::timeout_at(until.into(), unlock).await
            })
            .unwrap_or(false);
        if unlocked && !conn.is_closed() {
            place.put(Link { rt, conn });
        } else {
            drop((conn, rt));
            drop(place);
        }
    }
}

impl PgStore {
    /// A session advisory lock per user. Waiting for it is bounded like any
    /// call (the server's `lock_timeout`, and the deadline); a daemon that
    /// dies holding it loses its session, and the lock with it.
    pub(super) fn lock(
        &self,
        user: &str,
    ) -> Result<Box<dyn super::super::UserLock + '_>, StoreError> {
        self.lock_and_read(user, false).map(|(lock, _)| lock)
    }

    /// `lock`, and with `read` the user's enrollment row, read on the
    /// lock's connection in the same round trip: both statements are sent
    /// before either answer is awaited (tokio-postgres pipelines requests
    /// polled together). The server runs them in order, each its own
    /// transaction, so the read's snapshot is taken once the lock is held
    /// (one statement `SELECT pg_advisory_lock(..), cols` would not do: its
    /// snapshot would predate the lock, and miss the previous holder's write).
    #[allow(clippy::type_complexity)]
    pub(super) fn lock_and_read(
        &self,
        user: &str,
        read: bool,
    ) -> Result<
        (
            Box<dyn super::super::UserLock + '_>,
            Option<tokio_postgres::Row>,
        ),
        StoreError,
    > {
        let key = lock_key(user);
        let name = user.to_string();
        let until = crate::clock::monotonic() + self.deadline;
        let (Link { rt, conn }, place) = self.lock_pool.get(until)?;
        let locked = rt.block_on(async {
            let lock_and_read = async {
                // Prepared once per connection (a text query is parsed in its
                // own round trip each time).
                if read {
                    let (lock, select) = try_join(
                        conn.prepare_cached(LOCK),
                        conn.prepare_cached(&super::load_sql()),
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                    let (_, row) = try_join(
                        conn.execute(&lock, &[&LOCK_CLASS, &key]),
                        conn.query_opt(&select, &[&name]),
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                    Ok(row)
                } else {
                    let stmt = conn.prepare_cached(LOCK).await.map_err(|e| pg(&e))?;
                    conn.execute(&stmt, &[&LOCK_CLASS, &key])
                        .await
                        .map_err(|e| pg(&e))?;
                    Ok(None)
                }
            };
            tokio::time::timeout_at(until.into(), lock_and_read).await
        });
        // Discarded (closed) unless the lock is surely held.
        let row = match locked {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                drop((conn, rt));
                drop(place);
                return Err(e);
            }
            Err(_) => {
                drop((conn, rt));
                drop(place);
                return Err(self.timed_out());
            }
        };
        Ok((
            Box::new(PgUserLock {
                store: self,
                link: Some((Link { rt, conn }, place)),
                key,
            }),
            row,
        ))
    }
}
