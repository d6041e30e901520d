//! A D-Bus connection used with blocking calls, each step within a
//! deadline: what one login needs of D-Bus (connect, the EXTERNAL
//! authentication, `Hello` on a bus, method calls and their replies) and
//! nothing more. zbus builds and parses every message; this file only
//! moves their bytes. Without zbus's connection there is no runtime, no
//! executor and no task per login in the host (sshd, su, a screen locker):
//! that machinery was most of the module's CPU time per login.

use crate::clock::{Clock, SystemClock};
use crate::ffi;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use twofold_protocol::wire::{self, PRIMARY_HEADER};
use zbus::message::{Message, Type};
use zbus::wire::{Endian, serialized};

/// Bytes of a reply's header fields; twofoldd's and a bus's are under 300.
const MAX_REPLY_FIELDS: u32 = 4096;
/// Bytes of a reply's body: an enrollment offer with its QR codes is about
/// 10 KiB; anything near this bound is not twofoldd.
const MAX_REPLY_BODY: u32 = 256 * 1024;
/// Bytes of the server's answer to `AUTH` (`OK` and a 32-digit GUID).
const MAX_AUTH_LINE: usize = 256;
/// Messages that are not the awaited reply (a bus's `NameAcquired`
/// signal) skipped while waiting for it, at most.
const MAX_SKIPPED: usize = 16;

/// One connection to twofoldd's socket or to a bus.
pub struct Conn {
    stream: UnixStream,
    /// When the authentication is still to be done, the time it must be
    /// done by: `AUTH`, `BEGIN` and the first message go out in one write,
    /// and the server's `OK` is read before that message's reply, so the
    /// handshake costs no round trip of its own (the D-Bus specification
    /// lets a client send before the answer; sd-bus does the same).
    handshake: Option<Instant>,
    /// Bytes read and not yet taken: the rest of a read that went past
    /// the `OK` line or past a message.
    input: Vec<u8>,
}

impl Conn {
    /// Connect to the socket at `path` within `within`; the authentication
    /// (as this process's effective uid, what the kernel reports to the
    /// peer) goes with the first call and must be answered within `within`
    /// of now: a failure there is a [`zbus::Error::Handshake`]. A bus also
    /// needs [`Conn::hello`] before any call.
    pub fn open(path: &Path, within: Duration) -> zbus::Result<Self> {
        let deadline = SystemClock.now() + within;
        let stream = ffi::connect_unix(path, within).map_err(|e| connect_error(e, path))?;
        Ok(Self {
            stream,
            handshake: Some(deadline),
            input: Vec::new(),
        })
    }

    /// Register on a bus (the bus answers nothing else before it), within
    /// `within`.
    pub fn hello(&mut self, within: Duration) -> zbus::Result<()> {
        let hello = Message::method_call("/org/freedesktop/DBus", "Hello")
            .destination("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .build(&())?;
        self.call(&hello, within).map(drop)
    }

    /// Send `call` and wait up to `within` for its reply: the reply
    /// message, or the error it carries (as zbus gives it).
    pub fn call(&mut self, call: &Message, within: Duration) -> zbus::Result<Message> {
        let deadline = SystemClock.now() + within;
        let serial = call.primary_header().serial_num();
        let bytes: &[u8] = call.data();
        match self.handshake.take() {
            Some(by) => {
                let auth = format!(
                    "\0AUTH EXTERNAL {}\r\nBEGIN\r\n",
                    hex(&ffi::euid().to_string())
                );
                let mut out = Vec::with_capacity(auth.len() + bytes.len());
                out.extend_from_slice(auth.as_bytes());
                out.extend_from_slice(bytes);
                self.write(&out, by.min(deadline))
                    .and_then(|()| self.read_line(by))
                    .map_err(|e| handshake_error(&e, by))
                    .and_then(|line| authenticated(&line))?;
            }
            None => self.write(bytes, deadline)?,
        }
        for _ in 0..=MAX_SKIPPED {
            let reply = self.read_message(deadline)?;
            let header = reply.header();
            if header.reply_serial() != Some(serial) {
                continue;
            }
            return match header.message_type() {
                Type::MethodReturn => Ok(reply),
                Type::Error => Err(reply.into()),
                _ => Err(zbus::Error::InvalidReply),
            };
        }
        Err(zbus::Error::InvalidReply)
    }

    fn write(&mut self, bytes: &[u8], deadline: Instant) -> zbus::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            self.stream.set_write_timeout(Some(left(deadline)?))?;
            match self.stream.write(&bytes[done..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(())
    }

    /// Read once more into `input`, by `deadline`: as much as the socket
    /// has, up to a block (a whole reply, usually).
    fn fill(&mut self, deadline: Instant) -> zbus::Result<()> {
        let mut block = [0u8; 4096];
        loop {
            self.stream.set_read_timeout(Some(left(deadline)?))?;
            match self.stream.read(&mut block) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => {
                    self.input.extend_from_slice(&block[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// The server's one line of the authentication (`OK <guid>` or its
    /// refusal); what came after it stays in `input`.
    fn read_line(&mut self, deadline: Instant) -> zbus::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") {
                let rest = self.input.split_off(end + 2);
                return Ok(std::mem::replace(&mut self.input, rest));
            }
            if self.input.len() >= MAX_AUTH_LINE {
                return Err(zbus::Error::Handshake(
                    "authentication line too long".into(),
                ));
            }
            self.fill(deadline)?;
        }
    }

    /// One whole message, its size checked from its primary header before
    /// the rest is read.
    fn read_message(&mut self, deadline: Instant) -> zbus::Result<Message> {
        while self.input.len() < PRIMARY_HEADER {
            self.fill(deadline)?;
        }
        let mut primary = [0u8; PRIMARY_HEADER];
        primary.copy_from_slice(&self.input[..PRIMARY_HEADER]);
        let len = wire::message_len(&primary, MAX_REPLY_FIELDS, MAX_REPLY_BODY)
            .map_err(io::Error::from)?;
        let endian = if primary[0] == b'l' {
            Endian::Little
        } else {
            Endian::Big
        };
        while self.input.len() < len {
            self.fill(deadline)?;
        }
        let rest = self.input.split_off(len);
        let bytes = std::mem::replace(&mut self.input, rest);
        let context = serialized::Context::new(endian, 0);
        ffi::message_from_bytes(serialized::Data::new(bytes, context))
    }
}

/// The server's answer to the authentication, if it is not `OK`.
fn authenticated(line: &[u8]) -> zbus::Result<()> {
    if line.starts_with(b"OK ") {
        return Ok(());
    }
    Err(zbus::Error::Handshake(format!(
        "the peer refused the authentication: {}",
        String::from_utf8_lossy(line.trim_ascii_end())
    )))
}

/// A failure during the authentication, as the handshake error it is
/// (the caller tells it from a failed call: the peer never took the
/// connection).
fn handshake_error(e: &zbus::Error, by: Instant) -> zbus::Error {
    if let zbus::Error::Handshake(_) = e {
        return e.clone();
    }
    let timed_out = matches!(e, zbus::Error::InputOutput(e) if e.kind() == io::ErrorKind::TimedOut);
    if timed_out && SystemClock.now() >= by {
        return zbus::Error::Handshake(
            "no answer to the authentication in time (timed out)".into(),
        );
    }
    zbus::Error::Handshake(format!("the authentication failed: {e}"))
}

/// The time left before `deadline`, or a timeout error once it has passed.
fn left(deadline: Instant) -> zbus::Result<Duration> {
    let left = deadline.saturating_duration_since(SystemClock.now());
    if left.is_zero() {
        return Err(io::Error::from(io::ErrorKind::TimedOut).into());
    }
    Ok(left)
}

/// A socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` give `EAGAIN`) as the
/// timeout it is.
fn io_error(e: io::Error) -> zbus::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock => io::Error::from(io::ErrorKind::TimedOut).into(),
        _ => e.into(),
    }
}

/// A failed connect(2), as zbus reports one: the address with the error,
/// so that "nothing listens there" can be told from other failures.
fn connect_error(e: io::Error, path: &Path) -> zbus::Error {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return io::Error::from(io::ErrorKind::TimedOut).into();
    }
    match zbus::Address::try_from(socket_address(path).as_str()) {
        Ok(address) => zbus::Error::Connection(std::sync::Arc::new(e), Box::new(address)),
        Err(_) => e.into(),
    }
}

/// The D-Bus address of the socket at `path`, its bytes escaped as the
/// specification says for values.
fn socket_address(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut address = String::from("unix:path=");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            address.push(char::from(b));
        } else {
            address.push_str(&format!("%{b:02x}"));
        }
    }
    address
}

/// Lower-case hex of `text`'s bytes, as the EXTERNAL mechanism sends the uid.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_goes_out_as_hex_of_its_decimal_digits() {
        assert_eq!(hex("0"), "30");
        assert_eq!(hex("1000"), "31303030");
    }

    #[test]
    fn a_socket_path_becomes_an_escaped_address() {
        let plain = Path::new("/run/twofold/login.sock");
        assert_eq!(socket_address(plain), "unix:path=/run/twofold/login.sock");
        let odd = Path::new("/tmp/a b,c=d%");
        assert_eq!(socket_address(odd), "unix:path=/tmp/a%20b%2cc%3dd%25");
    }

    /// A peer on a real socket, run by `script` on its own thread (it gets
    /// the accepted stream); the client's connection to it.
    fn scripted_peer(
        script: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (zbus::Result<Conn>, std::thread::JoinHandle<()>) {
        scripted_peer_within(Duration::from_secs(5), script)
    }

    /// The same, with `within` for the connection's handshake.
    fn scripted_peer_within(
        within: Duration,
        script: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (zbus::Result<Conn>, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("twofold-conn-{}", ffi::euid()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("peer-{:?}.sock", std::thread::current().id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || script(listener.accept().unwrap().0));
        let conn = Conn::open(&path, within);
        let _ = std::fs::remove_file(&path);
        (conn, peer)
    }

    /// Read the client's authentication line and answer `answer`.
    fn authenticate(stream: &mut UnixStream, answer: &[u8]) {
        read_line(
            stream,
            &format!("\0AUTH EXTERNAL {}\r\n", hex(&ffi::euid().to_string())),
        );
        stream.write_all(answer).unwrap();
    }

    /// Read one line from the client, which must be `expected`.
    fn read_line(stream: &mut UnixStream, expected: &str) {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while !line.ends_with(b"\r\n") {
            stream.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        assert_eq!(line, expected.as_bytes());
    }

    fn ping() -> Message {
        Message::method_call("/a", "Ping").build(&()).unwrap()
    }

    /// The reply to `call` (or an unrelated signal when `call` is none), as bytes.
    fn reply_bytes(call: Option<&Message>, body: &str) -> Vec<u8> {
        let message = match call {
            Some(call) => Message::method_return(&call.header()).build(&body),
            None => Message::signal("/a", "a.b", "Noise").build(&body),
        };
        message.unwrap().data().to_vec()
    }

    const GUID_LINE: &[u8] = b"OK 0123456789abcdef0123456789abcdef\r\n";

    #[test]
    fn a_refused_authentication_is_a_handshake_error_of_the_first_call() {
        let (conn, peer) = scripted_peer(|mut s| authenticate(&mut s, b"REJECTED EXTERNAL\r\n"));
        let e = conn
            .unwrap()
            .call(&ping(), Duration::from_secs(5))
            .unwrap_err();
        peer.join().unwrap();
        assert!(matches!(e, zbus::Error::Handshake(m) if m.contains("REJECTED")));
    }

    /// The client sends its authentication, `BEGIN` and its first call
    /// before the server answers anything (the peer answers only once it
    /// has read all three); the reply is found after an unrelated signal
    /// that arrives in the same read as the `OK` line.
    #[test]
    fn the_handshake_goes_with_the_first_call_and_its_reply_is_found_after_other_messages() {
        let call = ping();
        let expected = call.data().to_vec();
        let reply = reply_bytes(Some(&call), "pong");
        let noise = reply_bytes(None, "noise");
        let (conn, peer) = scripted_peer(move |mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            read_line(
                &mut s,
                &format!("\0AUTH EXTERNAL {}\r\n", hex(&ffi::euid().to_string())),
            );
            read_line(&mut s, "BEGIN\r\n");
            let mut got = vec![0u8; expected.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(got, expected);
            let mut answer = GUID_LINE.to_vec();
            answer.extend_from_slice(&noise);
            answer.extend_from_slice(&reply);
            s.write_all(&answer).unwrap();
        });
        let mut conn = conn.unwrap();
        let answer = conn.call(&call, Duration::from_secs(5)).unwrap();
        peer.join().unwrap();
        assert_eq!(answer.body().deserialize::<String>().unwrap(), "pong");
        assert!(conn.input.is_empty());
    }

    #[test]
    fn a_peer_silent_in_the_handshake_is_a_handshake_error_at_its_deadline() {
        let (conn, peer) = scripted_peer_within(Duration::from_millis(300), move |mut s| {
            let _ = s.read_to_end(&mut Vec::new());
        });
        let started = SystemClock.now();
        let e = conn
            .unwrap()
            .call(&ping(), Duration::from_secs(20))
            .unwrap_err();
        let waited = started.elapsed();
        peer.join().unwrap();
        assert!(matches!(e, zbus::Error::Handshake(m) if m.contains("timed out")));
        assert!(waited < Duration::from_secs(3), "{waited:?}");
    }

    #[test]
    fn a_peer_gone_in_the_handshake_is_a_handshake_error() {
        let (conn, peer) = scripted_peer(drop);
        peer.join().unwrap();
        let e = conn
            .unwrap()
            .call(&ping(), Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(e, zbus::Error::Handshake(_)), "{e:?}");
    }

    #[test]
    fn a_reply_over_the_size_bound_is_refused_unread() {
        let call = ping();
        let sent = 7 + call.data().len();
        let (conn, peer) = scripted_peer(move |mut s| {
            authenticate(&mut s, GUID_LINE);
            s.read_exact(&mut vec![0u8; sent]).unwrap();
            // A method return announcing a 1 GiB body, and nothing of it.
            let mut h = [b'l', 2, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
            h[4..8].copy_from_slice(&(1u32 << 30).to_le_bytes());
            s.write_all(&h).unwrap();
        });
        let e = conn
            .unwrap()
            .call(&call, Duration::from_secs(5))
            .unwrap_err();
        peer.join().unwrap();
        assert!(matches!(e, zbus::Error::InputOutput(e) if e.kind() == io::ErrorKind::InvalidData));
    }

    #[test]
    fn a_silent_peer_is_a_timeout_at_the_deadline() {
        let (conn, peer) = scripted_peer(move |mut s| {
            authenticate(&mut s, GUID_LINE);
            // Hold the connection open, saying nothing, until the client goes.
            let _ = s.read_to_end(&mut Vec::new());
        });
        let started = SystemClock.now();
        let e = conn
            .unwrap()
            .call(&ping(), Duration::from_millis(300))
            .unwrap_err();
        let waited = started.elapsed();
        peer.join().unwrap();
        assert!(matches!(e, zbus::Error::InputOutput(e) if e.kind() == io::ErrorKind::TimedOut));
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3));
    }

    #[test]
    fn a_missing_socket_is_a_connection_error_naming_nothing_listens() {
        let e = Conn::open(
            Path::new("/nonexistent/twofold.sock"),
            Duration::from_secs(1),
        );
        assert!(
            matches!(e, Err(zbus::Error::Connection(e, _)) if e.kind() == io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn a_deadline_that_has_passed_is_a_timeout() {
        let past = SystemClock.now() - Duration::from_millis(1);
        let e = left(past).unwrap_err();
        assert!(matches!(e, zbus::Error::InputOutput(e) if e.kind() == io::ErrorKind::TimedOut));
    }
}
