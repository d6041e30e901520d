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
use twofold_e2e::{Bus, Daemon, PamService, artifacts, pam, unix_now, wait_for_step_margin};
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
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
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
    if std::env::var_os("TWOFOLD_PROFILE").is_none() {
        // SAFETY: set before any thread is started.
        unsafe { std::env::set_var("TWOFOLD_PROFILE", "release") };
    }
    if !std::path::Path::new(NSS_WRAPPER).exists() {
        bail!("{NSS_WRAPPER} is missing (apt-get install libnss-wrapper)");
    }
    // Each user can log in at the current step and the next one; one more
    // user is kept fresh for the footprint login at the end.
    let users = logins.div_ceil(2) + 1;
    let work = tempfile::tempdir()?;
    let passwd = work.path().join("passwd");
    let group = work.path().join("group");
    let mut pw = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut gr = String::from("root:x:0:\n");
    for i in 0..users {
        writeln!(
            pw,
            "tfb{i}:x:{}:{}:bench:/nonexistent:/usr/sbin/nologin",
            40_000 + i,
            40_000 + i
        )?;
        writeln!(gr, "tfb{i}:x:{}:", 40_000 + i)?;
    }
    std::fs::write(&passwd, pw)?;
    std::fs::write(&group, gr)?;

    let bus = Bus::start()?;
    let env = [
        ("LD_PRELOAD", NSS_WRAPPER),
        ("NSS_WRAPPER_PASSWD", passwd.to_str().context("path")?),
        ("NSS_WRAPPER_GROUP", group.to_str().context("path")?),
    ];
    let daemon = Daemon::start_with_env(&bus, "", &env)?;
    let store = FileStore::open(&daemon.state_dir())?;
    // Backup codes are not used here; cheap hashing keeps the seeding quick.
    let cheap = HashParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let mut secrets = Vec::with_capacity(users);
    for i in 0..users {
        let secret: Vec<u8> = rand::random::<[u8; 20]>().to_vec();
        let (_, backup) = backup::generate(1, cheap)?;
        let enrollment = Enrollment {
            version: ENROLLMENT_VERSION,
            generation: 1 + i as u64,
            secret: SecretBytes(secret.clone()),
            digits: 6,
            period: 30,
            enrolled_at: unix_now(),
            last_step: None,
            backup,
            failures: 0,
            last_failure: 0,
            last_login: None,
        };
        store.write_enrollment(&format!("tfb{i}"), &enrollment)?;
        secrets.push(secret);
    }

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
            "192.0.2.10",
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
