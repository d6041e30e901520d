//! One login-socket connection as zbus reads and writes it, with the bounds
//! a socket anyone local can reach needs before zbus allocates anything:
//! each message's primary header is read on its own and a message whose
//! body is over `limits::MAX_BODY_BYTES` (or whose header fields are over
//! `MAX_FIELDS_BYTES`) ends the connection unread, instead of zbus reading
//! up to 128 MiB of it. The authentication lines are handed over one at a
//! time, so the first message never hides in zbus's handshake buffer.
//!
//! The peer's credentials are the kernel's (`SO_PEERCRED`, read at accept):
//! zbus's own socket would also look the peer's groups up through NSS on
//! the blocking pool for every connection, which nothing here uses.

use super::peer::Peer;
use crate::limits::MAX_BODY_BYTES;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use twofold_protocol::wire::{self, PRIMARY_HEADER};
use zbus::connection::socket::{ReadHalf, Socket, Split, WriteHalf};
use zbus::export::async_trait::async_trait;
use zbus::fdo::ConnectionCredentials;

/// Bytes of a message's header fields (path, interface, member, signature;
/// about 100 for a real call).
pub const MAX_FIELDS_BYTES: u32 = 4096;
/// Bytes of the authentication exchange (a real one is under 100).
const MAX_AUTH_BYTES: usize = 4096;

type Io = Arc<zruntime::AsyncIo<UnixStream, zruntime::Shared>>;

/// How a connection ended, for the task that holds it.
#[derive(Default)]
pub struct Closed {
    closed: AtomicBool,
    oversized: AtomicBool,
    event: zruntime::Event,
}

impl Closed {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Wait until zbus has stopped reading the connection (its peer closed
    /// it, sent something refused, or the connection was dropped).
    pub async fn wait(&self) {
        loop {
            let listener = self.event.listen();
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }

    /// Whether it ended on a message over the size bounds.
    pub fn oversized(&self) -> bool {
        self.oversized.load(Ordering::SeqCst)
    }
}

/// An accepted connection, for `zbus::connection::Builder::socket`.
pub struct Framed {
    io: Io,
    peer: Peer,
    closed: Arc<Closed>,
}

impl Framed {
    pub fn new(io: zruntime::AsyncIo<UnixStream, zruntime::Shared>, peer: Peer) -> Self {
        Self {
            io: Arc::new(io),
            peer,
            closed: Arc::default(),
        }
    }

    pub fn closed(&self) -> Arc<Closed> {
        self.closed.clone()
    }
}

impl Socket for Framed {
    type ReadHalf = Reader;
    type WriteHalf = Writer;

    fn split(self) -> Split<Reader, Writer> {
        Split::new(
            Reader {
                io: self.io.clone(),
                peer: self.peer,
                phase: Phase::Auth {
                    line_end: false,
                    line: Vec::new(),
                    read: 0,
                },
                closed: self.closed,
            },
            Writer {
                io: self.io,
                peer: self.peer,
            },
        )
    }
}

/// Where the reader is in the stream.
enum Phase {
    /// The authentication lines, up to and including `BEGIN`.
    Auth {
        line_end: bool,
        line: Vec<u8>,
        read: usize,
    },
    /// A message's primary header: `got` of its 16 bytes so far.
    Header {
        got: usize,
        bytes: [u8; PRIMARY_HEADER],
    },
    /// The rest of a message whose size was checked.
    Body { left: usize },
}

pub struct Reader {
    io: Io,
    peer: Peer,
    phase: Phase,
    closed: Arc<Closed>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("peer", &self.peer).finish()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.closed.close();
    }
}

fn credentials(peer: Peer) -> ConnectionCredentials {
    let creds = ConnectionCredentials::default().set_unix_user_id(peer.uid);
    match peer.pid {
        Some(pid) => creds.set_process_id(pid),
        None => creds,
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `recv(2)` of up to `buf.len()` bytes, waiting for the socket to be readable.
async fn recv(io: &Io, buf: &mut [u8], peek: bool) -> io::Result<usize> {
    let flags = if peek { libc::MSG_PEEK } else { 0 };
    let n = io
        .read_with(|s| {
            // SAFETY: the pointer and length are those of `buf`, which
            // outlives the call; recv writes at most that many bytes.
            let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
        .await?;
    if n == 0 && !buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the peer closed the connection",
        ));
    }
    Ok(n)
}

/// The whole length of the message a primary header opens, or an error if
/// it is over twofoldd's bounds.
pub fn message_len(h: &[u8; PRIMARY_HEADER]) -> io::Result<usize> {
    Ok(wire::message_len(h, MAX_FIELDS_BYTES, MAX_BODY_BYTES)?)
}

impl Reader {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.phase {
            Phase::Auth {
                line_end,
                line,
                read,
            } => {
                // Peek, then take at most one line: zbus's handshake reads
                // in blocks, and must not take the first message's header
                // along with `BEGIN`.
                let seen = recv(&self.io, buf, true).await?;
                let take = buf[..seen]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(seen, |i| i + 1);
                let n = recv(&self.io, &mut buf[..take], false).await?;
                *read += n;
                if *read > MAX_AUTH_BYTES {
                    return Err(invalid("authentication exchange too long"));
                }
                if *line_end {
                    line.clear();
                    *line_end = false;
                }
                line.extend_from_slice(&buf[..n]);
                if line.ends_with(b"\n") {
                    *line_end = true;
                    let text = line.strip_prefix(b"\0").unwrap_or(line);
                    if text.trim_ascii_end() == b"BEGIN" {
                        self.phase = Phase::Header {
                            got: 0,
                            bytes: [0; PRIMARY_HEADER],
                        };
                    }
                }
                Ok(n)
            }
            Phase::Header { got, bytes } => {
                let want = buf.len().min(PRIMARY_HEADER - *got);
                let n = recv(&self.io, &mut buf[..want], false).await?;
                bytes[*got..*got + n].copy_from_slice(&buf[..n]);
                *got += n;
                if *got == PRIMARY_HEADER {
                    let len = match message_len(bytes) {
                        Ok(len) => len,
                        Err(e) => {
                            self.closed.oversized.store(true, Ordering::SeqCst);
                            return Err(e);
                        }
                    };
                    self.phase = match len - PRIMARY_HEADER {
                        0 => Phase::Header {
                            got: 0,
                            bytes: [0; PRIMARY_HEADER],
                        },
                        left => Phase::Body { left },
                    };
                }
                Ok(n)
            }
            Phase::Body { left } => {
                let want = buf.len().min(*left);
                let n = recv(&self.io, &mut buf[..want], false).await?;
                *left -= n;
                if *left == 0 {
                    self.phase = Phase::Header {
                        got: 0,
                        bytes: [0; PRIMARY_HEADER],
                    };
                }
                Ok(n)
            }
        }
    }
}

#[async_trait]
impl ReadHalf for Reader {
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        // File descriptors are never taken (no method has one): plain recv.
        Ok((self.read(buf).await?, Vec::new()))
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(credentials(self.peer))
    }
}

pub struct Writer {
    io: Io,
    peer: Peer,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("peer", &self.peer).finish()
    }
}

#[async_trait]
impl WriteHalf for Writer {
    async fn sendmsg(
        &mut self,
        buffer: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "twofoldd sends no file descriptors",
            ));
        }
        self.io
            .write_with(|s| {
                // SAFETY: the pointer and length are those of `buffer`;
                // MSG_NOSIGNAL: a peer gone is an error, not a SIGPIPE.
                let n = unsafe {
                    libc::send(
                        s.as_raw_fd(),
                        buffer.as_ptr().cast(),
                        buffer.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await
    }

    async fn close(&mut self) -> io::Result<()> {
        match self.io.get_ref().shutdown(std::net::Shutdown::Both) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }

    async fn peer_credentials(&mut self) -> io::Result<ConnectionCredentials> {
        Ok(credentials(self.peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian method call's primary header.
    fn header(body: u32, fields: u32) -> [u8; 16] {
        let mut h = [b'l', 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        h[4..8].copy_from_slice(&body.to_le_bytes());
        h[12..16].copy_from_slice(&fields.to_le_bytes());
        h
    }

    #[test]
    fn a_message_over_the_bounds_is_refused_before_it_is_read() {
        assert!(message_len(&header(MAX_BODY_BYTES, MAX_FIELDS_BYTES)).is_ok());
        assert!(message_len(&header(MAX_BODY_BYTES + 1, 100)).is_err());
        assert!(message_len(&header(128 << 20, 100)).is_err());
        assert!(message_len(&header(10, MAX_FIELDS_BYTES + 1)).is_err());
    }
}
