//! E-mailed codes in flight, shared by the fleet (`CodeStore`): one row per
//! user in `twofold_email_code`. A code sent by one host works once on any
//! host: each check is a transaction that locks the user's row, so two
//! hosts checking the same code at once get one match. The code is kept as
//! a keyed hash under the fleet key (`FleetKey::tag`), never in clear, and
//! the purpose (an enrollment's address) is sealed. Expiry, the attempts
//! limit and the send rationing are the same as in memory.

use super::PgStore;
use super::connect::{db, pg};
use crate::email_codes::{
    CodeStore, EmailCheck, MAX_CODE_ATTEMPTS, Purpose, SendLimits, wait_after,
};
use crate::store::StoreError;
use std::collections::VecDeque;

/// The sealing and hashing labels.
const CODE: &str = "email-code";
const PURPOSE: &str = "email-purpose";

fn kind(purpose: &Purpose) -> i16 {
    match purpose {
        Purpose::Login => 0,
        Purpose::Enroll { .. } => 1,
    }
}

impl CodeStore for PgStore {
    fn put(
        &self,
        user: &str,
        code: &str,
        purpose: &Purpose,
        expires_at: u64,
        now: u64,
        limits: SendLimits,
    ) -> Result<Result<(), u64>, StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let tag = self.key.tag(user, CODE, code.as_bytes());
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(purpose).map_err(db)?);
        let sealed = self.key.seal(user, PURPOSE, &plain);
        let kind = kind(purpose);
        self.run(|mut c| async move {
            let r = async {
                let tx = c.transaction().await.map_err(|e| pg(&e))?;
                // Rows that hold nothing any more (the code expired and
                // every send is over an hour old), a few per send, so the
                // table does not keep every user who ever got a code.
                tx.execute(
                    "DELETE FROM twofold_email_code WHERE user_name IN (\
                     SELECT user_name FROM twofold_email_code \
                     WHERE user_name <> $1 AND expires_at <= $2 \
                     AND coalesce(sends[cardinality(sends)], 0) <= $2 - 3600 \
                     LIMIT 16 FOR UPDATE SKIP LOCKED)",
                    &[&name, &(now as i64)],
                )
                .await
                .map_err(|e| pg(&e))?;
                tx.execute(
                    "INSERT INTO twofold_email_code (user_name) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&name],
                )
                .await
                .map_err(|e| pg(&e))?;
                let row = tx
                    .query_one(
                        "SELECT sends FROM twofold_email_code WHERE user_name = $1 FOR UPDATE",
                        &[&name],
                    )
                    .await
                    .map_err(|e| pg(&e))?;
                let mut times: VecDeque<u64> = row
                    .get::<_, Vec<i64>>(0)
                    .into_iter()
                    .map(|t| t as u64)
                    .collect();
                let wait = wait_after(&mut times, limits, now);
                if wait > 0 {
                    // Ended here, so the row's lock is released before the
                    // answer (a dropped transaction's ROLLBACK would wait
                    // for this connection's next use, `pool.rs`).
                    tx.rollback().await.map_err(|e| pg(&e))?;
                    return Ok(Err(wait));
                }
                times.push_back(now);
                let sends: Vec<i64> = times.iter().map(|&t| t as i64).collect();
                tx.execute(
                    "UPDATE twofold_email_code SET code = $2, kind = $3, purpose = $4, \
                     expires_at = $5, attempts = 0, sends = $6 WHERE user_name = $1",
                    &[&name, &tag, &kind, &sealed, &(expires_at as i64), &sends],
                )
                .await
                .map_err(|e| pg(&e))?;
                tx.commit().await.map_err(|e| pg(&e))?;
                Ok(Ok(()))
            }
            .await;
            (c, r)
        })
    }

    fn void(&self, user: &str, code: &str) -> Result<(), StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let tag = self.key.tag(user, CODE, code.as_bytes());
        self.run(|c| async move {
            let r = c
                .execute(
                    "UPDATE twofold_email_code SET code = NULL, purpose = NULL \
                     WHERE user_name = $1 AND code = $2",
                    &[&name, &tag],
                )
                .await
                .map_err(|e| pg(&e));
            (c, r)
        })
        .map(|_| ())
    }

    fn check(
        &self,
        user: &str,
        purpose: &Purpose,
        typed: &str,
        now: u64,
    ) -> Result<(EmailCheck, Option<Purpose>), StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let asked = kind(purpose);
        let key = &self.key;
        let sealed_purpose = self.run(|mut c| async move {
            let r = async {
                let tx = c.transaction().await.map_err(|e| pg(&e))?;
                let Some(row) = tx
                    .query_opt(
                        "SELECT code, kind, purpose, expires_at, attempts FROM twofold_email_code \
                         WHERE user_name = $1 AND code IS NOT NULL FOR UPDATE",
                        &[&name],
                    )
                    .await
                    .map_err(|e| pg(&e))?
                else {
                    // Still ended: a row that stopped matching while this
                    // waited for its lock stays locked by this transaction.
                    tx.rollback().await.map_err(|e| pg(&e))?;
                    return Ok((EmailCheck::None, None));
                };
                if row.get::<_, i16>(1) != asked {
                    tx.rollback().await.map_err(|e| pg(&e))?;
                    return Ok((EmailCheck::None, None));
                }
                let tag: Vec<u8> = row.get(0);
                let expired = row.get::<_, i64>(3) as u64 <= now;
                let matched = !expired && key.tag_matches(&name, CODE, typed.as_bytes(), &tag);
                let attempts = row.get::<_, i32>(4).saturating_add(1);
                let spent = expired || matched || attempts as u32 >= MAX_CODE_ATTEMPTS;
                let sql = if spent {
                    "UPDATE twofold_email_code SET code = NULL, purpose = NULL, attempts = $2 \
                     WHERE user_name = $1"
                } else {
                    "UPDATE twofold_email_code SET attempts = $2 WHERE user_name = $1"
                };
                tx.execute(sql, &[&name, &attempts])
                    .await
                    .map_err(|e| pg(&e))?;
                tx.commit().await.map_err(|e| pg(&e))?;
                Ok(match (expired, matched) {
                    (true, _) => (EmailCheck::None, None),
                    (false, true) => (EmailCheck::Match, row.get::<_, Option<Vec<u8>>>(2)),
                    (false, false) => (EmailCheck::NoMatch, None),
                })
            }
            .await;
            (c, r)
        })?;
        let (check, sealed) = sealed_purpose;
        let spent = match sealed {
            None => None,
            Some(v) => {
                let plain = self
                    .key
                    .open(user, PURPOSE, &v)
                    .map_err(|e| StoreError::Sealed {
                        user: user.to_string(),
                        field: "email code's purpose",
                        reason: e.to_string(),
                    })?;
                Some(
                    serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt {
                        path: format!("twofold_email_code/{user}").into(),
                        reason: e.to_string(),
                    })?,
                )
            }
        };
        Ok((check, spent))
    }

    fn has_login_code(&self, user: &str, now: u64) -> Result<bool, StoreError> {
        twofold_protocol::user::validate(user)?;
        let name = user.to_string();
        let now = now as i64;
        self.run(|c| async move {
            let r = c
                .query_opt(
                    "SELECT 1 FROM twofold_email_code WHERE user_name = $1 AND code IS NOT NULL \
                     AND kind = 0 AND expires_at > $2",
                    &[&name, &now],
                )
                .await
                .map(|row| row.is_some())
                .map_err(|e| pg(&e));
            (c, r)
        })
    }
}
