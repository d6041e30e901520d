//! The D-Bus face of the engine: decode, authorize, call, encode. One
//! `Service` serves both transports: the system bus (the `twofold`
//! command, administration, introspection, activation) as a zbus
//! interface, and twofoldd's login socket (`socket.rs`: peer-to-peer
//! connections from the PAM module, without the bus daemon in between)
//! through `call_here`, which serves only the login methods with the same
//! work (`Work`) and limits. Only who is calling differs (`peer.rs`).
//!
//! Every method first refuses a call that is too large
//! (`limits::message_fits`), then learns the caller's uid (`peer`), then
//! runs its function in `calls.rs` (where `authz` decides what that caller
//! may do) where one slow call (NSS lookups, fsyncs, hashing) never holds
//! up the others: on the bus, on a blocking thread; on a socket
//! connection, on that connection's own thread (`socket.rs`).
//!
//! Everything awaited here has a deadline: the bus's answer about a caller
//! (`peer::LOOKUP_DEADLINE`), and the work itself (`WORK_DEADLINE`; on the
//! socket, where nothing awaits it, the module's own 20 s wait for an
//! answer ends the login, and work past the deadline is logged at its end).

mod frame;
mod login;
use login::{
    confirm_at_login_work, confirm_email_at_login_work, email_enroll_at_login_work,
    enroll_at_login_work, send_login_code_work,
};
pub mod peer;
pub mod pool;
pub mod socket;

use crate::audit::{self, Level};
use crate::calls;
use crate::engine::Engine;
use crate::limits::{self, Limits};
use peer::{BusCallers, Caller, Resolved};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use twofold_protocol::{
    EnrollmentOffer, Login, LoginPlan, RememberedDevice, ReportRow, ReportRowV1, SecretString,
    TwofoldError, UserStatus, VerifyReply,
};
use zbus::Connection;
use zbus::message::Header;
use zeroize::Zeroizing;

/// A call's work on its blocking thread (NSS, the disk, hashing, an e-mail
/// within `email.timeout_secs` <= 15 s): answered within this, under the
/// module's 20 s wait for an answer. Work past it still finishes on its
/// thread (holding the caller's in-flight slot), but its caller is told.
pub const WORK_DEADLINE: Duration = Duration::from_secs(18);
/// How often a refusal of oversized calls is logged at most, in ms.
const OVERSIZED_LOG_EVERY_MS: u64 = 60_000;

/// What every connection's service shares: the engine, the callers'
/// limits (per uid, whichever transport they come by), the runtime.
pub struct Shared {
    engine: Arc<Engine>,
    limits: Arc<Limits>,
    /// The runtime the connections run on: its timers bound the waits here.
    runtime: zruntime::SharedRuntime,
    /// Oversized calls refused since the last log line, and when that was.
    oversized: AtomicU64,
    oversized_logged_ms: AtomicU64,
    /// `WORK_DEADLINE` and `peer::LOOKUP_DEADLINE` (short in tests).
    work_deadline: Duration,
    lookup_deadline: Duration,
}

impl Shared {
    /// Call from inside the runtime that serves the connections (its timers are used).
    pub fn new(engine: Arc<Engine>) -> std::io::Result<Arc<Self>> {
        Self::with_deadlines(engine, WORK_DEADLINE, peer::LOOKUP_DEADLINE)
    }

    /// The same with other deadlines for a call's work and for the bus's
    /// answer about a caller (the tests' are short).
    fn with_deadlines(
        engine: Arc<Engine>,
        work_deadline: Duration,
        lookup_deadline: Duration,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            engine,
            limits: Arc::default(),
            runtime: zruntime::SharedRuntime::current()?,
            oversized: AtomicU64::new(0),
            oversized_logged_ms: AtomicU64::new(0),
            work_deadline,
            lookup_deadline,
        }))
    }

    /// Refuse an oversized call before anything else; log such refusals
    /// (their number, not their content) once a minute at most.
    fn admit_message(&self, header: &Header<'_>) -> Result<(), TwofoldError> {
        let fits =
            limits::message_fits(header.primary().body_len(), header.unix_fds().unwrap_or(0));
        if fits.is_err() {
            self.log_oversized();
        }
        fits
    }

    fn log_oversized(&self) {
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
}

/// The interface as one connection serves it: the shared engine, and how
/// that connection knows its callers.
pub struct Service {
    shared: Arc<Shared>,
    caller: Caller,
}

impl Service {
    /// The service on the system bus connection `conn`.
    pub async fn on_bus(shared: Arc<Shared>, conn: &Connection) -> zbus::Result<Self> {
        Ok(Self {
            shared,
            caller: Caller::Bus(BusCallers::new(conn).await?),
        })
    }

    /// The service on one login-socket connection, whose peer the kernel
    /// named (`invoker`: `Peer::invoker`, read at accept; `activity`: where
    /// its calls are counted, for the users' pool).
    pub fn on_socket(
        shared: Arc<Shared>,
        peer: peer::Peer,
        invoker: Option<u32>,
        activity: Option<Arc<pool::Activity>>,
    ) -> Self {
        Self {
            shared,
            caller: Caller::Socket(peer::SocketPeer::new(peer, invoker, activity)),
        }
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
        if let Caller::Socket(socket) = &self.caller {
            return self.run_here(socket, header, local, work);
        }
        let shared = &self.shared;
        shared.admit_message(header)?;
        let peer = self
            .caller
            .peer(header, &shared.runtime, shared.lookup_deadline)
            .await?;
        let permit = shared.limits.admit(peer.uid, crate::now_ms())?;
        let engine = shared.engine.clone();
        // Only a local login is counted by its invoker: skip /proc otherwise.
        let work = zruntime::unblock(move || {
            let _permit = permit;
            let invoker = if local { peer.invoker() } else { None };
            work(&engine, peer.uid, invoker)
        });
        shared
            .runtime
            .timeout(shared.work_deadline, work)
            .await
            .map_err(|_| work_deadline(peer.uid, shared.work_deadline))?
    }
}

/// A call's work took over `deadline` (`WORK_DEADLINE`): logged, and its
/// caller told (on the bus at the deadline; on the socket, whose work runs
/// on the connection's thread, when it ends, which the module may no longer
/// wait for).
fn work_deadline(caller_uid: u32, deadline: Duration) -> TwofoldError {
    audit::log(
        Level::Error,
        &format!(
            "work-deadline caller_uid={caller_uid} (a call took over {} s: NSS, the disk or the mail relay is not answering)",
            deadline.as_secs_f32()
        ),
    );
    TwofoldError::Internal(format!(
        "The request did not finish within {} s. Try again later, or contact your administrator.",
        deadline.as_secs_f32()
    ))
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
        let (name, (local, work)) = self.begin_login_work(&header, (user, service, rhost));
        let found = self.run_login(&header, local, work).await;
        self.remember(&header, name, found)
    }

    async fn verify(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
        service: String,
        rhost: String,
    ) -> Result<VerifyReply, TwofoldError> {
        let (local, work) = self.verify_work(&header, (user, code, service, rhost));
        self.run_login(&header, local, work).await
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
        let (local, work) = enroll_at_login_work((user, service, rhost));
        self.run_login(&header, local, work).await
    }

    async fn confirm_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let (local, work) = confirm_at_login_work((user, code));
        self.run_login(&header, local, work).await
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
    ) -> Result<Vec<ReportRowV1>, TwofoldError> {
        self.run(&header, calls::admin_report).await
    }

    async fn admin_report_hosts(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<ReportRow>, TwofoldError> {
        self.run(&header, calls::admin_report_hosts).await
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
        let (local, work) = send_login_code_work((user, service, rhost));
        self.run_login(&header, local, work).await
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
        let (local, work) = email_enroll_at_login_work((user, address, service, rhost));
        self.run_login(&header, local, work).await
    }

    async fn confirm_email_at_login(
        &self,
        #[zbus(header)] header: Header<'_>,
        user: String,
        code: String,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let (local, work) = confirm_email_at_login_work((user, code));
        self.run_login(&header, local, work).await
    }
}
}

#[cfg(test)]
mod tests;
