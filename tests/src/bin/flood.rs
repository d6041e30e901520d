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
//! Prints one line: `calls=N served=N busy=N refused=N failed=N`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

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

fn main() -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let large = words.get(3).map(String::as_str) == Some("large");
    let mut args = words.iter().take(3).map(|a| a.parse::<u64>());
    let (Some(Ok(secs)), Some(Ok(connections)), Ok(bytes), true) = (
        args.next(),
        args.next(),
        args.next().unwrap_or(Ok(64 * 1024)),
        words.len() <= 3 || large && words.len() == 4,
    ) else {
        eprintln!("usage: twofold-flood SECONDS CONNECTIONS [BYTES [large]]");
        return ExitCode::from(2);
    };
    let Ok(bytes) = usize::try_from(bytes) else {
        eprintln!("twofold-flood: BYTES is too large");
        return ExitCode::from(2);
    };
    let until = Instant::now() + Duration::from_secs(secs);
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
