//! A private dbus-daemon with the project's own policy file, and connections held open on it.

use crate::*;
use anyhow::{Context, Result, anyhow};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

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
pub(crate) fn dbus_send(
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
