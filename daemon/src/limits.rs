//! What one caller may cost the daemon. Root (the PAM stacks of sshd, login,
//! su, sudo) is never limited here: its logins are what the limits protect.
//! Every other uid gets a few calls in flight and a steady rate, whatever
//! number of connections it opens, and every argument has a size bound, so a
//! flood from one local user cannot starve the logins of others.

use crate::audit::{self, Level};
use crate::bucket::Bucket;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use twofold_protocol::TwofoldError;

/// Calls of one non-root uid being worked on at once.
pub const MAX_IN_FLIGHT_PER_UID: u32 = 4;
/// Calls one non-root uid may make at once after a pause...
pub const BURST_PER_UID: u32 = 20;
/// ...and then one per this many milliseconds (10 a second).
pub const INTERVAL_MS_PER_UID: u64 = 100;
/// The rate of one non-root uid, in milliseconds.
const RATE: Bucket = Bucket {
    burst: BURST_PER_UID as u64,
    interval: INTERVAL_MS_PER_UID,
};
/// Bytes of one string argument (user and service names, codes, host
/// names, a policy path: PATH_MAX).
pub const MAX_ARG_BYTES: usize = 4096;
/// Bytes of a call's body: the largest real one (`EmailEnrollAtLogin`, four
/// strings of at most `MAX_ARG_BYTES`) fits with room to spare. A larger
/// call is refused before twofoldd asks the bus who sent it, so it is held
/// only while it is read and turned away.
pub const MAX_BODY_BYTES: u32 = 32 * 1024;
/// Uids remembered at once; idle ones are dropped first.
const MAX_TRACKED_UIDS: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct Caller {
    in_flight: u32,
    /// When the rate bucket is full again, in ms (GCRA).
    tat_ms: u64,
    /// When a refusal was last logged (one line a minute per uid at most).
    logged_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Limits {
    callers: Mutex<HashMap<u32, Caller>>,
}

/// One admitted call; the slot is given back when it is dropped.
#[derive(Debug)]
pub struct Permit {
    limits: Option<(Arc<Limits>, u32)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((limits, uid)) = self.limits.take()
            && let Some(c) = limits.callers().get_mut(&uid)
        {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

fn busy() -> TwofoldError {
    TwofoldError::Busy(
        "Too many requests from your account at once. Wait a moment and try again.".into(),
    )
}

impl Limits {
    fn callers(&self) -> MutexGuard<'_, HashMap<u32, Caller>> {
        // A poisoned lock only means a panic elsewhere; the counts stay usable.
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a call from `uid` at `now_ms`, or refuse it at once.
    pub fn admit(self: &Arc<Self>, uid: u32, now_ms: u64) -> Result<Permit, TwofoldError> {
        if uid == 0 {
            return Ok(Permit { limits: None });
        }
        let mut callers = self.callers();
        if callers.len() >= MAX_TRACKED_UIDS && !callers.contains_key(&uid) {
            callers.retain(|_, c| c.in_flight > 0 || c.tat_ms > now_ms);
            if callers.len() >= MAX_TRACKED_UIDS {
                return Err(busy());
            }
        }
        let c = callers.entry(uid).or_default();
        if c.in_flight >= MAX_IN_FLIGHT_PER_UID || RATE.wait(c.tat_ms, now_ms) > 0 {
            if c.logged_ms.is_none_or(|t| now_ms >= t + 60_000) {
                c.logged_ms = Some(now_ms);
                audit::log(
                    Level::Warning,
                    &format!(
                        "caller-limited caller_uid={uid} (too many calls at once or too fast)"
                    ),
                );
            }
            return Err(busy());
        }
        c.tat_ms = RATE.spend(c.tat_ms, now_ms);
        c.in_flight += 1;
        Ok(Permit {
            limits: Some((self.clone(), uid)),
        })
    }
}

/// Refuse a call whose body is over `MAX_BODY_BYTES`, or that carries file
/// descriptors (no method takes one), before anything else is done with it.
pub fn message_fits(body_bytes: u32, unix_fds: u32) -> Result<(), TwofoldError> {
    if unix_fds > 0 {
        return Err(TwofoldError::InvalidInput(
            "No twofold method takes file descriptors.".into(),
        ));
    }
    if body_bytes > MAX_BODY_BYTES {
        return Err(TwofoldError::InvalidInput(format!(
            "The call is too large ({body_bytes} bytes; at most {MAX_BODY_BYTES})."
        )));
    }
    Ok(())
}

/// Refuse any string argument longer than `MAX_ARG_BYTES`, before any work.
pub fn small(args: &[(&str, &str)]) -> Result<(), TwofoldError> {
    match args.iter().find(|(_, value)| value.len() > MAX_ARG_BYTES) {
        Some((what, value)) => Err(TwofoldError::InvalidInput(format!(
            "The {what} is too long ({} bytes; at most {MAX_ARG_BYTES}).",
            value.len()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_never_limited() {
        let l = Arc::new(Limits::default());
        let permits: Vec<_> = (0..1000).map(|_| l.admit(0, 5).unwrap()).collect();
        assert_eq!(permits.len(), 1000);
        assert!(l.callers().is_empty());
    }

    #[test]
    fn a_uid_gets_a_few_calls_in_flight() {
        let l = Arc::new(Limits::default());
        let held: Vec<_> = (0..MAX_IN_FLIGHT_PER_UID)
            .map(|_| l.admit(1000, 0).unwrap())
            .collect();
        assert!(matches!(l.admit(1000, 0), Err(TwofoldError::Busy(_))));
        // Another uid is not affected.
        assert!(l.admit(1001, 0).is_ok());
        drop(held);
        assert!(l.admit(1000, 0).is_ok());
    }

    #[test]
    fn a_uid_gets_a_burst_then_a_steady_rate() {
        let l = Arc::new(Limits::default());
        for n in 0..BURST_PER_UID {
            assert!(l.admit(1000, 1_000).is_ok(), "call {n}");
        }
        assert!(l.admit(1000, 1_000).is_err());
        assert!(l.admit(1000, 1_000 + INTERVAL_MS_PER_UID - 1).is_err());
        assert!(l.admit(1000, 1_000 + INTERVAL_MS_PER_UID).is_ok());
        // Over ten seconds of asking without pause: the burst, then 10 a second.
        let l = Arc::new(Limits::default());
        let admitted = (0..10_000u64)
            .filter(|ms| l.admit(1000, 50_000 + ms).is_ok())
            .count() as u64;
        assert_eq!(
            admitted,
            u64::from(BURST_PER_UID) + 10_000 / INTERVAL_MS_PER_UID - 1
        );
    }

    #[test]
    fn the_table_of_uids_stays_bounded() {
        let l = Arc::new(Limits::default());
        for uid in 1..=(MAX_TRACKED_UIDS as u32 * 2) {
            // Each uid's bucket is full again a second later: idle by then.
            let _ = l.admit(uid, u64::from(uid) * 10_000);
        }
        assert!(l.callers().len() <= MAX_TRACKED_UIDS);
    }

    #[test]
    fn large_calls_and_calls_with_descriptors_are_refused() {
        assert!(message_fits(0, 0).is_ok());
        assert!(message_fits(MAX_BODY_BYTES, 0).is_ok());
        let e = message_fits(MAX_BODY_BYTES + 1, 0).unwrap_err();
        assert!(
            matches!(&e, TwofoldError::InvalidInput(m) if m.contains("too large (32769 bytes")),
            "{e:?}"
        );
        assert!(matches!(
            message_fits(30_000_000, 0),
            Err(TwofoldError::InvalidInput(_))
        ));
        assert!(matches!(
            message_fits(16, 1),
            Err(TwofoldError::InvalidInput(m)) if m.contains("file descriptors")
        ));
        // The largest real call fits: four arguments at their bound, each a
        // 4-byte length, its bytes and a NUL, aligned to 4.
        let largest = 4 * (4 + MAX_ARG_BYTES as u32 + 1 + 3);
        assert!(message_fits(largest, 0).is_ok());
    }

    #[test]
    fn long_arguments_are_refused_with_their_size() {
        assert!(small(&[("user name", "alice"), ("code", "123456")]).is_ok());
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        let e = small(&[("host name", &long)]).unwrap_err();
        assert!(
            matches!(&e, TwofoldError::InvalidInput(m) if m.contains("host name is too long (4097 bytes")),
            "{e:?}"
        );
    }
}
