//! The login socket: peer-to-peer D-Bus connections from the PAM module
//! (and anyone local), without the bus daemon in between, as `systemctl`
//! talks to PID 1 over `/run/systemd/private`. The caller's uid and pid
//! come from the kernel at accept (`SO_PEERCRED`), the same word the bus
//! daemon itself relies on; the interface and its authorization are the
//! bus's (`Service`).
//!
//! What one local user can cost here is bounded: connections per uid and in
//! total (root's logins have a pool of their own, so a user holding
//! connections never stops them), a deadline for the handshake, and the
//! size of each message (`frame.rs`); calls then meet the same per-uid
//! limits as on the bus (`limits.rs`). The users' pool is shared fairly:
//! when it is full, a newcomer whose uid holds fewer connections than
//! another uid takes the slot of that uid's idlest one (`take_slot`), so a
//! few users holding connections cannot stop everyone else's su, sudo or
//! screen locker.
//!
//! Each connection is served by a thread of its own (a worker, see
//! `serve`), which also runs its calls' work: a login crosses no thread
//! inside twofoldd, and one slow NSS lookup or Argon2 check holds only its
//! own connection.

use super::frame::Framed;
use super::peer::Peer;
use super::{Service, Shared};
use crate::audit::{self, Level};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A connection's authentication, from accept to `BEGIN` (a module does it
/// in well under a millisecond); a silent or slow peer is dropped.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
/// Connections one non-root uid may hold at once (a user's screen locker
/// needs one at a time).
pub const MAX_CONNECTIONS_PER_UID: usize = 16;
/// Connections all non-root uids together may hold.
pub const MAX_USER_CONNECTIONS: usize = 256;
/// Connections root (sshd, login, su, sudo) may hold: a pool of its own,
/// which no other uid's connections count against.
pub const MAX_ROOT_CONNECTIONS: usize = 512;
/// How often a refused (or evicted) connection is logged at most, in ms.
const REFUSED_LOG_EVERY_MS: u64 = 60_000;

/// The listening socket systemd's socket unit handed over (`sd_listen_fds`:
/// activation on the first login), if any. The variables are removed, so
/// nothing started later takes them. Call before starting any thread.
pub fn from_systemd() -> Option<UnixListener> {
    let pid = std::env::var("LISTEN_PID").ok()?;
    let fds = std::env::var("LISTEN_FDS").ok()?;
    // SAFETY: removing variables while no other thread reads the
    // environment (called at start, before the runtime's threads).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid.parse::<u32>().ok()? != std::process::id() || fds.parse::<u32>().ok()? < 1 {
        return None;
    }
    const SD_LISTEN_FDS_START: i32 = 3;
    // Only a listening unix stream socket will do: anything else at fd 3
    // would have the accept loop fail for good.
    if !is_listening_unix_stream(SD_LISTEN_FDS_START) {
        audit::log(
            Level::Warning,
            "LISTEN_FDS names no listening unix stream socket at fd 3; binding login_socket instead",
        );
        return None;
    }
    // SAFETY: systemd passed fd 3 to this process as its listening socket
    // (LISTEN_PID is ours, and it is one); nothing else in the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    set_cloexec(&fd);
    Some(UnixListener::from(fd))
}

fn is_listening_unix_stream(fd: i32) -> bool {
    let option = |name: libc::c_int| -> Option<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writing, `len` its size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value)
    };
    option(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && option(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && option(libc::SO_ACCEPTCONN) == Some(1)
}

fn set_cloexec(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor this process owns; no pointers.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// The login socket bound at `path` (its directory made
/// root's and 0755 if missing, and refused if anyone else could write to
/// it; a stale socket from an earlier run is replaced). The socket is
/// 0666: every local caller (a user's screen locker too) may connect, and
/// twofoldd decides by the caller's uid what it may do.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no directory"))?;
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must be owned by uid {euid} and writable by nobody else",
                dir.display()
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The kernel's word for the peer of `stream`.
fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writing, and `len` is the size of `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        uid: cred.uid,
        pid: u32::try_from(cred.pid).ok().filter(|&p| p > 0),
    })
}

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
struct Counts {
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
struct Slot {
    counts: Arc<Mutex<Counts>>,
    /// `None` for root's pool; for the users', the connection's number.
    id: Option<u64>,
    activity: Option<Arc<Activity>>,
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
fn pool_of(peer: Peer, invoker: Option<u32>) -> u32 {
    match peer.uid {
        0 => invoker.unwrap_or(0),
        uid => uid,
    }
}

/// A slot taken, and whose slot it was if the users' pool was full.
struct Taken {
    slot: Slot,
    /// The pool (uid) of the connection that was closed to make room.
    evicted: Option<u32>,
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
fn take_slot(
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

/// Threads that may serve login-socket connections at once: one per
/// connection the caps allow, and one more to accept (and refuse) while
/// they are all held.
pub const MAX_WORKERS: usize = MAX_ROOT_CONNECTIONS + MAX_USER_CONNECTIONS + 1;
/// How long a worker waits in `accept` for a connection before it ends, if
/// another one is waiting too (one always stays).
const WORKER_IDLE: Duration = Duration::from_secs(10);

/// What the workers share: the listener, the service, the caps.
struct Workers {
    listener: UnixListener,
    shared: Arc<Shared>,
    guid: zbus::OwnedGuid,
    counts: Arc<Mutex<Counts>>,
    refused_logged_ms: AtomicU64,
    evicted_logged_ms: AtomicU64,
    /// Threads, and how many of them wait in `accept` (or are starting to).
    threads: Mutex<(usize, usize)>,
}

/// Serve the login socket until the process ends: each connection on a
/// thread of its own (a worker), which accepts it, runs its handshake and
/// its calls' work (NSS, the disk, hashing) itself, and then waits in
/// `accept` for the next. A login thus crosses no thread inside twofoldd,
/// and a slow lookup or hash holds only its own connection. A worker takes
/// a connection only once another waits in `accept` (started if need be),
/// so one is always there for the next caller, up to `MAX_WORKERS`.
pub fn serve(listener: UnixListener, shared: Arc<Shared>) -> io::Result<()> {
    listener.set_nonblocking(false)?;
    set_accept_timeout(&listener, WORKER_IDLE)?;
    let workers = Arc::new(Workers {
        listener,
        shared,
        guid: zbus::Guid::generate().into(),
        counts: Arc::default(),
        refused_logged_ms: AtomicU64::new(0),
        evicted_logged_ms: AtomicU64::new(0),
        threads: Mutex::new((1, 1)),
    });
    start_worker(workers).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start the login socket's worker: {e}"),
        )
    })
}

fn start_worker(workers: Arc<Workers>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("login socket".into())
        .spawn(move || worker(&workers))
        .map(drop)
}

/// An `accept` on `listener` that gives up after `idle` (`SO_RCVTIMEO`,
/// which Linux applies to `accept`), so that idle workers can end.
fn set_accept_timeout(listener: &UnixListener, idle: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: idle.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads `tv`, whose size is passed, on a socket this process owns.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn threads(workers: &Workers) -> MutexGuard<'_, (usize, usize)> {
    workers.threads.lock().unwrap_or_else(|p| p.into_inner())
}

/// One worker: accept, serve, again; it ends after `WORKER_IDLE` without a
/// connection if another worker waits in `accept`.
fn worker(workers: &Arc<Workers>) {
    // This thread's runtime, kept from one connection to the next (its
    // epoll, timer and wake-up pipe are made once).
    let mut runtime: Option<zruntime::SharedRuntime> = None;
    loop {
        let stream = match workers.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let mut t = threads(workers);
                if t.1 > 1 {
                    t.0 -= 1;
                    t.1 -= 1;
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors or memory: wait a moment rather than spin.
                audit::log(Level::Error, &format!("login socket: accept failed: {e}"));
                crate::clock::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Leave another worker in `accept` before serving this connection.
        let start = {
            let mut t = threads(workers);
            t.1 -= 1;
            let start = t.1 == 0 && t.0 < MAX_WORKERS;
            if start {
                t.0 += 1;
                t.1 += 1;
            }
            start
        };
        if start && let Err(e) = start_worker(workers.clone()) {
            let mut t = threads(workers);
            t.0 -= 1;
            t.1 -= 1;
            drop(t);
            audit::log(
                Level::Error,
                &format!("login socket: cannot start a worker: {e}"),
            );
        }
        // A panic in a connection's code must not take its worker, and the
        // count of workers with it, away: the connection is dropped (its
        // slot given back) and the worker waits for the next, on a new runtime.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            accepted(workers, stream, &mut runtime);
        }));
        if served.is_err() {
            runtime = None;
            audit::log(
                Level::Error,
                "login socket: serving a connection panicked; it was closed",
            );
        }
        threads(workers).1 += 1;
    }
}

/// Log `line` unless a line was logged at `last` less than a minute ago.
fn log_once_a_minute(last: &AtomicU64, line: impl FnOnce() -> String) {
    let now = crate::now_ms();
    let then = last.load(Ordering::Relaxed);
    if now >= then + REFUSED_LOG_EVERY_MS
        && last
            .compare_exchange(then, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        audit::log(Level::Warning, &line());
    }
}

/// A connection just accepted: counted in its pool (or refused), then
/// served on this thread until its peer closes it.
fn accepted(workers: &Workers, stream: UnixStream, runtime: &mut Option<zruntime::SharedRuntime>) {
    let Ok(peer) = peer_of(&stream) else { return };
    let invoker = peer.invoker();
    let pool = pool_of(peer, invoker);
    // The users' pool keeps a second descriptor of each connection, to
    // close it should its slot go to another uid.
    let second = match pool {
        0 => None,
        _ => match stream.try_clone() {
            Ok(second) => Some(second),
            Err(_) => return,
        },
    };
    let Some(taken) = take_slot(&workers.counts, pool, second, crate::clock::monotonic()) else {
        log_once_a_minute(&workers.refused_logged_ms, || {
            format!(
                "login-socket-full caller_uid={} pool_uid={pool} (too many connections held; refusing new ones)",
                peer.uid
            )
        });
        return;
    };
    if let Some(from) = taken.evicted {
        log_once_a_minute(&workers.evicted_logged_ms, || {
            format!(
                "login-socket-shared caller_uid={} pool_uid={pool} closed_pool_uid={from} (the users' connections are all taken; closed the idlest of the uid holding the most)",
                peer.uid
            )
        });
    }
    let slot = taken.slot;
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    zruntime::block_on(async {
        let on = match runtime {
            Some(on) => on.clone(),
            None => match zruntime::SharedRuntime::current() {
                Ok(on) => runtime.insert(on).clone(),
                Err(_) => return,
            },
        };
        let Ok(io) = zruntime::AsyncIo::new_nonblocking(&on, stream) else {
            return;
        };
        let activity = slot.activity.clone();
        let _slot = slot;
        connection(io, peer, invoker, activity, workers, &on).await;
    });
}

/// One connection: the handshake within its deadline, then served until
/// the peer closes it.
async fn connection(
    io: zruntime::AsyncIo<UnixStream, zruntime::Shared>,
    peer: Peer,
    invoker: Option<u32>,
    activity: Option<Arc<Activity>>,
    workers: &Workers,
    runtime: &zruntime::SharedRuntime,
) {
    let shared = &workers.shared;
    let framed = Framed::new(io, peer);
    let closed = framed.closed();
    let service = Service::on_socket(shared.clone(), peer, invoker, activity);
    let build = zbus::connection::Builder::socket(framed)
        .server(workers.guid.clone())
        .p2p()
        .serve_at(twofold_protocol::OBJECT_PATH, service)
        .build();
    let conn = match runtime.timeout(HANDSHAKE_DEADLINE, build).await {
        Ok(Ok(conn)) => conn,
        // A silent peer, a failed authentication, or one gone: nothing to serve.
        _ => {
            if closed.oversized() {
                shared.log_oversized();
            }
            return;
        }
    };
    closed.wait().await;
    if closed.oversized() {
        shared.log_oversized();
    }
    drop(conn);
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
