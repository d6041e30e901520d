//! Real parts for the end-to-end tests and the demo: a private dbus-daemon
//! with the project's policy file, twofoldd on it, test users, `twofold
//! setup` run as those users, codes from `oathtool`, and logins through real
//! libpam loading the built `pam_twofold.so` (via `pam-driver`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a harness fails loudly

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod postgres;
pub mod smtp;
pub mod ssh;

pub mod pam {
    //! PAM result codes (Linux-PAM numbering).
    pub const SUCCESS: i32 = 0;
    pub const AUTH_ERR: i32 = 7;
    pub const CRED_INSUFFICIENT: i32 = 8;
    pub const AUTHINFO_UNAVAIL: i32 = 9;
    pub const USER_UNKNOWN: i32 = 10;
    pub const CONV_ERR: i32 = 19;
    pub const IGNORE: i32 = 25;
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Built binaries, linked (or copied) into a world-readable directory so
/// that unprivileged test users can run them whatever the checkout's
/// permissions.
pub struct Artifacts {
    dir: PathBuf,
    pub bin: PathBuf,
    pub module: PathBuf,
    pub policy: PathBuf,
}

impl Artifacts {
    pub fn twofoldd(&self) -> PathBuf {
        self.bin.join("twofoldd")
    }
    pub fn twofold(&self) -> PathBuf {
        self.bin.join("twofold")
    }
    pub fn pam_driver(&self) -> PathBuf {
        self.bin.join("pam-driver")
    }
}

fn target_dir() -> PathBuf {
    let profile = std::env::var("TWOFOLD_PROFILE").unwrap_or_else(|_| "debug".into());
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join(profile)
}

pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let artifacts =
            copy_artifacts().expect("built binaries (run `cargo build --workspace` first)");
        // A static is never dropped, and the test harness ends with exit():
        // without this every test process would leave its copy in /tmp.
        extern "C" fn remove_artifacts() {
            if let Some(artifacts) = ARTIFACTS.get() {
                let _ = std::fs::remove_dir_all(&artifacts.dir);
            }
        }
        // SAFETY: registers a plain function with no arguments; it runs once,
        // at exit, and only removes files.
        unsafe { libc::atexit(remove_artifacts) };
        artifacts
    })
}

/// A hard link costs no space (debug binaries are tens of megabytes each);
/// a copy, made executable by everyone, where the link is impossible (another
/// file system) or the build's file is not (a restrictive umask).
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let everyone_runs = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005)
    };
    if std::fs::hard_link(from, to).is_ok() && everyone_runs(to) {
        return Ok(());
    }
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .with_context(|| format!("{} (build the workspace first)", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn copy_artifacts() -> Result<Artifacts> {
    let from = target_dir();
    let dir = tempfile::Builder::new()
        .prefix("twofold-e2e-")
        .tempdir()?
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    for name in [
        "twofoldd",
        "twofold",
        "pam-driver",
        "ssh-askpass",
        "twofold-flood",
    ] {
        link_or_copy(&from.join(name), &bin.join(name))?;
    }
    let module = dir.join("pam_twofold.so");
    link_or_copy(&from.join("libpam_twofold.so"), &module)?;
    let policy = dir.join("org.twofold.Twofold1.conf");
    std::fs::copy(
        workspace_root().join("packaging/dbus/org.twofold.Twofold1.conf"),
        &policy,
    )?;
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644))?;
    Ok(Artifacts {
        dir,
        bin,
        module,
        policy,
    })
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A bus connection held by [`Bus::hold_connection`]; closed on drop.
pub struct HeldConnection {
    release: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A private dbus-daemon shaped like the system bus, with the shipped policy.
pub struct Bus {
    child: Child,
    dir: tempfile::TempDir,
    pub address: String,
}

impl Bus {
    pub fn start() -> Result<Bus> {
        Self::start_with("")
    }

    /// A bus whose configuration has `extra` (elements such as `<limit>`)
    /// besides the usual ones.
    pub fn start_with(extra: &str) -> Result<Bus> {
        Self::start_with_env(extra, &[])
    }

    /// The same, dbus-daemon with extra environment variables (nss_wrapper,
    /// so that it knows the synthetic accounts of the benchmarks: it refuses
    /// a connection from a uid it cannot look up).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Result<Bus> {
        let a = artifacts();
        let dir = tempfile::Builder::new().prefix("twofold-bus-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let socket = dir.path().join("system_bus_socket");
        let template = std::fs::read_to_string(workspace_root().join("tests/private-bus.conf.in"))?;
        let config = template
            .replace("@SOCKET@", &socket.display().to_string())
            .replace("@POLICY@", &a.policy.display().to_string())
            .replace("</busconfig>", &format!("{extra}</busconfig>"));
        let config_path = dir.path().join("bus.conf");
        std::fs::write(&config_path, config)?;
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its warnings (e.g. it cannot raise the fd limit) go to a file, not the terminal.
            .stderr(std::fs::File::create(dir.path().join("dbus-daemon.log"))?)
            .spawn()
            .context("starting dbus-daemon (apt-get install dbus)")?;
        wait_for("the private bus socket", Duration::from_secs(10), || {
            socket.exists()
        })?;
        Ok(Bus {
            child,
            address: format!("unix:path={}", socket.display()),
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bus daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where a [`Daemon`] on this bus listens for logins (`login_socket`):
    /// beside the bus, so each test has its own.
    pub fn login_socket(&self) -> PathBuf {
        self.dir.path().join("twofold").join("login.sock")
    }

    /// A command with `DBUS_SYSTEM_BUS_ADDRESS` pointing at this bus and
    /// `TWOFOLD_SOCKET` at its daemon's login socket: the module uses the
    /// socket, or the bus when there is none.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c.env("TWOFOLD_SOCKET", self.login_socket());
        c
    }

    /// Take the login socket away (as on a host without systemd's socket
    /// unit, before the daemon has bound it): logins go through the bus.
    pub fn remove_login_socket(&self) -> Result<()> {
        std::fs::remove_file(self.login_socket()).context("removing the login socket")
    }

    /// A connection of this process (root) to the bus, for calls straight
    /// to twofoldd (inside `zbus::block_on`, dropped there).
    pub async fn connect(&self) -> zbus::Result<zbus::Connection> {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
    }

    /// A connection of this process (root) to the bus, held open until the
    /// returned value is dropped: it takes one of root's connection slots.
    pub fn hold_connection(&self) -> Result<HeldConnection> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let address = self.address.clone();
        let thread = std::thread::spawn(move || {
            zbus::block_on(async move {
                let conn = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await;
                let _ = ready_tx.send(conn.as_ref().map(drop).map_err(|e| e.to_string()));
                if conn.is_ok() {
                    // Blocks this executor; the connection stays open meanwhile
                    // and is dropped (closed) inside the same block_on.
                    let _ = release_rx.recv();
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("connecting to the bus")?
            .map_err(|e| anyhow!("connecting to the bus: {e}"))?;
        Ok(HeldConnection {
            release,
            thread: Some(thread),
        })
    }

    /// `twofold ARGS` as root on this bus (the administrator's view).
    pub fn twofold(&self, args: &[&str]) -> Result<Output> {
        let mut c = self.command(artifacts().twofold());
        c.args(args);
        output(c)
    }

    /// `dbus-send` of twofoldd's `method` with `args` (dbus-send's typed
    /// values), as root or as `as_user`; returns whether it succeeded, and
    /// its output (the reply, or the error).
    pub fn dbus_send(&self, as_user: Option<&str>, method: &str, args: &[&str]) -> (bool, String) {
        let target = [
            format!("--bus={}", self.address),
            format!("--dest={}", twofold_protocol::BUS_NAME),
        ];
        dbus_send(&target, as_user, method, args)
    }

    /// The same on the daemon's login socket (a peer-to-peer connection).
    pub fn socket_send(
        &self,
        as_user: Option<&str>,
        method: &str,
        args: &[&str],
    ) -> (bool, String) {
        let target = [format!(
            "--peer=unix:path={}",
            self.login_socket().display()
        )];
        dbus_send(&target, as_user, method, args)
    }

    /// `program args…` run as `user` (through runuser), on this bus.
    pub fn command_as(&self, user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", "env"])
            .arg(format!("DBUS_SYSTEM_BUS_ADDRESS={}", self.address))
            .arg(format!("TWOFOLD_SOCKET={}", self.login_socket().display()))
            .arg(program);
        c
    }
}

/// `dbus-send` to `target` (a bus and name, or a peer) of twofoldd's
/// `method`, as root or as `as_user`.
fn dbus_send(
    target: &[String],
    as_user: Option<&str>,
    method: &str,
    args: &[&str],
) -> (bool, String) {
    use twofold_protocol::{INTERFACE, OBJECT_PATH};
    let mut c = match as_user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "dbus-send"]);
            c
        }
        None => Command::new("dbus-send"),
    };
    let out = c
        .args(target)
        .args(["--print-reply", "--reply-timeout=20000"])
        .arg(OBJECT_PATH)
        .arg(format!("{INTERFACE}.{method}"))
        .args(args)
        .output()
        .expect("dbus-send (apt-get install dbus-bin)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// twofoldd on a private bus, with its own state directory and log file,
/// listening for logins on the bus's [`Bus::login_socket`].
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bus_address: String,
    login_socket: PathBuf,
    env: Vec<(String, String)>,
    policy_dir: Option<tempfile::TempDir>,
    pub config_path: PathBuf,
    /// Run in a mount namespace where `/dev/log` leads nowhere (a host
    /// without a syslog daemon).
    without_syslog: bool,
    /// Run in a UTS namespace with this host name (hosts of a fleet that
    /// must tell each other apart on one machine).
    hostname: Option<String>,
}

impl Daemon {
    /// Start with `extra_config` appended to a config that sets the state directory.
    pub fn start(bus: &Bus, extra_config: &str) -> Result<Daemon> {
        Self::start_with_env(bus, extra_config, &[])
    }

    /// Start with `policy` as the policy file (`policy.toml` beside the config).
    pub fn start_with_policy(bus: &Bus, extra_config: &str, policy: &str) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("twofold-policy-")
            .tempdir()?;
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, policy)?;
        let mut d = Self::start_with_env(
            bus,
            &format!("policy_file = \"{}\"\n{extra_config}", path.display()),
            &[],
        )?;
        d.policy_dir = Some(dir);
        Ok(d)
    }

    /// Replace the policy file (apply it with `sighup` or `twofold admin reload`).
    pub fn write_policy(&self, policy: &str) -> Result<PathBuf> {
        let path = self
            .policy_dir
            .as_ref()
            .context("started without a policy")?
            .path()
            .join("policy.toml");
        std::fs::write(&path, policy)?;
        Ok(path)
    }

    pub fn sighup(&self) -> Result<()> {
        let pid = self.pid().context("not running")?;
        let log_before = self.log().len();
        let pid = libc::pid_t::try_from(pid)?;
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            bail!("kill -HUP {pid}: {}", std::io::Error::last_os_error());
        }
        wait_for(
            "the daemon to log the reload",
            Duration::from_secs(10),
            || {
                self.log()
                    .get(log_before..)
                    .is_some_and(|new| new.contains("policy-reload"))
            },
        )
    }

    /// The same, with extra environment variables for twofoldd (e.g. nss_wrapper).
    pub fn start_with_env(bus: &Bus, extra_config: &str, env: &[(&str, &str)]) -> Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("twofold-daemon-")
            .tempdir()?;
        let config_path = dir.path().join("twofold.toml");
        let state = dir.path().join("state");
        // The lines syslog does not take go beside the test's state, never
        // to the host's /var/log.
        let fallback = dir.path().join("fallback.log");
        std::fs::write(
            &config_path,
            format!(
                "state_dir = \"{}\"\nlogin_socket = \"{}\"\nlog_file = \"{}\"\n{extra_config}",
                state.display(),
                bus.login_socket().display(),
                fallback.display()
            ),
        )?;
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut d = Daemon {
            child: None,
            dir,
            bus_address: bus.address.clone(),
            login_socket: bus.login_socket(),
            env,
            policy_dir: None,
            config_path,
            without_syslog: false,
            hostname: None,
        };
        let init = Command::new(artifacts().twofoldd())
            .arg("--config")
            .arg(&d.config_path)
            .arg("--init")
            .output()
            .context("twofoldd --init")?;
        if !init.status.success() {
            bail!(
                "twofoldd --init failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        d.spawn()?;
        Ok(d)
    }

    /// Start with `extra_config`, the daemon seeing `hostname` as this
    /// host's name (its own UTS namespace; root).
    pub fn start_as_host(bus: &Bus, extra_config: &str, hostname: &str) -> Result<Daemon> {
        let mut d = Self::start(bus, extra_config)?;
        d.hostname = Some(hostname.to_string());
        d.restart()?;
        Ok(d)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The socket this daemon listens on for logins.
    pub fn login_socket(&self) -> &Path {
        &self.login_socket
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("twofoldd.log")
    }

    /// Everything the daemon wrote to stderr (its log lines) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let starts_before = self.log().matches("started, serving").count();
        let mut command = if let Some(name) = &self.hostname {
            // unshare execs sh, which names the host and execs twofoldd.
            let mut c = Command::new("unshare");
            c.args([
                "--uts",
                "--",
                "sh",
                "-c",
                "hostname \"$0\" || exit 98; exec \"$@\"",
                name,
            ])
            .arg(artifacts().twofoldd());
            c
        } else if self.without_syslog {
            // unshare execs sh, which execs twofoldd: one process, our child.
            let mut c = Command::new("unshare");
            c.args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "if [ -e /dev/log ]; then mount --bind /dev/null /dev/log || exit 99; fi; exec \"$0\" \"$@\"",
            ])
            .arg(artifacts().twofoldd());
            c
        } else {
            Command::new(artifacts().twofoldd())
        };
        let child = command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--log-stderr")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting twofoldd")?;
        self.child = Some(child);
        let log_path = self.log_path();
        wait_for(
            "twofoldd to own its bus name",
            Duration::from_secs(20),
            || {
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .matches("started, serving")
                    .count()
                    > starts_before
            },
        )
        .with_context(|| format!("twofoldd log:\n{}", self.log()))
    }

    /// Restart the daemon where no syslog daemon listens on `/dev/log`.
    pub fn restart_without_syslog(&mut self) -> Result<()> {
        self.kill();
        self.without_syslog = true;
        self.spawn()
    }

    /// The lines written to the configured `log_file` (while syslog was down).
    pub fn fallback_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fallback.log")).unwrap_or_default()
    }

    /// Kill the daemon (SIGKILL: nothing is flushed on the way out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            assert_no_secret_in("twofoldd's log", &self.log());
        }
    }
}

/// Every key, Key URI, code, backup code and password this test process has
/// used so far. Each log the harness collects (twofoldd's, sshd's) is
/// checked against all of them when it is dropped, so no test can forget to.
static USED_SECRETS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());
/// Logs checked by `assert_no_secret_in` in this process.
static LOGS_CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Remember `secret` as one that must appear in no log.
pub fn used_secret(secret: &str) {
    if secret.len() >= 6 {
        USED_SECRETS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(secret.to_string());
    }
}

/// How many logs have been checked for secrets in this process.
pub fn logs_checked() -> usize {
    LOGS_CHECKED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `log` holds `secret`. A code made of digits counts only as a
/// number of its own: not inside a longer number, and not as a `[pid]`.
pub fn log_holds(log: &str, secret: &str) -> bool {
    if !secret.bytes().all(|b| b.is_ascii_digit()) {
        return log.contains(secret);
    }
    let bytes = log.as_bytes();
    log.match_indices(secret).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + secret.len()).copied();
        let digit = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_digit());
        let pid = before == Some(b'[') && after == Some(b']');
        !(digit(before) || digit(after) || pid)
    })
}

/// Panic if `log` holds any secret this process used.
pub fn assert_no_secret_in(what: &str, log: &str) {
    let secrets = USED_SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let found: Vec<String> = secrets
        .iter()
        .filter(|s| log_holds(log, s))
        .map(|s| format!("{}… ({} characters)", &s[..3], s.len()))
        .collect();
    drop(secrets);
    LOGS_CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    assert!(found.is_empty(), "{what} holds secrets: {found:?}\n{log}");
}

/// A real Unix account for tests, created once if missing (no home, no shell).
/// Serializes changes to the account databases (their own lock files make
/// concurrent useradd/groupadd/usermod fail rather than wait).
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn test_user(name: &str) -> Result<u32> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    test_user_locked(name)
}

fn test_user_locked(name: &str) -> Result<u32> {
    let uid = || -> Option<u32> {
        let out = Command::new("id").arg("-u").arg(name).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    if let Some(uid) = uid() {
        return Ok(uid);
    }
    // Other test binaries may race us; useradd's own lock serializes, and an
    // "already exists" failure is fine if the user is there afterwards.
    // Regular accounts (uid >= 1000), like the people a report lists.
    let _ = Command::new("useradd")
        .args([
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "twofold test user",
        ])
        .arg(name)
        .output()
        .context("useradd")?;
    uid().ok_or_else(|| anyhow!("could not create test user {name}"))
}

/// Remove a test user that only the calling test uses (its account, not
/// its twofold state).
pub fn remove_test_user(name: &str) -> Result<()> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new("userdel")
        .arg(name)
        .output()
        .context("userdel")?;
    if !out.status.success() {
        bail!("userdel {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A second name for `of`'s uid (like `toor` for root), created once after `of`.
pub fn test_alias(name: &str, of: &str) -> Result<u32> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let uid = test_user_locked(of)?;
    if Command::new("id")
        .arg("-u")
        .arg(name)
        .output()?
        .status
        .success()
    {
        return Ok(uid);
    }
    let _ = Command::new("useradd")
        .args([
            "--non-unique",
            "--uid",
            &uid.to_string(),
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .args(["--no-user-group", "--gid", &uid_gid(of)?, name])
        .output()?;
    Ok(uid)
}

fn uid_gid(user: &str) -> Result<String> {
    let out = Command::new("id").arg("-g").arg(user).output()?;
    let code = String::from_utf8(out.stdout)?.trim().to_string();
    used_secret(&code);
    Ok(code)
}

/// Give `user` a password (for pam_unix in the shipped stacks).
pub fn set_password(user: &str, password: &str) -> Result<()> {
    used_secret(password);
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = Command::new("chpasswd").stdin(Stdio::piped()).spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{user}:{password}\n").as_bytes())?;
    if !child.wait()?.success() {
        bail!("chpasswd failed for {user}");
    }
    Ok(())
}

/// The password of the test users for this run, random: it is set in the
/// host's shadow file for pam_unix (tests/tests/pamd.rs), and must not open
/// those accounts to anyone who reads this repository.
pub fn test_password() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        use rand::Rng;
        let mut rng = rand::rng();
        let password: String = (0..24)
            .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
            .collect();
        used_secret(&password);
        password
    })
}

/// A group with the given members (created or completed once).
pub fn test_group(name: &str, members: &[&str]) -> Result<()> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Command::new("groupadd").arg(name).output()?;
    for member in members {
        let _ = Command::new("usermod")
            .args(["--append", "--groups", name, member])
            .output()?;
    }
    Ok(())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The code for `now + steps × 30 s`, computed by oathtool (an independent implementation).
pub fn oathtool(secret_base32: &str, steps: i64) -> Result<String> {
    let at = unix_now() as i64 + steps * 30;
    let out = Command::new("oathtool")
        .args(["--totp", "--base32", &format!("--now=@{at}"), secret_base32])
        .output()
        .context("running oathtool (apt-get install oathtool)")?;
    if !out.status.success() {
        bail!("oathtool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Sleep until at least `secs` seconds remain in the current 30 s step, so a
/// sequence of codes computed now stays inside the ±1 window.
pub fn wait_for_step_margin(secs: u64) {
    let into = unix_now() % 30;
    if 30 - into < secs {
        std::thread::sleep(Duration::from_secs(30 - into) + Duration::from_millis(200));
    }
}

/// What `twofold setup` gave a user.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub uri: String,
    pub secret: String,
    pub backup_codes: Vec<String>,
}

/// Enroll `user` with `twofold setup` run as that user through a pipe,
/// confirming with the code of the previous step (so the current and the
/// next step are still free for logins).
pub fn enroll(bus: &Bus, user: &str) -> Result<Enrolled> {
    wait_for_step_margin(10);
    enroll_confirming(bus, user, -1)
}

/// `twofold setup` through a pipe, confirmed with oathtool's code for the
/// step `steps` away from now (no wait for a step boundary).
pub fn enroll_confirming(bus: &Bus, user: &str, steps: i64) -> Result<Enrolled> {
    let mut child = bus
        .command_as(user, artifacts().twofold())
        .args(["setup", "--method", "totp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut uri = String::new();
    stdout.read_line(&mut uri)?;
    let uri = uri.trim().to_string();
    let Some(secret) = uri_secret(&uri) else {
        // Say why: what setup wrote on stderr before it gave up.
        let (_, err, status) = answer_and_finish(child, stdout, b"")?;
        bail!("no secret in setup output {uri:?} ({status}): {err}");
    };
    let code = oathtool(&secret, steps)?;
    let (rest, err, status) = answer_and_finish(child, stdout, format!("{code}\n").as_bytes())?;
    if !status.success() {
        bail!("twofold setup failed for {user}: {err}");
    }
    let backup_codes: Vec<String> = rest
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    for c in &backup_codes {
        used_secret(c);
        used_secret(&c.replace('-', ""));
    }
    Ok(Enrolled {
        uri,
        secret,
        backup_codes,
    })
}

/// Write `input` to a running child (closing its stdin), then collect the
/// rest of its stdout, its stderr and its exit status.
fn answer_and_finish(
    mut child: Child,
    mut stdout: BufReader<std::process::ChildStdout>,
    input: &[u8],
) -> Result<(String, String, std::process::ExitStatus)> {
    child.stdin.take().context("stdin")?.write_all(input)?;
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut err)?;
    Ok((rest, err, child.wait()?))
}

/// The `secret=` parameter of an otpauth URI.
pub fn uri_secret(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    let secret = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .map(String::from)?;
    used_secret(&secret);
    used_secret(uri);
    Some(secret)
}

/// The shipped `packaging/pam.d/NAME` file, with `pam_twofold.so` (and its
/// arguments) pointing at the built module and `module_args` added.
pub fn packaged_stack(name: &str, module_args: &str) -> Result<String> {
    let text = std::fs::read_to_string(workspace_root().join("packaging/pam.d").join(name))
        .with_context(|| format!("packaging/pam.d/{name}"))?;
    let module = artifacts().module.display().to_string();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with('#') || !l.contains("pam_twofold.so") {
                l.to_string()
            } else {
                let with_args = format!("{module} {module_args}");
                l.replace("pam_twofold.so", with_args.trim_end())
            }
        })
        .collect();
    Ok(lines.join("\n") + "\n")
}

/// The remote host of a login unless a test names another (TEST-NET-1).
pub const DEFAULT_RHOST: &str = "192.0.2.10";

/// A PAM service in a private configuration directory using the built module.
pub struct PamService {
    dir: tempfile::TempDir,
    pub name: String,
}

/// The result of one `pam_authenticate` through pam-driver.
#[derive(Debug)]
pub struct Attempt {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PamService {
    /// `auth required pam_twofold.so <args>` after a first factor that passed
    /// (`pam_permit` stands in for the password module).
    pub fn new(module_args: &str) -> Result<PamService> {
        Self::with_stack(&format!(
            "auth required {} {module_args}\nauth required pam_permit.so\n",
            artifacts().module.display()
        ))
    }

    pub fn with_stack(stack: &str) -> Result<PamService> {
        Self::named("twofold-test", stack)
    }

    /// The stack `auth required pam_twofold.so` + `pam_permit`, as PAM service `name` (e.g. `vsftpd`).
    pub fn service(name: &str) -> Result<PamService> {
        Self::named(
            name,
            &format!(
                "auth required {}\nauth required pam_permit.so\n",
                artifacts().module.display()
            ),
        )
    }

    /// A shipped file from `packaging/pam.d/` as service `name`, beside copies
    /// of the host's `common-*` files (which it includes), with
    /// `pam_twofold.so` pointing at the built module.
    pub fn packaged(file: &str, name: &str) -> Result<PamService> {
        let stack = packaged_stack(file, "")?;
        let service = Self::named(name, &stack)?;
        for entry in std::fs::read_dir("/etc/pam.d")? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("common-") {
                let to = service.dir.path().join(entry.file_name());
                std::fs::copy(entry.path(), &to)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
            }
        }
        Ok(service)
    }

    pub fn named(name: &str, stack: &str) -> Result<PamService> {
        let dir = tempfile::Builder::new().prefix("twofold-pam-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let name = name.to_string();
        let file = dir.path().join(&name);
        std::fs::write(&file, stack)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
        Ok(PamService { dir, name })
    }

    pub fn confdir(&self) -> &Path {
        self.dir.path()
    }

    fn driver(
        &self,
        mut c: Command,
        user: &std::ffi::OsStr,
        rhost: &str,
        extra: &[&str],
    ) -> Command {
        c.arg("--confdir")
            .arg(self.dir.path())
            .args(["--service", &self.name, "--rhost", rhost]);
        c.arg("--user").arg(user).args(extra);
        // The module draws the QR code by the locale: the same drawing
        // whatever the environment the tests run in.
        for name in ["LC_ALL", "LC_CTYPE", "LANG"] {
            c.env_remove(name);
        }
        c
    }

    /// Log `user` in as root with `LANG=lang` in the host's environment.
    pub fn login_in_locale(
        &self,
        bus: &Bus,
        user: &str,
        lang: &str,
        input: &[u8],
    ) -> Result<Attempt> {
        let mut c = self.driver(
            bus.command(artifacts().pam_driver()),
            user.as_ref(),
            DEFAULT_RHOST,
            &[],
        );
        c.env("LANG", lang);
        run_with_input(c, input)
    }

    /// Log `user` in as root (like sshd), answering the prompt with `input`.
    pub fn login(
        &self,
        bus: &Bus,
        user: impl AsRef<std::ffi::OsStr>,
        input: &[u8],
    ) -> Result<Attempt> {
        self.login_with(bus, user, &[], input)
    }

    /// Log `user` in as root with pam-driver's `extra` arguments.
    pub fn login_with(
        &self,
        bus: &Bus,
        user: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
        input: &[u8],
    ) -> Result<Attempt> {
        let c = self.driver(
            bus.command(artifacts().pam_driver()),
            user.as_ref(),
            DEFAULT_RHOST,
            extra,
        );
        run_with_input(c, input)
    }

    /// Log `user` in as root with the bus at `address` (a bus that is not
    /// there, or not working).
    pub fn login_at(&self, address: &str, user: &str, input: &[u8]) -> Result<Attempt> {
        let mut c = Command::new(artifacts().pam_driver());
        c.env("DBUS_SYSTEM_BUS_ADDRESS", address);
        // No login socket either.
        c.env("TWOFOLD_SOCKET", "/nonexistent/twofold/login.sock");
        run_with_input(self.driver(c, user.as_ref(), DEFAULT_RHOST, &[]), input)
    }

    /// Log `user` in from `rhost`, answering with `first`, then with what
    /// `then` returns once it has it (for a code that arrives by e-mail
    /// during the conversation).
    pub fn login_answering(
        &self,
        bus: &Bus,
        user: &str,
        rhost: &str,
        first: &[u8],
        then: impl FnOnce() -> Vec<u8>,
    ) -> Result<Attempt> {
        let mut child = self
            .driver(
                bus.command(artifacts().pam_driver()),
                user.as_ref(),
                rhost,
                &[],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(first)?;
        stdin.flush()?;
        let more = then();
        // The conversation may have ended already (a refusal): a closed pipe is fine.
        let _ = stdin.write_all(&more);
        drop(stdin);
        let out = child.wait_with_output()?;
        Ok(Attempt {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Log `user` in from remote host `rhost`.
    pub fn login_from(&self, bus: &Bus, user: &str, rhost: &str, input: &[u8]) -> Result<Attempt> {
        let c = self.driver(
            bus.command(artifacts().pam_driver()),
            user.as_ref(),
            rhost,
            &[],
        );
        run_with_input(c, input)
    }

    /// A login that enrolls inside the conversation: read the key the module
    /// shows, answer with oathtool's code for it. Returns the attempt and the key.
    pub fn login_enrolling(&self, bus: &Bus, user: &str) -> Result<(Attempt, String)> {
        let mut child = self
            .driver(
                bus.command(artifacts().pam_driver()),
                user.as_ref(),
                DEFAULT_RHOST,
                &[],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut seen = String::new();
        let secret = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                bail!("the module showed no key; output so far:\n{seen}");
            }
            seen.push_str(&line);
            if let Some(secret) = line.trim().strip_prefix("Key URI: ").and_then(uri_secret) {
                break secret;
            }
        };
        // The key was offered just now: the current step is unused.
        let code = oathtool(&secret, 0)?;
        // The code, then Enter at "Press Enter once you have written them down".
        let (rest, err, status) =
            answer_and_finish(child, stdout, format!("{code}\n\n").as_bytes())?;
        Ok((
            Attempt {
                code: status.code().unwrap_or(-1),
                stdout: seen + &rest,
                stderr: err,
            },
            secret,
        ))
    }

    /// The same, with the host program running as `as_user` (a screen locker, or an attacker).
    pub fn login_as(&self, bus: &Bus, as_user: &str, user: &str, input: &[u8]) -> Result<Attempt> {
        let c = self.driver(
            bus.command_as(as_user, artifacts().pam_driver()),
            user.as_ref(),
            DEFAULT_RHOST,
            &[],
        );
        run_with_input(c, input)
    }

    /// Log `user` in through a setuid-root copy of pam-driver run by `as_user`
    /// (as `su` and `sudo` run), with `DBUS_SYSTEM_BUS_ADDRESS` set by that user.
    pub fn login_setuid(
        &self,
        bus: &Bus,
        as_user: &str,
        user: &str,
        input: &[u8],
    ) -> Result<Attempt> {
        use std::os::unix::fs::PermissionsExt;
        let setuid = artifacts().bin.join("pam-driver-setuid");
        if !setuid.exists() {
            std::fs::copy(artifacts().pam_driver(), &setuid)?;
            std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755))?;
        }
        let c = self.driver(
            bus.command_as(as_user, &setuid),
            user.as_ref(),
            DEFAULT_RHOST,
            &[],
        );
        run_with_input(c, input)
    }

    /// Log `user` in as su or sudo runs the PAM stack: effective uid root,
    /// real uid `invoker`'s, no remote host. The kernel then marks the
    /// process secure, so the module ignores `DBUS_SYSTEM_BUS_ADDRESS` as it
    /// does in su; the run happens in a private mount namespace whose
    /// `/run/dbus/system_bus_socket` leads to this test's bus.
    pub fn login_su(&self, bus: &Bus, invoker: &str, user: &str, input: &[u8]) -> Result<Attempt> {
        let uid = output({
            let mut c = Command::new("id");
            c.args(["-u", invoker]);
            c
        })?;
        let uid = String::from_utf8(uid.stdout)?.trim().to_string();
        let script = format!(
            "set -e\n\
             mount -t tmpfs -o mode=0755 twofold-test-run /run\n\
             mkdir -p /run/dbus /run/twofold\n\
             ln -s '{}' /run/dbus/system_bus_socket\n\
             ln -s '{}' /run/twofold/login.sock\n\
             exec setpriv --ruid {uid} -- \"$0\" \"$@\"\n",
            bus.dir().join("system_bus_socket").display(),
            bus.login_socket().display()
        );
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(artifacts().pam_driver());
        run_with_input(self.driver(c, user.as_ref(), "", &[]), input)
    }

    /// Log in with pam-driver's thread report; returns (threads before, after).
    pub fn login_counting_threads(
        &self,
        bus: &Bus,
        user: &str,
        input: &[u8],
    ) -> Result<(Attempt, usize, usize)> {
        let (attempt, report) = self.login_measuring_host(bus, user, input)?;
        let get = |name: &str| report.get(name).copied().context("thread report");
        Ok((attempt, get("threads-before")?, get("threads-after")?))
    }

    /// One login through pam-driver `--threads`: its result, and what the
    /// host process reported (`threads-before`, `threads-after`,
    /// `rss-before-kb`, `rss-after-kb`, `peak-rss-kb`).
    pub fn login_measuring_host(
        &self,
        bus: &Bus,
        user: &str,
        input: &[u8],
    ) -> Result<(Attempt, std::collections::HashMap<String, usize>)> {
        let c = self.driver(
            bus.command(artifacts().pam_driver()),
            user.as_ref(),
            DEFAULT_RHOST,
            &["--threads"],
        );
        let attempt = run_with_input(c, input)?;
        let line = attempt
            .stdout
            .lines()
            .find(|l| l.starts_with("threads-before="))
            .context("thread report")?;
        let report = line
            .split(' ')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.parse::<usize>().ok()?))
            })
            .collect();
        Ok((attempt, report))
    }
}

/// A number field of /proc/PID/status (`Threads`, `VmRSS` in kB, ...) of
/// `pid`, or of this process; 0 when unreadable.
pub fn proc_status_field(pid: Option<u32>, name: &str) -> u64 {
    let path = pid.map_or("/proc/self/status".into(), |p| format!("/proc/{p}/status"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

pub fn run_with_input(mut c: Command, input: &[u8]) -> Result<Attempt> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out: Output = child.wait_with_output()?;
    let _ = writer.join();
    Ok(Attempt {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run a command, returning its output; fails if it cannot start.
pub fn output(mut c: Command) -> Result<Output> {
    Ok(c.stdin(Stdio::null()).output()?)
}

/// CPU time (user + system) a process has used so far, from /proc.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()?)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Ok(Duration::from_millis(total * 1000 / hz.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_counts_only_as_a_number_of_its_own() {
        assert!(log_holds("code=123456 accepted", "123456"));
        assert!(log_holds("123456", "123456"));
        assert!(!log_holds("at 1123456789", "123456"));
        assert!(!log_holds("sshd[123456]: Accepted", "123456"));
        assert!(log_holds("key JBSWY3DPEHPK3PXP shown", "JBSWY3DPEHPK3PXP"));
    }

    #[test]
    #[should_panic(expected = "holds secrets")]
    fn a_used_secret_in_a_log_fails_the_test() {
        used_secret("abcde-fghjk");
        assert_no_secret_in("a log", "user=alice code=abcde-fghjk");
    }
}
