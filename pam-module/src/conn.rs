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

    #[test]
    fn a_deadline_that_has_passed_is_a_timeout() {
        let past = SystemClock.now() - Duration::from_millis(1);
        let e = left(past).unwrap_err();
        assert!(matches!(e, zbus::Error::InputOutput(e) if e.kind() == io::ErrorKind::TimedOut));
    }
}
