//! The D-Bus face of the engine. Every method first refuses a call that is
//! too large (`limits::message_fits`), then asks the bus daemon for the
//! sender's uid (`peer`), then runs its function in `calls.rs` (where `authz`
//! decides what that caller may do) on a blocking thread, so that one slow
//! call (NSS lookups, fsyncs, hashing) never holds up the others.
//!
//! Everything awaited here has a deadline: the bus's answer about a caller
//! (`Connection::method_timeout`, set in main.rs, and `LOOKUP_DEADLINE` for
//! waiting for a turn), and the work itself (`WORK_DEADLINE`).

use crate::audit::{self, Level};
use crate::calls;
use crate::engine::Engine;
use crate::limits::{self, Limits};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twofold_protocol::{
    EnrollmentOffer, Login, LoginPlan, RememberedDevice, ReportRow, SecretString, TwofoldError,
    UserStatus, VerifyReply,
};
use zbus::message::Header;
use zbus::{Connection, fdo};
use zeroize::Zeroizing;

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
/// A call's work on its blocking thread (NSS, the disk, hashing, an e-mail
/// within `email.timeout_secs` <= 15 s): answered within this, under the
/// module's 20 s wait for an answer. Work past it still finishes on its
/// thread (holding the caller's in-flight slot), but its caller is told.
pub const WORK_DEADLINE: Duration = Duration::from_secs(18);
/// How often a refusal of oversized calls is logged at most, in ms.
const OVERSIZED_LOG_EVERY_MS: u64 = 60_000;

pub struct Service {
    engine: Arc<Engine>,
    dbus: fdo::DBusProxy<'static>,
    limits: Arc<Limits>,
    /// The runtime the connection runs on: its timers bound the waits here.
    runtime: zruntime::SharedRuntime,
    /// Turns for asking the bus about a new sender (`MAX_LOOKUPS`).
    lookups: zruntime::lock::Semaphore,
    /// Unique bus name -> its calls waiting for that answer.
    waiting: Mutex<HashMap<String, u32>>,
    /// Oversized calls refused since the last log line, and when that was.
    oversized: AtomicU64,
    oversized_logged_ms: AtomicU64,
    /// Unique bus name -> what is known of that sender. A unique name is
    /// never reused while the bus runs and a connection's credentials never
    /// change, so the bus's answer holds for the sender's lifetime; this
    /// saves a round trip per call.
    senders: Mutex<HashMap<String, Sender>>,
}

/// One sender: its credentials, and the account its last `BeginLogin`
/// resolved. The module makes one connection per login, so that
/// connection's `Verify` of the same user name is the same login and needs
/// no second round of NSS lookups.
struct Sender {
    peer: Peer,
    login: Option<Resolved>,
}

/// A `BeginLogin`'s user name, the account name it resolved to, and when.
struct Resolved {
    user: String,
    account: String,
    at: std::time::Instant,
}

/// A login's `Verify` reuses its `BeginLogin`'s account for this long (sshd's
/// `LoginGraceTime` is 2 minutes by default); a later `Verify` asks NSS
/// again, so an account removed meanwhile is not verified long after.
const RESOLVED_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// A caller as the bus daemon knows it (from the kernel, at connect time).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    pid: Option<u32>,
}

impl Peer {
    /// For root's calls: the real uid of the calling process, read from
    /// /proc, which for the PAM stack of su or sudo is the user who typed the
    /// command. It only picks which count a wrong code goes to (never what
    /// the caller may do), so the one race (the process gone and its pid
    /// reused before this read) can at worst file a code under another
    /// local count, which the account-wide ceiling still rations.
    fn invoker(self) -> Option<u32> {
        if self.uid != 0 {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// One call of a sender waiting for the bus's answer; counted out on drop.
struct Waiting<'a> {
    waiting: &'a Mutex<HashMap<String, u32>>,
    sender: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
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

impl Service {
    /// Call from inside the runtime that serves `conn` (its timers are used).
    pub async fn new(engine: Arc<Engine>, conn: &Connection) -> zbus::Result<Self> {
        Ok(Self {
            engine,
            dbus: fdo::DBusProxy::new(conn).await?,
            limits: Arc::default(),
            runtime: zruntime::SharedRuntime::current()?,
            lookups: zruntime::lock::Semaphore::new(MAX_LOOKUPS),
            waiting: Mutex::default(),
            oversized: AtomicU64::new(0),
            oversized_logged_ms: AtomicU64::new(0),
            senders: Mutex::default(),
        })
    }

    /// Refuse an oversized call before anything else; log such refusals
    /// (their number, not their content) once a minute at most.
    fn admit_message(&self, header: &Header<'_>) -> Result<(), TwofoldError> {
        let fits =
            limits::message_fits(header.primary().body_len(), header.unix_fds().unwrap_or(0));
        if fits.is_err() {
            let refused = self.oversized.fetch_add(1, Ordering::Relaxed) + 1;
            let now = crate::now_ms();
            let last = self.oversized_logged_ms.load(Ordering::Relaxed);
            if now >= last + OVERSIZED_LOG_EVERY_MS
                && self
                    .oversized_logged_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.oversized.fetch_sub(refused, Ordering::Relaxed);
                audit::log(
                    Level::Warning,
                    &format!(
                        "oversized-calls refused={refused} (over {} bytes or with file descriptors, refused unread)",
                        limits::MAX_BODY_BYTES
                    ),
                );
            }
        }
        fits
    }

    /// Count one more call of `sender` waiting for the bus's answer, or
    /// refuse it when that sender already has `MAX_WAITING_PER_SENDER`.
    fn wait_for_answer(&self, sender: &str) -> Result<Waiting<'_>, TwofoldError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
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

    fn senders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sender>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record what this sender's `BeginLogin` resolved (`None`: forget it).
    /// A sender whose entry was evicted meanwhile records nothing; its
    /// `Verify` then asks NSS.
    fn set_login(&self, header: &Header<'_>, login: Option<Resolved>) {
        if let Some(sender) = header.sender()
            && let Some(entry) = self.senders().get_mut(sender.as_str())
        {
            entry.login = login;
        }
    }

    /// The account name this sender's `BeginLogin` resolved `user` to, if
    /// recent.
    fn login_of(&self, header: &Header<'_>, user: &str) -> Option<String> {
        let sender = header.sender()?;
        let senders = self.senders();
        let login = senders.get(sender.as_str())?.login.as_ref()?;
        (login.user == user && login.at.elapsed() < RESOLVED_FOR).then(|| login.account.clone())
    }

    /// The caller's uid (and process), as the bus daemon knows them. Never
    /// taken from arguments.
    async fn peer(&self, header: &Header<'_>) -> Result<Peer, TwofoldError> {
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
            // drops its answer: ask again until LOOKUP_DEADLINE.
            let credentials = loop {
                let ask = self.dbus.get_connection_credentials(sender.clone().into());
                if let Ok(answer) = self.runtime.timeout(LOOKUP_TRY, ask).await {
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
        let peer = self
            .runtime
            .timeout(LOOKUP_DEADLINE, lookup)
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

    /// Run `work` with the caller's uid on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        header: &Header<'_>,
        work: impl FnOnce(&Engine, u32) -> Result<T, TwofoldError> + Send + 'static,
    ) -> Result<T, TwofoldError> {
        self.run_login(header, false, move |e, uid, _| work(e, uid))
            .await
    }

    /// Run `work` with the caller's uid and, for a `local` login (no remote
    /// host) by root, the real uid of the calling process (`Peer::invoker`), on a
    /// blocking thread, if the call is small enough and the caller's limits
    /// allow (`limits.rs`); the slot is held until the work is done, even if
    /// the caller goes away or the deadline passes first.
    async fn run_login<T: Send + 'static>(
        &self,
        header: &Header<'_>,
        local: bool,
        work: impl FnOnce(&Engine, u32, Option<u32>) -> Result<T, TwofoldError> + Send + 'static,
    ) -> Result<T, TwofoldError> {
        self.admit_message(header)?;
        let peer = self.peer(header).await?;
        let permit = self.limits.admit(peer.uid, crate::now_ms())?;
        let engine = self.engine.clone();
        // Only a local login is counted by its invoker: skip /proc otherwise.
        let work = zruntime::unblock(move || {
            let _permit = permit;
            let invoker = if local { peer.invoker() } else { None };
            work(&engine, peer.uid, invoker)
        });
        self.runtime
            .timeout(WORK_DEADLINE, work)
            .await
            .map_err(|_| {
                audit::log(
                    Level::Error,
                    &format!(
                        "work-deadline caller_uid={} (a call took over {} s: NSS, the disk or the mail relay is not answering)",
                        peer.uid,
                        WORK_DEADLINE.as_secs()
                    ),
                );
                TwofoldError::Internal(format!(
                    "The request did not finish within {} s. Try again later, or contact your administrator.",
                    WORK_DEADLINE.as_secs()
                ))
            })?
    }
}

// The method names are zbus's from the Rust names, as the protocol's
// `Twofold` trait and `method` list have them; the arguments stay loose
// strings on the wire and become the protocol's structs here.
twofold_protocol::serve_interface! {
impl Service {
    async fn begin_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<LoginPlan, TwofoldError> {
        // Whatever an earlier BeginLogin on this connection resolved no
        // longer counts, even if this one fails.
        self.set_login(&header, None);
        let login = Login::new(user, service, rhost);
        let name = login.user.clone();
        let (plan, account) = self
            .run_login(&header, login.rhost.is_empty(), move |e, caller, invoker| {
                calls::begin_login(e, caller, invoker, &login)
            })
            .await?;
        self.set_login(
            &header,
            Some(Resolved {
                user: name,
                account: account.name,
                at: crate::clock::monotonic(),
            }),
        );
        Ok(plan)
    }

    async fn verify(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
        service: String,
        rhost: String,
    ) -> Result<VerifyReply, TwofoldError> {
        let code = Zeroizing::new(code);
        let resolved = self.login_of(&header, &user);
        let login = Login::new(user, service, rhost);
        self.run_login(&header, login.rhost.is_empty(), move |e, caller, invoker| {
            calls::verify(e, caller, invoker, resolved.as_deref(), &login, &code)
        })
        .await
    }

    async fn begin_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        self.run(&header, calls::begin_enrollment).await
    }

    async fn confirm_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            calls::confirm_enrollment(e, caller, &code)
        })
        .await
    }

    async fn begin_authenticator(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::begin_authenticator(e, caller, &name)
        })
        .await
    }

    async fn remove_authenticator(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
        code: String,
    ) -> Result<(), TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            calls::remove_authenticator(e, caller, &name, &code)
        })
        .await
    }

    async fn admin_remove_authenticator(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        name: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_remove_authenticator(e, caller, &user, &name)
        })
        .await
    }

    async fn status(&self, #[zbus(header)] header: Header<'_>) -> Result<UserStatus, TwofoldError> {
        self.run(&header, calls::status).await
    }

    async fn regenerate_backup_codes(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            calls::regenerate_backup_codes(e, caller, &code)
        })
        .await
    }

    async fn enroll_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<EnrollmentOffer, TwofoldError> {
        let login = Login::new(user, service, rhost);
        self.run(&header, move |e, caller| {
            calls::enroll_at_login(e, caller, &login)
        })
        .await
    }

    async fn confirm_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            calls::confirm_at_login(e, caller, &user, &code)
        })
        .await
    }

    async fn disable(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<(), TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| calls::disable(e, caller, &code))
            .await
    }

    async fn devices(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<RememberedDevice>, TwofoldError> {
        self.run(&header, calls::devices).await
    }

    async fn forget_devices(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<u32, TwofoldError> {
        self.run(&header, calls::forget_devices).await
    }

    async fn admin_status(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<UserStatus, TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_status(e, caller, &user)
        })
        .await
    }

    async fn admin_unlock(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_unlock(e, caller, &user)
        })
        .await
    }

    async fn admin_report(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ReportRow>, TwofoldError> {
        self.run(&header, calls::admin_report).await
    }

    async fn admin_explain(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<Vec<String>, TwofoldError> {
        let login = Login::new(user, service, rhost);
        self.run(&header, move |e, caller| {
            calls::admin_explain(e, caller, &login)
        })
        .await
    }

    async fn admin_reset(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_reset(e, caller, &user)
        })
        .await
    }

    async fn admin_set_override(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        mode: String,
    ) -> Result<(), TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_set_override(e, caller, &user, &mode)
        })
        .await
    }

    async fn admin_forget_devices(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
    ) -> Result<u32, TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_forget_devices(e, caller, &user)
        })
        .await
    }

    async fn admin_check_policy(
        &self,
        #[zbus(header)] header: Header<'_>,
        path: String,
    ) -> Result<String, TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::admin_check_policy(e, caller, &path)
        })
        .await
    }

    async fn admin_reload(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String, TwofoldError> {
        self.run(&header, calls::admin_reload).await
    }

    async fn send_login_code(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        service: String,
        rhost: String,
    ) -> Result<String, TwofoldError> {
        let login = Login::new(user, service, rhost);
        self.run_login(&header, login.rhost.is_empty(), move |e, caller, invoker| {
            calls::send_login_code(e, caller, invoker, &login)
        })
        .await
    }

    async fn begin_email_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
        address: String,
    ) -> Result<String, TwofoldError> {
        self.run(&header, move |e, caller| {
            calls::begin_email_enrollment(e, caller, &address)
        })
        .await
    }

    async fn confirm_email_enrollment(
        &self,
        #[zbus(header)] header: Header<'_>,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            calls::confirm_email_enrollment(e, caller, &code)
        })
        .await
    }

    async fn email_enroll_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        address: String,
        service: String,
        rhost: String,
    ) -> Result<String, TwofoldError> {
        let login = Login::new(user, service, rhost);
        self.run(&header, move |e, caller| {
            calls::email_enroll_at_login(e, caller, &login, &address)
        })
        .await
    }

    async fn confirm_email_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let code = Zeroizing::new(code);
        self.run(&header, move |e, caller| {
            calls::confirm_email_at_login(e, caller, &user, &code)
        })
        .await
    }
}
}

#[cfg(test)]
mod tests {
    /// The name zbus serves the interface under is the contract's (the
    /// macro spells it in `protocol/`, as zbus takes only a literal).
    #[test]
    fn the_served_interface_is_the_contracts() {
        use zbus::object_server::Interface;
        assert_eq!(super::Service::name().as_str(), twofold_protocol::INTERFACE);
    }
}
