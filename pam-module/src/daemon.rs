//! The transport to twofoldd: connect to its login socket (a peer-to-peer
//! D-Bus connection, no bus daemon in between, no `Hello`), or to the
//! system bus when there is no socket, within deadlines; wait on a bus that
//! is full; make the login calls. The flow sees only the `Daemon` trait.

use crate::clock::{Clock, SystemClock};
use crate::conn::Conn;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;
use twofold_protocol::{
    ConfirmArgs, EmailEnrollArgs, EnrollmentOffer, Login, LoginPlan, SecretString, TwofoldError,
    VerifyArgs, VerifyReply, method,
};

/// The system bus. `DBUS_SYSTEM_BUS_ADDRESS` replaces it only for a host that
/// is not running setuid (tests, the demo), see [`bus_address`].
pub const SYSTEM_BUS_ADDRESS: &str = "unix:path=/run/dbus/system_bus_socket";
/// Longest wait for one daemon call; a daemon that takes longer refuses the
/// login, whatever the failmode.
const METHOD_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for twofoldd's socket or the bus to take a connection
/// (connect, authentication, and on the bus `Hello`). A working daemon or
/// bus does it in well under a millisecond; one that accepts the socket and
/// never answers would otherwise hold su or sudo for good, and an sshd
/// login until `LoginGraceTime`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a login waits for a connection while the bus is at its limit of
/// connections per uid, or for a call while the bus's queue to twofoldd is
/// full. Every sshd login is root's, so a burst of logins at once can fill
/// dbus-daemon's `max_connections_per_user` (256 by default) for a moment,
/// and a local user sending large calls can fill twofoldd's queue (127 MB);
/// that is a wait, not a reason to refuse a correct code.
pub const BUS_FULL_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between two tries on a full bus.
const BUS_FULL_PAUSE_MAX: Duration = Duration::from_millis(200);

/// What a login asks twofoldd. Every call names the login it belongs to.
pub trait Daemon {
    fn begin_login(&self, login: &Login) -> Result<LoginPlan, TwofoldError>;
    fn verify(&self, login: &Login, code: &str) -> Result<VerifyReply, TwofoldError>;
    fn enroll_at_login(&self, login: &Login) -> Result<EnrollmentOffer, TwofoldError>;
    fn confirm_at_login(
        &self,
        login: &Login,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError>;
    fn send_login_code(&self, login: &Login) -> Result<String, TwofoldError>;
    fn email_enroll_at_login(&self, login: &Login, address: &str) -> Result<String, TwofoldError>;
    fn confirm_email_at_login(
        &self,
        login: &Login,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError>;
}

/// twofoldd over a D-Bus connection: its login socket, or the system bus
/// (or `DBUS_SYSTEM_BUS_ADDRESS`).
pub struct BusDaemon {
    conn: RefCell<Conn>,
    /// The bus name calls go to; none on the socket (the peer is twofoldd).
    destination: Option<&'static str>,
}

impl BusDaemon {
    /// Call `method` with `args` as the whole body (a struct of the
    /// protocol's goes out as its fields, the loose arguments twofoldd takes).
    fn call<B, R>(&self, method: &'static str, args: &B) -> Result<R, TwofoldError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let mut call = zbus::Message::method_call(twofold_protocol::OBJECT_PATH, method)
            .interface(twofold_protocol::INTERFACE);
        if let Some(destination) = self.destination {
            call = call.destination(destination);
        }
        let call = call.build(args)?;
        let mut full = FullBus::new(&SystemClock);
        loop {
            match self.conn.borrow_mut().call(&call, METHOD_TIMEOUT) {
                // The bus turned the call away undelivered (its queue to
                // twofoldd was full): sending it again cannot count twice.
                Err(e) if bus_full(&e) && full.wait() => continue,
                reply => return Ok(reply?.body().deserialize::<R>()?),
            }
        }
    }
}

impl Daemon for BusDaemon {
    fn begin_login(&self, login: &Login) -> Result<LoginPlan, TwofoldError> {
        self.call(method::BEGIN_LOGIN, login)
    }

    fn verify(&self, login: &Login, code: &str) -> Result<VerifyReply, TwofoldError> {
        self.call(method::VERIFY, &VerifyArgs::new(login, code))
    }

    fn enroll_at_login(&self, login: &Login) -> Result<EnrollmentOffer, TwofoldError> {
        self.call(method::ENROLL_AT_LOGIN, login)
    }

    fn confirm_at_login(
        &self,
        login: &Login,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        self.call(method::CONFIRM_AT_LOGIN, &ConfirmArgs::new(login, code))
    }

    fn send_login_code(&self, login: &Login) -> Result<String, TwofoldError> {
        self.call(method::SEND_LOGIN_CODE, login)
    }

    fn email_enroll_at_login(&self, login: &Login, address: &str) -> Result<String, TwofoldError> {
        self.call(
            method::EMAIL_ENROLL_AT_LOGIN,
            &EmailEnrollArgs::new(login, address),
        )
    }

    fn confirm_email_at_login(
        &self,
        login: &Login,
        code: &str,
    ) -> Result<Vec<SecretString>, TwofoldError> {
        let args = ConfirmArgs::new(login, code);
        self.call(method::CONFIRM_EMAIL_AT_LOGIN, &args)
    }
}

/// The bus to use. Under setuid (`su`, `sudo`) the environment is the
/// invoking user's, who could point it at a bus where their own program
/// answers as twofoldd; libdbus and sd-bus ignore the variable there too.
pub fn bus_address(secure_execution: bool, from_env: Option<std::ffi::OsString>) -> String {
    match from_env.and_then(|v| v.into_string().ok()) {
        Some(address) if !secure_execution && !address.is_empty() => address,
        _ => SYSTEM_BUS_ADDRESS.to_string(),
    }
}

/// The login socket to use: `TWOFOLD_SOCKET` replaces it only for a host
/// that is not running setuid (tests, the demo), as for [`bus_address`].
pub fn socket_path(
    secure_execution: bool,
    from_env: Option<std::ffi::OsString>,
) -> std::path::PathBuf {
    match from_env {
        Some(path) if !secure_execution && !path.is_empty() => path.into(),
        _ => twofold_protocol::LOGIN_SOCKET.into(),
    }
}

/// Connect to twofoldd: on its login socket, or, when there is no socket
/// (missing, or nothing listening on it: no systemd, or a daemon that is
/// not running), on the bus at `address`, which starts the daemon. On the
/// socket the authentication goes out with the first call (no round trip
/// of its own): a socket that accepts but does not finish the handshake in
/// [`HANDSHAKE_TIMEOUT`] fails that call with a handshake error, a daemon
/// that is there but hung: an error, not a reason to try the bus (which
/// would reach the same daemon). No `Hello` on the socket: the peer is
/// twofoldd itself.
pub fn connect(socket: &Path, address: &str) -> zbus::Result<BusDaemon> {
    match Conn::open(socket, HANDSHAKE_TIMEOUT) {
        Ok(conn) => Ok(BusDaemon {
            conn: RefCell::new(conn),
            destination: None,
        }),
        Err(e) if no_bus(&e) => connect_bus(address),
        Err(e) => Err(e),
    }
}

/// Connect to twofoldd's bus, waiting up to [`BUS_FULL_WAIT`] while the bus
/// refuses the connection for its per-uid limit, each try's handshake
/// bounded by [`HANDSHAKE_TIMEOUT`]. Any other failure returns at once.
pub fn connect_bus(address: &str) -> zbus::Result<BusDaemon> {
    let path = bus_path(address)?;
    let mut full = FullBus::new(&SystemClock);
    loop {
        match connect_once(&path) {
            Err(e) if bus_full(&e) && full.wait() => {}
            other => return other,
        }
    }
}

fn connect_once(path: &Path) -> zbus::Result<BusDaemon> {
    let started = SystemClock.now();
    let mut conn = Conn::open(path, HANDSHAKE_TIMEOUT)?;
    conn.hello(HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed()))?;
    Ok(BusDaemon {
        conn: RefCell::new(conn),
        destination: Some(twofold_protocol::BUS_NAME),
    })
}

/// The socket file of a bus address; the module reaches a bus only by a
/// `unix:path=` address (the system bus's kind).
fn bus_path(address: &str) -> zbus::Result<PathBuf> {
    use zbus::address::transport::{Transport, UnixSocket};
    let parsed = zbus::Address::try_from(address)?;
    match parsed.transport() {
        Transport::Unix(unix) => match unix.path() {
            UnixSocket::File(path) => Ok(path.clone()),
            _ => Err(not_a_path(address)),
        },
        _ => Err(not_a_path(address)),
    }
}

fn not_a_path(address: &str) -> zbus::Error {
    zbus::Error::Address(format!(
        "{address}: pam_twofold reaches a bus only by a unix:path= address"
    ))
}

/// The waits of one step (a connection, a call) on a bus that refuses it
/// for its limits: growing pauses, for at most [`BUS_FULL_WAIT`] in all.
struct FullBus<'c, C: Clock> {
    clock: &'c C,
    started: std::time::Instant,
    pause: Duration,
}

impl<'c, C: Clock> FullBus<'c, C> {
    fn new(clock: &'c C) -> Self {
        Self {
            clock,
            started: clock.now(),
            pause: Duration::from_millis(5),
        }
    }

    /// Pause before the next try; false when the time is up.
    fn wait(&mut self) -> bool {
        let elapsed = self.clock.now().saturating_duration_since(self.started);
        let left = BUS_FULL_WAIT.saturating_sub(elapsed);
        if left.is_zero() {
            return false;
        }
        // The jitter keeps a burst of waiting logins from retrying in step.
        let nanos = self.clock.subsec_nanos();
        self.clock.sleep(jitter(self.pause, nanos).min(left));
        self.pause = (self.pause * 2).min(BUS_FULL_PAUSE_MAX);
        true
    }
}

/// `pause` scaled by a factor in [0.5, 1.5), from the clock's nanoseconds
/// (unpredictability does not matter here, only spreading the retries).
fn jitter(pause: Duration, nanos: u32) -> Duration {
    pause.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

/// The bus's refusal of a connection for its resource limits.
pub fn bus_full(error: &zbus::Error) -> bool {
    bus_error_is(error, &["org.freedesktop.DBus.Error.LimitsExceeded"])
}

/// A bus that did not answer the handshake in time.
pub fn timed_out(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::InputOutput(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// No bus to connect to: its socket is missing, or nothing listens on it.
pub fn no_bus(error: &zbus::Error) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    matches!(error, zbus::Error::Connection(e, _) if matches!(e.kind(), NotFound | ConnectionRefused))
}

/// The bus's answer that twofoldd is neither running nor activatable on it
/// (not installed). Not `NameHasNoOwner`: dbus-broker gives that when an
/// installed twofoldd fails to start (a bad configuration, a masked or
/// failed unit), as dbus-daemon gives its `Spawn.*` errors, and a daemon
/// that is there but broken must not open the door under failmode=safe.
pub fn no_daemon(error: &zbus::Error) -> bool {
    bus_error_is(error, &["org.freedesktop.DBus.Error.ServiceUnknown"])
}

/// Whether `error` is a D-Bus error reply with one of `names`, whether zbus
/// gave it as one of its `fdo::Error` variants or by name.
fn bus_error_is(error: &zbus::Error, names: &[&str]) -> bool {
    use zbus::DBusError;
    match error {
        zbus::Error::MethodError(name, _, _) => names.contains(&name.as_str()),
        zbus::Error::FDO(e) => names.contains(&e.name().as_str()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::time::Instant;

    /// Time moves only when the waits sleep.
    struct FakeClock {
        start: Instant,
        now: Cell<Instant>,
        slept: RefCell<Vec<Duration>>,
        nanos: u32,
    }

    impl FakeClock {
        fn new(nanos: u32) -> Self {
            // Any instant will do as the start; read through the seam.
            let start = crate::clock::SystemClock.now();
            Self {
                start,
                now: Cell::new(start),
                slept: RefCell::default(),
                nanos,
            }
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.now.get()
        }
        fn sleep(&self, pause: Duration) {
            self.slept.borrow_mut().push(pause);
            self.now.set(self.now.get() + pause);
        }
        fn subsec_nanos(&self) -> u32 {
            self.nanos
        }
    }

    #[test]
    fn a_full_bus_is_waited_on_with_growing_pauses_for_five_seconds_in_all() {
        // 500 ns: a jitter factor of exactly 1.
        let clock = FakeClock::new(500);
        let mut full = FullBus::new(&clock);
        let mut tries = 0;
        while full.wait() {
            tries += 1;
        }
        let slept = clock.slept.borrow();
        let ms: Vec<u128> = slept.iter().take(7).map(Duration::as_millis).collect();
        assert_eq!(ms, [5, 10, 20, 40, 80, 160, 200]);
        assert_eq!(clock.now.get() - clock.start, BUS_FULL_WAIT);
        assert!(slept.iter().all(|p| *p <= BUS_FULL_PAUSE_MAX));
        assert_eq!(tries, slept.len());
    }

    #[test]
    fn the_jitter_spreads_a_pause_between_half_and_one_and_a_half() {
        let pause = Duration::from_millis(100);
        assert_eq!(jitter(pause, 0), Duration::from_millis(50));
        assert_eq!(jitter(pause, 999), Duration::from_micros(149_900));
        assert_eq!(jitter(pause, 1_000_500), pause);
    }
}
