//! `make bench`: the cost of one verification through the PAM module.
//!
//! A private bus and a release twofoldd; synthetic users (through nss_wrapper,
//! so nothing is added to the host's passwd) with enrollments seeded through
//! the daemon's own store; then N logins in one process through real libpam
//! (`pam-driver --repeat`, each login a full pam_start_confdir ..
//! pam_authenticate .. pam_end with a fresh, valid code). Prints latency,
//! throughput, CPU per login, module size and threads left after pam_end.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use twofold_e2e::{
    Bus, DEFAULT_RHOST, Daemon, PamService, artifacts, pam, unix_now, wait_for_step_margin,
};
use twofoldd::backup::{self, HashParams};
use twofoldd::store::{ENROLLMENT_VERSION, Enrollment, FileStore, SecretBytes, Store};
use twofoldd::totp::{self, TotpParams};

const SIX: TotpParams = TotpParams {
    digits: 6,
    period: 30,
    window: 1,
};
const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

fn main() -> ExitCode {
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
        _ => run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
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

fn seed(store: &FileStore, user: &str, generation: u64) -> Result<Vec<u8>> {
    let secret: Vec<u8> = rand::random::<[u8; 20]>().to_vec();
    // Backup codes are not used here; cheap hashing keeps the seeding quick.
    let cheap = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let (_, backup) = backup::generate(1, cheap)?;
    let enrollment = Enrollment {
        version: ENROLLMENT_VERSION,
        generation,
        secret: SecretBytes(secret.clone()),
        digits: 6,
        period: 30,
        enrolled_at: unix_now(),
        last_step: None,
        backup,
        failures: 0,
        last_failure: 0,
        ceiling_tat: 0,
        last_login: None,
    };
    store.write_enrollment(user, &enrollment)?;
    Ok(secret)
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

/// Whole SSH logins through a throwaway sshd: password + code (the shipped
/// `sshd` stack) beside password only (the same file without pam_twofold),
/// interleaved, `n` of each; wall time of the whole `ssh` run.
fn ssh(n: usize) -> Result<()> {
    use twofold_e2e::ssh::{SshClient, Sshd, SshdSetup, packaged_stack};
    use_release_build();
    const PASSWORD: &str = "bench horse 9";
    let bus = Bus::start()?;
    let daemon = Daemon::start_with_policy(&bus, "", "[default]\nmode = \"require\"\n")?;
    let with_code = packaged_stack("sshd", "")?;
    let password_only: String = with_code
        .lines()
        .filter(|l| l.trim_start().starts_with('#') || !l.contains("pam_twofold"))
        .map(|l| format!("{l}\n"))
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
    let (twofold_sshd, plain_sshd) = (start(with_code)?, start(password_only)?);
    let mut users = Vec::with_capacity(n);
    for user in &names {
        let secret = twofold_e2e::enroll(&bus, user)?.secret;
        users.push((user.clone(), secret));
    }
    wait_for_step_margin(12);
    let (mut plain, mut twofold) = (Vec::with_capacity(n), Vec::with_capacity(n));
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
        // Alternate which goes first, so neither always meets a warm cache.
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_twofold in order {
            let sshd = if with_twofold {
                &twofold_sshd
            } else {
                &plain_sshd
            };
            let login = client.login(sshd, answer)?;
            if !login.logged_in() || login.status != 0 {
                bail!("login failed: {login:#?}\n{}", daemon.log());
            }
            let expected = if with_twofold { 2 } else { 1 };
            if login.prompts.len() != expected {
                bail!("unexpected prompts: {:?}", login.prompts);
            }
            let micros = login.elapsed.as_micros() as u64;
            if with_twofold {
                twofold.push(micros);
            } else {
                plain.push(micros);
            }
        }
    }
    // Each pair ran back to back: their difference cancels slow spells.
    let mut paired: Vec<i64> = plain
        .iter()
        .zip(&twofold)
        .map(|(p, t)| *t as i64 - *p as i64)
        .collect();
    paired.sort_unstable();
    plain.sort_unstable();
    twofold.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "twofold bench: whole SSH logins through a throwaway sshd on 127.0.0.1 ({n} each, interleaved)"
    );
    println!("| login | median | min | max |");
    println!("| --- | --- | --- | --- |");
    for (what, v) in [("password only", &plain), ("password + code", &twofold)] {
        println!(
            "| {what} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(percentile(v, 50.0)),
            ms(v[0]),
            ms(v[v.len() - 1])
        );
    }
    println!(
        "twofold adds {:.1} ms to the median login; median of the {n} paired differences: {:.1} ms",
        ms(percentile(&twofold, 50.0)) - ms(percentile(&plain, 50.0)),
        paired[paired.len() / 2] as f64 / 1000.0
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
    // SAFETY: rusage is plain data filled by getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn run() -> Result<()> {
    let logins: usize = std::env::var("TWOFOLD_BENCH_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    use_release_build();
    if !std::path::Path::new(NSS_WRAPPER).exists() {
        bail!("{NSS_WRAPPER} is missing (apt-get install libnss-wrapper)");
    }
    // Each user can log in at the current step and the next one; one more
    // user is kept fresh for the footprint login at the end.
    let users = logins.div_ceil(2) + 1;
    let work = tempfile::tempdir()?;
    let env = synthetic_accounts(work.path(), users)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bus = Bus::start()?;
    let daemon = Daemon::start_with_env(&bus, "", &env)?;
    let store = FileStore::open(&daemon.state_dir())?;
    let secrets = (0..users)
        .map(|i| seed(&store, &format!("tfb{i}"), 1 + i as u64))
        .collect::<Result<Vec<_>>>()?;

    // Codes for this step for every user, then for the next step.
    wait_for_step_margin(25);
    let now = unix_now();
    let mut codes = String::new();
    for (offset, _) in [(0u64, ()), (30, ())] {
        for (i, secret) in secrets.iter().enumerate().take(users - 1) {
            writeln!(
                codes,
                "tfb{i} {}",
                totp::code_at(secret, SIX, now + offset)?
            )?;
        }
    }
    let codes_file = work.path().join("codes");
    std::fs::write(&codes_file, codes)?;

    let service = PamService::new("")?;
    let daemon_pid = daemon.pid().context("daemon pid")?;
    let daemon_cpu_before = cpu_seconds(daemon_pid);
    let children_before = children_cpu_seconds();
    let start = std::time::Instant::now();
    let out = bus
        .command(artifacts().pam_driver())
        .arg("--confdir")
        .arg(service.confdir())
        .args([
            "--service",
            &service.name,
            "--rhost",
            DEFAULT_RHOST,
            "--repeat",
            &logins.to_string(),
        ])
        .arg("--codes")
        .arg(&codes_file)
        .output()?;
    let wall = start.elapsed().as_secs_f64();
    let driver_cpu = children_cpu_seconds() - children_before;
    let daemon_cpu = cpu_seconds(daemon_pid) - daemon_cpu_before;
    if !out.status.success() {
        bail!(
            "logins failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    }
    let mut micros: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if micros.len() != logins {
        bail!("expected {logins} timings, got {}", micros.len());
    }
    micros.sort_unstable();
    let mean = micros.iter().sum::<u64>() as f64 / micros.len() as f64;

    // Module footprint.
    let module = &artifacts().module;
    let size = std::fs::metadata(module)?.len();
    let stripped_path = work.path().join("stripped.so");
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
    let spare = users - 1;
    let spare_code = totp::code_at(&secrets[spare], SIX, unix_now())?;
    let (attempt, before, after) = service.login_counting_threads(
        &bus,
        &format!("tfb{spare}"),
        format!("{spare_code}\n").as_bytes(),
    )?;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    println!("twofold bench: one verification through pam_twofold.so (release build)");
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "logins: {logins} over {} users, in one process, each pam_start_confdir..pam_end\n",
        users - 1
    );
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| median latency | {:.3} ms |",
        percentile(&micros, 50.0) as f64 / 1000.0
    );
    println!(
        "| 90th percentile | {:.3} ms |",
        percentile(&micros, 90.0) as f64 / 1000.0
    );
    println!(
        "| 99th percentile | {:.3} ms |",
        percentile(&micros, 99.0) as f64 / 1000.0
    );
    println!(
        "| max | {:.3} ms |",
        micros[micros.len() - 1] as f64 / 1000.0
    );
    println!("| mean | {:.3} ms |", mean / 1000.0);
    println!(
        "| logins per second (one at a time) | {:.0} |",
        logins as f64 / wall
    );
    println!(
        "| CPU per login, host process (libpam + module) | {:.3} ms |",
        driver_cpu * 1000.0 / logins as f64
    );
    println!(
        "| CPU per login, twofoldd | {:.3} ms |",
        daemon_cpu * 1000.0 / logins as f64
    );
    println!(
        "| pam_twofold.so size | {:.2} MB ({:.2} MB stripped) |",
        size as f64 / 1e6,
        stripped as f64 / 1e6
    );
    println!(
        "| threads in the host before pam_start / after pam_end | {before} / {after} (login result {}) |",
        if attempt.code == pam::SUCCESS {
            "success"
        } else {
            "FAILED"
        }
    );
    if attempt.code != pam::SUCCESS || before != after {
        bail!("the footprint login failed or left threads: {attempt:?}");
    }
    Ok(())
}
