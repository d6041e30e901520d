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

/// One authenticated connection to twofoldd's socket or to a bus.
pub struct Conn {
    stream: UnixStream,
    /// `BEGIN` is still to be sent: it goes out with the first message, so
    /// the authentication costs one round trip.
    begin: bool,
}

impl Conn {
    /// Connect to the socket at `path` and authenticate as this process's
    /// effective uid (what the kernel reports to the peer), all within
    /// `within`. A bus also needs [`Conn::hello`] before any call.
    pub fn open(path: &Path, within: Duration) -> zbus::Result<Self> {
        let deadline = SystemClock.now() + within;
        let stream = ffi::connect_unix(path, within).map_err(|e| connect_error(e, path))?;
        let mut conn = Self {
            stream,
            begin: true,
        };
        let auth = format!("\0AUTH EXTERNAL {}\r\n", hex(&ffi::euid().to_string()));
        conn.write(auth.as_bytes(), deadline)?;
        let line = conn.read_line(deadline)?;
        if !line.starts_with(b"OK ") {
            return Err(zbus::Error::Handshake(format!(
                "the peer refused the authentication: {}",
                String::from_utf8_lossy(line.trim_ascii_end())
            )));
        }
        Ok(conn)
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
        if std::mem::take(&mut self.begin) {
            let mut out = Vec::with_capacity(7 + bytes.len());
            out.extend_from_slice(b"BEGIN\r\n");
            out.extend_from_slice(bytes);
            self.write(&out, deadline)?;
        } else {
            self.write(bytes, deadline)?;
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

    /// Fill `buf` from the stream, by `deadline`.
    fn read_exact(&mut self, buf: &mut [u8], deadline: Instant) -> zbus::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            done += self.read_some(&mut buf[done..], deadline)?;
        }
        Ok(())
    }

    fn read_some(&mut self, buf: &mut [u8], deadline: Instant) -> zbus::Result<usize> {
        loop {
            self.stream.set_read_timeout(Some(left(deadline)?))?;
            match self.stream.read(buf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// The server's one line of the authentication. It sends nothing more
    /// before `BEGIN`, so reading in blocks cannot take a message along.
    fn read_line(&mut self, deadline: Instant) -> zbus::Result<Vec<u8>> {
        let mut line = Vec::with_capacity(64);
        let mut buf = [0u8; MAX_AUTH_LINE];
        while !line.ends_with(b"\r\n") {
            let room = MAX_AUTH_LINE - line.len();
            if room == 0 {
                return Err(zbus::Error::Handshake(
                    "authentication line too long".into(),
                ));
            }
            let n = self.read_some(&mut buf[..room], deadline)?;
            line.extend_from_slice(&buf[..n]);
        }
        Ok(line)
    }

    /// One whole message, its size checked from its primary header before
    /// the rest is read.
    fn read_message(&mut self, deadline: Instant) -> zbus::Result<Message> {
        let mut primary = [0u8; PRIMARY_HEADER];
        self.read_exact(&mut primary, deadline)?;
        let len = wire::message_len(&primary, MAX_REPLY_FIELDS, MAX_REPLY_BODY)
            .map_err(io::Error::from)?;
        let mut bytes = vec![0u8; len];
        bytes[..PRIMARY_HEADER].copy_from_slice(&primary);
        self.read_exact(&mut bytes[PRIMARY_HEADER..], deadline)?;
        let endian = if primary[0] == b'l' {
            Endian::Little
        } else {
            Endian::Big
        };
        let context = serialized::Context::new(endian, 0);
        ffi::message_from_bytes(serialized::Data::new(bytes, context))
    }
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
        let dir = std::env::temp_dir().join(format!("twofold-conn-{}", ffi::euid()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("peer-{:?}.sock", std::thread::current().id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let peer = std::thread::spawn(move || script(listener.accept().unwrap().0));
        let conn = Conn::open(&path, Duration::from_secs(5));
        let _ = std::fs::remove_file(&path);
        (conn, peer)
    }

    /// Read the client's authentication line and answer `answer`.
    fn authenticate(stream: &mut UnixStream, answer: &[u8]) {
        let mut line = Vec::new();
        let mut byte = [0u8];
        while !line.ends_with(b"\r\n") {
            stream.read_exact(&mut byte).unwrap();
            line.push(byte[0]);
        }
        let expected = format!("\0AUTH EXTERNAL {}\r\n", hex(&ffi::euid().to_string()));
        assert_eq!(line, expected.as_bytes());
        stream.write_all(answer).unwrap();
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
    fn a_refused_authentication_is_a_handshake_error() {
        let (conn, peer) = scripted_peer(|mut s| authenticate(&mut s, b"REJECTED EXTERNAL\r\n"));
        peer.join().unwrap();
        assert!(matches!(conn, Err(zbus::Error::Handshake(_))));
    }

    #[test]
    fn the_reply_is_found_after_other_messages_and_begin_goes_with_the_first_call() {
        let call = ping();
        let expected = call.data().to_vec();
        let reply = reply_bytes(Some(&call), "pong");
        let noise = reply_bytes(None, "noise");
        let (conn, peer) = scripted_peer(move |mut s| {
            authenticate(&mut s, GUID_LINE);
            let mut got = vec![0u8; 7 + expected.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got[..7], b"BEGIN\r\n");
            assert_eq!(&got[7..], &expected[..]);
            s.write_all(&noise).unwrap();
            s.write_all(&reply).unwrap();
        });
        let answer = conn.unwrap().call(&call, Duration::from_secs(5)).unwrap();
        peer.join().unwrap();
        assert_eq!(answer.body().deserialize::<String>().unwrap(), "pong");
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
