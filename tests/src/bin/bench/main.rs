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
use twofoldd::store::{Enrollment, FileStore, PgStore, SecretBytes, Store};
use twofoldd::totp::{self, TotpParams};

mod accounts;
mod fleet;
mod fleet_scale;
mod floor;
mod logins;
mod modules;
mod scale;
mod ssh;

use accounts::*;
use fleet::*;
use fleet_scale::*;
use floor::*;
use logins::*;
use modules::*;
use scale::*;
use ssh::*;

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
        Some("fleet-scale") => fleet_scale(
            &std::env::args()
                .skip(2)
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<usize>>(),
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

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
