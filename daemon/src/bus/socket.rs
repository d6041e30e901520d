//! The login socket: peer-to-peer D-Bus connections from the PAM module
//! (and anyone local), without the bus daemon in between, as `systemctl`
//! talks to PID 1 over `/run/systemd/private`. The caller's uid and pid
//! come from the kernel at accept (`SO_PEERCRED`), the same word the bus
//! daemon itself relies on; the login methods and their authorization are
//! the bus's (`Service::call_here`), served by a small blocking loop on the
//! connection's worker (`connection`, `frame.rs`) rather than a zbus
//! connection, whose per-connection machinery cost about half as much CPU
//! as a login's own work. Only the login methods and `Peer.Ping` are
//! served; anything else is `UnknownMethod` (it is on the system bus).
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

use super::frame::{Conn, End};
use super::peer::Peer;
use super::pool::{Counts, MAX_ROOT_CONNECTIONS, MAX_USER_CONNECTIONS, pool_of, take_slot};
use super::{Service, Shared};
use crate::audit::{self, Level};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A connection's authentication, from accept to `BEGIN` (a module does it
/// in well under a millisecond); a silent or slow peer is dropped.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(2);
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
    guid: String,
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
        guid: zbus::Guid::generate().to_string(),
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
        // slot given back) and the worker waits for the next.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            accepted(workers, stream);
        }));
        if served.is_err() {
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
fn accepted(workers: &Workers, stream: UnixStream) {
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
    let service = Service::on_socket(workers.shared.clone(), peer, invoker, slot.activity.clone());
    let end = connection(Conn::new(stream), peer, &service, &workers.guid);
    if matches!(end, End::Oversized) {
        workers.shared.log_oversized();
    }
    drop(slot);
}

/// One connection: the handshake within its deadline, then its calls, one
/// at a time, each answered before the next is read, until the peer closes
/// it (or its slot goes to another uid: `take_slot` shuts it down, which
/// ends the read waiting here).
fn connection(mut conn: Conn, peer: Peer, service: &Service, guid: &str) -> End {
    let deadline = crate::clock::monotonic() + HANDSHAKE_DEADLINE;
    if let Err(end) = conn.handshake(peer.uid, guid, deadline) {
        return end;
    }
    loop {
        let msg = match conn.message() {
            Ok(msg) => msg,
            Err(end) => return end,
        };
        let header = msg.header();
        // Only calls are answered; anything else a client sends is dropped.
        if header.message_type() != zbus::message::Type::MethodCall {
            continue;
        }
        let reply = service.call_here(&msg).unwrap_or_else(|| {
            let member = header.member().map(|m| m.as_str()).unwrap_or_default();
            zbus::DBusError::create_reply(
                &zbus::fdo::Error::UnknownMethod(format!(
                    "Unknown method '{member}': the login socket serves only the login methods; use the system bus"
                )),
                &header,
            )
        });
        if header
            .primary()
            .flags()
            .contains(zbus::message::Flags::NO_REPLY_EXPECTED)
        {
            continue;
        }
        let sent = match reply {
            Ok(reply) => conn.reply(&reply),
            Err(_) => Err(End::Broken),
        };
        if let Err(end) = sent {
            return end;
        }
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
