//! twofoldd: loads the configuration, opens the state directory, and serves
//! the twofold interface on the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use twofoldd::audit::{self, Level};
use twofoldd::{backup, bus, config, engine::Engine, policy, store::FileStore};

#[derive(Parser)]
#[command(
    name = "twofoldd",
    version,
    about = "twofold's daemon: holds the secrets and verifies codes"
)]
struct Args {
    /// Configuration file (default /etc/twofold/twofold.toml; if that is missing, built-in defaults).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Also write log lines to standard error.
    #[arg(long)]
    log_stderr: bool,
    /// Check the configuration, print the effective settings, and exit.
    #[arg(long)]
    check_config: bool,
    /// Create and mark the state directory (once, at installation), and exit.
    /// Without it the daemon refuses a missing state directory rather than
    /// taking it to mean that nobody is enrolled.
    #[arg(long)]
    init: bool,
}

fn main() -> ExitCode {
    // First, before any thread or large allocation.
    let returns_large_blocks = return_large_blocks_to_the_kernel();
    let args = Args::parse();
    let source = match &args.config {
        Some(path) => config::Source::Explicit(path),
        None => config::Source::Default,
    };
    let (cfg, loaded_from) = match config::load(source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twofoldd: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{cfg:#?}");
        return match policy::load_checked(&cfg.policy_file, false) {
            Ok((p, _)) => {
                println!("policy: {}", p.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("twofoldd: policy error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if !audit::init(args.log_stderr, &cfg.log_file) && !args.log_stderr {
        eprintln!(
            "twofoldd: warning: syslog (/dev/log) is not reachable; log lines go to stderr{}",
            if cfg.log_file.as_os_str().is_empty() {
                String::new()
            } else {
                format!(" and {}", cfg.log_file.display())
            }
        );
    }
    if !returns_large_blocks {
        audit::log(
            Level::Warning,
            "cannot fix the allocator's mmap threshold: memory freed after backup-code hashes may stay resident",
        );
    }
    let from = loaded_from.map_or_else(
        || "built-in defaults".to_string(),
        |p| p.display().to_string(),
    );
    if args.init {
        return match FileStore::init(&cfg.state_dir) {
            Ok(_) => {
                println!(
                    "twofoldd: state directory {} is ready",
                    cfg.state_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("twofoldd: cannot initialize the state directory: {e}");
                ExitCode::from(1)
            }
        };
    }
    let store = match FileStore::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => {
            audit::log(Level::Error, &format!("cannot open state directory: {e}"));
            eprintln!("twofoldd: cannot open state directory: {e}");
            return ExitCode::from(1);
        }
    };
    let state_dir = cfg.state_dir.display().to_string();
    let policy = match policy::load(&cfg.policy_file, false) {
        Ok((policy, found)) => {
            let origin = if found {
                cfg.policy_file.display().to_string()
            } else {
                "built-in (no policy file)".into()
            };
            audit::log(
                Level::Info,
                &format!("policy {origin}: {}", policy.summary()),
            );
            // At start a directory service may still be coming up: warn and
            // go on (those logins use the strictest rule); reload refuses.
            if let Err(e) = policy::known_groups(&policy) {
                audit::log(Level::Warning, &e.to_string());
                eprintln!("twofoldd: warning: {e}");
            }
            policy
        }
        Err(e) => {
            eprintln!("twofoldd: policy error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = twofoldd::privilege::no_core_dumps() {
        audit::log(Level::Error, &format!("cannot turn core dumps off: {e}"));
        eprintln!("twofoldd: cannot turn core dumps off: {e}");
        return ExitCode::from(1);
    }
    // Everything from here on works as the owner of root's files; no
    // capability is needed, so none is kept (see privilege.rs).
    if let Err(e) = twofoldd::privilege::drop_all() {
        audit::log(Level::Error, &format!("cannot drop capabilities: {e}"));
        eprintln!("twofoldd: cannot drop capabilities: {e}");
        return ExitCode::from(1);
    }
    audit::log(
        Level::Info,
        "dropped every capability (kept none), set no-new-privileges, turned core dumps off",
    );
    let engine = Arc::new(Engine::new(cfg, store, backup::DEFAULT_PARAMS, policy));
    if let Err(e) = reload_on_sighup(engine.clone()) {
        eprintln!("twofoldd: cannot watch SIGHUP: {e}");
        return ExitCode::from(1);
    }
    match zbus::block_on(serve(engine)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            audit::log(Level::Error, &format!("bus error: {e}"));
            eprintln!(
                "twofoldd: cannot serve on the system bus: {e} (configuration: {from}, state: {state_dir})"
            );
            ExitCode::from(1)
        }
    }
}

/// Large blocks twofoldd frees go back to the kernel at once: Argon2's
/// working memory for backup codes (19 MiB a hash), large message buffers.
/// By default glibc raises its mmap threshold to the size of the largest
/// mapped block freed so far (up to 32 MiB); after the first hash, the next
/// ones came from the heap of the worker thread's arena, where the freed
/// blocks stayed resident (aligned 19 MiB requests do not fit a freed 19 MiB
/// hole, so the heap kept growing): 1.5 GiB after 50 enrollments, measured
/// with `twofold-bench memory`. A threshold set explicitly stays where it is
/// put, so blocks of 128 KiB (glibc's default) and more are always mapped
/// on their own and unmapped when freed. Returns whether glibc took it.
#[cfg(target_env = "gnu")]
fn return_large_blocks_to_the_kernel() -> bool {
    // SAFETY: mallopt only sets a parameter of glibc's allocator, under the
    // allocator's own lock; it has no pointer arguments.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 1 }
}

/// Other C libraries have no such threshold to fix.
#[cfg(not(target_env = "gnu"))]
fn return_large_blocks_to_the_kernel() -> bool {
    true
}

/// SIGHUP reads the policy again; an invalid file is refused (and logged)
/// and the policy in force stays.
fn reload_on_sighup(engine: Arc<Engine>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                let _ = engine.reload_policy(None);
            }
        })?;
    Ok(())
}

/// twofoldd's own calls to the bus (who is calling, the name): the bus
/// answers in well under a millisecond, so a second means it dropped the
/// call or is stuck.
const BUS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn serve(engine: Arc<Engine>) -> zbus::Result<()> {
    let conn = zbus::connection::Builder::system()
        .method_timeout(BUS_CALL_TIMEOUT)
        .build()
        .await?;
    let service = bus::Service::new(engine, &conn).await?;
    // Serve the object before taking the name, so no caller finds one without the other.
    conn.object_server()
        .at(twofold_protocol::OBJECT_PATH, service)
        .await?;
    conn.request_name(twofold_protocol::BUS_NAME).await?;
    audit::log(
        Level::Info,
        &format!("started, serving {}", twofold_protocol::BUS_NAME),
    );
    std::future::pending::<()>().await;
    Ok(())
}
