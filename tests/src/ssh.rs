//! A throwaway OpenSSH server on 127.0.0.1 and a real `ssh` client driven
//! prompt by prompt.
//!
//! sshd runs in its own mount and PID namespaces, where these are mounted:
//! a private `/etc/pam.d` (the host's files plus the `sshd` stack under
//! test); private copies of `/etc/passwd` and `/etc/shadow` in which the test
//! accounts have a shell and a password (on the host they keep `nologin` and
//! no usable password, so the host's own sshd cannot be used to log in to
//! them); an empty `/run` (with `/run/dbus/system_bus_socket` pointing at the
//! test's private bus, `/run/twofold/login.sock` at its daemon's login
//! socket); an empty `/var/log` (wtmp, btmp, lastlog). So the
//! module finds "the system bus" at its compiled-in path, as in production
//! (sshd clears the environment of its PAM process, so
//! `DBUS_SYSTEM_BUS_ADDRESS` would not reach it), and nothing of the host's
//! own login setup is touched: not its sshd, not port 22, not `/etc/pam.d`,
//! not its accounts' passwords. Stopping it (drop) ends every process in its
//! PID namespace, per-connection sshd processes included.
//!
//! The client is OpenSSH's `ssh` with `SSH_ASKPASS_REQUIRE=force`: every
//! keyboard-interactive prompt, with the PAM messages sshd puts in front of
//! it, goes to `ssh-askpass`, which hands it to the test and types its answer.

pub use crate::packaged_stack;
use crate::{Bus, artifacts, wait_for, workspace_root};
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway sshd on 127.0.0.1, stopped when dropped.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    host_key_line: String,
}

/// How a test wants the server set up.
pub struct SshdSetup<'a> {
    /// The `/etc/pam.d/sshd` sshd uses (see [`packaged_stack`]).
    pub pam_stack: String,
    /// Lines put first in the sshd_config (e.g. `AuthenticationMethods`).
    pub extra_config: &'a str,
    /// Existing host accounts given a shell and this password inside the
    /// server's namespace only.
    pub accounts: &'a [(&'a str, &'a str)],
}

/// Copies of `/etc/passwd` and `/etc/shadow` under `root/etc` in which
/// `accounts` have `/bin/sh` and their password (SHA-512 crypt, hashed by
/// `openssl passwd`).
fn private_accounts(root: &Path, accounts: &[(&str, &str)]) -> Result<()> {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc)?;
    let mut hashes = Vec::with_capacity(accounts.len());
    for (user, password) in accounts {
        let mut child = Command::new("openssl")
            .args(["passwd", "-6", "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("openssl (apt-get install openssl)")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(format!("{password}\n").as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("openssl passwd: {}", String::from_utf8_lossy(&out.stderr));
        }
        hashes.push((*user, String::from_utf8(out.stdout)?.trim().to_string()));
    }
    // Field 7 of passwd is the shell, field 2 of shadow the hash.
    let edit = |file: &str, field: usize, value: &dyn Fn(&str) -> Option<String>| -> Result<()> {
        let text = std::fs::read_to_string(Path::new("/etc").join(file))?;
        let mut edited = String::with_capacity(text.len());
        for line in text.lines() {
            let mut fields: Vec<String> = line.split(':').map(String::from).collect();
            if let Some(new) = fields.first().and_then(|user| value(user))
                && let Some(slot) = fields.get_mut(field)
            {
                *slot = new;
            }
            edited.push_str(&fields.join(":"));
            edited.push('\n');
        }
        std::fs::write(etc.join(file), edited)?;
        Ok(())
    };
    edit("passwd", 6, &|user| {
        accounts
            .iter()
            .any(|(u, _)| *u == user)
            .then(|| "/bin/sh".to_string())
    })?;
    edit("shadow", 1, &|user| {
        hashes
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, hash)| hash.clone())
    })?;
    std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640))?;
    let shadow = std::fs::read_to_string(etc.join("shadow"))?;
    for (user, _) in accounts {
        if !shadow.contains(&format!("\n{user}:$6$")) {
            bail!("{user} is not an account of this host (create it with test_user first)");
        }
    }
    Ok(())
}

impl Sshd {
    pub fn start(bus: &Bus, setup: &SshdSetup) -> Result<Sshd> {
        let dir = tempfile::Builder::new().prefix("twofold-sshd-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let d = dir.path();
        let keygen = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "twofold-test-host",
                "-f",
            ])
            .arg(d.join("host_ed25519"))
            .output()
            .context("ssh-keygen (apt-get install openssh-client)")?;
        if !keygen.status.success() {
            bail!("ssh-keygen: {}", String::from_utf8_lossy(&keygen.stderr));
        }
        let public = std::fs::read_to_string(d.join("host_ed25519.pub"))?;
        let host_key = public.split_whitespace().take(2).collect::<Vec<_>>();

        let pam_d = d.join("pam.d");
        std::fs::create_dir(&pam_d)?;
        for entry in std::fs::read_dir("/etc/pam.d")? {
            let entry = entry?;
            // Follows symlinks (authselect-managed pam.d files are links).
            if entry.path().is_file() {
                std::fs::copy(entry.path(), pam_d.join(entry.file_name()))?;
            }
        }
        std::fs::write(pam_d.join("sshd"), &setup.pam_stack)?;
        std::fs::create_dir(d.join("authorized_keys"))?;
        let root = d.join("root");
        private_accounts(&root, setup.accounts)?;

        let socket = bus
            .address
            .strip_prefix("unix:path=")
            .context("the private bus listens on a unix path")?;
        // Linux assigns the port; a parallel test may take it between our
        // probe and sshd's bind, so try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let config = format!(
                // The first value sshd reads wins: the test's own lines, then
                // the shipped snippet, then what a throwaway server needs.
                "{extra}\nInclude {snippet}\n\
                 Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile none\n\
                 PubkeyAuthentication yes\nAuthorizedKeysFile {dir}/authorized_keys/%u\n\
                 StrictModes no\nUseDNS no\nPrintMotd no\nPrintLastLog no\nMaxStartups 100\n\
                 LogLevel VERBOSE\n",
                extra = setup.extra_config,
                snippet = workspace_root()
                    .join("packaging/sshd/twofold.conf")
                    .display(),
                key = d.join("host_ed25519").display(),
                dir = d.display(),
            );
            std::fs::write(d.join("sshd_config"), config)?;
            let script = format!(
                "set -e\n\
                 mount -t tmpfs -o mode=0755 twofold-test-run /run\n\
                 mkdir -p /run/sshd /run/dbus /run/twofold\n\
                 ln -s '{socket}' /run/dbus/system_bus_socket\n\
                 ln -s '{login_socket}' /run/twofold/login.sock\n\
                 mount -t tmpfs -o mode=0755 twofold-test-log /var/log\n\
                 mount --bind '{pam_d}' /etc/pam.d\n\
                 mount --bind '{etc}/passwd' /etc/passwd\n\
                 mount --bind '{etc}/shadow' /etc/shadow\n\
                 exec /usr/sbin/sshd -D -e -f '{config}'\n",
                login_socket = bus.login_socket().display(),
                pam_d = pam_d.display(),
                etc = root.join("etc").display(),
                config = d.join("sshd_config").display(),
            );
            let log = std::fs::File::create(d.join("sshd.log"))?;
            // --kill-child: when unshare dies, sshd (the namespace's init)
            // gets SIGKILL, and with it every process in the namespace.
            let mut child = Command::new("unshare")
                .args(["--mount", "--propagation", "private"])
                .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
                .args(["sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting sshd (apt-get install openssh-server util-linux)")?;
            // Its own words, not a connect(): another test's sshd may hold the port.
            let listening = format!("Server listening on 127.0.0.1 port {port}.");
            let log_path = d.join("sshd.log");
            let ready = wait_for("sshd to listen", Duration::from_secs(10), || {
                child.try_wait().ok().flatten().is_some()
                    || std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains(&listening))
            });
            if ready.is_ok() && child.try_wait()?.is_none() {
                return Ok(Sshd {
                    child,
                    dir,
                    port,
                    host_key_line: format!("[127.0.0.1]:{port} {}", host_key.join(" ")),
                });
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                bail!("sshd did not start:\n{log}");
            }
        }
        bail!("no free port for sshd after 5 tries")
    }

    /// Everything sshd logged (`-e`: to stderr, into a file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Let `user` log in with the public key at `public_key_path`.
    pub fn authorize(&self, user: &str, public_key_path: &Path) -> Result<()> {
        std::fs::copy(
            public_key_path,
            self.dir.path().join("authorized_keys").join(user),
        )?;
        Ok(())
    }

    fn known_hosts(&self) -> Result<PathBuf> {
        let path = self.dir.path().join("known_hosts");
        std::fs::write(&path, format!("{}\n", self.host_key_line))?;
        Ok(path)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // unshare's death takes the whole PID namespace with it (--kill-child).
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            crate::assert_no_secret_in("sshd's log", &self.log());
        }
    }
}

/// A key pair for public-key logins, in a temporary directory.
pub struct ClientKey {
    dir: tempfile::TempDir,
}

impl ClientKey {
    pub fn new() -> Result<ClientKey> {
        let dir = tempfile::Builder::new().prefix("twofold-key-").tempdir()?;
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "twofold-test", "-f"])
            .arg(dir.path().join("id_ed25519"))
            .output()?;
        if !out.status.success() {
            bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(ClientKey { dir })
    }
    pub fn private(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }
    pub fn public(&self) -> PathBuf {
        self.dir.path().join("id_ed25519.pub")
    }
}

/// An `ssh` that must not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One `ssh` run: every prompt it showed, in order, and how it ended.
#[derive(Debug)]
pub struct SshLogin {
    /// The prompts as the client showed them (`(user@127.0.0.1) ` stripped).
    pub prompts: Vec<String>,
    /// 0: logged in and the remote command succeeded; 255: refused.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl SshLogin {
    pub fn logged_in(&self) -> bool {
        // 255 is ssh's own failure (refused, disconnected); anything else is
        // the remote command's status, so the login itself succeeded.
        self.status != 255
    }
    pub fn asked(&self, text: &str) -> usize {
        self.prompts.iter().filter(|p| p.contains(text)).count()
    }
}

/// How to connect.
#[derive(Clone)]
pub struct SshClient<'a> {
    pub user: &'a str,
    pub key: Option<&'a Path>,
    /// Source address (`-b`), e.g. `127.0.0.2` to come from another host.
    pub from: Option<&'a str>,
    /// Keyboard-interactive rounds the client tries before giving up.
    pub rounds: u32,
    /// Remote command; `None` runs an interactive shell on a pty (stdin: `exit`).
    pub command: Option<&'a str>,
}

impl<'a> SshClient<'a> {
    pub fn new(user: &'a str) -> Self {
        SshClient {
            user,
            key: None,
            from: None,
            rounds: 1,
            command: Some("true"),
        }
    }

    /// `ssh` with the options every run shares, up to the destination.
    fn command(&self, sshd: &Sshd) -> Result<Command> {
        let mut c = Command::new("ssh");
        // No host or user ssh_config: the same client options everywhere.
        c.args(["-F", "/dev/null", "-p", &sshd.port.to_string()])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                sshd.known_hosts()?.display()
            ))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
            .args(["-o", "BatchMode=no", "-o", "LogLevel=INFO"])
            .arg("-o")
            .arg(format!("NumberOfPasswordPrompts={}", self.rounds));
        match self.key {
            Some(key) => {
                c.args([
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "PubkeyAuthentication=yes",
                    "-i",
                ])
                .arg(key);
            }
            None => {
                c.args(["-o", "PubkeyAuthentication=no"]);
            }
        }
        if let Some(from) = self.from {
            c.args(["-b", from]);
        }
        Ok(c)
    }

    /// `ssh` on a pseudo-terminal, as a person runs it: type `password` at
    /// `Password: `, then return everything the terminal showed until
    /// `until` appeared, and hang up.
    pub fn terminal_until(&self, sshd: &Sshd, password: &str, until: &str) -> Result<String> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty fills two fds; the null pointers mean defaults.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!("openpty: {}", std::io::Error::last_os_error());
        }
        // SAFETY: both fds were just opened and are owned only here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut c = self.command(sshd)?;
        c.arg(format!("{}@127.0.0.1", self.user))
            .args(["-T", "--", "true"])
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(slave.try_clone()?)
            .stdout(slave.try_clone()?)
            .stderr(slave.try_clone()?);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                // A session of its own with the pty as controlling terminal:
                // ssh reads passwords from /dev/tty.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = KillOnDrop(c.spawn().context("ssh on a pty")?);
        let child = &mut child.0;
        drop(slave);
        let mut terminal = std::fs::File::from(master);
        let fd = terminal.as_raw_fd();
        let mut seen = Vec::new();
        let read_until =
            |terminal: &mut std::fs::File, text: &str, seen: &mut Vec<u8>| -> Result<()> {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !String::from_utf8_lossy(seen).contains(text) {
                    if Instant::now() > deadline {
                        bail!(
                            "{text:?} did not appear; the terminal showed:\n{}",
                            String::from_utf8_lossy(seen)
                        );
                    }
                    let mut poll = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    if unsafe { libc::poll(&mut poll, 1, 200) } > 0 {
                        let mut buf = [0u8; 4096];
                        match terminal.read(&mut buf) {
                            Ok(0) | Err(_) => bail!(
                                "ssh ended before {text:?} appeared; the terminal showed:\n{}",
                                String::from_utf8_lossy(seen)
                            ),
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                }
                Ok(())
            };
        let result = read_until(&mut terminal, "Password: ", &mut seen)
            .and_then(|()| Ok(terminal.write_all(format!("{password}\n").as_bytes())?))
            .and_then(|()| read_until(&mut terminal, until, &mut seen));
        let _ = child.kill();
        let _ = child.wait();
        result.map(|()| String::from_utf8_lossy(&seen).into_owned())
    }

    /// Connect and answer each prompt with what `answer(prompt)` types.
    pub fn login(&self, sshd: &Sshd, mut answer: impl FnMut(&str) -> String) -> Result<SshLogin> {
        let dir = tempfile::Builder::new().prefix("twofold-ssh-").tempdir()?;
        let socket = dir.path().join("askpass.sock");
        let listener = UnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let mut c = self.command(sshd)?;
        c.arg(format!("{}@127.0.0.1", self.user));
        let stdin = match self.command {
            Some(command) => {
                c.args(["-T", "--", command]);
                Stdio::null()
            }
            None => {
                c.arg("-tt");
                Stdio::piped()
            }
        };
        c.env("SSH_ASKPASS", artifacts().bin.join("ssh-askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("TWOFOLD_ASKPASS_SOCKET", &socket)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = KillOnDrop(c.spawn().context("ssh (apt-get install openssh-client)")?);
        let child = &mut child.0;
        if let Some(mut stdin) = child.stdin.take() {
            // The interactive shell ends as soon as it starts.
            let _ = stdin.write_all(b"exit\n");
        }
        let mut out = child.stdout.take().context("stdout")?;
        let mut err = child.stderr.take().context("stderr")?;
        let out_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let prefix = format!("({}@127.0.0.1) ", self.user);
        let mut prompts = Vec::new();
        let status = loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false)?;
                    let mut raw = Vec::new();
                    stream.read_to_end(&mut raw)?;
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    let prompt = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                    let reply = answer(&prompt);
                    prompts.push(prompt);
                    stream.write_all(reply.as_bytes())?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait()? {
                        break status;
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        let _ = child.kill();
                        let _ = child.wait();
                        bail!("ssh did not finish within 60 s; prompts so far: {prompts:#?}");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        Ok(SshLogin {
            prompts,
            status: status.code().unwrap_or(-1),
            stdout,
            stderr,
            elapsed,
        })
    }
}
