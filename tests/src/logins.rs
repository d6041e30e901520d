//! Logins through real libpam loading the built `pam_twofold.so` (via `pam-driver`).

use crate::*;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

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
        let c = bus.command(artifacts().pam_driver());
        self.answering(c, user, rhost, first, then)
    }

    /// The same, with the host program running as `as_user` (a screen
    /// locker): its connection is held at the prompt until `then` returns.
    pub fn login_as_answering(
        &self,
        bus: &Bus,
        as_user: &str,
        user: &str,
        first: &[u8],
        then: impl FnOnce() -> Vec<u8>,
    ) -> Result<Attempt> {
        let c = bus.command_as(as_user, artifacts().pam_driver());
        self.answering(c, user, DEFAULT_RHOST, first, then)
    }

    fn answering(
        &self,
        c: Command,
        user: &str,
        rhost: &str,
        first: &[u8],
        then: impl FnOnce() -> Vec<u8>,
    ) -> Result<Attempt> {
        let mut child = self
            .driver(c, user.as_ref(), rhost, &[])
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
