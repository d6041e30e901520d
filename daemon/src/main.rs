//! twofoldd: loads the configuration, opens the state directory, and serves
//! the twofold interface on its login socket (systemd's, or `login_socket`)
//! and on the system bus (or `DBUS_SYSTEM_BUS_ADDRESS`).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use twofoldd::audit::{self, Level};
use twofoldd::config::Backend;
use twofoldd::store::{self, FileStore, PgStore, seal::FleetKey};
use twofoldd::{backup, bus, config, engine::Engine, policy};

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
    /// Write a new random fleet key to store.fleet_key_file (root, 0600;
    /// never replacing one), and exit. Once per fleet: copy the file to
    /// every other host.
    #[arg(long)]
    new_fleet_key: bool,
    /// Rotating the fleet key, step 1: put a new random key in front of the
    /// keys in store.fleet_key_file (it seals from now on; the older ones
    /// still open), and exit. Copy the file to every host and restart them,
    /// then run --reseal.
    #[arg(long)]
    rotate_fleet_key: bool,
    /// Rotating the fleet key, step 2: seal every value in the database
    /// again with the first key of store.fleet_key_file, leave that key
    /// alone in the file, and exit. Copy the file to every host again.
    #[arg(long)]
    reseal: bool,
    /// Copy every user from this host's state directory into the database
    /// (`to-database`), or from the database into the state directory
    /// (`to-files`), and exit. Safe to repeat; a newer enrollment at the
    /// destination is never overwritten.
    #[arg(long, value_name = "DIRECTION")]
    copy_store: Option<CopyDirection>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CopyDirection {
    ToDatabase,
    ToFiles,
}

/// `--init`: the state directory, or the database's schema.
fn init(cfg: &config::Config) -> ExitCode {
    match cfg.store.backend {
        Backend::File => match FileStore::init(&cfg.state_dir) {
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
        },
        Backend::Postgresql => {
            match PgStore::new(&cfg.store).and_then(|s| s.init().map(|v| (s, v))) {
                Ok((s, before)) => {
                    match before {
                        None => println!(
                            "twofoldd: database schema version {} created; fleet key {}",
                            store::postgres::SCHEMA_VERSION,
                            s.key_id()
                        ),
                        Some(v) if v < store::postgres::SCHEMA_VERSION => println!(
                            "twofoldd: database schema version {v} migrated to {}; fleet key {} matches",
                            store::postgres::SCHEMA_VERSION,
                            s.key_id()
                        ),
                        Some(v) => println!(
                            "twofoldd: database schema version {v} is ready; fleet key {} matches",
                            s.key_id()
                        ),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("twofoldd: cannot initialize the database: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `--copy-store`: between this host's state directory and the database.
fn copy_store(cfg: &config::Config, direction: CopyDirection) -> ExitCode {
    let result = PgStore::new(&cfg.store).and_then(|db| {
        db.check()?;
        match direction {
            CopyDirection::ToDatabase => {
                let files = FileStore::open(&cfg.state_dir)?;
                store::copy::copy(&files, &db)
            }
            CopyDirection::ToFiles => {
                let files = FileStore::init(&cfg.state_dir)?;
                store::copy::copy(&db, &files)
            }
        }
    });
    match result {
        Ok(report) => {
            println!("twofoldd: {report}");
            if report.refused_newer.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("twofoldd: cannot copy: {e}");
            ExitCode::from(1)
        }
    }
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
        return init(&cfg);
    }
    if args.new_fleet_key {
        return match FleetKey::create(&cfg.store.fleet_key_file) {
            Ok(key) => {
                println!(
                    "twofoldd: new fleet key {} in {}; copy this file (root, 0600) to every host of the fleet",
                    key.id(),
                    cfg.store.fleet_key_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("twofoldd: {e}");
                ExitCode::from(1)
            }
        };
    }
    if args.rotate_fleet_key {
        return match FleetKey::rotate(&cfg.store.fleet_key_file) {
            Ok(key) => {
                println!(
                    "twofoldd: {} now holds the keys {} (the first seals); copy it to every host of the fleet, restart twofoldd there, then run `twofoldd --reseal` on one host",
                    cfg.store.fleet_key_file.display(),
                    key.ids()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("twofoldd: {e}");
                ExitCode::from(1)
            }
        };
    }
    if args.reseal {
        let result = PgStore::new(&cfg.store)
            .and_then(|db| {
                db.check()?;
                db.reseal()
            })
            .and_then(|counts| {
                FleetKey::load(&cfg.store.fleet_key_file)
                    .and_then(|k| k.forget_older(&cfg.store.fleet_key_file))
                    .map(|k| (counts, k))
                    .map_err(Into::into)
            });
        return match result {
            Ok(((resealed, current), key)) => {
                println!(
                    "twofoldd: {resealed} users sealed again, {current} already under the fleet key {}; {} now holds that key alone: copy it to every host of the fleet",
                    key.id(),
                    cfg.store.fleet_key_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("twofoldd: cannot seal again: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(direction) = args.copy_store {
        return copy_store(&cfg, direction);
    }
    let state_dir = match cfg.store.backend {
        Backend::File => cfg.state_dir.display().to_string(),
        Backend::Postgresql => "the fleet's database".into(),
    };
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
    // Before any other thread: systemd's variables are read and removed.
    let systemd_socket = bus::socket::from_systemd();
    room_for_descriptors();
    let login_socket = cfg.login_socket.clone();
    // After the capabilities are gone: the database client runs threads of
    // its own, and capabilities can only be dropped while there is one.
    // Root's own files (the state directory, the fleet key) need none.
    let store = match store::open(&cfg) {
        Ok(s) => s,
        Err(e) => {
            audit::log(Level::Error, &format!("cannot open the store: {e}"));
            eprintln!("twofoldd: cannot open the store: {e}");
            return ExitCode::from(1);
        }
    };
    let engine = Arc::new(Engine::with_store(
        cfg,
        store,
        backup::DEFAULT_PARAMS,
        policy,
    ));
    if let Err(e) = reload_on_sighup(engine.clone()) {
        eprintln!("twofoldd: cannot watch SIGHUP: {e}");
        return ExitCode::from(1);
    }
    match zbus::block_on(serve(engine, systemd_socket, &login_socket)) {
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

/// Descriptors twofoldd may hold: each login-socket connection held has a
/// thread with a runtime of its own (its socket, an epoll, a timer and a
/// wake-up pipe: 5), up to `bus::socket::MAX_WORKERS` of them, well over
/// the usual soft limit of 1,024. The unit sets `LimitNOFILE=`; started
/// another way, the soft limit is raised here (up to the hard one). If it
/// cannot be, connections past it are refused, as when the pools are full.
fn room_for_descriptors() {
    const WANTED: libc::rlim_t = 8192;
    // SAFETY: rlimit is plain data, filled by getrlimit.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= WANTED
    {
        return;
    }
    limit.rlim_cur = WANTED.min(limit.rlim_max);
    // SAFETY: a valid pointer to an rlimit; only the soft limit is raised, within the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        audit::log(
            Level::Warning,
            &format!(
                "cannot raise the descriptor limit to {}: {} (fewer login-socket connections can be held at once)",
                limit.rlim_cur,
                std::io::Error::last_os_error()
            ),
        );
    }
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

async fn serve(
    engine: Arc<Engine>,
    systemd_socket: Option<std::os::unix::net::UnixListener>,
    login_socket: &std::path::Path,
) -> zbus::Result<()> {
    let shared = bus::Shared::new(engine)?;
    // The bus first: without it twofoldd does not start (systemd waits for
    // the name, and the `twofold` command needs it). Once started, logins
    // on the socket no longer need the bus.
    let _bus = serve_bus(shared.clone()).await?;
    let listener = match systemd_socket {
        Some(listener) => Ok((listener, "from systemd".to_string())),
        None => bus::socket::listen(login_socket)
            .map(|listener| (listener, login_socket.display().to_string())),
    };
    let serving = match listener.and_then(|(l, from)| bus::socket::serve(l, shared).map(|()| from))
    {
        Ok(from) => format!(" and the login socket ({from})"),
        Err(e) => {
            // Logins still reach the daemon through the bus (the module
            // falls back to it when the socket is missing).
            let line = format!(
                "cannot listen on the login socket {}: {e}; logins use the system bus",
                login_socket.display()
            );
            audit::log(Level::Warning, &line);
            eprintln!("twofoldd: warning: {line}");
            String::new()
        }
    };
    audit::log(
        Level::Info,
        &format!("started, serving {}{serving}", twofold_protocol::BUS_NAME),
    );
    std::future::pending::<()>().await;
    Ok(())
}

async fn serve_bus(shared: Arc<bus::Shared>) -> zbus::Result<zbus::Connection> {
    let conn = zbus::connection::Builder::system()
        .method_timeout(BUS_CALL_TIMEOUT)
        .build()
        .await?;
    let service = bus::Service::on_bus(shared, &conn).await?;
    // Serve the object before taking the name, so no caller finds one without the other.
    conn.object_server()
        .at(twofold_protocol::OBJECT_PATH, service)
        .await?;
    conn.request_name(twofold_protocol::BUS_NAME).await?;
    Ok(conn)
}
