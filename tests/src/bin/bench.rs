//! `make bench`: the cost of one verification through the PAM module.
//!
//! A private bus and a release twofoldd; synthetic users (through nss_wrapper,
//! so nothing is added to the host's passwd) with enrollments seeded through
//! the daemon's own store; then N logins in one process through real libpam
//! (`pam-driver --repeat`, each login a full pam_start_confdir ..
//! pam_authenticate .. pam_end with a fresh, valid code). Prints latency,
//! throughput, CPU per login, module size and threads left after pam_end.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{Context, Result, anyhow, bail};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, ExitCode};
use twofold_e2e::postgres::Fleet;
use twofold_e2e::{
    Bus, DEFAULT_RHOST, Daemon, PamService, artifacts, pam, unix_now, wait_for_step_margin,
};
use twofoldd::backup::{self, HashParams};
use twofoldd::store::{ENROLLMENT_VERSION, Enrollment, FileStore, PgStore, SecretBytes, Store};
use twofoldd::totp::{self, TotpParams};

const SIX: TotpParams = TotpParams {
    digits: 6,
    period: 30,
    window: 1,
};
const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

fn main() -> ExitCode {
    // `fill` and `enroll-as` are this program run again by `scale` and
    // `memory`, under the parent's sink.
    let child = matches!(
        std::env::args().nth(1).as_deref(),
        Some("fill" | "enroll-as")
    );
    let _syslog = (!child).then(SyslogSink::start);
    let result = match std::env::args().nth(1).as_deref() {
        Some("ssh") => ssh(std::env::args()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(20)),
        Some("report") => report(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(10_000),
        ),
        Some("scale") => scale(
            &std::env::args()
                .skip(2)
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<usize>>(),
        ),
        Some("footprint") => {
            use_release_build();
            Modules::start(2).and_then(|m| footprint(&m, 1))
        }
        Some("floor") => floor(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000),
        ),
        Some("memory") => memory(),
        Some("fleet") => fleet(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000),
        ),
        Some("enroll-as") => enroll_as(),
        Some("fill") => {
            let arg = |n: usize| std::env::args().nth(n).unwrap_or_default();
            fill(
                std::path::Path::new(&arg(2)),
                arg(3).parse().unwrap_or(0),
                arg(4).parse().unwrap_or(0),
            )
        }
        _ => pam(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A syslog for the run when the host has none. Every module logs each
/// login (pam_google_authenticator through pam_syslog, twofoldd through
/// syslog), and without a listener on /dev/log glibc's syslog falls back to
/// writing on /dev/console: on this VM's serial console that cost
/// pam_google_authenticator about 2.1 ms of CPU per login, an artifact of a host
/// without syslog rather than a cost of either module. So a host without
/// /dev/log gets a sink there that reads and drops the lines, as rsyslog or
/// journald would take them, removed when the run ends.
struct SyslogSink(Option<std::path::PathBuf>);

impl SyslogSink {
    const PATH: &str = "/dev/log";

    fn start() -> SyslogSink {
        use std::os::unix::net::UnixDatagram;
        let path = std::path::Path::new(Self::PATH);
        let listening = UnixDatagram::unbound().and_then(|s| s.connect(path));
        match listening {
            Ok(()) => {
                eprintln!("syslog: the host's {}", Self::PATH);
                SyslogSink(None)
            }
            Err(_) if path.symlink_metadata().is_err() => match UnixDatagram::bind(path) {
                Ok(sink) => {
                    std::thread::spawn(move || {
                        let mut line = [0u8; 8192];
                        while sink.recv(&mut line).is_ok() {}
                    });
                    eprintln!(
                        "syslog: none on this host; {} is this run's sink (lines dropped, removed at the end)",
                        Self::PATH
                    );
                    SyslogSink(Some(path.to_path_buf()))
                }
                Err(e) => {
                    eprintln!(
                        "syslog: none on this host, and no sink at {}: {e}",
                        Self::PATH
                    );
                    SyslogSink(None)
                }
            },
            Err(e) => {
                eprintln!(
                    "syslog: {} exists but takes no lines ({e}); the figures include the fallback to the console",
                    Self::PATH
                );
                SyslogSink(None)
            }
        }
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Synthetic users `tfb0..` (uid 40000..) and a group for every tenth of
/// them, in nss_wrapper files for twofoldd.
fn synthetic_accounts(dir: &std::path::Path, users: usize) -> Result<[(String, String); 3]> {
    let passwd = dir.join("passwd");
    let group = dir.join("group");
    let mut pw = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut gr = String::from("root:x:0:\n");
    let mut admins = Vec::new();
    for i in 0..users {
        writeln!(
            pw,
            "tfb{i}:x:{}:{}:bench:/nonexistent:/usr/sbin/nologin",
            40_000 + i,
            40_000 + i
        )?;
        writeln!(gr, "tfb{i}:x:{}:", 40_000 + i)?;
        if i % 10 == 0 {
            admins.push(format!("tfb{i}"));
        }
    }
    writeln!(gr, "tfb-admins:x:39999:{}", admins.join(","))?;
    std::fs::write(&passwd, pw)?;
    std::fs::write(&group, gr)?;
    Ok([
        ("LD_PRELOAD".into(), NSS_WRAPPER.into()),
        (
            "NSS_WRAPPER_PASSWD".into(),
            passwd.to_str().context("path")?.into(),
        ),
        (
            "NSS_WRAPPER_GROUP".into(),
            group.to_str().context("path")?.into(),
        ),
    ])
}

fn seed(store: &dyn Store, user: &str, generation: u64) -> Result<Vec<u8>> {
    Ok(seed_with_backup(store, user, generation, 1)?.0)
}

/// An enrollment written through the daemon's own store, with `backup_codes`
/// backup codes hashed with cheap, benchmark-only parameters (seeding
/// thousands of users with the real ones would take minutes).
fn seed_with_backup(
    store: &dyn Store,
    user: &str,
    generation: u64,
    backup_codes: u32,
) -> Result<(Vec<u8>, Vec<String>)> {
    let secret: Vec<u8> = rand::random::<[u8; 20]>().to_vec();
    let cheap = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let (plain, backup) = backup::generate(backup_codes, cheap)?;
    let enrollment = Enrollment {
        version: ENROLLMENT_VERSION,
        generation,
        secret: Some(SecretBytes(secret.clone())),
        email: None,
        digits: 6,
        period: 30,
        enrolled_at: unix_now(),
        last_step: None,
        backup,
        failures: 0,
        last_failure: 0,
        ceiling_tat: 0,
        last_login: None,
        apps: Default::default(),
    };
    store.write_enrollment(user, None, &enrollment)?;
    Ok((
        secret,
        plain.iter().map(|c| c.expose().to_string()).collect(),
    ))
}

/// `twofold admin report` on a host with `users` accounts, half enrolled.
fn report(users: usize) -> Result<()> {
    if !std::path::Path::new(NSS_WRAPPER).exists() {
        bail!("{NSS_WRAPPER} is missing (apt-get install libnss-wrapper)");
    }
    let work = tempfile::tempdir()?;
    let env = synthetic_accounts(work.path(), users)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bus = Bus::start()?;
    let policy = "[default]\nmode = \"recommend\"\nschedule = [ { from = 2099-01-01, mode = \"require\" } ]\n\
[[rule]]\nname = \"admins\"\ngroups = [\"tfb-admins\"]\nmode = \"require\"\n";
    let policy_path = work.path().join("policy.toml");
    std::fs::write(&policy_path, policy)?;
    let daemon = Daemon::start_with_env(
        &bus,
        &format!("policy_file = \"{}\"\n", policy_path.display()),
        &env,
    )?;
    let store = FileStore::open(&daemon.state_dir())?;
    let seeding = std::time::Instant::now();
    for i in (0..users).step_by(2) {
        seed(&store, &format!("tfb{i}"), 1 + i as u64)?;
    }
    eprintln!(
        "seeded {} enrollments in {:.1} s",
        users.div_ceil(2),
        seeding.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut printed = String::new();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let out = bus
            .command(artifacts().twofold())
            .args(["admin", "report"])
            .output()?;
        times.push(start.elapsed().as_secs_f64());
        if !out.status.success() {
            bail!("report failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        printed = String::from_utf8(out.stdout)?;
    }
    let lines: Vec<&str> = printed.lines().collect();
    println!(
        "`twofold admin report` with {users} users ({} enrolled), 3 runs: {}",
        users.div_ceil(2),
        times
            .iter()
            .map(|t| format!("{t:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("first lines and the summary:\n");
    for l in lines.iter().take(6) {
        println!("{l}");
    }
    println!("...");
    for l in lines.iter().rev().take(2).rev() {
        println!("{l}");
    }
    Ok(())
}

/// Whole SSH logins through throwaway sshds: password only (the shipped
/// `sshd` stack without pam_twofold), password + twofold code (the shipped
/// stack), password + pam_google_authenticator code (the same stack with
/// that module in twofold's place), interleaved, `n` of each; the wall time
/// of the whole `ssh` run.
fn ssh(n: usize) -> Result<()> {
    use twofold_e2e::ssh::{SshClient, Sshd, SshdSetup, packaged_stack};
    use_release_build();
    const PASSWORD: &str = "bench horse 9";
    let bus = Bus::start()?;
    let daemon = Daemon::start_with_policy(&bus, "", "[default]\nmode = \"require\"\n")?;
    let with_code = packaged_stack("sshd", "")?;
    let module = artifacts().module.display().to_string();
    let password_only: String = with_code
        .lines()
        .filter(|l| l.trim_start().starts_with('#') || !l.contains(&module))
        .map(|l| format!("{l}\n"))
        .collect();
    let google_dir = tempfile::tempdir()?;
    let with_google: String = with_code
        .lines()
        .map(|l| {
            if l.trim_start().starts_with('#') || !l.contains(&module) {
                format!("{l}\n")
            } else {
                format!(
                    "auth required pam_google_authenticator.so secret={}/${{USER}} user=root\n",
                    google_dir.path().display()
                )
            }
        })
        .collect();
    // One user per login with a code: each TOTP step is accepted once.
    // Removed at the end, whatever happens (they have no password outside
    // the throwaway sshd's namespace anyway).
    struct Remove(Vec<String>);
    impl Drop for Remove {
        fn drop(&mut self) {
            for user in &self.0 {
                let _ = Command::new("userdel").arg(user).output();
            }
        }
    }
    let names: Vec<String> = (0..n).map(|i| format!("tf-sshbench-{i:02}")).collect();
    let _remove = Remove(names.clone());
    for user in &names {
        twofold_e2e::test_user(user)?;
    }
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let start = |pam_stack: String| {
        Sshd::start(
            &bus,
            &SshdSetup {
                pam_stack,
                extra_config: "",
                accounts: &accounts,
            },
        )
    };
    let sshds = [
        ("password only", start(password_only)?, 1),
        ("password + pam_twofold", start(with_code)?, 2),
        (
            "password + pam_google_authenticator",
            start(with_google)?,
            2,
        ),
    ];
    let mut users = Vec::with_capacity(n);
    for user in &names {
        // The same secret for both modules; each keeps its own used steps.
        let secret = twofold_e2e::enroll(&bus, user)?.secret;
        let file = google_dir.path().join(user);
        std::fs::write(
            &file,
            format!("{secret}\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n"),
        )?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        users.push((user.clone(), secret));
    }
    wait_for_step_margin(20);
    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(n); sshds.len()];
    for (i, (user, secret)) in users.iter().enumerate() {
        let code = twofold_e2e::oathtool(secret, 0)?;
        let answer = |prompt: &str| {
            if prompt.ends_with("Password: ") {
                PASSWORD.into()
            } else {
                code.clone()
            }
        };
        let client = SshClient::new(user);
        // Rotate which goes first, so that none always meets a warm cache.
        for k in 0..sshds.len() {
            let which = (i + k) % sshds.len();
            let (what, sshd, prompts) = &sshds[which];
            let login = client.login(sshd, answer)?;
            if !login.logged_in() || login.status != 0 {
                bail!("{what} login failed: {login:#?}\n{}", daemon.log());
            }
            if login.prompts.len() != *prompts {
                bail!("unexpected prompts for {what}: {:?}", login.prompts);
            }
            times[which].push(login.elapsed.as_micros() as u64);
        }
    }
    // Each triple ran back to back: differences within it cancel slow spells.
    let paired = |which: usize| {
        let mut d: Vec<i64> = times[0]
            .iter()
            .zip(&times[which])
            .map(|(p, t)| *t as i64 - *p as i64)
            .collect();
        d.sort_unstable();
        d[d.len() / 2] as f64 / 1000.0
    };
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "twofold bench: whole SSH logins through throwaway sshds on 127.0.0.1 ({n} each, interleaved)"
    );
    println!(
        "| login | median | min | max | added over password only (median of paired differences) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (which, (what, _, _)) in sshds.iter().enumerate() {
        let mut v = times[which].clone();
        v.sort_unstable();
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            ms(percentile(&v, 50.0)),
            ms(v[0]),
            ms(v[v.len() - 1]),
            if which == 0 {
                "-".to_string()
            } else {
                format!("{:.1} ms", paired(which))
            }
        );
    }
    println!(
        "pam_twofold adds {:.1} ms, pam_google_authenticator {:.1} ms",
        paired(1),
        paired(2)
    );
    Ok(())
}

/// The harness copies release binaries unless TWOFOLD_PROFILE says otherwise.
fn use_release_build() {
    if std::env::var_os("TWOFOLD_PROFILE").is_none() {
        // SAFETY: set before any thread is started.
        unsafe { std::env::set_var("TWOFOLD_PROFILE", "release") };
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(11) + get(12)) / ticks
}

fn children_cpu_seconds() -> f64 {
    rusage_cpu_seconds(libc::RUSAGE_CHILDREN)
}

/// utime + stime of this process (`RUSAGE_SELF`) or of its waited-for
/// children (`RUSAGE_CHILDREN`), in seconds.
fn rusage_cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain data filled by getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(who, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A login to run: the account and what it types at the prompt.
type Login = (String, String);

/// One login's outcome as pam-driver reports it.
#[derive(Clone, Copy)]
struct Outcome {
    micros: u64,
    result: i32,
}

/// The second-factor modules compared, each alone in its stack (after
/// `pam_permit`, which stands in for the password).
struct Modules {
    work: tempfile::TempDir,
    env: Vec<(String, String)>,
    bus: Bus,
    daemon: Daemon,
    store: Box<dyn Store>,
    /// Accounts seeded so far (tfb0 .. tfbN-1), and their secrets.
    secrets: Vec<Vec<u8>>,
    twofold: PamService,
    google: PamService,
    oath: PamService,
    /// pam_permit alone: what libpam and the host cost without a second factor.
    permit: PamService,
}

const GOOGLE: &str = "pam_google_authenticator";
const OATH: &str = "pam_oath";
const TWOFOLD: &str = "pam_twofold";
const PERMIT: &str = "pam_permit";

impl Modules {
    /// `users` synthetic accounts in nss_wrapper, all enrolled in twofold;
    /// the anchors' files are written per phase, for the users it takes.
    fn start(users: usize) -> Result<Modules> {
        Self::start_on(users, None)
    }

    /// The same, with the daemon on `fleet`'s database instead of its files.
    fn start_on(users: usize, fleet: Option<&Fleet>) -> Result<Modules> {
        if !std::path::Path::new(NSS_WRAPPER).exists() {
            bail!("{NSS_WRAPPER} is missing (apt-get install libnss-wrapper)");
        }
        let work = tempfile::tempdir()?;
        let env = synthetic_accounts(work.path(), users)?.to_vec();
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let bus = Bus::start()?;
        let config = fleet.map(Fleet::config).unwrap_or_default();
        let daemon = Daemon::start_with_env(&bus, &config, &env_refs)?;
        let store: Box<dyn Store> = match fleet {
            None => Box::new(FileStore::open(&daemon.state_dir())?),
            Some(f) => Box::new(PgStore::new(&f.store_config())?),
        };
        let google_dir = work.path().join("google");
        std::fs::create_dir(&google_dir)?;
        let oath_file = work.path().join("users.oath");
        std::fs::write(&oath_file, "")?;
        std::fs::set_permissions(&oath_file, std::fs::Permissions::from_mode(0o600))?;
        let twofold = PamService::new("")?;
        // The anchors as their documentation configures them for secrets kept
        // by root: google-authenticator with one file per user (read as root,
        // codes never reused), pam_oath with its one users file.
        let google = PamService::with_stack(&format!(
            "auth required pam_google_authenticator.so secret={}/${{USER}} user=root\n\
             auth required pam_permit.so\n",
            google_dir.display()
        ))?;
        let oath = PamService::with_stack(&format!(
            "auth required pam_oath.so usersfile={} window=1 digits=6\n\
             auth required pam_permit.so\n",
            oath_file.display()
        ))?;
        let mut modules = Modules {
            work,
            env,
            bus,
            daemon,
            store,
            secrets: Vec::new(),
            twofold,
            google,
            oath,
            permit: PamService::with_stack("auth required pam_permit.so\n")?,
        };
        let seeding = std::time::Instant::now();
        for i in 0..users {
            let secret = seed(modules.store.as_ref(), &format!("tfb{i}"), 1 + i as u64)?;
            modules.secrets.push(secret);
        }
        eprintln!(
            "seeded {users} enrollments in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );
        Ok(modules)
    }

    fn service(&self, module: &str) -> &PamService {
        match module {
            GOOGLE => &self.google,
            OATH => &self.oath,
            PERMIT => &self.permit,
            _ => &self.twofold,
        }
    }

    /// Gives `users` (indexes) to the anchors: a google-authenticator file
    /// each, and the pam_oath users file holding exactly them.
    fn anchor_files(&self, users: &[usize]) -> Result<()> {
        let mut oath = String::new();
        for &i in users {
            let secret = &self.secrets[i];
            let file = self.work.path().join("google").join(format!("tfb{i}"));
            let text = format!(
                "{}\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n",
                totp_rs::Secret::from(&secret[..]).to_base32()
            );
            std::fs::write(&file, text)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(oath, "HOTP/T30/6\ttfb{i}\t-\t{hex}")?;
        }
        std::fs::write(self.work.path().join("users.oath"), oath)?;
        Ok(())
    }

    /// Two logins per user, valid for the next half minute at least: the code
    /// of this time step for every user, then the code of the next one.
    fn totp_logins(&self, users: &[usize]) -> Result<Vec<Login>> {
        wait_for_step_margin(20);
        let now = unix_now();
        let mut logins = Vec::with_capacity(users.len() * 2);
        for offset in [0, 30] {
            for &i in users {
                logins.push((
                    format!("tfb{i}"),
                    totp::code_at(&self.secrets[i], SIX, now + offset)?,
                ));
            }
        }
        Ok(logins)
    }

    /// Starts pam-driver on `logins`, in order, for `module`.
    fn spawn(
        &self,
        module: &str,
        logins: &[Login],
        start_at_ms: Option<u64>,
        tag: &str,
    ) -> Result<std::process::Child> {
        let file = self.work.path().join(format!("codes-{tag}"));
        let mut text = String::new();
        for (user, code) in logins {
            writeln!(text, "{user} {code}")?;
        }
        std::fs::write(&file, text)?;
        let service = self.service(module);
        let mut c = self.bus.command(artifacts().pam_driver());
        c.arg("--confdir")
            .arg(service.confdir())
            .args(["--service", &service.name, "--rhost", DEFAULT_RHOST])
            .args(["--repeat", &logins.len().to_string()])
            .arg("--codes")
            .arg(&file)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(at) = start_at_ms {
            c.args(["--start-at", &at.to_string()]);
        }
        Ok(c.spawn()?)
    }

    /// Runs `logins` through `module` from one process; the outcomes in order.
    fn run(&self, module: &str, logins: &[Login]) -> Result<Vec<Outcome>> {
        collect(
            self.spawn(module, logins, None, "sequential")?,
            logins.len(),
        )
    }

    fn daemon_cpu(&self) -> f64 {
        self.daemon.pid().map_or(0.0, cpu_seconds)
    }
}

/// The outcomes pam-driver printed, one per login, checked complete.
fn collect(child: std::process::Child, expected: usize) -> Result<Vec<Outcome>> {
    let out = child.wait_with_output()?;
    let outcomes: Vec<Outcome> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (micros, result) = l.trim().split_once(' ')?;
            Some(Outcome {
                micros: micros.parse().ok()?,
                result: result.parse().ok()?,
            })
        })
        .collect();
    if outcomes.len() != expected {
        bail!(
            "pam-driver reported {} of {expected} logins: {}",
            outcomes.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(outcomes)
}

/// Figures for one module's logins.
struct Figures {
    median_ms: f64,
    p99_ms: f64,
    per_second: f64,
    cpu_ms: f64,
    refused: usize,
    /// The PAM results of the refused logins, and how many of each.
    refusals: std::collections::BTreeMap<i32, usize>,
}

impl Figures {
    /// "0", or "3 (2 × result 9, 1 × result 7)".
    fn refused_text(&self) -> String {
        if self.refused == 0 {
            return "0".into();
        }
        let parts: Vec<String> = self
            .refusals
            .iter()
            .map(|(result, n)| format!("{n} × PAM result {result}"))
            .collect();
        format!("{} ({})", self.refused, parts.join(", "))
    }
}

fn figures(outcomes: &[Outcome], wall: f64, cpu: f64) -> Figures {
    let mut micros: Vec<u64> = outcomes.iter().map(|o| o.micros).collect();
    micros.sort_unstable();
    Figures {
        median_ms: percentile(&micros, 50.0) as f64 / 1000.0,
        p99_ms: percentile(&micros, 99.0) as f64 / 1000.0,
        per_second: outcomes.len() as f64 / wall,
        cpu_ms: cpu * 1000.0 / outcomes.len() as f64,
        refused: outcomes.iter().filter(|o| o.result != pam::SUCCESS).count(),
        refusals: outcomes.iter().filter(|o| o.result != pam::SUCCESS).fold(
            Default::default(),
            |mut map, o| {
                *map.entry(o.result).or_default() += 1;
                map
            },
        ),
    }
}

/// Takes the next `n` unused accounts.
struct Accounts(std::ops::Range<usize>);

impl Accounts {
    fn take(&mut self, n: usize) -> Result<Vec<usize>> {
        let start = self.0.start;
        if start + n > self.0.end {
            bail!("the benchmark needs more synthetic accounts");
        }
        self.0.start += n;
        Ok((start..start + n).collect())
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `logins` spread over `in_flight` drivers started at the same instant, each
/// account's logins in one driver (in order: a later step first would refuse
/// the earlier one, rightly). Outcomes in the order of `logins`, and the wall
/// time from the common start to the last driver's exit.
fn concurrent(
    m: &Modules,
    module: &str,
    logins: &[Login],
    in_flight: usize,
) -> Result<(Vec<Outcome>, f64)> {
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); in_flight];
    let mut lane_of = std::collections::HashMap::new();
    for (k, (user, _)) in logins.iter().enumerate() {
        let next = lane_of.len() % in_flight;
        let lane = *lane_of.entry(user.clone()).or_insert(next);
        lanes[lane].push(k);
    }
    run_lanes(m, module, logins, &lanes)
}

/// Runs each lane (indexes into `logins`) in its own driver, all starting at
/// once.
fn run_lanes(
    m: &Modules,
    module: &str,
    logins: &[Login],
    lanes: &[Vec<usize>],
) -> Result<(Vec<Outcome>, f64)> {
    // Time for every driver to start and load its stack before the signal.
    let start_at = unix_millis() + 300 + 5 * lanes.len() as u64;
    let mut children = Vec::new();
    for (n, lane) in lanes.iter().enumerate() {
        let lane_logins: Vec<Login> = lane.iter().map(|&k| logins[k].clone()).collect();
        children.push((
            m.spawn(module, &lane_logins, Some(start_at), &format!("lane{n}"))?,
            lane,
        ));
    }
    let mut outcomes = vec![
        Outcome {
            micros: 0,
            result: -1
        };
        logins.len()
    ];
    for (child, lane) in children {
        for (k, outcome) in lane.iter().zip(collect(child, lane.len())?) {
            outcomes[*k] = outcome;
        }
    }
    let wall = (unix_millis().saturating_sub(start_at)) as f64 / 1000.0;
    Ok((outcomes, wall))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `make bench`: one verification through each module, concurrency, the
/// race check and the module's footprint.
fn pam() -> Result<()> {
    use_release_build();
    let logins = env_usize("TWOFOLD_BENCH_LOGINS", 1000).max(6) / 6 * 6;
    let per_level = env_usize("TWOFOLD_BENCH_CONCURRENT_LOGINS", 4000);
    let levels = [1usize, 8, 64, 256];
    let race_users = 512;
    // Sequential: logins/2 users per module (two steps each); concurrency:
    // per_level/2 users per level for twofold, and for each anchor at 8;
    // the race; one spare for the footprint login.
    let users = logins / 2 * 3 + per_level / 2 * (levels.len() + 2) + race_users + 1;
    let m = Modules::start(users)?;
    let mut accounts = Accounts(0..users);
    print_machine();

    // 1. One verification at a time, the three modules interleaved in three
    // rounds so that a slow spell of the machine touches each alike.
    let mut seq: Vec<(&str, Vec<Outcome>, f64, f64)> = Vec::new();
    let mut plan = Vec::new();
    for module in [TWOFOLD, GOOGLE, OATH] {
        let mine = accounts.take(logins / 2)?;
        plan.push((module, mine));
        seq.push((module, Vec::new(), 0.0, 0.0));
    }
    let all: Vec<usize> = plan.iter().flat_map(|(_, u)| u.clone()).collect();
    m.anchor_files(&all)?;
    let mut per_module: Vec<Vec<Login>> = Vec::new();
    for (_, users) in &plan {
        per_module.push(m.totp_logins(users)?);
    }
    // pam_twofold's CPU time by process: the host, twofoldd, dbus-daemon.
    let mut split = [0.0f64; 3];
    for round in 0..3 {
        for (n, (module, _)) in plan.iter().enumerate() {
            let chunk = per_module[n].len() / 3;
            let part = &per_module[n][round * chunk..(round + 1) * chunk];
            let bus_cpu = || cpu_seconds(m.bus.pid());
            let (cpu_before, daemon_before, bus_before) =
                (children_cpu_seconds(), m.daemon_cpu(), bus_cpu());
            let start = std::time::Instant::now();
            let outcomes = m.run(module, part)?;
            let wall = start.elapsed().as_secs_f64();
            let mut cpu = children_cpu_seconds() - cpu_before;
            if *module == TWOFOLD {
                let (daemon, bus) = (m.daemon_cpu() - daemon_before, bus_cpu() - bus_before);
                split[0] += cpu;
                split[1] += daemon;
                split[2] += bus;
                cpu += daemon;
            }
            let entry = &mut seq[n];
            entry.1.extend(outcomes);
            entry.2 += wall;
            entry.3 += cpu;
        }
    }
    println!(
        "\n1. One verification through PAM, one at a time: {} logins per module over {} users each, \
         in 3 interleaved rounds, each login pam_start_confdir .. pam_authenticate .. pam_end\n",
        logins,
        logins / 2
    );
    println!(
        "| module | median | 99th percentile | logins/s | CPU per login (host + daemon) | refused |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut seq_figures = Vec::new();
    for (module, outcomes, wall, cpu) in &seq {
        let f = figures(outcomes, *wall, *cpu);
        println!(
            "| {module} | {:.3} ms | {:.3} ms | {:.0} | {:.3} ms | {} |",
            f.median_ms,
            f.p99_ms,
            f.per_second,
            f.cpu_ms,
            f.refused_text()
        );
        seq_figures.push((*module, f));
    }
    let per_login = |secs: f64| secs * 1000.0 / seq[0].1.len() as f64;
    println!(
        "pam_twofold CPU per login by process: host {:.3} ms, twofoldd {:.3} ms, dbus-daemon {:.3} ms \
         (the bus is not counted in the table)",
        per_login(split[0]),
        per_login(split[1]),
        per_login(split[2])
    );
    let ours = &seq_figures[0].1;
    for (module, f) in &seq_figures[1..] {
        println!(
            "pam_twofold / {module}: median {:.2}, 99th percentile {:.2}, CPU {:.2}",
            ours.median_ms / f.median_ms,
            ours.p99_ms / f.p99_ms,
            ours.cpu_ms / f.cpu_ms
        );
    }

    // 2. Concurrency.
    println!(
        "\n2. Logins in flight at once (separate host processes started together, \
         {per_level} logins per run, each account's codes in one process)\n"
    );
    println!(
        "| module | in flight | logins/s | median | 99th percentile | correct codes refused |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut at_eight = Vec::new();
    let runs: Vec<(&str, usize)> = levels
        .iter()
        .map(|&l| (TWOFOLD, l))
        .chain([(GOOGLE, 8), (OATH, 8)])
        .collect();
    for (module, in_flight) in runs {
        let users = accounts.take(per_level / 2)?;
        if module != TWOFOLD {
            m.anchor_files(&users)?;
        }
        let logins = m.totp_logins(&users)?;
        let (outcomes, wall) = concurrent(&m, module, &logins, in_flight)?;
        let f = figures(&outcomes, wall, 0.0);
        println!(
            "| {module} | {in_flight} | {:.0} | {:.3} ms | {:.3} ms | {} |",
            f.per_second,
            f.median_ms,
            f.p99_ms,
            f.refused_text()
        );
        if in_flight == 8 {
            at_eight.push((module, f.per_second));
        }
    }
    for (module, rate) in &at_eight[1..] {
        println!(
            "pam_twofold / {module} throughput at 8 in flight: {:.2}",
            at_eight[0].1 / rate
        );
    }

    // 3. The race: each code typed twice at once, in two processes.
    race(&m, &accounts.take(race_users)?)?;

    // 4. Footprint.
    footprint(&m, accounts.take(1)?[0])?;
    drop(m);
    Ok(())
}

fn print_machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!("twofold bench (release build)");
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// 64 processes at once; every TOTP code and every backup code of `users`
/// is typed by two processes at the same moment, and a second backup code
/// of each user by a third beside them. Exactly one of each pair must get
/// in, every second backup code must get in (no use lost to a concurrent
/// write), and afterwards no used backup code works again.
fn race(m: &Modules, users: &[usize]) -> Result<()> {
    const LANES: usize = 64;
    let wait = std::time::Instant::now();
    let mut backup = Vec::new();
    for &i in users {
        let (secret, codes) = seed_with_backup(
            m.store.as_ref(),
            &format!("tfb{i}"),
            9_000_000 + i as u64,
            2,
        )?;
        backup.push((secret, codes));
    }
    eprintln!(
        "re-enrolled {} users with backup codes in {:.1} s",
        users.len(),
        wait.elapsed().as_secs_f64()
    );
    wait_for_step_margin(20);
    let now = unix_now();
    // Each user: its TOTP code and its first backup code, each in lanes p
    // and p + 1; its second backup code in lane p + 2.
    let mut logins: Vec<Login> = Vec::new();
    let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); LANES];
    let mut totp_pairs = Vec::new();
    let mut backup_pairs = Vec::new();
    let mut singles = Vec::new();
    for (n, (&i, (secret, codes))) in users.iter().zip(&backup).enumerate() {
        let user = format!("tfb{i}");
        let code = totp::code_at(secret, SIX, now)?;
        let p = n % LANES;
        let mut add = |login: Login, lane: usize| {
            logins.push(login);
            lanes[lane % LANES].push(logins.len() - 1);
            logins.len() - 1
        };
        let t = (
            add((user.clone(), code.clone()), p),
            add((user.clone(), code), p + 1),
        );
        let b = (
            add((user.clone(), codes[0].clone()), p),
            add((user.clone(), codes[0].clone()), p + 1),
        );
        let s = add((user, codes[1].clone()), p + 2);
        totp_pairs.push(t);
        backup_pairs.push(b);
        singles.push(s);
    }
    let (outcomes, wall) = run_lanes(m, TWOFOLD, &logins, &lanes)?;
    let ok = |k: usize| outcomes[k].result == pam::SUCCESS;
    let count = |pairs: &[(usize, usize)], wins: usize| {
        pairs
            .iter()
            .filter(|(a, b)| usize::from(ok(*a)) + usize::from(ok(*b)) == wins)
            .count()
    };
    let totp_twice = count(&totp_pairs, 2);
    let totp_never = count(&totp_pairs, 0);
    let backup_twice = count(&backup_pairs, 2);
    let backup_never = count(&backup_pairs, 0);
    let lost = singles.iter().filter(|&&k| !ok(k)).count();
    // Afterwards every backup code used above must be refused.
    let mut again: Vec<Login> = Vec::new();
    for (&i, (_, codes)) in users.iter().zip(&backup).take(64) {
        for code in codes {
            again.push((format!("tfb{i}"), code.clone()));
        }
    }
    let reused = m
        .run(TWOFOLD, &again)?
        .iter()
        .filter(|o| o.result == pam::SUCCESS)
        .count();
    println!(
        "\n3. The race: {} logins from {LANES} processes at once in {wall:.1} s; each of {} TOTP codes \
         and {} backup codes typed twice at the same moment, and a second backup code per user beside them\n",
        logins.len(),
        users.len(),
        users.len()
    );
    println!("| check | count (must be 0) |");
    println!("| --- | --- |");
    println!("| TOTP code accepted twice | {totp_twice} |");
    println!("| TOTP code refused both times | {totp_never} |");
    println!("| backup code accepted twice | {backup_twice} |");
    println!("| backup code refused both times | {backup_never} |");
    println!("| second backup code refused (a lost use) | {lost} |");
    println!(
        "| used backup codes accepted again afterwards (of {}) | {reused} |",
        again.len()
    );
    if totp_twice + totp_never + backup_twice + backup_never + lost + reused != 0 {
        bail!("the daemon was wrong under concurrency: {}", m.daemon.log());
    }
    Ok(())
}

/// Size, threads left behind, resident memory added to the host process.
fn footprint(m: &Modules, spare: usize) -> Result<()> {
    let module = &artifacts().module;
    let size = std::fs::metadata(module)?.len();
    let stripped_path = m.work.path().join("stripped.so");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(module)
        .status()?;
    let stripped = if strip.success() {
        std::fs::metadata(&stripped_path)?.len()
    } else {
        0
    };
    let code = totp::code_at(&m.secrets[spare], SIX, unix_now())?;
    let (attempt, report) = m.twofold.login_measuring_host(
        &m.bus,
        &format!("tfb{spare}"),
        format!("{code}\n").as_bytes(),
    )?;
    // The same host process with a stack of pam_permit alone: what libpam
    // and the driver cost without the module.
    let bare = PamService::with_stack("auth required pam_permit.so\n")?;
    let (_, baseline) = bare.login_measuring_host(&m.bus, "root", b"")?;
    let kib = |name: &str| report.get(name).copied().unwrap_or(0);
    let base = |name: &str| baseline.get(name).copied().unwrap_or(0);
    // What `PART-after-kb` adds to `PART-before-kb` in one driver's report.
    let grew = |report: &std::collections::HashMap<String, usize>, part: &str| {
        let get = |k: String| report.get(&k).copied().unwrap_or(0) as i64;
        get(format!("{part}-after-kb")) - get(format!("{part}-before-kb"))
    };
    println!("\n4. The module's footprint\n");
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| pam_twofold.so size | {:.2} MiB ({:.2} MiB stripped) |",
        size as f64 / 1048576.0,
        stripped as f64 / 1048576.0
    );
    println!(
        "| threads in the host before pam_start / after pam_end | {} / {} |",
        kib("threads-before"),
        kib("threads-after")
    );
    println!(
        "| host resident memory after pam_end, more than before pam_start | {} KiB (pam_permit alone: {} KiB) |",
        grew(&report, "rss"),
        grew(&baseline, "rss")
    );
    println!(
        "| host peak resident memory, more than pam_permit alone | {} KiB ({} against {} KiB) |",
        kib("peak-rss-kb") as i64 - base("peak-rss-kb") as i64,
        kib("peak-rss-kb"),
        base("peak-rss-kb")
    );
    println!(
        "| of which anonymous (heap, stacks, relocated data) / file-backed (code) | {} / {} KiB (pam_permit alone: {} / {} KiB) |",
        grew(&report, "anon"),
        grew(&report, "file"),
        grew(&baseline, "anon"),
        grew(&baseline, "file")
    );
    if attempt.code != pam::SUCCESS || kib("threads-before") != kib("threads-after") {
        bail!("the footprint login failed or left threads: {attempt:?}");
    }
    Ok(())
}

/// `fill STATE FROM TO`: enrollments for `tfs{FROM}` .. `tfs{TO-1}` (names no
/// account has) written through the daemon's own store, without backup
/// codes. The scale benchmark runs it under eatmydata: a fixture, not state
/// anyone relies on, so its fsyncs are skipped.
fn fill(state: &std::path::Path, from: usize, to: usize) -> Result<()> {
    let store = FileStore::open(state)?;
    for i in from..to {
        seed_with_backup(&store, &format!("tfs{i}"), 1 + i as u64, 0)?;
    }
    Ok(())
}

/// The daemon with 100, 100,000 and 1,000,000 enrolled users (or the sizes
/// given): its start time, resident memory idle and after logins and a
/// report, the latency of 200 logins by 100 users, and `twofold admin report`.
fn scale(sizes: &[usize]) -> Result<()> {
    use_release_build();
    let sizes = if sizes.is_empty() {
        vec![100, 100_000, 1_000_000]
    } else {
        sizes.to_vec()
    };
    const LOGIN_USERS: usize = 100;
    // Accounts tfb0.. in nss_wrapper: 100 login users per size.
    let mut m = Modules::start(LOGIN_USERS * sizes.len())?;
    // A second daemon, on its own bus, whose store stays small: its logins,
    // interleaved with the large store's, show what the machine itself does
    // after a fill (page cache, reclaim) apart from the size of the store.
    let control = Modules::start(LOGIN_USERS * sizes.len())?;
    let state = m.daemon.state_dir();
    let eatmydata = which("eatmydata");
    print_machine();
    println!(
        "\nScale: enrolled users in the store; 100 of them log in twice each (200 logins, one at a time)\n"
    );
    println!(
        "| enrolled | daemon start | RSS idle | RSS peak after logins and report | login median (against 100 enrolled) | login 99th percentile | small store at the same time (large against small) | `twofold admin report` |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut filled = 0;
    let mut base_median = None;
    for (level, &n) in sizes.iter().enumerate() {
        let bulk = n.saturating_sub(LOGIN_USERS * sizes.len());
        if bulk > filled {
            let start = std::time::Instant::now();
            let workers = 2;
            let mut children = Vec::new();
            for w in 0..workers {
                let (from, to) = (
                    filled + (bulk - filled) * w / workers,
                    filled + (bulk - filled) * (w + 1) / workers,
                );
                let mut c = match &eatmydata {
                    Some(path) => {
                        let mut c = Command::new(path);
                        c.arg(std::env::current_exe()?);
                        c
                    }
                    None => Command::new(std::env::current_exe()?),
                };
                c.arg("fill")
                    .arg(&state)
                    .args([from.to_string(), to.to_string()]);
                children.push(c.spawn()?);
            }
            for mut c in children {
                if !c.wait()?.success() {
                    bail!("filling the store failed");
                }
            }
            Command::new("sync").status()?;
            eprintln!(
                "filled the store to {bulk} + {} enrollments in {:.0} s",
                LOGIN_USERS * sizes.len(),
                start.elapsed().as_secs_f64()
            );
            filled = bulk;
        }
        // Start time: from spawn to the bus name owned, caches cold for the
        // daemon's own memory (not for the kernel's page cache).
        let start = std::time::Instant::now();
        m.daemon.restart()?;
        let started = start.elapsed().as_secs_f64();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let pid = m.daemon.pid().context("daemon pid")?;
        let idle = proc_status_kib(pid, "VmRSS");
        let users: Vec<usize> = (level * LOGIN_USERS..(level + 1) * LOGIN_USERS).collect();
        let logins = m.totp_logins(&users)?;
        let control_logins = control.totp_logins(&users)?;
        // Four rounds, alternating the large store and the small one.
        let (mut outcomes, mut control_outcomes) = (Vec::new(), Vec::new());
        let chunk = logins.len() / 4;
        for round in 0..4 {
            let part = round * chunk..(round + 1) * chunk;
            outcomes.extend(m.run(TWOFOLD, &logins[part.clone()])?);
            control_outcomes.extend(control.run(TWOFOLD, &control_logins[part])?);
        }
        let f = figures(&outcomes, 1.0, 0.0);
        let c = figures(&control_outcomes, 1.0, 0.0);
        if f.refused != 0 || c.refused != 0 {
            bail!(
                "{} logins refused: {}",
                f.refused + c.refused,
                m.daemon.log()
            );
        }
        let start = std::time::Instant::now();
        let report = m
            .bus
            .command(artifacts().twofold())
            .args(["admin", "report"])
            .output()?;
        let report_secs = start.elapsed().as_secs_f64();
        if !report.status.success() {
            bail!("report failed: {}", String::from_utf8_lossy(&report.stderr));
        }
        let peak = proc_status_kib(pid, "VmHWM");
        let base = *base_median.get_or_insert(f.median_ms);
        println!(
            "| {n} | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.3} ms ({:+.0} %) | {:.3} ms | {:.3} ms ({:+.0} %) | {:.2} s |",
            started * 1000.0,
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            f.median_ms,
            (f.median_ms / base - 1.0) * 100.0,
            f.p99_ms,
            c.median_ms,
            (f.median_ms / c.median_ms - 1.0) * 100.0,
            report_secs
        );
    }
    println!(
        "\nThe report lists the accounts the name service knows ({} here, through nss_wrapper); \
         the other enrolled names have no account, so each costs a failed lookup.",
        LOGIN_USERS * sizes.len()
    );
    Ok(())
}

/// What the bus itself costs a login: the module's transport (a zbus
/// connection with its authentication and `Hello`, two calls through
/// dbus-daemon to twofoldd, the connection dropped) with calls twofoldd
/// answers without its engine (`org.freedesktop.DBus.Peer.Ping`, handled by
/// zbus). Beside it, PAM logins with pam_permit alone (libpam in the host)
/// and with pam_twofold; then the bus-only round from 8 and 64 threads at
/// once, with the CPU each round costs all three processes and dbus-daemon.
fn floor(n: usize) -> Result<()> {
    use_release_build();
    let m = Modules::start(n / 2 + 1)?;
    print_machine();
    // One round with no work of the module's or twofoldd's: connect,
    // `pings` calls that zbus answers itself (`Peer.Ping`), drop; through
    // dbus-daemon (with `Hello`), or on twofoldd's login socket (no bus).
    let socket = m.bus.login_socket();
    let round = async |on_socket: bool, pings: usize| -> zbus::Result<()> {
        let (conn, destination) = if on_socket {
            let stream = std::os::unix::net::UnixStream::connect(&socket)?;
            let conn = zbus::connection::Builder::unix_stream(stream)
                .p2p()
                .build()
                .await?;
            (conn, None)
        } else {
            (m.bus.connect().await?, Some(twofold_protocol::BUS_NAME))
        };
        for _ in 0..pings {
            conn.call_method(
                destination,
                twofold_protocol::OBJECT_PATH,
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .await?;
        }
        Ok(())
    };
    let time = |on_socket: bool, pings: usize| -> Result<Vec<u64>> {
        let mut micros = Vec::with_capacity(n);
        for _ in 0..n {
            let start = std::time::Instant::now();
            zbus::block_on(round(on_socket, pings))?;
            micros.push(start.elapsed().as_micros() as u64);
        }
        micros.sort_unstable();
        Ok(micros)
    };
    // The journal's part: a 32-byte append and fdatasync, on the file
    // system of twofoldd's state directory.
    let sync = || -> Result<Vec<u64>> {
        use std::io::Write;
        let path = m.daemon.state_dir().join("bench-fdatasync");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut micros = Vec::with_capacity(n);
        for _ in 0..n {
            let start = std::time::Instant::now();
            file.write_all(&[7u8; 32])?;
            file.sync_data()?;
            micros.push(start.elapsed().as_micros() as u64);
        }
        std::fs::remove_file(&path)?;
        micros.sort_unstable();
        Ok(micros)
    };
    let rows = [
        ("bus: connect, authenticate, Hello, drop", time(false, 0)?),
        ("bus: the same + 2 × Peer.Ping to twofoldd", time(false, 2)?),
        (
            "socket: connect, authenticate (no Hello), drop",
            time(true, 0)?,
        ),
        ("socket: the same + 2 × Peer.Ping", time(true, 2)?),
        ("a 32-byte append + fdatasync (the journal)", sync()?),
    ];
    let logins = m.totp_logins(&(0..n / 2).collect::<Vec<_>>())?;
    let pam = |module: &str| -> Result<Vec<u64>> {
        let mut micros: Vec<u64> = m.run(module, &logins)?.iter().map(|o| o.micros).collect();
        micros.sort_unstable();
        Ok(micros)
    };
    let login_rows = [
        (
            "PAM login with pam_permit alone (libpam in the host)",
            pam(PERMIT)?,
        ),
        ("full login through PAM (pam_twofold)", pam(TWOFOLD)?),
    ];
    // The same empty round (connect, 2 × Ping, drop) from many threads at
    // once: the most logins per second the transport could carry if the
    // module and twofoldd's work cost nothing, and dbus-daemon's CPU for
    // each (none on the socket). dbus-daemon runs its clients on one
    // thread, so 1 / that CPU bounds what any login through it can reach.
    let in_flight = |on_socket: bool, workers: usize| -> Result<(f64, f64, f64)> {
        let per_worker = (n / workers).max(1);
        let all_cpu =
            || rusage_cpu_seconds(libc::RUSAGE_SELF) + m.daemon_cpu() + cpu_seconds(m.bus.pid());
        let (bus_before, all_before) = (cpu_seconds(m.bus.pid()), all_cpu());
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        zbus::block_on(async {
                            for _ in 0..per_worker {
                                round(on_socket, 2).await?;
                            }
                            zbus::Result::Ok(())
                        })
                    })
                })
                .collect();
            threads.into_iter().try_for_each(|t| {
                t.join()
                    .map_err(|_| anyhow!("a bus client thread panicked"))?
                    .map_err(anyhow::Error::from)
            })
        })?;
        let wall = start.elapsed().as_secs_f64();
        let total = (per_worker * workers) as f64;
        let bus_ms = (cpu_seconds(m.bus.pid()) - bus_before) / total * 1000.0;
        let all_ms = (all_cpu() - all_before) / total * 1000.0;
        Ok((total / wall, all_ms, bus_ms))
    };
    let flights = [(false, 8), (false, 64), (true, 8), (true, 64)]
        .map(|(on_socket, workers)| (on_socket, workers, in_flight(on_socket, workers)));
    println!("\nThe transport's share of a login ({n} each, one at a time)\n");
    println!("| what | median | 99th percentile |");
    println!("| --- | --- | --- |");
    for (what, micros) in rows.iter().chain(&login_rows) {
        println!(
            "| {what} | {:.3} ms | {:.3} ms |",
            percentile(micros, 50.0) as f64 / 1000.0,
            percentile(micros, 99.0) as f64 / 1000.0
        );
    }
    println!(
        "\nThe transport alone, many at once (connect, [Hello,] 2 × Peer.Ping, drop; {n} each)\n"
    );
    println!(
        "| transport | in flight | rounds/s | CPU per round (clients, twofoldd, dbus-daemon) | dbus-daemon's part |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (on_socket, workers, figures) in flights {
        let (per_second, all_ms, bus_ms) = figures?;
        let via = if on_socket { "socket" } else { "bus" };
        println!("| {via} | {workers} | {per_second:.0} | {all_ms:.3} ms | {bus_ms:.3} ms |");
    }
    Ok(())
}

/// `memory`: twofoldd's resident memory (and the confirm step's latency)
/// around work that makes large, short-lived allocations: 50 enrollments, 5
/// at once (each hashes 10 backup codes with Argon2id, 19 MiB of working
/// memory per hash), then 10 more one at a time, then a local user's floods of
/// oversized calls (`twofold-flood`, 64 KiB and 1 MiB arguments). An idle
/// daemon should come back near its start after each.
fn memory() -> Result<()> {
    use_release_build();
    const USERS: usize = 50;
    const LANES: usize = 5;
    const ALONE: usize = 10;
    const FLOOD_SECS: u64 = 10;
    const FLOOD_CONNECTIONS: u64 = 16;
    if !std::path::Path::new(NSS_WRAPPER).exists() {
        bail!("{NSS_WRAPPER} is missing (apt-get install libnss-wrapper)");
    }
    let work = tempfile::tempdir()?;
    // tfb0.. enroll; the last account floods.
    let flooder = USERS + ALONE;
    let env = synthetic_accounts(work.path(), flooder + 1)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bus = Bus::start_with_env("", &env)?;
    let daemon = Daemon::start_with_env(&bus, "", &env)?;
    let pid = daemon.pid().context("daemon pid")?;
    print_machine();
    let mib = |field: &str| proc_status_kib(pid, field) as f64 / 1024.0;
    // The account's process: `enroll-as`, as uid 40000 + i, through the bus.
    let enroll = |i: usize| -> Result<u64> {
        use std::os::unix::process::CommandExt;
        let id = 40_000 + u32::try_from(i)?;
        let out = bus
            .command(std::env::current_exe()?)
            .arg("enroll-as")
            .uid(id)
            .gid(id)
            .output()?;
        if !out.status.success() {
            bail!(
                "enrolling tfb{i} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                daemon.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    let sorted = |mut v: Vec<u64>| {
        v.sort_unstable();
        v
    };
    let ms = |micros: u64| micros as f64 / 1000.0;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (rss_start, threads_start) = (mib("VmRSS"), proc_status_kib(pid, "Threads"));

    // 50 enrollments, LANES at once: work lands on several threads of the
    // daemon's blocking pool, as when several people enroll in a morning.
    let (wall, cpu) = (std::time::Instant::now(), cpu_seconds(pid));
    let confirms = std::thread::scope(|s| -> Result<Vec<u64>> {
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                s.spawn(move || {
                    (lane * USERS / LANES..(lane + 1) * USERS / LANES)
                        .map(enroll)
                        .collect::<Result<Vec<u64>>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for lane in lanes {
            all.extend(
                lane.join()
                    .map_err(|_| anyhow!("an enrolling lane panicked"))??,
            );
        }
        Ok(all)
    })?;
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds(pid) - cpu);
    let (peak, threads_peak) = (mib("VmHWM"), proc_status_kib(pid, "Threads"));
    let right_after = mib("VmRSS");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let after = mib("VmRSS");
    // Then one at a time: the confirm step as one user sees it.
    let cpu_alone = cpu_seconds(pid);
    let alone = sorted((USERS..USERS + ALONE).map(enroll).collect::<Result<_>>()?);
    let cpu_alone = cpu_seconds(pid) - cpu_alone;
    let confirms = sorted(confirms);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let after_alone = mib("VmRSS");

    // The floods (oversized arguments of 64 KiB, as in the flood test, then
    // of 1 MiB), each with the peak reset first (clear_refs 5: VmHWM := VmRSS).
    let mut floods = Vec::new();
    for bytes in [64 * 1024, 1024 * 1024] {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
        let before = mib("VmRSS");
        let out = {
            use std::os::unix::process::CommandExt;
            let id = 40_000 + u32::try_from(flooder)?;
            bus.command(artifacts().bin.join("twofold-flood"))
                .args([FLOOD_SECS, FLOOD_CONNECTIONS, bytes].map(|n| n.to_string()))
                .uid(id)
                .gid(id)
                .output()?
        };
        let tally = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "twofold-flood failed: {tally} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (peak, end) = (mib("VmHWM"), mib("VmRSS"));
        std::thread::sleep(std::time::Duration::from_secs(5));
        floods.push((bytes / 1024, tally, before, peak, end, mib("VmRSS")));
    }

    println!(
        "\ntwofoldd's resident memory (started at {rss_start:.1} MiB, {threads_start} threads)\n"
    );
    println!("| work | RSS before | peak | when it ends | 5 s later |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| {USERS} enrollments, {LANES} at once ({wall:.1} s; {threads_peak} threads at the end) | {rss_start:.1} MiB | {peak:.1} MiB | {right_after:.1} MiB | {after:.1} MiB |"
    );
    println!("| then {ALONE} more, one at a time | {after:.1} MiB | | | {after_alone:.1} MiB |");
    for (kib, tally, before, peak, end, later) in floods {
        println!(
            "| flood: one user, {FLOOD_CONNECTIONS} connections, {FLOOD_SECS} s, arguments of {kib} KiB (`twofold-flood`: {tally}) | {before:.1} MiB | {peak:.1} MiB | {end:.1} MiB | {later:.1} MiB |"
        );
    }
    println!(
        "\nThe confirm step of `twofold setup` (ConfirmEnrollment: verify the code, hash 10 backup codes, store)\n"
    );
    println!(
        "| enrollments | twofoldd's CPU per enrollment (both calls) | median | 90th percentile | max |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (what, cpu, v) in [
        (format!("{USERS}, {LANES} at once"), cpu, &confirms),
        (format!("{ALONE}, one at a time"), cpu_alone, &alone),
    ] {
        println!(
            "| {what} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            cpu * 1000.0 / v.len() as f64,
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(v.last().copied().unwrap_or(0))
        );
    }
    Ok(())
}

/// `enroll-as`, run by `memory` as the account's uid: `twofold setup`'s two
/// calls, the code computed from the offered key; prints the microseconds
/// the confirm call took.
fn enroll_as() -> Result<()> {
    use twofold_protocol::TwofoldProxy;
    let micros = zbus::block_on(async {
        let conn = zbus::Connection::system().await?;
        let proxy = TwofoldProxy::new(&conn).await?;
        let offer = proxy.begin_enrollment().await?;
        let secret = totp_rs::Secret::try_from_base32(offer.secret_base32.expose())
            .map_err(|e| anyhow!("the offered key: {e:?}"))?;
        let code = totp::code_at(secret.as_bytes(), SIX, unix_now())?;
        let start = std::time::Instant::now();
        let codes = proxy.confirm_enrollment(&code).await?;
        let micros = start.elapsed().as_micros();
        if codes.len() != 10 {
            bail!("{} backup codes", codes.len());
        }
        anyhow::Ok(micros)
    })?;
    println!("{micros}");
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    twofold_e2e::proc_status_field(Some(pid), field)
}

/// `twofold-bench fleet N`: a login through PAM with the store in a
/// PostgreSQL database (a server this run starts: `initdb` in a temporary
/// directory, a Unix socket, default settings, so `fsync` and
/// `synchronous_commit` on) beside the same with the file store, in the same
/// run: N logins each, one at a time in 3 interleaved rounds, then N at 8 in
/// flight.
fn fleet(n: usize) -> Result<()> {
    use_release_build();
    let n = n.max(6) / 6 * 6;
    let db = Fleet::new()?;
    // Two logins per user (this step's code, then the next one's), for each
    // of the two phases.
    let users = n;
    let stores = [
        ("file store", Modules::start(users)?),
        ("PostgreSQL store", Modules::start_on(users, Some(&db))?),
    ];
    print_machine();
    let half: Vec<usize> = (0..users / 2).collect();
    let mut seq: Vec<(Vec<Outcome>, f64)> = vec![(Vec::new(), 0.0), (Vec::new(), 0.0)];
    let logins: Vec<Vec<Login>> = stores
        .iter()
        .map(|(_, m)| m.totp_logins(&half))
        .collect::<Result<_>>()?;
    for round in 0..3 {
        for (k, (_, m)) in stores.iter().enumerate() {
            let chunk = logins[k].len() / 3;
            let part = &logins[k][round * chunk..(round + 1) * chunk];
            let start = std::time::Instant::now();
            seq[k].0.extend(m.run(TWOFOLD, part)?);
            seq[k].1 += start.elapsed().as_secs_f64();
        }
    }
    println!(
        "\nFleet: one login through PAM at a time ({n} per store, 3 interleaved rounds), then {n} at 8 in flight\n"
    );
    println!(
        "| store | median | 99th percentile | logins/s | refused | at 8 in flight: logins/s | refused |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let rest: Vec<usize> = (users / 2..users).collect();
    for (k, (name, m)) in stores.iter().enumerate() {
        let f = figures(&seq[k].0, seq[k].1, 0.0);
        let (outcomes, wall) = concurrent(m, TWOFOLD, &m.totp_logins(&rest)?, 8)?;
        let c = figures(&outcomes, wall, 0.0);
        println!(
            "| {name} | {:.3} ms | {:.3} ms | {:.0} | {} | {:.0} | {} |",
            f.median_ms,
            f.p99_ms,
            f.per_second,
            f.refused_text(),
            c.per_second,
            c.refused_text()
        );
    }
    Ok(())
}
