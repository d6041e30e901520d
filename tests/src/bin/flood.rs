//! A local user flooding twofoldd: `twofold-flood SECONDS CONNECTIONS
//! [BYTES]`, run as that user with `DBUS_SYSTEM_BUS_ADDRESS` set. Each
//! connection, on its own thread, calls without pause the costliest methods a
//! user may call for their own account (`BeginEnrollment`: a key and two QR
//! codes; `Status`: NSS and the state) and an oversized argument of BYTES
//! (64 KiB unless given), for SECONDS. Prints one line:
//! `calls=N served=N busy=N refused=N failed=N`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use twofold_protocol::{TwofoldError, TwofoldProxy};

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

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let (Some(Ok(secs)), Some(Ok(connections)), Ok(bytes)) = (
        args.next(),
        args.next(),
        args.next().unwrap_or(Ok(64 * 1024)),
    ) else {
        eprintln!("usage: twofold-flood SECONDS CONNECTIONS [BYTES]");
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
                if let Err(e) = zbus::block_on(flood(until, bytes, &tally)) {
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
