//! One login-socket connection on its worker's thread, read and written
//! with blocking calls: the authentication exchange (the D-Bus spec's
//! `EXTERNAL` mechanism, judged by the kernel's `SO_PEERCRED` uid), then
//! one message at a time. No zbus connection is built: its executor,
//! handshake and reader cost about as much CPU per login as the login's
//! own work (docs/architecture.md), and the module's calls need none of it.
//!
//! The bounds a socket anyone local can reach needs come before anything is
//! allocated for a caller: the authentication exchange is at most
//! `MAX_AUTH_BYTES` in `MAX_AUTH_LINES` lines, within the deadline the
//! caller gives, and a message whose body is over `limits::MAX_BODY_BYTES`
//! (or whose header fields are over `MAX_FIELDS_BYTES`) ends the connection
//! unread. Bytes a client sends ahead (`BEGIN` and its first call in the
//! same write as `AUTH`) are kept for the next step, not lost.

use crate::limits::MAX_BODY_BYTES;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use twofold_protocol::wire::{self, PRIMARY_HEADER};
use zbus::Message;
use zbus::wire::Endian;
use zbus::wire::serialized::{Context, Data};

/// Bytes of a message's header fields (path, interface, member, signature;
/// about 100 for a real call).
pub const MAX_FIELDS_BYTES: u32 = 4096;
/// Bytes of the authentication exchange (a real one is under 100).
const MAX_AUTH_BYTES: usize = 4096;
/// Lines of the authentication exchange (a real one has 2 or 3).
const MAX_AUTH_LINES: usize = 16;
/// What is read at once: an authentication exchange, or a login's call, whole.
const READ_AHEAD: usize = 4096;
/// How long a reply may wait for room in the socket after `BEGIN`. A reply
/// is small and its client reads it at once, so only a peer that sends
/// calls and never reads their replies meets this: it is dropped rather
/// than holding its worker in `send` for ever.
pub const SEND_DEADLINE: Duration = Duration::from_secs(2);

/// The whole length of the message a primary header opens, or an error if
/// it is over twofoldd's bounds.
pub fn message_len(h: &[u8; PRIMARY_HEADER]) -> io::Result<usize> {
    Ok(wire::message_len(h, MAX_FIELDS_BYTES, MAX_BODY_BYTES)?)
}

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// The peer closed it (or it was shut down: evicted from its pool).
    Closed,
    /// A message over the size bounds (or no D-Bus message), refused unread.
    Oversized,
    /// The authentication failed or broke the protocol, or took too long;
    /// or a reply found no room within `SEND_DEADLINE`.
    Refused,
    /// Reading or writing failed, or a message zbus could not parse.
    Broken,
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => End::Closed,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Refused,
            _ => End::Broken,
        }
    }
}

/// A connection's stream and what was read of it but not yet used.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// `buf[at..]` is read and not yet used.
    at: usize,
}

/// The `SO_RCVTIMEO` and `SO_SNDTIMEO` of `stream`.
fn set_timeouts(stream: &UnixStream, t: Duration) -> io::Result<()> {
    // A zero duration means "for ever" to the kernel: keep it at least 1 µs.
    let t = Some(t.max(Duration::from_micros(1)));
    stream.set_read_timeout(t)?;
    stream.set_write_timeout(t)
}

impl Conn {
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(READ_AHEAD),
            at: 0,
        }
    }

    /// Read once more (up to `READ_AHEAD` bytes) after what is buffered.
    fn fill(&mut self) -> Result<(), End> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_AHEAD, 0);
        let n = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        match n {
            Ok(0) => Err(End::Closed),
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        // MSG_NOSIGNAL: a peer gone is an error, not a SIGPIPE.
        let mut sent = 0;
        while sent < bytes.len() {
            let rest = &bytes[sent..];
            // SAFETY: the pointer and length are those of `rest`, which
            // outlives the call; send reads at most that many bytes.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            sent += n as usize;
        }
        Ok(())
    }

    /// The next authentication line, without its `\r\n`, within `deadline`;
    /// `read` counts the exchange's bytes.
    fn line(&mut self, read: &mut usize, deadline: Instant) -> Result<Vec<u8>, End> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                *read += i + 1;
                if *read > MAX_AUTH_BYTES {
                    return Err(End::Refused);
                }
                let line = self.buf[self.at..self.at + i].to_vec();
                self.at += i + 1;
                let line = line.strip_suffix(b"\r").map(<[u8]>::to_vec).unwrap_or(line);
                return Ok(line);
            }
            if *read + self.buffered().len() > MAX_AUTH_BYTES {
                return Err(End::Refused);
            }
            let left = deadline
                .checked_duration_since(crate::clock::monotonic())
                .ok_or(End::Refused)?;
            set_timeouts(&self.stream, left)?;
            self.fill()?;
        }
    }

    /// The authentication exchange, server side, within `deadline`: the
    /// client's uid must be `uid` (the kernel's word). Ok once the client
    /// said `BEGIN`; after it, reads wait for ever (an idle connection is
    /// the pool's business, `pool.rs`) and writes up to `SEND_DEADLINE`.
    pub fn handshake(&mut self, uid: u32, guid: &str, deadline: Instant) -> Result<(), End> {
        let left = deadline
            .checked_duration_since(crate::clock::monotonic())
            .ok_or(End::Refused)?;
        set_timeouts(&self.stream, left)?;
        while self.buffered().is_empty() {
            self.fill()?;
        }
        // The credentials byte: zero (the credentials are SO_PEERCRED's).
        if self.buffered()[0] != 0 {
            return Err(End::Refused);
        }
        self.at += 1;
        let mut read = 1;
        let mut authenticated = false;
        let mut waiting_for_data = false;
        for _ in 0..MAX_AUTH_LINES {
            let line = self.line(&mut read, deadline)?;
            let mut words = line.split(|&b| b == b' ');
            let command = words.next().unwrap_or_default();
            let args: Vec<&[u8]> = words.collect();
            let reply: Vec<u8> = match (command, args.as_slice()) {
                (b"BEGIN", []) if authenticated => {
                    self.stream.set_read_timeout(None)?;
                    self.stream.set_write_timeout(Some(SEND_DEADLINE))?;
                    return Ok(());
                }
                // BEGIN before OK: the spec has the server disconnect.
                (b"BEGIN", _) => return Err(End::Refused),
                (b"AUTH", [b"EXTERNAL", id]) if !authenticated => {
                    if is_uid(id, uid) {
                        authenticated = true;
                        format!("OK {guid}\r\n").into_bytes()
                    } else {
                        b"REJECTED EXTERNAL\r\n".to_vec()
                    }
                }
                (b"AUTH", [b"EXTERNAL"]) if !authenticated => {
                    waiting_for_data = true;
                    b"DATA\r\n".to_vec()
                }
                // An empty response: the identity the kernel gave.
                (b"DATA", []) if waiting_for_data => {
                    waiting_for_data = false;
                    authenticated = true;
                    format!("OK {guid}\r\n").into_bytes()
                }
                (b"DATA", [id]) if waiting_for_data => {
                    waiting_for_data = false;
                    if is_uid(id, uid) {
                        authenticated = true;
                        format!("OK {guid}\r\n").into_bytes()
                    } else {
                        b"REJECTED EXTERNAL\r\n".to_vec()
                    }
                }
                (b"AUTH", _) | (b"CANCEL", _) | (b"ERROR", _) if !authenticated => {
                    waiting_for_data = false;
                    b"REJECTED EXTERNAL\r\n".to_vec()
                }
                // No descriptors are ever taken (no method has one).
                (b"NEGOTIATE_UNIX_FD", []) if authenticated => {
                    b"ERROR \"no file descriptors on this socket\"\r\n".to_vec()
                }
                (b"CANCEL", _) | (b"ERROR", _) => {
                    authenticated = false;
                    b"REJECTED EXTERNAL\r\n".to_vec()
                }
                _ => b"ERROR \"unknown command\"\r\n".to_vec(),
            };
            self.send(&reply)?;
        }
        Err(End::Refused)
    }

    /// The next message, read whole (with what was read ahead, usually in
    /// a single `recv`), if its size is within the bounds.
    pub fn message(&mut self) -> Result<Message, End> {
        while self.buffered().len() < PRIMARY_HEADER {
            self.fill()?;
        }
        let mut primary = [0; PRIMARY_HEADER];
        primary.copy_from_slice(&self.buffered()[..PRIMARY_HEADER]);
        let len = message_len(&primary).map_err(|_| End::Oversized)?;
        let mut bytes = Vec::with_capacity(len);
        let have = self.buffered().len().min(len);
        bytes.extend_from_slice(&self.buffered()[..have]);
        self.at += have;
        if bytes.len() < len {
            let got = bytes.len();
            bytes.resize(len, 0);
            self.stream.read_exact(&mut bytes[got..])?;
        }
        let endian = if primary[0] == b'l' {
            Endian::Little
        } else {
            Endian::Big
        };
        let data = Data::new(bytes, Context::new(endian, 0));
        // SAFETY: `from_bytes` is unsafe only in that the bytes come from
        // outside zbus: it parses and checks the header and its fields, and
        // the body is deserialized later with its signature checked. No
        // file descriptors come with the bytes (this socket takes none), so
        // no descriptor a message names can be mistaken for another.
        let msg = unsafe { Message::from_bytes(data) };
        msg.map_err(|_| End::Broken)
    }

    /// Send `msg` whole.
    pub fn reply(&mut self, msg: &Message) -> Result<(), End> {
        self.send(msg.data().bytes())
    }
}

/// Whether `hex` is the hex of `uid` in decimal ASCII (the `EXTERNAL` mechanism's identity).
fn is_uid(hex: &[u8], uid: u32) -> bool {
    let want = uid.to_string();
    hex.len() == 2 * want.len()
        && hex.chunks(2).zip(want.bytes()).all(|(pair, digit)| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                == Some(digit)
        })
}
