//! Real parts for the end-to-end tests and the demo: a private dbus-daemon
//! with the project's policy file, twofoldd on it, test users, `twofold
//! setup` run as those users, codes from `oathtool`, and logins through real
//! libpam loading the built `pam_twofold.so` (via `pam-driver`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a harness fails loudly

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod accounts;
mod bus;
mod codes;
mod daemon;
mod logins;
pub mod postgres;
pub mod smtp;
pub mod ssh;

pub use accounts::*;
pub use bus::*;
pub use codes::*;
pub use daemon::*;
pub use logins::*;

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
