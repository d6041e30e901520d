//! Who may hold a login-socket connection: root's pool, each user's cap,
//! the users' pool, and its fair sharing. When the users' pool is full, a
//! newcomer whose uid holds at least two connections fewer than the uid
//! holding the most takes the slot of that uid's idlest connection
//! (`take_slot`), so a few users holding connections cannot stop everyone
//! else's su, sudo or screen locker. The counts only; `socket.rs` accepts,
//! serves and closes.

use super::peer::Peer;
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Connections one non-root uid may hold at once (a user's screen locker
/// needs one at a time).
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// Connections all non-root uids together may hold.
pub const MAX_USER_CONNECTIONS: usize = 256;
/// Connections root (sshd, login, su, sudo) may hold: a pool of its own,
/// which no other uid's connections count against.
pub const MAX_ROOT_CONNECTIONS: usize = 512;

/// What a connection of the users' pool is doing, for the choice of which
/// one gives its slot up when the pool is full: its calls being worked on,
/// and when its last call started or ended (or it was accepted). A login
/// waiting at the code prompt is idle: its connection is held, not used.
pub struct Activity {
    busy: AtomicU32,
    since: Mutex<Instant>,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            busy: AtomicU32::new(0),
            since: Mutex::new(now),
        }
    }

    /// A call is being worked on until the guard is dropped.
    pub fn begin(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        *lock(&self.since) = crate::clock::monotonic();
        Busy(self)
    }

    /// How long it has been idle at `now`, or `None` while a call is worked on.
    fn idle(&self, now: Instant) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(now.saturating_duration_since(*lock(&self.since)))
    }
}

/// A call being worked on; see `Activity::begin`.
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *lock(&self.0.since) = crate::clock::monotonic();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection in the users' pool, as the pool's fairness sees it.
struct Held {
    uid: u32,
    activity: Arc<Activity>,
    /// A second descriptor of the connection's socket, to shut it down if
    /// its slot is taken (`None` in unit tests without a socket).
    socket: Option<UnixStream>,
}

/// Connections held, by uid.
#[derive(Default)]
pub(super) struct Counts {
    per_uid: HashMap<u32, usize>,
    users: usize,
    root: usize,
    /// The users' pool's connections, by a number of their own.
    held: HashMap<u64, Held>,
    next: u64,
}

impl Counts {
    fn of(&self, uid: u32) -> usize {
        self.per_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Count out a connection of the users' pool.
    fn release(&mut self, id: u64) -> Option<Held> {
        let held = self.held.remove(&id)?;
        self.users -= 1;
        if let Some(n) = self.per_uid.get_mut(&held.uid) {
            *n -= 1;
            if *n == 0 {
                self.per_uid.remove(&held.uid);
            }
        }
        Some(held)
    }
}

/// One counted connection; counted out on drop (unless its slot was taken
/// meanwhile, which counted it out then).
pub(super) struct Slot {
    counts: Arc<Mutex<Counts>>,
    /// `None` for root's pool; for the users', the connection's number.
    id: Option<u64>,
    pub(super) activity: Option<Arc<Activity>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        match self.id {
            None => c.root -= 1,
            Some(id) => drop(c.release(id)),
        }
    }
}

/// The pool a connection counts in: its uid's; for root's, the real uid of
/// the calling process when that is a user's (`su` or `sudo` started by
/// them), so that a user cannot fill root's pool by leaving `su` or `sudo`
/// sessions at the code prompt. sshd's logins are root's through and
/// through, and keep root's pool.
pub(super) fn pool_of(peer: Peer, invoker: Option<u32>) -> u32 {
    match peer.uid {
        0 => invoker.unwrap_or(0),
        uid => uid,
    }
}

/// A slot taken, and whose slot it was if the users' pool was full.
pub(super) struct Taken {
    pub(super) slot: Slot,
    /// The pool (uid) of the connection that was closed to make room.
    pub(super) evicted: Option<u32>,
}

/// A slot for a connection of `uid` (its socket: `socket`), or `None` when
/// its pool is full.
///
/// Root's pool and each uid's cap are hard. When the users' pool is full, a
/// newcomer still gets a slot if some uid holds at least two connections
/// more than the newcomer's uid does: the idlest connection (no call being
/// worked on, longest since its last call) of the uid holding the most is
/// closed and its slot given to the newcomer. So a user is refused only
/// when the pool is shared about evenly (a user holding none, only when
/// 256 uids hold one each), and a connection whose uid holds one or two
/// (a login at its prompt) is never closed for another uid's.
pub(super) fn take_slot(
    counts: &Arc<Mutex<Counts>>,
    uid: u32,
    socket: Option<UnixStream>,
    now: Instant,
) -> Option<Taken> {
    let mut c = lock(counts);
    let mut evicted = None;
    if uid == 0 {
        if c.root >= MAX_ROOT_CONNECTIONS {
            return None;
        }
        c.root += 1;
        return Some(Taken {
            slot: Slot {
                counts: counts.clone(),
                id: None,
                activity: None,
            },
            evicted,
        });
    }
    let mine = c.of(uid);
    if mine >= MAX_CONNECTIONS_PER_UID {
        return None;
    }
    if c.users >= MAX_USER_CONNECTIONS {
        let (most, _, id) = c
            .held
            .iter()
            .filter_map(|(&id, h)| Some((c.of(h.uid), h.activity.idle(now)?, id)))
            .max()?;
        if most < mine + 2 {
            return None;
        }
        let held = c.release(id)?;
        if let Some(socket) = &held.socket {
            // Its thread sees the end of the stream and lets the connection go.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        evicted = Some(held.uid);
    }
    let id = c.next;
    c.next += 1;
    let activity = Arc::new(Activity::new(now));
    c.held.insert(
        id,
        Held {
            uid,
            activity: activity.clone(),
            socket,
        },
    );
    c.users += 1;
    *c.per_uid.entry(uid).or_insert(0) += 1;
    Some(Taken {
        slot: Slot {
            counts: counts.clone(),
            id: Some(id),
            activity: Some(activity),
        },
        evicted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot without a socket, at one moment.
    fn take(counts: &Arc<Mutex<Counts>>, uid: u32) -> Option<Slot> {
        take_at(counts, uid, Instant::now())
    }

    fn take_at(counts: &Arc<Mutex<Counts>>, uid: u32, now: Instant) -> Option<Slot> {
        take_slot(counts, uid, None, now).map(|t| t.slot)
    }

    #[test]
    fn each_uid_has_its_cap_and_root_a_pool_of_its_own() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let mine: Vec<_> = (0..MAX_CONNECTIONS_PER_UID)
            .map(|_| take(&counts, 1000).unwrap())
            .collect();
        assert!(take(&counts, 1000).is_none());
        // Another user, and root, are not affected.
        let other = take(&counts, 1001).unwrap();
        let root: Vec<_> = (0..MAX_ROOT_CONNECTIONS)
            .map(|_| take(&counts, 0).unwrap())
            .collect();
        assert!(take(&counts, 0).is_none());
        drop(root);
        assert!(take(&counts, 0).is_some());
        // A slot given back is taken again.
        drop(mine);
        assert!(take(&counts, 1000).is_some());
        drop(other);
        let c = counts.lock().unwrap();
        assert_eq!(
            (c.users, c.root, c.per_uid.len(), c.held.len()),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn all_users_together_have_a_cap() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        // One each: shared evenly, so nobody's is taken for a newcomer.
        let held: Vec<_> = (0..MAX_USER_CONNECTIONS as u32)
            .map(|i| take(&counts, 2000 + i).unwrap())
            .collect();
        assert!(take(&counts, 5000).is_none());
        // Root's pool is its own.
        assert!(take(&counts, 0).is_some());
        drop(held);
        assert!(take(&counts, 5000).is_some());
    }

    #[test]
    fn roots_connection_counts_in_the_pool_of_the_user_who_ran_su() {
        // This process (the test runner) as the peer: its real uid.
        let me = Peer {
            uid: 0,
            pid: Some(std::process::id()),
        };
        // SAFETY: getuid has no preconditions.
        let real = unsafe { libc::getuid() };
        assert_eq!(pool_of(me, me.invoker()), real);
        let nobody = Peer { uid: 0, pid: None };
        assert_eq!(pool_of(nobody, nobody.invoker()), 0);
        let user = Peer {
            uid: 1000,
            pid: None,
        };
        assert_eq!(pool_of(user, user.invoker()), 1000);
    }

    /// `MAX_USER_CONNECTIONS` held by as few uids as the per-uid cap
    /// allows, starting at uid 3000, each slot with a socket whose other
    /// end is returned (it reads the end of the stream once the slot is
    /// taken for someone else).
    fn fill_the_users_pool(
        counts: &Arc<Mutex<Counts>>,
        now: Instant,
    ) -> Vec<(u32, Slot, UnixStream)> {
        (0..MAX_USER_CONNECTIONS)
            .map(|i| {
                let uid = 3000 + (i / MAX_CONNECTIONS_PER_UID) as u32;
                let (ours, theirs) = UnixStream::pair().unwrap();
                let slot = take_slot(counts, uid, Some(ours), now).unwrap().slot;
                (uid, slot, theirs)
            })
            .collect()
    }

    fn closed(s: &UnixStream) -> bool {
        use std::io::Read;
        s.set_nonblocking(true).unwrap();
        matches!((&*s).read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn a_full_users_pool_gives_a_newcomer_the_idlest_slot_of_the_uid_holding_the_most() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let t0 = Instant::now();
        let holders = fill_the_users_pool(&counts, t0);
        // Each holder's connections are as idle as each other, except that
        // one of uid 3005's was used (a call) later than the others, and
        // one of uid 3007's is being worked on right now.
        let later = t0 + Duration::from_secs(1);
        *lock(&holders[5 * 16].1.activity.as_ref().unwrap().since) = later;
        let working = holders[7 * 16 + 3].1.activity.as_ref().unwrap().begin();
        let now = t0 + Duration::from_secs(60);
        // A user holding none gets a slot: another user's connection was closed.
        let taken = take_slot(&counts, 4000, None, now).unwrap();
        let from = taken.evicted.unwrap();
        assert!((3000..3016).contains(&from), "{from}");
        let shut: Vec<usize> = holders
            .iter()
            .enumerate()
            .filter(|(_, (_, _, theirs))| closed(theirs))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(shut.len(), 1, "{shut:?}");
        assert_eq!(holders[shut[0]].0, from);
        {
            let c = lock(&counts);
            assert_eq!(c.users, MAX_USER_CONNECTIONS);
            assert_eq!(c.of(from), MAX_CONNECTIONS_PER_UID - 1);
            assert_eq!(c.of(4000), 1);
        }
        // The next newcomers take from the uids still holding the most
        // (16), never one that gave a slot up already, and never the
        // connection being worked on or the one used lately while another
        // of the same uid is idler.
        let mut newcomers = vec![taken.slot];
        for i in 1..15u32 {
            let t = take_slot(&counts, 4000 + i, None, now).unwrap();
            assert_ne!(t.evicted, Some(from));
            newcomers.push(t.slot);
        }
        assert!(!closed(&holders[5 * 16].2), "the connection used lately");
        assert!(!closed(&holders[7 * 16 + 3].2), "the connection at work");
        // 15 uids gave one up; the 16th still holds 16 and gives one to the next.
        let t = take_slot(&counts, 4100, None, now).unwrap();
        assert!(t.evicted.is_some());
        newcomers.push(t.slot);
        // Now every holder has 15.
        let c = lock(&counts);
        assert!((3000..3016).all(|u| c.of(u) == 15));
        drop(c);
        drop(working);
        // A holder cannot take its slot back: the others hold only one more.
        assert!(take_slot(&counts, from, None, now).is_none());
        // When a holder closes one of its own, its slot is simply free.
        let users = lock(&counts).users;
        drop(newcomers.pop());
        assert_eq!(lock(&counts).users, users - 1);
        assert!(
            take_slot(&counts, from, None, now)
                .unwrap()
                .evicted
                .is_none()
        );
        drop(holders);
        drop(newcomers);
        let c = lock(&counts);
        assert_eq!((c.users, c.per_uid.len(), c.held.len()), (0, 0, 0));
    }

    #[test]
    fn a_login_at_its_prompt_is_never_closed_for_another_uids() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let now = Instant::now();
        // 254 uids hold one each, one uid holds two (a login at its prompt
        // and another): however idle, a newcomer takes neither uid's last
        // ones, and a newcomer holding none takes only from the uid of two.
        let mut held: Vec<(Slot, UnixStream)> = (0..MAX_USER_CONNECTIONS - 2)
            .map(|i| {
                let (ours, theirs) = UnixStream::pair().unwrap();
                let slot = take_slot(&counts, 6000 + i as u32, Some(ours), now);
                (slot.unwrap().slot, theirs)
            })
            .collect();
        for _ in 0..2 {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let slot = take_slot(&counts, 7000, Some(ours), now).unwrap().slot;
            held.push((slot, theirs));
        }
        let later = now + Duration::from_secs(3600);
        assert!(take_slot(&counts, 6000, None, later).is_none());
        let t = take_slot(&counts, 8000, None, later).unwrap();
        assert_eq!(t.evicted, Some(7000));
        assert_eq!(held.iter().filter(|(_, s)| closed(s)).count(), 1);
        // Now everyone holds one: the pool is shared, the next is refused.
        assert!(take_slot(&counts, 8001, None, later).is_none());
        assert!(take_slot(&counts, 7000, None, later).is_none());
    }
}
