//! A local user flooding twofoldd, run as that user with
//! `DBUS_SYSTEM_BUS_ADDRESS` set.
//!
//! `twofold-flood SECONDS CONNECTIONS [BYTES]`: each connection, on its own
//! thread, calls without pause the costliest methods a user may call for
//! their own account (`BeginEnrollment`: a key and two QR codes; `Status`:
//! NSS and the state) and an oversized argument of BYTES (64 KiB unless
//! given), for SECONDS.
//!
//! `twofold-flood SECONDS CONNECTIONS BYTES large`: each connection sends,
//! without waiting for answers, `BeginLogin` and `ConfirmEnrollment` calls
//! whose bodies are BYTES long (the bus allows up to 32 MiB), for SECONDS:
//! the large-message attack on twofoldd's memory.
//!
//! `twofold-flood SECONDS CONNECTIONS BYTES socket`: on twofoldd's login
//! socket (`TWOFOLD_SOCKET`), keeps opening connections up to CONNECTIONS
//! at a time, a third of them silent, a third stopping halfway through the
//! authentication, a third authenticating and then sending the header of a
//! message with a body of BYTES and the first 64 KiB of it; every 200 ms it
//! counts which are still open, for SECONDS. Prints
//! `opened=N held_max=N closed=N failed=N`.
//!
//! `twofold-flood SECONDS CONNECTIONS 0 hold`: on the login socket, opens
//! CONNECTIONS connections that authenticate and then say nothing, and
//! holds them, opening another whenever one is closed, every 100 ms, until
//! SECONDS have passed or its standard input ends. Prints `held=N closed=N`
//! each time either changes (`closed`: by twofoldd, so far), then
//! `opened=N held_max=N held=N closed=N failed=N`.
//!
//! Otherwise it prints one line: `calls=N served=N busy=N refused=N failed=N`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use twofold_protocol::{BUS_NAME, INTERFACE, OBJECT_PATH, TwofoldError, TwofoldProxy};

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    served: AtomicU64,
    busy: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count<T>(&self, r: Result<T, TwofoldError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counter = match r {
            Ok(_) => &self.served,
            Err(TwofoldError::Busy(_)) => &self.busy,
            Err(TwofoldError::ZBus(_)) => &self.failed,
            Err(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn flood(until: Instant, bytes: usize, tally: &Tally) -> zbus::Result<()> {
    let conn = zbus::Connection::system().await?;
    let proxy = TwofoldProxy::new(&conn).await?;
    let huge = "9".repeat(bytes);
    let mut n = 0u64;
    while Instant::now() < until {
        match n % 3 {
            0 => tally.count(proxy.begin_enrollment().await),
            1 => tally.count(proxy.status().await),
            _ => tally.count(proxy.confirm_enrollment(&huge).await),
        }
        n += 1;
    }
    Ok(())
}

/// Large bodies, sent as fast as the bus takes them; the answers (if any)
/// are never read, as an attacker would not.
async fn flood_large(until: Instant, body_bytes: usize, tally: &Tally) -> zbus::Result<()> {
    let conn = zbus::Connection::system().await?;
    let huge = "9".repeat(body_bytes);
    let mut n = 0u64;
    while Instant::now() < until {
        let call = zbus::Message::method_call(OBJECT_PATH, "BeginLogin")
            .destination(BUS_NAME)
            .interface(INTERFACE);
        let msg = if n.is_multiple_of(2) {
            call.build(&(huge.as_str(), "sshd", "192.0.2.1"))?
        } else {
            call.member("ConfirmEnrollment").build(&(huge.as_str(),))?
        };
        tally.calls.fetch_add(1, Ordering::Relaxed);
        if conn.send(&msg).await.is_err() {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
        n += 1;
    }
    Ok(())
}

/// One connection of the socket flood: silent, half an authentication, or
/// a whole one and then an oversized message.
fn open_one(path: &std::path::Path, kind: u64, body_bytes: u32) -> std::io::Result<UnixStream> {
    use std::io::{BufRead, Write};
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_millis(100)))?;
    if kind == 0 {
        return Ok(s);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() }.to_string();
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    s.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
    if kind == 1 {
        return Ok(s);
    }
    let mut ok = String::new();
    std::io::BufReader::new(&s).read_line(&mut ok)?;
    if !ok.starts_with("OK ") {
        return Err(std::io::Error::other(format!("no OK: {ok:?}")));
    }
    let mut header = Vec::from(*b"BEGIN\r\nl\x01\x00\x01");
    header.extend_from_slice(&body_bytes.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    s.write_all(&header)?;
    // As much of the body as the socket takes now.
    let _ = s.write(&[b'9'; 64 * 1024]);
    Ok(s)
}

/// A connection that authenticates (`BEGIN`) and then says nothing, as a
/// login at its code prompt does after its `BeginLogin`.
fn open_held(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use std::io::{BufRead, Write};
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_millis(500)))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() }.to_string();
    let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
    s.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())?;
    let mut ok = String::new();
    std::io::BufReader::new(&s).read_line(&mut ok)?;
    if !ok.starts_with("OK ") {
        return Err(std::io::Error::other(format!("no OK: {ok:?}")));
    }
    s.write_all(b"BEGIN\r\n")?;
    Ok(s)
}

fn hold_socket(until: Instant, connections: u64) -> ExitCode {
    use std::io::Write;
    let Some(path) = std::env::var_os("TWOFOLD_SOCKET") else {
        eprintln!("twofold-flood: set TWOFOLD_SOCKET to twofoldd's login socket");
        return ExitCode::from(2);
    };
    let path = std::path::PathBuf::from(path);
    raise_descriptor_limit();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stopper.store(true, Ordering::SeqCst);
    });
    let (mut opened, mut held_max, mut closed, mut failed) = (0u64, 0usize, 0u64, 0u64);
    let mut open: Vec<UnixStream> = Vec::new();
    let mut said = (usize::MAX, 0);
    let mut out = std::io::stdout();
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        while (open.len() as u64) < connections {
            match open_held(&path) {
                Ok(s) => {
                    opened += 1;
                    open.push(s);
                }
                // Refused (the pool full), or out of descriptors: next round.
                Err(_) => {
                    failed += 1;
                    break;
                }
            }
        }
        let before = open.len();
        open.retain(still_open);
        closed += (before - open.len()) as u64;
        held_max = held_max.max(before);
        if (open.len(), closed) != said {
            said = (open.len(), closed);
            let _ = writeln!(out, "held={} closed={closed}", open.len());
            let _ = out.flush();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "opened={opened} held_max={held_max} held={} closed={closed} failed={failed}",
        open.len()
    );
    ExitCode::SUCCESS
}

/// Whether `s` is still open (its peer has not closed it); pending bytes
/// (an answer to the authentication) are read and dropped.
fn still_open(s: &UnixStream) -> bool {
    use std::io::Read;
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

fn flood_socket(until: Instant, connections: u64, body_bytes: u32) -> ExitCode {
    let Some(path) = std::env::var_os("TWOFOLD_SOCKET") else {
        eprintln!("twofold-flood: set TWOFOLD_SOCKET to twofoldd's login socket");
        return ExitCode::from(2);
    };
    let path = std::path::PathBuf::from(path);
    raise_descriptor_limit();
    let (mut opened, mut held_max, mut closed, mut failed) = (0u64, 0usize, 0u64, 0u64);
    let mut open: Vec<UnixStream> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        while (open.len() as u64) < connections && Instant::now() < until {
            match open_one(&path, n % 3, body_bytes) {
                Ok(s) => {
                    opened += 1;
                    open.push(s);
                }
                // Refused at once (over the caps), or out of descriptors.
                Err(_) => failed += 1,
            }
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
        let before = open.len();
        open.retain(still_open);
        closed += (before - open.len()) as u64;
        held_max = held_max.max(open.len());
    }
    println!("opened={opened} held_max={held_max} closed={closed} failed={failed}");
    ExitCode::SUCCESS
}

/// As many descriptors as the hard limit allows.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let large = words.get(3).map(String::as_str) == Some("large");
    let socket = words.get(3).map(String::as_str) == Some("socket");
    let hold = words.get(3).map(String::as_str) == Some("hold");
    let mut args = words.iter().take(3).map(|a| a.parse::<u64>());
    let (Some(Ok(secs)), Some(Ok(connections)), Ok(bytes), true) = (
        args.next(),
        args.next(),
        args.next().unwrap_or(Ok(64 * 1024)),
        words.len() <= 3 || (large || socket || hold) && words.len() == 4,
    ) else {
        eprintln!("usage: twofold-flood SECONDS CONNECTIONS [BYTES [large|socket|hold]]");
        return ExitCode::from(2);
    };
    let Ok(bytes) = usize::try_from(bytes) else {
        eprintln!("twofold-flood: BYTES is too large");
        return ExitCode::from(2);
    };
    let until = Instant::now() + Duration::from_secs(secs);
    if hold {
        return hold_socket(until, connections);
    }
    if socket {
        let Ok(bytes) = u32::try_from(bytes) else {
            eprintln!("twofold-flood: BYTES is too large for one message");
            return ExitCode::from(2);
        };
        return flood_socket(until, connections, bytes);
    }
    let tally = Tally::default();
    std::thread::scope(|s| {
        for _ in 0..connections {
            s.spawn(|| {
                let done = if large {
                    zbus::block_on(flood_large(until, bytes, &tally))
                } else {
                    zbus::block_on(flood(until, bytes, &tally))
                };
                if let Err(e) = done {
                    eprintln!("twofold-flood: {e}");
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "calls={} served={} busy={} refused={} failed={}",
        get(&tally.calls),
        get(&tally.served),
        get(&tally.busy),
        get(&tally.refused),
        get(&tally.failed)
    );
    ExitCode::SUCCESS
}
