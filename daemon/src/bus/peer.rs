//! Who is calling: the transport's word for the caller's uid and process,
//! never the caller's. On the system bus the bus daemon is asked about each
//! new sender (a round trip, remembered for the sender's lifetime); on the
//! login socket the kernel said it once, at `accept` (`SO_PEERCRED`).
//!
//! Each transport also remembers the account a login's `BeginLogin`
//! resolved, so that its `Verify` of the same user name needs no second
//! round of NSS lookups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use twofold_protocol::TwofoldError;
use zbus::fdo;
use zbus::message::Header;

/// Senders whose uid is remembered; the table is emptied when full.
const MAX_CACHED_SENDERS: usize = 4096;
/// Calls of one connection that may wait for the bus to say who sent them;
/// more are refused at once. Before that answer nobody knows the caller's
/// uid, so this, `MAX_BODY_BYTES` and the bus's own cap on one uid's
/// connections (256 on the system bus) bound what an unknown caller holds.
const MAX_WAITING_PER_SENDER: u32 = 4;
/// Credentials lookups in flight at once: well under the bus's cap on one
/// connection's pending calls (128 on the system bus), so a flood of new
/// senders makes root's lookup wait its turn instead of being refused.
const MAX_LOOKUPS: usize = 32;
/// The bus's answer about a caller, including the wait for a turn...
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(10);
/// ...asked again after this long without one (it answers in well under a
/// millisecond; a bus that dropped the answer never sends it).
const LOOKUP_TRY: Duration = Duration::from_secs(1);
/// A login's `Verify` reuses its `BeginLogin`'s account for this long (sshd's
/// `LoginGraceTime` is 2 minutes by default); a later `Verify` asks NSS
/// again, so an account removed meanwhile is not verified long after.
const RESOLVED_FOR: Duration = Duration::from_secs(120);

/// A caller as the kernel knows it (directly, or through the bus daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: Option<u32>,
}

impl Peer {
    /// For root's calls: the real uid of the calling process, read from
    /// /proc, which for the PAM stack of su or sudo is the user who typed the
    /// command. It only picks which count a wrong code goes to (never what
    /// the caller may do), so the one race (the process gone and its pid
    /// reused before this read) can at worst file a code under another
    /// local count, which the account-wide ceiling still rations.
    pub fn invoker(self) -> Option<u32> {
        if self.uid != 0 {
            return None;
        }
        // The `Uid:` line is the ninth, well within the first KiB: one read
        // into a buffer (std's reads of a whole file start with a 32-byte
        // probe and grow, eight system calls for this file).
        let mut file = std::fs::File::open(format!("/proc/{}/status", self.pid?)).ok()?;
        let mut head = [0u8; 1024];
        let mut len = 0;
        while len < head.len() {
            match std::io::Read::read(&mut file, &mut head[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        real_uid(&head[..len])
    }
}

/// The real uid in the text of a `/proc/PID/status` (its `Uid:` line's first field).
fn real_uid(status: &[u8]) -> Option<u32> {
    std::str::from_utf8(
        status
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(b"Uid:"))?,
    )
    .ok()?
    .strip_prefix("Uid:")?
    .split_whitespace()
    .next()?
    .parse()
    .ok()
}

/// A `BeginLogin`'s user name, the account name it resolved to, and when.
pub struct Resolved {
    pub user: String,
    pub account: String,
    pub at: Instant,
}

impl Resolved {
    fn account_for(&self, user: &str) -> Option<String> {
        (self.user == user && self.at.elapsed() < RESOLVED_FOR).then(|| self.account.clone())
    }
}

/// Where a call came from.
pub enum Caller {
    /// The system bus: many senders on one connection, asked about.
    Bus(BusCallers),
    /// One peer on its own connection to the login socket.
    Socket(SocketPeer),
}

impl Caller {
    /// The caller's uid and process, as the transport knows them (the bus
    /// within `deadline`: `LOOKUP_DEADLINE`).
    pub async fn peer(
        &self,
        header: &Header<'_>,
        runtime: &zruntime::SharedRuntime,
        deadline: Duration,
    ) -> Result<Peer, TwofoldError> {
        match self {
            Caller::Bus(bus) => bus.peer(header, runtime, deadline).await,
            Caller::Socket(socket) => Ok(socket.peer),
        }
    }

    /// Record what this caller's `BeginLogin` resolved (`None`: forget it).
    pub fn set_login(&self, header: &Header<'_>, login: Option<Resolved>) {
        match self {
            Caller::Bus(bus) => bus.set_login(header, login),
            Caller::Socket(socket) => *lock(&socket.login) = login,
        }
    }

    /// The account name this caller's `BeginLogin` resolved `user` to, if recent.
    pub fn login_of(&self, header: &Header<'_>, user: &str) -> Option<String> {
        match self {
            Caller::Bus(bus) => bus.login_of(header, user),
            Caller::Socket(socket) => lock(&socket.login).as_ref()?.account_for(user),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The peer of one login-socket connection, from `SO_PEERCRED` at accept,
/// and, for root's, the real uid of its process (`Peer::invoker`), read
/// once at accept rather than at every call: the connection is one
/// process's, and its pid is the kernel's word from the same moment.
pub struct SocketPeer {
    pub peer: Peer,
    pub invoker: Option<u32>,
    /// Its calls, for the users' pool (`None` in root's).
    pub activity: Option<Arc<super::pool::Activity>>,
    login: Mutex<Option<Resolved>>,
}

impl SocketPeer {
    pub fn new(
        peer: Peer,
        invoker: Option<u32>,
        activity: Option<Arc<super::pool::Activity>>,
    ) -> Self {
        Self {
            peer,
            invoker,
            activity,
            login: Mutex::default(),
        }
    }
}

/// One sender on the bus: its credentials, and the account its last
/// `BeginLogin` resolved. The module makes one connection per login, so
/// that connection's `Verify` of the same user name is the same login.
struct Sender {
    peer: Peer,
    login: Option<Resolved>,
}

/// What twofoldd knows of the bus's senders, and its turns to ask the bus.
pub struct BusCallers {
    dbus: fdo::DBusProxy<'static>,
    /// Turns for asking the bus about a new sender (`MAX_LOOKUPS`).
    lookups: zruntime::lock::Semaphore,
    /// Unique bus name -> its calls waiting for that answer.
    waiting: Mutex<HashMap<String, u32>>,
    /// Unique bus name -> what is known of that sender. A unique name is
    /// never reused while the bus runs and a connection's credentials never
    /// change, so the bus's answer holds for the sender's lifetime; this
    /// saves a round trip per call.
    senders: Mutex<HashMap<String, Sender>>,
}

/// One call of a sender waiting for the bus's answer; counted out on drop.
struct Waiting<'a> {
    waiting: &'a Mutex<HashMap<String, u32>>,
    sender: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(self.waiting);
        if let Some(n) = waiting.get_mut(&self.sender) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.sender);
            }
        }
    }
}

fn bus_too_slow() -> TwofoldError {
    TwofoldError::Internal(
        "The system bus did not say who is calling in time. Try again in a moment.".into(),
    )
}

impl BusCallers {
    pub async fn new(conn: &zbus::Connection) -> zbus::Result<Self> {
        Ok(Self {
            dbus: fdo::DBusProxy::new(conn).await?,
            lookups: zruntime::lock::Semaphore::new(MAX_LOOKUPS),
            waiting: Mutex::default(),
            senders: Mutex::default(),
        })
    }

    /// Count one more call of `sender` waiting for the bus's answer, or
    /// refuse it when that sender already has `MAX_WAITING_PER_SENDER`.
    fn wait_for_answer(&self, sender: &str) -> Result<Waiting<'_>, TwofoldError> {
        let mut waiting = lock(&self.waiting);
        let n = waiting.entry(sender.to_string()).or_insert(0);
        if *n >= MAX_WAITING_PER_SENDER {
            return Err(TwofoldError::Busy(
                "Too many calls on this connection at once. Wait for the answers.".into(),
            ));
        }
        *n += 1;
        Ok(Waiting {
            waiting: &self.waiting,
            sender: sender.to_string(),
        })
    }

    fn senders(&self) -> MutexGuard<'_, HashMap<String, Sender>> {
        lock(&self.senders)
    }

    /// A sender whose entry was evicted meanwhile records nothing; its
    /// `Verify` then asks NSS.
    fn set_login(&self, header: &Header<'_>, login: Option<Resolved>) {
        if let Some(sender) = header.sender()
            && let Some(entry) = self.senders().get_mut(sender.as_str())
        {
            entry.login = login;
        }
    }

    fn login_of(&self, header: &Header<'_>, user: &str) -> Option<String> {
        let sender = header.sender()?;
        let senders = self.senders();
        senders
            .get(sender.as_str())?
            .login
            .as_ref()?
            .account_for(user)
    }

    /// The sender's uid (and process), as the bus daemon knows them, within `deadline`.
    async fn peer(
        &self,
        header: &Header<'_>,
        runtime: &zruntime::SharedRuntime,
        deadline: Duration,
    ) -> Result<Peer, TwofoldError> {
        let sender = header
            .sender()
            .ok_or_else(|| TwofoldError::AccessDenied("The caller has no bus name.".into()))?;
        if let Some(entry) = self.senders().get(sender.as_str()) {
            return Ok(entry.peer);
        }
        let _waiting = self.wait_for_answer(sender.as_str())?;
        let lookup = async {
            let _turn = self.lookups.acquire().await;
            // Another call of this sender may have had the answer meanwhile.
            if let Some(entry) = self.senders().get(sender.as_str()) {
                return Ok::<Peer, TwofoldError>(entry.peer);
            }
            // A bus whose queue to twofoldd is full (a flood of large calls)
            // drops its answer: ask again until the deadline.
            let credentials = loop {
                let ask = self.dbus.get_connection_credentials(sender.clone().into());
                if let Ok(answer) = runtime.timeout(LOOKUP_TRY, ask).await {
                    break answer.map_err(|e| TwofoldError::ZBus(e.into()))?;
                }
            };
            let uid = credentials.unix_user_id().ok_or_else(|| {
                TwofoldError::AccessDenied("The bus does not know the caller's uid.".into())
            })?;
            Ok(Peer {
                uid,
                pid: credentials.process_id(),
            })
        };
        let peer = runtime
            .timeout(deadline, lookup)
            .await
            .map_err(|_| bus_too_slow())??;
        let mut senders = self.senders();
        if senders.len() >= MAX_CACHED_SENDERS {
            senders.clear();
        }
        senders
            .entry(sender.to_string())
            .or_insert(Sender { peer, login: None });
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_uid_is_the_first_field_of_the_uid_line() {
        let status = b"Name:\tsu\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t0\t0\t0\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(real_uid(b"Name:\tsu\nGid:\t0\n"), None);
        assert_eq!(real_uid(b"Uid:\tx\t0\n"), None);
        // A name that looks like the line, inside another line, is not it.
        assert_eq!(real_uid(b"Name:\tUid: 7\nUid:\t42\t0\n"), Some(42));
    }

    #[test]
    fn a_root_peer_is_counted_by_its_process_real_uid() {
        let me = Peer {
            uid: 0,
            pid: Some(std::process::id()),
        };
        // SAFETY: getuid has no preconditions.
        let real = unsafe { libc::getuid() };
        assert_eq!(me.invoker(), Some(real));
        let gone = Peer {
            uid: 0,
            pid: Some(u32::MAX),
        };
        assert_eq!(gone.invoker(), None);
        let user = Peer {
            uid: 1000,
            pid: Some(std::process::id()),
        };
        assert_eq!(user.invoker(), None);
    }
}
