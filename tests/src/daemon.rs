//! twofoldd, started on a private bus with a test configuration, its log and its state.

use crate::*;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
