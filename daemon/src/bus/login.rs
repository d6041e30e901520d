//! The login methods' work, built once for both transports (`Work`), and
//! how a login-socket connection runs it: `call_here` dispatches a call
//! read by `socket.rs` to that work on the connection's own thread, with
//! the same limits as the bus's `run_login`; any method other than the
//! login ones and `Peer.Ping` is not served there.

use super::*;

impl Service {
    /// `run_login` for a login-socket connection: the connection has a
    /// thread of its own (`socket.rs`), which nothing else waits on, so its
    /// work runs right here, with no hand-off to the blocking pool and back.
    /// A slow lookup holds only this connection; the module's own 20 s wait
    /// for an answer bounds the login.
    pub(super) fn run_here<T>(
        &self,
        socket: &peer::SocketPeer,
        header: &Header<'_>,
        local: bool,
        work: impl FnOnce(&Engine, u32, Option<u32>) -> Result<T, TwofoldError>,
    ) -> Result<T, TwofoldError> {
        let shared = &self.shared;
        shared.admit_message(header)?;
        let peer = socket.peer;
        let _permit = shared.limits.admit(peer.uid, crate::now_ms())?;
        // Not idle while it works: the pool's fairness closes idle ones first.
        let _busy = socket.activity.as_deref().map(pool::Activity::begin);
        let invoker = if local { socket.invoker } else { None };
        let started = crate::clock::monotonic();
        let done = work(&shared.engine, peer.uid, invoker);
        if started.elapsed() > shared.work_deadline {
            return Err(work_deadline(peer.uid, shared.work_deadline));
        }
        done
    }

    /// What `BeginLogin` resolved, remembered for the same connection's
    /// `Verify` (whichever the transport).
    pub(super) fn remember(
        &self,
        header: &Header<'_>,
        user: String,
        found: Result<(LoginPlan, crate::users::Account), TwofoldError>,
    ) -> Result<LoginPlan, TwofoldError> {
        let (plan, account) = found?;
        self.caller.set_login(
            header,
            Some(Resolved {
                user,
                account: account.name,
                at: crate::clock::monotonic(),
            }),
        );
        Ok(plan)
    }

    /// One call on a login-socket connection, answered on its thread: the
    /// PAM module's methods and `Peer.Ping`; `None` for any other (the
    /// socket serves only logins; everything else is on the system bus).
    pub(crate) fn call_here(&self, msg: &zbus::Message) -> Option<zbus::Result<zbus::Message>> {
        use twofold_protocol::method;
        let Caller::Socket(socket) = &self.caller else {
            return None;
        };
        let header = msg.header();
        let h = &header;
        let body = msg.body();
        let interface = header.interface()?.as_str();
        let member = header.member()?.as_str();
        if interface == "org.freedesktop.DBus.Peer" {
            return match member {
                "Ping" => Some(answer(h, &body, |()| Ok(()))),
                _ => None,
            };
        }
        if interface != twofold_protocol::INTERFACE
            || header.path().map(|p| p.as_str()) != Some(twofold_protocol::OBJECT_PATH)
        {
            return None;
        }
        fn here<T>(
            service: &Service,
            socket: &peer::SocketPeer,
            h: &Header<'_>,
            (local, work): Work<T>,
        ) -> Result<T, TwofoldError> {
            service.run_here(socket, h, local, work)
        }
        Some(match member {
            method::BEGIN_LOGIN => answer(h, &body, |args| {
                let (name, work) = self.begin_login_work(h, args);
                let found = here(self, socket, h, work);
                self.remember(h, name, found)
            }),
            method::VERIFY => answer(h, &body, |args| {
                here(self, socket, h, self.verify_work(h, args))
            }),
            method::SEND_LOGIN_CODE => {
                answer(h, &body, |a| here(self, socket, h, send_login_code_work(a)))
            }
            method::ENROLL_AT_LOGIN => {
                answer(h, &body, |a| here(self, socket, h, enroll_at_login_work(a)))
            }
            method::CONFIRM_AT_LOGIN => answer(h, &body, |a| {
                here(self, socket, h, confirm_at_login_work(a))
            }),
            method::EMAIL_ENROLL_AT_LOGIN => answer(h, &body, |a| {
                here(self, socket, h, email_enroll_at_login_work(a))
            }),
            method::CONFIRM_EMAIL_AT_LOGIN => answer(h, &body, |a| {
                here(self, socket, h, confirm_email_at_login_work(a))
            }),
            _ => return None,
        })
    }
}

/// A login method's work on the engine (with the caller's uid and, for a
/// local login, its invoker), and whether the login is local: built once
/// for both transports, run by `run_login` on the bus, `run_here` on the
/// socket.
pub(super) type Work<T> = (
    bool,
    Box<dyn FnOnce(&Engine, u32, Option<u32>) -> Result<T, TwofoldError> + Send>,
);

impl Service {
    /// `BeginLogin`: the user name it is for (for `remember`), and its work.
    /// Whatever an earlier `BeginLogin` on this connection resolved no
    /// longer counts, even if this one fails.
    pub(super) fn begin_login_work(
        &self,
        header: &Header<'_>,
        (user, service, rhost): (String, String, String),
    ) -> (String, Work<(LoginPlan, crate::users::Account)>) {
        self.caller.set_login(header, None);
        let login = Login::new(user, service, rhost);
        let name = login.user.clone();
        let work = (
            login.rhost.is_empty(),
            Box::new(move |e: &Engine, caller, invoker| {
                calls::begin_login(e, caller, invoker, &login)
            }) as Box<_>,
        );
        (name, work)
    }

    pub(super) fn verify_work(
        &self,
        header: &Header<'_>,
        (user, code, service, rhost): (String, String, String, String),
    ) -> Work<VerifyReply> {
        let code = Zeroizing::new(code);
        let resolved = self.caller.login_of(header, &user);
        let login = Login::new(user, service, rhost);
        (
            login.rhost.is_empty(),
            Box::new(move |e: &Engine, caller, invoker| {
                calls::verify(e, caller, invoker, resolved.as_deref(), &login, &code)
            }),
        )
    }
}

pub(super) fn send_login_code_work(
    (user, service, rhost): (String, String, String),
) -> Work<String> {
    let login = Login::new(user, service, rhost);
    (
        login.rhost.is_empty(),
        Box::new(move |e: &Engine, caller, invoker| {
            calls::send_login_code(e, caller, invoker, &login)
        }),
    )
}

pub(super) fn enroll_at_login_work(
    (user, service, rhost): (String, String, String),
) -> Work<EnrollmentOffer> {
    let login = Login::new(user, service, rhost);
    (
        false,
        Box::new(move |e: &Engine, caller, _| calls::enroll_at_login(e, caller, &login)),
    )
}

pub(super) fn confirm_at_login_work((user, code): (String, String)) -> Work<Vec<SecretString>> {
    let code = Zeroizing::new(code);
    (
        false,
        Box::new(move |e: &Engine, caller, _| calls::confirm_at_login(e, caller, &user, &code)),
    )
}

pub(super) fn email_enroll_at_login_work(
    (user, address, service, rhost): (String, String, String, String),
) -> Work<String> {
    let login = Login::new(user, service, rhost);
    (
        false,
        Box::new(move |e: &Engine, caller, _| {
            calls::email_enroll_at_login(e, caller, &login, &address)
        }),
    )
}

pub(super) fn confirm_email_at_login_work(
    (user, code): (String, String),
) -> Work<Vec<SecretString>> {
    let code = Zeroizing::new(code);
    (
        false,
        Box::new(move |e: &Engine, caller, _| {
            calls::confirm_email_at_login(e, caller, &user, &code)
        }),
    )
}

/// The reply to a call whose body deserializes to `A`: `f`'s value, or its
/// error as the zbus interface would send it (the same names and texts, so
/// the module's reading of them does not depend on the transport).
fn answer<A, R>(
    header: &Header<'_>,
    body: &zbus::message::Body,
    f: impl FnOnce(A) -> Result<R, TwofoldError>,
) -> zbus::Result<zbus::Message>
where
    A: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    R: serde::Serialize + zbus::zvariant::DynamicType,
{
    use zbus::DBusError;
    match body.deserialize::<A>() {
        // As zbus's interfaces answer arguments that do not deserialize.
        Err(e) => zbus::fdo::Error::InvalidArgs(e.to_string()).create_reply(header),
        Ok(args) => match f(args) {
            Ok(r) => zbus::Message::method_return(header).build(&r),
            Err(e) => e.create_reply(header),
        },
    }
}
